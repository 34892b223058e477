"""Progress bars of avq-bench (tqdm when installed and enabled, else silent)."""

from __future__ import annotations

import sys
from typing import Any

# --------------------------------------------------------------------------- progress


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Bars:
    """tqdm progress bars on stderr, or nothing.

    Parameters
    ----------
    enabled : bool
        Show bars; they are also off when tqdm is not installed.
    """

    def __init__(self, enabled: bool) -> None:
        self.tqdm = None
        if enabled:
            try:
                from tqdm import tqdm

                self.tqdm = tqdm
            except ImportError:
                pass

    @property
    def enabled(self) -> bool:
        return self.tqdm is not None

    def bar(self, desc: str, total: int, unit: str = "it"):
        """A bar with ``update(n)`` and ``close()`` (a no-op object when disabled)."""
        if self.tqdm is None:
            return _NullBar()
        return self.tqdm(
            total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True, mininterval=0.2
        )

    def write(self, msg: str, file=None) -> None:
        """Print a line without breaking the bars."""
        file = sys.stderr if file is None else file
        if self.tqdm is not None and file is sys.stderr:
            self.tqdm.write(msg, file=file)
        else:
            print(msg, file=file, flush=True)


class _StageBars:
    """AVQIndex progress callback ``(stage, done, total, info)`` shown as one bar per stage."""

    def __init__(self, bars: Bars, label: str) -> None:
        self.bars, self.label = bars, label
        self.stage: str | None = None
        self.bar_: Any = None  # a tqdm bar or the line-printing fallback
        self.done = 0

    def __call__(self, stage: str, done: int, total: int, info: str) -> None:
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar_ = self.bars.bar(f"{self.label} build: {stage}", int(total))
        if done > self.done:
            self.bar_.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar_ is not None:
            self.bar_.close()
        self.bar_, self.stage = None, None
