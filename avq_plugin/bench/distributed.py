"""Benchmark of ShardedAVQIndex on a local Dask cluster: QPS with 1 and 2 workers, memory per
worker, and the per-shard figures behind the sizing note of docs/dask.md.

Run (hold the machine's benchmark lock so no other timing job runs at the same time)::

    flock /tmp/avq-bench.lock python -m avq_plugin.bench.distributed \\
        --dataset /work/shared/data/glove6b-50-angular-200k.hdf5 --json dist.json

Shard sweep (CPU per query against the number of shards, leaf-routed vs row shards)::

    flock /tmp/avq-bench.lock python -m avq_plugin.bench.distributed \\
        --dataset /work/shared/data/glove6b-50-angular-200k.hdf5 --sweep 1,2,4,8,16 \\
        --budgets 20:100 --batch 10000 --json sweep.json

The LocalCluster starts under ``avq_plugin.distributed.serving_config()`` (``--dask-config
default``: Dask's own settings, whose clock-driven monitors burn CPU; see docs/dask.md).

Steps, all with the same shards (built once, saved, then loaded by each cluster):

1. build a 4-shard index from the HDF5 file (read by the workers) for float32, int8 and no
   re-ranking; record per-shard memory_usage and file sizes, split into bytes per vector for
   codes + ids, int8 re-ranking rows and float32 re-ranking rows, and the fixed per-shard
   bytes of the shared quantizer;
2. per-shard search costs in this process (1 thread): a fixed per-query cost (leaf scoring,
   lookup table), the scan cost per vector of the probed leaves, and the re-scoring cost per
   candidate, the inputs of the fan-out model in docs/dask.md;
3. batched QPS and recall@10 of the loaded index on a LocalCluster with 1 worker and with 2
   workers (1 thread each), against one AVQIndex with the same quantizer in this process
   (1 and 2 threads); the resident memory (RSS) of every worker.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np

from ..datasets import load_hdf5
from ..index import AVQIndex

K = 10


def _recall(I, gt):
    gt = gt[:, :K]
    return float((I[:, :K, None] == gt[:, None, :]).any(axis=1).mean())


def _best_time(fn, repeats):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _rss_of_workers(client):
    """{worker: (rss, rss - file-backed shared pages)} in bytes."""

    def rss():
        import psutil

        m = psutil.Process().memory_info()
        return m.rss, m.rss - m.shared

    return client.run(rss)


def _cpu_of_workers(client):
    """Total user + system CPU seconds of the worker processes so far."""

    def cpu():
        import psutil

        t = psutil.Process().cpu_times()
        return t.user + t.system

    return sum(client.run(cpu).values())


def _idle_cpu(client, seconds=3.0):
    """CPU the cluster burns with nothing to do, as fractions of a core: (this process: the
    client and, on a LocalCluster, the scheduler; all workers together). Dask's heartbeats,
    monitors and the workers' statistical profiler run by the clock, not per query."""
    w0, c0, t0 = _cpu_of_workers(client), time.process_time(), time.perf_counter()
    time.sleep(seconds)
    w1, c1, t1 = _cpu_of_workers(client), time.process_time(), time.perf_counter()
    return (c1 - c0) / (t1 - t0), (w1 - w0) / (t1 - t0)


def _interleaved(arms, rounds, client, seed=0):
    """Times every arm (a callable) once per round, the arms in a new random order each round.
    Per arm: wall seconds and this process's CPU seconds of each round, the workers' CPU seconds
    of each round (read before and after the call), and the last output."""
    out = {a: {"wall": [], "cpu": [], "worker_cpu": [], "out": None} for a in arms}
    rng = np.random.default_rng(seed)
    names = list(arms)
    for _ in range(max(1, rounds)):
        for i in rng.permutation(len(names)):
            a = names[i]
            w0 = _cpu_of_workers(client)
            c0, t0 = time.process_time(), time.perf_counter()
            out[a]["out"] = arms[a]()
            t1, c1 = time.perf_counter(), time.process_time()
            out[a]["worker_cpu"].append(_cpu_of_workers(client) - w0)
            out[a]["wall"].append(t1 - t0)
            out[a]["cpu"].append(c1 - c0)
    return out


def _cluster(n_workers, threads, dask_config):
    """A LocalCluster of n_workers processes; dask_config: "serving" (``serving_config()``: Dask's
    clock-driven monitors slowed or off) or "default" (Dask's defaults)."""
    import dask
    from distributed import Client, LocalCluster

    from ..distributed import serving_config

    with dask.config.set(serving_config() if dask_config == "serving" else {}):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=0,
        )
    return cluster, Client(cluster)


#: Worker processes of the shard sweep's LocalCluster (one thread each); the simulation places
#: shards for as many.
_SWEEP_WORKERS = 2


def simulate(args):
    """Shards visited, re-ranking work and recall of leaf-routed search against the number of
    shards, without Dask: one AVQIndex over all the data plays every shard (a shard's answer is
    ``_search_leaves`` restricted to its leaves: the codes, scores and in-leaf order a shard
    holds), with the placement and routing code of ``ShardedAVQIndex``. Counts and recall
    (deterministic); with ``--visit-cost``, also the native search CPU per query of the routed
    visits against one index's search without its probe (1 thread, the queries in the routed
    search's best-leaf order, the two interleaved over ``--repeats`` rounds, the minimum kept)."""
    from ..distributed.merge import merge_rows
    from ..distributed.placement import group_jobs, place_shards, reranked_per_query, route_queries

    ds = load_hdf5(args.dataset)
    X, Q, gt = ds.train, ds.test[: args.batch], ds.neighbors[: args.batch]
    lts, rk = (int(v) for v in args.budgets.split(",")[0].split(":"))
    index = AVQIndex(metric="cosine", anisotropic_threshold=args.threshold, num_threads=-1, seed=0).fit(X)
    counts, centres = index._leaf_sizes(), index._probe_centers()
    sample = X[np.sort(np.random.default_rng(0).choice(len(X), min(len(X), 20000), replace=False))]
    probes = index._probe(sample, lts)
    P = index._probe(Q, lts)
    base = _recall(index.search(Q, k=K, leaves_to_search=lts, reorder_k=rk)[1], gt)
    print(f"  one AVQIndex: recall@10 {base:.4f} at leaves_to_search={lts}, reorder_k={rk}", flush=True)
    rows = []
    for S in (int(v) for v in args.simulate.split(",")):
        groups, home = place_shards(centres, counts, probes, S, _SWEEP_WORKERS)
        random = np.random.default_rng(0).permutation(np.arange(len(groups)) % S)
        jobs, visited, _ = route_queries(P, groups, counts, S, rk)
        # A worker searches its shards of a query as one index (the shards' search group).
        reranked = reranked_per_query(jobs, np.asarray(home), len(Q), K)
        parts = [(r, *index._search_leaves(Q[r], K, lv, b)) for r, lv, b in group_jobs(jobs, home).values()]
        _, I = merge_rows(len(Q), K, parts, "cosine")
        workers = float(np.mean([len(set(r)) for r in np.asarray(home)[groups[P]].tolist()]))
        cost = _visit_cost(index, Q, P, S, groups, home, counts, rk, args.repeats) if args.visit_cost else None
        work = int(round(reranked.mean()))
        same_work = _recall(index.search(Q, k=K, leaves_to_search=lts, reorder_k=work)[1], gt)
        sizes = np.bincount(groups, weights=counts, minlength=S)
        # Candidates the test queries scan per worker of the sweep's cluster.
        scanned = np.bincount(groups[P].ravel(), weights=counts[P].ravel(), minlength=S)
        per_worker = np.bincount(home, weights=scanned, minlength=_SWEEP_WORKERS)
        rows.append(
            {
                "shards": S,
                "visited": float(visited.mean()),
                "workers_visited": workers,
                "visited_random_placement": float(np.mean([len(set(r)) for r in random[P].tolist()])),
                "shard_vectors_min_max": [int(sizes.min()), int(sizes.max())],
                "worker_scan_max_over_mean": float(per_worker.max() / per_worker.mean()),
                "reranked_per_query": float(reranked.mean()),
                "recall": _recall(I, gt),
                "single_recall_same_work": same_work,
            }
        )
        if cost is not None:
            rows[-1].update(cost)
            print(
                f"  S={S}: native search CPU per query {cost['routed_us_per_query']:.1f} us over "
                f"{cost['visits_per_query']:.2f} worker visits, one index without its probe "
                f"{cost['single_us_per_query']:.1f} us (x{cost['routed_over_single']:.3f})",
                flush=True,
            )
        r = rows[-1]
        print(
            f"  S={S}: visited {r['visited']:.2f} (random placement {r['visited_random_placement']:.2f}; "
            f"workers {r['workers_visited']:.2f}), shard "
            f"vectors {sizes.min():.0f}..{sizes.max():.0f}, scan load of the busiest of {_SWEEP_WORKERS} workers "
            f"{r['worker_scan_max_over_mean']:.3f}x the mean, re-ranked/query {r['reranked_per_query']:.1f}, recall "
            f"{r['recall']:.4f}; one AVQIndex at reorder_k={work}: {same_work:.4f}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"lts": lts, "rk": rk, "single_recall": base, "rows": rows}, f, indent=1)
    return rows


def _visit_cost(index, Q, P, S, groups, home, counts, rk, repeats):
    """CPU of the routed native search (one index playing every worker's search group) against
    one index's search of the same probed leaves, per query; interleaved rounds, minimum kept."""
    from ..distributed.placement import group_jobs, route_queries

    order = np.argsort(P[:, 0], kind="stable")  # as ShardedAVQIndex sends them
    Qs, Ps = np.ascontiguousarray(Q[order]), np.ascontiguousarray(P[order])
    routed_jobs, _, _ = route_queries(Ps, groups, counts, S, rk)
    jobs = group_jobs(routed_jobs, home)
    visits = np.zeros(len(Qs))
    for r, _, _ in jobs.values():
        visits[r] += 1
    budgets = np.full(len(Qs), rk, np.int64)
    threads, index.num_threads = index.num_threads, 1
    try:

        def cpu(fn):
            t0 = time.process_time()
            fn()
            return time.process_time() - t0

        single = routed = float("inf")
        for _ in range(max(1, repeats)):
            single = min(single, cpu(lambda: index._search_leaves(Qs, K, Ps, budgets)))
            routed = min(routed, cpu(lambda: [index._search_leaves(Qs[r], K, lv, b) for r, lv, b in jobs.values()]))
    finally:
        index.num_threads = threads
    return {
        "visits_per_query": float(visits.mean()),
        "routed_us_per_query": routed / len(Qs) * 1e6,
        "single_us_per_query": single / len(Qs) * 1e6,
        "routed_over_single": routed / single,
    }


def sweep(args):
    """CPU per query, QPS, shards visited and recall against the number of shards, leaf-routed
    vs row shards, on a 2-worker LocalCluster, against one in-process AVQIndex. Each
    configuration is timed in ``--repeats`` rounds interleaved with the in-process index at 1 and
    2 threads (a new random order each round); the QPS ratio to the 2-thread index is reported
    round by round (this VM runs in slow and fast phases of a few seconds)."""
    from ..distributed import ShardedAVQIndex

    ds = load_hdf5(args.dataset)
    if ds.metric != "angular":
        raise SystemExit("this benchmark uses cosine: pass an angular data set")
    X, Q, gt = ds.train, ds.test[: args.batch], ds.neighbors[: args.batch]
    n = len(X)
    lts, rk = (int(v) for v in args.budgets.split(",")[0].split(":"))
    rows = []
    print(f"Dask settings: {args.dask_config}", flush=True)
    cluster, client = _cluster(_SWEEP_WORKERS, 1, args.dask_config)
    try:
        client.run(lambda: __import__("avq_plugin.distributed"))
        single = None
        for mode in args.modes.split(","):
            for S in (int(v) for v in args.sweep.split(",")):
                index = ShardedAVQIndex(
                    metric="cosine",
                    n_shards=S,
                    anisotropic_threshold=args.threshold,
                    leaves_to_search=lts,
                    reorder_k=rk,
                    sharding=mode,
                    client=client,
                )
                t0 = time.perf_counter()
                index.fit([(args.dataset, "train")])
                build = time.perf_counter() - t0
                if single is None:
                    single = index.trained_index()
                    single.add(X, np.arange(n, dtype=np.int64))
                    for threads in (1, 2):
                        single.search(Q[:100], k=K, leaves_to_search=lts, reorder_k=rk, num_threads=threads)
                        own0 = time.process_time()
                        t, (_, I) = _best_time(
                            lambda: single.search(Q, k=K, leaves_to_search=lts, reorder_k=rk, num_threads=threads),
                            args.repeats,
                        )
                        cpu = (time.process_time() - own0) / args.repeats / len(Q)
                        rows.append(
                            {
                                "system": f"AVQIndex in-process, {threads} thread(s)",
                                "shards": 0,
                                "qps": len(Q) / t,
                                "cpu_us_per_query": cpu * 1e6,
                                "recall": _recall(I, gt),
                            }
                        )
                        print(
                            f"  {rows[-1]['system']}: QPS {rows[-1]['qps']:.0f}, CPU {cpu * 1e6:.1f} us/query, "
                            f"recall {rows[-1]['recall']:.4f}",
                            flush=True,
                        )
                index.search(Q[:100], k=K)  # warm-up
                idle_client, idle_workers = _idle_cpu(client)
                # The in-process index with 1 and 2 threads, timed next to this configuration in
                # interleaved rounds (random order each round): ratios from the same moments.
                m = _interleaved(
                    {
                        "single1": lambda: single.search(Q, k=K, leaves_to_search=lts, reorder_k=rk, num_threads=1),
                        "single2": lambda: single.search(Q, k=K, leaves_to_search=lts, reorder_k=rk, num_threads=2),
                        "sharded": lambda: index.search(Q, k=K),
                    },
                    args.repeats,
                    client,
                    seed=S,
                )
                t, I = min(m["sharded"]["wall"]), m["sharded"]["out"][1]
                wcpu = sum(m["sharded"]["worker_cpu"]) / args.repeats / len(Q)
                ccpu = sum(m["sharded"]["cpu"]) / args.repeats / len(Q)
                single_cpu = sum(m["single1"]["cpu"]) / args.repeats / len(Q)
                per_round = np.array(m["single2"]["wall"]) / np.array(m["sharded"]["wall"])
                sharded_cpu = np.array(m["sharded"]["cpu"]) + np.array(m["sharded"]["worker_cpu"])
                single_cpus = np.array(m["single1"]["cpu"])
                cpu_rounds = sharded_cpu / single_cpus
                # Net of the idle burn over each call's wall time (the in-process index runs in
                # this process, so its CPU includes this process's share of it).
                sharded_net = sharded_cpu - (idle_client + idle_workers) * np.array(m["sharded"]["wall"])
                single_net = single_cpus - idle_client * np.array(m["single1"]["wall"])
                net_rounds = sharded_net / single_net
                st = index.search_stats()
                rows.append(
                    {
                        "system": f"ShardedAVQIndex sharding={mode}",
                        "sharding": mode,
                        "shards": S,
                        "build_s": build,
                        "qps": len(Q) / t,
                        "cpu_us_per_query": (wcpu + ccpu) * 1e6,
                        "worker_cpu_us_per_query": wcpu * 1e6,
                        "client_cpu_us_per_query": ccpu * 1e6,
                        "recall": _recall(I, gt),
                        "stats": st,
                        "single_cpu_us_per_query": single_cpu * 1e6,
                        "single_qps_1_thread": len(Q) / min(m["single1"]["wall"]),
                        "single_qps_2_threads": len(Q) / min(m["single2"]["wall"]),
                        # QPS over the 2-thread in-process index's, round by round
                        "qps_over_2_threads_rounds": per_round.tolist(),
                        "qps_over_2_threads_median": float(np.median(per_round)),
                        # CPU over the 1-thread in-process index's, round by round
                        "cpu_over_single_rounds": cpu_rounds.tolist(),
                        "cpu_over_single_median": float(np.median(cpu_rounds)),
                        "cpu_over_single_sum": float(sharded_cpu.sum() / single_cpus.sum()),
                        # the same, net of the cluster's idle CPU (fractions of a core)
                        "idle_cpu_client": idle_client,
                        "idle_cpu_workers": idle_workers,
                        "cpu_net_us_per_query": float(sharded_net.sum() / args.repeats / len(Q) * 1e6),
                        "single_cpu_net_us_per_query": float(single_net.sum() / args.repeats / len(Q) * 1e6),
                        "cpu_over_single_net_rounds": net_rounds.tolist(),
                        "cpu_over_single_net_median": float(np.median(net_rounds)),
                        "cpu_over_single_net_sum": float(sharded_net.sum() / single_net.sum()),
                    }
                )
                r = rows[-1]
                print(
                    f"  {mode} S={S}: QPS {r['qps']:.0f}, CPU {r['cpu_us_per_query']:.1f} us/query (workers "
                    f"{wcpu * 1e6:.1f} + client {ccpu * 1e6:.1f}), visited {st['shards_visited_per_query']:.2f}, "
                    f"recall {r['recall']:.4f}, build {build:.1f} s; one AVQIndex next to it: "
                    f"{single_cpu * 1e6:.1f} us/query (ratio {r['cpu_us_per_query'] / (single_cpu * 1e6):.2f}; round by "
                    f"round: median {np.median(cpu_rounds):.2f}, {cpu_rounds.min():.2f}-{cpu_rounds.max():.2f}), "
                    f"QPS / its QPS with 2 threads, round by round: median {np.median(per_round):.2f} "
                    f"({per_round.min():.2f}-{per_round.max():.2f}); CPU ratio of the sums {r['cpu_over_single_sum']:.2f}, "
                    f"net of the idle burn (client {100 * idle_client:.1f} %, workers {100 * idle_workers:.1f} % of a "
                    f"core) {r['cpu_over_single_net_sum']:.2f} (round by round: median {np.median(net_rounds):.2f})",
                    flush=True,
                )
                index.release()
    finally:
        client.close()
        cluster.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "dataset": os.path.basename(args.dataset),
                    "n": n,
                    "nq": len(Q),
                    "lts": lts,
                    "rk": rk,
                    "dask_config": args.dask_config,
                    "rows": rows,
                },
                f,
                indent=1,
            )
    return rows


def main(argv=None):
    from ..distributed import ShardedAVQIndex

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="ann-benchmarks HDF5 file (angular)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--budgets", default="10:40,20:100", help="leaves_to_search:reorder_k pairs")
    ap.add_argument("--batch", type=int, default=10000, help="queries per search call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--sweep", help="shard counts, e.g. 1,2,4,8,16: run the shard sweep instead")
    ap.add_argument("--modes", default="leaves,rows", help="shardings of the sweep")
    ap.add_argument(
        "--dask-config",
        choices=("serving", "default"),
        default="serving",
        help="the LocalCluster's Dask settings: avq_plugin.distributed.serving_config() or Dask's defaults",
    )
    ap.add_argument("--simulate", help="shard counts: routing counts and recall without Dask (no timing)")
    ap.add_argument(
        "--visit-cost",
        action="store_true",
        help="with --simulate: time the routed visits' native search against one index (1 thread)",
    )
    args = ap.parse_args(argv)
    if args.simulate:
        return simulate(args)
    if args.sweep:
        return sweep(args)
    budgets = [tuple(int(v) for v in b.split(":")) for b in args.budgets.split(",")]

    ds = load_hdf5(args.dataset)
    if ds.metric != "angular":
        raise SystemExit("this benchmark uses cosine: pass an angular data set")
    X, Q, gt = ds.train, ds.test, ds.neighbors
    n, d = X.shape
    Qb = [Q[i : i + args.batch] for i in range(0, len(Q), args.batch)]
    res = {
        "dataset": os.path.basename(args.dataset),
        "n": n,
        "d": d,
        "nq": len(Q),
        "shards": args.shards,
        "batch": args.batch,
        "threshold": args.threshold,
        "dask_config": args.dask_config,
    }
    print(f"{res['dataset']}: n={n} d={d} nq={len(Q)}, {args.shards} shards", flush=True)

    tmp = tempfile.mkdtemp(prefix="avq-dist-bench-")
    paths = {}
    per_shard = {}
    # 1. Build once per re-ranking mode; per-shard figures.
    cluster, client = _cluster(2, 1, args.dask_config)
    try:
        for mode in ("float32", "int8", "none"):
            index = ShardedAVQIndex(
                metric="cosine",
                n_shards=args.shards,
                dims_per_block=2,
                anisotropic_threshold=args.threshold,
                reorder=mode,
                client=client,
            )
            t0 = time.perf_counter()
            index.fit([(args.dataset, "train")])
            build = time.perf_counter() - t0
            paths[mode] = os.path.join(tmp, f"{mode}.avqs")
            manifest = index.save(paths[mode])
            infos = index.shard_info()
            fixed = index.trained_index().memory_usage()
            per_shard[mode] = {
                "build_s": build,
                "ntotal": [i["ntotal"] for i in infos],
                "memory_usage": [i["memory_usage"] for i in infos],
                "file_bytes": [s["bytes"] for s in manifest["shards"]],
                "fixed_bytes": fixed,
                "code_size": infos[0]["code_size"],
                "num_leaves": index.num_leaves_,
            }
            mem = (sum(per_shard[mode]["memory_usage"]) - args.shards * fixed) / n
            print(
                f"  build reorder={mode}: {build:.2f} s on 2 workers; {mem:.2f} B/vector in memory "
                f"(+{fixed} B fixed per shard)",
                flush=True,
            )
            index.release()
    finally:
        client.close()
        cluster.close()
    f32, i8, none = (per_shard[m] for m in ("float32", "int8", "none"))
    bpv = {
        "codes+ids": (sum(none["memory_usage"]) - args.shards * none["fixed_bytes"]) / n,
        "int8 rows": (sum(i8["memory_usage"]) - sum(none["memory_usage"])) / n,
        "float32 rows": (sum(f32["memory_usage"]) - sum(none["memory_usage"])) / n,
        "file codes+ids": (sum(none["file_bytes"])) / n,
        "file float32": sum(f32["file_bytes"]) / n,
        "file int8": sum(i8["file_bytes"]) / n,
    }
    res["per_shard"] = per_shard
    res["bytes_per_vector"] = bpv
    print("  bytes/vector: " + ", ".join(f"{k} {v:.2f}" for k, v in bpv.items()), flush=True)

    # 2. Per-shard costs, in this process, 1 thread (the float32 index).
    manifest = json.load(open(os.path.join(paths["float32"], "manifest.json")))
    shard0 = AVQIndex.load(os.path.join(paths["float32"], manifest["shards"][0]["file"]))
    L = shard0.num_leaves_
    nq_c = min(len(Q), 5000)
    Qc = Q[:nq_c]

    def per_query(lts, rk):
        return (
            _best_time(lambda: shard0.search(Qc, k=K, leaves_to_search=lts, reorder_k=rk, num_threads=1), args.repeats)[
                0
            ]
            / nq_c
        )

    t_fixed = per_query(1, K)
    t_scan = per_query(40, K)
    t_reorder = per_query(40, 400)  # 40 leaves hold > 400 candidates
    scanned = 40 * shard0.ntotal / L  # vectors in 40 leaves of this shard, on average
    costs = {
        "shard_ntotal": shard0.ntotal,
        "num_leaves": L,
        "fixed_us": t_fixed * 1e6,
        "scan_ns_per_vector": (t_scan - t_fixed) / (scanned - shard0.ntotal / L) * 1e9,
        "reorder_ns_per_candidate": (t_reorder - t_scan) / (400 - K) * 1e9,
    }
    res["costs"] = costs
    print(
        f"  per-shard costs (1 thread): fixed {costs['fixed_us']:.1f} us/query (L={L}, d={d}), scan "
        f"{costs['scan_ns_per_vector']:.2f} ns/vector, re-scoring {costs['reorder_ns_per_candidate']:.1f} "
        "ns/candidate",
        flush=True,
    )
    shard0 = None  # free it before the clusters start

    # 2b. The same figures at d = 100 (the sizing note's dimension), in this process, on seeded
    # Gaussian data: 32768 vectors in 64 leaves (512 per leaf, about what one shard of a
    # 64-shard, 31623-leaf billion-vector index holds per leaf); 256 leaves for the slope of the
    # per-query leaf-scoring cost in the number of leaves.
    rng = np.random.default_rng(0)
    Xs = rng.standard_normal((32768, 100)).astype(np.float32)
    Qs = rng.standard_normal((5000, 100)).astype(np.float32)
    d100 = {}
    for mode in ("none", "int8", "float32"):
        idx = AVQIndex(
            metric="dot",
            num_leaves=64,
            dims_per_block=2,
            anisotropic_threshold=args.threshold,
            reorder=mode,
            num_threads=1,
            seed=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eta warnings on Gaussian data are irrelevant here
            idx.train(Xs)
        fixed = idx.memory_usage()
        idx.add(Xs)
        d100[mode] = (idx.memory_usage() - fixed) / len(Xs)
        if mode == "float32":
            idx64 = idx
    unit = {
        "codes+ids": d100["none"],
        "int8 rows": d100["int8"] - d100["none"],
        "float32 rows": d100["float32"] - d100["none"],
        "code_size": idx64.code_size,
    }
    # Only the number of leaves matters for this timing, not the quality of the partition.
    idx1k = AVQIndex(
        metric="dot",
        num_leaves=1024,
        dims_per_block=2,
        anisotropic_threshold=args.threshold,
        kmeans_iterations=2,
        training_iterations=0,
        num_threads=-1,
        seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idx1k.fit(Xs)

    def pq(index, lts, rk):
        return _best_time(
            lambda: index.search(Qs, k=K, leaves_to_search=lts, reorder_k=rk, num_threads=1), args.repeats
        )[0] / len(Qs)

    f64, f1k = pq(idx64, 1, K), pq(idx1k, 1, K)
    t16 = pq(idx64, 16, K)
    unit["leaf_scoring_ns_per_leaf"] = (f1k - f64) / (1024 - 64) * 1e9
    unit["fixed_us_at_64_leaves"] = f64 * 1e6
    unit["scan_ns_per_vector"] = (t16 - f64) / (15 * len(Xs) / 64) * 1e9
    unit["reorder_ns_per_candidate"] = (pq(idx64, 16, 400) - t16) / (400 - K) * 1e9
    res["d100"] = unit
    print("  d=100 (Gaussian, in-process, 1 thread): " + ", ".join(f"{k} {v:.3g}" for k, v in unit.items()), flush=True)
    del idx64, idx1k, idx

    # 3. QPS, recall and memory: one in-process index, then 1 and 2 workers.
    single = AVQIndex.load(os.path.join(paths["float32"], "quantizer.avq"))
    single.add(X, np.arange(n, dtype=np.int64))
    rows = []
    for threads in (1, 2):
        for lts, rk in budgets:
            own0 = time.process_time()
            t, out = _best_time(
                lambda: [single.search(q, k=K, leaves_to_search=lts, reorder_k=rk, num_threads=threads) for q in Qb],
                args.repeats,
            )
            own = (time.process_time() - own0) / args.repeats / len(Q)
            I = np.concatenate([o[1] for o in out])
            rows.append(
                {
                    "system": f"AVQIndex in-process, {threads} thread(s)",
                    "workers": 0,
                    "threads": threads,
                    "leaves_to_search": lts,
                    "reorder_k": rk,
                    "qps": len(Q) / t,
                    "recall": _recall(I, gt),
                    "client_cpu_us_per_query": own * 1e6,
                }
            )
            print(
                f"  {rows[-1]['system']}: lts={lts} rk={rk} QPS {rows[-1]['qps']:.0f} "
                f"recall {rows[-1]['recall']:.4f}; CPU per query {own * 1e6:.1f} us",
                flush=True,
            )
    single = None
    memory = {}
    for workers, mmap in ((1, False), (2, False), (2, True)):
        cluster, client = _cluster(workers, 1, args.dask_config)
        try:
            client.run(lambda: __import__("avq_plugin.distributed"))  # baseline includes the imports
            idle = _rss_of_workers(client)
            index = ShardedAVQIndex.load(paths["float32"], client=client, mmap=mmap)
            index.search(Qb[0][:100], k=K)  # warm-up
            loaded = _rss_of_workers(client)
            for lts, rk in budgets:
                cpu0, own0 = _cpu_of_workers(client), time.process_time()
                t, out = _best_time(
                    lambda: [index.search(q, k=K, leaves_to_search=lts, reorder_k=rk) for q in Qb], args.repeats
                )
                cpu = (_cpu_of_workers(client) - cpu0) / args.repeats / len(Q)
                own = (time.process_time() - own0) / args.repeats / len(Q)
                I = np.concatenate([o[1] for o in out])
                name = f"ShardedAVQIndex, {workers} worker(s) x 1 thread" + (", mmap" if mmap else "")
                rows.append(
                    {
                        "system": name,
                        "workers": workers,
                        "threads": 1,
                        "mmap": mmap,
                        "leaves_to_search": lts,
                        "reorder_k": rk,
                        "qps": len(Q) / t,
                        "recall": _recall(I, gt),
                        "worker_cpu_us_per_query": cpu * 1e6,
                        "client_cpu_us_per_query": own * 1e6,
                    }
                )
                print(
                    f"  {name}: lts={lts} rk={rk} QPS {rows[-1]['qps']:.0f} recall {rows[-1]['recall']:.4f}; "
                    f"CPU per query: workers {cpu * 1e6:.1f} us, client {own * 1e6:.1f} us",
                    flush=True,
                )
            after = _rss_of_workers(client)
            memory[f"{workers}w{' mmap' if mmap else ''}"] = {
                "idle_rss": list(idle.values()),
                "loaded_rss": list(loaded.values()),
                "after_search_rss": list(after.values()),
                "shards_per_worker": [len([i for i in index.shard_info() if w in i["workers"]]) for w in after],
            }
            m = memory[f"{workers}w{' mmap' if mmap else ''}"]

            def mib(values):
                return [f"{r / 2**20:.1f} ({a / 2**20:.1f} anon)" for r, a in values]

            print(
                f"  RSS per worker (MiB): idle {mib(m['idle_rss'])}, loaded {mib(m['loaded_rss'])}, after "
                f"searches {mib(m['after_search_rss'])}; shards {m['shards_per_worker']}",
                flush=True,
            )
            index.release()
        finally:
            client.close()
            cluster.close()
    res["search"] = rows
    res["memory"] = memory
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
