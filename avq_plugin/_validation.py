"""Every input check of the public API, in one place.

Python normalises, C++ asserts: arrays reaching the native module are always float32 (or
int64 ids), C-contiguous and of the right shape; the binding rejects anything else with a
TypeError instead of silently converting it.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from . import _native

METRICS = ("dot", "cosine", "l2")

#: Limits of every parameter and value, defined once in the native core (native/src/common.h,
#: ``limits``) and used by every check below: max_leaves, max_leaves_to_search, max_reorder_k,
#: max_k, max_threads, max_training_sample_size, max_iterations, max_seed, max_dim, and the
#: accepted numeric range of vectors under dot and l2 (max_abs_value, min_data_norm).
LIMITS: dict[str, Any] = dict(_native.limits())  # ints, except the float bounds of vector values
# The core's rule for the rows sampled to train an index (used through _params.training_sample_rows).
native_training_sample_rows = _native.training_sample_rows
REORDER_MODES = ("float32", "float16", "int8", "none")


def check_metric(metric: object) -> str:
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


@overload
def check_int(
    name: str, value: object, *, minimum: int | None = ..., maximum: int | None = ..., allow_none: Literal[False] = ...
) -> int: ...
@overload
def check_int(
    name: str, value: object, *, minimum: int | None = ..., maximum: int | None = ..., allow_none: bool
) -> int | None: ...
def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None, allow_none: bool = False
) -> int | None:
    """An integer parameter (bools and floats are rejected)."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


@overload
def check_float(
    name: str,
    value: object,
    *,
    minimum: float | None = ...,
    exclusive_minimum: float | None = ...,
    allow_none: Literal[False] = ...,
) -> float: ...
@overload
def check_float(
    name: str,
    value: object,
    *,
    minimum: float | None = ...,
    exclusive_minimum: float | None = ...,
    allow_none: bool,
) -> float | None: ...
def check_float(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    exclusive_minimum: float | None = None,
    allow_none: bool = False,
) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if exclusive_minimum is not None and value <= exclusive_minimum:
        raise ValueError(f"{name} must be > {exclusive_minimum}, got {value}")
    return value


def resolve_threads(num_threads: object, name: str = "num_threads") -> int:
    """None or -1: every core of the machine; otherwise an integer in [1, max_threads]."""
    all_cores = min(os.cpu_count() or 1, LIMITS["max_threads"])
    if num_threads is None:
        return all_cores
    n = check_int(name, num_threads)
    if n == -1:
        return all_cores
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, -1 or None, got {n}")
    if n > LIMITS["max_threads"]:
        raise ValueError(f"{name} must be <= {LIMITS['max_threads']}, got {n}")
    return n


def check_dim(value, name="d"):
    return check_int(name, value, minimum=1, maximum=LIMITS["max_dim"])


def check_dims_per_block(value, name="dims_per_block", allow_none=True):
    return check_int(name, value, minimum=1, maximum=LIMITS["max_dims_per_block"], allow_none=allow_none)


def check_layouts(value: object) -> str | list[tuple[int, str | None]]:
    """``layouts`` of ``AVQIndex.tune``: "auto", or a non-empty sequence of (dims_per_block, spill)
    pairs with spill None, "none" or "soar" (returned with "none" as None)."""
    if isinstance(value, str):
        if value == "auto":
            return value
        raise ValueError(f"layouts must be 'auto' or a list of (dims_per_block, spill) pairs, got {value!r}")
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"layouts must be 'auto' or a list of (dims_per_block, spill) pairs, got {type(value).__name__}"
        ) from None
    if not items:
        raise ValueError("layouts must not be empty: give 'auto' or (dims_per_block, spill) pairs")
    out: list[tuple[int, str | None]] = []
    for item in items:
        if not isinstance(item, (tuple, list)):
            raise TypeError(f"layouts: each layout must be a (dims_per_block, spill) pair, got {item!r}")
        if len(item) != 2:
            raise ValueError(f"layouts: each layout must be a (dims_per_block, spill) pair, got {item!r}")
        dims = check_dims_per_block(item[0], "layouts: dims_per_block", allow_none=False)
        spill = item[1]
        if spill is not None and not (isinstance(spill, str) and spill in ("none", "soar")):
            raise ValueError(f"layouts: spill must be None, 'none' or 'soar', got {spill!r}")
        out.append((dims, None if spill in (None, "none") else "soar"))
    return out


def check_num_leaves(value, name="num_leaves"):
    return check_int(name, value, minimum=1, maximum=LIMITS["max_leaves"], allow_none=True)


def check_leaves_to_search(value, name="leaves_to_search", allow_none=True):
    return check_int(name, value, minimum=1, maximum=LIMITS["max_leaves_to_search"], allow_none=allow_none)


def check_reorder_k(value, name="reorder_k", allow_none=True):
    return check_int(name, value, minimum=1, maximum=LIMITS["max_reorder_k"], allow_none=allow_none)


def check_leaf_margin(value, name="leaf_margin"):
    """search's leaf_margin: None (off) or a finite number >= 0 (the native search rejects it
    under metric 'l2')."""
    return check_float(name, value, minimum=0.0, allow_none=True)


def check_training_sample_size(value, name="training_sample_size"):
    return check_int(name, value, minimum=1, maximum=LIMITS["max_training_sample_size"], allow_none=True)


def check_iterations(name, value, minimum=0):
    return check_int(name, value, minimum=minimum, maximum=LIMITS["max_iterations"])


def check_seed(value, name="seed"):
    return check_int(name, value, minimum=0, maximum=LIMITS["max_seed"])


def as_bytes(data, name="data"):
    """A serialized index as bytes; anything else is a TypeError before any allocation."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{name} must be bytes, bytearray or memoryview, got {type(data).__name__}")


class Checked:
    """A validated attribute: every assignment (constructor, setter, unpickling, loading) is
    checked by ``check(value)``, whose result is stored."""

    def __init__(self, check):
        self.check = check

    def __set_name__(self, owner, name):
        self.name = name
        self.slot = "_checked_" + name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        try:
            return obj.__dict__[self.slot]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = self.check(value)


def _to_array(X: Any, name: str) -> np.ndarray:
    if type(X) is np.ndarray:
        return X
    if isinstance(X, np.ndarray):
        # Subclasses (masked arrays, np.matrix): validate exactly what native code will read,
        # the underlying data (a mask hides NaN from isfinite but not from the index).
        return np.asarray(X)
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name}: sparse matrices are not supported; pass a dense array")
    try:
        return np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to a numeric array: {exc}") from None


def as_float_matrix(
    X: object, name: str = "X", *, d: int | None = None, allow_1d: bool = False, nonzero_rows: bool = False
) -> npt.NDArray[np.float32]:
    """Return X as a C-contiguous float32 (n, d) array, or raise TypeError/ValueError.

    float64 and integer inputs are converted explicitly; bool, complex, string and object
    arrays are rejected. A 1-D array is one row when ``allow_1d`` (queries), else rejected
    with scikit-learn's wording.
    """
    A = _to_array(X, name)
    kind = A.dtype.kind
    if kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype {A.dtype}")
    if A.ndim == 1 and allow_1d:
        A = A.reshape(1, -1)
    if A.ndim != 2:
        if A.ndim == 1:
            raise ValueError(
                f"Expected 2D array for {name}, got 1D array instead: reshape your data with "
                "X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample"
            )
        raise ValueError(f"{name} must be a 2-D array (n, d), got {A.ndim} dimensions")
    if A.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 rows")
    if A.shape[1] == 0:
        raise ValueError(f"{name} has 0 columns")
    if d is not None and A.shape[1] != d:
        raise ValueError(f"{name} has {A.shape[1]} features, but the index expects d={d}")
    if A.dtype != np.float32 or not A.flags.c_contiguous:
        if kind == "f" and A.dtype.itemsize > 4:
            with np.errstate(over="ignore"):
                B = np.ascontiguousarray(A, dtype=np.float32)
            if not np.isfinite(B).all() and np.isfinite(A).all():
                raise ValueError(f"{name} has values too large for float32")
            A = B
        else:
            A = np.ascontiguousarray(A, dtype=np.float32)
    if not np.isfinite(A).all():
        bad = ~np.isfinite(A)
        what = "NaN" if np.isnan(A[bad]).any() else "infinite values"
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{name} contains {what} (first in row {row})")
    if nonzero_rows:
        zero = ~A.any(axis=1)
        if zero.any():
            raise ValueError(
                f"{name} has an all-zero row (row {int(np.argmax(zero))}), which has no direction "
                "under the cosine metric"
            )
    return A


@overload
def as_ids(ids: None, n: int | None, name: str = ..., *, unique: bool = ..., reject_padding: bool = ...) -> None: ...
@overload
def as_ids(
    ids: npt.ArrayLike, n: int | None, name: str = ..., *, unique: bool = ..., reject_padding: bool = ...
) -> npt.NDArray[np.int64]: ...
@overload
def as_ids(
    ids: npt.ArrayLike | None, n: int | None, name: str = ..., *, unique: bool = ..., reject_padding: bool = ...
) -> npt.NDArray[np.int64] | None: ...
def as_ids(
    ids: object, n: int | None, name: str = "ids", *, unique: bool = True, reject_padding: bool = True
) -> npt.NDArray[np.int64] | None:
    """Return ids as a 1-D int64 array of length n (None stays None)."""
    if ids is None:
        return None
    A = _to_array(ids, name)
    if A.size == 0 and A.ndim == 1:
        A = A.astype(np.int64)  # [] is float64 to numpy
    if A.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {A.dtype}")
    if A.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got {A.ndim} dimensions")
    if n is not None and A.shape[0] != n:
        raise ValueError(f"{name} has {A.shape[0]} entries, but there are {n} vectors")
    if A.dtype.kind == "u" and A.size and A.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} has values beyond the int64 range")
    A = np.ascontiguousarray(A, dtype=np.int64)
    if reject_padding and A.size and (A == -1).any():
        raise ValueError(f"{name} contains -1, which is reserved for padding in search results")
    if unique and A.size:
        s = np.sort(A)
        dup = s[1:][s[1:] == s[:-1]]
        if dup.size:
            raise ValueError(f"{name} has duplicates (e.g. {int(dup[0])})")
    return A


# Results are allocated up front (nq * k * 12 bytes): refuse absurd requests instead of letting
# the operating system kill the process.
MAX_RESULT_BYTES = 8 << 30


def check_k(k: object, name: str = "k") -> int:
    return check_int(name, k, minimum=1, maximum=LIMITS["max_k"])


def check_result_size(nq: int, k: int) -> None:
    if nq * k * 12 > MAX_RESULT_BYTES:
        raise ValueError(
            f"k={k} for {nq} queries needs {nq * k * 12 / 2**30:.1f} GiB of results; "
            f"the limit is {MAX_RESULT_BYTES >> 30} GiB (search in smaller batches)"
        )
