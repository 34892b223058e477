"""Importing and using avq_plugin must not change the host's floating-point environment
(no flush-to-zero / denormals-are-zero leaking from -ffast-math style builds)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

import avq_plugin

CHECK = """
import numpy as np

def subnormals_ok():
    tiny = np.float32(1e-40)            # a float32 subnormal
    one = np.float32(1.0)
    a = np.array([1e-40], np.float32)
    return bool(tiny * one != 0) and bool((a * one)[0] != 0) and bool(np.float64(5e-324) * 1.0 != 0) \\
        and bool(np.float32(1.2e-38) / np.float32(4.0) != 0)
"""

SCRIPT = (
    CHECK
    + """
assert subnormals_ok(), "subnormals flushed before import"
import avq_plugin
assert subnormals_ok(), "importing avq_plugin flushed subnormals"
rng = np.random.default_rng(0)
X = rng.standard_normal((600, 12)).astype(np.float32)
X[:5] *= 1e-39                           # subnormal inputs as well
for metric in ("dot", "cosine", "l2"):
    kw = {} if metric == "l2" else {"eta": 3.0}
    idx = avq_plugin.AVQIndex(metric=metric, num_leaves=4, seed=0, **kw).fit(X)
    idx.search(X[:10], k=3, num_threads=2)
    avq_plugin.ExactIndex(metric).fit(X).search(X[:3], k=2)
    assert subnormals_ok(), f"training/searching ({metric}) flushed subnormals"
for level in avq_plugin.build_info()["supported_simd_levels"]:
    avq_plugin.set_simd_level(level)
    idx.search(X[:4], k=2)
    assert subnormals_ok(), f"searching at {level} flushed subnormals"
print("ok")
"""
)


def test_subnormals_survive_import_and_search_in_fresh_process():
    env = dict(os.environ)
    env.pop("AVQ_SIMD_LEVEL", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_subnormals_in_this_process():
    X = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    avq_plugin.AVQIndex(metric="l2", num_leaves=3, seed=0).fit(X).search(X[:5], k=2)
    assert np.float32(1e-40) * np.float32(1) != 0
    assert np.float64(5e-324) * 1.0 != 0


def test_subnormal_data_is_indexed_exactly():
    """Subnormal-scaled vectors keep their order under l2 (no flushing inside the kernels)."""
    X = (np.arange(1, 33, dtype=np.float32)[:, None] * np.float32(1e-41)) * np.ones((1, 4), np.float32)
    assert (X[:, 0] > 0).all()
    e = avq_plugin.ExactIndex("dot").fit(X)
    D, I = e.search(np.ones((1, 4), np.float32), k=3)
    np.testing.assert_array_equal(I[0], [31, 30, 29])
    assert (D[0] > 0).all()
