"""Per-stage wall-clock timing, passed explicitly to the code it times.

``avdetect detect --timings`` and the preprocessing benchmark hand a :class:`StageTimer`
to ``preprocess_video(timer=...)``, which times its own stages with it; nothing is
patched, so concurrent callers (the detect warm-up thread, a dataset build) are never
affected by another caller's timing.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class StageTimer:
    """Seconds per named stage, summed over every call (``seconds``: stage -> s)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, dt: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + dt

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """``with timer('logmel'): ...`` adds the block's time to that stage."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def iterate(self, stage: str, items: Iterable[T]) -> Iterator[T]:
        """``items`` with the time spent producing each one added to ``stage`` (for a
        generator that does the work lazily, e.g. a frame decoder). Closing the result
        closes ``items``."""
        it = iter(items)
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    self.add(stage, time.perf_counter() - t0)
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
