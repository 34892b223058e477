"""avq_plugin's own index under avq-bench."""

from __future__ import annotations

import functools

from ..config import resolve_num_leaves
from ..progress import _StageBars
from .base import Runner, SystemUnavailable


class AVQRunner(Runner):
    """avq_plugin.AVQIndex (imported lazily, so the bench runs without the build)."""

    own_memory_kind = "memory_usage()"

    def __init__(self) -> None:
        try:
            import avq_plugin

            self.cls = avq_plugin.AVQIndex
        except (ImportError, AttributeError) as exc:
            raise SystemUnavailable(
                f"avq_plugin.AVQIndex not importable ({exc}): skipped "
                "(build it with 'pip install --no-build-isolation -e .')"
            ) from exc
        self.version = getattr(avq_plugin, "__version__", "?")

    def build(self, train, metric, args):
        metric_name = {"angular": "cosine", "euclidean": "l2"}[metric]
        args = dict(args)
        if isinstance(args.get("num_leaves"), str):
            args["num_leaves"] = resolve_num_leaves(args["num_leaves"], train.shape[0])
        bars = self.bars if self.bars is not None and self.bars.enabled else None
        stages = _StageBars(bars, "avq") if bars is not None else None
        self.index = self.cls(metric=metric_name, num_threads=self.threads, progress=stages or False, **args)
        try:
            self.index.fit(train)
        finally:
            if stages is not None:
                stages.close()
        self.resolved = f"{metric_name}, {self.index.num_leaves_} leaves"

    def _search(self, k, qa):
        """index.search with this setting bound (``leaf_margin`` only when the setting has one)."""
        kw = {
            "k": k,
            "leaves_to_search": qa["leaves_to_search"],
            "reorder_k": qa["reorder_k"],
            "num_threads": self.threads,
        }
        if qa.get("leaf_margin") is not None:
            kw["leaf_margin"] = float(qa["leaf_margin"])
        return functools.partial(self.index.search, **kw)

    def single_fn(self, k, qa):
        search = self._search(k, qa)
        return lambda q: search(q)[1]

    def batch_fn(self, k, qa):
        search = self._search(k, qa)
        return lambda Q: search(Q)[1]

    def budget(self, qa, k):
        if qa.get("leaf_margin") is not None:
            return None  # leaves and candidates vary per query: no matched-budget row
        return (qa["leaves_to_search"], qa["reorder_k"])

    def own_memory(self):
        return int(self.index.memory_usage())
