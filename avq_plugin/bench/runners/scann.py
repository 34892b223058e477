"""ScaNN under avq-bench."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..config import resolve_num_leaves
from .base import Runner, _dist_version, _import_peer, _normalize_rows


class ScannRunner(Runner):
    """ScaNN through ``scann.scann_ops_pybind``, configured like ann-benchmarks' entry."""

    own_memory_kind = "serialized"

    def __init__(self) -> None:
        scann = _import_peer("scann")
        self.scann = scann
        self.version = _dist_version("scann")

    def build(self, train, metric, args):
        scann = self.scann
        a = dict(args)
        if metric == "angular":
            data, measure = _normalize_rows(train), "dot_product"
        else:
            data, measure = np.ascontiguousarray(train, dtype=np.float32), "squared_l2"
        n = data.shape[0]
        leaves = resolve_num_leaves(a.pop("num_leaves"), n)
        threshold = a.pop("anisotropic_quantization_threshold", None)
        threshold = float("nan") if threshold is None else float(threshold)
        sample = a.pop("training_sample_size", "all")
        sample = n if sample == "all" else int(sample)
        quantize = {
            "float32": scann.scann_ops_pybind.scann_builder.ReorderType.FLOAT32,
            "int8": scann.scann_ops_pybind.scann_builder.ReorderType.INT8,
            "bfloat16": scann.scann_ops_pybind.scann_builder.ReorderType.BFLOAT16,
        }[a.pop("reorder_quantize", "float32")]
        builder = (
            scann.scann_ops_pybind.builder(data, a.pop("num_neighbors", 10), measure)
            .tree(
                num_leaves=leaves,
                num_leaves_to_search=min(leaves, int(a.pop("default_leaves_to_search", 1))),
                training_sample_size=sample,
                spherical=bool(a.pop("spherical", False)),
                quantize_centroids=bool(a.pop("quantize_centroids", False)),
            )
            .score_ah(int(a.pop("dims_per_block", 2)), anisotropic_quantization_threshold=threshold)
            .reorder(int(a.pop("default_reorder", 1)), quantize=quantize)
        )
        if a:
            raise ValueError(f"unknown scann build args: {sorted(a)}")
        builder.set_n_training_threads(self.threads)
        bar = self._bar("scann build (train + add)", 1, "index")
        try:
            self.index = builder.build()
        finally:
            bar.update(1)
            bar.close()
        self.index.set_num_threads(self.threads)
        self.resolved = f"{measure}, {leaves} leaves"

    def single_fn(self, k, qa):
        search, leaves, reorder = self.index.search, qa["leaves_to_search"], qa["reorder"]
        return lambda q: search(q, final_num_neighbors=k, pre_reorder_num_neighbors=reorder, leaves_to_search=leaves)[0]

    def batch_fn(self, k, qa):
        search, leaves, reorder = self.index.search_batched, qa["leaves_to_search"], qa["reorder"]
        return lambda Q: search(Q, final_num_neighbors=k, pre_reorder_num_neighbors=reorder, leaves_to_search=leaves)[0]

    def budget(self, qa, k):
        return (qa["leaves_to_search"], qa["reorder"])

    def own_memory(self):
        tmp = tempfile.mkdtemp(prefix="avq_bench_scann_")
        try:
            self.index.serialize(tmp)
            return sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
