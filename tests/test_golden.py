"""Golden files: index files written by format version 1 load and search identically forever.

tests/data/format_v1/ holds one small file per metric x reorder mode (and ExactIndex per metric),
written once by its make.py, with the search results they gave in expected.json. A change to the
loader or to the search code that alters what an existing file means fails here. The files are
never regenerated; a new format version gets its own directory and keeps this one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import avq_plugin

GOLDEN = Path(__file__).resolve().parent / "data" / "format_v1"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
FILES = sorted(EXPECTED["files"])


def test_golden_set_is_complete():
    combos = {(e["kind"], e["metric"], e.get("reorder")) for e in EXPECTED["files"].values()}
    for metric in ("dot", "cosine", "l2"):
        assert ("exact", metric, None) in combos
        for reorder in ("none", "int8", "float32"):
            assert ("avq", metric, reorder) in combos
    assert EXPECTED["format_version"] == 1
    assert sum(p.stat().st_size for p in GOLDEN.iterdir()) < 1 << 20


def _loaders(entry, path):
    """Every way to read the file: from_bytes, load, and (AVQIndex) load with mmap."""
    cls = avq_plugin.ExactIndex if entry["kind"] == "exact" else avq_plugin.AVQIndex
    yield "from_bytes", cls.from_bytes(path.read_bytes())
    yield "load", cls.load(path)
    if cls is avq_plugin.AVQIndex:
        yield "load-mmap", cls.load(path, mmap=True)


@pytest.mark.parametrize("name", FILES)
def test_golden_file_searches_as_recorded(name, simd_level):
    entry = EXPECTED["files"][name]
    path = GOLDEN / name
    # The file itself is the one recorded (a regenerated file would make this test meaningless).
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], f"{name} was modified"
    Q = np.asarray(EXPECTED["queries"], np.float32)
    for how, index in _loaders(entry, path):
        where = f"{name} via {how} at {simd_level}"
        assert index.metric == entry["metric"], where
        assert (index.ntotal, index.d) == (entry["ntotal"], entry["d"]), where
        assert sorted(index.get_ids().tolist()) == entry["ids"], where
        if entry["kind"] == "avq":
            assert index.reorder == entry["reorder"], where
            assert list(index.default_search_params()) == entry["default_search_params"], where
        for s in entry["searches"]:
            D, I = index.search(Q, k=EXPECTED["k"], num_threads=1, **(s["budget"] or {}))
            np.testing.assert_array_equal(I, np.asarray(s["ids"]), err_msg=f"{where} budget={s['budget']}")
            # Scores are float32 sums; the SIMD kernels are bit-identical to the scalar one
            # (-ffp-contract=off), so only a change of meaning moves them beyond rounding.
            want = np.asarray(s["distances"], np.float32)
            np.testing.assert_allclose(D, want, rtol=1e-6, atol=1e-6, err_msg=f"{where} budget={s['budget']}")
