"""What AVQIndex and ExactIndex share: the wrapped native object and its size."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class _NativeSized(Protocol):
    """What the wrapper needs of a native index (both native classes have it)."""

    @property
    def ntotal(self) -> int: ...
    @property
    def d(self) -> int: ...
    def memory_usage(self) -> int: ...


_N = TypeVar("_N", bound=_NativeSized)


class _NativeWrapper(Generic[_N]):
    """What both index types share: the wrapped native object and its size."""

    _index: _N | None = None

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors."""
        return 0 if self._index is None else self._index.ntotal

    def __len__(self) -> int:
        return self.ntotal

    @property
    def d(self) -> int | None:
        """Dimension (None before the first training or add)."""
        return None if self._index is None else self._index.d

    def memory_usage(self) -> int:
        """Bytes held by the index."""
        return 0 if self._index is None else self._index.memory_usage()
