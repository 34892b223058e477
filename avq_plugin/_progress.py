"""Progress of long native work (training, adding): the ``progress=`` parameter of AVQIndex."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

# The callback the native code calls: (stage, done, total, info).
ProgressCallback = Callable[[str, int, int, str], None]
# What the ``progress=`` parameter accepts.
ProgressArg = bool | ProgressCallback | None


class _Progress:
    """Progress lines on stderr for verbose training."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.last: tuple[str, int] | None = None

    def __call__(self, stage: str, done: int, total: int, info: str) -> None:
        key = (stage, done)
        if key == self.last:
            return
        self.last = key
        msg = f"[avq {time.perf_counter() - self.t0:7.2f}s] {stage} {done}/{total}"
        if info:
            msg += f" ({info})"
        print(msg, file=sys.stderr, flush=True)


class _TqdmStages:
    """Progress as tqdm bars on stderr, one per stage (``progress=True``)."""

    def __init__(self, tqdm: Callable[..., Any]) -> None:
        self.tqdm = tqdm
        self.stage: str | None = None
        self.bar: Any = None  # a tqdm bar
        self.done = 0

    def __call__(self, stage: str, done: int, total: int, info: str) -> None:
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar = self.tqdm(total=int(total), desc=f"avq: {stage}", leave=False, file=sys.stderr)
        if done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.stage, self.bar = None, None


def check_progress(progress: object) -> ProgressArg:
    if progress is None or isinstance(progress, bool):
        return progress
    if callable(progress):
        return progress
    raise TypeError(
        f"progress must be None, True, False or a callable (stage, done, total, info), got {type(progress).__name__}"
    )


@contextlib.contextmanager
def progress_callback(progress: ProgressArg, verbose: bool) -> Iterator[ProgressCallback | None]:
    """The callback ``(stage, done, total, info)`` for one call, or None; closes bars it opened.

    ``progress``: None follows ``verbose`` (lines on stderr), True shows tqdm bars (lines when
    tqdm is missing), False nothing, a callable is used as it is.
    """
    callback: ProgressCallback | None
    if progress is None:
        callback = _Progress() if verbose else None
    elif progress is False:
        callback = None
    elif progress is True:
        try:
            from tqdm import tqdm
        except ImportError:
            callback = _Progress()
        else:
            callback = _TqdmStages(tqdm)
    else:
        callback = progress
    try:
        yield callback
    finally:
        if isinstance(callback, _TqdmStages):
            callback.close()
