"""The message of a routed search, client to worker and back: a worker's jobs packed into five flat
arrays of the smallest integer types that hold them.

Dask's messages cost CPU on both sides in proportion to their bytes (about 1 GB/s of each side's
CPU on a LocalCluster) and per array they carry. Sent as ``route_queries`` makes them (one tuple of
int64 rows, an int32 leaf matrix padded to the widest row and int64 budgets per shard), the jobs of
10,000 GloVe queries at 16 shards were 2.6 MB per worker, 80 % of it padding, next to 1.7 MB of
queries. Packed: about 0.6 MB in five arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
#: One job as the worker's native search takes it: (shard, query rows, flat leaves, budgets,
#: group, leaf offsets (rows + 1,)).
Job = tuple[int, Array, Array, Array, int, Array]
#: The packed jobs: (spec (J, 3) int64: shard, group, rows; query rows; leaves per row; leaves;
#: budgets).
Packed = tuple[Array, Array, Array, Array, Array]

_INT16_MAX = np.iinfo(np.int16).max
_INT32_MAX = np.iinfo(np.int32).max


def _leaf_type(num_leaves: int) -> np.dtype[Any]:
    # A leaf number and a row's count of leaves are both at most num_leaves.
    return np.dtype(np.int16 if num_leaves <= _INT16_MAX else np.int32)


def pack_jobs(jobs: Sequence[Job], num_queries: int, num_leaves: int) -> Packed:
    """Packs jobs (as ``Job``, each row with 1 to num_leaves leaves) whose rows index a block of
    ``num_queries`` queries. Budgets are at most 2^32 - 1 (``max_reorder_k``): sent as uint32."""
    spec = np.array([(j, g, len(rows)) for j, rows, _, _, g, _ in jobs], np.int64).reshape(-1, 3)
    leaf_t = _leaf_type(num_leaves)
    row_t = np.dtype(np.int32 if num_queries <= _INT32_MAX else np.int64)

    def joined(part: int, dtype: np.dtype[Any]) -> Array:
        arrays = [np.diff(job[5]) if part == 5 else job[part] for job in jobs]
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)

    # (part 5, the offsets, travels as each row's count of leaves)
    return spec, joined(1, row_t), joined(5, leaf_t), joined(2, leaf_t), joined(3, np.dtype(np.uint32))


def unpack_jobs(packed: Packed) -> list[Job]:
    """The jobs of ``pack_jobs``, with the types the native search takes (checked there)."""
    spec, rows, counts, leaves, budgets = (np.asarray(a) for a in packed)
    if spec.ndim != 2 or spec.shape[1] != 3 or len(counts) != len(rows) or len(budgets) != len(rows):
        raise ValueError("a packed search message does not match its spec")
    n = spec[:, 2]
    if (n < 0).any() or int(n.sum()) != len(rows):
        raise ValueError("a packed search message does not match its spec")
    row_end = np.cumsum(n)
    offsets_all = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets_all[1:])
    if offsets_all[-1] != len(leaves):
        raise ValueError("a packed search message does not match its spec")
    out: list[Job] = []
    for (j, g, _), b, e in zip(spec.tolist(), np.concatenate([[0], row_end[:-1]]).tolist(), row_end.tolist()):
        off = offsets_all[b : e + 1]
        out.append(
            (
                int(j),
                rows[b:e].astype(np.int64),
                leaves[off[0] : off[-1]].astype(np.int32),
                budgets[b:e].astype(np.int64),
                int(g),
                off - off[0],
            )
        )
    return out


def compact_ids(I: Array) -> Array:
    """Result ids as int32 when every one fits (the client's merge takes any integer type)."""
    if I.size and int(I.max()) <= _INT32_MAX and int(I.min()) >= -1:
        return I.astype(np.int32)
    return I
