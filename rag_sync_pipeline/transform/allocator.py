"""Hand memory freed by the model back to the operating system.

Each batch the model allocates activation tensors of a different size (1-50 MB); glibc serves many of them
from its heap, whose freed holes stay resident, so a sync's resident memory drifts up by hundreds of MB
between batches. `malloc_trim` returns those free pages. (A fixed mmap threshold avoids the holes too, but
re-faulting every large tensor made encoding 10% slower.)
"""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # another C library (musl): nothing to do
        return None


def release_free_memory() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
