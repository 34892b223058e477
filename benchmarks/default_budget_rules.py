"""Recall@10 and single-thread QPS of candidate default-budget rules (issue 13 section 1; the
table of docs/parameters.md, "Defaults").

Usage (hold the benchmark lock on shared machines)::

    flock /tmp/avq-bench.lock python -P benchmarks/default_budget_rules.py \\
        --hdf5 /work/shared/data/glove6b-50-angular-200k.hdf5 cosine \\
        --hdf5 /work/shared/data/fashion-mnist-784-euclidean.hdf5 l2

The shipped GloVe subset (20k x 50, cosine) is always measured first. Every index is
``AVQIndex(metric=..., seed=0)`` with its default num_leaves (round(sqrt(n))); each rule is then
searched with its (leaves_to_search, reorder_k), three interleaved repetitions.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import avq_plugin
from avq_plugin.datasets import load_glove_subset_ground_truth

RULES = {
    "0.15L,rk100": (lambda L: math.ceil(0.15 * L), 100),
    "0.15L,rk200": (lambda L: math.ceil(0.15 * L), 200),
    "3.5sqrtL,rk100": (lambda L: min(L, math.ceil(3.5 * math.sqrt(L))), 100),
    "3.5sqrtL,rk200": (lambda L: min(L, math.ceil(3.5 * math.sqrt(L))), 200),
    "2.5sqrtL,rk200": (lambda L: min(L, math.ceil(2.5 * math.sqrt(L))), 200),
}


def datasets(files, max_queries):
    z = np.load(f"{avq_plugin.__path__[0]}/data/glove50_20k.npz")
    gt, _ = load_glove_subset_ground_truth("cosine")
    yield "glove-20k", "cosine", z["train"].astype(np.float32), z["test"].astype(np.float32), gt
    import h5py

    for path, metric in files:
        with h5py.File(path) as f:
            Q, gt = f["test"][:max_queries], f["neighbors"][:max_queries]
            yield path.rsplit("/", 1)[-1], metric, f["train"][:], Q, gt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hdf5", nargs=2, action="append", default=[], metavar=("PATH", "METRIC"))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    k = 10
    for name, metric, X, Q, gt in datasets(args.hdf5, args.queries):
        t0 = time.perf_counter()
        idx = avq_plugin.AVQIndex(metric=metric, seed=0, num_threads=1).fit(X)
        L = idx.num_leaves_
        print(f"{name}: n={len(X)} d={X.shape[1]} L={L} build {time.perf_counter() - t0:.1f}s", flush=True)
        truth = gt[:, :k]
        for rep in range(args.repeats):
            for rule, (lts_of, rk) in RULES.items():
                lts = lts_of(L)
                idx.search(Q[:50], k, leaves_to_search=lts, reorder_k=rk, num_threads=1)
                t = time.perf_counter()
                _, I = idx.search(Q, k, leaves_to_search=lts, reorder_k=rk, num_threads=1)
                dt = time.perf_counter() - t
                rec = np.mean([len(set(a) & set(b)) / k for a, b in zip(I, truth)])
                print(f"  rep{rep} {rule:16s} lts={lts:4d} rk={rk:4d} recall@10={rec:.4f} QPS={len(Q) / dt:8.0f}")


if __name__ == "__main__":
    main()
