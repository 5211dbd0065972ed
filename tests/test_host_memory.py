"""host_memory.release_freed_heap against the kernel's own count of resident pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from avdetect import host_memory

CHILD = r"""
import os
from avdetect import host_memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

# 3000 blocks of 64 KiB (below glibc's mmap threshold: they come from the heap), touched;
# one block allocated after them pins the top of the heap, so freeing the others leaves
# holes glibc keeps mapped (what a compiler's freed working memory looks like).
blocks = [bytearray(os.urandom(16)) * 4096 for _ in range(3000)]
pin = bytearray(b"x") * 65536
before = rss()
del blocks
freed = rss()
released = host_memory.release_freed_heap()
after = rss()
print(before, freed, after, int(released))
"""


@pytest.mark.skipif(host_memory._glibc() is None, reason="needs glibc (malloc_trim)")
def test_freed_heap_pages_go_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    before, freed, after, released = map(int, out)
    block_bytes = 3000 * 65536                                   # 187.5 MiB
    assert freed > before - 0.2 * block_bytes, "glibc returned the holes by itself"
    assert released == 1
    assert freed - after > 0.8 * block_bytes                    # the holes are gone
