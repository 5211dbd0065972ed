"""Hand the heap memory XLA's compiler freed back to the operating system.

Compiling the student's train step at the reference's shapes (B=4 x T=50, 112 px) takes
about 1 GB of host memory inside XLA, all freed when the compile ends - but glibc keeps
freed heap pages mapped, so the process's resident memory stays ~1 GB higher, and the
step's own buffers (allocated afresh with mmap) come on top of it: the training peak
counted both (BENCHMARKS.md, "peer"). ``malloc_trim(0)`` returns every free page of the
heap to the system. Where the C library is not glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_freed_heap() -> bool:
    """Return the freed heap pages to the system; True where glibc released any."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
