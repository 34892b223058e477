"""Recall of AVQIndex against the exact oracle (ExactIndex), on the shipped GloVe subset and on
seeded clustered synthetic data; the oracle itself against numpy and the shipped ground truth."""

from __future__ import annotations

import numpy as np
import pytest

import avq_plugin

METRICS = ("dot", "cosine", "l2")


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def glove_exact(glove):
    """{metric: (D, I)} exact top-100 from ExactIndex on the GloVe subset."""
    X, Q, _ = glove
    return {m: avq_plugin.ExactIndex(m).fit(X).search(Q, k=100) for m in METRICS}


@pytest.fixture(scope="module")
def glove_avq(glove):
    """{metric: AVQIndex} with default parameters (float32 reorder), seed 0."""
    X, _, _ = glove
    return {m: avq_plugin.AVQIndex(metric=m, seed=0).fit(X) for m in METRICS}


@pytest.fixture(scope="module")
def glove_avq_int8(glove):
    X, _, _ = glove
    return {m: avq_plugin.AVQIndex(metric=m, reorder="int8", seed=0).fit(X) for m in METRICS}


@pytest.fixture(scope="module")
def synth_exact(synthetic):
    X, Q = synthetic
    return {m: avq_plugin.ExactIndex(m).fit(X).search(Q, k=100) for m in METRICS}


@pytest.fixture(scope="module")
def synth_avq(synthetic):
    X, _ = synthetic
    return {m: avq_plugin.AVQIndex(metric=m, num_leaves=64, seed=0).fit(X) for m in METRICS}


def generous(index):
    L = index.num_leaves_
    return dict(leaves_to_search=max(1, L // 2), reorder_k=200)


# ------------------------------------------------------------------------------- the oracle
@pytest.mark.parametrize("metric", METRICS)
def test_exact_index_matches_numpy_bruteforce(metric, synthetic, helpers, simd_level):
    X, Q = synthetic
    Q = Q[:200]
    D, I = avq_plugin.ExactIndex(metric).fit(X).search(Q, k=20)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (200, 20)
    S = helpers.exact_scores(metric, X, Q)
    # Values: the returned D must be the exact value for the returned id ...
    want = helpers.exact_pairs(metric, X, Q, I)
    np.testing.assert_allclose(D, want, rtol=1e-4, atol=1e-5)
    # ... and the k-th best exact score must match (ids may differ only on exact ties).
    best = -np.sort(-S, axis=1)[:, :20]
    got = -want if metric == "l2" else want
    np.testing.assert_allclose(got, best, rtol=1e-4, atol=1e-5)
    ref = np.argsort(-S, axis=1, kind="stable")[:, :20]
    assert (I == ref).mean() > 0.999


@pytest.mark.parametrize("metric", METRICS)
def test_exact_index_matches_shipped_ground_truth(metric, glove, glove_exact):
    _, _, gt = glove
    gt_ids, gt_vals = gt[metric]
    D, I = glove_exact[metric]
    # Shipped values: cosine distance 1 - cos, squared L2, inner product.
    want = 1.0 - gt_vals if metric == "cosine" else gt_vals
    np.testing.assert_allclose(D, want, rtol=1e-5, atol=1e-5)
    same = I == gt_ids
    assert same.mean() > 0.999
    # Positions that differ must be ties (equal values within float32 rounding): a swapped pair
    # inside the list, or a tie at the cut-off.
    r, c = np.nonzero(~same)
    np.testing.assert_allclose(D[r, c], want[r, c], rtol=1e-6, atol=1e-6)
    for row in np.unique(r):
        missing = [j for j, i in enumerate(gt_ids[row]) if i not in set(I[row])]
        for j in missing:
            assert abs(want[row, j] - D[row, -1]) <= 1e-5 * max(1.0, abs(D[row, -1])), (row, j)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_index_sorted_best_first(metric, glove_exact):
    D, _ = glove_exact[metric]
    diffs = np.diff(D, axis=1)
    if metric == "l2":
        assert (diffs >= 0).all()
    else:
        assert (diffs <= 0).all()


# ------------------------------------------------------------------------------- recall
@pytest.mark.parametrize("metric", METRICS)
def test_recall_glove_generous_budget(metric, glove, glove_avq, glove_exact, recall):
    _, Q, _ = glove
    index = glove_avq[metric]
    D, I = index.search(Q, k=10, **generous(index))
    assert I.shape == (500, 10)
    r = recall(I, glove_exact[metric][1], 10)
    assert r >= 0.95, f"{metric}: recall@10 {r:.4f} < 0.95 at leaves_to_search=L/2, reorder_k=200"


@pytest.mark.parametrize("metric", METRICS)
def test_recall_synthetic_generous_budget(metric, synthetic, synth_avq, synth_exact, synthetic_gt, recall, simd_level):
    _, Q = synthetic
    index = synth_avq[metric]
    _, I = index.search(Q, k=10, **generous(index))
    r = recall(I, synth_exact[metric][1], 10)
    assert r >= 0.95, f"{metric}: recall@10 {r:.4f} < 0.95"
    # The oracle agrees with numpy on this data too.
    assert recall(synth_exact[metric][1], synthetic_gt[metric], 10) >= 0.999


def test_default_search_params_reach_target_on_glove_cosine(glove, glove_avq, glove_exact, recall):
    """The issue requires the default search budget to reach recall@10 >= 0.9 on the shipped
    GloVe subset with metric="cosine"."""
    _, Q, _ = glove
    index = glove_avq["cosine"]
    lts, rk = index.default_search_params()
    _, I = index.search(Q, k=10)
    r = recall(I, glove_exact["cosine"][1], 10)
    assert r >= 0.9, (
        f"default search params (leaves_to_search={lts} of {index.num_leaves_} leaves, reorder_k={rk}) "
        f"give recall@10 = {r:.4f} < 0.9 on the GloVe subset (cosine)"
    )


@pytest.mark.parametrize("metric", METRICS)
def test_recall_non_decreasing_in_leaves_to_search(metric, glove, glove_avq, glove_exact, recall):
    _, Q, _ = glove
    index = glove_avq[metric]
    L = index.num_leaves_
    budgets = [b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b < L] + [L]
    rs = [
        recall(index.search(Q, k=10, leaves_to_search=b, reorder_k=100)[1], glove_exact[metric][1], 10) for b in budgets
    ]
    # A larger probe set is a superset of candidates; only the reorder shortlist can displace a
    # true neighbour, so allow a hair (1 hit in 5000) of slack, never a real drop.
    for (b0, r0), (b1, r1) in zip(zip(budgets, rs), zip(budgets[1:], rs[1:])):
        assert r1 >= r0 - 2e-4, f"{metric}: recall fell from {r0:.4f} (lts={b0}) to {r1:.4f} (lts={b1})"
    assert rs[-1] - rs[0] >= 0.2, f"{metric}: probing more leaves barely helps: {rs}"
    assert rs[-1] >= 0.9


@pytest.mark.parametrize("metric", METRICS)
def test_recall_non_decreasing_in_reorder_k(metric, glove, glove_avq, glove_exact, recall):
    _, Q, _ = glove
    index = glove_avq[metric]
    lts = max(1, index.num_leaves_ // 4)
    ks = (10, 20, 50, 100, 200)
    rs = [recall(index.search(Q, k=10, leaves_to_search=lts, reorder_k=rk)[1], glove_exact[metric][1], 10) for rk in ks]
    # The shortlists are nested for a fixed probe set, so recall is exactly monotone.
    for i in range(1, len(ks)):
        assert rs[i] >= rs[i - 1], f"{metric}: recall fell from {rs[i - 1]:.4f} (reorder_k={ks[i - 1]}) to {rs[i]:.4f}"
    assert rs[-1] > rs[0], f"{metric}: reorder_k has no effect: {rs}"


@pytest.mark.parametrize("metric", METRICS)
def test_distances_are_exact_with_float32_reorder(metric, glove, glove_avq, helpers):
    X, Q, _ = glove
    index = glove_avq[metric]
    D, I = index.search(Q, k=10, leaves_to_search=16, reorder_k=100)
    assert (I >= 0).all()
    want = helpers.exact_pairs(metric, X, Q, I)
    np.testing.assert_allclose(D, want, rtol=1e-4, atol=1e-5)
    diffs = np.diff(D, axis=1)
    assert (diffs >= 0).all() if metric == "l2" else (diffs <= 0).all()


@pytest.mark.parametrize("metric", METRICS)
def test_distances_without_reorder_are_estimates(metric, synthetic, helpers):
    """reorder="none" returns the quantized estimate: close to, but not exactly, the truth."""
    X, Q = synthetic
    index = avq_plugin.AVQIndex(metric=metric, num_leaves=32, reorder="none", seed=0).fit(X)
    D, I = index.search(Q[:100], k=10, leaves_to_search=32)
    assert (I >= 0).all()
    want = helpers.exact_pairs(metric, X, Q[:100], I)
    err = np.abs(D - want)
    # Compare with the spread of the exact scores over the database (per query).
    scale = helpers.exact_scores(metric, X, Q[:100]).std(axis=1).mean()
    assert err.mean() < 0.25 * scale, f"{metric}: mean estimate error {err.mean():.4g} vs spread {scale:.4g}"
    assert err.max() > 0  # really an estimate


@pytest.mark.parametrize("metric", METRICS)
def test_int8_reorder_recall_close_to_float32(metric, glove, glove_avq, glove_avq_int8, glove_exact, recall, helpers):
    X, Q, _ = glove
    f32, i8 = glove_avq[metric], glove_avq_int8[metric]
    kw = generous(f32)
    r32 = recall(f32.search(Q, k=10, **kw)[1], glove_exact[metric][1], 10)
    D8, I8 = i8.search(Q, k=10, **kw)
    r8 = recall(I8, glove_exact[metric][1], 10)
    assert abs(r32 - r8) <= 0.03, f"{metric}: int8 recall {r8:.4f} vs float32 {r32:.4f}"
    assert r8 >= 0.92
    # int8 distances are approximations of the exact ones (per-dimension scales, 8 bits).
    want = helpers.exact_pairs(metric, X, Q, I8)
    rel = np.abs(D8 - want) / np.maximum(np.abs(want), 1e-3)
    assert np.median(rel) < 0.02
    assert i8.memory_usage() < f32.memory_usage()


def test_k_larger_than_reorder_k_and_shortlist(glove, glove_avq, glove_exact, recall):
    """reorder_k < k is raised to k: asking for 50 results with reorder_k=10 returns 50 valid ids."""
    _, Q, _ = glove
    index = glove_avq["cosine"]
    D, I = index.search(Q[:50], k=50, leaves_to_search=index.num_leaves_ // 2, reorder_k=10)
    assert (I >= 0).all()
    assert all(len(set(row)) == 50 for row in I)
    assert recall(I, glove_exact["cosine"][1][:50], 10) >= 0.9


# ------------------------------------------------------- l2 far from the origin (issue 12)
@pytest.fixture(scope="module")
def pixel_like():
    """(X, Q, gt): data shaped like images: 256 dims of low intrinsic dimension (8 latent factors
    plus noise) around 128, clipped to [0, 255], so ||q|| (about 2000) is several times the
    distance to a near neighbour."""
    rng = np.random.default_rng(7)
    B = rng.standard_normal((8, 256)) / np.sqrt(8)
    M = 40 * (rng.standard_normal((6500, 8)) @ B) + 5 * rng.standard_normal((6500, 256))
    X = np.clip(M + 128, 0, 255).astype(np.float32)
    gt = avq_plugin.ExactIndex("l2").fit(X[:6000]).search(X[6000:], k=10)[1]
    return X[:6000], X[6000:], gt


@pytest.mark.parametrize(("reorder", "reorder_k", "floor"), [("none", None, 0.60), ("float32", 20, 0.70)])
def test_l2_ranking_far_from_the_origin(pixel_like, recall, reorder, reorder_k, floor):
    """The l2 scan scores ||q - decoded||^2, whose error shrinks as q approaches x. It scored
    ||q||^2 - 2 <q, decoded> + ||x||^2, whose error 2 <q, x - decoded> grows with ||q||: data far
    from the origin ranked much worse than the same data centred (0.33 against 0.51 here without
    re-ranking, 0.47 against 0.64 with 20 candidates; now 0.66 and 0.77 for both; Fashion-MNIST:
    0.53 against 0.85 with 20 candidates). L2 neighbours do not depend on where the origin is,
    and now neither does the ranking."""
    X, Q, gt = pixel_like
    got = {}
    for name, shift in (("pixels", 0.0), ("centred", 128.0)):
        index = avq_plugin.AVQIndex(metric="l2", num_leaves=16, dims_per_block=4, reorder=reorder, seed=0)
        index.fit(X - np.float32(shift))
        I = index.search(Q - np.float32(shift), k=10, leaves_to_search=2, reorder_k=reorder_k)[1]
        got[name] = recall(I, gt, 10)
    assert got["pixels"] >= floor, got
    assert got["pixels"] >= got["centred"] - 0.03, got


@pytest.mark.parametrize("spill", [None, "soar"])
def test_l2_scan_norms_survive_remove_and_reload(pixel_like, tmp_path, spill):
    """With re-ranking the scan's decoded norms are not stored but recomputed from the codes at
    load: a loaded index (copied or memory-mapped) searches exactly as the one it was saved from,
    also after removals moved vectors within their leaves; distances stay exact."""
    X, Q, _ = pixel_like
    index = avq_plugin.AVQIndex(metric="l2", num_leaves=16, dims_per_block=4, spill=spill, seed=0).fit(X)
    assert index._native_params()["l2_decoded_norms"] is True
    assert index.remove(np.arange(0, 6000, 7)) == 858
    kw = {"k": 10, "leaves_to_search": 2, "reorder_k": 12}
    D, I = index.search(Q, **kw)
    index.save(tmp_path / "l2.avq")
    for back in (
        avq_plugin.AVQIndex.from_bytes(index.to_bytes()),
        avq_plugin.AVQIndex.load(tmp_path / "l2.avq", mmap=True),
    ):
        D2, I2 = back.search(Q, **kw)
        np.testing.assert_array_equal(I2, I)
        np.testing.assert_array_equal(D2, D)
    want = ((Q[:, None, :].astype(np.float64) - X[I].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(D, want, rtol=1e-4)
