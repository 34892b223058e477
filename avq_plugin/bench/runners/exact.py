"""Exact brute-force search under avq-bench (the reference row)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .._common import INSTALL_HINT
from .base import Runner, SystemUnavailable, _normalize_rows


class ExactRunner(Runner):
    """Brute-force reference: ``avq_plugin.ExactIndex`` or Faiss ``IndexFlat``."""

    def __init__(self) -> None:
        self.backends: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        try:
            import avq_plugin

            self.backends["avq"] = avq_plugin.ExactIndex
        except (ImportError, AttributeError) as exc:
            self.errors["avq"] = f"avq_plugin.ExactIndex not importable ({exc})"
        try:
            import faiss

            self.backends["faiss"] = faiss
        except ImportError:
            self.errors["faiss"] = f"faiss not installed ({INSTALL_HINT})"
        if not self.backends:
            raise SystemUnavailable("exact: " + "; ".join(self.errors.values()) + ": skipped")

    def build(self, train, metric, args):
        backend = args.get("backend", "avq")
        if backend not in self.backends:
            reason = self.errors.get(backend, f"unknown exact backend {backend!r}")
            raise SystemUnavailable(f"exact backend {backend}: {reason}: skipped")
        self.backend = backend
        if backend == "avq":
            metric_name = {"angular": "cosine", "euclidean": "l2"}[metric]
            self.index = self.backends["avq"](metric=metric_name, num_threads=self.threads).fit(train)
            self.version = getattr(sys.modules.get("avq_plugin"), "__version__", "?")
            self.own_memory_kind = "memory_usage()"
            self.resolved = f"ExactIndex({metric_name})"
        else:
            faiss = self.backends["faiss"]
            faiss.omp_set_num_threads(self.threads)
            if metric == "angular":
                data, self.index = _normalize_rows(train), faiss.IndexFlatIP(train.shape[1])
            else:
                data, self.index = np.ascontiguousarray(train), faiss.IndexFlatL2(train.shape[1])
            self.index.add(data)
            self.version = getattr(faiss, "__version__", "?")
            self.own_memory_kind = "serialized"
            self.resolved = type(self.index).__name__

    def single_fn(self, k, qa):
        search = self.index.search
        if self.backend == "avq":
            return lambda q: search(q, k)[1]
        return lambda q: search(q[None, :], k)[1]

    def batch_fn(self, k, qa):
        search = self.index.search
        return lambda Q: search(Q, k)[1]

    def own_memory(self):
        if self.backend == "avq":
            return int(self.index.memory_usage()) if hasattr(self.index, "memory_usage") else None
        return int(self.backends["faiss"].serialize_index(self.index).nbytes)
