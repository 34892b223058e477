"""scikit-learn view of the benchmark: AVQNearestNeighbors.kneighbors vs
NearestNeighbors(algorithm="brute"), both single-threaded, on an ann-benchmarks HDF5 file.

Usage (hold the benchmark lock on shared machines)::

    flock /tmp/avq-bench.lock python benchmarks/bench_sklearn.py \\
        --dataset /work/shared/data/glove6b-50-angular-200k.hdf5

Prints recall@10 (against the file's ground truth), the kneighbors time for all queries and the
speed-up over exact search, for the default budget and a few leaves_to_search values. Needs the
``bench`` and ``sklearn`` extras (h5py, scikit-learn; threadpoolctl comes with scikit-learn).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from avq_plugin import AVQNearestNeighbors
from avq_plugin.datasets import load_hdf5


def recall_at_10(I, gt):
    gt = gt[:, :10]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, gt)]))


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="ann-benchmarks HDF5 file")
    ap.add_argument("--queries", type=int, default=10000, help="number of test queries used")
    ap.add_argument("--leaves", type=int, nargs="*", default=[20, 30, 44], help="extra leaves_to_search values")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is kept)")
    args = ap.parse_args(argv)

    ds = load_hdf5(args.dataset).subsample_queries(args.queries)
    metric = "cosine" if ds.metric == "angular" else "euclidean"
    X, Q, gt = ds.train, ds.test, ds.neighbors
    print(f"{ds.name}: n={len(X)} d={X.shape[1]} queries={len(Q)} metric={metric}, one thread")
    with threadpool_limits(1):
        ref = NearestNeighbors(n_neighbors=10, metric=metric, algorithm="brute", n_jobs=1).fit(X)
        t_exact, I = best_time(lambda: ref.kneighbors(Q, return_distance=False), 1)
        print(f"NearestNeighbors(algorithm='brute'): {t_exact:.2f} s, recall@10 {recall_at_10(I, gt):.4f}")
        t0 = time.perf_counter()
        ours = AVQNearestNeighbors(n_neighbors=10, metric=metric, n_jobs=1, random_state=0).fit(X)
        t_fit = time.perf_counter() - t0
        lts_default = ours.index_.default_search_params()[0]
        print(
            f"AVQNearestNeighbors fit: {t_fit:.2f} s, num_leaves={ours.index_.num_leaves_}, "
            f"default leaves_to_search={lts_default}"
        )
        for lts in [None] + list(args.leaves):
            # A search-budget change only: set the trained index's default instead of refitting.
            ours.index_.leaves_to_search = lts_default if lts is None else lts
            t, I = best_time(lambda: ours.kneighbors(Q, return_distance=False), args.repeat)
            label = "default" if lts is None else f"leaves_to_search={lts}"
            print(
                f"AVQNearestNeighbors ({label}): {t:.3f} s, recall@10 {recall_at_10(I, gt):.4f}, "
                f"speed-up x{t_exact / t:.1f} (fit + query: x{t_exact / (t + t_fit):.1f})"
            )


if __name__ == "__main__":
    main()
