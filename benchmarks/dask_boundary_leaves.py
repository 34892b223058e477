"""Would leaves held by both workers save worker visits? A simulation, without Dask.

    python -P benchmarks/dask_boundary_leaves.py \
        --dataset /work/shared/data/glove6b-50-angular-200k.hdf5 --shards 16

Builds the placement ``ShardedAVQIndex(sharding="leaves")`` makes for ``--workers`` workers (one
quantizer, whole leaves placed by ``place_shards`` on the probes of 20,000 training rows) and
counts the workers each held-out query needs: one when a worker holds all its probed leaves,
else two (``--workers 2`` only). Then some leaves are taken as held by both workers: the ones
that most often make up a training query's smaller side, weighted by 1 / (leaves on that side)^2
and divided by the leaf's vector count, in that order up to a share of the vectors; and the
count is made again on the held-out queries.
"""

from __future__ import annotations

import argparse

import numpy as np

from avq_plugin import AVQIndex
from avq_plugin.datasets import load_hdf5
from avq_plugin.distributed.placement import place_shards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="ann-benchmarks HDF5 file (angular)")
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--leaves-to-search", type=int, default=20)
    ap.add_argument("--queries", type=int, default=10000)
    ap.add_argument("--shares", default="0.05,0.1,0.2,0.3", help="shares of the vectors held twice")
    args = ap.parse_args()
    workers, lts = 2, args.leaves_to_search
    ds = load_hdf5(args.dataset)
    X, Q = ds.train, ds.test[: args.queries]
    template = AVQIndex(metric="cosine", spill=None, anisotropic_threshold=0.2, seed=0).train(X)
    leaf = template._probe(X, 1)[:, 0]
    num_leaves = template._probe_centers().shape[0]
    counts = np.bincount(leaf, minlength=num_leaves).astype(np.int64)
    sample = X[np.sort(np.random.default_rng(0).choice(len(X), min(len(X), 20000), replace=False))]
    P_train = template._probe(sample, lts)
    groups, home = place_shards(template._probe_centers(), counts, P_train, args.shards, workers)
    worker_of = np.asarray(home)[np.asarray(groups)]  # leaf -> worker
    P = template._probe(Q, lts)

    def workers_needed(P: np.ndarray, twice: np.ndarray) -> np.ndarray:
        on, both = worker_of[P], twice[P]
        one = ((on == 0) | both).all(1) | ((on == 1) | both).all(1)
        return np.where(one, 1, 2)

    none = np.zeros(num_leaves, bool)
    on = worker_of[P]
    smaller = np.minimum(on.sum(1), lts - on.sum(1))
    print(
        f"S={args.shards}: workers per held-out query {workers_needed(P, none).mean():.3f}; queries by leaves on "
        f"the smaller side (1, 2, ...): {np.bincount(smaller, minlength=lts // 2 + 1)[1:].tolist()}"
    )
    on = worker_of[P_train]
    n1 = on.sum(1)
    minority = np.where(n1 <= lts - n1, 1, 0)
    score = np.zeros(num_leaves)
    for i in np.flatnonzero((n1 > 0) & (n1 < lts)):
        m = P_train[i][on[i] == minority[i]]
        score[m] += 1.0 / len(m) ** 2
    order = np.argsort(-(score / np.maximum(counts, 1)), kind="stable")
    cum = np.cumsum(counts[order])
    for share in (float(v) for v in args.shares.split(",")):
        k = int(np.searchsorted(cum, share * cum[-1])) + 1
        twice = np.zeros(num_leaves, bool)
        twice[order[:k]] = True
        print(
            f"  {k} leaves held twice ({100 * cum[k - 1] / cum[-1]:.1f} % of the vectors): workers per held-out "
            f"query {workers_needed(P, twice).mean():.3f}"
        )


if __name__ == "__main__":
    main()
