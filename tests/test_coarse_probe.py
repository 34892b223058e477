"""Leaf selection's coarse first pass (16-bit centres, then float scores for the leaves that can
still be among the best; native/src/search.cpp, select_leaves_coarse) chooses exactly the leaves
the float pass chooses: the same float scores (dot_t16's summation order), ties to the lower leaf
id, at every SIMD level, including queries built to tie two leaves."""

from __future__ import annotations

import os

import numpy as np
import pytest

import avq_plugin

LEVELS = tuple(avq_plugin.build_info()["supported_simd_levels"])
D, LEAVES = 128, 256  # a centre table of 128 KB: the size from which the coarse pass runs


def _fit(metric, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((64, D)).astype(np.float32)
    X = (C[rng.integers(0, 64, 6000)] + 0.6 * rng.standard_normal((6000, D))).astype(np.float32)
    if metric == "l2":
        X = X * 40.0 + 100.0  # far from the origin: l2 scores 2<q, c> - ||c||^2 of large magnitude
    ix = avq_plugin.AVQIndex(metric=metric, num_leaves=LEAVES, dims_per_block=2, reorder="float32", seed=seed)
    ix.fit(X)
    return ix, X


def _load(ix, coarse):
    """A copy of ix whose centre table is built with or without the coarse pass."""
    before = os.environ.get("AVQ_COARSE_PROBE")
    os.environ["AVQ_COARSE_PROBE"] = "1" if coarse else "0"
    try:
        return avq_plugin.AVQIndex.from_bytes(ix.to_bytes())
    finally:
        if before is None:
            del os.environ["AVQ_COARSE_PROBE"]
        else:
            os.environ["AVQ_COARSE_PROBE"] = before


def _queries(ix, X, metric, seed=1):
    """Random queries, data points, and queries that tie their two best leaves in exact arithmetic."""
    rng = np.random.default_rng(seed)
    C = ix._probe_centers().astype(np.float64)
    base = X[rng.choice(len(X), 150, replace=False)].astype(np.float64)
    base += rng.standard_normal(base.shape) * base.std() * 0.3
    ties = []
    for q in base[:100]:
        s = C @ q if metric != "l2" else 2 * C @ q - (C * C).sum(1)
        a, b = np.argsort(-s)[:2]
        if metric == "l2":
            # equidistant from centres a and b: the midpoint plus a step orthogonal to c_a - c_b
            u = C[a] - C[b]
            t = q - u * ((q - (C[a] + C[b]) / 2) @ u) / (u @ u)
        else:
            u = C[a] - C[b]
            t = q - u * (q @ u) / (u @ u)  # <t, c_a> = <t, c_b>
        ties.append(t)
    return np.vstack([base, np.array(ties)]).astype(np.float32)


def _reference_leaves(ix, Q, metric, w):
    """Best w leaves by dot_t16's float scores (products and running sums rounded to float32 in
    increasing dimension order), ties to the lower id; the query prepared as the index does for
    dot (a power-of-two scale, exact) and l2 (as given)."""
    C = ix._probe_centers()
    out = np.empty((len(Q), w), np.int32)
    n2 = np.cumsum(C * C, axis=1, dtype=np.float32)[:, -1]
    for i, q in enumerate(Q):
        if metric == "dot":
            q = (q * np.float32(2.0 ** -np.floor(np.log2(np.abs(q).max())))).astype(np.float32)
        s = np.cumsum(q[None, :] * C, axis=1, dtype=np.float32)[:, -1]
        if metric == "l2":
            s = (s + s) - n2
        out[i] = np.lexsort((np.arange(len(C)), -s))[:w]
    return out


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_coarse_selection_equals_float_scores(metric):
    ix, X = _fit(metric)
    coarse = _load(ix, True)
    plain = _load(ix, False)
    assert coarse.memory_usage() > plain.memory_usage()  # the coarse table is there (and counted)
    Q = _queries(ix, X, metric)
    for w in (1, 2, 5, 17, 63):
        want = _reference_leaves(ix, Q, metric, w)
        for level in LEVELS:
            before = avq_plugin.simd_level()
            avq_plugin.set_simd_level(level)
            try:
                got = coarse._probe(Q, w, 1)
                got_plain = plain._probe(Q, w, 1)
            finally:
                avq_plugin.set_simd_level(before)
            np.testing.assert_array_equal(got, want, err_msg=f"{metric} w={w} {level} coarse")
            np.testing.assert_array_equal(got_plain, want, err_msg=f"{metric} w={w} {level} float")


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_search_results_identical_with_and_without_coarse_pass(metric):
    ix, X = _fit(metric, seed=3)
    coarse, plain = _load(ix, True), _load(ix, False)
    Q = _queries(ix, X, metric, seed=4)
    for lts, rk in ((1, 10), (4, 40), (30, 200)):
        Dc, Ic = coarse.search(Q, 10, leaves_to_search=lts, reorder_k=rk)
        Dp, Ip = plain.search(Q, 10, leaves_to_search=lts, reorder_k=rk)
        np.testing.assert_array_equal(Ic, Ip)
        np.testing.assert_array_equal(Dc, Dp)


def test_small_tables_and_zero_queries_take_the_float_pass():
    # Below 128 KB of centres there is no coarse table; a zero query (dot) has no scale for the
    # 16-bit query and falls back to the float pass: both still select by the float scores.
    rng = np.random.default_rng(5)
    X = rng.standard_normal((3000, 32)).astype(np.float32)
    small = avq_plugin.AVQIndex(metric="dot", num_leaves=50, seed=0).fit(X)
    assert small.memory_usage() == _load(small, False).memory_usage()
    ix, X = _fit("dot", seed=6)
    Z = np.zeros((3, D), np.float32)
    np.testing.assert_array_equal(_load(ix, True)._probe(Z, 7, 1), _load(ix, False)._probe(Z, 7, 1))
    np.testing.assert_array_equal(_load(ix, True)._probe(Z, 7, 1)[0], np.arange(7))  # all tie: lowest ids
