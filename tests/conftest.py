"""Shared fixtures for the avq_plugin test suite.

Data comes only from the installed package (the shipped GloVe subset) or is generated from a
fixed seed, so the suite runs the same on a user's machine as in CI.
"""

from __future__ import annotations

import importlib.resources
import struct
import zlib

import numpy as np
import pytest

import avq_plugin

METRICS = ("dot", "cosine", "l2")

# Shipped ground truth: neighbour ids and the matching score key, per metric.
# distances_cosine is the cosine *distance* 1 - cos, distances_l2 the *squared* L2 distance,
# scores_dot the inner product.
GT_IDS = {"cosine": "neighbors_cosine", "dot": "neighbors_dot", "l2": "neighbors_l2"}
GT_VALUES = {"cosine": "distances_cosine", "dot": "scores_dot", "l2": "distances_l2"}

FLT_MAX = float(np.finfo(np.float32).max)


def pad_value(metric):
    """The distance written next to padding id -1."""
    return FLT_MAX if metric == "l2" else -FLT_MAX


def pytest_configure(config):
    # When a hypothesis test fails, its pytest plugin imports libcst (to suggest a patch), which
    # emits this third-party DeprecationWarning; with filterwarnings=error that would turn a test
    # failure into a pytest INTERNALERROR and hide the falsifying example.
    config.addinivalue_line("filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")


# ---------------------------------------------------------------------------------- helpers
def compute_recall(I, gt_ids, k):
    """Recall k@n: the fraction of the first k true neighbours found among the n returned ids.

    I: (nq, n) returned ids (padding -1 never matches); gt_ids: (nq, >= k) exact ids, best first.
    """
    I = np.asarray(I)
    gt = np.asarray(gt_ids)[:, :k].astype(np.int64)
    assert I.ndim == 2 and gt.shape[0] == I.shape[0]
    hits = (I[:, :, None] == gt[:, None, :]).any(axis=1)
    return float(hits.mean())


def exact_scores(metric, X, Q):
    """Exact float64 scores (nq, n) in the index's convention (higher is better for every metric:
    inner product, cosine similarity, or minus the squared L2 distance)."""
    X = np.asarray(X, np.float64)
    Q = np.asarray(Q, np.float64)
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    if metric == "l2":
        return -(np.sum(Q**2, 1)[:, None] - 2 * Q @ X.T + np.sum(X**2, 1)[None, :])
    return Q @ X.T


def exact_pairs(metric, X, Q, I):
    """Exact value of D for the returned ids I (ids are row numbers of X), float64 (nq, k)."""
    X = np.asarray(X, np.float64)
    Q = np.asarray(Q, np.float64)
    V = X[I]  # (nq, k, d)
    if metric == "cosine":
        V = V / np.linalg.norm(V, axis=2, keepdims=True)
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    if metric == "l2":
        return np.sum((V - Q[:, None, :]) ** 2, axis=2)
    return np.einsum("qkd,qd->qk", V, Q)


def parse_sections(blob):
    """Split a serialized index (native/src/io.h layout) into its sections.

    Returns (header dict, list of dicts with tag, header_offset, payload_offset, length, crc).
    """
    assert blob[:8] == b"AVQINDEX"
    version, endian, kind, nsec, total = struct.unpack_from("<IIIIQ", blob, 8)
    header = dict(
        version=version, endian=endian, kind=kind, nsec=nsec, total=total, crc=struct.unpack_from("<I", blob, 32)[0]
    )
    out = []
    off = 64
    for _ in range(nsec):
        tag = bytes(blob[off : off + 4]).decode("ascii")
        (length,) = struct.unpack_from("<Q", blob, off + 8)
        (crc,) = struct.unpack_from("<I", blob, off + 16)
        out.append(dict(tag=tag, header_offset=off, payload_offset=off + 64, length=length, crc=crc))
        off += 64 + (length + 63) // 64 * 64
    assert off == len(blob) == total
    return header, out


def patch_header(blob, offset, fmt, value):
    """Overwrite a header field and recompute the header CRC-32 (bytes 32..36 over 0..32)."""
    b = bytearray(blob)
    struct.pack_into(fmt, b, offset, value)
    struct.pack_into("<I", b, 32, zlib.crc32(bytes(b[:32])) & 0xFFFFFFFF)
    return bytes(b)


def gaussian_mixture(n, d, *, centers=64, spread=0.35, seed=0):
    """Clustered float32 data: unit-ish Gaussian centres plus isotropic noise, norms varying."""
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((centers, d)) / np.sqrt(d)
    scale = rng.uniform(0.5, 1.5, size=centers)  # different norms per cluster (matters for dot)
    lab = rng.integers(0, centers, size=n)
    X = C[lab] * scale[lab, None] + spread * rng.standard_normal((n, d)) / np.sqrt(d)
    return np.ascontiguousarray(X, dtype=np.float32)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def recall():
    """The recall helper: ``recall(I, gt_ids, k)`` (see compute_recall)."""
    return compute_recall


@pytest.fixture(scope="session")
def glove_npz():
    """The shipped GloVe subset as a dict of arrays (train/test float16, ground truth)."""
    path = importlib.resources.files("avq_plugin") / "data" / "glove50_20k.npz"
    with importlib.resources.as_file(path) as p, np.load(p) as z:
        data = {k: z[k] for k in z.files}
    assert data["train"].shape == (20000, 50) and data["test"].shape == (500, 50)
    return data


@pytest.fixture(scope="session")
def glove(glove_npz):
    """(X, Q, gt): float32 train (20000, 50), test (500, 50), and {metric: (ids, values)}."""
    X = glove_npz["train"].astype(np.float32)
    Q = glove_npz["test"].astype(np.float32)
    gt = {m: (glove_npz[GT_IDS[m]].astype(np.int64), glove_npz[GT_VALUES[m]]) for m in METRICS}
    return X, Q, gt


@pytest.fixture(scope="session")
def synthetic():
    """(X, Q): seeded clustered data, 8000 x 32 database and 500 queries from the same mixture."""
    X = gaussian_mixture(8500, 32, seed=1234)
    return X[:8000].copy(), X[8000:].copy()


@pytest.fixture(scope="session")
def synthetic_gt(synthetic):
    """{metric: exact top-100 ids (500, 100)} of the synthetic queries (numpy, float64)."""
    X, Q = synthetic
    out = {}
    for m in METRICS:
        S = exact_scores(m, X, Q)
        out[m] = np.argsort(-S, axis=1, kind="stable")[:, :100]
    return out


SUPPORTED_SIMD_LEVELS = tuple(avq_plugin.build_info()["supported_simd_levels"])


@pytest.fixture(params=SUPPORTED_SIMD_LEVELS)
def simd_level(request):
    """Run the test once per SIMD level this CPU supports; restores the previous level."""
    before = avq_plugin.simd_level()
    avq_plugin.set_simd_level(request.param)
    assert avq_plugin.simd_level() == request.param
    try:
        yield request.param
    finally:
        avq_plugin.set_simd_level(before)


@pytest.fixture
def at_simd_level():
    """A context manager factory: ``with at_simd_level("avx2"): ...`` (restores the level)."""
    import contextlib

    @contextlib.contextmanager
    def _at(level):
        before = avq_plugin.simd_level()
        avq_plugin.set_simd_level(level)
        try:
            yield level
        finally:
            avq_plugin.set_simd_level(before)

    return _at


@pytest.fixture(scope="session")
def helpers():
    """Module-level helpers, for tests (conftest is not importable under importlib mode)."""
    import types

    return types.SimpleNamespace(
        METRICS=METRICS,
        FLT_MAX=FLT_MAX,
        pad_value=pad_value,
        recall=compute_recall,
        exact_scores=exact_scores,
        exact_pairs=exact_pairs,
        parse_sections=parse_sections,
        patch_header=patch_header,
        gaussian_mixture=gaussian_mixture,
    )
