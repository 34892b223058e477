"""hnswlib under avq-bench."""

from __future__ import annotations

import numpy as np

from .base import Runner, _add_in_chunks, _dist_version, _import_peer


class HnswlibRunner(Runner):
    """hnswlib's HNSW graph (``space="cosine"`` for angular data, ``"l2"`` for euclidean)."""

    own_memory_kind = "index_file_size()"

    def __init__(self) -> None:
        hnswlib = _import_peer("hnswlib")
        self.hnswlib = hnswlib
        self.version = _dist_version("hnswlib")

    def build(self, train, metric, args):
        a = dict(args)
        M, ef_construction = int(a.pop("M")), int(a.pop("ef_construction"))
        seed = int(a.pop("seed", 100))
        if a:
            raise ValueError(f"unknown hnswlib build args: {sorted(a)}")
        n, d = train.shape
        space = "cosine" if metric == "angular" else "l2"
        index = self.hnswlib.Index(space=space, dim=d)
        index.init_index(max_elements=n, ef_construction=ef_construction, M=M, random_seed=seed)
        index.set_num_threads(self.threads)
        ids = np.arange(n, dtype=np.int64)
        _add_in_chunks(
            lambda x, lo, hi: index.add_items(x, ids[lo:hi], num_threads=self.threads),
            train,
            self._bar("hnswlib add", n, "vec"),
            pass_range=True,
        )
        self.index = index
        self.resolved = f"{space}, M={M}, ef_construction={ef_construction}"

    def single_fn(self, k, qa):
        self.index.set_ef(int(qa["ef"]))
        query = self.index.knn_query
        return lambda q: query(q, k=k)[0]

    def batch_fn(self, k, qa):
        self.index.set_ef(int(qa["ef"]))
        query, nt = self.index.knn_query, self.threads
        return lambda Q: query(Q, k=k, num_threads=nt)[0]

    def ids_single(self, result):
        return np.asarray(result, dtype=np.int64).reshape(-1)

    def ids_batch(self, result):
        return np.asarray(result, dtype=np.int64)

    def own_memory(self):
        return int(self.index.index_file_size())
