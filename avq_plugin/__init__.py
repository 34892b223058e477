"""avq-plugin: anisotropic vector quantization (ScaNN's score-aware loss) as a native ANN index.

Public objects: AVQIndex, ExactIndex, IndexAVQ (Faiss-shaped; faiss itself is optional),
write_index, read_index, build_info, set_simd_level, simd_level, eta_exact, eta_scann, __version__;
with scikit-learn installed (the "sklearn" extra), also the estimators AVQNearestNeighbors and
AVQKNeighborsTransformer of avq_plugin.neighbors, imported on first use.
"""

from __future__ import annotations

from importlib.metadata import version as _dist_version
from typing import Any

try:
    from . import _native
except ImportError as exc:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        "avq_plugin's compiled module is missing. If you are running from the source tree, "
        "install the package (pip install .) and run from another directory, or use an "
        f"in-place build. Original error: {exc}"
    ) from exc

from .exact import ExactIndex
from .faiss import IndexAVQ, SearchParametersAVQ, read_index, write_index
from .index import AVQIndex

# One source: the version in pyproject.toml, read from the installed package metadata.
__version__: str = _dist_version("avq-plugin")


def build_info() -> dict[str, Any]:
    """Version, compiled SIMD levels, the level in use, compiler and flags (a dict)."""
    return dict(_native.build_info())


def set_simd_level(level: str) -> None:
    """Use the 'scalar', 'avx2' or 'avx512' kernels (for tests and benchmarks).

    The default is the best level the CPU supports, lowered by the environment variable
    AVQ_SIMD_LEVEL. Raises ValueError for an unknown or unsupported level.
    """
    _native.set_simd_level(level)


def simd_level() -> str:
    """The SIMD level in use."""
    return _native.simd_level()


def eta_exact(t: float, d: int) -> float:
    """Exact anisotropic weight eta for t = T / ||x|| in dimension d (Guo et al. 2020)."""
    return _native.eta_exact(float(t), int(d))


def eta_scann(t: float, d: int) -> float:
    """ScaNN's large-d eta = (d - 1) t^2 / (1 - t^2)."""
    return _native.eta_scann(float(t), int(d))


# scikit-learn is optional: its estimators are imported on first access (PEP 562).
_SKLEARN_ESTIMATORS = ("AVQNearestNeighbors", "AVQKNeighborsTransformer")


def __getattr__(name: str) -> Any:
    if name in _SKLEARN_ESTIMATORS:
        try:
            from . import neighbors
        except ImportError as exc:
            raise ImportError(
                f"avq_plugin.{name} needs scikit-learn >= 1.6, an optional dependency: "
                f"pip install 'avq-plugin[sklearn]' (original error: {exc})"
            ) from exc
        return getattr(neighbors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SKLEARN_ESTIMATORS))


__all__ = [
    "AVQIndex",
    "ExactIndex",
    "IndexAVQ",
    "SearchParametersAVQ",
    "write_index",
    "read_index",
    "build_info",
    "set_simd_level",
    "simd_level",
    "eta_exact",
    "eta_scann",
    "__version__",
]
