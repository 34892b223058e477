"""``write_index`` / ``read_index`` for IndexAVQ (mirroring ``faiss.write_index`` / ``faiss.read_index``)."""

from __future__ import annotations

import os

from ..index import AVQIndex
from .index import IndexAVQ

__all__ = ["write_index", "read_index"]


def write_index(index: IndexAVQ, path: str | os.PathLike[str]) -> None:
    """Write an IndexAVQ to one file (the project's format, written atomically).

    Mirrors ``faiss.write_index``; ``nprobe`` and ``reorder_k`` are saved with the index. For a
    Faiss index use ``faiss.write_index`` (``index.to_faiss()`` converts).
    """
    if not isinstance(index, IndexAVQ):
        raise TypeError(
            f"write_index expects an IndexAVQ, got {type(index).__name__} "
            "(use faiss.write_index for Faiss indexes, AVQIndex.save for AVQIndex)"
        )
    if not index.is_trained:
        raise ValueError("the index is not trained: nothing to write")
    index._sync_defaults()
    index._avq.save(path)


def read_index(path: str | os.PathLike[str]) -> IndexAVQ:
    """Read an IndexAVQ written by ``write_index`` (or an inner-product / L2 AVQIndex file with
    d divisible by dims_per_block). Raises ValueError on a corrupted or unsuitable file."""
    return IndexAVQ._from_avq(AVQIndex.load(path))
