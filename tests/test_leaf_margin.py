"""search(..., leaf_margin=m): query-adaptive probing (native/src/search.cpp,
select_leaves_by_margin). A query probes its leaves_to_search best leaves plus every leaf whose
centre score is within m * ||q|| of its best leaf's, and re-ranks reorder_k scaled by
sqrt(its leaves / leaves_to_search) (rounded up). Checked against a NumPy statement of that rule
replayed through _search_leaves (the same leaves and budgets give the same answer), at every SIMD
level."""

from __future__ import annotations

import math

import numpy as np
import pytest

import avq_plugin
from avq_plugin.datasets import load_glove_subset

K = 10


@pytest.fixture(scope="module")
def glove():
    ds = load_glove_subset()
    return ds.train[:12000], ds.test[:300]


@pytest.fixture(scope="module")
def indexes(glove):
    X, _ = glove
    common = dict(num_leaves=120, dims_per_block=2, reorder="float32", seed=0)
    return {
        "cosine": avq_plugin.AVQIndex(metric="cosine", spill="none", **common).fit(X),
        "dot": avq_plugin.AVQIndex(metric="dot", spill="none", **common).fit(X),
        "cosine-soar": avq_plugin.AVQIndex(metric="cosine", spill="soar", **common).fit(X),
    }


def rule(ix, Q, lts, rk, margin):
    """The leaves (padded with -1), budgets and leaf counts the rule gives each query, and which
    queries have a centre score within rounding of the cut (float32 kernels against float64)."""
    C = ix._probe_centers().astype(np.float64)
    Qp = Q.astype(np.float64)
    if ix.metric == "cosine":
        Qp = Qp / np.linalg.norm(Qp, axis=1, keepdims=True)
    S = Qp @ C.T
    qn = np.linalg.norm(Qp, axis=1)
    cut = S.max(axis=1) - margin * qn
    L = C.shape[0]
    n = np.minimum(L, np.maximum(lts, (S >= cut[:, None]).sum(axis=1)))
    near = (np.abs(S - cut[:, None]) <= 1e-5 * np.maximum(1.0, qn)[:, None]).any(axis=1)
    leaves = ix._probe(Q, int(n.max())).astype(np.int32)
    leaves[np.arange(leaves.shape[1])[None, :] >= n[:, None]] = -1
    budgets = np.where(n > lts, np.ceil(rk * np.sqrt(n / lts)), rk).astype(np.int64)
    return leaves, budgets, n, near


@pytest.mark.parametrize("name", ["cosine", "dot", "cosine-soar"])
def test_leaf_margin_follows_the_rule(indexes, glove, name, simd_level):
    ix = indexes[name]
    _, Q = glove
    lts, rk, margin = 8, 40, 0.25
    leaves, budgets, n, near = rule(ix, Q, lts, rk, margin)
    # The margin must matter here: queries stay at lts leaves and others probe more.
    assert (n == lts).any() and n.max() > 2 * lts and 0.1 < (n > lts).mean() < 0.9
    D, I = ix.search(Q, K, lts, rk, leaf_margin=margin)
    Dr, Ir = ix._search_leaves(Q, K, leaves, budgets)
    same = (I == Ir).all(axis=1) & (D == Dr).all(axis=1)
    assert near.mean() < 0.05
    assert same[~near].all(), f"queries {np.flatnonzero(~same & ~near)[:10]} differ from the rule"


def test_leaf_margin_zero_is_the_fixed_count(indexes, glove, simd_level):
    ix = indexes["cosine"]
    _, Q = glove
    D0, I0 = ix.search(Q, K, 8, 40)
    D, I = ix.search(Q, K, 8, 40, leaf_margin=0.0)
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_array_equal(D, D0)


def test_large_leaf_margin_probes_every_leaf(indexes, glove):
    ix = indexes["cosine-soar"]
    _, Q = glove
    L = ix.num_leaves_
    D0, I0 = ix.search(Q, K, L, math.ceil(40 * math.sqrt(L / 8)))
    D, I = ix.search(Q, K, 8, 40, leaf_margin=2.5)  # cosines differ by at most 2
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_array_equal(D, D0)


def test_leaf_margin_batch_equals_single_queries(indexes, glove):
    ix = indexes["dot"]
    _, Q = glove
    D, I = ix.search(Q, K, 8, 40, num_threads=2, leaf_margin=np.float32(0.2))
    for i in range(0, len(Q), 37):
        Di, Ii = ix.search(Q[i], K, 8, 40, leaf_margin=0.2)
        np.testing.assert_array_equal(Ii[0], I[i])
        np.testing.assert_array_equal(Di[0], D[i])


def test_leaf_margin_rejects_bad_values(indexes, glove):
    X, Q = glove
    ix = indexes["cosine"]
    for bad in (-0.1, float("nan"), float("inf"), 1e39):
        with pytest.raises(ValueError, match="leaf_margin"):
            ix.search(Q[:2], K, 8, 40, leaf_margin=bad)
    for bad in ("0.3", True, [0.3]):
        with pytest.raises(TypeError, match="leaf_margin"):
            ix.search(Q[:2], K, 8, 40, leaf_margin=bad)
    l2 = avq_plugin.AVQIndex(metric="l2", num_leaves=20, seed=0).fit(X[:3000])
    with pytest.raises(ValueError, match="leaf_margin needs metric 'cosine' or 'dot'"):
        l2.search(Q[:2], K, 4, 40, leaf_margin=0.2)  # the plain-float path: checked natively
    with pytest.raises(ValueError, match="leaf_margin needs metric 'cosine' or 'dot'"):
        l2.search(Q[:2], K, 4, 40, leaf_margin=np.float64(0.2))  # the checked path
    np.testing.assert_array_equal(l2.search(Q[:2], K, 4, 40, leaf_margin=None)[1], l2.search(Q[:2], K, 4, 40)[1])


def test_estimators_pass_leaf_margin_to_the_index(glove):
    # AVQNearestNeighbors / AVQKNeighborsTransformer(leaf_margin=m): the index's search with m, at
    # the estimator's budget; off (None) by default; euclidean metrics and bad values rejected at
    # fit, naming the parameter.
    X, Q = glove
    X, Q = X[:6000], Q[:100]
    common = dict(algorithm="avq", num_leaves=60, leaves_to_search=4, reorder_k=40, random_state=0)
    nn = avq_plugin.AVQNearestNeighbors(n_neighbors=K, metric="cosine", leaf_margin=0.15, **common).fit(X)
    assert nn.get_params()["leaf_margin"] == 0.15
    ix = nn.index_
    want = ix.search(Q, K, leaves_to_search=4, reorder_k=40, leaf_margin=0.15)[1]
    fixed = ix.search(Q, K, leaves_to_search=4, reorder_k=40)[1]
    assert (want != fixed).any()  # the margin changes some answers at this budget
    np.testing.assert_array_equal(np.sort(nn.kneighbors(Q, return_distance=False), axis=1), np.sort(want, axis=1))
    off = avq_plugin.AVQNearestNeighbors(n_neighbors=K, metric="cosine", **common).fit(X)
    assert off.get_params()["leaf_margin"] is None
    np.testing.assert_array_equal(np.sort(off.kneighbors(Q, return_distance=False), axis=1), np.sort(fixed, axis=1))
    tr = avq_plugin.AVQKNeighborsTransformer(
        n_neighbors=K, mode="connectivity", metric="ip", leaf_margin=0.15, **common
    ).fit(X)
    dot_want = tr.index_.search(Q, K, leaves_to_search=4, reorder_k=40, leaf_margin=0.15)[1]
    G = tr.transform(Q)
    np.testing.assert_array_equal(np.sort(G.indices.reshape(len(Q), -1), axis=1), np.sort(dot_want, axis=1))
    with pytest.raises(ValueError, match="leaf_margin"):
        avq_plugin.AVQNearestNeighbors(metric="euclidean", leaf_margin=0.1, **common).fit(X)
    with pytest.raises(ValueError, match="leaf_margin"):
        avq_plugin.AVQNearestNeighbors(metric="cosine", leaf_margin=-0.1, **common).fit(X)
    with pytest.raises(TypeError, match="leaf_margin"):
        avq_plugin.AVQNearestNeighbors(metric="cosine", leaf_margin="0.1", **common).fit(X)


@pytest.mark.parametrize("name", ["cosine", "dot", "cosine-soar"])
def test_probe_with_leaf_margin_gives_the_search_leaves_and_budgets(indexes, glove, name):
    """The routed search's pieces (ShardedAVQIndex): _probe(..., leaf_margin=m) lists the leaves
    search(..., leaf_margin=m) probes, and margin_reorder_k its budgets, so that searching those
    leaves with those budgets is the same search, at a small budget too."""
    from avq_plugin._index_protected import margin_reorder_k

    X, Q = glove
    ix = indexes[name]
    for lts, rk, m in ((3, 30, 0.1), (6, 40, 0.25), (2, 20, 0.6)):
        P = ix._probe(Q, lts, leaf_margin=m)
        n = (P >= 0).sum(axis=1)
        leaves, budgets, n_rule, near = rule(ix, Q, lts, rk, m)
        ok = ~near
        assert P.shape[1] == n.max() and (n >= lts).all()
        np.testing.assert_array_equal(n[ok], n_rule[ok])
        b = margin_reorder_k(rk, n.astype(np.int64), lts, ix.ntotal)
        np.testing.assert_array_equal(b[ok], budgets[ok])
        D, I = ix._search_leaves(Q, K, P, b)
        D1, I1 = ix.search(Q, K, leaves_to_search=lts, reorder_k=rk, leaf_margin=m)
        np.testing.assert_array_equal(I, I1)
        np.testing.assert_array_equal(D, D1)
    # P rows hold distinct leaves, best first (starting with the fixed count's), then -1 padding.
    P, P4 = ix._probe(Q, 4, leaf_margin=0.3), ix._probe(Q, 4)
    for row, fixed in zip(P, P4):
        got = row[row >= 0]
        assert len(set(got.tolist())) == len(got) and (row[len(got) :] == -1).all()
        np.testing.assert_array_equal(got[:4], fixed)


def test_margin_reorder_k_rule_and_bad_input():
    from avq_plugin._index_protected import margin_reorder_k

    got = margin_reorder_k(40, np.array([0, 3, 4, 12, 3000], np.int64), 3, 20000)
    assert got.tolist() == [40, 40, math.ceil(40 * math.sqrt(4 / 3)), 80, 1265]
    assert margin_reorder_k(50000, np.array([3, 12], np.int64), 3, 20000).tolist() == [20000, 20000]
    with pytest.raises(ValueError, match="nprobe must be >= 0"):
        margin_reorder_k(40, np.array([-1], np.int64), 3, 100)
    with pytest.raises(ValueError, match="positive"):
        margin_reorder_k(40, np.array([1], np.int64), 0, 100)
