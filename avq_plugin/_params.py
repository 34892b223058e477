"""The default partition size and search budget: one rule, in one place.

Every front-end (:class:`~avq_plugin.AVQIndex`, :class:`~avq_plugin.AVQNearestNeighbors`,
:class:`~avq_plugin.IndexAVQ`, the sharded index) asks :func:`resolve_budget` for the values the
user did not give. It runs once, at training time, and the concrete numbers it returns are written
into the native index (and so into its files): changing a constant here never changes how an
existing index searches. Version-1 files, which stored 0 for "decide later", are completed with
the same function when they are loaded. The measurements behind the constants are in
docs/parameters.md ("Defaults").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from ._validation import native_training_sample_rows

__all__ = [
    "Budget",
    "Encoding",
    "resolve_budget",
    "resolve_encoding",
    "training_sample_rows",
    "tune_layouts",
    "DEFAULT_K",
]

#: The k the stored default budget is chosen for (``AVQIndex.search``'s default k).
DEFAULT_K = 10
#: num_leaves = round(LEAVES_PER_SQRT_N * sqrt(n)).
LEAVES_PER_SQRT_N = 1.0
#: leaves_to_search = ceil(PROBE_PER_SQRT_LEAVES * sqrt(num_leaves)), at most num_leaves.
PROBE_PER_SQRT_LEAVES = 3.5
#: The same constant for a spilled (SOAR) index, whose every vector sits in two leaves.
PROBE_PER_SQRT_LEAVES_SPILLED = 2.0
#: From this dimension on, dot and cosine data get the high-dimensional encoding below.
HIGH_DIM = 256
#: dims_per_block below HIGH_DIM (and for l2), and from it on (dot, cosine).
DIMS_PER_BLOCK = 2
DIMS_PER_BLOCK_HIGH_DIM = 4
#: The layouts ``AVQIndex.tune(layouts="auto")`` measures (besides the index's own): every
#: dims_per_block of TUNE_DIMS_PER_BLOCK with every spill of TUNE_SPILL.
TUNE_DIMS_PER_BLOCK = (2, 4)
TUNE_SPILL = (None, "soar")
#: reorder_k = max(REORDER_MIN, REORDER_PER_NEIGHBOR * k).
REORDER_MIN = 200
REORDER_PER_NEIGHBOR = 20


class Encoding(NamedTuple):
    """Concrete code layout of one index: dimensions per 4-bit block and spilling."""

    dims_per_block: int
    spill: str | None


def resolve_encoding(d: int, metric: str, *, dims_per_block: int | None = None, spill: str | None = "auto") -> Encoding:
    """The (dims_per_block, spill) an index of dimension d under ``metric`` uses.

    Given values are kept (``spill=None`` or ``"none"``: no spilling); ``dims_per_block=None`` and
    ``spill="auto"`` follow the measured rule: below ``HIGH_DIM`` dimensions, and for ``"l2"``,
    2 dims per block without spilling (GloVe-50, Fashion-MNIST); from it on, for ``"dot"`` and
    ``"cosine"`` (sentence and image embeddings), 4 dims per block with SOAR spilling (the
    measurements are in docs/parameters.md, "Defaults").

    >>> resolve_encoding(50, "cosine")
    Encoding(dims_per_block=2, spill=None)
    >>> resolve_encoding(384, "cosine")
    Encoding(dims_per_block=4, spill='soar')
    >>> resolve_encoding(384, "l2", spill="soar")
    Encoding(dims_per_block=2, spill='soar')
    """
    high = int(d) >= HIGH_DIM and metric in ("dot", "cosine")
    if dims_per_block is None:
        dims_per_block = DIMS_PER_BLOCK_HIGH_DIM if high else DIMS_PER_BLOCK
    if spill == "auto":
        spill = "soar" if high else None
    elif spill == "none":
        spill = None
    return Encoding(int(dims_per_block), spill)


def tune_layouts(own: Encoding, d: int, given: Sequence[tuple[int, str | None]] | None = None) -> list[Encoding]:
    """The layouts ``AVQIndex.tune(layouts=...)`` measures: the index's own first, then ``given``
    (validated (dims_per_block, spill) pairs, spill None or "soar") or, for ``layouts="auto"``
    (``given=None``), TUNE_DIMS_PER_BLOCK x TUNE_SPILL. Layouts with the same codes (any
    dims_per_block >= d gives one block of d dimensions) are measured once, the first kept.

    >>> tune_layouts(Encoding(4, "soar"), 384)
    [Encoding(dims_per_block=4, spill='soar'), Encoding(dims_per_block=2, spill=None), Encoding(dims_per_block=2, spill='soar'), Encoding(dims_per_block=4, spill=None)]
    >>> tune_layouts(Encoding(2, None), 2, [(4, None), (8, "soar")])
    [Encoding(dims_per_block=2, spill=None), Encoding(dims_per_block=8, spill='soar')]
    """
    wanted = (
        [Encoding(b, sp) for b in TUNE_DIMS_PER_BLOCK for sp in TUNE_SPILL]
        if given is None
        else [Encoding(int(b), sp) for b, sp in given]
    )
    out: list[Encoding] = []
    seen: set[tuple[int, str | None]] = set()
    for e in [own, *wanted]:
        key = (min(e.dims_per_block, int(d)), e.spill)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


class Budget(NamedTuple):
    """Concrete partition size and default search budget of one index."""

    num_leaves: int
    leaves_to_search: int
    reorder_k: int


def default_num_leaves(n: int) -> int:
    """round(sqrt(n)) leaves (at least 1, at most n)."""
    return max(1, min(n, round(LEAVES_PER_SQRT_N * math.sqrt(n))))


def default_leaves_to_search(num_leaves: int, spilled: bool = False) -> int:
    """ceil(3.5 sqrt(L)) leaves probed (2 sqrt(L) when spilled), at most L: the scanned fraction
    falls as the index grows."""
    c = PROBE_PER_SQRT_LEAVES_SPILLED if spilled else PROBE_PER_SQRT_LEAVES
    return max(1, min(num_leaves, math.ceil(c * math.sqrt(num_leaves))))


def default_reorder_k(k: int = DEFAULT_K) -> int:
    """max(200, 20 k) candidates re-scored exactly."""
    return max(REORDER_MIN, REORDER_PER_NEIGHBOR * k)


def resolve_budget(
    n: int | None,
    d: int,
    k: int = DEFAULT_K,
    *,
    num_leaves: int | None = None,
    leaves_to_search: int | None = None,
    reorder_k: int | None = None,
    spilled: bool = False,
) -> Budget:
    """The (num_leaves, leaves_to_search, reorder_k) an index of n vectors of dimension d uses.

    Values given (not None) are kept; the others follow the default rule: round(sqrt(n)) leaves,
    ceil(3.5 sqrt(num_leaves)) of them probed (2 sqrt(num_leaves) when ``spilled``: SOAR puts every
    vector in two leaves; at most all), max(200, 20 k) candidates re-scored.
    ``n`` may be None when ``num_leaves`` is given (the probe rule depends only on the leaves).
    ``d`` is part of the signature so that a rule depending on it stays a change in this
    function only; the measured rule does not use it.

    >>> resolve_budget(20000, 50)
    Budget(num_leaves=141, leaves_to_search=42, reorder_k=200)
    >>> resolve_budget(None, 50, k=100, num_leaves=10)
    Budget(num_leaves=10, leaves_to_search=10, reorder_k=2000)
    """
    if num_leaves is None:
        if n is None or n < 1:
            raise ValueError(f"the default num_leaves needs a positive number of vectors, got n={n}")
        num_leaves = default_num_leaves(int(n))
    num_leaves = int(num_leaves)
    lts = default_leaves_to_search(num_leaves, spilled) if leaves_to_search is None else int(leaves_to_search)
    rk = default_reorder_k(int(k)) if reorder_k is None else int(reorder_k)
    return Budget(num_leaves, lts, rk)


def training_sample_rows(n: int, num_leaves: int, given: int | None = None) -> int:
    """Rows sampled to train an index of n vectors with ``num_leaves`` leaves.

    ``given`` (the ``training_sample_size`` parameter) when not None, at most n; else the core's
    default, 64 rows per leaf and at least 100,000 (at most n). The rule is the native one
    (``_native.training_sample_rows``), so the sharded index, which gathers the sample itself,
    trains on as many rows as one ``AVQIndex`` would.

    >>> training_sample_rows(1_000_000, 1000), training_sample_rows(50_000, 200, 5000)
    (100000, 5000)
    """
    return int(native_training_sample_rows(int(n), int(num_leaves), int(given or 0)))
