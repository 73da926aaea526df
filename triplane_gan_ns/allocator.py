"""Keep freed memory in the process: glibc's allocator settings for CPU training and tools.

A training step allocates and frees thousands of short-lived tensors of 0.1-40 MiB (the decoder's chunks, the
renderer's sample buffers, plane features, gradients).  glibc's ``malloc`` gives blocks above its mmap threshold
(which it moves between 128 KiB and 32 MiB on its own, and never above) a fresh mapping and returns the free top of
its heap to the system above its trim threshold, so those tensors fault their pages in anew each time they are
allocated: 16 000-62 000 page faults per step of the tiny preset at 16 + 16 samples (docs/benchmarks.md).
``keep_freed_memory`` serves every block from the heap and keeps up to 1 GiB of freed heap for reuse (``mallopt``;
the same as starting Python with ``MALLOC_MMAP_MAX_=0``, ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` set).
Values are untouched; the process holds on to memory it freed, up to its peak.
"""

from __future__ import annotations

import ctypes
import platform
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
"""``mallopt`` parameters (glibc's malloc.h)."""

SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20))
"""No block gets a mapping of its own (all come from the heap); keep up to 1 GiB of free heap; grow it in 256 MiB
steps (address space only: pages count once touched)."""


def keep_freed_memory() -> bool:
    """Apply ``SETTINGS`` to this process's allocator; False where the C library is not glibc (nothing changes)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
