"""What ``AVQIndex.tune(layouts="auto")`` picks on an ann-benchmarks file, and what it costs.

Usage: python benchmarks/tune_layouts.py DATASET.hdf5 [--n 100000] [--targets 0.9,0.95] [--threads 1]
(run it from an installed package, under the benchmark lock: ``flock /tmp/avq-bench.lock ...``).

Builds ``AVQIndex(metric=...)`` with the defaults (the layout ``_params.resolve_encoding`` picks),
then, for each target and on a fresh copy of that index, runs ``tune(target, X=train,
layouts="auto")``: held-out tuning points, every layout of {2, 4} dims per block x {no spill, SOAR}
trained and measured. Prints every layout's measured budget, recall and QPS (one thread, all
tuning queries in one call), the choice, the time tuning took, whether the choice agrees with
``resolve_encoding``'s rule, and the recall@10 of a plain ``search(Q, k=10)`` with the result on
the file's queries (never used for tuning). ``--n`` keeps n training rows drawn at random
(seed 0, in file order; the exact neighbours of the queries are then recomputed among them).
"""

from __future__ import annotations

import argparse
import pickle
import time

import numpy as np

import avq_plugin
from avq_plugin import _params, datasets


def recall_at_10(I: np.ndarray, gt: np.ndarray) -> float:
    return float((I[:, :, None] == gt[:, None, :10]).any(axis=1).mean())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("--n", type=int, default=None, help="keep n training rows drawn at random (seed 0)")
    p.add_argument("--targets", default="0.9,0.95")
    p.add_argument("--threads", type=int, default=1, help="threads for building and tuning (timings use one)")
    args = p.parse_args()
    ds = datasets.load_hdf5(args.dataset)
    metric = {"angular": "cosine", "euclidean": "l2"}[ds.metric]
    X, Q = ds.train, ds.test
    gt = ds.neighbors[:, :10]
    if args.n is not None and args.n < X.shape[0]:
        rows = np.sort(np.random.default_rng(0).choice(X.shape[0], size=args.n, replace=False))
        X = np.ascontiguousarray(X[rows])
        gt = avq_plugin.ExactIndex(metric=metric, num_threads=args.threads).fit(X).search(Q, k=10)[1]
    t0 = time.perf_counter()
    base = avq_plugin.AVQIndex(metric=metric, seed=0, num_threads=args.threads).fit(X)
    rule = (base.dims_per_block_, base.spill_)
    print(
        f"{ds.name}: {X.shape[0]}{' (random rows)' if args.n else ''} x {X.shape[1]} {ds.metric}, {Q.shape[0]} fresh queries; "
        f"AVQIndex(metric={metric!r}) defaults: {base.num_leaves_} leaves, dims_per_block={rule[0]}, "
        f"spill={rule[1]!r} (resolve_encoding), built in {time.perf_counter() - t0:.1f} s, "
        f"{args.threads} thread(s); avq_plugin {avq_plugin.__version__}",
        flush=True,
    )
    assert rule == tuple(_params.resolve_encoding(X.shape[1], metric))
    for target in [float(t) for t in args.targets.split(",")]:
        index = pickle.loads(pickle.dumps(base))
        r = index.tune(target, k=10, X=X, layouts="auto")
        fresh = recall_at_10(index.search(Q, k=10)[1], gt)
        chosen = (r.dims_per_block, r.spill)
        print(f"\ntarget {target:g}: tune took {r.seconds:.1f} s; {r.num_queries} held-out tuning points")
        print("| dims_per_block | spill | leaves_to_search | reorder_k | recall (tuning) | QPS | train s | tune s |")
        print("|---|---|---|---|---|---|---|---|")
        for t in r.layouts:
            mark = " **chosen**" if (t.dims_per_block, t.spill) == chosen else ""
            if t.status != "measured":
                print(f"| {t.dims_per_block} | {t.spill} | {t.status} | | | | | |")
                continue
            print(
                f"| {t.dims_per_block}{mark} | {t.spill} | {t.leaves_to_search} | {t.reorder_k} | {t.recall:.4f} "
                f"| {t.qps:,.0f} | {t.train_seconds:.1f} | {t.tune_seconds:.1f} |"
            )
        verdict = "agrees with" if chosen == rule else "differs from"
        print(
            f"chosen: dims_per_block={chosen[0]}, spill={chosen[1]!r} ({verdict} resolve_encoding's "
            f"{rule}); recall@10 on the fresh queries with the tuned defaults: {fresh:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
