"""What AVQIndex and ExactIndex share: the wrapped native object and its size."""

from __future__ import annotations


class _NativeWrapper:
    """What both index types share: the wrapped native object and its size."""

    _index = None

    @property
    def ntotal(self):
        """Number of indexed vectors."""
        return 0 if self._index is None else self._index.ntotal

    def __len__(self):
        return self.ntotal

    @property
    def d(self):
        """Dimension (None before the first training or add)."""
        return None if self._index is None else self._index.d

    def memory_usage(self):
        """Bytes held by the index."""
        return 0 if self._index is None else self._index.memory_usage()
