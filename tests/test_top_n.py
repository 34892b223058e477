"""The top-N buffer's first-leaf cut (search.cpp, top_k.cpp `first_leaf_threshold`).

When the first probed leaf holds more vectors than the candidates kept, the search cuts it in the
accumulators' domain instead of appending the whole leaf. The cut must not change any result: a
search keeping k candidates returns the first k of the same search keeping every vector of the
leaf (where no cut applies), ties and float rounding included.
"""

import numpy as np
import pytest

import avq_plugin


def _prefix_check(ix, Q, k):
    """Results at k equal the first k of the results at k = the probed leaf's size (no cut)."""
    D1, I1 = ix.search(Q, k, leaves_to_search=1)
    sizes = ix._leaf_sizes()
    leaf = ix._probe(Q, 1)[:, 0]
    assert np.all(sizes[leaf] > k)  # the first leaf is larger than k: the cut applies
    for i, q in enumerate(Q):
        Db, Ib = ix.search(q, int(sizes[leaf[i]]), leaves_to_search=1)
        np.testing.assert_array_equal(I1[i], Ib[0, :k])
        np.testing.assert_array_equal(D1[i], Db[0, :k])


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("k", [1, 3, 10, 37])
def test_first_leaf_cut_keeps_the_best(metric, k, simd_level):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((1200, 24)).astype(np.float32)
    Q = rng.standard_normal((40, 24)).astype(np.float32)
    ix = avq_plugin.AVQIndex(metric=metric, num_leaves=2, reorder="none", seed=0).fit(X)
    _prefix_check(ix, Q, k)


def test_first_leaf_cut_with_ties():
    # Many exact duplicates: the cut's histogram bin and the k-th score are shared by many vectors;
    # ties are broken by storage position, as without the cut.
    rng = np.random.default_rng(3)
    base = rng.standard_normal((30, 16)).astype(np.float32)
    X = np.repeat(base, 40, axis=0)
    Q = rng.standard_normal((25, 16)).astype(np.float32)
    ix = avq_plugin.AVQIndex(metric="dot", num_leaves=2, reorder="none", seed=0).fit(X)
    for k in (1, 5, 39, 41, 80):
        _prefix_check(ix, Q, k)


def test_first_leaf_cut_when_rounding_merges_scores():
    # A large common component makes every score huge next to the LUT's step, so float rounding
    # merges scores of neighbouring accumulators (the cut then falls back to the exact filter).
    rng = np.random.default_rng(11)
    X = rng.standard_normal((1000, 12)).astype(np.float32) * 1e-3
    X[:, 0] += 1e4
    Q = rng.standard_normal((20, 12)).astype(np.float32)
    Q[:, 0] = 1e3
    ix = avq_plugin.AVQIndex(metric="dot", num_leaves=2, reorder="none", seed=0).fit(X)
    for k in (1, 10, 50):
        _prefix_check(ix, Q, k)
