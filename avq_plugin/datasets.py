"""Benchmark datasets: the shipped GloVe subset and ann-benchmarks HDF5 files.

Two loaders return the same :class:`Dataset` record, in the ann-benchmarks
conventions (``metric`` is ``"angular"`` or ``"euclidean"``; ``distances`` are
cosine distances ``1 - cos`` or plain, non-squared Euclidean distances):

- :func:`load_glove_subset` reads ``avq_plugin/data/glove50_20k.npz``, a
  20,000 x 50 slice of Stanford GloVe 6B with 500 queries (see
  ``avq_plugin/data/README.md`` for its provenance and licence);
- :func:`load_hdf5` reads any ann-benchmarks file; it needs ``h5py`` from the
  ``bench`` extra.

:func:`load_glove_subset_ground_truth` gives the subset's exact neighbours for
the three metrics of :class:`avq_plugin.AVQIndex` in that index's own score
convention.

This module only needs NumPy; it never imports the compiled extension.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = [
    "Dataset",
    "GLOVE_SUBSET_FILE",
    "load_glove_subset",
    "load_glove_subset_ground_truth",
    "load_hdf5",
]

#: File name of the shipped GloVe subset inside ``avq_plugin/data/``.
GLOVE_SUBSET_FILE = "glove50_20k.npz"

_GT_KEYS = {
    "cosine": ("neighbors_cosine", "distances_cosine"),
    "dot": ("neighbors_dot", "scores_dot"),
    "l2": ("neighbors_l2", "distances_l2"),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split with exact ground truth, in ann-benchmarks conventions.

    Parameters
    ----------
    name : str
        Short label, e.g. ``"glove50-20k"`` or the HDF5 file's stem.
    metric : {"angular", "euclidean"}
        ann-benchmarks distance: ``"angular"`` is the cosine distance
        ``1 - cos(q, x)``, ``"euclidean"`` the plain (non-squared) L2 distance.
    train : numpy.ndarray of float32, shape (n, d)
        Database vectors, C-contiguous.
    test : numpy.ndarray of float32, shape (nq, d)
        Query vectors, C-contiguous.
    neighbors : numpy.ndarray of int64, shape (nq, k_gt)
        Exact nearest ``train`` row ids per query, nearest first.
    distances : numpy.ndarray of float32, shape (nq, k_gt)
        Their distances in ``metric`` units, ascending.

    Notes
    -----
    Equality compares identity (``eq=False``): element-wise comparison of the
    arrays is rarely what one wants from ``==``.

    Examples
    --------
    >>> ds = load_glove_subset()
    >>> ds.metric, ds.train.shape, ds.neighbors.shape
    ('angular', (20000, 50), (500, 100))
    """

    name: str
    metric: str
    train: np.ndarray
    test: np.ndarray
    neighbors: np.ndarray
    distances: np.ndarray

    @property
    def n_train(self) -> int:
        """Number of database vectors."""
        return int(self.train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of queries."""
        return int(self.test.shape[0])

    @property
    def dim(self) -> int:
        """Vector dimensionality ``d``."""
        return int(self.train.shape[1])

    def subsample_queries(self, max_queries: int | None) -> "Dataset":
        """Return a dataset restricted to the first ``max_queries`` queries.

        Parameters
        ----------
        max_queries : int or None
            Number of queries to keep. ``None`` or a value >= ``n_test``
            returns ``self`` unchanged.

        Returns
        -------
        Dataset
            A dataset sharing ``train`` with ``self``.

        Raises
        ------
        ValueError
            If ``max_queries`` is smaller than 1.
        """
        if max_queries is None or max_queries >= self.n_test:
            return self
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries}")
        return Dataset(
            name=self.name,
            metric=self.metric,
            train=self.train,
            test=np.ascontiguousarray(self.test[:max_queries]),
            neighbors=np.ascontiguousarray(self.neighbors[:max_queries]),
            distances=np.ascontiguousarray(self.distances[:max_queries]),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, metric={self.metric!r}, "
            f"train={self.train.shape}, test={self.test.shape}, "
            f"ground_truth_k={self.neighbors.shape[1]})"
        )


def _read_subset_npz() -> dict:
    """Read every array of the shipped ``.npz`` into memory."""
    resource = resources.files("avq_plugin") / "data" / GLOVE_SUBSET_FILE
    if not resource.is_file():
        raise FileNotFoundError(
            f"avq_plugin/data/{GLOVE_SUBSET_FILE} is missing from this installation; "
            "rebuild it with avq_plugin/data/make_subset.py"
        )
    with resources.as_file(resource) as path, np.load(path) as z:
        return {key: z[key] for key in z.files}


def load_glove_subset() -> Dataset:
    """Load the shipped 20,000 x 50 GloVe subset as an angular dataset.

    The vectors are stored as float16 and returned as their exact float32
    casts; the ground truth was computed from exactly these values (see
    ``avq_plugin/data/README.md``).

    Returns
    -------
    Dataset
        ``name="glove50-20k"``, ``metric="angular"``, ``train`` float32
        (20000, 50), ``test`` float32 (500, 50), ``neighbors`` int64
        (500, 100) and ``distances`` float32 (500, 100) holding the cosine
        distances ``1 - cos``, ascending.

    Examples
    --------
    >>> ds = load_glove_subset()
    >>> ds.train.dtype, ds.distances.dtype, ds.neighbors.dtype
    (dtype('float32'), dtype('float32'), dtype('int64'))
    >>> bool((np.diff(ds.distances, axis=1) >= 0).all())
    True
    """
    z = _read_subset_npz()
    return Dataset(
        name="glove50-20k",
        metric="angular",
        train=np.ascontiguousarray(z["train"], dtype=np.float32),
        test=np.ascontiguousarray(z["test"], dtype=np.float32),
        neighbors=z["neighbors_cosine"].astype(np.int64),
        distances=z["distances_cosine"].astype(np.float32),
    )


def load_glove_subset_ground_truth(metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-100 neighbours of the shipped GloVe subset for one metric.

    Scores follow the convention of the ``D`` array returned by
    :meth:`avq_plugin.AVQIndex.search`, so they can be compared with it
    directly.

    Parameters
    ----------
    metric : {"cosine", "dot", "l2"}
        ``"cosine"``: cosine similarity, descending; ``"dot"``: inner product
        of the raw (un-normalised) vectors, descending; ``"l2"``: squared
        Euclidean distance, ascending.

    Returns
    -------
    neighbors : numpy.ndarray of int64, shape (500, 100)
        ``train`` row ids, best first.
    scores : numpy.ndarray of float32, shape (500, 100)
        Their scores in the convention above.

    Raises
    ------
    ValueError
        If ``metric`` is not one of the three names.

    Notes
    -----
    The file stores the cosine *distance* ``1 - cos`` (ann-benchmarks'
    convention, as in :func:`load_glove_subset`); this function returns
    ``1 - distance``, computed in float64 and rounded once to float32.

    Examples
    --------
    >>> ids, sims = load_glove_subset_ground_truth("cosine")
    >>> ids.shape, bool((np.diff(sims, axis=1) <= 0).all())
    ((500, 100), True)
    """
    if metric not in _GT_KEYS:
        raise ValueError(f"metric must be one of {sorted(_GT_KEYS)}, got {metric!r}")
    ids_key, val_key = _GT_KEYS[metric]
    z = _read_subset_npz()
    values = z[val_key].astype(np.float64)
    if metric == "cosine":
        values = 1.0 - values
    return z[ids_key].astype(np.int64), values.astype(np.float32)


def load_hdf5(path: str | os.PathLike) -> Dataset:
    """Load an ann-benchmarks HDF5 file (``train``, ``test``, ``neighbors``, ``distances``).

    Parameters
    ----------
    path : str or os.PathLike
        File in the layout written by ann-benchmarks' ``write_output``; its
        ``distance`` attribute must be ``"angular"`` or ``"euclidean"``.

    Returns
    -------
    Dataset
        Named after the file stem. ``train``/``test`` are converted to
        C-contiguous float32 (ann-benchmarks' generated ``random-*`` files are
        float64), ``neighbors`` to int64 and ``distances`` to float32.

    Raises
    ------
    ImportError
        If h5py is not installed (``pip install avq-plugin[bench]``).
    ValueError
        For another distance (hamming, jaccard, ...) or missing keys.
    """
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_hdf5 needs h5py, which is part of the 'bench' extra: "
            "pip install 'avq-plugin[bench]'"
        ) from exc

    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        metric = f.attrs.get("distance")
        if isinstance(metric, bytes):
            metric = metric.decode()
        if metric not in ("angular", "euclidean"):
            raise ValueError(
                f"{path}: distance attribute {metric!r} is not supported "
                "(expected 'angular' or 'euclidean')"
            )
        missing = [k for k in ("train", "test", "neighbors", "distances") if k not in f]
        if missing:
            raise ValueError(f"{path}: missing datasets {missing}")
        train = np.ascontiguousarray(f["train"][:], dtype=np.float32)
        test = np.ascontiguousarray(f["test"][:], dtype=np.float32)
        neighbors = np.asarray(f["neighbors"][:]).astype(np.int64)
        distances = np.ascontiguousarray(f["distances"][:], dtype=np.float32)

    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(f"{path}: train {train.shape} and test {test.shape} do not match")
    if neighbors.shape != distances.shape or neighbors.shape[0] != test.shape[0]:
        raise ValueError(
            f"{path}: neighbors {neighbors.shape} / distances {distances.shape} "
            f"do not match test {test.shape}"
        )
    name = os.path.splitext(os.path.basename(path))[0]
    return Dataset(name, metric, train, test, neighbors, distances)
