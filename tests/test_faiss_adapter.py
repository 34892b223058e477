"""IndexAVQ's Faiss contract without faiss: attributes, dtypes, padding, ids, decoding, range
search, persistence and bad input. (Comparisons with real Faiss: test_faiss_export.py.)"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import avq_plugin
from avq_plugin import IndexAVQ, SearchParametersAVQ, read_index, write_index

from .conftest import FLT_MAX

IP, L2 = 0, 1


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, 16)).astype(np.float32) * 2
    X = (centres[rng.integers(0, 20, 3000)] + rng.standard_normal((3000, 16))).astype(np.float32)
    return X[:2500].copy(), X[2500:2600].copy()


def exact_top(X, Q, k, metric, ids=None):
    S = Q.astype(np.float64) @ X.astype(np.float64).T
    if metric == L2:
        S = 2 * S - (X.astype(np.float64) ** 2).sum(1)[None, :]
    top = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return top if ids is None else ids[top]


def overlap(I, J):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(I, J)])


@pytest.mark.parametrize("metric", [IP, L2])
@pytest.mark.parametrize("nlist", [None, 10])
def test_contract(data, metric, nlist):
    X, Q = data
    index = IndexAVQ(16, 8, 4, metric, nlist=nlist, nprobe=10)
    assert (index.d, index.M, index.nbits, index.ksub, index.dsub) == (16, 8, 4, 16, 2)
    assert index.metric_type == metric and index.code_size == 4
    assert not index.is_trained and index.ntotal == 0
    index.train(X)
    assert index.is_trained and index.ntotal == 0
    index.add(X)
    assert index.ntotal == len(X)
    D, I = index.search(Q, 10)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (len(Q), 10)
    assert (np.diff(D, axis=1) <= 0).all() if metric == IP else (np.diff(D, axis=1) >= 0).all()
    # Recall 10@50 against brute force (measured 0.86 .. 0.99 over the four cases).
    I50 = index.search(Q, 50)[1]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I50, exact_top(X, Q, 10, metric))]) >= 0.75
    # The reported value is the quantized score of the decoded vector (up to 8-bit LUT rounding;
    # L2 uses the exact norm of x instead of the decoded one).
    rec = index.reconstruct_batch(I[:, 0])
    if metric == IP:
        np.testing.assert_allclose(D[:, 0], np.einsum("ij,ij->i", Q, rec), atol=0.05 * np.abs(D[:, 0]).max())
    # reset keeps the training; padding when k > ntotal, exactly as Faiss pads.
    index.reset()
    assert index.ntotal == 0 and index.is_trained
    D, I = index.search(Q[:2], 4)
    assert (I == -1).all() and (D == (-FLT_MAX if metric == IP else FLT_MAX)).all()
    index.add(X[:3])
    D, I = index.search(Q[:2], 5)
    assert sorted(I[0, :3]) == [0, 1, 2] and (I[:, 3:] == -1).all()
    assert (D[:, 3:] == (-FLT_MAX if metric == IP else FLT_MAX)).all()


def test_ids_are_stable_and_decoding(data):
    X, Q = data
    index = IndexAVQ(16, 4, 4, L2, nlist=8, nprobe=8)
    index.train(X)
    ids = np.arange(len(X), dtype=np.int64) * 10 + 5
    index.add_with_ids(X, ids)
    before = index.reconstruct_batch(ids[100:110])
    assert index.remove_ids(np.array([5, 15, 25, 999999])) == 3  # unknown ids are ignored
    assert index.ntotal == len(X) - 3
    np.testing.assert_array_equal(index.reconstruct_batch(ids[100:110]), before)  # ids unchanged
    with pytest.raises(ValueError, match="unknown id"):
        index.reconstruct(15)
    D, I = index.search(Q, 20)
    assert not np.isin(I, [5, 15, 25]).any() and np.isin(I, ids).all()
    v = index.reconstruct(int(ids[500]))
    assert v.dtype == np.float32 and v.shape == (16,)
    np.testing.assert_array_equal(v, index.reconstruct_batch([ids[500]])[0])
    # L2 scores are ||q - decoded||^2 (as Faiss computes them), up to 8-bit LUT rounding.
    D, I = index.search(Q[:20], 1)
    rec = index.reconstruct_batch(I[:, 0])
    want = ((Q[:20] - rec) ** 2).sum(1)
    np.testing.assert_allclose(D[:, 0], want, atol=0.05 * want.max())
    # add() continues after the largest id.
    index.add(X[:2])
    assert index.ntotal == len(X) - 1
    index.reconstruct(int(ids[-1]) + 1)


def test_reconstruct_n_sequential(data):
    X, _ = data
    index = IndexAVQ(16, 8, 4, IP)
    index.train(X)
    index.add(X[:50])
    R = index.reconstruct_n(10, 5)
    assert R.shape == (5, 16)
    np.testing.assert_array_equal(R, index.reconstruct_batch(np.arange(10, 15)))
    assert index.reconstruct_n().shape == (50, 16)
    err = np.linalg.norm(index.reconstruct_n() - X[:50], axis=1) / np.linalg.norm(X[:50], axis=1)
    assert err.mean() < 0.4  # measured 0.30 (2-d blocks, 16 codewords, anisotropic loss)


def test_reorder_is_exact(data):
    X, Q = data
    index = IndexAVQ(16, 8, 4, IP, reorder_k=100)
    index.train(X)
    index.add(X)
    D, I = index.search(Q, 10)
    np.testing.assert_allclose(D, np.einsum("qd,qkd->qk", Q, X[I]), rtol=1e-5, atol=1e-4)
    codes_only = IndexAVQ(16, 8, 4, IP)
    codes_only.train(X)
    codes_only.add(X)
    truth = exact_top(X, Q, 10, IP)
    assert overlap(I, truth) > overlap(codes_only.search(Q, 10)[1], truth)
    assert overlap(I, truth) >= 0.95
    # reorder_k per call; a codes-only index refuses it.
    D1, I1 = index.search(Q, 10, params=SearchParametersAVQ(reorder_k=10))
    assert overlap(I1, truth) <= overlap(I, truth)
    with pytest.raises(ValueError, match="reorder_k"):
        codes_only.reorder_k = 50
    with pytest.raises(ValueError, match="reorder_k"):
        codes_only.search(Q, 10, params=SearchParametersAVQ(reorder_k=10))


def test_nprobe_and_params(data):
    X, Q = data
    index = IndexAVQ(16, 8, 4, L2, nlist=20)
    index.train(X)
    index.add(X)
    truth = exact_top(X, Q, 10, L2)
    # Default nprobe: the rule every front-end shares (avq_plugin._params), not Faiss's 1.
    assert index.nprobe == avq_plugin._params.resolve_budget(None, 16, num_leaves=20).leaves_to_search == 16
    index.nprobe = 1
    r1 = overlap(index.search(Q, 10)[1], truth)
    r20 = overlap(index.search(Q, 10, params=SearchParametersAVQ(nprobe=20))[1], truth)
    index.nprobe = 20
    np.testing.assert_array_equal(index.search(Q, 10)[1], index.search(Q, 10, params=SearchParametersAVQ(nprobe=20))[1])
    assert r20 > r1

    class FaissLikeParams:  # duck-typed faiss.SearchParametersIVF
        nprobe = 1

    np.testing.assert_array_equal(
        index.search(Q, 10, params=FaissLikeParams())[1], index.search(Q, 10, params=SearchParametersAVQ(nprobe=1))[1]
    )
    # Output arrays filled in place.
    D = np.empty((len(Q), 10), np.float32)
    I = np.empty((len(Q), 10), np.int64)
    D2, I2 = index.search(Q, 10, D=D, I=I)
    assert D2 is D and I2 is I


def test_leaf_margin(data):
    # leaf_margin (inner product): the wrapped AVQIndex's search with that margin, as an attribute,
    # per call, in range_search and through pickle; rejected under L2 and with float_lut.
    X, Q = data
    index = IndexAVQ(16, 8, 4, IP, nlist=40, nprobe=2, reorder_k=20, leaf_margin=0.5)
    index.train(X)
    index.add(X)
    avq = index._avq
    want = avq.search(Q, 10, leaves_to_search=2, reorder_k=20, leaf_margin=0.5)
    fixed = avq.search(Q, 10, leaves_to_search=2, reorder_k=20)
    assert (want[1] != fixed[1]).any()  # the margin adds leaves for some queries
    np.testing.assert_array_equal(index.search(Q, 10)[1], want[1])
    np.testing.assert_array_equal(index.search(Q, 10, params=SearchParametersAVQ(leaf_margin=0.5))[1], want[1])
    index.leaf_margin = None
    np.testing.assert_array_equal(index.search(Q, 10)[1], fixed[1])
    np.testing.assert_array_equal(index.search(Q, 10, params=SearchParametersAVQ(leaf_margin=0.5))[1], want[1])
    assert repr(SearchParametersAVQ(leaf_margin=0.5)).endswith("leaf_margin=0.5)")
    index.leaf_margin = 0.5
    lims, D, I = index.range_search(Q[:5], float(want[0][:, 4].min()))
    assert set(want[1][0][want[0][0] > want[0][:, 4].min()]) <= set(I[lims[0] : lims[1]])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(index)).search(Q, 10)[1], want[1])
    with pytest.raises(ValueError, match="float_lut"):
        index.search(Q, 10, params=SearchParametersAVQ(float_lut=True))
    with pytest.raises(ValueError, match="leaf_margin"):
        index.leaf_margin = -1.0
    with pytest.raises(TypeError, match="leaf_margin"):
        SearchParametersAVQ(leaf_margin="0.5")
    with pytest.raises(ValueError, match="leaf_margin needs metric METRIC_INNER_PRODUCT"):
        IndexAVQ(16, 8, 4, L2, nlist=40, leaf_margin=0.5)
    l2 = IndexAVQ(16, 8, 4, L2, nlist=40)
    l2.train(X)
    with pytest.raises(ValueError, match="params.leaf_margin needs metric"):
        l2.search(Q, 10, params=SearchParametersAVQ(leaf_margin=0.5))


@pytest.mark.parametrize("metric", [IP, L2])
def test_range_search(data, metric):
    X, Q = data
    index = IndexAVQ(16, 8, 4, metric, reorder_k=3000)  # exact scores: compare with brute force
    index.train(X)
    index.add(X)
    S = Q.astype(np.float64) @ X.astype(np.float64).T
    if metric == L2:
        S = (Q.astype(np.float64) ** 2).sum(1)[:, None] - 2 * S + (X.astype(np.float64) ** 2).sum(1)[None, :]
    radius = float(np.quantile(S, 0.97 if metric == IP else 0.03))  # about 75 results per query
    lims, D, I = index.range_search(Q, radius)
    assert lims.dtype == np.uint64 and lims.shape == (len(Q) + 1,) and lims[0] == 0
    assert D.dtype == np.float32 and I.dtype == np.int64 and len(D) == len(I) == lims[-1]
    for i in range(len(Q)):
        got = set(I[lims[i] : lims[i + 1]])
        want = set(np.flatnonzero(S[i] > radius if metric == IP else S[i] < radius))
        # Exact re-scoring of every candidate; only values within float32 rounding may differ.
        border = set(np.flatnonzero(np.abs(S[i] - radius) < 1e-3 * max(1.0, abs(radius))))
        assert got ^ want <= border
    assert lims[-1] > 1000  # some queries need more than the initial 64 candidates


def test_persistence(tmp_path, data):
    X, Q = data
    index = IndexAVQ(16, 8, 4, IP, nlist=10, reorder_k=50)
    index.train(X)
    index.add_with_ids(X, np.arange(len(X)) + 1000)
    index.nprobe = 4
    path = tmp_path / "index.avq"
    write_index(index, path)
    back = read_index(path)
    assert isinstance(back, IndexAVQ)
    assert (back.d, back.M, back.metric_type, back.nlist, back.nprobe, back.reorder_k, back.ntotal) == (
        16,
        8,
        IP,
        10,
        4,
        50,
        len(X),
    )
    for a, b in zip(index.search(Q, 10), back.search(Q, 10)):
        np.testing.assert_array_equal(a, b)
    clone = pickle.loads(pickle.dumps(index))
    np.testing.assert_array_equal(clone.search(Q, 10)[1], index.search(Q, 10)[1])
    # An exhaustive codes-only index round-trips too.
    flat = IndexAVQ(16, 16, 4, L2)
    flat.train(X)
    flat.add(X)
    write_index(flat, path)
    back = read_index(path)
    assert back.nlist is None and back.reorder_k is None and back.M == 16
    np.testing.assert_array_equal(back.search(Q, 5)[1], flat.search(Q, 5)[1])


def test_read_index_rejects_non_faiss_layouts(tmp_path, data):
    X, _ = data
    cos = avq_plugin.AVQIndex(metric="cosine", num_leaves=4).fit(X)
    cos.save(tmp_path / "cos.avq")
    with pytest.raises(ValueError, match="cosine"):
        read_index(tmp_path / "cos.avq")
    uneven = avq_plugin.AVQIndex(metric="dot", num_leaves=4, dims_per_block=3).fit(X)
    uneven.save(tmp_path / "uneven.avq")
    with pytest.raises(ValueError, match="uneven blocks"):
        read_index(tmp_path / "uneven.avq")


def test_bad_input(data):
    X, Q = data
    with pytest.raises(ValueError, match="must divide d"):
        IndexAVQ(16, 5)
    with pytest.raises(ValueError, match="at most 8"):
        IndexAVQ(32, 2)
    with pytest.raises(ValueError, match="nbits=8"):
        IndexAVQ(16, 8, 8)
    with pytest.raises(ValueError, match="METRIC_INNER_PRODUCT"):
        IndexAVQ(16, 8, 4, 2)
    with pytest.raises(ValueError, match="METRIC_INNER_PRODUCT"):
        IndexAVQ(16, 8, 4, "l2")
    with pytest.raises(TypeError):
        IndexAVQ(16.0, 8)
    with pytest.raises(ValueError, match="nlist"):
        IndexAVQ(16, 8, nlist=0)
    index = IndexAVQ(16, 8, 4, IP, nlist=5)
    with pytest.raises(ValueError, match="not trained"):
        index.search(Q, 5)
    with pytest.raises(ValueError, match="not trained"):
        index.add(X)
    with pytest.raises(ValueError, match="exceeds"):
        index.train(X[:3])
    index.train(X)
    index.add(X[:100])
    with pytest.raises(ValueError, match="reset"):
        index.train(X)
    with pytest.raises(ValueError, match="features"):
        index.search(Q[:, :8], 5)
    with pytest.raises(ValueError, match="2D"):
        index.search(Q[0], 5)
    bad = Q.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.search(bad, 5)
    with pytest.raises(ValueError, match="k must be"):
        index.search(Q, 0)
    with pytest.raises(TypeError):
        index.search(Q, 2.5)
    with pytest.raises(ValueError, match="entries"):
        index.add_with_ids(X[:10], np.arange(5))
    with pytest.raises(ValueError, match="already in the index"):
        index.add_with_ids(X[:1], np.array([3]))
    with pytest.raises(ValueError, match="duplicates"):
        index.add_with_ids(X[:2], np.array([7000, 7000]))
    with pytest.raises(TypeError, match="integers"):
        index.add_with_ids(X[:2], np.array([1.5, 2.5]))
    with pytest.raises(ValueError, match="nprobe"):
        index.nprobe = 0
    with pytest.raises(TypeError, match="params"):
        index.search(Q, 5, params="fast")
    with pytest.raises(TypeError, match="float_lut"):
        SearchParametersAVQ(float_lut="yes")
    with pytest.raises(TypeError, match="float_lut"):
        index.float_lut = 1
    with pytest.raises(ValueError, match="shape"):
        index.search(Q, 5, D=np.empty((2, 2), np.float32))

    class Selector:
        def is_member(self, i):
            return True

    with pytest.raises(TypeError, match="array of ids"):
        index.remove_ids(Selector())
    with pytest.raises(TypeError, match="IndexAVQ"):
        write_index(avq_plugin.AVQIndex(), "/tmp/never-written.avq")
    assert index.ntotal == 100  # nothing above changed the index


def _rebuild(blob, tag, payload):
    """The serialized index with section `tag` replaced by `payload` (lengths and CRCs redone)."""
    import struct
    import zlib

    from .conftest import parse_sections

    _, sections = parse_sections(blob)
    body = b""
    for s in sections:
        data = payload if s["tag"] == tag else bytes(blob[s["payload_offset"] : s["payload_offset"] + s["length"]])
        head = bytearray(64)
        head[:4] = s["tag"].encode()
        struct.pack_into("<QI", head, 8, len(data), zlib.crc32(data) & 0xFFFFFFFF)
        body += bytes(head) + data + b"\0" * (-len(data) % 64)
    header = bytearray(blob[:64])
    struct.pack_into("<Q", header, 24, 64 + len(body))
    struct.pack_into("<I", header, 32, zlib.crc32(bytes(header[:32])) & 0xFFFFFFFF)
    return bytes(header) + body


def test_l2_decoded_norms_persist_and_old_files_load(tmp_path, data):
    from .conftest import parse_sections

    X, Q = data
    index = IndexAVQ(16, 8, 4, L2)
    index.train(X)
    index.add(X[:1000])
    write_index(index, tmp_path / "l2.avq")
    back = read_index(tmp_path / "l2.avq")
    assert back._avq._native_params()["l2_decoded_norms"] is True
    back.add(X[1000:])  # vectors added after loading use the same formula
    D, I = back.search(Q, 1)
    rec = back.reconstruct_batch(I[:, 0])
    np.testing.assert_allclose(D[:, 0], ((Q - rec) ** 2).sum(1), atol=0.05 * D.max())
    # A version-1 file written before the field existed (PARM ending with the threshold mode,
    # where version 2 has the flag) still loads, with the exact-norm formula; an invalid flag is
    # rejected, and so is a version-2 PARM without it.
    blob = index._avq.to_bytes()
    _, sections = parse_sections(blob)
    parm = next(s for s in sections if s["tag"] == "PARM")
    payload = bytes(blob[parm["payload_offset"] : parm["payload_offset"] + parm["length"]])
    v1 = blob[:8] + (1).to_bytes(4, "little") + blob[12:]
    old = avq_plugin.AVQIndex.from_bytes(_rebuild(v1, "PARM", payload[:-4] + (0).to_bytes(4, "little")))
    assert old._native_params()["l2_decoded_norms"] is False and old.ntotal == 1000
    with pytest.raises(ValueError, match="l2 norm mode"):
        avq_plugin.AVQIndex.from_bytes(_rebuild(blob, "PARM", payload[:-4] + (2).to_bytes(4, "little")))
    with pytest.raises(ValueError, match="PARM"):
        avq_plugin.AVQIndex.from_bytes(_rebuild(blob, "PARM", payload[:-4]))
    # With re-ranking too (every new l2 index): the scan uses the decoded norms, re-scoring the
    # exact ones (tests/test_recall.py, test_l2_scan_norms_survive_remove_and_reload).
    rescored = IndexAVQ(16, 8, 4, L2, reorder_k=20)
    rescored.train(X)
    assert rescored._avq._native_params()["l2_decoded_norms"] is True


def test_docstring_examples():
    import doctest

    import avq_plugin.faiss.index

    result = doctest.testmod(avq_plugin.faiss.index)
    assert result.attempted > 0 and result.failed == 0


def test_range_search_codes_only_float_lut(data):
    """Codes only, float tables: the result is exactly the set of decoded vectors within radius."""
    X, Q = data
    index = IndexAVQ(16, 8, 4, IP, nlist=4, nprobe=4, float_lut=True)
    index.train(X)
    index.add(X)
    S = Q.astype(np.float64) @ index.reconstruct_n().astype(np.float64).T
    radius = float(np.quantile(S, 0.98))
    lims, D, I = index.range_search(Q, radius)
    for i in range(len(Q)):
        got = set(I[lims[i] : lims[i + 1]])
        want = set(np.flatnonzero(S[i] > radius))
        assert got ^ want <= set(np.flatnonzero(np.abs(S[i] - radius) < 1e-4 * max(1.0, abs(radius))))
        assert (np.diff(D[lims[i] : lims[i + 1]]) <= 0).all()


def test_native_quantizer_import_checks(data):
    """The native entry points used by from_faiss validate what they are given."""
    X, _ = data
    index = IndexAVQ(16, 8, 4, IP, nlist=4)
    index.train(X)
    native = index._avq._index  # the native entry points themselves
    centres = native.centers().reshape(4, 16)
    cb = native.codebooks()
    codes = np.zeros((2, 8), np.uint8)
    native.add_codes(codes, np.array([0, 3]), np.array([10, 11]))
    assert index.ntotal == 2 and index.get_codes([11]).tolist() == [[0] * 8]
    with pytest.raises(ValueError, match="empty index"):
        native.set_quantizer(centres, centres, cb)
    with pytest.raises(ValueError, match="out of range"):
        native.add_codes(codes, np.array([0, 4]))
    with pytest.raises(ValueError, match="4-bit"):
        native.add_codes(codes + 16, np.array([0, 1]))
    with pytest.raises(ValueError, match="already in the index"):
        native.add_codes(codes, np.array([0, 1]), np.array([11, 12]))
    bad = centres.copy()
    bad[0, 0] = np.nan
    index.reset()
    with pytest.raises(ValueError, match="NaN"):
        native.set_quantizer(bad, centres, cb)
    with pytest.raises(ValueError, match="16 \\* d"):
        native.set_quantizer(centres, centres, cb[:-1].copy())
    with pytest.raises(TypeError):
        native.set_quantizer(centres.astype(np.float64), centres, cb)
    stored = IndexAVQ(16, 8, 4, IP, reorder_k=10)
    stored.train(X)
    with pytest.raises(ValueError, match="reorder='none'"):
        stored._avq._index.add_codes(codes, np.array([0, 0]))
    assert index.ntotal == 0 and stored.ntotal == 0


def test_works_without_faiss():
    """faiss is optional: importing avq_plugin and using IndexAVQ never imports it; only the
    export/import methods need it and say how to install it."""
    import subprocess
    import sys
    import tempfile

    code = """
import sys
sys.modules["faiss"] = None  # any 'import faiss' now raises ImportError
import numpy as np
import avq_plugin
from avq_plugin import IndexAVQ
X = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
index = IndexAVQ(8, 4, 4, 1, nlist=4, nprobe=4)
index.train(X); index.add(X)
D, I = index.search(X[:3], 2)
assert I.shape == (3, 2) and I.dtype == np.int64 and (I >= 0).all()
try:
    index.to_faiss()
except ImportError as exc:
    assert "avq-plugin[faiss]" in str(exc)
else:
    raise SystemExit("to_faiss without faiss did not raise")
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir()
    )  # not the source tree: it would shadow the package
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
