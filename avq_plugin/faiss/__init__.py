"""The Faiss face of avq_plugin: :class:`IndexAVQ` (a Faiss-shaped index, faiss itself optional),
``write_index`` / ``read_index``, and export to / import from real Faiss indexes.

Modules: :mod:`.index` (IndexAVQ, SearchParametersAVQ), :mod:`.io` (files), :mod:`.export`
(``to_faiss`` / ``from_faiss``, the only code that imports faiss).
"""

from __future__ import annotations

from .index import METRIC_INNER_PRODUCT, METRIC_L2, IndexAVQ, SearchParametersAVQ
from .io import read_index, write_index

__all__ = ["IndexAVQ", "SearchParametersAVQ", "write_index", "read_index", "METRIC_INNER_PRODUCT", "METRIC_L2"]
