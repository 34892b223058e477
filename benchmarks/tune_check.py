"""Check AVQIndex.tune on an ann-benchmarks file: tune on held-out indexed points, measure on the file's queries.

Usage: PYTHONPATH=. python benchmarks/tune_check.py DATASET.hdf5 [--targets 0.8,0.9,0.95,0.99]
                                                  [--compare-margin] [--rounds 5]

For each target it prints the chosen (leaves_to_search, reorder_k, leaf_margin), the recall@10
measured on the 1000 held-out tuning points, the recall@10 of a plain ``search(Q, k=10)`` (the
tuned defaults) on the file's queries, which were never used for tuning (id-based, against the
file's ground truth), the QPS tune reports (one thread, batched) and the time tune took.

``--compare-margin``: each target is tuned twice from copies of the same index, with
``leaf_margin=None`` (fixed counts only) and ``leaf_margin="always"`` (margins tried), and the two
tuned indexes then search the file's queries alternately, ``--rounds`` times each (one thread, all
queries in one call, and one call per query over the first 1000), keeping each one's best time:
the table gives both recalls and the time ratio margins / fixed.
"""

import argparse
import pickle
import time

import avq_plugin
from avq_plugin import datasets


def recall(I, gt):
    return float((I[:, :, None] == gt[:, None, :]).any(axis=1).mean())


def best_times(indexes, Q, rounds):
    """Per index: best seconds per query over ``rounds`` alternating passes, batched and single."""
    batch = [float("inf")] * len(indexes)
    single = [float("inf")] * len(indexes)
    Qs = Q[:1000]
    for r in range(rounds):
        order = list(enumerate(indexes))
        for i, index in order if r % 2 == 0 else order[::-1]:  # each one first in every other round
            t0 = time.perf_counter()
            index.search(Q, k=10, num_threads=1)
            batch[i] = min(batch[i], (time.perf_counter() - t0) / len(Q))
            t0 = time.perf_counter()
            for q in Qs:
                index.search(q, k=10, num_threads=1)
            single[i] = min(single[i], (time.perf_counter() - t0) / len(Qs))
    return batch, single


def budget(r):
    m = "" if r.leaf_margin is None else f", {r.leaf_margin:.2f}"
    return f"[{r.leaves_to_search}, {r.reorder_k}{m}]"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("--targets", default="0.8,0.9,0.95,0.99")
    p.add_argument("--threads", type=int, default=2, help="threads for building and tuning")
    p.add_argument("--compare-margin", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--tune-queries",
        type=int,
        default=0,
        help="tune on the file's first N queries (queries=, with their ground truth) instead of held-out "
        "points; every figure of fresh queries is then measured on the remaining queries",
    )
    args = p.parse_args()
    ds = datasets.load_hdf5(args.dataset)
    metric = {"angular": "cosine", "euclidean": "l2"}[ds.metric]
    t0 = time.perf_counter()
    index = avq_plugin.AVQIndex(metric=metric, seed=0, num_threads=args.threads).fit(ds.train)
    print(
        f"{ds.name}: {ds.n_train} x {ds.dim} {ds.metric}, {ds.n_test} fresh queries; "
        f"AVQIndex(metric={metric!r}) defaults, {index.num_leaves_} leaves, built in "
        f"{time.perf_counter() - t0:.1f} s; avq-plugin {avq_plugin.__version__}"
    )
    gt = ds.neighbors[:, :10]
    test = ds.test
    how = {"X": ds.train}
    if args.tune_queries:
        n = args.tune_queries
        how = {"queries": ds.test[:n], "ground_truth": ds.neighbors[:n, :10]}
        test, gt = ds.test[n:], gt[n:]
        print(f"tuned on the first {n} queries (queries=), measured on the other {len(test)}")
    targets = [float(t) for t in args.targets.split(",")]
    if not args.compare_margin:
        print(
            "| target | leaves_to_search | reorder_k | leaf_margin | recall, tuning points | recall, fresh queries "
            "| QPS reported by tune | tune time |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for target in targets:
            r = index.tune(target, k=10, **how)
            fresh = recall(index.search(test, k=10)[1], gt)
            print(
                f"| {target:g} | {r.leaves_to_search} | {r.reorder_k} | {r.leaf_margin} | {r.recall:.4f} | "
                f"{fresh:.4f} | {r.qps:,.0f} | {r.seconds:.1f} s |",
                flush=True,
            )
        return
    blob = pickle.dumps(index)
    print(
        "| target | fixed counts: budget | fresh recall | with margins: budget | fresh recall "
        "| time margins / fixed, batched | one query per call | tune time fixed / margins |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for target in targets:
        fixed, auto = pickle.loads(blob), pickle.loads(blob)
        rf = fixed.tune(target, k=10, leaf_margin=None, **how)
        ra = auto.tune(target, k=10, leaf_margin="always", **how)
        recf = recall(fixed.search(test, k=10)[1], gt)
        reca = recall(auto.search(test, k=10)[1], gt)
        batch, single = best_times([fixed, auto], test, args.rounds)
        print(
            f"| {target:g} | {budget(rf)} | {recf:.4f} | {budget(ra)} | {reca:.4f} | "
            f"{batch[1] / batch[0]:.3f} ({batch[0] * 1e6:.1f} / {batch[1] * 1e6:.1f} µs) | "
            f"{single[1] / single[0]:.3f} ({single[0] * 1e6:.1f} / {single[1] * 1e6:.1f} µs) | "
            f"{rf.seconds:.1f} / {ra.seconds:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
