"""Every SIMD level gives bit-identical training and search results (the determinism contract
of native/src/kernels/kernels.h), the AVQ_SIMD_LEVEL override works, and build_info is complete."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import avq_plugin

LEVELS = tuple(avq_plugin.build_info()["supported_simd_levels"])
METRICS = ("dot", "cosine", "l2")
REORDERS = ("float32", "float16", "int8", "none")

# (d, dims_per_block): odd dimensions, blocks that divide d or leave a remainder, dpb > d.
SHAPES = [(1, 1), (1, 8), (3, 2), (3, 5), (17, 1), (17, 3), (17, 8), (50, 2), (50, 5), (97, 3), (97, 8)]


def make_data(d, seed, n=700, nq=40):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((12, d)) * 2.0
    lab = rng.integers(0, 12, n + nq)
    X = (C[lab] + rng.standard_normal((n + nq, d))).astype(np.float32)
    X[np.linalg.norm(X, axis=1) == 0] += 1.0
    return X[:n].copy(), X[n:].copy()


def run_all_levels(fn):
    """{level: fn()} evaluated at every supported level; restores the level."""
    before = avq_plugin.simd_level()
    out = {}
    try:
        for level in LEVELS:
            avq_plugin.set_simd_level(level)
            assert avq_plugin.simd_level() == level
            out[level] = fn()
    finally:
        avq_plugin.set_simd_level(before)
    return out


def test_at_least_scalar_level():
    assert "scalar" in LEVELS
    assert LEVELS[0] == "scalar"


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("d,dpb", SHAPES, ids=[f"d{d}-dpb{b}" for d, b in SHAPES])
def test_identical_codes_and_results_across_levels(metric, d, dpb):
    reorder = REORDERS[(d + dpb) % len(REORDERS)]
    X, Q = make_data(d, seed=d * 10 + dpb)
    ids = np.arange(len(X), dtype=np.int64) * 3 + 5  # non-trivial user ids
    # A fixed eta exercises the same anisotropic kernels as a threshold, without tabulating the
    # exact eta function (about 0.3 s per fit/add); one shape keeps the default "auto" path.
    aniso = {} if (metric == "l2" or (d, dpb) == (50, 2)) else {"eta": 4.0}

    def build_and_search():
        index = avq_plugin.AVQIndex(
            metric=metric,
            num_leaves=6,
            dims_per_block=dpb,
            reorder=reorder,
            training_iterations=3,
            seed=7,
            num_threads=2,
            **aniso,
        ).fit(X, ids=ids)
        codes = index.get_codes(ids)
        D, I = index.search(Q, k=10, leaves_to_search=3, reorder_k=25)
        D2, I2 = index.search(Q, k=10, leaves_to_search=6, reorder_k=60, num_threads=1)
        return codes, D, I, D2, I2, index.to_bytes()

    res = run_all_levels(build_and_search)
    ref_level = LEVELS[0]
    ref = res[ref_level]
    assert ref[0].shape == (len(X), -(-d // dpb))
    assert (ref[2] >= 0).sum() > 0
    for level in LEVELS[1:]:
        got = res[level]
        np.testing.assert_array_equal(got[0], ref[0], err_msg=f"codes differ: {level} vs {ref_level}")
        np.testing.assert_array_equal(got[2], ref[2], err_msg=f"ids differ: {level} vs {ref_level}")
        np.testing.assert_array_equal(got[1], ref[1], err_msg=f"distances differ: {level} vs {ref_level}")
        np.testing.assert_array_equal(got[4], ref[4], err_msg=f"ids differ (full budget): {level}")
        np.testing.assert_array_equal(got[3], ref[3], err_msg=f"distances differ (full budget): {level}")
        assert got[5] == ref[5], f"serialized index differs: {level} vs {ref_level}"


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("d", [1, 3, 15, 17, 97, 1000])
def test_exact_index_identical_across_levels(metric, d):
    X, Q = make_data(d, seed=d, n=300, nq=20)
    res = run_all_levels(lambda: avq_plugin.ExactIndex(metric).fit(X).search(Q, k=15))
    for level in LEVELS[1:]:
        np.testing.assert_array_equal(res[level][1], res[LEVELS[0]][1])
        np.testing.assert_array_equal(res[level][0], res[LEVELS[0]][0])


def test_queries_at_every_level_against_one_index(simd_level, synthetic, helpers):
    """An index trained at the default level answers identically at each level, and correctly."""
    X, Q = synthetic
    index = _shared_index(X)
    D, I = index.search(Q[:100], k=10, leaves_to_search=8, reorder_k=50)
    base = _shared_results(index, Q)
    np.testing.assert_array_equal(I, base[1])
    np.testing.assert_array_equal(D, base[0])
    np.testing.assert_allclose(D, helpers.exact_pairs("dot", X, Q[:100], I), rtol=1e-4, atol=1e-5)


_CACHE = {}


def _shared_index(X):
    if "index" not in _CACHE:
        _CACHE["index"] = avq_plugin.AVQIndex(metric="dot", num_leaves=32, seed=0).fit(X)
    return _CACHE["index"]


def _shared_results(index, Q):
    if "res" not in _CACHE:
        before = avq_plugin.simd_level()
        avq_plugin.set_simd_level("scalar")
        try:
            _CACHE["res"] = index.search(Q[:100], k=10, leaves_to_search=8, reorder_k=50)
        finally:
            avq_plugin.set_simd_level(before)
    return _CACHE["res"]


def test_set_simd_level_rejects_unknown_and_unavailable():
    before = avq_plugin.simd_level()
    with pytest.raises(ValueError, match="neon|unknown|SIMD"):
        avq_plugin.set_simd_level("neon")
    with pytest.raises(ValueError, match="unknown"):
        avq_plugin.set_simd_level("sse9")
    info = avq_plugin.build_info()
    for level in ("scalar", "avx2", "avx512"):
        if level not in info["supported_simd_levels"]:
            with pytest.raises(ValueError, match="not available"):
                avq_plugin.set_simd_level(level)
    assert avq_plugin.simd_level() == before  # a failed call changes nothing


def test_simd_level_fixture_restores(simd_level):
    assert avq_plugin.simd_level() == simd_level
    assert avq_plugin.build_info()["simd_level"] == simd_level


# ------------------------------------------------------------------------------- environment
def run_python(code, env_level):
    env = dict(os.environ)
    env.pop("AVQ_SIMD_LEVEL", None)
    if env_level is not None:
        env["AVQ_SIMD_LEVEL"] = env_level
    # Run from a neutral directory: a checkout's avq_plugin/ (without the .so) must not shadow
    # the installed package.
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# The levels are listed from least to most capable, so the best supported one is the last.
BEST = LEVELS[-1]

LEVEL_CODE = """
import avq_plugin
info = avq_plugin.build_info()
print(avq_plugin.simd_level(), info["simd_level"], info.get("best_simd_level", "-"))
"""


def test_env_var_selects_scalar():
    active, reported, best = run_python(LEVEL_CODE, "scalar").split()
    assert active == reported == "scalar"
    assert best in ("-", BEST)


@pytest.mark.parametrize("level", LEVELS)
def test_env_var_selects_each_supported_level(level):
    active, reported, _ = run_python(LEVEL_CODE, level).split()
    assert active == reported == level
    # ... and the level can still be changed at run time afterwards.
    code = f"import avq_plugin; avq_plugin.set_simd_level({BEST!r}); print(avq_plugin.simd_level())"
    assert run_python(code, level) == BEST


@pytest.mark.parametrize("value", ["bogus", "", "AVX9000"])
def test_env_var_unknown_value_falls_back_to_best(value):
    active, reported, _ = run_python(LEVEL_CODE, value).split()
    assert active == reported == BEST


def test_env_var_unset_gives_best():
    active, reported, _ = run_python(LEVEL_CODE, None).split()
    assert active == reported == BEST


def test_env_var_scalar_search_matches_in_process(synthetic):
    """A scalar-only process returns the same bytes as this one."""
    X, Q = synthetic
    code = """
    import numpy as np, avq_plugin, sys
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1500, 19)).astype(np.float32)
    idx = avq_plugin.AVQIndex(metric="l2", num_leaves=8, dims_per_block=3, seed=1).fit(X)
    D, I = idx.search(X[:30], k=7, leaves_to_search=3)
    print(avq_plugin.simd_level(), D.tobytes().hex(), I.tobytes().hex())
    """
    level, dhex, ihex = run_python(code, "scalar").split()
    assert level == "scalar"
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1500, 19)).astype(np.float32)
    idx = avq_plugin.AVQIndex(metric="l2", num_leaves=8, dims_per_block=3, seed=1).fit(X)
    D, I = idx.search(X[:30], k=7, leaves_to_search=3)
    assert D.tobytes().hex() == dhex
    assert I.tobytes().hex() == ihex


# ------------------------------------------------------------------------------- build_info
def test_build_info_keys_and_values():
    info = avq_plugin.build_info()
    for key in ("version", "compiled_simd_levels", "supported_simd_levels", "simd_level", "compiler", "flags"):
        assert key in info, f"build_info() lacks {key!r}"
    assert info["version"] == avq_plugin.__version__
    assert isinstance(info["version"], str) and info["version"].count(".") >= 2
    compiled, supported = list(info["compiled_simd_levels"]), list(info["supported_simd_levels"])
    assert "scalar" in compiled and "scalar" in supported
    assert set(supported) <= set(compiled) <= {"scalar", "avx2", "avx512", "neon"}
    assert info["simd_level"] in supported
    assert info["simd_level"] == avq_plugin.simd_level()
    assert isinstance(info["compiler"], str) and info["compiler"]
    assert isinstance(info["flags"], str)
    # Shipped builds must not change the host's floating point or require the build machine's ISA.
    for bad in ("-ffast-math", "-Ofast", "-march=native", "-funsafe-math-optimizations"):
        assert bad not in info["flags"], f"build flags contain {bad}"
    # A returned copy: mutating it does not affect the library.
    info["simd_level"] = "nonsense"
    assert avq_plugin.build_info()["simd_level"] != "nonsense"
