"""The workers' native search CPU of a leaf-routed index, in one process, against one index.

    flock /tmp/avq-bench.lock python -P benchmarks/dask_worker_cost.py \
        --dataset /work/shared/data/glove6b-50-angular-200k.hdf5 --shards 16 --rounds 9

Builds what ``ShardedAVQIndex(sharding="leaves")`` builds for a cluster of ``--workers`` workers
(one quantizer, whole leaves placed by ``place_shards``, one ``AVQIndex`` per shard) and replays,
without Dask, the native calls its workers make for one batch of queries (the queries in the
client's best-leaf order, routed with ``route_queries``, one ``search_leaves_multi`` call per
worker with its shards' search groups). Timed against it, in interleaved rounds (a new random
order each round, one thread, CPU time of this process):

- ``shards``: the workers' calls on the separate shard indexes;
- ``one index``: the same calls with one index over all the data playing every shard;
- ``single``: that index's search of the same probed leaves with ``reorder_k`` per query
  (``_search_leaves``: ``search`` without its leaf selection, which the client does).

The answers of ``shards`` and ``one index`` are checked to be identical.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from avq_plugin import AVQIndex
from avq_plugin._index_protected import search_leaves_multi
from avq_plugin.datasets import load_hdf5
from avq_plugin.distributed.placement import place_shards, route_queries, union_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="ann-benchmarks HDF5 file (angular)")
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budgets", default="20:100", help="leaves_to_search:reorder_k")
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", help="write the timings here")
    args = ap.parse_args()
    lts, rk = (int(v) for v in args.budgets.split(":"))
    ds = load_hdf5(args.dataset)
    X, Q = ds.train, ds.test[: args.batch]
    template = AVQIndex(metric="cosine", spill=None, anisotropic_threshold=0.2, seed=0).train(X)
    data = template.to_bytes()
    full = AVQIndex.from_bytes(data).add(X, np.arange(len(X), dtype=np.int64))
    leaf = full._probe(X, 1)[:, 0]
    counts = np.bincount(leaf, minlength=full._probe_centers().shape[0]).astype(np.int64)
    sample = X[np.sort(np.random.default_rng(0).choice(len(X), min(len(X), 20000), replace=False))]
    groups, home = place_shards(full._probe_centers(), counts, full._probe(sample, lts), args.shards, args.workers)
    groups, home = np.asarray(groups, np.int32), np.asarray(home)
    shards = []
    for j in range(args.shards):
        rows = np.flatnonzero(groups[leaf] == j)
        shards.append(AVQIndex.from_bytes(data).add(X[rows], rows.astype(np.int64)))
    P = full._probe(Q, lts)
    order = np.argsort(P[:, 0], kind="stable")  # as the client sends them
    P, Qs = np.ascontiguousarray(P[order]), np.ascontiguousarray(Q[order])
    jobs, visited, _ = route_queries(P, groups, counts, args.shards, rk, compact=True)
    calls = []
    for w in range(args.workers):
        js = sorted(j for j in jobs if home[j] == w)
        if not js:
            continue
        rows_w, pos = union_rows([jobs[j][0] for j in js])
        own = [(i, p, jobs[j][2], jobs[j][3], int(home[j]), jobs[j][1]) for i, (j, p) in enumerate(zip(js, pos))]
        played = [(0, p, jobs[j][2], jobs[j][3], int(home[j]), jobs[j][1]) for j, p in zip(js, pos)]
        calls.append((np.ascontiguousarray(Qs[rows_w]), [shards[j] for j in js], own, played))
    budgets = np.full(len(Qs), rk, np.int64)
    for x in [full, *shards]:
        x.num_threads = 1

    def run(kind: str) -> tuple[float, list]:
        t0, out = time.process_time(), []
        if kind == "single":
            out.append(full._search_leaves(Qs, 10, P, budgets))
        for Qw, own_shards, own, played in calls if kind != "single" else []:
            if kind == "shards":
                out.append(search_leaves_multi(own_shards, Qw, 10, own, 1))
            else:
                out.append(search_leaves_multi([full], Qw, 10, played, 1))
        return time.process_time() - t0, out

    same = all(np.array_equal(a[1], b[1]) for a, b in zip(run("shards")[1], run("one index")[1]))
    kinds = ["shards", "one index", "single"]
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    rng = np.random.default_rng(1)
    for _ in range(args.rounds):
        for i in rng.permutation(len(kinds)):
            cpu[kinds[i]].append(run(kinds[i])[0])
    n = len(Q)
    single = np.array(cpu["single"])
    summary = {
        "shards": args.shards,
        "workers": args.workers,
        "shards_visited_per_query": float(visited.mean()),
        "identical": bool(same),
        "us_per_query_min": {k: 1e6 * min(v) / n for k, v in cpu.items()},
        "over_single_min": {k: min(v) / single.min() for k, v in cpu.items()},
        "over_single_median_of_rounds": {k: float(np.median(np.array(v) / single)) for k, v in cpu.items()},
    }
    print(
        f"S={args.shards}: shards visited {visited.mean():.2f}; answers identical: {same}; CPU per query (min of "
        f"{args.rounds}) "
        + ", ".join(f"{k} {summary['us_per_query_min'][k]:.2f} us" for k in kinds)
        + "; over single (ratio of the minima / median of the rounds' ratios): "
        + ", ".join(
            f"{k} {summary['over_single_min'][k]:.3f} / {summary['over_single_median_of_rounds'][k]:.3f}"
            for k in kinds[:2]
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
