"""Worker side of leaf-routed sharding: the shard replicas a worker holds, and the tasks on them.

Every replica of a shard is an ``AVQIndex`` kept in a per-process registry of the worker that
holds it, under (index token, shard number). Tasks on a replica are Dask tasks pinned to that
worker (strict worker restrictions), so Dask never copies a shard behind the index's back and
updates reach every replica; the client tracks which workers hold which shard, routes around
dead workers and re-creates lost replicas from a survivor (bytes moved by Dask).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..index import AVQIndex
from .manifest import _check_file, _file_sha256
from .merge import merge_rows

_REGISTRY: dict = {}
_LOCK = threading.Lock()


class ReplicaMissing(LookupError):
    """The worker does not hold the requested replica (it restarted, or the index was released)."""


def _worker_address():
    from distributed import get_worker

    return get_worker().address


def _get(token, j):
    try:
        return _REGISTRY[(token, j)]
    except KeyError:
        raise ReplicaMissing(f"shard {j} of index {token} is not held by this worker") from None


def _put(token, j, index):
    with _LOCK:
        _REGISTRY[(token, j)] = index
    return _info(token, j)


def _info(token, j):
    index = _get(token, j)
    return {
        "shard": j,
        "worker": _worker_address(),
        "ntotal": int(index.ntotal),
        "memory_usage": int(index.memory_usage()),
        "code_size": int(index.code_size),
        "is_mapped": bool(index.is_mapped),
        "pid": os.getpid(),
    }


# ---------------------------------------------------------------------------------- build
def assign_chunk(template, block, sample_rows, probe_width):
    """Leaf of every row of a chunk, and the probed leaves of a few sample rows (for placement)."""
    router = AVQIndex.from_bytes(template[0])
    router.num_threads = 1
    X = np.ascontiguousarray(block, dtype=np.float32)
    leaves = router._probe(X, 1)[:, 0] if len(X) else np.zeros(0, np.int32)
    probes = router._probe(X[sample_rows], probe_width) if len(sample_rows) else None
    return leaves, probes


def chunk_counts(assigned, num_leaves):
    return np.bincount(assigned[0], minlength=num_leaves).astype(np.int64)


def rows_for_shard(block, assigned, leaf_to_shard, j, offset):
    """The rows of a chunk whose leaf belongs to shard j, with their global row numbers as ids."""
    rows = np.flatnonzero(leaf_to_shard[assigned[0]] == j)
    return np.ascontiguousarray(np.asarray(block)[rows], dtype=np.float32), rows.astype(np.int64) + offset


def build(token, j, template, num_threads, *pieces):
    """Shard j from the shared quantizer and its (rows, ids) pieces in row order; registered here."""
    index = AVQIndex.from_bytes(template[0])
    index.num_threads = num_threads
    pieces = [p for p in pieces if len(p[1])]
    if pieces:
        X = np.concatenate([p[0] for p in pieces]) if len(pieces) > 1 else pieces[0][0]
        ids = np.concatenate([p[1] for p in pieces]) if len(pieces) > 1 else pieces[0][1]
        index.add(X, ids)
    return _put(token, j, index)


def to_bytes(token, j):
    return _get(token, j).to_bytes()


def put_bytes(token, j, data, num_threads):
    index = AVQIndex.from_bytes(data)
    index.num_threads = num_threads
    return _put(token, j, index)


def load(token, j, directory, entry, fingerprint, mmap, verify, num_threads, digest):
    what = f"shard {j}"
    path = _check_file(directory, entry, what, verify)
    try:
        index = AVQIndex.load(path, mmap=mmap)
    except ValueError as exc:
        raise ValueError(f"{what} is corrupt ({path}): {exc}") from None
    index.num_threads = num_threads
    if index.ntotal != entry["ntotal"]:
        raise ValueError(f"{what} ({path}) holds {index.ntotal} vectors, the manifest says {entry['ntotal']}")
    if digest(index) != fingerprint:
        raise ValueError(f"{what} ({path}) was not built with this index's quantizer")
    return _put(token, j, index)


def drop(token):
    """Forget every replica of the index on this worker (run on all workers)."""
    with _LOCK:
        for key in [key for key in _REGISTRY if key[0] == token]:
            del _REGISTRY[key]
    return True


def info(token, j):
    return _info(token, j)


# ---------------------------------------------------------------------------------- search
def search(token, Q, k, jobs, metric, num_threads):
    """Routed search of the shards this worker was given, merged here.

    jobs: list of (shard, rows into Q, leaves (len(rows), w) int32, reorder_k (len(rows),)).
    Returns (D, I) for every row of Q (rows no job covers are padding).
    """
    parts = []
    for j, rows, leaves, rk in jobs:
        index = _get(token, j)
        D, I = index._search_leaves(Q[rows], k, leaves, rk, num_threads=num_threads)
        parts.append((rows, D, I))
    if len(parts) == 1 and len(parts[0][0]) == len(Q):
        return parts[0][1], parts[0][2]
    return merge_rows(len(Q), k, parts, metric)


# ---------------------------------------------------------------------------------- updates
def add(token, j, X, ids):
    index = _get(token, j)
    index.add(X, ids)
    return int(index.ntotal)


def contains(token, j, ids):
    return _get(token, j)._contains(ids)


def remove(token, j, ids):
    index = _get(token, j)
    removed = index.remove(ids)
    return removed, index._leaf_sizes()


def save(token, j, directory, name):
    path = os.path.join(directory, name)
    index = _get(token, j)
    index.save(path)  # native: temporary file + rename
    return {"file": name, "bytes": os.path.getsize(path), "sha256": _file_sha256(path), "ntotal": int(index.ntotal)}
