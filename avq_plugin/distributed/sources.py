"""Reading the input of a sharded index: dask arrays, lists of .npy / HDF5 files, samples."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

try:
    import dask
    import dask.array as da

except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError('avq_plugin.distributed needs Dask: pip install "avq-plugin[distributed]"') from exc

Array = NDArray[Any]
#: One input file: (path, HDF5 dataset or None for .npy).
Source = tuple[str, str | None]

# Rows per chunk when a list of files is read (a chunk is the unit of reading and sampling).
_FILE_CHUNK_ROWS = 1 << 18


def _read_source_shape(spec: Source) -> tuple[int, ...]:
    """(n, d) of a .npy file or an HDF5 dataset, read from the header only."""
    path, dataset = spec
    if dataset is None:
        arr = np.load(path, mmap_mode="r")
        shape = arr.shape
    else:
        import h5py

        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise ValueError(f"{path}: no dataset {dataset!r} (has {sorted(f.keys())})")
            shape = f[dataset].shape
    if len(shape) != 2:
        raise ValueError(f"{path}: expected a 2-D array of vectors, got shape {shape}")
    return tuple(int(s) for s in shape)


def _read_source_rows(spec: Source, start: int, stop: int) -> Array:
    """Rows [start, stop) of a .npy file or an HDF5 dataset, as float32."""
    path, dataset = spec
    if dataset is None:
        rows = np.load(path, mmap_mode="r")[start:stop]
    else:
        import h5py

        with h5py.File(path, "r") as f:
            rows = f[dataset][start:stop]
    return np.ascontiguousarray(rows, dtype=np.float32)


def _take_rows(block: ArrayLike, rows: Array) -> Array:
    return np.ascontiguousarray(np.asarray(block)[rows], dtype=np.float32)


def _as_sources(X: object) -> list[Source] | None:
    """A list of paths -> [(path, dataset or None)]; anything else -> None."""
    if isinstance(X, (str, os.PathLike)):
        X = [X]
    if not isinstance(X, (list, tuple)) or not X:
        return None
    if not all(isinstance(p, (str, os.PathLike, tuple)) for p in X):
        return None
    specs: list[Source] = []
    for item in X:
        dataset: str | None
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], str):
                raise ValueError(f"an HDF5 source is (path, dataset name), got {item!r}")
            path, dataset = os.fspath(item[0]), item[1]
        else:
            path = os.fspath(item)
            dataset = None if path.endswith(".npy") else "train"
        if dataset is None and not path.endswith(".npy"):
            raise ValueError(f"{path}: only .npy files and HDF5 datasets can be read")
        if dataset is not None and not path.endswith((".h5", ".hdf5", ".hdf")):
            raise ValueError(f"{path}: expected a .npy, .h5 or .hdf5 file")
        specs.append((path, dataset))
    return specs


def _sources_to_dask(specs: list[Source], client: Any) -> tuple[Any, list[int]]:
    shapes = client.gather(client.map(_read_source_shape, specs, pure=False))
    dims = {s[1] for s in shapes}
    if len(dims) != 1:
        raise ValueError(f"the files have different dimensions: {[s[1] for s in shapes]}")
    d = dims.pop()
    pieces, file_bounds, offset = [], [0], 0
    for spec, (n, _) in zip(specs, shapes):
        for a in range(0, n, _FILE_CHUNK_ROWS):
            b = min(n, a + _FILE_CHUNK_ROWS)
            name = f"avq-read-{dask.base.tokenize(spec, a, b)}"
            part = dask.delayed(_read_source_rows, pure=True)(spec, a, b, dask_key_name=name)
            pieces.append(da.from_delayed(part, shape=(b - a, d), dtype=np.float32))
        offset += n
        file_bounds.append(offset)
    pieces = [p for p in pieces if p.shape[0]]
    if not pieces:
        raise ValueError("the files hold no vectors")
    return da.concatenate(pieces, axis=0), file_bounds


def _allocate(total: int, sizes: Sequence[int]) -> Array:
    """Splits `total` over chunks proportionally to `sizes` (largest remainders, deterministic)."""
    size = np.asarray(sizes, np.int64)
    exact = total * size / size.sum()
    alloc = np.floor(exact).astype(np.int64)
    rest = int(total - alloc.sum())
    if rest:
        order = np.lexsort((np.arange(size.size), -(exact - alloc)))
        alloc[order[:rest]] += 1
    return np.minimum(alloc, size)
