"""A leaf-routed ShardedAVQIndex over millions of vectors on a 2-worker LocalCluster: build time,
memory per worker, batch QPS and recall@10 against the search budget.

The data set is synthetic and clustered (the cost curve needs size, not realism): --n vectors
of dimension --d from a mixture of --topics Gaussian clusters on the unit sphere's scale
(topic centre + noise), generated deterministically in chunks of 262,144 rows (a generator
seeded with (seed, chunk)) into a .npy file that the workers read (memory-mapped); the
queries are --nq more vectors of the same mixture (another seed), and the exact top-10 of the
first --gt of them (cosine, brute force in this process, in blocks) gives recall@10. With
--glove the same budgets are also run on GloVe-190k (real data; its own ground truth), so the
recall of a budget on real data sits next to its cost at scale.

    flock /tmp/avq-bench.lock python benchmarks/dask_5m.py --n 5000000 --d 50 \\
        --glove /work/shared/data/glove6b-50-angular-200k.hdf5 --json 5m.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from avq_plugin.distributed import ShardedAVQIndex

K = 10
CHUNK = 262144


def mixture_chunk(seed, i, rows, d, topics, noise):
    rng = np.random.default_rng([seed, i])
    labels = rng.integers(0, len(topics), rows)
    return (topics[labels] + noise * rng.standard_normal((rows, d))).astype(np.float32)


def write_data(path, n, d, topics, noise, seed):
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for i, a in enumerate(range(0, n, CHUNK)):
        b = min(n, a + CHUNK)
        out[a:b] = mixture_chunk(seed, i, b - a, d, topics, noise)
    out.flush()
    del out


def exact_top_k(path, Q, k):
    """Cosine top-k of Q over the .npy file, brute force in blocks of rows."""
    X = np.load(path, mmap_mode="r")
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    best_s = np.full((len(Q), k), -np.inf, np.float32)
    best_i = np.zeros((len(Q), k), np.int64)
    for a in range(0, X.shape[0], CHUNK):
        B = np.asarray(X[a : a + CHUNK])
        B = B / np.linalg.norm(B, axis=1, keepdims=True)
        S = Qn @ B.T
        top = np.argpartition(-S, k, axis=1)[:, :k]
        s = np.concatenate([best_s, np.take_along_axis(S, top, 1)], axis=1)
        i = np.concatenate([best_i, top + a], axis=1)
        o = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, o, 1), np.take_along_axis(i, o, 1)
    return best_i


def recall(I, gt):
    return float((I[:, :K, None] == gt[:, None, :K]).any(axis=1).mean())


def worker_memory(client):
    def rss():
        import psutil

        m = psutil.Process().memory_info()
        return m.rss, m.rss - m.shared

    return client.run(rss)


def run_budgets(index, Q, gt_rows, gt, budgets, repeats):
    rows = []
    for lts, rk in budgets:
        index.search(Q[:200], k=K, leaves_to_search=lts, reorder_k=rk)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, I = index.search(Q, k=K, leaves_to_search=lts, reorder_k=rk)
            best = min(best, time.perf_counter() - t0)
        st = index.search_stats()
        rows.append(
            {
                "leaves_to_search": lts,
                "reorder_k": rk,
                "qps": len(Q) / best,
                "recall": recall(I[gt_rows], gt),
                "shards_visited": st["shards_visited_per_query"],
                "scanned_per_query": st["candidates_scanned_per_query"],
                "client_seconds": st["client_seconds"],
            }
        )
        r = rows[-1]
        print(
            f"  lts={lts} rk={rk}: QPS {r['qps']:.0f}, recall@10 {r['recall']:.4f}, shards visited "
            f"{r['shards_visited']:.2f}, scanned {r['scanned_per_query']:.0f} per query",
            flush=True,
        )
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5_000_000)
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--topics", type=int, default=4096)
    ap.add_argument("--noise", type=float, default=0.7, help="noise scale per dimension (topics: unit scale)")
    ap.add_argument("--nq", type=int, default=10000, help="queries per search call (one batch)")
    ap.add_argument("--gt", type=int, default=500, help="queries with an exact ground truth")
    ap.add_argument("--budgets", default="20:100,40:100,80:200,160:200", help="leaves_to_search:reorder_k")
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--glove", help="also run the budgets on this ann-benchmarks GloVe file (angular)")
    ap.add_argument("--dir", help="directory for the generated .npy (default: a temporary one, deleted)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    from distributed import Client, LocalCluster

    budgets = [tuple(int(v) for v in b.split(":")) for b in args.budgets.split(",")]
    rng = np.random.default_rng([args.seed, 123])
    topics = rng.standard_normal((args.topics, args.d)).astype(np.float32) / np.sqrt(args.d)
    noise = args.noise / np.sqrt(args.d)
    tmp = args.dir or tempfile.mkdtemp(prefix="avq-5m-")
    path = os.path.join(tmp, f"mixture-{args.n}x{args.d}.npy")
    out = {"args": vars(args)}
    t0 = time.perf_counter()
    if not os.path.exists(path):
        write_data(path, args.n, args.d, topics, noise, args.seed)
    out["generate_s"] = time.perf_counter() - t0
    Q = mixture_chunk(args.seed + 1, 0, args.nq, args.d, topics, noise)
    gt_rows = np.arange(min(args.gt, args.nq))
    t0 = time.perf_counter()
    gt = exact_top_k(path, Q[gt_rows], K)
    out["ground_truth_s"] = time.perf_counter() - t0
    print(
        f"data: {args.n} x {args.d} ({os.path.getsize(path) / 2**30:.2f} GiB, {out['generate_s']:.1f} s); exact "
        f"top-10 of {len(gt_rows)} queries in {out['ground_truth_s']:.1f} s",
        flush=True,
    )

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0", memory_limit=0
    )
    client = Client(cluster)
    try:
        client.run(lambda: __import__("avq_plugin.distributed"))
        idle = worker_memory(client)
        index = ShardedAVQIndex(metric="cosine", anisotropic_threshold=args.threshold, client=client)
        t0 = time.perf_counter()
        index.fit([path])
        out["build_s"] = time.perf_counter() - t0
        built = worker_memory(client)
        infos = index.shard_info()
        out["num_leaves"] = index.num_leaves_
        out["shards"] = [{"ntotal": i["ntotal"], "memory_usage": i["memory_usage"]} for i in infos]
        out["rss_idle"], out["rss_built"] = list(idle.values()), list(built.values())
        print(
            f"build: {out['build_s']:.1f} s on 2 workers, {index.num_leaves_} leaves, shards "
            f"{[i['ntotal'] for i in infos]} vectors, {[round(i['memory_usage'] / 2**20) for i in infos]} MiB; "
            f"RSS per worker {[round(r / 2**20) for r, _ in built.values()]} MiB (idle "
            f"{[round(r / 2**20) for r, _ in idle.values()]})",
            flush=True,
        )
        out["synthetic"] = run_budgets(index, Q, gt_rows, gt, budgets, args.repeats)
        out["rss_after_search"] = list(worker_memory(client).values())
        index.release()
        if args.glove:
            from avq_plugin.datasets import load_hdf5

            ds = load_hdf5(args.glove)
            g = ShardedAVQIndex(metric="cosine", anisotropic_threshold=args.threshold, client=client)
            t0 = time.perf_counter()
            g.fit([(args.glove, "train")])
            print(f"GloVe: {len(ds.train)} vectors, {g.num_leaves_} leaves, build {time.perf_counter() - t0:.1f} s")
            Qg = ds.test[: args.nq]
            out["glove"] = run_budgets(
                g, Qg, np.arange(len(Qg)), ds.neighbors[: len(Qg), :K], budgets + [(60, 300)], args.repeats
            )
            g.release()
    finally:
        client.close()
        cluster.close()
        if not args.dir:
            os.remove(path)
            os.rmdir(tmp)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
