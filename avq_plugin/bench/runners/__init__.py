"""The systems avq-bench compares, one module each: :data:`RUNNERS` maps a system name to its runner."""

from __future__ import annotations

from .avq import AVQRunner
from .base import Runner, SystemUnavailable
from .exact import ExactRunner
from .faiss import FaissRunner
from .hnswlib import HnswlibRunner
from .scann import ScannRunner

__all__ = ["RUNNERS", "Runner", "SystemUnavailable", "make_runner"]

RUNNERS = {"avq": AVQRunner, "scann": ScannRunner, "faiss": FaissRunner, "hnswlib": HnswlibRunner, "exact": ExactRunner}


def make_runner(system: str, threads: int = 1) -> Runner:
    """Instantiate the runner of ``system``; raises :class:`SystemUnavailable` if its library is missing."""
    runner = RUNNERS[system]()
    runner.threads = threads
    return runner
