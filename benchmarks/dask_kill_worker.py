"""Kill one Dask worker process (SIGKILL) during a stream of searches of a replicated ShardedAVQIndex.

A LocalCluster of --workers worker processes (1 thread each) holds a leaf-routed index
(``sharding="leaves"``, ``replicas=2``) built from an ann-benchmarks HDF5 file (read by the
workers). The client first computes the answer of every query batch once (the expected
answers) and checks them against an in-process reference: one ``AVQIndex`` with the same
quantizer over all the data playing every search group (``_search_leaves`` restricted to the
group's leaves with its summed budget, the same routing and merge code). Then it streams the batches again, several passes;
during batch --kill-at (--kill-delay seconds after it starts) it sends SIGKILL to the process
of one worker (its pid from ``client.run(os.getpid)``): a real process death, not a graceful
retire. Recorded per batch: wall time, whether it raised, whether its ids and scores equal the
expected ones, and the live replicas per shard in the client's table (so the background
rebuild of the lost replicas shows, and how long it takes from the kill).

    flock /tmp/avq-bench.lock python benchmarks/dask_kill_worker.py \\
        /work/shared/data/glove6b-50-angular-200k.hdf5 --workers 3 --shards 6 --json kill.json

Exit status 1 when any batch raised or differed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time

import h5py
import numpy as np
from distributed import Client, LocalCluster

from avq_plugin.distributed import ShardedAVQIndex
from avq_plugin.distributed.merge import merge_rows
from avq_plugin.distributed.placement import group_jobs, route_queries

K = 10


def reference(index, single, Q, lts, rk):
    """The routed search computed in this process: one AVQIndex over all the data plays every
    search group (the shards a worker searches as one index)."""
    P = index._widen_short_probes(Q, single._probe(Q, lts), K)
    jobs, _, _ = route_queries(P, index.leaf_to_shard_, index._leaf_sizes, index._n_shards, rk)
    groups = group_jobs(jobs, index._shard_group)
    parts = [(rows, *single._search_leaves(Q[rows], K, leaves, budget)) for rows, leaves, budget in groups.values()]
    return merge_rows(len(Q), K, parts, index.metric)


def replica_counts(index):
    with index._lock:
        return [len(h) for h in index._holders]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="ann-benchmarks HDF5 file (angular: cosine)")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1000, help="queries per search call")
    ap.add_argument("--passes", type=int, default=5, help="passes over the query batches after the expected answers")
    ap.add_argument(
        "--kill-at", default="12", help="the stream's batches during which a worker is killed (comma-separated)"
    )
    ap.add_argument("--kill-delay", type=float, default=0.01, help="seconds after that batch starts")
    ap.add_argument("--leaves", type=int, default=20, help="leaves_to_search")
    ap.add_argument("--reorder-k", type=int, default=100)
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--json", help="write every measurement here")
    args = ap.parse_args(argv)

    with h5py.File(args.data, "r") as f:
        if f.attrs.get("distance") != "angular":
            raise SystemExit("this benchmark uses cosine: pass an angular data set")
        X = np.asarray(f["train"], np.float32)
        Q = np.asarray(f["test"], np.float32)
    batches = [Q[i : i + args.batch] for i in range(0, len(Q), args.batch)]
    lts, rk = args.leaves, args.reorder_k

    cluster = LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        memory_limit=0,
    )
    client = Client(cluster)
    out = {"args": vars(args), "n": len(X), "batches": []}
    failures = 0
    try:
        client.run(lambda: __import__("avq_plugin.distributed"))
        t0 = time.perf_counter()
        index = ShardedAVQIndex(
            metric="cosine",
            n_shards=args.shards,
            replicas=args.replicas,
            anisotropic_threshold=args.threshold,
            leaves_to_search=lts,
            reorder_k=rk,
            client=client,
        ).fit([(args.data, "train")])
        out["build_s"] = time.perf_counter() - t0
        holders = {w for i in index.shard_info() for w in i["workers"]}
        print(
            f"built {args.shards} shards x {args.replicas} replicas on {args.workers} workers in "
            f"{out['build_s']:.1f} s; {len(holders)} workers hold replicas",
            flush=True,
        )
        single = index.trained_index()
        single.num_threads = 1
        single.add(X, np.arange(len(X), dtype=np.int64))
        expected = [index.search(q, k=K) for q in batches]
        ref_equal = all(
            np.array_equal(e[1], r[1]) and np.array_equal(e[0], r[0])
            for e, r in zip(expected, (reference(index, single, q, lts, rk) for q in batches))
        )
        gt = np.asarray(h5py.File(args.data, "r")["neighbors"][:, :K])
        I_all = np.concatenate([e[1] for e in expected])
        out["recall"] = float((I_all[:, :, None] == gt[:, None, :]).any(axis=1).mean())
        out["reference_equal"] = ref_equal
        print(
            f"expected answers: {len(batches)} batches of {args.batch}; recall@10 {out['recall']:.4f}; equal to the "
            f"in-process reference: {ref_equal}",
            flush=True,
        )
        if not ref_equal:
            failures += 1

        kill_at = [int(v) for v in args.kill_at.split(",")]
        killed = {}
        victims = []

        def kill(pid):
            killed["t"] = time.perf_counter()
            os.kill(pid, signal.SIGKILL)

        stream = [(p, b) for p in range(args.passes) for b in range(len(batches))]
        rebuilt_at = None
        rebuilds = []
        for step, (_, b) in enumerate(stream):
            timer = None
            if step in kill_at:
                # The victim: the live worker holding the most replicas (its pid: client.run(os.getpid)).
                pids = client.run(os.getpid)
                with index._lock:
                    held = {w: sum(w in h for h in index._holders) for w in pids}
                victim = max(sorted(pids), key=lambda w: held[w])
                victims.append(victim)
                timer = threading.Timer(args.kill_delay, kill, (pids[victim],))
                if "t" in killed:
                    rebuilds.append(rebuilt_at)
                rebuilt_at = None
            t1 = time.perf_counter()
            if timer is not None:
                timer.start()
            row = {"step": step, "batch": b}
            try:
                D, I = index.search(batches[b], k=K)
                row["error"] = None
                row["ids_equal"] = bool(np.array_equal(I, expected[b][1]))
                row["scores_equal"] = bool(np.array_equal(D, expected[b][0]))
            except Exception as exc:  # recorded, the stream goes on
                row["error"] = f"{type(exc).__name__}: {exc}"
                row["ids_equal"] = row["scores_equal"] = False
            t2 = time.perf_counter()
            if timer is not None:
                timer.join()
                row["kill_after_s"] = killed["t"] - t1
                row["kill_during_search"] = t1 <= killed["t"] <= t2
            row["seconds"] = t2 - t1
            row["replicas"] = replica_counts(index)
            row["rebuilding"] = len(index._rebuilding)
            row["stats"] = index.search_stats()
            if "t" in killed:
                row["since_kill_s"] = t2 - killed["t"]
                if rebuilt_at is None and min(row["replicas"]) >= args.replicas and not row["rebuilding"]:
                    rebuilt_at = row["since_kill_s"]
            failures += bool(row["error"]) or not (row["ids_equal"] and row["scores_equal"])
            out["batches"].append(row)
            print(
                f"  step {step:3d} batch {b}: {row['seconds'] * 1e3:7.1f} ms, "
                f"{'ERROR ' + row['error'] if row['error'] else 'ok'}, ids equal {row['ids_equal']}, scores equal "
                f"{row['scores_equal']}, replicas per shard {row['replicas']}, shard tasks "
                f"{row['stats']['shard_tasks'] if row['stats'] else '-'}"
                + (f"  <- SIGKILL {victim} after {row['kill_after_s'] * 1e3:.0f} ms" if timer else ""),
                flush=True,
            )
        # The rebuild may finish after the stream: wait for it (bounded).
        deadline = time.monotonic() + 120
        while rebuilt_at is None and time.monotonic() < deadline:
            index._refresh_replicas()
            if min(replica_counts(index)) >= args.replicas and not index._rebuilding:
                rebuilt_at = time.perf_counter() - killed["t"]
            time.sleep(0.1)
        rebuilds.append(rebuilt_at)
        out["rebuilt_s_after_kill"] = rebuilds
        infos = index.shard_info()
        live = set(client.scheduler_info(n_workers=-1)["workers"])
        out["final_workers"] = [i["workers"] for i in infos]
        out["victims"] = victims
        out["replicas_per_live_worker"] = {w: sum(w in i["workers"] for i in infos) for w in sorted(live)}
        ok_final = all(len(set(i["workers"])) == args.replicas and not set(victims) & set(i["workers"]) for i in infos)
        ok_final &= all(set(i["workers"]) <= live for i in infos)
        out["final_replicas_ok"] = ok_final
        D, I = index.search(Q, k=K)
        out["final_all_equal"] = bool(np.array_equal(I, I_all))
        failures += (not ok_final) + (not out["final_all_equal"])
        times = np.array([r["seconds"] for r in out["batches"]]) * 1e3
        k = kill_at[0]
        before, after = times[:k], np.delete(times, kill_at)[k:]
        print(
            f"batch ms: before the first kill median {np.median(before):.1f} (max {before.max():.1f}); the batches of "
            f"the kills {', '.join(f'{times[i]:.1f}' for i in kill_at)}; other batches after the first kill median "
            f"{np.median(after):.1f} (max {after.max():.1f}); replicas rebuilt "
            f"{[r if r is None else round(r, 2) for r in rebuilds]} s after each kill; replicas per live worker "
            f"{list(out['replicas_per_live_worker'].values())}, every shard on {args.replicas} distinct live workers "
            f"{ok_final}; whole query set equal {out['final_all_equal']}; failures {failures}",
            flush=True,
        )
        index.release()
    finally:
        client.close()
        cluster.close()
    out["failures"] = failures
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
