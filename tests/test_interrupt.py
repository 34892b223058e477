"""Long training shows progress and stops on Ctrl-C (SIGINT) with KeyboardInterrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent("""
    import numpy as np, avq_plugin
    X = np.random.default_rng(0).standard_normal((200_000, 64)).astype(np.float32)
    try:
        avq_plugin.AVQIndex(metric="l2", num_leaves=2000, kmeans_iterations=500, num_threads=1,
                            verbose=True).fit(X)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    else:
        print("finished", flush=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_training():
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    try:
        first = proc.stderr.readline()  # the first progress line: training is under way
        assert "[avq" in first and "k-means" in first, first
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        stopped_after = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.strip() == "interrupted", (out, err)
    assert stopped_after < 30  # 500 k-means iterations would take minutes
