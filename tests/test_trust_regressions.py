"""Regression tests for the twelve defects of issue 11 ("Trust"), one test per defect.

Tests that could hang, crash or exhaust memory before the fix run their scenario in a
subprocess with a timeout (and, where memory is at stake, an address-space limit).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import zlib

import numpy as np
import pytest

import avq_plugin

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def run_script(code, timeout=120, mem_limit_bytes=None):
    """Run code in a fresh interpreter from a neutral directory; returns CompletedProcess.

    ``mem_limit_bytes`` caps the address space (RLIMIT_AS); under AddressSanitizer, whose shadow
    memory needs terabytes of address space, the same cap is ASan's own ``malloc_limit_mb``.
    """
    preexec = None
    env = dict(os.environ)
    if mem_limit_bytes is not None and "libasan" in env.get("LD_PRELOAD", ""):
        limit = f"malloc_limit_mb={mem_limit_bytes >> 20}:allocator_may_return_null=1"
        env["ASAN_OPTIONS"] = f"{env.get('ASAN_OPTIONS', '')}:{limit}".lstrip(":")
    elif mem_limit_bytes is not None:

        def preexec():
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (mem_limit_bytes, mem_limit_bytes))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
        env=env,
        preexec_fn=preexec,
    )


def sections(blob):
    out = {}
    off = 64
    (nsec,) = struct.unpack_from("<I", blob, 20)
    for _ in range(nsec):
        tag = bytes(blob[off : off + 4]).decode("ascii")
        (length,) = struct.unpack_from("<Q", blob, off + 8)
        out[tag] = (off, off + 64, length)
        off += 64 + (length + 63) // 64 * 64
    return out


def patch_section(blob, tag, offset, fmt, value):
    """Overwrite a field of a section's payload and recompute that section's CRC-32."""
    b = bytearray(blob)
    hdr, payload, length = sections(b)[tag]
    struct.pack_into(fmt, b, payload + offset, value)
    struct.pack_into("<I", b, hdr + 16, zlib.crc32(bytes(b[payload : payload + length])) & 0xFFFFFFFF)
    return bytes(b)


def data(n=2000, d=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# ------------------------------------------------------------------------------------- 1
def test_deadlock_gil_reacquired_under_index_lock():
    # A writer thread adds (with a progress callback) while the main thread reads every
    # property that takes the index lock; the callback itself also reads them. Before the fix
    # add/train held the exclusive lock and re-took the GIL for Ctrl-C checks and progress: the
    # reader, holding the GIL, waited for the lock forever.
    res = run_script(
        """
        import faulthandler, sys, threading
        import numpy as np, avq_plugin
        faulthandler.dump_traceback_later(60, exit=True)
        X = np.random.default_rng(0).standard_normal((5000, 32)).astype(np.float32)
        idx = avq_plugin.AVQIndex(num_leaves=50, seed=0).fit(X)
        seen = []
        def progress(stage, done, total, info):
            seen.append((idx.ntotal, len(idx.get_ids())))      # runs while add is under way
        idx.progress = progress
        done = threading.Event()
        def writer():
            for _ in range(40):
                idx.add(X[:500])
            idx.train(X)                                        # train too
            idx.add(X)
            done.set()
        t = threading.Thread(target=writer)
        t.start()
        reads = 0
        while not done.is_set():
            idx.ntotal; len(idx); idx.memory_usage(); idx.get_ids(); repr(idx)
            idx.to_bytes() if reads % 50 == 0 else None
            idx.is_trained; idx.num_leaves_; idx.train_stats_
            reads += 1
        t.join()
        assert idx.ntotal == 5000, idx.ntotal
        assert seen, "the progress callback never ran"
        print("ok", reads)
        """,
        timeout=180,
    )
    assert res.returncode == 0 and res.stdout.startswith("ok"), (res.stdout, res.stderr[-3000:])


# ------------------------------------------------------------------------------------- 2
def test_reorder_k_out_of_bounds_write():
    res = run_script(
        """
        import numpy as np, avq_plugin
        X = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
        idx = avq_plugin.AVQIndex(num_leaves=20, seed=0).fit(X)
        Q = X[:200]
        ref = idx.search(Q, 10, leaves_to_search=20, reorder_k=2000)
        # Values no uint32 default can hold are meaningless: ValueError naming the parameter.
        for rk in (2**64 - 1, 2**63, 2**40):
            try:
                idx.search(Q, 10, leaves_to_search=20, reorder_k=rk)
            except ValueError as e:
                assert "reorder_k" in str(e), e
            else:
                raise AssertionError(f"reorder_k={rk} accepted")
        # Large but valid: clamped to what the index holds, same results as reorder_k=ntotal.
        for rk in (10**9, 2**32 - 1):
            D, I = idx.search(Q, 10, leaves_to_search=20, reorder_k=rk)
            assert np.array_equal(I, ref[1]) and np.array_equal(D, ref[0]), rk
        # The native layer bounds sizes itself (it is reachable without the Python checks).
        for rk in (2**64 - 1, 2**63):
            D, I = idx._index.search(Q, 10, 20, rk, 1)
            assert np.array_equal(I, ref[1]), rk
        print("ok")
        """,
        timeout=120,
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", (res.returncode, res.stdout, res.stderr[-3000:])


# ------------------------------------------------------------------------------------- 3
def test_unbounded_scratch_memory(tmp_path):
    path = tmp_path / "idx.avq"
    X = data()
    avq_plugin.AVQIndex(num_leaves=20, seed=0).fit(X).save(path)
    blob = path.read_bytes()
    # A file whose stored default reorder_k is 2**32 - 1: loads and searches (no bad_alloc).
    (path.parent / "absurd.avq").write_bytes(patch_section(blob, "PARM", 108, "<I", 2**32 - 1))
    res = run_script(
        f"""
        import resource, time
        import numpy as np, avq_plugin
        X = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
        idx = avq_plugin.AVQIndex(num_leaves=20, seed=0).fit(X)
        idx.search(X[:1], 5)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        D, I = idx.search(X[:1], 5, reorder_k=10**7)
        dt = time.perf_counter() - t0
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        assert grown < 32, f"search with reorder_k=1e7 grew the peak RSS by {{grown:.0f}} MB"
        assert dt < 1.0, dt
        loaded = avq_plugin.AVQIndex.load({str(path.parent / "absurd.avq")!r})
        assert loaded.default_search_params()[1] == 2**32 - 1
        D2, I2 = loaded.search(X[:5], 5)
        assert (I2 >= 0).all()
        print("ok")
        """,
        timeout=120,
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", (res.stdout, res.stderr[-3000:])


# ------------------------------------------------------------------------------------- 4
def test_unlocked_const_accessors():
    # During a first training (exclusive lock held by the native worker), the accessors must
    # wait for the lock and then see the finished state, never the half-built one.
    X = data(30000, 32)
    p = avq_plugin._native.IndexParams()
    p.metric, p.d, p.num_leaves, p.avq_iterations, p.kmeans_iterations = "l2", 32, 100, 1, 25
    native = avq_plugin._native.Index(p)
    started = threading.Event()

    def progress(stage, done, total, info):
        started.set()

    t = threading.Thread(target=lambda: native.train(X, 1, progress))
    t.start()
    assert started.wait(60)
    observed = (native.is_trained, native.num_leaves, native.centers().size, native.codebooks().size, native.params())
    t.join()
    assert observed[:4] == (True, 100, 100 * 32, 16 * 32), observed[:4]
    assert observed[4].d == 32


# ------------------------------------------------------------------------------------- 5
def test_masked_arrays_bypass_validation():
    X = data(500, 8)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    masked = np.ma.masked_invalid(Xn)
    for est in (avq_plugin.AVQIndex(num_leaves=5), avq_plugin.ExactIndex()):
        with pytest.raises(ValueError, match="NaN"):
            est.fit(masked)
    idx = avq_plugin.AVQIndex(num_leaves=5).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        idx.add(masked)
    with pytest.raises(ValueError, match="NaN"):
        idx.search(np.ma.masked_invalid(Xn[:5]), 3)
    with pytest.raises(ValueError, match="NaN"):
        avq_plugin.ExactIndex().fit(X).search(np.ma.masked_invalid(Xn[:5]), 3)
    # Masked ids: the data beneath the mask is what counts (-1 is reserved).
    with pytest.raises(ValueError):
        avq_plugin.ExactIndex().fit(X[:2], ids=np.ma.masked_equal(np.array([-1, 5]), -1))


# ------------------------------------------------------------------------------------- 6
def test_exact_index_auto_ids_wrap_around():
    X = data(4, 4)
    for cls in (avq_plugin.ExactIndex, avq_plugin.AVQIndex):  # one rule for both index types
        idx = cls(num_leaves=1) if cls is avq_plugin.AVQIndex else cls()
        idx.fit(X[:1], ids=[INT64_MAX - 3])
        with pytest.raises(ValueError, match="ids"):
            idx.add(X[1:4])  # would need ids up to 2**63 (wraps to -2**63)
        assert idx.get_ids().tolist() == [INT64_MAX - 3]
        idx.add(X[1:3])  # the last two automatic ids
        assert sorted(idx.get_ids().tolist()) == [INT64_MAX - 3, INT64_MAX - 2, INT64_MAX - 1]
        with pytest.raises(ValueError, match="ids"):
            idx.add(X[3:4])
        idx.add(X[3:4], ids=[INT64_MAX])  # explicit ids are still possible
        assert (idx.get_ids() >= 0).all() and idx.ntotal == 4


# ------------------------------------------------------------------------------------- 7
@pytest.mark.parametrize("metric", ["dot", "cosine", "l2"])
def test_degenerate_data_empty_leaves(metric):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((5, 8)).astype(np.float32)
    for X in (np.repeat(base[:1], 600, axis=0), np.repeat(base, 120, axis=0)):
        idx = avq_plugin.AVQIndex(metric=metric, num_leaves=30, seed=0).fit(X)
        sizes = idx._index.leaf_sizes()
        distinct = len(np.unique(X, axis=0))
        # k-means splits the largest cluster into empty ones: every distinct row has a leaf.
        assert (sizes > 0).sum() >= min(distinct, 30), sizes
        Q = np.concatenate([base, rng.standard_normal((20, 8)).astype(np.float32)])
        for k in (1, 10, 700):
            for lts in (None, 1):
                D, I = idx.search(Q, k, leaves_to_search=lts)
                assert ((I >= 0).sum(axis=1) == min(k, len(X))).all(), (k, lts, I[:, :5])
        D, I = idx._index.search_float_lut(Q, 10, 1, 1)
        assert (I >= 0).all()
    # 20 distinct rows, 20 copies each, 20 leaves: k-means gives each distinct row its own leaf
    # (an empty cluster takes the farthest point of the largest one).
    rng = np.random.default_rng(1)
    rng.standard_normal((10, 8))
    X = np.repeat(rng.standard_normal((20, 8)).astype(np.float32), 20, axis=0)
    for seed in range(3):
        sizes = avq_plugin.AVQIndex(metric=metric, num_leaves=20, seed=seed).fit(X)._index.leaf_sizes()
        assert (sizes == 20).all(), (seed, sizes)


# ------------------------------------------------------------------------------------- 8
def test_oversized_parameters_fail_late():
    X = data(300, 8)
    for name in ("leaves_to_search", "reorder_k", "num_threads", "training_sample_size", "num_leaves"):
        for v in (2**32, 2**64):
            with pytest.raises(ValueError, match=name):
                avq_plugin.AVQIndex(**{name: v})
    idx = avq_plugin.AVQIndex(num_leaves=4, seed=0).fit(X)
    for name in ("leaves_to_search", "reorder_k", "num_threads"):
        with pytest.raises(ValueError, match=name):
            idx.search(X[:2], 3, **{name: 2**32})
        with pytest.raises(ValueError, match=name):
            setattr(idx, name, 2**40)  # setters validate too
    with pytest.raises(ValueError, match=r"\bk\b"):
        idx.search(X[:2], 2**40)
    with pytest.raises(ValueError, match="num_threads"):
        avq_plugin.ExactIndex(num_threads=2**32)
    with pytest.raises(ValueError, match="num_threads"):
        avq_plugin.ExactIndex().fit(X).search(X[:2], 3, num_threads=2**32)
    # The limits are defined once, in the native module, and used by the Python checks.
    limits = avq_plugin._native.limits()
    assert limits["max_reorder_k"] == 2**32 - 1
    with pytest.raises(ValueError, match="leaves_to_search"):
        avq_plugin.AVQIndex(leaves_to_search=limits["max_leaves_to_search"] + 1)
    avq_plugin.AVQIndex(reorder_k=limits["max_reorder_k"], num_threads=limits["max_threads"])
    pytest.importorskip("sklearn")
    from avq_plugin import AVQNearestNeighbors

    for name in ("leaves_to_search", "reorder_k", "num_leaves", "n_jobs", "n_neighbors"):
        with pytest.raises(ValueError, match=name):
            AVQNearestNeighbors(algorithm="avq", **{name: 2**40}).fit(X)
    nn = AVQNearestNeighbors(algorithm="avq", n_neighbors=3).fit(X)
    with pytest.raises(ValueError, match="n_neighbors"):
        nn.kneighbors(X[:2], n_neighbors=2**40)


# ------------------------------------------------------------------------------------- 9
def test_extreme_magnitudes():
    X = data(500, 16)
    lim = avq_plugin._native.limits()
    Q0 = X[:20]
    for metric in ("dot", "l2"):
        D0, I0 = avq_plugin.ExactIndex(metric=metric).fit(X).search(Q0, 5)
        # Too large for float32 arithmetic: rejected everywhere (data, queries), naming the range.
        for est in (avq_plugin.AVQIndex(metric=metric, num_leaves=5), avq_plugin.ExactIndex(metric=metric)):
            with pytest.raises(ValueError, match="supported range"):
                est.fit(X * 1e19)
        idx = avq_plugin.AVQIndex(metric=metric, num_leaves=5, seed=0).fit(X)
        with pytest.raises(ValueError, match="supported range"):
            idx.search(Q0 * 1e19, 5)
        with pytest.raises(ValueError, match="supported range"):
            idx._index.search(np.ascontiguousarray(Q0 * 1e19), 5, 5, 50, 1)  # the native layer checks too
        with pytest.raises(ValueError, match="supported range"):
            avq_plugin.ExactIndex(metric=metric).fit(X).search(Q0 * 1e19, 5)
        # Training data that is tiny as a whole: rejected by the quantizer (not silently poor).
        with pytest.raises(ValueError, match="supported range"):
            avq_plugin.AVQIndex(metric=metric, num_leaves=5).fit(X * 1e-20)
        # The edges of the range work and give the neighbours of the unscaled data.
        top = np.abs(X).max()
        for s in (0.99 * lim["max_abs_value"] / top, 1.01 * lim["min_data_norm"] / np.linalg.norm(X, axis=1).max()):
            Xs = (X.astype(np.float64) * s).astype(np.float32)
            D, I = avq_plugin.ExactIndex(metric=metric).fit(Xs).search(Xs[:20], 5)
            assert (I[:, 0] == I0[:, 0]).all() and np.isfinite(D).all(), s
            D, I = avq_plugin.AVQIndex(metric=metric, num_leaves=5, seed=0).fit(Xs).search(Xs[:20], 5, 5, 500)
            assert (I[:, 0] == I0[:, 0]).mean() >= 0.9 and np.isfinite(D).all(), s
    # Small dot queries rank exactly as their unscaled version (scaled internally by 2**e).
    idx = avq_plugin.AVQIndex(metric="dot", num_leaves=5, seed=0).fit(X)
    D, I = idx.search(Q0, 5)
    for e in (-70, -130):
        Dt, It = idx.search(Q0 * np.float32(2.0**e), 5)
        assert np.array_equal(I, It), e
        np.testing.assert_allclose(Dt.astype(np.float64), D.astype(np.float64) * 2.0**e, rtol=1e-6, atol=1e-44)
    # Exact search of small data stays exact (subnormal products are computed, not flushed).
    D, I = avq_plugin.ExactIndex(metric="dot").fit(X * np.float32(1e-20)).search(Q0, 5)
    assert (I[:, 0] == avq_plugin.ExactIndex(metric="dot").fit(X).search(Q0, 5)[1][:, 0]).all()
    # Cosine is scale-free: any finite nonzero rows are handled.
    D0, I0 = avq_plugin.ExactIndex(metric="cosine").fit(X).search(Q0, 5)
    for scale in (1e19, 1e-20):
        D, I = avq_plugin.ExactIndex(metric="cosine").fit(X * scale).search(Q0 * scale, 5)
        assert (I == I0).all()
        D, I = avq_plugin.AVQIndex(metric="cosine", num_leaves=5, seed=0).fit(X * scale).search(Q0, 5, 5, 500)
        assert (I[:, 0] == I0[:, 0]).mean() >= 0.9


# ------------------------------------------------------------------------------------ 10
def test_save_over_mapped_file(tmp_path):
    path = tmp_path / "idx.avq"
    X = data(2000, 16)
    a = avq_plugin.AVQIndex(num_leaves=20, seed=0).fit(X)
    a.save(path)
    mapped = avq_plugin.AVQIndex.load(path, mmap=True)
    assert mapped.is_mapped
    ref = mapped.search(X[:50], 10)
    # Another index saved over the mapped file: save() writes a new file and renames it, so
    # the mapping keeps the old inode and its results.
    avq_plugin.AVQIndex(num_leaves=7, seed=1).fit(data(700, 16, seed=3)).save(path)
    again = mapped.search(X[:50], 10)
    assert np.array_equal(ref[1], again[1]) and np.array_equal(ref[0], again[0])
    assert avq_plugin.AVQIndex.load(path).ntotal == 700
    # A mapped index saved over its own file.
    mapped.save(path)
    assert np.array_equal(avq_plugin.AVQIndex.load(path, mmap=True).search(X[:50], 10)[1], ref[1])
    assert np.array_equal(mapped.search(X[:50], 10)[1], ref[1])
    assert sorted(os.listdir(tmp_path)) == ["idx.avq"]


# ------------------------------------------------------------------------------------ 11
def test_leftover_temp_files_and_durability(tmp_path):
    path = tmp_path / "idx.avq"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f"idx.avq.tmp-{dead.pid}-0", tmp_path / f"idx.avq.tmp-{dead.pid}-17"]
        keep = [
            tmp_path / f"idx.avq.tmp-{alive.pid}-0",  # a save under way in another process
            tmp_path / f"other.avq.tmp-{dead.pid}-0",  # another path's
            tmp_path / f"idx.avq.tmp-{dead.pid}-x",  # not our naming
            tmp_path / "idx.avq.tmp-notapid-0",
        ]
        for p in stale + keep:
            p.write_bytes(b"partial")
        X = data(300, 8)
        for est in (avq_plugin.AVQIndex(num_leaves=4).fit(X), avq_plugin.ExactIndex().fit(X)):
            est.save(path)
            assert not any(p.exists() for p in stale)
            assert all(p.exists() for p in keep)
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.skipif(
    shutil.which("strace") is None, reason="strace observes the fsync calls (.ci/run installs it where missing)"
)
def test_save_fsyncs_file_and_directory(tmp_path):
    # Durability (issue 11, defect 11): the file is fsynced before the rename and its directory after it.
    log = tmp_path / "strace.log"
    code = (
        "import numpy as np, avq_plugin; "
        f"avq_plugin.ExactIndex().fit(np.eye(4, dtype=np.float32)).save({str(tmp_path / 'd.avq')!r})"
    )
    res = subprocess.run(
        [
            "strace",
            "-f",
            "-o",
            str(log),
            "-e",
            "trace=openat,fsync,rename,renameat,renameat2",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    assert res.returncode == 0, res.stderr  # strace itself failing (e.g. ptrace forbidden) fails too
    lines = [ln for ln in log.read_text().splitlines() if "d.avq" in ln or "fsync(" in ln or str(tmp_path) in ln]
    text = "\n".join(lines)
    ren = next(i for i, ln in enumerate(lines) if "rename" in ln and "d.avq.tmp-" in ln)
    assert any("fsync(" in ln for ln in lines[:ren]), text
    dir_open = [ln for ln in lines[ren:] if "O_DIRECTORY" in ln and str(tmp_path) in ln]
    assert dir_open, text
    fd = dir_open[0].rsplit("=", 1)[1].strip()
    assert any(f"fsync({fd})" in ln for ln in lines[ren:]), text


# ------------------------------------------------------------------------------------ 12
def test_loader_consistency():
    X = data(500, 8)
    avq = avq_plugin.AVQIndex(metric="l2", num_leaves=4, seed=0).fit(X).to_bytes()
    exact = avq_plugin.ExactIndex().fit(X).to_bytes()
    avq8 = avq_plugin.AVQIndex(num_leaves=4, reorder="int8", seed=0).fit(X).to_bytes()
    bad = {
        "AVQ RVEC NaN": (avq_plugin.AVQIndex, patch_section(avq, "RVEC", 40, "<f", float("nan"))),
        "AVQ RVEC inf": (avq_plugin.AVQIndex, patch_section(avq, "RVEC", 0, "<f", float("inf"))),
        "AVQ id -1": (avq_plugin.AVQIndex, patch_section(avq, "IDS_", 8, "<q", -1)),
        "AVQ id INT64_MIN": (avq_plugin.AVQIndex, patch_section(avq, "IDS_", 8, "<q", INT64_MIN)),
        "AVQ negative next id": (avq_plugin.AVQIndex, patch_section(avq, "PARM", 88, "<q", -5)),
        "AVQ absurd iterations": (avq_plugin.AVQIndex, patch_section(avq, "PARM", 40, "<I", 2**32 - 1)),
        "AVQ positive BIAS": (avq_plugin.AVQIndex, patch_section(avq, "BIAS", 4, "<f", 1.0)),
        "AVQ STAT NaN": (avq_plugin.AVQIndex, patch_section(avq, "STAT", 0, "<d", float("nan"))),
        "AVQ int8 -128": (avq_plugin.AVQIndex, patch_section(avq8, "RV8_", 3, "<b", -128)),
        "Exact VECS NaN": (avq_plugin.ExactIndex, patch_section(exact, "VECS", 12, "<f", float("nan"))),
        "Exact id -1": (avq_plugin.ExactIndex, patch_section(exact, "IDS_", 0, "<q", -1)),
        "Exact id INT64_MIN": (avq_plugin.ExactIndex, patch_section(exact, "IDS_", 0, "<q", INT64_MIN)),
        "Exact id beyond next id": (avq_plugin.ExactIndex, patch_section(exact, "IDS_", 0, "<q", 10**6)),
    }
    for what, (cls, blob) in bad.items():
        with pytest.raises(ValueError, match="corrupted"):
            cls.from_bytes(blob)
            raise AssertionError(f"{what}: accepted")
    # The same rule in add: ids that a file may not hold cannot be added either.
    for cls in (avq_plugin.AVQIndex, avq_plugin.ExactIndex):
        idx = cls(num_leaves=4).fit(X) if cls is avq_plugin.AVQIndex else cls().fit(X)
        for bad_id in (-1, INT64_MIN):
            with pytest.raises(ValueError, match="ids"):
                idx.add(X[:1], ids=[bad_id])
    # Type-checked before anything is allocated (bytes(10**11) would be 100 GB).
    res = run_script(
        """
        import avq_plugin
        for cls in (avq_plugin.ExactIndex, avq_plugin.AVQIndex):
            for arg in (10**11, 3.5, "abc", None):
                try:
                    cls.from_bytes(arg)
                except TypeError:
                    pass
                else:
                    raise AssertionError((cls, arg))
        print("ok")
        """,
        timeout=60,
        mem_limit_bytes=3 << 30,
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", (res.stdout, res.stderr[-2000:])
