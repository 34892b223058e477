"""Faiss (IVF-PQ fast scan) under avq-bench."""

from __future__ import annotations

import numpy as np

from ..config import resolve_num_leaves
from .base import Runner, _add_in_chunks, _import_peer, _normalize_rows


class FaissRunner(Runner):
    """Faiss ``IVF{nlist},PQ{m}x4fsr`` wrapped in ``IndexRefineFlat``."""

    own_memory_kind = "serialized"

    def __init__(self) -> None:
        faiss = _import_peer("faiss")
        self.faiss = faiss
        self.version = getattr(faiss, "__version__", "?")

    def build(self, train, metric, args):
        faiss = self.faiss
        a = dict(args)
        if metric == "angular":
            data, faiss_metric = _normalize_rows(train), faiss.METRIC_INNER_PRODUCT
        else:
            data, faiss_metric = np.ascontiguousarray(train, dtype=np.float32), faiss.METRIC_L2
        n, d = data.shape
        nlist = resolve_num_leaves(a.pop("nlist"), n)
        dims_per_block = int(a.pop("dims_per_block", 2))
        if d % dims_per_block:
            raise ValueError(f"faiss PQ needs d={d} divisible by dims_per_block={dims_per_block}")
        factory = a.pop("factory").format(nlist=nlist, m=d // dims_per_block)
        refine = a.pop("refine", "flat")
        if a:
            raise ValueError(f"unknown faiss build args: {sorted(a)}")
        faiss.omp_set_num_threads(self.threads)
        base = faiss.index_factory(d, factory, faiss_metric)
        index = faiss.IndexRefineFlat(base) if refine == "flat" else base
        bar = self._bar("faiss train", 1, "index")
        index.train(data)
        bar.update(1)
        bar.close()
        _add_in_chunks(index.add, data, self._bar("faiss add", n, "vec"))
        self._base = base  # IndexRefineFlat does not own a Python reference to it
        self.index = index
        self.factory = factory
        self.ivf = faiss.extract_index_ivf(index)
        self.resolved = (
            ("IP, " if faiss_metric == faiss.METRIC_INNER_PRODUCT else "L2, ")
            + factory
            + (" + RefineFlat" if refine == "flat" else "")
        )

    def _configure(self, k, qa):
        self.ivf.nprobe = int(qa["nprobe"])
        if isinstance(self.index, self.faiss.IndexRefine):
            self.index.k_factor = float(qa["k_factor"])

    def single_fn(self, k, qa):
        self._configure(k, qa)
        search = self.index.search
        return lambda q: search(q[None, :], k)[1]

    def batch_fn(self, k, qa):
        self._configure(k, qa)
        search = self.index.search
        return lambda Q: search(Q, k)[1]

    def budget(self, qa, k):
        return (qa["nprobe"], int(round(float(qa["k_factor"]) * k)))

    def own_memory(self):
        return int(self.faiss.serialize_index(self.index).nbytes)

    def close(self):
        self.__dict__.pop("ivf", None)
        self.__dict__.pop("_base", None)
        super().close()
