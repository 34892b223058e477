"""reorder="float16": re-ranking rows stored as IEEE binary16 values of v / s with a power-of-two
scale s per row (max |v| / s in [2^14, 2^15)), re-scored by dot_f16_gather (exact conversions,
canonical order) times s. Checked against NumPy's own float16 rounding (round to nearest even),
on data of any magnitude, against float32 re-ranking, at every SIMD level."""

from __future__ import annotations

import math

import numpy as np
import pytest

import avq_plugin
from avq_plugin.datasets import load_glove_subset

K = 10
LEVELS = tuple(avq_plugin.build_info()["supported_simd_levels"])


@pytest.fixture(scope="module")
def glove():
    ds = load_glove_subset()
    return ds.train[:8000], ds.test[:200]


def expected_scores(X, Q, I, metric):
    """The float16 re-ranking score of each result, in float64: q . float(half(v / s)) * s."""
    V = X.astype(np.float32)
    Qp = Q.astype(np.float32)
    if metric == "cosine":
        V = V / np.linalg.norm(V, axis=1, keepdims=True).astype(np.float32)
        Qp = Qp / np.linalg.norm(Qp, axis=1, keepdims=True).astype(np.float32)
    out = np.empty(I.shape)
    for i, row in enumerate(I):
        for j, x in enumerate(row):
            v = V[x]
            mx = float(np.abs(v).max())
            e = max(math.frexp(mx)[1] - 1 - 14, -126) if mx > 0 else 0
            h = (v.astype(np.float64) * 2.0**-e).astype(np.float16).astype(np.float64)
            out[i, j] = float(Qp[i].astype(np.float64) @ h) * 2.0**e
    return out


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_scores_are_the_rounded_rows(glove, metric):
    X, Q = glove
    if metric == "dot":
        X = X * np.float32(3.7)
    ix = avq_plugin.AVQIndex(metric=metric, num_leaves=60, reorder="float16", seed=0).fit(X)
    D, I = ix.search(Q, K, leaves_to_search=8, reorder_k=50)
    assert (I >= 0).all()
    want = expected_scores(X, Q, I, metric)
    if metric == "l2":  # D = ||q||^2 - 2 <q, x> + ||x||^2 with the exact norm (BIAS)
        n2 = (X.astype(np.float64) ** 2).sum(1)
        want = (Q.astype(np.float64) ** 2).sum(1)[:, None] - 2 * want + n2[I]
        np.testing.assert_allclose(D, want, rtol=2e-5, atol=2e-4 * np.abs(want).max())
    else:
        # dot: the rows are the data as given, so the rounding is NumPy's exactly (a truncating
        # conversion would be off by about 1e-5 here); cosine: the native normalisation may differ
        # from NumPy's in the last bit, which can move a value across a float16 rounding midpoint.
        tol = 1e-6 if metric == "dot" else 3e-5
        np.testing.assert_allclose(D, want, rtol=tol, atol=tol * np.abs(want).max())


def test_same_neighbours_as_float32_and_half_the_memory(glove):
    X, Q = glove
    common = dict(metric="cosine", num_leaves=60, seed=0)
    f32 = avq_plugin.AVQIndex(reorder="float32", **common).fit(X)
    f16 = avq_plugin.AVQIndex(reorder="float16", **common).fit(X)
    I32 = f32.search(Q, K, leaves_to_search=10, reorder_k=100)[1]
    I16 = f16.search(Q, K, leaves_to_search=10, reorder_k=100)[1]
    same = np.mean([len(set(a) & set(b)) / K for a, b in zip(I32, I16)])
    assert same >= 0.995
    n, d = X.shape
    saved = f32.memory_usage() - f16.memory_usage()
    assert abs(saved - (n * d * 4 - n * (d + 2) * 2)) <= 0.05 * n * d * 4
    with pytest.raises(ValueError, match="keeps no float32 vectors"):
        f16._stored_vectors(np.arange(2))  # (what tune() reads without X)


@pytest.mark.parametrize("magnitude", [1e12, 1e-12])
def test_any_magnitude(glove, magnitude):
    # Per-row scales: data far beyond the float16 range (or far below it) rank as with float32.
    X, Q = glove
    X, Q = X[:3000] * np.float32(magnitude), Q[:50]
    common = dict(metric="dot", num_leaves=30, seed=0, anisotropic_threshold=None)
    f32 = avq_plugin.AVQIndex(reorder="float32", **common).fit(X)
    f16 = avq_plugin.AVQIndex(reorder="float16", **common).fit(X)
    D32, I32 = f32.search(Q, K, leaves_to_search=30, reorder_k=300)
    D16, I16 = f16.search(Q, K, leaves_to_search=30, reorder_k=300)
    assert np.isfinite(D16).all()
    same = np.mean([len(set(a) & set(b)) / K for a, b in zip(I32, I16)])
    assert same >= 0.99
    np.testing.assert_allclose(D16, D32, rtol=3e-3)


def test_identical_at_every_level_and_after_save_load(glove, tmp_path):
    X, Q = glove
    ix = avq_plugin.AVQIndex(metric="l2", num_leaves=40, dims_per_block=3, reorder="float16", seed=1).fit(X[:, :47])
    before = avq_plugin.simd_level()
    out = {}
    try:
        for level in LEVELS:
            avq_plugin.set_simd_level(level)
            out[level] = ix.search(Q[:, :47], K, leaves_to_search=6, reorder_k=40)
    finally:
        avq_plugin.set_simd_level(before)
    ref = out[LEVELS[0]]
    for level in LEVELS[1:]:
        np.testing.assert_array_equal(out[level][1], ref[1], err_msg=level)
        np.testing.assert_array_equal(out[level][0], ref[0], err_msg=level)
    path = tmp_path / "f16.avq"
    ix.save(path)
    for mmap in (False, True):
        loaded = avq_plugin.AVQIndex.load(path, mmap=mmap)
        assert loaded.reorder == "float16"
        D, I = loaded.search(Q[:, :47], K, leaves_to_search=6, reorder_k=40)
        np.testing.assert_array_equal(I, ref[1])
        np.testing.assert_array_equal(D, ref[0])
