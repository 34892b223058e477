"""One source of truth for parameters and defaults (issue 13 section 1).

Every front-end gets the same partition size and search budget for the same (n, k) from
avq_plugin._params.resolve_budget; the concrete values are written into the file (format
version 2); version-1 files, which stored 0 for "decided later", still load and search as they did.
"""

from __future__ import annotations

import importlib
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

import avq_plugin
from avq_plugin import _native, _params
from avq_plugin import _validation as V
from avq_plugin.faiss import IndexAVQ, read_index, write_index

V1 = Path(__file__).resolve().parent / "data" / "params_v1"


@pytest.fixture(scope="module")
def glove():
    X, _ = _glove_subset()
    return X


def _glove_subset():
    z = np.load(Path(avq_plugin.__file__).parent / "data" / "glove50_20k.npz")
    return z["train"][:6000].astype(np.float32), z["test"][:50].astype(np.float32)


def _parm(blob):
    """(format version, PARM payload) of a serialized index."""
    from .conftest import parse_sections

    header, sections = parse_sections(blob)
    parm = next(s for s in sections if s["tag"] == "PARM")
    return header["version"], bytes(blob[parm["payload_offset"] : parm["payload_offset"] + parm["length"]])


# ---------------------------------------------------------------------------------- the rule
def test_resolve_budget_rule():
    assert _params.resolve_budget(20000, 50) == (141, 42, 200)
    assert _params.resolve_budget(190000, 50) == (436, 74, 200)
    assert _params.resolve_budget(10_000_000, 96) == (3162, 197, 200)
    assert _params.resolve_budget(1, 8) == (1, 1, 200)
    assert _params.resolve_budget(6000, 50, k=50).reorder_k == 1000
    # Given values are kept; the probe rule follows the given leaves.
    assert _params.resolve_budget(6000, 50, num_leaves=10) == (10, 10, 200)
    assert _params.resolve_budget(None, 50, num_leaves=400, leaves_to_search=5, reorder_k=7) == (400, 5, 7)
    with pytest.raises(ValueError, match="n="):
        _params.resolve_budget(None, 50)


def test_resolve_encoding_rule():
    """dims_per_block and spilling by dimension and metric; given values are kept."""
    E = _params.resolve_encoding
    assert E(50, "cosine") == (2, None)
    assert E(255, "dot") == (2, None)
    assert E(256, "dot") == (4, "soar")
    assert E(384, "cosine") == (4, "soar")
    assert E(784, "l2") == (2, None)  # Fashion-MNIST-like pixels: neither pays (docs/parameters.md)
    assert E(384, "cosine", dims_per_block=2, spill=None) == (2, None)
    assert E(384, "cosine", spill="none") == (4, None)
    assert E(50, "cosine", spill="soar") == (2, "soar")
    # A spilled index probes fewer leaves by default: every vector sits in two.
    assert _params.resolve_budget(100_000, 384, spilled=True) == (316, 36, 200)
    assert _params.resolve_budget(100_000, 384) == (316, 63, 200)


def test_high_dimensional_defaults_reach_the_index(tmp_path):
    """AVQIndex() on 256-d cosine data trains with 4 dims per block and SOAR, stores them, and
    keeps the constructor's values; IndexAVQ (Faiss's one-copy IVF) never spills."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 256)).astype(np.float32)
    index = avq_plugin.AVQIndex(metric="cosine", seed=0, training_iterations=0).fit(X)
    p = index._native_params()
    assert (p["dims_per_block"], p["spill"]) == (4, "soar")
    assert index.num_blocks == 64
    want = _params.resolve_budget(3000, 256, spilled=True)
    assert (index.num_leaves_, *index.default_search_params()) == want
    assert index.dims_per_block is None and index.spill == "auto"
    index.save(tmp_path / "hd.avq")
    back = avq_plugin.AVQIndex.load(tmp_path / "hd.avq")
    assert (back.dims_per_block, back.spill) == (4, "soar")
    np.testing.assert_array_equal(back.search(X[:5], 10)[1], index.search(X[:5], 10)[1])
    # l2 and low dimensions keep the plain layout.
    p2 = avq_plugin.AVQIndex(metric="l2", seed=0, training_iterations=0).fit(X)._native_params()
    assert (p2["dims_per_block"], p2["spill"]) == (2, "none")
    fx = IndexAVQ(256, 64, 4, 0, nlist=20, reorder_k=50, training_iterations=0)
    fx.train(X)
    assert fx._avq._native_params()["spill"] == "none"


@pytest.mark.parametrize("k", [10, 50])
def test_every_entry_point_gives_the_same_budget(glove, k):
    X = glove
    n, d = X.shape
    want = _params.resolve_budget(n, d, k)
    stored = _params.resolve_budget(n, d)  # what the index stores: the rule at the default k

    index = avq_plugin.AVQIndex(metric="l2", seed=0, training_iterations=0).fit(X)
    assert (index.num_leaves_, *index.default_search_params()) == stored
    assert index._native_params()["num_leaves"] == stored.num_leaves

    pytest.importorskip("sklearn")
    nn = avq_plugin.AVQNearestNeighbors(algorithm="avq", n_neighbors=k, random_state=0).fit(X)
    assert nn.index_.num_leaves_ == want.num_leaves
    assert nn._budget(k) == (want.leaves_to_search, want.reorder_k)

    fx = IndexAVQ(d, d // 2, 4, 1, nlist=want.num_leaves, reorder_k=want.reorder_k, training_iterations=0)
    assert fx.nprobe == want.leaves_to_search  # before training: the rule for nlist
    fx.train(X)
    assert fx.nprobe == want.leaves_to_search
    assert fx._avq.default_search_params() == (want.leaves_to_search, want.reorder_k)
    assert fx._budget(None)[:2] == (want.leaves_to_search, want.reorder_k)
    # Faiss's explicit semantics stay: a given nprobe wins, nlist=None is exhaustive.
    assert IndexAVQ(d, d // 2, 4, 1, nlist=want.num_leaves, nprobe=1).nprobe == 1
    assert IndexAVQ(d, d // 2, 4, 1).nprobe == 1

    # The sharded index: the total n decides, both shardings, the rule stored with its quantizer.
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    from avq_plugin.distributed import ShardedAVQIndex

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        for sharding in ("leaves", "rows"):
            sh = ShardedAVQIndex("l2", 2, seed=0, training_iterations=0, client=client, sharding=sharding).fit(X)
            assert (sh.num_leaves_, *sh.default_search_params()) == stored, sharding
            assert sh.trained_index().default_search_params() == stored[1:]
    # One sample-size rule: the core's, which the sharded index uses to gather its sample.
    assert _params.training_sample_rows(10**6, 1000) == 100_000
    assert _params.training_sample_rows(10**7, 3162) == 64 * 3162
    assert _params.training_sample_rows(5000, 70) == 5000
    assert _params.training_sample_rows(10**6, 1000, 3000) == 3000


def test_no_second_copy_of_the_rule():
    """The former per-front-end constants are gone: every front-end calls resolve_budget."""
    import avq_plugin.faiss.index as faiss_index
    import avq_plugin.index as index_module
    import avq_plugin.neighbors as neighbors

    modules = [neighbors, faiss_index, index_module]
    if importlib.util.find_spec("distributed") is not None:
        import avq_plugin.distributed as dist

        modules += [dist, *(importlib.import_module(f"avq_plugin.distributed.{m}") for m in _DIST_MODULES)]
    names = ("PROBE_SQRT_FACTOR", "REORDER_MIN", "REORDER_PER_NEIGHBOR", "DEFAULT_PROBE_FRACTION", "DEFAULT_REORDER_K")
    for module in modules:
        for name in names:
            assert not hasattr(module, name), (module.__name__, name)


_DIST_MODULES = ("index", "base", "rows", "leaves", "replicas", "worker", "placement", "merge", "manifest", "sources")


# ---------------------------------------------------------------------------- the file stores it
def test_file_stores_concrete_values(glove, tmp_path, monkeypatch):
    X = glove
    index = avq_plugin.AVQIndex(metric="cosine", seed=0, training_iterations=0).fit(X)
    budget = _params.resolve_budget(*X.shape)
    version, parm = _parm(index.to_bytes())
    assert version == 2 == avq_plugin.build_info()["format_version"]
    # Version 2 PARM: 13 parameter fields, the trained state, the budget and the l2 flag; no
    # threshold mode. Offsets: num_leaves at 8, threshold at 16, default budget at 104.
    assert len(parm) == 116
    assert struct.unpack_from("<I", parm, 8)[0] == budget.num_leaves
    assert struct.unpack_from("<d", parm, 16)[0] == pytest.approx(0.2)  # "auto" resolved for cosine
    assert struct.unpack_from("<II", parm, 104) == (budget.leaves_to_search, budget.reorder_k)
    assert "threshold_mode" not in index._native_params()
    index.save(tmp_path / "a.avq")
    # Changing the rule later does not change how a saved index searches.
    monkeypatch.setattr(_params, "PROBE_PER_SQRT_LEAVES", 1.0)
    monkeypatch.setattr(_params, "REORDER_MIN", 10)
    back = avq_plugin.AVQIndex.load(tmp_path / "a.avq")
    assert (back.num_leaves_, *back.default_search_params()) == budget
    assert back.anisotropic_threshold == pytest.approx(0.2)  # the value, not the "auto" UI state
    # A version-2 file without the budget is corrupted (0 no longer means "decide later").
    blob = index.to_bytes()
    from .test_faiss_adapter import _rebuild

    with pytest.raises(ValueError, match="search budget"):
        avq_plugin.AVQIndex.from_bytes(_rebuild(blob, "PARM", parm[:104] + bytes(8) + parm[112:]))


def test_index_params_object_and_limits():
    p = _native.IndexParams()
    p.metric, p.d, p.num_leaves, p.dims_per_block, p.reorder = "l2", 8, 4, 2, "int8"
    assert (p.metric, p.d, p.num_leaves, p.reorder) == ("l2", 8, 4, "int8")
    with pytest.raises(ValueError, match="metric"):
        p.metric = "manhattan"
    with pytest.raises(TypeError):
        p.d = -1
    native = _native.Index(p)
    assert native.params().num_leaves == 4 and native.params().reorder == "int8"
    p.num_leaves = 0  # a copy: the index keeps its own
    assert native.params().num_leaves == 4
    with pytest.raises(ValueError, match="num_leaves must be set"):
        _native.Index(p).train(np.ones((10, 8), np.float32), 1, None)
    # The limits come from the native module and every front-end checks them alike.
    assert (V.LIMITS["max_dims_per_block"], V.LIMITS["max_dim"], V.LIMITS["max_leaves"]) == (8, 1 << 20, 2**31 - 1)
    with pytest.raises(ValueError, match="<= 8"):
        avq_plugin.AVQIndex(dims_per_block=9)
    with pytest.raises(ValueError, match="at most 8"):
        IndexAVQ(18, 2, 4)
    with pytest.raises(ValueError, match=f"<= {2**31 - 1}"):
        avq_plugin.AVQIndex(num_leaves=2**31)
    with pytest.raises(ValueError, match=f"<= {1 << 20}"):
        IndexAVQ((1 << 20) + 2, 2, 4)
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="<= 8"):
        avq_plugin.AVQNearestNeighbors(dims_per_block=9).fit(np.ones((10, 4)))


# --------------------------------------------------------------------------- version-1 files
V1_CASES = ["cosine_auto", "l2_none", "dot_fixed"]


@pytest.mark.parametrize("name", V1_CASES)
def test_version_1_file_loads_and_searches_identically(name, tmp_path):
    path = V1 / f"{name}.avq"
    assert _parm(path.read_bytes())[0] == 1
    expected = np.load(V1 / "expected.npz")
    Q = expected["queries"]
    L, lts, rk = (int(v) for v in expected[f"{name}_budget"])
    for index in (
        avq_plugin.AVQIndex.load(path),
        avq_plugin.AVQIndex.load(path, mmap=True),
        avq_plugin.AVQIndex.from_bytes(path.read_bytes()),
    ):
        assert index.num_leaves_ == L == index._native_params()["num_leaves"]
        D, I = index.search(Q, k=10, leaves_to_search=lts, reorder_k=rk, num_threads=1)
        np.testing.assert_array_equal(I, expected[f"{name}_I"])
        np.testing.assert_allclose(D, expected[f"{name}_D"], rtol=1e-6, atol=1e-6)
        # The 0s of a version-1 file are completed by today's rule; explicit values are kept.
        want = (lts, rk) if name == "dot_fixed" else _params.resolve_budget(None, index.d, num_leaves=L)[1:]
        assert index.default_search_params() == tuple(want)
        # Saved again: a version-2 file with those concrete values, searching the same.
        index.save(tmp_path / "v2.avq")
        again = avq_plugin.AVQIndex.load(tmp_path / "v2.avq")
        assert _parm(again.to_bytes())[0] == 2
        assert again.default_search_params() == index.default_search_params()
        np.testing.assert_array_equal(again.search(Q, k=10, leaves_to_search=lts, reorder_k=rk)[1], I)
    if name == "cosine_auto":  # threshold "auto" (mode 1 in the file) becomes the T it gave
        assert index.anisotropic_threshold == pytest.approx(0.2)
    if name == "l2_none":
        assert index.anisotropic_threshold is None


def test_version_1_faiss_file_keeps_nprobe_and_l2_norms(tmp_path):
    expected = np.load(V1 / "expected.npz")
    fx = read_index(V1 / "faiss_l2_ivf.avq")
    assert (fx.nlist, fx.nprobe, fx.reorder_k) == (10, 3, None)
    assert fx._avq._native_params()["l2_decoded_norms"] is True
    D, I = fx.search(expected["queries"], 10)
    np.testing.assert_array_equal(I, expected["faiss_l2_ivf_I"])
    np.testing.assert_allclose(D, expected["faiss_l2_ivf_D"], rtol=1e-6, atol=1e-6)
    write_index(fx, tmp_path / "v2.avq")
    back = read_index(tmp_path / "v2.avq")
    assert (back.nlist, back.nprobe) == (10, 3)
    np.testing.assert_array_equal(back.search(expected["queries"], 10)[1], I)


# --------------------------------------------------------------------- fitting keeps the parameters
def test_training_keeps_the_constructor_parameters_and_a_refit_re_resolves(glove):
    """scikit-learn's convention: fit resolves "auto" / None into the fitted state (the native
    record: anisotropic_threshold_, num_leaves_, default_search_params()), never into the
    parameters, so a refit on data of another size resolves them again."""
    X = glove
    index = avq_plugin.AVQIndex(metric="dot", training_iterations=0, kmeans_iterations=2, seed=0)
    names = ("anisotropic_threshold", "num_leaves", "dims_per_block", "spill", "leaves_to_search", "reorder_k")
    params = {k: getattr(index, k) for k in names}
    assert params == dict(zip(names, ("auto", None, None, "auto", None, None)))
    for n, scale in ((6000, 1.0), (400, 3.0)):
        Xn = X[:n] * scale
        index.fit(Xn)
        assert {k: getattr(index, k) for k in params} == params
        budget = _params.resolve_budget(n, X.shape[1])
        assert (index.num_leaves_, *index.default_search_params()) == budget
        mean_norm = float(np.mean(np.linalg.norm(Xn.astype(np.float64), axis=1)))
        assert index.anisotropic_threshold_ == pytest.approx(0.2 * mean_norm, rel=1e-5)
        assert index.train_stats_["threshold"] == pytest.approx(index.anisotropic_threshold_)
        # Searching without a budget uses the stored, resolved one.
        Q = Xn[:20]
        np.testing.assert_array_equal(
            index.search(Q, k=10)[1], index.search(Q, k=10, leaves_to_search=budget[1], reorder_k=budget[2])[1]
        )
    # tune and an assigned number change the stored budget, not the parameters given.
    assert avq_plugin.AVQIndex(metric="l2", num_leaves=8).fit(X[:500]).anisotropic_threshold_ is None
    index.leaves_to_search = 3
    assert index.default_search_params() == (3, budget[2])
    index.leaves_to_search = None  # None: the stored budget stays
    assert index.default_search_params() == (3, budget[2])


def test_get_params_are_what_the_user_passed_and_clone_works(glove):
    sklearn_base = pytest.importorskip("sklearn.base")
    X = glove[:2000]
    nn = avq_plugin.AVQNearestNeighbors(
        n_neighbors=5, metric="cosine", algorithm="avq", anisotropic_threshold="auto", random_state=0
    )
    before = nn.get_params()
    nn.fit(X)
    assert nn.get_params() == before
    assert nn.index_.anisotropic_threshold == "auto" and nn.index_.leaves_to_search is None
    twin = sklearn_base.clone(nn)  # clone checks that the constructor kept every parameter as given
    assert twin.get_params() == before
    np.testing.assert_array_equal(twin.fit(X).kneighbors(X[:10])[1], nn.kneighbors(X[:10])[1])
    # AVQIndex too: an index refitted keeps its parameters.
    index = avq_plugin.AVQIndex(metric="cosine", leaves_to_search=None, reorder_k=50, seed=0)
    index.fit(X).fit(X[:300])
    assert (index.anisotropic_threshold, index.leaves_to_search, index.reorder_k) == ("auto", None, 50)
    assert index.default_search_params() == (_params.resolve_budget(300, X.shape[1])[1], 50)


@pytest.mark.parametrize("name", V1_CASES)
def test_version_1_file_searches_with_its_stored_budget(name):
    """A loaded index has no parameters given (None): search without a budget uses the file's."""
    expected = np.load(V1 / "expected.npz")
    Q = expected["queries"]
    index = avq_plugin.AVQIndex.load(V1 / f"{name}.avq")
    assert (index.leaves_to_search, index.reorder_k) == (None, None)
    lts, rk = index.default_search_params()
    np.testing.assert_array_equal(
        index.search(Q, k=10)[1], index.search(Q, k=10, leaves_to_search=lts, reorder_k=rk)[1]
    )
    v2 = avq_plugin.AVQIndex.from_bytes(index.to_bytes())
    assert v2.default_search_params() == (lts, rk)
    np.testing.assert_array_equal(v2.search(Q, k=10)[1], index.search(Q, k=10)[1])
