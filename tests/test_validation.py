"""The bad-input matrix: every public entry point rejects malformed input with a ValueError or
TypeError naming the problem, accepts the documented conversions, and never crashes."""

from __future__ import annotations

import numpy as np
import pytest

import avq_plugin

D = 16
FLT_MAX = float(np.finfo(np.float32).max)


def data(n=1200, d=D, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((10, d)).astype(np.float32)
    return (C[rng.integers(0, 10, n)] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def X():
    return data()


@pytest.fixture(scope="module")
def indexes(X):
    """Fitted indexes for each metric (fixed eta: fast to build) plus ExactIndex oracles."""
    out = {}
    for m in ("dot", "cosine", "l2"):
        out[m] = avq_plugin.AVQIndex(metric=m, num_leaves=8, eta=None if m == "l2" else 4.0, seed=0).fit(X)
        out["exact-" + m] = avq_plugin.ExactIndex(m).fit(X)
    return out


def fresh(**kw):
    kw.setdefault("num_leaves", 8)
    kw.setdefault("eta", 4.0)
    return avq_plugin.AVQIndex(**kw)


# ------------------------------------------------------------------------------- arrays
class TestArrays:
    def test_fit_1d(self, X):
        with pytest.raises(ValueError, match="Expected 2D array"):
            fresh().fit(X[0])

    def test_fit_3d(self, X):
        with pytest.raises(ValueError, match="2-D"):
            fresh().fit(X[None])

    def test_search_3d(self, indexes, X):
        with pytest.raises(ValueError, match="2-D"):
            indexes["dot"].search(X[None, :3])

    def test_fit_0d(self):
        with pytest.raises(ValueError, match="2-D"):
            fresh().fit(np.float32(3.0))

    @pytest.mark.parametrize("kind", ["dot", "cosine", "l2", "exact-dot"])
    @pytest.mark.parametrize(
        "Q",
        [np.array(0.5, np.float32), np.float32(0.5), np.array(2.0), 1.0],
        ids=["0d-f32-array", "f32-scalar", "0d-f64-array", "python-float"],
    )
    def test_search_0d(self, indexes, kind, Q):
        """A scalar query is a shape error (ValueError), not an IndexError from shape[-1]."""
        with pytest.raises(ValueError, match="2-D|dimension|features"):
            indexes[kind].search(Q, k=1)

    @pytest.mark.parametrize("kind", ["dot", "exact-dot"])
    def test_wrong_d_at_add(self, indexes, X, kind):
        with pytest.raises(ValueError, match=r"features.*d=16"):
            indexes[kind].add(X[:5, :15])

    @pytest.mark.parametrize("kind", ["dot", "cosine", "l2", "exact-l2"])
    def test_wrong_d_at_search(self, indexes, X, kind):
        with pytest.raises(ValueError, match=r"features.*d=16"):
            indexes[kind].search(np.zeros((3, 17), np.float32) + 1)
        with pytest.raises(ValueError, match=r"features.*d=16"):
            indexes[kind].search(np.ones(15, np.float32))

    @pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "infinit"), (-np.inf, "infinit")])
    def test_non_finite_fit(self, X, bad, word):
        Xb = X.copy()
        Xb[17, 3] = bad
        with pytest.raises(ValueError, match=f"{word}.*row 17"):
            fresh().fit(Xb)
        with pytest.raises(ValueError, match=word):
            avq_plugin.ExactIndex("l2").fit(Xb)

    @pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "infinit")])
    @pytest.mark.parametrize("kind", ["l2", "exact-dot"])
    def test_non_finite_search_and_add(self, indexes, X, bad, word, kind):
        Q = X[:4].copy()
        Q[2, 0] = bad
        with pytest.raises(ValueError, match=word):
            indexes[kind].search(Q)
        n = indexes[kind].ntotal
        with pytest.raises(ValueError, match=word):
            indexes[kind].add(Q)
        assert indexes[kind].ntotal == n

    def test_float64_overflowing_float32(self):
        with pytest.raises(ValueError, match="too large for float32"):
            fresh(num_leaves=2).fit(np.full((10, 4), 1e300))

    def test_empty_fit(self):
        with pytest.raises(ValueError, match="empty"):
            fresh().fit(np.zeros((0, D), np.float32))
        with pytest.raises(ValueError, match="0 columns"):
            fresh().fit(np.zeros((5, 0), np.float32))
        with pytest.raises(ValueError, match="empty"):
            avq_plugin.ExactIndex("dot").fit(np.zeros((0, D), np.float32))

    @pytest.mark.parametrize("kind", ["dot", "exact-cosine"])
    def test_empty_query(self, indexes, kind):
        with pytest.raises(ValueError, match="empty"):
            indexes[kind].search(np.zeros((0, D), np.float32))
        with pytest.raises(ValueError, match="0 columns"):
            indexes[kind].search(np.zeros((0,), np.float32))

    def test_empty_add(self, indexes):
        with pytest.raises(ValueError, match="empty"):
            indexes["l2"].add(np.zeros((0, D), np.float32))

    @pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.int64, np.uint8, np.int8])
    def test_numeric_dtypes_are_converted(self, dtype):
        """float64 / float16 / integer inputs are converted to float32: same index, same results."""
        rng = np.random.default_rng(1)
        X32 = rng.integers(-5, 6, size=(600, 8)).astype(np.float32)
        if np.dtype(dtype).kind == "u":
            X32 = np.abs(X32)
        X32[np.abs(X32).sum(1) == 0, 0] = 1
        a = avq_plugin.AVQIndex(metric="l2", num_leaves=4, seed=0).fit(X32)
        b = avq_plugin.AVQIndex(metric="l2", num_leaves=4, seed=0).fit(X32.astype(dtype))
        ids = np.arange(600)
        np.testing.assert_array_equal(a.get_codes(ids), b.get_codes(ids))
        Da, Ia = a.search(X32[:20], k=5)
        Db, Ib = a.search(X32[:20].astype(dtype), k=5)
        np.testing.assert_array_equal(Ia, Ib)
        np.testing.assert_array_equal(Da, Db)

    def test_python_lists_accepted(self, indexes, X):
        D1, I1 = indexes["dot"].search(X[:3].tolist(), k=4)
        D2, I2 = indexes["dot"].search(X[:3], k=4)
        np.testing.assert_array_equal(I1, I2)

    def test_ragged_list(self):
        with pytest.raises(ValueError, match="could not be converted"):
            fresh().fit([[1.0, 2.0], [3.0]])

    @pytest.mark.parametrize(
        "make",
        [
            lambda X: X.astype(str),
            lambda X: X.astype(object),
            lambda X: X.astype(np.complex64),
            lambda X: X > 0,
            lambda X: np.zeros(X.shape, "m8[s]"),
        ],
        ids=["str", "object", "complex", "bool", "timedelta"],
    )
    def test_non_numeric_dtypes_rejected(self, indexes, X, make):
        bad = make(X[:50])
        with pytest.raises(TypeError, match="real numbers"):
            fresh().fit(bad)
        with pytest.raises(TypeError, match="real numbers"):
            indexes["dot"].search(bad[:3])
        with pytest.raises(TypeError, match="real numbers"):
            indexes["dot"].add(bad[:3])
        with pytest.raises(TypeError, match="real numbers"):
            indexes["exact-dot"].search(bad[:3])

    def test_sparse_rejected(self, indexes, X):
        sp = pytest.importorskip("scipy.sparse")
        with pytest.raises(TypeError, match="sparse"):
            indexes["dot"].search(sp.csr_matrix(X[:3]))

    def test_non_contiguous_and_fortran_accepted(self, X):
        """X[:, ::2] and Fortran-ordered arrays give the same index and results as C copies."""
        Xw = np.ascontiguousarray(np.repeat(X, 2, axis=1))  # (n, 32); [:, ::2] recovers X
        strided = Xw[:, ::2]
        assert not strided.flags.c_contiguous
        fortran = np.asfortranarray(X)
        assert not fortran.flags.c_contiguous
        ref = fresh(metric="dot", seed=3).fit(X)
        ids = np.arange(len(X))
        for variant in (strided, fortran):
            other = fresh(metric="dot", seed=3).fit(variant)
            np.testing.assert_array_equal(other.get_codes(ids), ref.get_codes(ids))
        Dr, Ir = ref.search(X[:50], k=10)
        for Q in (Xw[:50, ::2], np.asfortranarray(X[:50])):
            Dq, Iq = ref.search(Q, k=10)
            np.testing.assert_array_equal(Iq, Ir)
            np.testing.assert_array_equal(Dq, Dr)
        # Negative strides and strided rows.
        Dq, Iq = ref.search(X[:50][::-1], k=10)
        np.testing.assert_array_equal(Iq, Ir[::-1])
        np.testing.assert_array_equal(Dq, Dr[::-1])
        Dq, Iq = ref.search(X[:100][::2], k=10)
        Dc, Ic = ref.search(np.ascontiguousarray(X[:100][::2]), k=10)
        np.testing.assert_array_equal(Iq, Ic)
        np.testing.assert_array_equal(Dq, Dc)
        # A 1-D strided query.
        D1, I1 = ref.search(Xw[0, ::2], k=10)
        np.testing.assert_array_equal(I1, Ir[:1])
        # Non-contiguous ids too.
        ids2 = np.arange(2 * len(X))[::2] + 1000
        other = fresh(metric="dot", seed=3).fit(X, ids=ids2)
        assert set(other.get_ids()) == set(ids2)

    def test_read_only_memmap_accepted(self, X, tmp_path):
        path = tmp_path / "x.f32"
        X.tofile(path)
        mm = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)
        assert not mm.flags.writeable
        a = fresh(metric="cosine", seed=2).fit(mm)
        b = fresh(metric="cosine", seed=2).fit(X)
        ids = np.arange(len(X))
        np.testing.assert_array_equal(a.get_codes(ids), b.get_codes(ids))
        Da, Ia = a.search(mm[:20], k=5)
        Db, Ib = b.search(X[:20], k=5)
        np.testing.assert_array_equal(Ia, Ib)
        np.testing.assert_array_equal(Da, Db)
        a.add(mm[:3], ids=[10**6, 10**6 + 1, 10**6 + 2])
        e = avq_plugin.ExactIndex("l2").fit(mm)
        assert e.search(mm[:1], k=1)[1][0, 0] == 0
        del mm

    def test_read_only_array_accepted(self, X):
        Xr = X.copy()
        Xr.setflags(write=False)
        fresh(metric="l2").fit(Xr).search(Xr[:2])

    def test_input_not_modified(self, X):
        X0 = X.copy()
        idx = fresh(metric="cosine").fit(X)
        idx.search(X[:10])
        idx.add(X[:5], ids=np.arange(5) + 5000)
        np.testing.assert_array_equal(X, X0)


# ------------------------------------------------------------------------------- k
class TestK:
    @pytest.mark.parametrize(
        "k,exc,match",
        [
            (0, ValueError, "k must be >= 1"),
            (-1, ValueError, "k must be >= 1"),
            (1.5, TypeError, "k must be an integer"),
            (2.0, TypeError, "k must be an integer"),
            (True, TypeError, "k must be an integer"),
            (np.bool_(True), TypeError, "k must be an integer"),
            ("3", TypeError, "k must be an integer"),
            (None, TypeError, "k must be an integer"),
        ],
    )
    @pytest.mark.parametrize("kind", ["l2", "exact-l2"])
    def test_bad_k(self, indexes, X, k, exc, match, kind):
        with pytest.raises(exc, match=match):
            indexes[kind].search(X[:2], k=k)

    @pytest.mark.parametrize("kind", ["l2", "exact-l2"])
    def test_numpy_integer_k(self, indexes, X, kind):
        D, I = indexes[kind].search(X[:2], k=np.int64(3))
        assert I.shape == (2, 3)
        D, I = indexes[kind].search(X[:2], k=np.uint8(4))
        assert I.shape == (2, 4)

    @pytest.mark.parametrize("name", ["leaves_to_search", "reorder_k"])
    def test_bad_budget(self, indexes, X, name):
        with pytest.raises(ValueError, match=f"{name} must be >= 1"):
            indexes["dot"].search(X[:2], **{name: 0})
        with pytest.raises(TypeError, match=f"{name} must be an integer"):
            indexes["dot"].search(X[:2], **{name: 2.5})

    def test_bad_search_threads(self, indexes, X):
        with pytest.raises(ValueError, match="num_threads"):
            indexes["dot"].search(X[:2], num_threads=0)
        with pytest.raises(TypeError, match="num_threads"):
            indexes["dot"].search(X[:2], num_threads=1.0)


# ------------------------------------------------------------------------------- ids
class TestIds:
    def test_duplicate_ids(self, X):
        ids = np.arange(len(X))
        ids[10] = 3
        with pytest.raises(ValueError, match="duplicates.*3"):
            fresh().fit(X, ids=ids)
        with pytest.raises(ValueError, match="duplicates"):
            avq_plugin.ExactIndex("dot").fit(X, ids=ids)

    def test_wrong_length_ids(self, X):
        with pytest.raises(ValueError, match="10 entries.*1200 vectors"):
            fresh().fit(X, ids=np.arange(10))
        with pytest.raises(ValueError, match="entries"):
            avq_plugin.ExactIndex("dot").fit(X, ids=np.arange(1201))

    @pytest.mark.parametrize(
        "ids", [np.arange(1200.0), np.arange(1200).astype(object), ["a"] * 1200, np.ones(1200, bool)]
    )
    def test_non_integer_ids(self, X, ids):
        with pytest.raises(TypeError, match="ids must be integers"):
            fresh().fit(X, ids=ids)

    def test_2d_ids(self, X):
        with pytest.raises(ValueError, match="1-D"):
            fresh().fit(X, ids=np.arange(1200).reshape(2, 600))

    def test_uint64_ids_beyond_int64(self, X):
        ids = np.arange(1200, dtype=np.uint64) + np.uint64(2**63)
        with pytest.raises(ValueError, match="int64 range"):
            fresh().fit(X, ids=ids)

    @pytest.mark.parametrize("kind", ["dot", "exact-dot"])
    def test_ids_already_present_on_add(self, indexes, X, kind):
        index = indexes[kind]
        n = index.ntotal
        with pytest.raises(ValueError, match="id 5 is already in the index"):
            index.add(X[:3], ids=[10**7, 5, 10**7 + 1])
        assert index.ntotal == n  # nothing was added
        assert 10**7 not in set(index.get_ids())

    @pytest.mark.parametrize("kind", ["dot", "exact-dot"])
    def test_duplicate_ids_on_add(self, indexes, X, kind):
        with pytest.raises(ValueError, match="duplicates"):
            indexes[kind].add(X[:2], ids=[10**8, 10**8])

    def test_remove_bad_ids(self, indexes):
        with pytest.raises(TypeError, match="integers"):
            indexes["l2"].remove([1.0])
        with pytest.raises(ValueError, match="1-D"):
            indexes["l2"].remove(np.zeros((2, 2), np.int64))
        assert indexes["l2"].remove(np.array([], np.int64)) == 0
        assert indexes["l2"].remove([-123456789]) == 0

    @pytest.mark.parametrize("kind", ["l2", "exact-l2"])
    def test_remove_empty_list(self, indexes, kind):
        """remove([]) (an empty Python list, which numpy types as float64) removes nothing."""
        n = indexes[kind].ntotal
        assert indexes[kind].remove([]) == 0
        assert indexes[kind].ntotal == n

    def test_get_codes_unknown_id(self, indexes):
        with pytest.raises(ValueError, match="unknown id 987654"):
            indexes["dot"].get_codes([987654])
        with pytest.raises(TypeError, match="integers"):
            indexes["dot"].get_codes([0.5])


# ------------------------------------------------------------------------------- state
class TestState:
    @pytest.mark.parametrize(
        "call",
        [
            lambda i, X: i.search(X[:2]),
            lambda i, X: i.add(X[:2]),
            lambda i, X: i.remove([0]),
            lambda i, X: i.reset(),
            lambda i, X: i.get_codes([0]),
            lambda i, X: i.get_ids(),
            lambda i, X: i.save("never-written.avq"),
            lambda i, X: i.to_bytes(),
            lambda i, X: i.default_search_params(),
            lambda i, X: i.num_leaves_,
            lambda i, X: i.train_stats_,
        ],
        ids=[
            "search",
            "add",
            "remove",
            "reset",
            "get_codes",
            "get_ids",
            "save",
            "to_bytes",
            "default_search_params",
            "num_leaves_",
            "train_stats_",
        ],
    )
    def test_before_fit(self, X, call, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        index = avq_plugin.AVQIndex()
        with pytest.raises(ValueError, match="not trained"):
            call(index, X)
        assert not (tmp_path / "never-written.avq").exists()
        assert index.ntotal == 0 and len(index) == 0 and not index.is_trained and index.d is None

    def test_exact_before_fit(self, X):
        e = avq_plugin.ExactIndex("dot")
        with pytest.raises(ValueError, match="empty"):
            e.search(X[:2])
        with pytest.raises(ValueError, match="empty"):
            e.to_bytes()
        assert e.remove([1]) == 0 and e.ntotal == 0

    def test_zero_vector_under_cosine(self, indexes, X):
        Z = X[:20].copy()
        Z[4] = 0
        with pytest.raises(ValueError, match=r"all-zero row \(row 4\).*cosine"):
            fresh(metric="cosine").fit(Z)
        with pytest.raises(ValueError, match=r"(row|query) 4\b.*zero|zero.*(row|query) 4\b"):
            indexes["cosine"].search(Z)
        with pytest.raises(ValueError, match="zero.*cosine"):
            indexes["cosine"].search(np.zeros(D, np.float32))
        n = indexes["cosine"].ntotal
        with pytest.raises(ValueError, match="zero.*cosine"):
            indexes["cosine"].add(Z, ids=np.arange(20) + 10**9)
        assert indexes["cosine"].ntotal == n
        with pytest.raises(ValueError, match="zero.*cosine"):
            indexes["exact-cosine"].search(Z)
        with pytest.raises(ValueError, match="zero.*cosine"):
            avq_plugin.ExactIndex("cosine").fit(Z)

    @pytest.mark.parametrize("metric", ["dot", "l2"])
    def test_zero_vectors_fine_for_dot_and_l2(self, indexes, metric):
        D_, I_ = indexes[metric].search(np.zeros((2, D), np.float32), k=3)
        assert (I_ >= 0).all() and np.isfinite(D_).all()


# ------------------------------------------------------------------------------- parameters
class TestParameters:
    @pytest.mark.parametrize(
        "kw,exc,match",
        [
            ({"metric": "ip"}, ValueError, "metric must be one of"),
            ({"metric": "COSINE"}, ValueError, "metric must be one of"),
            ({"metric": None}, ValueError, "metric must be one of"),
            ({"reorder": "fp16"}, ValueError, "reorder must be one of"),
            ({"reorder": "None"}, ValueError, "reorder must be one of"),  # None itself means "none"
            ({"dims_per_block": 0}, ValueError, "dims_per_block must be >= 1"),
            ({"dims_per_block": 9}, ValueError, "dims_per_block must be <= 8"),
            ({"dims_per_block": 2.0}, TypeError, "dims_per_block must be an integer"),
            ({"num_leaves": 0}, ValueError, "num_leaves must be >= 1"),
            ({"num_leaves": -3}, ValueError, "num_leaves must be >= 1"),
            ({"num_leaves": 2.5}, TypeError, "num_leaves must be an integer"),
            ({"anisotropic_threshold": -0.1}, ValueError, "anisotropic_threshold must be >= 0"),
            ({"anisotropic_threshold": float("nan")}, ValueError, "anisotropic_threshold must be finite"),
            ({"anisotropic_threshold": float("inf")}, ValueError, "anisotropic_threshold must be finite"),
            ({"anisotropic_threshold": "big"}, TypeError, "anisotropic_threshold must be a number"),
            ({"eta": 0.5}, ValueError, "eta must be >= 1"),
            ({"eta": 0.0}, ValueError, "eta must be >= 1"),
            ({"eta": float("nan")}, ValueError, "eta must be finite"),
            ({"eta_formula": "approx"}, ValueError, "eta_formula must be one of"),
            ({"num_threads": 0}, ValueError, "num_threads"),
            ({"num_threads": -2}, ValueError, "num_threads"),
            ({"num_threads": 1.5}, TypeError, "num_threads must be an integer"),
            ({"leaves_to_search": 0}, ValueError, "leaves_to_search must be >= 1"),
            ({"reorder_k": 0}, ValueError, "reorder_k must be >= 1"),
            ({"training_iterations": -1}, ValueError, "training_iterations must be >= 0"),
            ({"kmeans_iterations": 0}, ValueError, "kmeans_iterations must be >= 1"),
            ({"training_sample_size": 0}, ValueError, "training_sample_size must be >= 1"),
            ({"seed": -1}, ValueError, "seed must be >= 0"),
            ({"seed": 1.0}, TypeError, "seed must be an integer"),
        ],
    )
    def test_bad_constructor_argument(self, kw, exc, match):
        with pytest.raises(exc, match=match):
            avq_plugin.AVQIndex(**kw)

    def test_exact_bad_arguments(self):
        with pytest.raises(ValueError, match="metric must be one of"):
            avq_plugin.ExactIndex("hamming")
        with pytest.raises(ValueError, match="num_threads"):
            avq_plugin.ExactIndex("dot", num_threads=0)

    def test_num_leaves_more_than_points(self, X):
        with pytest.raises(ValueError, match="num_leaves=1201 exceeds the number of training vectors"):
            fresh(num_leaves=1201).fit(X)
        fresh(num_leaves=1200).fit(X)  # equal is fine

    def test_training_sample_smaller_than_num_leaves(self, X):
        # The sample is raised to num_leaves: training must still work.
        idx = fresh(num_leaves=50, training_sample_size=10).fit(X)
        assert idx.train_stats_["sample_size"] >= 50
        assert idx.ntotal == len(X)

    def test_dims_per_block_larger_than_d(self, X):
        idx = fresh(dims_per_block=8).fit(X[:, :3])
        assert idx.num_blocks == 1 and idx.code_size == 1
        D_, I_ = idx.search(X[:5, :3], k=3, leaves_to_search=8)
        assert (I_ >= 0).all()

    @pytest.mark.parametrize(
        "d,dpb,blocks,size", [(16, 2, 8, 4), (17, 2, 9, 5), (50, 5, 10, 5), (1, 1, 1, 1), (97, 8, 13, 7)]
    )
    def test_num_blocks_and_code_size(self, d, dpb, blocks, size):
        rng = np.random.default_rng(0)
        idx = fresh(num_leaves=2, dims_per_block=dpb).fit(rng.standard_normal((40, d)).astype(np.float32))
        assert idx.num_blocks == blocks
        assert idx.code_size == size
        assert idx.get_codes(np.arange(40)).shape == (40, blocks)
        assert idx.get_codes(np.arange(40)).max() <= 15


# ------------------------------------------------------------------------------- fuzzing
try:
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st
except ImportError:  # optional test dependency
    given = None

if given is not None:
    DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64, object, "U4"]
    SPECIAL = [0.0, 1.0, -1.0, 1e-30, 1e-40, 1e6, -1e6, np.nan, np.inf, -np.inf]

    @st.composite
    def queries(draw):
        ndim = draw(st.sampled_from([0, 1, 2, 2, 2, 3]))
        dims = [
            draw(st.sampled_from([0, 1, 2, 3, 5])) if i < ndim - 1 else draw(st.sampled_from([0, 1, 15, 16, 16, 17]))
            for i in range(ndim)
        ]
        dtype = draw(st.sampled_from(DTYPES))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        A = rng.standard_normal(dims) * draw(st.sampled_from([1e-3, 1.0, 100.0]))
        if A.size and draw(st.booleans()):
            flat = A.reshape(-1)
            flat[rng.integers(0, flat.size, size=draw(st.integers(1, 3)))] = draw(st.sampled_from(SPECIAL))
        if draw(st.booleans()) and A.ndim == 2:
            A = np.asfortranarray(A)
        with np.errstate(all="ignore"):
            return np.asarray(A).astype(dtype)

    ks = st.one_of(st.integers(-2, 40), st.sampled_from([True, False, 1.0, 2.5, None, "5", 2**62, 2**63, 2**64]))
    budgets = st.one_of(st.none(), st.integers(-1, 300), st.sampled_from([2.0, True, 2**64]))

    # Derandomized, so that every run checks the same inputs (the explicit examples are
    # regressions found by random runs).
    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @example(Q=np.array(0.25, np.float32), k=1, lts=None, rk=None, kind="dot")
    @example(Q=np.full((2, 16), np.nan, np.float32), k=3, lts=2, rk=None, kind="cosine")
    @example(Q=np.zeros((1, 16), np.float32), k=3, lts=None, rk=5, kind="cosine")
    @example(Q=np.ones((3, 16), np.float32), k=2**62, lts=None, rk=None, kind="l2")
    @given(
        Q=queries(),
        k=ks,
        lts=budgets,
        rk=budgets,
        kind=st.sampled_from(["dot", "cosine", "l2", "exact-dot", "exact-cosine", "exact-l2"]),
    )
    def test_fuzz_search_valid_or_clean_error(indexes, Q, k, lts, rk, kind):
        index = indexes[kind]
        kw = {} if kind.startswith("exact") else {"leaves_to_search": lts, "reorder_k": rk}
        try:
            Dq, Iq = index.search(Q, k=k, **kw)
        except (ValueError, TypeError):
            return
        # A valid result: shapes, dtypes, ids from the index or -1, exact padding, sorted.
        nq = 1 if np.ndim(Q) == 1 else np.shape(Q)[0]
        kk = int(k)
        assert Dq.shape == Iq.shape == (nq, kk)
        assert Dq.dtype == np.float32 and Iq.dtype == np.int64
        valid = set(index.get_ids().tolist())
        assert set(Iq[Iq >= 0].tolist()) <= valid
        assert (Iq >= -1).all()
        metric = kind.split("-")[-1]
        pad = FLT_MAX if metric == "l2" else -FLT_MAX
        assert (Dq[Iq == -1] == pad).all()
        assert np.isfinite(Dq[Iq >= 0]).all()
        for row_i, row_d in zip(Iq, Dq):
            real = row_i >= 0
            assert not (np.diff(real.astype(int)) > 0).any()  # padding only at the end
            got = row_d[real]
            assert (np.diff(got) >= 0).all() if metric == "l2" else (np.diff(got) <= 0).all()
            assert len(set(row_i[real].tolist())) == real.sum()  # no duplicate ids

else:

    def test_fuzz_search_valid_or_clean_error():
        pytest.importorskip("hypothesis")


def test_cosine_with_subnormal_norm_vectors_stays_finite():
    """1/||x|| overflows float32 for subnormal-norm rows: normalisation must not produce inf/NaN."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 12)).astype(np.float32)
    X[:5] *= np.float32(1e-39)
    for cls_kwargs in ({"num_leaves": 4, "seed": 0}, None):
        index = avq_plugin.AVQIndex(metric="cosine", **cls_kwargs) if cls_kwargs else avq_plugin.ExactIndex("cosine")
        index.fit(X)
        kw = {"leaves_to_search": 4, "reorder_k": 50} if cls_kwargs else {}
        D, I = index.search(X[:10], k=5, **kw)
        assert np.isfinite(D).all() and (I >= 0).all()
        # A tiny vector is its own best match (cosine similarity 1).
        assert I[0, 0] == 0 and abs(D[0, 0] - 1.0) < 1e-4


def test_too_many_blocks_is_a_clear_error():
    X = np.ones((20, 8200), np.float32)
    with pytest.raises(ValueError, match="blocks"):
        avq_plugin.AVQIndex(dims_per_block=1, num_leaves=1).fit(X)
