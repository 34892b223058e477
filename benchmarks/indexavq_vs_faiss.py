"""IndexAVQ (IVF) next to Faiss's IVF{n},PQ{d/2}x4fsr,RFlat, in one process, single thread.

Both indexes: the same nlist, 4-bit codes with M = d/2 (residual encoding), exact float re-ranking.
Budgets are matched: Faiss ``nprobe`` = IndexAVQ ``nprobe`` and Faiss ``k_factor * k`` =
IndexAVQ ``reorder_k``. Angular datasets are normalised and searched by inner product; Euclidean
ones by L2. Prints recall@10 and single-query QPS per budget, and QPS at recall >= 0.9 with the
ratio. Hold the benchmark lock on shared machines:

    flock /tmp/avq-bench.lock python benchmarks/indexavq_vs_faiss.py /work/shared/data/glove6b-50-angular-200k.hdf5
"""

from __future__ import annotations

import argparse
import time

import numpy as np

BUDGETS = [(5, 4), (10, 4), (20, 5), (30, 10), (60, 15), (100, 20)]  # (nprobe, k_factor); reorder_k = k_factor * k


def main(argv=None):
    import faiss

    from avq_plugin import IndexAVQ
    from avq_plugin.datasets import load_glove_subset, load_hdf5

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", nargs="?", help="ann-benchmarks HDF5 file (default: the shipped GloVe subset)")
    ap.add_argument("--nlist", type=int, default=None, help="IVF leaves (default: about 2 sqrt(n))")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per budget (the best is kept)")
    args = ap.parse_args(argv)

    ds = load_hdf5(args.dataset) if args.dataset else load_glove_subset()
    X = np.ascontiguousarray(ds.train, np.float32)
    Q = np.ascontiguousarray(ds.test[: args.queries], np.float32)
    gt = ds.neighbors[: len(Q), :10]
    metric = 0 if ds.metric == "angular" else 1
    if metric == 0:
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    n, d = X.shape
    M = d // 2
    nlist = args.nlist or int(2 * round(np.sqrt(n)))
    k = 10
    faiss.omp_set_num_threads(1)

    t = time.perf_counter()
    ours = IndexAVQ(d, M, 4, metric, nlist=nlist, reorder_k=100, num_threads=1)
    ours.train(X)
    ours.add(X)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = faiss.index_factory(
        d, f"IVF{nlist},PQ{M}x4fsr,RFlat", faiss.METRIC_INNER_PRODUCT if metric == 0 else faiss.METRIC_L2
    )
    theirs.train(X)
    theirs.add(X)
    t_theirs = time.perf_counter() - t
    ivf = faiss.extract_index_ivf(theirs)

    def recall(I):
        return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(I, gt)]))

    def run(index):
        best = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            I = np.vstack([index.search(Q[i : i + 1], k)[1] for i in range(len(Q))])
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        return recall(I), len(Q) / best

    print(
        f"{ds.name}: n={n} d={d} metric={'IP (normalised)' if metric == 0 else 'L2'} nlist={nlist} M={M}x4 "
        f"queries={len(Q)}; build s: IndexAVQ {t_ours:.1f}, Faiss {t_theirs:.1f}"
    )
    print("| nprobe | reorder | IndexAVQ recall@10 | IndexAVQ QPS | Faiss x4fsr,RFlat recall@10 | Faiss QPS |")
    print("|---|---|---|---|---|---|")
    rows = []
    for nprobe, kf in BUDGETS:
        ours.nprobe, ours.reorder_k = nprobe, kf * k
        ivf.nprobe, theirs.k_factor = nprobe, kf
        r_o, q_o = run(ours)
        r_t, q_t = run(theirs)
        rows.append((r_o, q_o, r_t, q_t))
        print(f"| {nprobe} | {kf * k} | {r_o:.3f} | {q_o:.0f} | {r_t:.3f} | {q_t:.0f} |", flush=True)
    best_o = max((q for r, q, _, _ in rows if r >= 0.9), default=None)
    best_t = max((q for _, _, r, q in rows if r >= 0.9), default=None)
    fmt = lambda q: "not reached" if q is None else f"{q:.0f}"  # noqa: E731
    print(
        f"QPS at recall@10 >= 0.9: IndexAVQ {fmt(best_o)}, Faiss {fmt(best_t)}"
        + (f", ratio {best_o / best_t:.2f}x" if best_o and best_t else "")
    )


if __name__ == "__main__":
    main()
