"""Persistence: save/load (copying and memory-mapped), bytes, pickle and deepcopy round trips,
and the reader's defences against truncated, corrupted, foreign and newer-format files
(layout in native/src/io.h)."""

from __future__ import annotations

import copy
import hashlib
import math
import os
import pickle
import struct
import zlib

import numpy as np
import pytest

import avq_plugin

METRICS = ("dot", "cosine", "l2")
REORDERS = ("float32", "float16", "int8", "none")
# Sections whose checksums a memory-mapped load does not verify (documented in AVQIndex.load
# and io.h): the large arrays, so that mapping stays O(1) in the file size.
MMAP_UNCHECKED = {"CODE", "RVEC", "RV8_"}


def make_data(n=1500, d=20, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((12, d))
    X = C[rng.integers(0, 12, n)] * rng.uniform(0.5, 2, (n, 1)) + 0.4 * rng.standard_normal((n, d))
    return X.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    X = make_data()
    return X, make_data(n=60, seed=99)


@pytest.fixture(scope="module")
def built(data):
    """{(metric, reorder): fitted AVQIndex} with non-trivial ids and a removal applied."""
    X, _ = data
    out = {}
    ids = np.arange(len(X), dtype=np.int64) * 7 - 300  # some negative, non-contiguous ids
    for m in METRICS:
        for r in REORDERS:
            kw = dict(
                metric=m,
                reorder=r,
                num_leaves=12,
                dims_per_block=3,
                seed=5,
                training_iterations=3,
                leaves_to_search=4,
                reorder_k=40,
            )
            if m == "dot":
                kw["eta"] = 5.0
            elif m == "cosine":
                kw.update(anisotropic_threshold=0.3, eta_formula="scann")
            idx = avq_plugin.AVQIndex(**kw).fit(X, ids=ids)
            idx.remove(ids[::50])
            out[m, r] = idx
    return out


@pytest.fixture(scope="module")
def small_blob():
    """A small AVQIndex (l2, float32 reorder) for the byte-level corruption tests."""
    X = make_data(n=300, d=8, seed=3)
    idx = avq_plugin.AVQIndex(metric="l2", num_leaves=4, dims_per_block=2, seed=0).fit(X)
    return idx, idx.to_bytes(), X


PARAMS = (
    "metric",
    "num_leaves",
    "dims_per_block",
    "anisotropic_threshold",
    "eta",
    "eta_formula",
    "reorder",
    "leaves_to_search",
    "reorder_k",
    "training_iterations",
    "kmeans_iterations",
    "training_sample_size",
    "seed",
)


def assert_stats_equal(a, b):
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], float) and math.isnan(a[k]):
            assert math.isnan(b[k]), k
        else:
            assert a[k] == b[k], k


def assert_same_index(a, b, Q):
    assert type(b) is avq_plugin.AVQIndex
    assert b.is_trained and b.ntotal == a.ntotal == len(b) and b.d == a.d
    assert b.num_leaves_ == a.num_leaves_ and b.num_blocks == a.num_blocks and b.code_size == a.code_size
    np.testing.assert_array_equal(b.get_ids(), a.get_ids())
    ids = a.get_ids()
    np.testing.assert_array_equal(b.get_codes(ids), a.get_codes(ids))
    for name in PARAMS:
        if name in ("leaves_to_search", "reorder_k"):
            continue  # a loaded index keeps its budget in the native record (default_search_params)
        if name == "anisotropic_threshold" and a.anisotropic_threshold == "auto":
            continue  # a file stores the value used (compared as anisotropic_threshold_ below)
        va, vb = getattr(a, name), getattr(b, name)
        assert va == vb or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)), (name, va, vb)
    assert b.default_search_params() == a.default_search_params()
    assert b.anisotropic_threshold_ == a.anisotropic_threshold_
    assert_stats_equal(a.train_stats_, b.train_stats_)
    for kw in ({}, {"leaves_to_search": a.num_leaves_, "reorder_k": 500}):
        Da, Ia = a.search(Q, k=10, **kw)
        Db, Ib = b.search(Q, k=10, **kw)
        np.testing.assert_array_equal(Ib, Ia)
        np.testing.assert_array_equal(Db, Da)


# ------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("reorder", REORDERS)
@pytest.mark.parametrize("metric", METRICS)
def test_save_load_round_trip(built, data, metric, reorder, tmp_path):
    _, Q = data
    a = built[metric, reorder]
    path = tmp_path / "index.avq"
    a.save(path)
    assert a.to_bytes() == path.read_bytes()
    b = avq_plugin.AVQIndex.load(path)
    assert not b.is_mapped
    assert_same_index(a, b, Q)
    # str paths work as well as PathLike.
    c = avq_plugin.AVQIndex.load(str(path))
    assert_same_index(a, c, Q)
    # A loaded index saves back to the same bytes.
    assert b.to_bytes() == a.to_bytes()


@pytest.mark.parametrize("reorder", REORDERS)
@pytest.mark.parametrize("metric", METRICS)
def test_mmap_load(built, data, metric, reorder, tmp_path):
    X, Q = data
    a = built[metric, reorder]
    path = tmp_path / "index.avq"
    a.save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    b = avq_plugin.AVQIndex.load(path, mmap=True)
    assert b.is_mapped
    assert_same_index(a, b, Q)
    # Mutations copy the mapped data first; the file is never written.
    new_ids = np.arange(5) + 10**6
    b.add(X[:5] + 0.01, ids=new_ids)
    assert not b.is_mapped
    assert b.ntotal == a.ntotal + 5
    assert set(new_ids) <= set(b.get_ids())
    removed_id = a.get_ids()[3]
    assert b.remove([removed_id, new_ids[0]]) == 2
    D, I = b.search(Q, k=20, leaves_to_search=b.num_leaves_, reorder_k=500)
    assert removed_id not in I and new_ids[0] not in I
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # The original index is unaffected.
    assert removed_id in set(a.get_ids())


def test_mmap_remove_first_and_reset(built, data, tmp_path):
    X, Q = data
    a = built["l2", "int8"]
    path = tmp_path / "i.avq"
    a.save(path)
    before = path.read_bytes()
    b = avq_plugin.AVQIndex.load(path, mmap=True)
    assert b.remove(a.get_ids()[:10]) == 10 and not b.is_mapped
    c = avq_plugin.AVQIndex.load(path, mmap=True)
    c.reset()
    assert c.ntotal == 0 and not c.is_mapped
    assert path.read_bytes() == before
    c.add(X[:10])
    assert c.ntotal == 10


def test_mmap_index_survives_file_replacement(built, data, tmp_path):
    """save() replaces the file by rename, so a mapped reader keeps its own consistent copy."""
    _, Q = data
    a, other = built["dot", "float32"], built["l2", "int8"]
    path = tmp_path / "i.avq"
    a.save(path)
    b = avq_plugin.AVQIndex.load(path, mmap=True)
    other.save(path)  # overwrite while b is mapped
    Da, Ia = a.search(Q, k=10)
    Db, Ib = b.search(Q, k=10)
    np.testing.assert_array_equal(Ib, Ia)
    np.testing.assert_array_equal(Db, Da)
    assert avq_plugin.AVQIndex.load(path).metric == "l2"


@pytest.mark.parametrize("metric", METRICS)
def test_bytes_pickle_deepcopy(built, data, metric):
    _, Q = data
    a = built[metric, "float32"]
    blob = a.to_bytes()
    assert isinstance(blob, bytes) and blob[:8] == b"AVQINDEX"
    assert_same_index(a, avq_plugin.AVQIndex.from_bytes(blob), Q)
    assert_same_index(a, avq_plugin.AVQIndex.from_bytes(bytearray(blob)), Q)
    assert_same_index(a, avq_plugin.AVQIndex.from_bytes(memoryview(blob)), Q)
    for proto in (2, pickle.HIGHEST_PROTOCOL):
        assert_same_index(a, pickle.loads(pickle.dumps(a, protocol=proto)), Q)
    c = copy.deepcopy(a)
    assert_same_index(a, c, Q)
    # Independent copies.
    c.remove(c.get_ids()[:5])
    assert a.ntotal == c.ntotal + 5
    d = copy.copy(a)
    assert d.search(Q[:3], k=3)[1].shape == (3, 3)


@pytest.mark.parametrize("metric", METRICS)
def test_auto_threshold_round_trip(data, metric, tmp_path):
    """anisotropic_threshold="auto" is resolved by training into the native record, and files store
    the value (format version 2, issue 13: no "auto" UI state in the file): after fit, pickle,
    save/load and to_bytes/from_bytes, ``anisotropic_threshold_`` is the threshold used (a number
    for dot and cosine, None for l2) and every copy searches identically. The parameter stays
    "auto" on the fitted and the unpickled object (a refit resolves it again); a loaded one has the
    file's value, the only one the file knows."""
    X, Q = data
    untrained = avq_plugin.AVQIndex(metric=metric, num_leaves=8, seed=0)
    assert untrained.anisotropic_threshold == "auto"
    a = untrained.fit(X)
    c = pickle.loads(pickle.dumps(a))
    b = avq_plugin.AVQIndex.from_bytes(a.to_bytes())
    assert_stats_equal(a.train_stats_, b.train_stats_)
    np.testing.assert_array_equal(b.search(Q, k=5)[1], a.search(Q, k=5)[1])
    a.save(tmp_path / "a.avq")
    d = avq_plugin.AVQIndex.load(tmp_path / "a.avq")
    used = a.train_stats_["threshold"]
    assert a.anisotropic_threshold == c.anisotropic_threshold == "auto"
    for copy_ in (a, b, c, d):
        if metric == "l2":
            assert copy_.anisotropic_threshold_ is None
        else:
            assert copy_.anisotropic_threshold_ == used > 0
    for loaded in (b, d):
        assert loaded.anisotropic_threshold == loaded.anisotropic_threshold_
    np.testing.assert_array_equal(d.search(Q, k=5)[1], a.search(Q, k=5)[1])


@pytest.mark.parametrize("metric", METRICS)
def test_reorder_none_round_trip(metric):
    """reorder="none" stores no vectors, so the file holds fewer than d bytes per vector;
    the reader must not take that for a corrupted vector count."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1500, 64)).astype(np.float32)
    a = avq_plugin.AVQIndex(
        metric=metric, reorder="none", num_leaves=12, eta=None if metric == "l2" else 3.0, seed=0
    ).fit(X)
    b = avq_plugin.AVQIndex.from_bytes(a.to_bytes())
    np.testing.assert_array_equal(b.search(X[:20], k=5)[1], a.search(X[:20], k=5)[1])


def test_untrained_pickle_and_unfitted_roundtrip():
    a = avq_plugin.AVQIndex(metric="l2", num_leaves=3, dims_per_block=4, seed=9)
    b = pickle.loads(pickle.dumps(a))
    assert not b.is_trained and b.num_leaves == 3 and b.dims_per_block == 4 and b.seed == 9
    X = make_data(n=100, d=8)
    b.fit(X)
    assert b.ntotal == 100


def test_trained_but_empty_round_trip(data):
    X, Q = data
    a = avq_plugin.AVQIndex(metric="cosine", num_leaves=8, eta=3.0, seed=0).train(X)
    assert a.ntotal == 0
    b = avq_plugin.AVQIndex.from_bytes(a.to_bytes())
    assert b.is_trained and b.ntotal == 0
    D, I = b.search(Q[:2], k=3)
    assert (I == -1).all()
    b.add(X[:10])
    a.add(X[:10])
    np.testing.assert_array_equal(b.get_codes(np.arange(10)), a.get_codes(np.arange(10)))


def test_reset_index_round_trip(built, data):
    a = copy.deepcopy(built["l2", "float32"])
    a.reset()
    b = avq_plugin.AVQIndex.from_bytes(a.to_bytes())
    assert b.ntotal == 0 and b.is_trained


# ------------------------------------------------------------------------------- corruption
def spread_offsets(n, first=512, count=100):
    offs = set(range(min(first, n)))
    offs.update(int(x) for x in np.linspace(first, n - 1, count))
    return sorted(o for o in offs if o < n)


def test_truncation_from_bytes(small_blob):
    _, blob, _ = small_blob
    assert len(blob) > 1024
    for off in spread_offsets(len(blob)):
        with pytest.raises(ValueError):
            avq_plugin.AVQIndex.from_bytes(blob[:off])


@pytest.mark.parametrize("mmap", [False, True])
def test_truncation_load(small_blob, tmp_path, mmap):
    _, blob, _ = small_blob
    path = tmp_path / "t.avq"
    offs = spread_offsets(len(blob))
    if mmap:
        offs = offs[::4]
    for off in offs:
        path.write_bytes(blob[:off])
        with pytest.raises(ValueError, match="truncated|too short|corrupted|not an avq-plugin index"):
            avq_plugin.AVQIndex.load(path, mmap=mmap)


def test_trailing_garbage(small_blob):
    _, blob, _ = small_blob
    with pytest.raises(ValueError):
        avq_plugin.AVQIndex.from_bytes(blob + b"\0" * 64)
    with pytest.raises(ValueError):
        avq_plugin.AVQIndex.from_bytes(blob + b"x")


def flipped(blob, pos, mask=0x5A):
    b = bytearray(blob)
    b[pos] ^= mask
    return bytes(b)


def test_section_layout_is_as_documented(small_blob, helpers):
    idx, blob, _ = small_blob
    header, sections = helpers.parse_sections(blob)
    assert header["version"] == 2 == avq_plugin.build_info()["format_version"]
    assert header["endian"] == 0x01020304 and header["kind"] == 1
    assert header["crc"] == zlib.crc32(blob[:32]) & 0xFFFFFFFF
    tags = [s["tag"] for s in sections]
    for t in ("PARM", "STAT", "PCEN", "RCEN", "CBOK", "SCAL", "LSIZ", "IDS_", "CODE", "RVEC", "BIAS"):
        assert t in tags
    for s in sections:
        assert s["payload_offset"] % 64 == 0
        payload = blob[s["payload_offset"] : s["payload_offset"] + s["length"]]
        assert zlib.crc32(payload) & 0xFFFFFFFF == s["crc"], s["tag"]
        assert blob[
            s["payload_offset"] + s["length"] : s["payload_offset"] + (s["length"] + 63) // 64 * 64
        ] == b"\0" * ((-s["length"]) % 64)
    ids = np.frombuffer(blob, np.int64, idx.ntotal, [s for s in sections if s["tag"] == "IDS_"][0]["payload_offset"])
    assert sorted(ids) == sorted(idx.get_ids())


@pytest.mark.parametrize("mmap", [False, True])
def test_flipped_payload_byte(small_blob, helpers, tmp_path, mmap):
    """A flipped byte anywhere in a section payload is caught by its CRC-32. Exception: with
    mmap=True the CODE/RVEC/RV8_ payloads are not checksummed (documented: mapping must not read
    the whole file), so such a load may succeed and only serves possibly-wrong results; it must
    still never crash."""
    _, blob, X = small_blob
    _, sections = helpers.parse_sections(blob)
    path = tmp_path / "f.avq"
    checked = tolerated = 0
    for s in sections:
        if s["length"] == 0:
            continue
        start, n = s["payload_offset"], s["length"]
        for pos in sorted({start, start + n // 2, start + n - 1}):
            bad = flipped(blob, pos)
            if not mmap:
                with pytest.raises(ValueError, match="checksum"):
                    avq_plugin.AVQIndex.from_bytes(bad)
            path.write_bytes(bad)
            if mmap and s["tag"] in MMAP_UNCHECKED:
                tolerated += 1
                try:
                    idx = avq_plugin.AVQIndex.load(path, mmap=True)
                except ValueError:
                    continue
                D, I = idx.search(X[:5], k=5)  # possibly wrong results, but no crash
                assert I.shape == (5, 5)
                del idx
            else:
                with pytest.raises(ValueError, match="checksum"):
                    avq_plugin.AVQIndex.load(path, mmap=mmap)
                checked += 1
    tags = {s["tag"] for s in sections}
    assert checked >= 3 * len(tags - (MMAP_UNCHECKED if mmap else set())) - 3
    assert tolerated == (3 * len(tags & MMAP_UNCHECKED) if mmap else 0)


def test_flipped_header_bytes(small_blob, helpers):
    _, blob, _ = small_blob
    # File header: magic, version, endian marker, kind, section count, total size, CRC.
    for pos in range(36):
        with pytest.raises(ValueError):
            avq_plugin.AVQIndex.from_bytes(flipped(blob, pos))
    # Section headers: tag, payload length, payload CRC.
    _, sections = helpers.parse_sections(blob)
    for s in sections:
        h = s["header_offset"]
        for pos in list(range(h, h + 4)) + list(range(h + 8, h + 20)):
            with pytest.raises(ValueError):
                avq_plugin.AVQIndex.from_bytes(flipped(blob, pos))


def test_corrupted_content_with_valid_crc_is_rejected(small_blob, helpers):
    """A writer bug (or a hand-crafted file) with consistent checksums but impossible content
    must still be rejected: leaf sizes not adding up, ids past the recorded next id, NaN centres."""
    idx, blob, _ = small_blob
    _, sections = helpers.parse_sections(blob)
    by_tag = {s["tag"]: s for s in sections}

    def rewrite(tag, fn):
        s = by_tag[tag]
        b = bytearray(blob)
        start, n = s["payload_offset"], s["length"]
        payload = bytearray(b[start : start + n])
        fn(payload)
        b[start : start + n] = payload
        struct.pack_into("<I", b, s["header_offset"] + 16, zlib.crc32(bytes(payload)) & 0xFFFFFFFF)
        return bytes(b)

    def bump_leaf(p):
        struct.pack_into("<Q", p, 0, struct.unpack_from("<Q", p, 0)[0] + 1)

    def big_id(p):
        struct.pack_into("<q", p, 0, 2**62)

    def nan_center(p):
        struct.pack_into("<f", p, 0, float("nan"))

    def bad_metric(p):
        struct.pack_into("<I", p, 0, 7)

    def huge_d(p):
        struct.pack_into("<I", p, 4, 2**31)

    for tag, fn, match in [
        ("LSIZ", bump_leaf, "leaf sizes|leaf size"),
        ("IDS_", big_id, "next id"),
        ("PCEN", nan_center, "non-finite"),
        ("RCEN", nan_center, "non-finite"),
        ("CBOK", nan_center, "non-finite"),
        ("PARM", bad_metric, "metric"),
        ("PARM", huge_d, "dimension"),
    ]:
        with pytest.raises(ValueError, match=match):
            avq_plugin.AVQIndex.from_bytes(rewrite(tag, fn))


def test_duplicate_ids_in_file_are_rejected(small_blob, helpers):
    """A file whose IDS_ section repeats an id (consistent CRC) is corrupt: ExactIndex's reader
    rejects that, and AVQIndex's must too, or remove(id) leaves the id in the index."""
    idx, blob, _ = small_blob
    _, sections = helpers.parse_sections(blob)
    s = next(s for s in sections if s["tag"] == "IDS_")
    ids = np.frombuffer(blob, np.int64, idx.ntotal, s["payload_offset"]).copy()
    ids[1] = ids[0]
    b = bytearray(blob)
    b[s["payload_offset"] : s["payload_offset"] + ids.nbytes] = ids.tobytes()
    struct.pack_into("<I", b, s["header_offset"] + 16, zlib.crc32(ids.tobytes()) & 0xFFFFFFFF)
    with pytest.raises(ValueError, match="duplicate"):
        avq_plugin.AVQIndex.from_bytes(bytes(b))


def test_newer_format_version(small_blob, helpers, tmp_path):
    _, blob, _ = small_blob
    newer = helpers.patch_header(blob, 8, "<I", avq_plugin.build_info()["format_version"] + 1)
    with pytest.raises(ValueError, match="newer"):
        avq_plugin.AVQIndex.from_bytes(newer)
    path = tmp_path / "newer.avq"
    path.write_bytes(newer)
    for mmap in (False, True):
        with pytest.raises(ValueError, match="newer"):
            avq_plugin.AVQIndex.load(path, mmap=mmap)
    with pytest.raises(ValueError, match="version 0|corrupted"):
        avq_plugin.AVQIndex.from_bytes(helpers.patch_header(blob, 8, "<I", 0))


def test_foreign_byte_order(small_blob, helpers):
    _, blob, _ = small_blob
    with pytest.raises(ValueError, match="byte order"):
        avq_plugin.AVQIndex.from_bytes(helpers.patch_header(blob, 12, "<I", 0x04030201))


def test_bad_magic(small_blob, tmp_path):
    _, blob, _ = small_blob
    bad = b"FAISSIDX" + blob[8:]
    with pytest.raises(ValueError, match="magic"):
        avq_plugin.AVQIndex.from_bytes(bad)
    path = tmp_path / "m.avq"
    path.write_bytes(bad)
    with pytest.raises(ValueError, match="magic"):
        avq_plugin.AVQIndex.load(path)
    path.write_bytes(b"hello, world\n" * 10)
    with pytest.raises(ValueError, match="not an avq-plugin index"):
        avq_plugin.AVQIndex.load(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not an avq-plugin index"):
        avq_plugin.AVQIndex.load(path, mmap=True)
    with pytest.raises(ValueError):
        avq_plugin.AVQIndex.from_bytes(b"")


def test_from_bytes_type_check():
    with pytest.raises(TypeError, match="bytes"):
        avq_plugin.AVQIndex.from_bytes("AVQINDEX")
    with pytest.raises(TypeError, match="bytes"):
        avq_plugin.AVQIndex.from_bytes(None)


def test_wrong_index_kind(small_blob, tmp_path):
    _, blob, X = small_blob
    e = avq_plugin.ExactIndex("l2").fit(X)
    path = tmp_path / "exact.idx"
    e.save(path)
    with pytest.raises(ValueError, match="ExactIndex"):
        avq_plugin.AVQIndex.load(path)
    with pytest.raises(ValueError, match="ExactIndex"):
        avq_plugin.AVQIndex.load(path, mmap=True)
    with pytest.raises(ValueError, match="ExactIndex"):
        avq_plugin.AVQIndex.from_bytes(e.to_bytes())
    apath = tmp_path / "avq.idx"
    apath.write_bytes(blob)
    with pytest.raises(ValueError, match="AVQIndex"):
        avq_plugin.ExactIndex.load(apath)
    with pytest.raises(ValueError, match="AVQIndex"):
        avq_plugin.ExactIndex.from_bytes(blob)


def test_missing_path(tmp_path):
    with pytest.raises(OSError, match="no-such-file"):
        avq_plugin.AVQIndex.load(tmp_path / "no-such-file.avq")
    with pytest.raises(OSError):
        avq_plugin.AVQIndex.load(tmp_path / "no-such-file.avq", mmap=True)
    with pytest.raises(OSError):
        avq_plugin.ExactIndex.load(tmp_path / "no-such-file.avq")
    with pytest.raises(OSError):
        avq_plugin.AVQIndex.load(tmp_path)  # a directory


def test_save_errors(small_blob, tmp_path):
    idx, _, _ = small_blob
    with pytest.raises(OSError):
        idx.save(tmp_path / "missing-dir" / "x.avq")
    assert not (tmp_path / "missing-dir").exists()


# ------------------------------------------------------------------------------- atomic save
def test_save_is_atomic_and_replaces(built, data, tmp_path):
    _, Q = data
    a, b = built["dot", "float32"], built["cosine", "int8"]
    path = tmp_path / "idx.avq"
    a.save(path)
    assert sorted(os.listdir(tmp_path)) == ["idx.avq"]
    b.save(path)  # over an existing file
    assert sorted(os.listdir(tmp_path)) == ["idx.avq"], "temporary files left behind"
    assert path.read_bytes() == b.to_bytes()
    loaded = avq_plugin.AVQIndex.load(path)
    assert loaded.metric == "cosine" and loaded.reorder == "int8"
    np.testing.assert_array_equal(loaded.search(Q, k=5)[1], b.search(Q, k=5)[1])
    e = avq_plugin.ExactIndex("dot").fit(make_data(n=50))
    e.save(path)
    assert sorted(os.listdir(tmp_path)) == ["idx.avq"]


def test_failed_save_leaves_old_file(small_blob, tmp_path):
    """If the target cannot be replaced (here: it is a non-empty directory), the save fails with
    OSError and leaves no temporary file."""
    idx, _, _ = small_blob
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        idx.save(target)
    assert sorted(os.listdir(tmp_path)) == ["busy"]
    assert (target / "keep").read_text() == "x"


# ------------------------------------------------------------------------------- ExactIndex
@pytest.mark.parametrize("metric", METRICS)
def test_exact_index_round_trip(metric, data, tmp_path):
    X, Q = data
    ids = np.arange(len(X)) * 3 + 11
    e = avq_plugin.ExactIndex(metric).fit(X, ids=ids)
    e.remove(ids[:7])
    D0, I0 = e.search(Q, k=10)
    path = tmp_path / "e.idx"
    e.save(path)
    assert sorted(os.listdir(tmp_path)) == ["e.idx"]
    for other in (
        avq_plugin.ExactIndex.load(path),
        avq_plugin.ExactIndex.from_bytes(e.to_bytes()),
        pickle.loads(pickle.dumps(e)),
        copy.deepcopy(e),
    ):
        assert other.metric == metric and other.ntotal == e.ntotal and other.d == e.d
        np.testing.assert_array_equal(other.get_ids(), e.get_ids())
        D1, I1 = other.search(Q, k=10)
        np.testing.assert_array_equal(I1, I0)
        np.testing.assert_array_equal(D1, D0)
        # Default ids continue after the largest id, as in the original.
        other.add(X[:1])
        assert other.get_ids()[-1] == ids.max() + 1


def test_exact_index_corruption(data, helpers):
    X, _ = data
    blob = avq_plugin.ExactIndex("cosine").fit(X[:200]).to_bytes()
    for off in spread_offsets(len(blob), first=256, count=60):
        with pytest.raises(ValueError):
            avq_plugin.ExactIndex.from_bytes(blob[:off])
    header, sections = helpers.parse_sections(blob)
    assert header["kind"] == 2 and {s["tag"] for s in sections} >= {"PARM", "IDS_", "VECS"}
    positions = list(range(36))
    for s in sections:
        positions += [
            s["payload_offset"],
            s["payload_offset"] + s["length"] // 2,
            s["payload_offset"] + s["length"] - 1,
        ]
    for pos in positions:
        with pytest.raises(ValueError):
            avq_plugin.ExactIndex.from_bytes(flipped(blob, pos))
