"""Anisotropic vector quantization itself: eta, the paper's ablation, the training loop,
warnings, the plain-PQ special cases and determinism."""

from __future__ import annotations

import math
import pickle
import struct

import numpy as np
import pytest

import avq_plugin


# ------------------------------------------------------------------------------- helpers
def eta_by_quadrature(t, d, n=200_001):
    """Independent evaluation of eta = (d - 1) (I_{d-2}(a) / I_d(a) - 1), a = arccos(t),
    I_n(a) = int_0^a sin^n, by Simpson's rule on a fine grid (scaled by sin(a)^d)."""
    a = math.acos(t)
    th = np.linspace(0.0, a, n)
    s = np.sin(th) / math.sin(a)
    w = np.ones(n)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    h = a / (n - 1)
    I_d = np.sum(w * s**d) * h / 3
    I_dm2 = np.sum(w * s ** (d - 2)) * h / 3 / math.sin(a) ** 2
    return (d - 1) * (I_dm2 / I_d - 1.0)


def codebooks_of(index):
    """The (16, d) codebooks from the serialized index (section CBOK, layout in anisotropic.h)."""
    blob = index.to_bytes()
    off = 64
    (nsec,) = struct.unpack_from("<I", blob, 20)
    for _ in range(nsec):
        tag = blob[off : off + 4]
        (length,) = struct.unpack_from("<Q", blob, off + 8)
        if tag == b"CBOK":
            return np.frombuffer(blob, np.float32, length // 4, off + 64).copy()
        off += 64 + (length + 63) // 64 * 64
    raise AssertionError("no CBOK section")


def section(index, tag):
    blob = index.to_bytes()
    off = 64
    (nsec,) = struct.unpack_from("<I", blob, 20)
    for _ in range(nsec):
        (length,) = struct.unpack_from("<Q", blob, off + 8)
        if blob[off : off + 4] == tag:
            return blob[off + 64 : off + 64 + length]
        off += 64 + (length + 63) // 64 * 64
    raise AssertionError(f"no {tag} section")


def block_layout(d, dpb):
    nb = -(-d // dpb)
    return [(m * dpb, min(dpb, d - m * dpb)) for m in range(nb)]


def reconstruct_single_leaf(index, Xn):
    """Reconstruction of every stored vector of a num_leaves=1 index: centre + codewords.
    Returns (ids, reconstructions) with rows in id order 0..n-1."""
    d = index.d
    cb = codebooks_of(index)
    center = np.frombuffer(section(index, b"RCEN"), np.float32).reshape(-1, d)
    assert center.shape[0] == 1
    ids = np.arange(index.ntotal)
    codes = index.get_codes(ids)
    R = np.repeat(center.astype(np.float64), len(ids), axis=0)
    for m, (off, dm) in enumerate(block_layout(d, index.dims_per_block)):
        C = cb[16 * off : 16 * (off + dm)].reshape(16, dm)
        R[:, off : off + dm] += C[codes[:, m]]
    return R, codes, cb, center[0]


# ------------------------------------------------------------------------------- eta
@pytest.mark.parametrize(
    "d,t,want",
    [
        (50, 0.2, 3.76),
        (50, 0.3, 6.80),
        (100, 0.15, 3.98),
        (100, 0.2, 5.95),
        (100, 0.55, 45.7),
        (128, 0.2, 7.16),
        (768, 0.2, 34.0),
    ],
)
def test_eta_exact_matches_brief_table(d, t, want):
    got = avq_plugin.eta_exact(t, d)
    tol = 0.01 if want < 10 else 0.05  # the table's values are rounded to 3 significant digits
    assert abs(got - want) <= tol, f"eta_exact({t}, {d}) = {got}, table says {want}"


@pytest.mark.parametrize("d", [2, 3, 10, 50, 100, 768])
@pytest.mark.parametrize("t", [0.05, 0.2, 0.5, 0.9])
def test_eta_exact_matches_quadrature(d, t):
    assert avq_plugin.eta_exact(t, d) == pytest.approx(eta_by_quadrature(t, d), rel=1e-5)


@pytest.mark.parametrize("d,t,want", [(50, 0.2, 2.04), (50, 0.3, 4.85), (100, 0.2, 4.13), (768, 0.2, 32.0)])
def test_eta_scann_formula(d, t, want):
    got = avq_plugin.eta_scann(t, d)
    assert got == pytest.approx((d - 1) * t * t / (1 - t * t), rel=1e-12)
    assert abs(got - want) <= (0.01 if want < 10 else 0.05)  # table rounded to 3 digits


def test_eta_properties():
    assert avq_plugin.eta_exact(0.0, 50) == 1.0
    ts = np.linspace(0.01, 0.95, 40)
    for d in (5, 50, 300):
        e = [avq_plugin.eta_exact(float(t), d) for t in ts]
        assert all(b > a for a, b in zip(e, e[1:])), f"eta_exact not increasing in t at d={d}"
        assert all(x > 1 for x in e)
    # eta grows with d at fixed t, and approaches ScaNN's limit: eta / (d - 1) -> t^2 / (1 - t^2).
    assert avq_plugin.eta_exact(0.3, 100) > avq_plugin.eta_exact(0.3, 50)
    ratio = avq_plugin.eta_exact(0.3, 20000) / avq_plugin.eta_scann(0.3, 20000)
    assert ratio == pytest.approx(1.0, abs=0.01)
    # ScaNN's eta falls below 1 when t < 1 / sqrt(d) (the case the library warns about).
    assert avq_plugin.eta_scann(0.05, 50) < 1.0
    assert avq_plugin.eta_scann(0.2, 50) > 1.0


# ------------------------------------------------------------------------------- ablation
@pytest.fixture(scope="module")
def ablation(glove):
    """Exhaustive (num_leaves=1) cosine indexes without reordering: plain PQ vs AVQ (T=0.2)."""
    X, Q, gt = glove
    common = dict(metric="cosine", num_leaves=1, reorder="none", dims_per_block=2, seed=0)
    plain = avq_plugin.AVQIndex(anisotropic_threshold=None, **common).fit(X)
    avq = avq_plugin.AVQIndex(anisotropic_threshold=0.2, **common).fit(X)
    return plain, avq


def test_ablation_avq_beats_plain_pq(glove, ablation, recall):
    """The paper's ablation (Guo et al. 2020, Fig. 3 setting) on the shipped GloVe subset.
    Measured at writing: plain 0.972 / 0.520, AVQ 0.989 / 0.594 (10@100 / 10@10)."""
    X, Q, gt = glove
    gt_ids = gt["cosine"][0]
    plain, avq = ablation
    _, Ip = plain.search(Q, k=100)
    _, Ia = avq.search(Q, k=100)
    p100, a100 = recall(Ip, gt_ids, 10), recall(Ia, gt_ids, 10)
    p10, a10 = recall(Ip[:, :10], gt_ids, 10), recall(Ia[:, :10], gt_ids, 10)
    assert p100 >= 0.9 and p10 >= 0.4  # plain PQ is a working baseline
    assert a100 >= p100 + 0.01, f"recall 10@100: AVQ {a100:.4f} vs plain PQ {p100:.4f}"
    assert a10 >= p10 + 0.04, f"recall 10@10: AVQ {a10:.4f} vs plain PQ {p10:.4f}"


def test_avq_reduces_parallel_residual(glove, ablation):
    """The point of the score-aware loss: AVQ trades parallel error for orthogonal error."""
    X, _, _ = glove
    Xn = X.astype(np.float64) / np.linalg.norm(X, axis=1, keepdims=True)
    out = {}
    for name, index in zip(("plain", "avq"), ablation):
        R, _, _, _ = reconstruct_single_leaf(index, Xn)
        ids = index.get_ids()
        assert sorted(ids) == list(range(len(X)))
        r = Xn - R
        par = np.einsum("ij,ij->i", r, Xn)  # u = x for unit x
        perp2 = np.einsum("ij,ij->i", r, r) - par**2
        out[name] = (np.mean(par**2), np.mean(perp2))
    (pp, po), (ap, ao) = out["plain"], out["avq"]
    assert ap < 0.7 * pp, f"parallel error: AVQ {ap:.4g} vs plain {pp:.4g}"
    assert ao > po, f"orthogonal error: AVQ {ao:.4g} should exceed plain {po:.4g}"


def test_plain_pq_codes_are_nearest_codewords(glove, ablation):
    """anisotropic_threshold=None: every block code is the nearest codeword of the residual."""
    X, _, _ = glove
    plain, _ = ablation
    Xn = X.astype(np.float64) / np.linalg.norm(X, axis=1, keepdims=True)
    _, codes, cb, center = reconstruct_single_leaf(plain, Xn)
    resid = Xn - center
    for m, (off, dm) in enumerate(block_layout(plain.d, plain.dims_per_block)):
        C = cb[16 * off : 16 * (off + dm)].reshape(16, dm).astype(np.float64)
        dist = ((resid[:, None, off : off + dm] - C[None]) ** 2).sum(-1)
        chosen = dist[np.arange(len(Xn)), codes[:, m]]
        assert np.all(chosen <= dist.min(axis=1) + 1e-6), f"block {m}: a code is not the nearest codeword"


def test_avq_codes_do_not_lose_to_nearest_codewords(glove, ablation):
    """AVQ encoding starts from the nearest codewords and only accepts improvements, so its
    anisotropic loss is never worse than the nearest-codeword encoding's (same codebook)."""
    X, _, _ = glove
    _, avq = ablation
    eta = avq_plugin.eta_exact(0.2, 50)
    Xn = X.astype(np.float64) / np.linalg.norm(X, axis=1, keepdims=True)
    R, codes, cb, center = reconstruct_single_leaf(avq, Xn)
    resid = Xn - center
    near = center + np.zeros_like(Xn)
    for off, dm in block_layout(avq.d, avq.dims_per_block):
        C = cb[16 * off : 16 * (off + dm)].reshape(16, dm).astype(np.float64)
        dist = ((resid[:, None, off : off + dm] - C[None]) ** 2).sum(-1)
        near[:, off : off + dm] += C[dist.argmin(axis=1)]

    def loss(Rec):
        r = Xn - Rec
        par = np.einsum("ij,ij->i", r, Xn)
        return np.einsum("ij,ij->i", r, r) + (eta - 1) * par**2

    la, ln = loss(R), loss(near)
    assert np.all(la <= ln + 1e-5), f"{np.sum(la > ln + 1e-5)} points encode worse than nearest codewords"
    assert la.mean() < 0.9 * ln.mean()
    # The reported training loss is this very objective (on the training sample = all points).
    assert avq.train_stats_["loss"][-1] == pytest.approx(la.mean(), rel=0.05)


def test_full_training_beats_encode_only(glove, recall):
    """dims_per_block=5: the least-squares codebook updates (training_iterations=8) beat ScaNN's
    encode-only behaviour (0). Measured at writing: 10@100 = 0.835 vs 0.800."""
    X, Q, gt = glove
    common = dict(metric="cosine", reorder="none", dims_per_block=5, seed=0)
    full = avq_plugin.AVQIndex(training_iterations=8, **common).fit(X)
    enc = avq_plugin.AVQIndex(training_iterations=0, **common).fit(X)
    L = full.num_leaves_
    rf = recall(full.search(Q, k=100, leaves_to_search=L)[1], gt["cosine"][0], 10)
    re = recall(enc.search(Q, k=100, leaves_to_search=L)[1], gt["cosine"][0], 10)
    assert rf >= re + 0.01, f"recall 10@100: full training {rf:.4f} vs encode-only {re:.4f}"
    lf, le = full.train_stats_["loss"], enc.train_stats_["loss"]
    assert len(lf) == 9 and len(le) == 1
    assert lf[0] == pytest.approx(le[0], rel=1e-9)  # same k-means start
    assert lf[-1] < le[-1]


# ------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def small_unit():
    """2000 random unit vectors in d=50 (so ||x|| = 1 and t = T)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((2000, 50)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_training_loss_non_increasing(small_unit):
    idx = avq_plugin.AVQIndex(
        metric="cosine", num_leaves=10, anisotropic_threshold=0.3, training_iterations=6, seed=0
    ).fit(small_unit)
    loss = idx.train_stats_["loss"]
    assert len(loss) == 7
    assert all(np.isfinite(loss)) and all(v > 0 for v in loss)
    assert loss[-1] < loss[0]
    for a, b in zip(loss, loss[1:]):
        assert b <= a * (1 + 1e-3), f"loss went up: {loss}"


def test_train_stats_contents(small_unit, glove):
    X, _, _ = glove
    idx = avq_plugin.AVQIndex(
        metric="cosine", num_leaves=10, anisotropic_threshold=0.2, seed=0, training_sample_size=1500
    ).fit(small_unit)
    st = idx.train_stats_
    assert set(st) >= {"eta_min", "eta_max", "eta_mean", "threshold", "sample_size", "loss"}
    assert st["sample_size"] == 1500
    assert st["threshold"] == pytest.approx(0.2)
    want = avq_plugin.eta_exact(0.2, 50)
    for key in ("eta_min", "eta_max", "eta_mean"):
        assert st[key] == pytest.approx(want, rel=1e-4)
    # metric="dot" with "auto": T = 0.2 * mean norm; eta per point from its own norm.
    Xs = X[:3000]
    dot = avq_plugin.AVQIndex(metric="dot", num_leaves=10, seed=0).fit(Xs)
    norms = np.linalg.norm(Xs.astype(np.float64), axis=1)
    assert dot.train_stats_["threshold"] == pytest.approx(0.2 * norms.mean(), rel=1e-5)
    assert dot.train_stats_["eta_min"] < dot.train_stats_["eta_mean"] < dot.train_stats_["eta_max"]
    assert dot.train_stats_["eta_min"] > 1
    # l2 "auto" means plain PQ.
    l2 = avq_plugin.AVQIndex(metric="l2", num_leaves=10, seed=0).fit(Xs)
    assert math.isnan(l2.train_stats_["threshold"])
    assert l2.train_stats_["eta_min"] == l2.train_stats_["eta_max"] == 1.0


def test_scann_formula_with_tiny_threshold_warns(small_unit):
    idx = avq_plugin.AVQIndex(metric="cosine", num_leaves=10, anisotropic_threshold=0.05, eta_formula="scann", seed=0)
    with pytest.warns(UserWarning, match=r"eta <= 1"):
        idx.fit(small_unit)
    assert idx.train_stats_["eta_max"] < 1.0
    # ... and behaves as plain PQ (eta clamped to 1).
    plain = avq_plugin.AVQIndex(metric="cosine", num_leaves=10, anisotropic_threshold=None, seed=0).fit(small_unit)
    ids = np.arange(len(small_unit))
    assert (idx.get_codes(ids) == plain.get_codes(ids)).mean() > 0.95


@pytest.mark.parametrize("method", ["fit", "train"])
def test_eta_warning_points_at_the_caller(small_unit, method):
    """The warning's location is the user's line (stacklevel), whether via fit() or train()."""
    idx = avq_plugin.AVQIndex(metric="cosine", num_leaves=10, anisotropic_threshold=0.05, eta_formula="scann", seed=0)
    with pytest.warns(UserWarning, match=r"eta <= 1") as rec:
        getattr(idx, method)(small_unit)
    assert [w.filename for w in rec] == [__file__] * len(rec), [f"{w.filename}:{w.lineno}" for w in rec]


def test_exact_formula_with_small_threshold_does_not_warn(small_unit):
    # filterwarnings=error turns any warning into a failure here.
    idx = avq_plugin.AVQIndex(metric="cosine", num_leaves=10, anisotropic_threshold=0.05, seed=0).fit(small_unit)
    assert idx.train_stats_["eta_min"] > 1.0


def test_zero_row_under_dot_does_not_trigger_eta_warning(small_unit):
    """With the exact formula eta > 1 for every non-zero vector; an all-zero row (valid under
    metric="dot", it has no direction to protect) must not trigger the "eta <= 1 ... raise the
    threshold" warning."""
    X = small_unit * np.linspace(0.5, 2.0, len(small_unit), dtype=np.float32)[:, None]
    X[7] = 0.0
    idx = avq_plugin.AVQIndex(metric="dot", num_leaves=10, seed=0)
    idx.fit(X)  # filterwarnings=error: the spurious warning fails here
    D, I = idx.search(X[:5], k=3, leaves_to_search=10)
    assert (I >= 0).all()


def test_zero_threshold_warns_at_construction():
    with pytest.warns(UserWarning, match=r"anisotropic_threshold=0"):
        avq_plugin.AVQIndex(metric="cosine", num_leaves=10, anisotropic_threshold=0)
    with pytest.warns(UserWarning, match=r"anisotropic_threshold=0"):
        avq_plugin.AVQIndex(metric="dot", anisotropic_threshold=0.0)


def test_zero_threshold_is_plain_pq_and_fit_does_not_warn_again(small_unit):
    """T=0 is announced once, at construction. fit() must not add the ScaNN-formula warning
    ("Raise the threshold (ScaNN's formula needs T > ||x|| / sqrt(d))"), which does not apply:
    eta_formula is "exact" and eta = 1 is exactly what T=0 asked for."""
    with pytest.warns(UserWarning, match=r"anisotropic_threshold=0"):
        idx = avq_plugin.AVQIndex(metric="cosine", num_leaves=10, anisotropic_threshold=0, seed=0)
    idx.fit(small_unit)  # filterwarnings=error: a second warning fails here
    plain = avq_plugin.AVQIndex(metric="cosine", num_leaves=10, anisotropic_threshold=None, seed=0).fit(small_unit)
    ids = np.arange(len(small_unit))
    np.testing.assert_array_equal(idx.get_codes(ids), plain.get_codes(ids))


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_eta_one_equals_plain_pq(metric, synthetic):
    X, _ = synthetic
    X = X[:3000]
    common = dict(metric=metric, num_leaves=16, seed=3)
    a = avq_plugin.AVQIndex(eta=1.0, **common).fit(X)
    b = avq_plugin.AVQIndex(anisotropic_threshold=None, **common).fit(X)
    ids = np.arange(len(X))
    np.testing.assert_array_equal(a.get_codes(ids), b.get_codes(ids))
    np.testing.assert_array_equal(codebooks_of(a), codebooks_of(b))


def test_fixed_eta_changes_codes(synthetic):
    X, _ = synthetic
    X = X[:3000]
    a = avq_plugin.AVQIndex(metric="dot", num_leaves=16, eta=1.0, seed=3).fit(X)
    b = avq_plugin.AVQIndex(metric="dot", num_leaves=16, eta=8.0, seed=3).fit(X)
    ids = np.arange(len(X))
    assert (a.get_codes(ids) != b.get_codes(ids)).any(axis=1).mean() > 0.2
    assert b.train_stats_["eta_min"] == b.train_stats_["eta_max"] == 8.0


# ------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("metric", ["dot", "cosine", "l2"])
def test_same_seed_same_index(metric, synthetic):
    X, Q = synthetic
    X = X[:4000]
    kw = dict(metric=metric, num_leaves=32, seed=11, training_sample_size=3000)
    a = avq_plugin.AVQIndex(**kw).fit(X)
    b = avq_plugin.AVQIndex(**kw).fit(X)
    ids = np.arange(len(X))
    np.testing.assert_array_equal(a.get_codes(ids), b.get_codes(ids))
    np.testing.assert_array_equal(a.get_ids(), b.get_ids())
    Da, Ia = a.search(Q, k=10, leaves_to_search=4)
    Db, Ib = b.search(Q, k=10, leaves_to_search=4)
    np.testing.assert_array_equal(Ia, Ib)
    np.testing.assert_array_equal(Da, Db)
    assert a.to_bytes() == b.to_bytes()


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_different_seed_different_codebooks(metric, synthetic):
    X, _ = synthetic
    X = X[:4000]
    a = avq_plugin.AVQIndex(metric=metric, num_leaves=32, seed=1).fit(X)
    b = avq_plugin.AVQIndex(metric=metric, num_leaves=32, seed=2).fit(X)
    ca, cb = codebooks_of(a), codebooks_of(b)
    assert ca.shape == cb.shape == (16 * X.shape[1],)
    assert not np.array_equal(ca, cb)
    ids = np.arange(len(X))
    assert (a.get_codes(ids) != b.get_codes(ids)).any(axis=1).mean() > 0.2


def test_reorder_none_spelled_as_python_none(synthetic):
    X, Q = synthetic
    a = avq_plugin.AVQIndex(metric="dot", num_leaves=20, reorder=None, eta=4.0, seed=0).fit(X)
    b = avq_plugin.AVQIndex(metric="dot", num_leaves=20, reorder="none", eta=4.0, seed=0).fit(X)
    assert a.reorder == "none" and a.to_bytes() == b.to_bytes()
    for x, y in zip(a.search(Q, k=10, leaves_to_search=5), b.search(Q, k=10, leaves_to_search=5)):
        np.testing.assert_array_equal(x, y)
    assert a.memory_usage() < avq_plugin.AVQIndex(metric="dot", num_leaves=20, eta=4.0, seed=0).fit(X).memory_usage()


def test_progress_parameter(synthetic, capsys):
    X, _ = synthetic
    calls = []
    index = avq_plugin.AVQIndex(metric="l2", num_leaves=10, seed=0, progress=lambda *a: calls.append(a)).fit(X)
    stages = {c[0] for c in calls}
    assert len(stages) >= 2 and all(isinstance(s, str) for s in stages)
    assert all(isinstance(done, int) and isinstance(total, int) and 0 <= done <= total for _, done, total, _ in calls)
    # the callback is the progress, not a pickled attribute; the index still searches the same
    back = pickle.loads(pickle.dumps(index))
    assert back.progress is None and back.to_bytes() == index.to_bytes()
    # False silences even verbose training; None follows verbose (lines on stderr)
    capsys.readouterr()
    avq_plugin.AVQIndex(metric="l2", num_leaves=10, seed=0, verbose=True, progress=False).fit(X[:2000])
    assert capsys.readouterr().err == ""
    avq_plugin.AVQIndex(metric="l2", num_leaves=10, seed=0, verbose=True).fit(X[:2000])
    assert "[avq" in capsys.readouterr().err
    avq_plugin.AVQIndex(metric="l2", num_leaves=10, seed=0, progress=True).fit(X[:2000])  # tqdm bars, closed
    with pytest.raises(TypeError, match="progress"):
        avq_plugin.AVQIndex(progress="yes")
