"""Names shared by the modules of avq-bench."""

from __future__ import annotations

SYSTEMS = ("avq", "scann", "faiss", "hnswlib", "exact")
INSTALL_HINT = "pip install avq-plugin[bench]"
#: ann-benchmarks' slack for the "k-nn" recall (plotting/metrics.py).
ANN_BENCHMARKS_EPSILON = 1e-3


class SystemUnavailable(Exception):
    """Raised by a runner's constructor when its library cannot be imported."""
