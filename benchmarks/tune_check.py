"""Check AVQIndex.tune on an ann-benchmarks file: tune on held-out indexed points, measure on the file's queries.

Usage: PYTHONPATH=. python benchmarks/tune_check.py DATASET.hdf5 [--targets 0.8,0.9,0.95,0.99]

For each target it prints the chosen (leaves_to_search, reorder_k), the recall@10 measured on the
1000 held-out tuning points, the recall@10 of a plain ``search(Q, k=10)`` (the tuned defaults) on
the file's queries, which were never used for tuning (id-based, against the file's ground truth),
the QPS tune reports (one thread, batched) and the time tune took.
"""

import argparse
import time

import avq_plugin
from avq_plugin import datasets


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("--targets", default="0.8,0.9,0.95,0.99")
    p.add_argument("--threads", type=int, default=2, help="threads for building and tuning")
    args = p.parse_args()
    ds = datasets.load_hdf5(args.dataset)
    metric = {"angular": "cosine", "euclidean": "l2"}[ds.metric]
    t0 = time.perf_counter()
    index = avq_plugin.AVQIndex(metric=metric, seed=0, num_threads=args.threads).fit(ds.train)
    print(
        f"{ds.name}: {ds.n_train} x {ds.dim} {ds.metric}, {ds.n_test} fresh queries; "
        f"AVQIndex(metric={metric!r}) defaults, {index.num_leaves_} leaves, built in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    print(
        "| target | leaves_to_search | reorder_k | recall, tuning points | recall, fresh queries "
        "| QPS reported by tune | tune time |"
    )
    print("|---|---|---|---|---|---|---|")
    gt = ds.neighbors[:, :10]
    for target in [float(t) for t in args.targets.split(",")]:
        r = index.tune(target, k=10, X=ds.train)
        I = index.search(ds.test, k=10)[1]
        fresh = float((I[:, :, None] == gt[:, None, :]).any(axis=1).mean())
        print(
            f"| {target:g} | {r.leaves_to_search} | {r.reorder_k} | {r.recall:.4f} | {fresh:.4f} "
            f"| {r.qps:,.0f} | {r.seconds:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
