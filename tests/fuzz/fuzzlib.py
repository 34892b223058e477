"""Fuzz targets for avq_plugin: the file loader and the search/add/remove API.

Two targets, each a pure function of its input so any finding replays exactly:

- ``loader``: bytes -> ``AVQIndex``/``ExactIndex`` ``from_bytes`` (and ``load``, with and without
  mmap). Inputs are structure-aware mutations of a seed corpus of valid files (the golden files of
  tests/data/format_v1 and a few more shapes built here): byte flips, interesting integers and
  floats written into section payloads, section lengths, order, duplication and removal, header
  fields, truncation and splicing of same-tag sections across files, after which the CRCs are
  usually recomputed so the mutation reaches the parser behind them. Contract: a file is either
  rejected with ValueError/OSError, or loads into an index that answers every accessor, searches
  with valid results and round-trips through ``to_bytes`` to the same results.
- ``api``: a JSON-able operation (search/add/remove/reset/round trip on a small index, or a
  constructor call) with arguments drawn from interesting values (sizes near 2**31, 2**32, 2**63,
  2**64, negative, bool, float, numpy scalars, strings; arrays of every dtype, layout, shape, NaN,
  inf, zero rows). Contract: a call either succeeds with valid results or raises ValueError or
  TypeError whose message names the parameter; never another exception, a crash or a hang.

``KNOWN_OPEN`` lists the defects of issue 11 whose fix has not landed; inputs that trigger them
are recognised (before running, for those that crash or run away; after, for the others) and
counted apart instead of failing the run. Empty it as the fixes land (see tests/fuzz/README.md).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np

import avq_plugin

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
GOLDEN = REPO / "tests" / "data" / "format_v1"
REGRESSIONS = HERE / "regressions"

# Defects of issue 11 still open on this branch. Remove a number when its fix lands: the fuzzer
# then runs the inputs that trigger it and fails on them, and their committed regression inputs
# must pass (tests/test_fuzz_regressions.py).
KNOWN_OPEN: frozenset[int] = frozenset()

METRICS = ("dot", "cosine", "l2")
REORDERS = ("none", "int8", "float32")
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


# Memory a fuzz or replay process may use: an input that makes the index allocate without bound fails
# with MemoryError (a finding) instead of swapping out the machine.
MEMORY_LIMIT_MB = 6144


def under_asan():
    return "libasan" in os.environ.get("LD_PRELOAD", "")


def child_env():
    """Environment for a fuzz/replay child: under ASan, a heap limit for its allocator (best effort: memory
    that bypasses the heap is not counted, so inputs of open run-away defects are never run under ASan)."""
    env = dict(os.environ)
    if under_asan() and "malloc_limit_mb" not in env.get("ASAN_OPTIONS", ""):
        env["ASAN_OPTIONS"] = f"{env.get('ASAN_OPTIONS', '')}:malloc_limit_mb={MEMORY_LIMIT_MB // 4}".lstrip(":")
    return env


def limit_memory():
    """In the child itself: an address-space limit (not under ASan, whose shadow memory needs terabytes)."""
    if not under_asan():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_MB << 20, resource.getrlimit(resource.RLIMIT_AS)[1]))


class Finding(Exception):
    """A broken contract (not a crash): the message says which."""


class Known(Exception):
    """The input triggers a defect listed in KNOWN_OPEN (its number is args[0])."""


def known(defect, why):
    if defect in KNOWN_OPEN:
        raise Known(defect, why)


# ------------------------------------------------------------------------------------ file format
def crc(b):
    return zlib.crc32(bytes(b)) & 0xFFFFFFFF


def parse(blob):
    """Tolerant split into (header bytes, [(tag, flags, payload)]) or None when not parseable."""
    if len(blob) < 64:
        return None
    nsec = struct.unpack_from("<I", blob, 20)[0]
    out, off = [], 64
    for _ in range(min(nsec, 64)):
        if off + 64 > len(blob):
            return None
        tag = bytes(blob[off : off + 4])
        flags = struct.unpack_from("<I", blob, off + 4)[0]
        length = struct.unpack_from("<Q", blob, off + 8)[0]
        if off + 64 + length > len(blob):
            return None
        out.append([tag, flags, bytearray(blob[off + 64 : off + 64 + length])])
        off += 64 + (length + 63) // 64 * 64
    return bytearray(blob[:64]), out


def assemble(header, sections, *, fix_total=True, fix_crc=True):
    body = bytearray()
    for tag, flags, payload in sections:
        sh = bytearray(64)
        sh[:4] = tag[:4].ljust(4, b"\0")
        struct.pack_into("<IQI", sh, 4, flags, len(payload), crc(payload) if fix_crc else 0)
        body += sh + payload + bytes(-len(payload) % 64)
    h = bytearray(header)
    if fix_total:
        struct.pack_into("<I", h, 20, len(sections))
        struct.pack_into("<Q", h, 24, 64 + len(body))
    if fix_crc:
        struct.pack_into("<I", h, 32, crc(h[:32]))
    return bytes(h + body)


def refresh_crcs(blob):
    """Recompute the header CRC and every section CRC that can be located."""
    b = bytearray(blob)
    if len(b) < 64:
        return bytes(b)
    struct.pack_into("<I", b, 32, crc(b[:32]))
    off = 64
    for _ in range(min(struct.unpack_from("<I", b, 20)[0], 64)):
        if off + 64 > len(b):
            break
        length = struct.unpack_from("<Q", b, off + 8)[0]
        if off + 64 + length > len(b):
            break
        struct.pack_into("<I", b, off + 16, crc(b[off + 64 : off + 64 + length]))
        off += 64 + (length + 63) // 64 * 64
    return bytes(b)


# ------------------------------------------------------------------------------------ seed corpus
def _extra_seeds():
    """Valid files beyond the golden ones: other shapes and states of the index."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((96, 5)).astype(np.float32)
    out = []
    for metric, dpb, reorder in (("l2", 1, "float32"), ("dot", 8, "int8"), ("cosine", 3, "none")):
        index = avq_plugin.AVQIndex(
            metric, num_leaves=3, dims_per_block=dpb, reorder=reorder, num_threads=1, kmeans_iterations=3
        ).fit(X)
        out.append(index.to_bytes())
        index.reset()  # trained but empty
        out.append(index.to_bytes())
    out.append(avq_plugin.AVQIndex("dot", num_leaves=1, num_threads=1).fit(X[:4, :1]).to_bytes())  # d = 1
    out.append(avq_plugin.ExactIndex("l2").fit(X[:3]).to_bytes())
    return out


def seed_corpus():
    """Valid index files: every golden file (every metric x reorder mode, ExactIndex) and more."""
    seeds = [p.read_bytes() for p in sorted(GOLDEN.glob("*.avq"))]
    assert len(seeds) >= 12, f"golden files missing in {GOLDEN}"
    return seeds + _extra_seeds()


# ------------------------------------------------------------------------------------ mutations
INTERESTING_INTS = (0, 1, 2, 3, 7, 8, 15, 16, 63, 64, 255, 256, 4095, 4096, 65535, 65536, 2**20, 2**20 + 1,
                    2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1,
                    2**64 - 2, 10**11)  # fmt: skip
INTERESTING_FLOATS = (0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e-45, 1e-38, 1e19, 3.4e38, -3.4e38)


def mutate_file(rng, seeds):
    """One mutated file from the seed corpus (a deterministic function of rng's state)."""
    blob = seeds[rng.integers(len(seeds))]
    parsed = parse(blob)
    header, sections = parsed
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(12))
        sec = sections[rng.integers(len(sections))] if sections else None
        if op <= 3 and sec is not None and len(sec[2]) >= 4:  # an integer field of a payload
            width = 8 if (rng.random() < 0.5 and len(sec[2]) >= 8) else 4
            pos = int(rng.integers(0, (len(sec[2]) - width) // 4 + 1)) * 4
            v = int(INTERESTING_INTS[rng.integers(len(INTERESTING_INTS))])
            if rng.random() < 0.3:
                old = int.from_bytes(sec[2][pos : pos + width], "little")
                v = old + int(rng.integers(-3, 4))
            sec[2][pos : pos + width] = (v % (1 << (8 * width))).to_bytes(width, "little")
        elif op == 4 and sec is not None and len(sec[2]) >= 4:  # a float field
            pos = int(rng.integers(0, len(sec[2]) // 4)) * 4
            struct.pack_into("<f", sec[2], pos, INTERESTING_FLOATS[rng.integers(len(INTERESTING_FLOATS))])
        elif op == 5 and sec is not None and len(sec[2]):  # random bytes
            for _ in range(int(rng.integers(1, 8))):
                sec[2][rng.integers(len(sec[2]))] = int(rng.integers(256))
        elif op == 6 and sec is not None:  # resize a payload
            n = len(sec[2])
            new = int(rng.choice([0, max(0, n - 1), max(0, n - 4), max(0, n - 8), n + 4, n + 8, n // 2, 2 * n]))
            sec[2] = sec[2][:new] + bytearray(max(0, new - n))
        elif op == 7 and len(sections) > 1:  # drop, duplicate or move a section
            i = int(rng.integers(len(sections)))
            kind = rng.integers(3)
            if kind == 0:
                sections.pop(i)
            elif kind == 1:
                sections.insert(int(rng.integers(len(sections))), [sections[i][0], 0, bytearray(sections[i][2])])
            else:
                sections.insert(int(rng.integers(len(sections))), sections.pop(i))
        elif op == 8 and sec is not None:  # splice the same section from another seed
            other = parse(seeds[rng.integers(len(seeds))])[1]
            same = [s for s in other if s[0] == sec[0]]
            if same:
                sec[2] = bytearray(same[0][2])
        elif op == 9:  # header fields: version, endian, kind, section count, total size
            field = int(rng.integers(5))
            offs = (8, 12, 16, 20, 24)
            fmt = "<Q" if field == 4 else "<I"
            v = int(INTERESTING_INTS[rng.integers(len(INTERESTING_INTS))])
            struct.pack_into(fmt, header, offs[field], v % (1 << (64 if field == 4 else 32)))
        elif op == 10 and sec is not None:  # rename a section (unknown tag, or another known one)
            tags = [b"PARM", b"STAT", b"PCEN", b"RCEN", b"CBOK", b"SCAL", b"LSIZ", b"IDS_", b"CODE", b"RVEC"]
            sec[0] = tags[rng.integers(len(tags))] if rng.random() < 0.7 else b"ZZZZ"
        elif op == 11 and sec is not None:
            sec[1] = int(rng.integers(1, 2**32))  # flags
    # Reassemble keeping header fields (when mutated) or fixing them; then maybe break the layout.
    out = assemble(header, sections, fix_total=rng.random() < 0.85, fix_crc=rng.random() < 0.9)
    r = rng.random()
    if r < 0.05:
        out = out[: int(rng.integers(len(out) + 1))]
    elif r < 0.08:
        out = out + bytes(rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8))
    elif r < 0.12:
        b = bytearray(out)
        b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        out = refresh_crcs(b) if rng.random() < 0.5 else bytes(b)
    return out


# ------------------------------------------------------------------------------------ result checks
def check_results(index, Q, k, D, I, ids):
    """The search output contract: shapes, dtypes, ids known or -1, finite sorted scores."""
    nq = Q.shape[0]
    if D.shape != (nq, k) or I.shape != (nq, k) or D.dtype != np.float32 or I.dtype != np.int64:
        raise Finding(f"search output shapes/dtypes {D.shape} {D.dtype} {I.shape} {I.dtype}, want ({nq}, {k})")
    found = I != -1
    unknown = set(np.unique(I[found]).tolist()) - ids
    if unknown:
        raise Finding(f"search returned ids never indexed: {sorted(unknown)[:5]}")
    for row in I:
        r = row[row != -1]
        if len(set(r.tolist())) != len(r):
            raise Finding(f"search returned an id twice in one row: {row.tolist()}")
        if (row[: len(r)] == -1).any():
            raise Finding(f"padding before results: {row.tolist()}")
    if not np.isfinite(D[found]).all():
        known(9, "non-finite distances")
        raise Finding("non-finite distance next to a real id")
    sign = 1 if index.metric == "l2" else -1
    Dm = np.where(found, sign * D.astype(np.float64), np.inf)
    with np.errstate(invalid="ignore"):  # inf - inf between padding slots
        unsorted = (np.diff(Dm, axis=1) < 0).any()
    if unsorted:
        raise Finding("results are not sorted best first")
    if isinstance(index, avq_plugin.ExactIndex):
        want = min(k, len(ids))
        if (found.sum(axis=1) != want).any():
            raise Finding(f"ExactIndex returned fewer than min(k, ntotal) = {want} results")


def exercise(index, rng):
    """Every accessor and a few searches of a loaded index; returns the search results."""
    n = index.ntotal
    if n != len(index):
        raise Finding("len(index) != ntotal")
    if isinstance(index, avq_plugin.AVQIndex) and not index.is_trained:
        if n != 0:
            raise Finding(f"an untrained index holds {n} vectors")
        return None
    ids = index.get_ids()
    if ids.dtype != np.int64 or len(ids) != n or len(np.unique(ids)) != n:
        raise Finding(f"get_ids: {len(ids)} ids ({len(np.unique(ids))} distinct), ntotal {n}")
    if (ids == -1).any():
        known(12, "id -1 accepted from a file")
        raise Finding("an id -1 (the padding id) was loaded from a file")
    idset = set(ids.tolist())
    repr(index)
    if index.memory_usage() < 0:
        raise Finding("negative memory_usage")
    d = index.d
    if d is None or d < 1:
        raise Finding(f"loaded index with d = {d}")
    nq = 3
    if nq * d > 1 << 22:
        return None
    Q = rng.standard_normal((nq, d)).astype(np.float32)
    results = []
    budgets = [{}]
    if isinstance(index, avq_plugin.AVQIndex):
        if not index.is_trained:
            return None
        budgets.append(dict(leaves_to_search=index.num_leaves_, reorder_k=max(1, min(n, 1000))))
        lts, rk = index.default_search_params()
        if rk > 10**6:
            known(3, f"stored default reorder_k {rk}")
    for b in budgets:
        for k in (1, 5):
            t0 = time.perf_counter()
            try:
                D, I = index.search(Q, k=k, num_threads=1, **b)
            except MemoryError:
                known(3, "MemoryError in search of a loaded index")
                raise
            if time.perf_counter() - t0 > 2.0:
                known(3, "slow search of a loaded index")
                raise Finding(f"search of a {n}-vector index took {time.perf_counter() - t0:.1f} s")
            check_results(index, Q, k, D, I, idset)
            results.append((D, I))
    return Q, budgets, results


LOAD_ERRORS = (ValueError, OSError)


def _float_payload_suspects(blob):
    """Open defects a file can trigger through its float sections: (defect, why) pairs."""
    parsed = parse(blob)
    out = []
    for tag, _, payload in parsed[1] if parsed else []:
        if tag in (b"RVEC", b"BIAS", b"VECS", b"SCAL", b"CBOK", b"PCEN", b"RCEN") and len(payload) % 4 == 0:
            v = np.frombuffer(bytes(payload), np.float32)
            if not np.isfinite(v).all():
                out.append((12, f"non-finite value in {tag.decode()}"))
            elif v.size and np.abs(v).max() > 1e18:
                out.append((9, f"value of magnitude {np.abs(v).max():.3g} in {tag.decode()}"))
    return out


def _id_list(index):
    if isinstance(index, avq_plugin.AVQIndex) and not index.is_trained:
        return []
    return sorted(index.get_ids().tolist())


def _check_loaded(cls, index, blob, tmpdir, rng):
    """What a file that loaded must satisfy (raises Finding)."""
    first = exercise(index, rng)
    again = cls.from_bytes(index.to_bytes())
    if _id_list(again) != _id_list(index):
        raise Finding("to_bytes/from_bytes round trip changed the ids")
    if first is not None:
        Q, budgets, results = first
        j = 0
        for b in budgets:
            for k in (1, 5):
                D, I = again.search(Q, k=k, num_threads=1, **b)
                if not (np.array_equal(I, results[j][1]) and np.array_equal(D, results[j][0], equal_nan=True)):
                    raise Finding("to_bytes/from_bytes round trip changed the search results")
                j += 1
    if tmpdir is not None and cls is avq_plugin.AVQIndex:
        path = os.path.join(tmpdir, "fuzz.avq")
        with open(path, "wb") as f:
            f.write(blob)
        for mmap in (False, True):
            mapped = cls.load(path, mmap=mmap)
            if mapped.ntotal != index.ntotal:
                raise Finding(f"load(mmap={mmap}) and from_bytes disagree on ntotal")
            exercise(mapped, rng)
            del mapped


def run_loader(blob, tmpdir=None, rng=None):
    """The loader target. Returns 'rejected' or 'loaded'; raises Finding, Known or any exception."""
    rng = rng or np.random.default_rng(0)
    kind = struct.unpack_from("<I", blob, 16)[0] if len(blob) >= 20 else 1
    classes = (
        [avq_plugin.ExactIndex, avq_plugin.AVQIndex] if kind == 2 else [avq_plugin.AVQIndex, avq_plugin.ExactIndex]
    )
    outcome = "rejected"
    suspects = _float_payload_suspects(blob)
    for cls in classes:
        try:
            index = cls.from_bytes(blob)
        except LOAD_ERRORS:
            continue
        outcome = "loaded"
        if cls is not classes[0]:
            raise Finding(f"{cls.__name__}.from_bytes accepted a file of kind {kind}")
        try:
            _check_loaded(cls, index, blob, tmpdir, rng)
        except Finding:
            for defect, why in suspects:  # a broken contract explained by an open defect
                known(defect, why)
            raise
    return outcome


# ------------------------------------------------------------------------------------ API target
# Scalars are encoded for JSON: {"i": "<decimal>"} int, {"f": x} float, {"np": dtype, "v": "<decimal>"},
# {"s": str}, {"b": bool}, None.
SIZES = (0, 1, 2, 5, 10, 100, 4096, 4097, 10**6, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
         2**64, -1, -2, -(2**31), -(2**63))  # fmt: skip


def _scalar(rng):
    r = rng.random()
    v = int(SIZES[rng.integers(len(SIZES))])
    if r < 0.65:
        return {"i": str(v)}
    if r < 0.75:
        dt = ("int32", "int64", "uint64", "uint8")[rng.integers(4)]
        return {"np": dt, "v": str(v)}
    if r < 0.82:
        return {"f": float(rng.choice([0.0, 1.0, 2.5, -1.0, 1e300, math.nan, math.inf]))}
    if r < 0.88:
        return {"b": bool(rng.random() < 0.5)}
    if r < 0.93:
        return {"s": str(rng.choice(["5", "", "k"]))}
    return None


def decode_scalar(s):
    if s is None:
        return None
    if "i" in s:
        return int(s["i"])
    if "f" in s:
        return float(s["f"])
    if "b" in s:
        return bool(s["b"])
    if "s" in s:
        return s["s"]
    v = int(s["v"])
    info = np.iinfo(s["np"])
    if not info.min <= v <= info.max:
        return None
    return np.dtype(s["np"]).type(v)


def _array_spec(rng, role):
    spec = dict(
        rows=int(rng.choice([0, 1, 2, 3, 17, 64])),
        cols=str(rng.choice(["d", "d", "d", "d+1", "1", "0"])),
        dtype=str(
            rng.choice(["float32"] * 4 + ["float64", "float16", "int64", "uint8", "bool", "object", "complex64"])
        ),
        value=str(rng.choice(["normal"] * 6 + ["nan", "inf", "zero", "huge", "tiny", "const", "big"])),
        layout=str(rng.choice(["c"] * 5 + ["f", "strided", "masked", "list", "3d", "1d", "scalar"])),
        seed=int(rng.integers(2**31)),
    )
    return spec


def make_array(spec, d):
    rng = np.random.default_rng(spec["seed"])
    cols = {"d": d, "d+1": d + 1, "1": 1, "0": 0}[spec["cols"]]
    X = rng.standard_normal((spec["rows"], cols))
    v = spec["value"]
    if v == "nan" and X.size:
        X.flat[rng.integers(X.size)] = np.nan
    elif v == "inf" and X.size:
        X.flat[rng.integers(X.size)] = np.inf
    elif v == "zero":
        X[:] = 0
    elif v == "huge":
        X *= 1e19
    elif v == "tiny":
        X *= 1e-20
    elif v == "const":
        X[:] = 0.5
    elif v == "big":
        X *= 1e3
    dt = spec["dtype"]
    if dt == "object":
        A = X.astype(object)
    else:
        with np.errstate(all="ignore"):
            A = X.astype(dt)
    lay = spec["layout"]
    if lay == "f":
        A = np.asfortranarray(A)
    elif lay == "strided":
        A = np.repeat(A, 2, axis=1)[:, ::2]
    elif lay == "masked":
        A = np.ma.masked_invalid(A) if dt != "object" else A
    elif lay == "list":
        A = A.tolist()
    elif lay == "3d":
        A = A[None]
    elif lay == "1d":
        A = A[0] if len(A) else A.reshape(-1)
    elif lay == "scalar":
        A = A.flat[0] if A.size else 0.0
    return A


def _ids_spec(rng):
    return dict(
        kind=str(rng.choice(["none", "none", "fresh", "fresh", "dup", "minus1", "max", "min", "float", "uint64",
                             "wrong_len", "existing", "2d"])),
        seed=int(rng.integers(2**31)),
    )  # fmt: skip


def make_ids(spec, n, existing_max):
    rng = np.random.default_rng(spec["seed"])
    k = spec["kind"]
    base = 10**6 + rng.integers(0, 10**9) + np.arange(n, dtype=np.int64) * 3
    if k == "none":
        return None
    if k == "fresh":
        return base
    if k == "dup":
        return np.concatenate([base[: max(0, n - 1)], base[:1]])[:n] if n > 1 else base
    if k == "minus1":
        return np.where(np.arange(n) == 0, -1, base)
    if k == "max":
        return INT64_MAX - np.arange(n, dtype=np.int64)
    if k == "min":
        return INT64_MIN + np.arange(n, dtype=np.int64)
    if k == "float":
        return base.astype(np.float64)
    if k == "uint64":
        return (2**63 + np.arange(n, dtype=np.uint64)).astype(np.uint64)
    if k == "wrong_len":
        return base[: max(0, n - 1)] if n else np.arange(1, dtype=np.int64)
    if k == "existing":
        return np.arange(n, dtype=np.int64)
    return base.reshape(-1, 1)


INDEX_KINDS = tuple(f"avq-{m}-{r}" for m in METRICS for r in REORDERS) + tuple(f"exact-{m}" for m in METRICS)


def random_op(rng):
    call = str(rng.choice(["search"] * 5 + ["add", "add", "remove", "remove", "reset", "roundtrip", "ctor", "fit"]))
    op = dict(index=str(rng.choice(INDEX_KINDS)), call=call)
    if call == "search":
        op["Q"] = _array_spec(rng, "Q")
        if rng.random() < 0.5:
            op["Q"].update(dtype="float32", layout="c", cols="d", value="normal")
        op["k"] = _scalar(rng) if rng.random() < 0.6 else {"i": str(rng.integers(1, 30))}
        for name in ("leaves_to_search", "reorder_k", "num_threads"):
            if rng.random() < 0.5:
                op[name] = _scalar(rng)
    elif call in ("add", "fit"):
        op["X"] = _array_spec(rng, "X")
        if rng.random() < 0.5:
            op["X"].update(dtype="float32", layout="c", cols="d", value="normal")
        op["ids"] = _ids_spec(rng)
    elif call == "remove":
        op["ids"] = _ids_spec(rng)
        op["n"] = int(rng.choice([0, 1, 5, 50]))
    elif call == "ctor":
        names = ("num_leaves", "dims_per_block", "leaves_to_search", "reorder_k", "training_iterations",
                 "kmeans_iterations", "training_sample_size", "num_threads", "seed")  # fmt: skip
        op["kwargs"] = {str(n): _scalar(rng) for n in rng.choice(names, size=int(rng.integers(1, 4)), replace=False)}
    return op


class ApiHarness:
    """Small indexes of every kind, restored from pristine bytes when an operation mutated them."""

    def __init__(self):
        rng = np.random.default_rng(11)
        self.X = rng.standard_normal((300, 6)).astype(np.float32)
        self.pristine = {}
        for kind in INDEX_KINDS:
            parts = kind.split("-")
            if parts[0] == "avq":
                index = avq_plugin.AVQIndex(
                    parts[1], num_leaves=6, reorder=parts[2], num_threads=1, kmeans_iterations=3, training_iterations=1
                ).fit(self.X)
            else:
                index = avq_plugin.ExactIndex(parts[1], num_threads=1).fit(self.X)
            self.pristine[kind] = (type(index), index.to_bytes())
        self.live = {}

    def get(self, kind):
        if kind not in self.live:
            cls, blob = self.pristine[kind]
            self.live[kind] = cls.from_bytes(blob)
        return self.live[kind]


def _names_param(exc, names):
    msg = str(exc)
    if "ids" in names:
        names = [*names, "id"]  # "id 5 is already in the index" names it
    if "Q" in names:
        names = [*names, "query"]  # "query 3 contains NaN" names it
    return any(re.search(rf"\b{re.escape(n)}\b", msg) for n in names)


def run_api(op, harness):
    """The API target: one operation. Returns 'ok', 'rejected' or 'costly' (a valid call too large to run
    here); raises Finding, Known or any other error."""
    kind = op["index"]
    index = harness.get(kind)
    is_exact = isinstance(index, avq_plugin.ExactIndex)
    d = index.d
    call = op["call"]
    ids_before = set(index.get_ids().tolist())
    params = []
    try:
        if call == "search":
            Q = make_array(op["Q"], d)
            args = {n: decode_scalar(op[n]) for n in ("leaves_to_search", "reorder_k", "num_threads") if n in op}
            k = decode_scalar(op["k"])
            params = ["k", "Q", *args]
            _known_sizes(args, k, op["Q"])
            rows = op["Q"]["rows"] if op["Q"]["layout"] not in ("1d", "scalar") else 1
            if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and rows * int(k) > 4_000_000:
                if rows * int(k) * 12 <= 8 << 30:  # allowed (the result-size limit) but only slow: not run
                    return "costly"
            D, I = index.search(Q, k=k, **args)
            Qm = np.asarray(Q, dtype=np.float32).reshape(-1, d)
            check_results(index, Qm, int(k), D, I, ids_before)
        elif call in ("add", "fit"):
            X = make_array(op["X"], d)
            if op["X"]["layout"] == "masked":
                known(5, "masked array")
            if op["X"]["value"] in ("huge", "tiny"):
                known(9, "extreme magnitudes")
            if call == "fit" and op["X"]["value"] in ("const", "zero"):
                known(7, "degenerate training data")
            n = len(X) if hasattr(X, "__len__") else 1
            ids = make_ids(op["ids"], n, None)
            params = ["X", "ids"]
            if is_exact and ids is None and ids_before and max(ids_before) > INT64_MAX - 1000:
                known(6, "ExactIndex auto ids past INT64_MAX")
            if call == "add":
                index.add(X, ids)
            else:
                if op["X"]["rows"] < 6 and not is_exact:
                    params.append("num_leaves")
                index.fit(X, ids)
            harness.live[kind] = index
            after = set(index.get_ids().tolist())
            if call == "add":
                if ids is not None and after != ids_before | set(np.asarray(ids).tolist()):
                    raise Finding("add: the id set is not the old one plus the new ids")
                if ids is None and len(after) != len(ids_before) + np.asarray(X).reshape(-1, d).shape[0]:
                    raise Finding("add: ntotal did not grow by the number of vectors")
                if ids is None and min(after - ids_before, default=0) < 0:
                    known(6, "negative auto ids")
                    raise Finding("add handed out negative automatic ids")
        elif call == "remove":
            if op["ids"]["kind"] == "existing":
                ids = np.asarray(sorted(ids_before)[: op["n"]], np.int64)
            else:
                ids = make_ids(op["ids"], op["n"], None)
                if ids is None:
                    ids = np.zeros(0, np.int64)
            params = ["ids"]
            removed = index.remove(ids)
            want = len(ids_before & set(np.asarray(ids).reshape(-1).tolist()))
            if removed != want or set(index.get_ids().tolist()) != ids_before - set(
                np.asarray(ids).reshape(-1).tolist()
            ):
                raise Finding(f"remove returned {removed}, expected {want}, or left the wrong ids")
        elif call == "reset":
            index.reset()
            if index.ntotal != 0:
                raise Finding("reset left vectors")
        elif call == "roundtrip":
            again = type(index).from_bytes(index.to_bytes())
            if sorted(again.get_ids().tolist()) != sorted(ids_before):
                raise Finding("round trip changed the ids")
        elif call == "ctor":
            kwargs = {n: decode_scalar(v) for n, v in op["kwargs"].items()}
            params = list(kwargs)
            for n, v in kwargs.items():
                if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                    if v >= 2**31:
                        known(8, f"constructor {n}={v}")
                    if n == "reorder_k" and v > 10**6:
                        known(3, f"constructor reorder_k={v}")
            probe = avq_plugin.AVQIndex(kind.split("-")[1] if not is_exact else "dot", **kwargs)
            probe.fit(harness.X[:64])
            probe.search(harness.X[:2], k=3)
    except (ValueError, TypeError) as exc:
        if params and not _names_param(exc, params):
            raise Finding(f"{type(exc).__name__} that names no parameter ({', '.join(params)}): {exc}") from exc
        if call in ("add", "fit", "remove", "reset"):
            harness.live.pop(kind, None)  # a refused call may still have changed nothing; start clean
        return "rejected"
    finally:
        if len(harness.live.get(kind, [])) > 2000:
            harness.live.pop(kind, None)
    return "ok"


def _known_sizes(args, k, qspec):
    for name, v in args.items():
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            if name == "reorder_k" and v > 10**6:
                known(2 if v >= 2**63 else 3, f"reorder_k={v}")
            if v >= 2**32:
                known(8, f"{name}={v}")
    if qspec["layout"] == "masked":
        known(5, "masked query")
    if qspec["value"] in ("huge", "tiny"):
        known(9, "extreme magnitudes")


# ------------------------------------------------------------------------------------ inputs on disk
def encode_input(target, value):
    return value if target == "loader" else json.dumps(value, sort_keys=True).encode()


def decode_input(target, data):
    return data if target == "loader" else json.loads(data)
