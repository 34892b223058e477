"""Rebuild ``glove50_20k.npz`` from the ann-benchmarks-format GloVe-6B-50d file.

This is a stand-alone maintenance script. It ships next to the data file so that
the subset can be reproduced, but the ``avq_plugin`` package never imports it.

Usage
-----
::

    python make_subset.py /path/to/glove6b-50-angular-200k.hdf5 [-o glove50_20k.npz]

Recipe
------
1. ``train_idx = sort(default_rng(0).choice(n_train, 20000, replace=False))``:
   a seeded random subset of the ``train`` rows, kept in their original order.
2. ``test = test[:500]``: the first 500 queries.
3. Both are rounded to float16, which is how they are stored.
4. Ground truth is computed exactly, in float64, from the float16-rounded
   values cast to float32 (the same arrays a user gets from
   ``avq_plugin.datasets.load_glove_subset``). Three metrics are stored:

   - cosine: distance ``1 - cos(q, x)``, ascending;
   - dot: inner product of the raw (un-normalised) vectors, descending;
   - l2: squared Euclidean distance, ascending.

   Ties are broken by the lower train row id (stable sort).
"""

from __future__ import annotations

import argparse
import hashlib
import os

import numpy as np

N_TRAIN = 20_000
N_TEST = 500
K = 100
SEED = 0


def exact_top_k(train: np.ndarray, test: np.ndarray, k: int = K):
    """Exact top-``k`` neighbours for the cosine, dot and l2 metrics.

    Parameters
    ----------
    train : numpy.ndarray of shape (n, d)
        Database vectors. They are converted to float64 before any arithmetic.
    test : numpy.ndarray of shape (nq, d)
        Query vectors, converted to float64.
    k : int, default=100
        Number of neighbours kept per query.

    Returns
    -------
    dict of str to numpy.ndarray
        ``neighbors_<metric>`` (int32, (nq, k)) and ``distances_cosine``,
        ``scores_dot``, ``distances_l2`` (float32, (nq, k)), best first.
    """
    x = np.asarray(train, dtype=np.float64)
    q = np.asarray(test, dtype=np.float64)
    xn = np.linalg.norm(x, axis=1)
    qn = np.linalg.norm(q, axis=1)
    if np.any(xn == 0) or np.any(qn == 0):
        raise ValueError("zero-norm vector: cosine distance is undefined")

    ip = q @ x.T  # (nq, n)
    keys = {
        "cosine": 1.0 - ip / np.outer(qn, xn),  # ascending
        "dot": -ip,  # ascending == ip descending
        "l2": np.maximum(qn[:, None] ** 2 + xn[None, :] ** 2 - 2.0 * ip, 0.0),
    }
    out = {}
    for metric, key in keys.items():
        # A stable sort breaks ties by the lower row id.
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
        if metric == "l2":
            # Recompute the kept distances directly to avoid cancellation error.
            diff = q[:, None, :] - x[order]
            value = np.einsum("qkd,qkd->qk", diff, diff)
        else:
            value = np.take_along_axis(key, order, axis=1)
        if metric == "dot":
            value = -value
        name = {"cosine": "distances_cosine", "dot": "scores_dot", "l2": "distances_l2"}[metric]
        out[f"neighbors_{metric}"] = order.astype(np.int32)
        out[name] = value.astype(np.float32)
    return out


def make_subset(hdf5_path: str) -> dict:
    """Build every array stored in ``glove50_20k.npz``.

    Parameters
    ----------
    hdf5_path : str
        Path to ``glove6b-50-angular-200k.hdf5`` (ann-benchmarks layout).

    Returns
    -------
    dict of str to numpy.ndarray
        ``train`` (float16, (20000, 50)), ``test`` (float16, (500, 50)) and the
        ground-truth arrays of :func:`exact_top_k`.
    """
    import h5py  # only this maintenance script needs h5py

    with h5py.File(hdf5_path, "r") as f:
        n_train = f["train"].shape[0]
        rng = np.random.default_rng(SEED)
        train_idx = np.sort(rng.choice(n_train, size=N_TRAIN, replace=False))
        train = np.asarray(f["train"][:])[train_idx]
        test = np.asarray(f["test"][:N_TEST])

    train16 = train.astype(np.float16)
    test16 = test.astype(np.float16)
    if not (np.isfinite(train16).all() and np.isfinite(test16).all()):
        raise ValueError("float16 overflow")
    arrays = {"train": train16, "test": test16}
    arrays.update(exact_top_k(train16.astype(np.float32), test16.astype(np.float32)))
    return arrays


def main(argv=None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hdf5", help="path to glove6b-50-angular-200k.hdf5")
    parser.add_argument(
        "-o",
        "--output",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "glove50_20k.npz"),
        help="output .npz path (default: next to this script)",
    )
    args = parser.parse_args(argv)
    arrays = make_subset(args.hdf5)
    np.savez_compressed(args.output, **arrays)
    for name, a in arrays.items():
        digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
        print(f"{name:18s} {str(a.dtype):8s} {str(a.shape):12s} sha256[:16]={digest}")
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
