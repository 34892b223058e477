"""Benchmark datasets: the shipped GloVe subset and ann-benchmarks HDF5 files.

Two loaders return the same :class:`Dataset` record, in the ann-benchmarks
conventions (``metric`` is ``"angular"`` or ``"euclidean"``; ``distances`` are
cosine distances ``1 - cos`` or plain, non-squared Euclidean distances):

- :func:`load_glove_subset` reads ``avq_plugin/data/glove50_20k.npz``, a
  20,000 x 50 slice of Stanford GloVe 6B with 500 queries (see
  ``avq_plugin/data/README.md`` for its provenance and licence);
- :func:`load_hdf5` reads any ann-benchmarks file; it needs ``h5py`` from the
  ``bench`` extra;
- :func:`load_npy` reads a pair of ``.npy`` files (database and queries).

Files without ground truth give a :class:`Dataset` whose ``neighbors`` and
``distances`` are None; ``avq_plugin.bench.ensure_ground_truth`` computes it.

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
    "load_embedding_subset",
    "load_hdf5",
    "load_npy",
    "normalize_metric",
]

#: Accepted metric names and their ann-benchmarks spelling.
METRIC_ALIASES = {"angular": "angular", "cosine": "angular", "euclidean": "euclidean", "l2": "euclidean"}


def normalize_metric(metric: str) -> str:
    """Map ``"angular"``/``"cosine"`` to ``"angular"`` and ``"euclidean"``/``"l2"`` to ``"euclidean"``.

    Raises
    ------
    ValueError
        For any other name.
    """
    if not isinstance(metric, str) or metric.lower() not in METRIC_ALIASES:
        raise ValueError(f"metric must be one of {', '.join(METRIC_ALIASES)}, got {metric!r}")
    return METRIC_ALIASES[metric.lower()]


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
    neighbors : numpy.ndarray of int64, shape (nq, k_gt), or None
        Exact nearest ``train`` row ids per query, nearest first; None when the
        source has no ground truth.
    distances : numpy.ndarray of float32, shape (nq, k_gt), or None
        Their distances in ``metric`` units, ascending (None with ``neighbors``).

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
    neighbors: np.ndarray | None
    distances: np.ndarray | None

    @property
    def has_ground_truth(self) -> bool:
        """True when ``neighbors`` and ``distances`` are present."""
        return self.neighbors is not None and self.distances is not None

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

    def subsample_queries(self, max_queries: int | None) -> Dataset:
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
            neighbors=None if self.neighbors is None else np.ascontiguousarray(self.neighbors[:max_queries]),
            distances=None if self.distances is None else np.ascontiguousarray(self.distances[:max_queries]),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, metric={self.metric!r}, "
            f"train={self.train.shape}, test={self.test.shape}, "
            f"ground_truth_k={self.neighbors.shape[1] if self.neighbors is not None and self.distances is not None else None})"
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


#: The sentence-embedding test subset: a source checkout's ``benchmarks/embeddings/data/`` (kept out of the wheel).
EMBEDDING_SUBSET_FILE = "debian-minilm-384-20k.npz"
#: Environment variable naming the embedding subset file where no source checkout is at hand.
EMBEDDING_SUBSET_ENV = "AVQ_EMBEDDING_SUBSET"


def _embedding_subset_path(path: str | os.PathLike[str] | None) -> str:
    if path is not None:
        return os.fspath(path)
    if os.environ.get(EMBEDDING_SUBSET_ENV):
        return os.environ[EMBEDDING_SUBSET_ENV]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidate = os.path.join(here, "benchmarks", "embeddings", "data", EMBEDDING_SUBSET_FILE)
    if os.path.exists(candidate):
        return candidate
    raise FileNotFoundError(
        f"{EMBEDDING_SUBSET_FILE} is not in the wheel: pass path= (a source checkout has it in "
        f"benchmarks/embeddings/data/) or set {EMBEDDING_SUBSET_ENV}"
    )


def load_embedding_subset(path: str | os.PathLike | None = None) -> Dataset:
    """Load the 20,000 x 384 sentence-embedding subset (angular) with its exact ground truth.

    Sentences of Debian's English package descriptions embedded with
    all-MiniLM-L6-v2 (see ``benchmarks/embeddings/README.md``): the first 20,000
    database rows and the first 1,000 held-out queries of the development set,
    stored as per-row int8 codes and float32 scales (``x = codes * scale``,
    cosine error below 1e-4) and returned de-quantised as float32; the ground
    truth was computed from exactly these float32 values.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The ``.npz`` file. Default: ``$AVQ_EMBEDDING_SUBSET``, else
        ``benchmarks/embeddings/data/debian-minilm-384-20k.npz`` beside the
        package in a source checkout (the file is not in the wheel).

    Returns
    -------
    Dataset
        ``name="debian-minilm-384-20k"``, ``metric="angular"``, ``train`` float32
        (20000, 384), ``test`` float32 (1000, 384), ``neighbors`` int64
        (1000, 100), ``distances`` float32 (1000, 100), ascending ``1 - cos``.

    Raises
    ------
    FileNotFoundError
        If no file is found.
    """
    with np.load(_embedding_subset_path(path)) as z:
        train = z["train_codes"].astype(np.float32) * z["train_scale"].astype(np.float32)[:, None]
        test = z["test_codes"].astype(np.float32) * z["test_scale"].astype(np.float32)[:, None]
        neighbors = z["neighbors"].astype(np.int64)
        distances = z["distances"].astype(np.float32)
    return Dataset(
        name="debian-minilm-384-20k",
        metric="angular",
        train=np.ascontiguousarray(train),
        test=np.ascontiguousarray(test),
        neighbors=neighbors,
        distances=distances,
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


def load_hdf5(path: str | os.PathLike, metric: str | None = None) -> Dataset:
    """Load an ann-benchmarks HDF5 file (``train``, ``test``, ``neighbors``, ``distances``).

    Parameters
    ----------
    path : str or os.PathLike
        File in the layout written by ann-benchmarks' ``write_output``; its
        ``distance`` attribute must be ``"angular"`` or ``"euclidean"`` unless
        ``metric`` is given.
    metric : str, optional
        Use this metric (``angular``/``cosine`` or ``euclidean``/``l2``)
        instead of the file's; when it differs from the file's, the file's
        ground truth does not apply and is dropped.

    Returns
    -------
    Dataset
        Named after the file stem. ``train``/``test`` are converted to
        C-contiguous float32 (ann-benchmarks' generated ``random-*`` files are
        float64), ``neighbors`` to int64 and ``distances`` to float32; both are
        None when the file has no ``neighbors``. A file with ``neighbors`` but no
        ``distances`` gets the exact distances of those neighbours.

    Raises
    ------
    ImportError
        If h5py is not installed (``pip install avq-plugin[bench]``).
    FileNotFoundError
        If the file does not exist.
    ValueError
        For another distance (hamming, jaccard, ...), a file that is not HDF5,
        missing ``train``/``test`` or mismatched shapes.
    """
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_hdf5 needs h5py, which is part of the 'bench' extra: pip install 'avq-plugin[bench]'"
        ) from exc

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        file_metric = f.attrs.get("distance")
        if isinstance(file_metric, bytes):
            file_metric = file_metric.decode()
        if metric is None:
            if file_metric not in ("angular", "euclidean"):
                raise ValueError(
                    f"{path}: distance attribute {file_metric!r} is not supported "
                    "(expected 'angular' or 'euclidean'; pass --metric to choose one)"
                )
            metric = file_metric
        else:
            metric = normalize_metric(metric)
        missing = [k for k in ("train", "test") if k not in f]
        if missing:
            raise ValueError(f"{path}: missing datasets {missing}")
        train = np.ascontiguousarray(f["train"][:], dtype=np.float32)
        test = np.ascontiguousarray(f["test"][:], dtype=np.float32)
        neighbors = np.asarray(f["neighbors"][:]).astype(np.int64) if "neighbors" in f else None
        distances = (
            np.ascontiguousarray(f["distances"][:], dtype=np.float32)
            if "distances" in f and neighbors is not None
            else None
        )

    _check_pair(path, train, test)
    if metric != file_metric:
        neighbors = distances = None
    if neighbors is not None:
        if neighbors.ndim != 2 or neighbors.shape[0] != test.shape[0]:
            raise ValueError(f"{path}: neighbors {neighbors.shape} do not match test {test.shape}")
        if distances is None:
            distances = _exact_distances(train, test, neighbors, metric)
        elif distances.shape != neighbors.shape:
            raise ValueError(
                f"{path}: neighbors {neighbors.shape} / distances {distances.shape} do not match test {test.shape}"
            )
    name = os.path.splitext(os.path.basename(path))[0]
    return Dataset(name, metric, train, test, neighbors, distances)


def _check_pair(source: str, train: np.ndarray, test: np.ndarray) -> None:
    if train.ndim != 2 or test.ndim != 2:
        raise ValueError(f"{source}: train {train.shape} and test {test.shape} must both be 2-D")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"{source}: the database has d={train.shape[1]} but the queries have d={test.shape[1]}")
    if train.shape[0] == 0 or test.shape[0] == 0:
        raise ValueError(f"{source}: no database vectors or no queries")
    if not (np.isfinite(train).all() and np.isfinite(test).all()):
        raise ValueError(f"{source}: the vectors contain NaN or infinite values")


def _exact_distances(train: np.ndarray, test: np.ndarray, ids: np.ndarray, metric: str) -> np.ndarray:
    """float32 distances (ann-benchmarks units) of the given neighbour ids, computed in float64."""
    x = train.astype(np.float64)[ids]
    q = test.astype(np.float64)[:, None, :]
    if metric == "angular":
        dots = np.einsum("qkd,qkd->qk", x, np.broadcast_to(q, x.shape))
        norms = np.linalg.norm(x, axis=2) * np.linalg.norm(q, axis=2)
        dist = 1.0 - dots / np.where(norms == 0, 1.0, norms)
    else:
        dist = np.sqrt(((x - q) ** 2).sum(axis=2))
    return dist.astype(np.float32)


def load_npy(train_path: str | os.PathLike, test_path: str | os.PathLike, metric: str) -> Dataset:
    """Load a database and its queries from two ``.npy`` files (no ground truth).

    Parameters
    ----------
    train_path, test_path : str or os.PathLike
        2-D arrays of numbers, the same number of columns.
    metric : str
        ``"angular"`` (or ``"cosine"``) or ``"euclidean"`` (or ``"l2"``).

    Returns
    -------
    Dataset
        Named after the database file's stem, float32 C-contiguous arrays,
        ``neighbors = distances = None``.

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    ValueError
        For an unknown metric, unreadable files, non-numeric or non-2-D arrays,
        or mismatched dimensions.
    """
    metric = normalize_metric(metric)
    arrays = []
    for p in (train_path, test_path):
        p = os.fspath(p)
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: no such file")
        try:
            a = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{p}: not a readable .npy file ({exc})") from None
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
            raise ValueError(f"{p}: expected one array of numbers")
        if a.ndim != 2:
            raise ValueError(f"{p}: expected a 2-D array (n, d), got shape {a.shape}")
        arrays.append(np.ascontiguousarray(a, dtype=np.float32))
    train, test = arrays
    _check_pair(f"{os.fspath(train_path)} / {os.fspath(test_path)}", train, test)
    name = os.path.splitext(os.path.basename(os.fspath(train_path)))[0]
    return Dataset(name, metric, train, test, None, None)
