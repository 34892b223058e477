"""Unit costs of a leaf-routed ShardedAVQIndex search at d = 100, the inputs of the sizing model
of docs/dask.md ("Sizing a billion 100-d vectors").

Measured on seeded Gaussian-mixture data, one thread, CPU time of this process (best of
--repeats), except the Dask part:

1. client, per query: scoring L router centres and selecting the probed leaves
   (``AVQIndex._probe``) at the billion-vector L = 31,623 (centres installed with
   ``_init_from_quantizer``, no training), for a probe width w; routing the probed leaves to
   shards (``placement.route_queries``), per probed leaf; merging the visited shards' top-k
   lists (``merge.merge_rows``), per visited shard;
2. shard, per (query, visited shard): the fixed part of ``_search_leaves`` (lookup table and
   top-k, one small leaf scanned); per candidate: the scan of the probed leaves (leaves of
   --leaf-size vectors, the size of a leaf of a 1e9 / 31,623 partition); per re-ranked
   candidate: float32 re-ranking (the store is --n x d floats, larger than the caches);
3. memory: bytes per vector of codes + ids, int8 rows, float32 rows (``memory_usage``);
4. Dask, on a LocalCluster of 2 worker processes (1 thread each): wall time and CPU (workers +
   client) of a 1-query search (the per-call overhead: routing, one task per worker, merge), and
   the CPU per query of a large batch against the in-process sum of the units above (the rest is
   Dask's per-task and transfer cost).

    flock /tmp/avq-bench.lock python benchmarks/dask_unit_costs.py --json units.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from avq_plugin import AVQIndex
from avq_plugin.distributed.merge import merge_rows
from avq_plugin.distributed.placement import route_queries

K = 10


def best_cpu(fn, repeats):
    """Best CPU seconds of fn() over repeats (CPU time of this process: robust to other load)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def mixture(rng, n, d, centres, scale=0.3):
    labels = rng.integers(0, len(centres), n)
    return (centres[labels] + scale * rng.standard_normal((n, d))).astype(np.float32)


def make_index(X, num_leaves, reorder, threshold, **kw):
    index = AVQIndex(
        metric="dot",
        num_leaves=num_leaves,
        dims_per_block=2,
        anisotropic_threshold=threshold,
        reorder=reorder,
        num_threads=1,
        seed=0,
        **kw,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eta / partition warnings on synthetic data are irrelevant here
        index.train(X)
    fixed = index.memory_usage()
    index.add(X)
    return index, (index.memory_usage() - fixed) / len(X)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--router-leaves", type=int, default=31623, help="L of the router (1e9 vectors: sqrt(n))")
    ap.add_argument("--probe", type=int, nargs="+", default=[158, 623], help="probe widths w (leaves per query)")
    ap.add_argument("--leaf-size", type=int, default=31623, help="vectors per leaf of the scan index")
    ap.add_argument("--n", type=int, default=253000, help="vectors of the scan index (about 8 leaves)")
    ap.add_argument("--nq", type=int, default=2000)
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    d, rng = args.d, np.random.default_rng(0)
    topics = rng.standard_normal((256, d)).astype(np.float32)
    Q = mixture(rng, args.nq, d, topics)
    out = {"args": vars(args)}

    # 2. Shard costs: the scan index has leaves of --leaf-size vectors.
    t0 = time.perf_counter()
    X = mixture(rng, args.n, d, topics)
    big, bpv_f32 = make_index(X, max(1, args.n // args.leaf_size), "float32", args.threshold)
    out["scan_index_build_s"] = time.perf_counter() - t0
    sizes = big._leaf_sizes()
    widths = (1, 2, 3, 4)
    P = big._probe(Q, max(widths))  # every query: its best leaves
    nq = len(Q)
    # Interleaved rounds (each configuration keeps its best): load from other processes hits all alike.
    cases = [(w, K) for w in widths] + [(2, 1000)]
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.repeats):
        for w, rk in cases:
            t = best_cpu(lambda w=w, rk=rk: big._search_leaves(Q, K, P[:, :w], rk), 1) / nq
            best[(w, rk)] = min(best[(w, rk)], t)
    scanned = [sizes[P[:, :w]].sum(1).mean() for w in widths]
    slope = np.polyfit(scanned, [best[(w, K)] for w in widths], 1)[0]  # seconds per scanned candidate
    scan_ns = slope * 1e9
    rerank_ns = (best[(2, 1000)] - best[(2, K)]) / (1000 - K) * 1e9
    # The fixed part: one small leaf (32 vectors) of an index with many leaves.
    small, _ = make_index(X[:32768], 1024, "float32", args.threshold)
    Ps = small._probe(Q, 1)
    t_small = best_cpu(lambda: small._search_leaves(Q, K, Ps, K), args.repeats) / nq
    fixed_us = (t_small - small._leaf_sizes()[Ps[:, 0]].mean() * scan_ns * 1e-9) * 1e6
    # The first leaf a shard scans for a query costs more per vector: the top-N threshold starts at
    # -inf, so all its vectors pass the SIMD filter and are selected down to reorder_k at once.
    first_ns = (best[(1, K)] - fixed_us * 1e-6 - scanned[0] * slope) / scanned[0] * 1e9
    out["shard"] = {
        "leaf_size_mean": float(sizes.mean()),
        "seconds_per_query_by_width": {str(w): best[(w, K)] for w in widths},
        "fixed_us_per_query_and_shard": fixed_us,
        "scan_ns_per_candidate": scan_ns,
        "first_leaf_extra_ns_per_vector": first_ns,
        "rerank_float32_ns_per_candidate": rerank_ns,
    }
    print(
        f"shard, d={d}, 1 thread: fixed {fixed_us:.2f} us per (query, shard); scan {scan_ns:.3f} ns per candidate "
        f"(leaves of {sizes.mean():.0f}), plus {first_ns:.2f} ns per vector of the first leaf; float32 re-ranking {rerank_ns:.1f} ns per candidate "
        f"(store {args.n} x {d}); build of the scan index {out['scan_index_build_s']:.1f} s",
        flush=True,
    )

    # 3. Memory per vector.
    _, bpv_none = make_index(X[:65536], 64, "none", args.threshold)
    _, bpv_i8 = make_index(X[:65536], 64, "int8", args.threshold)
    out["bytes_per_vector"] = {
        "codes+ids": bpv_none,
        "int8 rows": bpv_i8 - bpv_none,
        "float32 rows": bpv_f32 - bpv_none,
        "fixed_per_shard_bytes_at_router_leaves": None,
    }
    small = None  # free it

    # 1. Client costs at L = router_leaves (and smaller L: the centres leave the caches).
    L = args.router_leaves
    probe_by_L = {}
    for Lx in sorted({1024, 4096, L}):
        r = AVQIndex(metric="dot", dims_per_block=2, anisotropic_threshold=args.threshold, num_threads=1, seed=0)
        r._init_from_quantizer(d, mixture(rng, Lx, d, topics), big._quantizer()[1])
        w = min(args.probe[0], Lx)
        t = best_cpu(lambda r=r, w=w: r._probe(Q, w), args.repeats) / nq
        probe_by_L[Lx] = {"probe_us": t * 1e6, "ns_per_centre": t / Lx * 1e9, "w": w}
        router = r
    out["probe_by_L"] = probe_by_L
    print(
        f"client probe, w={args.probe[0]}: "
        + ", ".join(
            f"L={Lx}: {v['probe_us']:.1f} us ({v['ns_per_centre']:.2f} ns per centre)" for Lx, v in probe_by_L.items()
        ),
        flush=True,
    )
    out["bytes_per_vector"]["fixed_per_shard_bytes_at_router_leaves"] = router.memory_usage()
    client = {}
    for w in args.probe:
        probe_us = best_cpu(lambda w=w: router._probe(Q, w), args.repeats) / nq * 1e6
        Pw = router._probe(Q, w)
        row = {"probe_us": probe_us}
        for S in (16, 64):
            groups = (np.arange(L) * S // L).astype(np.int32)  # contiguous ranges: the probed leaves spread
            leaf_sizes = np.full(L, args.leaf_size, np.int64)
            route_us = best_cpu(lambda a=(Pw, groups, leaf_sizes, S, 100): route_queries(*a), args.repeats) / nq * 1e6
            jobs, visited, _ = route_queries(Pw, groups, leaf_sizes, S, 100)
            parts = []
            for rows, *_ in jobs.values():
                D = rng.standard_normal((len(rows), K)).astype(np.float32)
                parts.append((rows, -np.sort(-D, axis=1), rng.integers(0, 10**9, (len(rows), K))))
            merge_us = best_cpu(lambda parts=parts: merge_rows(nq, K, parts, "dot"), args.repeats) / nq * 1e6
            row[f"S={S}"] = {
                "visited": float(visited.mean()),
                "route_us": route_us,
                "route_ns_per_probed_leaf": route_us * 1e3 / w,
                "merge_us": merge_us,
                "merge_us_per_visited_shard": merge_us / visited.mean(),
            }
        client[f"w={w}"] = row
        print(
            f"client, L={L}, w={w}: probe {probe_us:.1f} us/query; "
            + "; ".join(
                f"{s}: {v['visited']:.1f} shards visited, route {v['route_us']:.1f} us "
                f"({v['route_ns_per_probed_leaf']:.1f} ns per probed leaf), merge {v['merge_us']:.1f} us "
                f"({v['merge_us_per_visited_shard']:.2f} us per visited shard)"
                for s, v in row.items()
                if s.startswith("S=")
            ),
            flush=True,
        )
    out["client"] = client
    b = out["bytes_per_vector"]
    print(
        f"bytes per vector: codes+ids {b['codes+ids']:.2f}, int8 rows +{b['int8 rows']:.2f}, float32 rows "
        f"+{b['float32 rows']:.2f}; the quantizer at L={L}: {b['fixed_per_shard_bytes_at_router_leaves'] / 1e6:.1f} MB",
        flush=True,
    )
    router = big = None  # free them before the cluster starts

    if not args.no_dask:
        out["dask"] = dask_costs(args, rng, topics, out["shard"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


def dask_costs(args, rng, topics, shard_units):
    """Per-call overhead and per-query residual of Dask on a 2-worker LocalCluster."""
    import psutil
    from distributed import Client, LocalCluster

    from avq_plugin.distributed import ShardedAVQIndex

    def worker_cpu(client):
        def cpu():
            t = psutil.Process().cpu_times()
            return t.user + t.system

        return sum(client.run(cpu).values())

    d = args.d
    X = mixture(rng, 65536, d, topics)
    Q = mixture(rng, 4000, d, topics)
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0", memory_limit=0
    )
    client = Client(cluster)
    res = {}
    try:
        index = ShardedAVQIndex(
            metric="dot",
            n_shards=4,
            num_leaves=256,
            dims_per_block=2,
            anisotropic_threshold=args.threshold,
            leaves_to_search=16,
            reorder_k=100,
            client=client,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            index.fit(X)
        index.search(Q[:100], k=K)  # warm-up
        calls = 100
        w0, c0, t0 = worker_cpu(client), time.process_time(), time.perf_counter()
        for i in range(calls):
            index.search(Q[i : i + 1], k=K)
        wall = (time.perf_counter() - t0) / calls
        wcpu = (worker_cpu(client) - w0) / calls
        ccpu = (time.process_time() - c0) / calls
        visited1 = None
        res["one_query_call"] = {"wall_ms": wall * 1e3, "worker_cpu_ms": wcpu * 1e3, "client_cpu_ms": ccpu * 1e3}
        print(
            f"dask, 2 workers: a 1-query search: {wall * 1e3:.2f} ms wall, CPU {wcpu * 1e3:.2f} ms workers + "
            f"{ccpu * 1e3:.2f} ms client",
            flush=True,
        )
        best = None
        for _ in range(args.repeats):
            w0, c0, t0 = worker_cpu(client), time.process_time(), time.perf_counter()
            index.search(Q, k=K)
            wall = time.perf_counter() - t0
            row = (wall, worker_cpu(client) - w0, time.process_time() - c0)
            best = row if best is None or row[1] + row[2] < best[1] + best[2] else best
        st = index.search_stats()
        visited1 = st["shards_visited_per_query"]
        nq = len(Q)
        model_worker_us = (
            visited1 * shard_units["fixed_us_per_query_and_shard"]
            + st["candidates_scanned_per_query"] * shard_units["scan_ns_per_candidate"] * 1e-3
            + st["reranked_per_query"] * shard_units["rerank_float32_ns_per_candidate"] * 1e-3
        )
        res["batch"] = {
            "nq": nq,
            "qps": nq / best[0],
            "worker_cpu_us_per_query": best[1] / nq * 1e6,
            "client_cpu_us_per_query": best[2] / nq * 1e6,
            "visited": visited1,
            "scanned": st["candidates_scanned_per_query"],
            "reranked": st["reranked_per_query"],
            "model_worker_us_per_query": model_worker_us,
            "dask_tasks": st["dask_tasks"],
        }
        r = res["batch"]
        print(
            f"dask, 2 workers, batch of {nq}: {r['qps']:.0f} QPS, CPU {r['worker_cpu_us_per_query']:.1f} us/query "
            f"workers + {r['client_cpu_us_per_query']:.1f} client; {visited1:.2f} shards visited, "
            f"{r['scanned']:.0f} scanned, {r['reranked']:.0f} re-ranked: the shard units predict "
            f"{model_worker_us:.1f} us of worker CPU",
            flush=True,
        )
        index.release()
    finally:
        client.close()
        cluster.close()
    return res


if __name__ == "__main__":
    main()
