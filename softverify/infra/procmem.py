"""How a long-lived compute process keeps the memory it frees (glibc's malloc).

A learner rank allocates and frees the same few GB of activations, logits and gradients
every update. glibc serves allocations above its mmap threshold (128 KB, raised on the fly
to at most 32 MB) with fresh ``mmap`` and hands them back with ``munmap`` when freed, and it
trims the heap's free top back to the kernel. Every update then maps its memory afresh:
0.6-0.9 M minor page faults per update of one rank of the 2x2 CoT step (SmolLM2), each one a
kernel entry and a zeroed page. In a VM whose balloon reports free pages to the host (this
project's CI and dev boxes: virtio-balloon free page reporting), memory freed between two
updates -- while the rollout runs -- goes back to the host, and the next update's faults
must have the host back each page again: the in-run update was ~2x slower than the same
update run back to back. The process never shrinks its working set between updates, so
giving memory back buys nothing: :func:`retain_freed_memory` makes glibc serve everything
from its heap and never trim it. Once the heap has grown to the largest batch seen, the
update runs without faults (measured in benchmarks/README.md).

Costs: the resident size stays at the high-water mark (what the next update needs anyway),
and while the heap is still growing, other processes' fresh memory (the object store's pages
for a weight sync) is backed more slowly. Only processes softverify owns (the learner ranks'
Ray actors) call it; the setting is process-wide and applies to allocations made after it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
import sys

#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

#: The same two settings as environment variables, read by glibc when a process starts: how
#: to give a process softverify does not own (a baseline's, in benchmarks) the same policy.
RETAIN_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "-1"}


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    """The C library this process runs on (glibc on the machines this module is for)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def retain_freed_memory() -> bool:
    """glibc: no ``mmap`` for large allocations (``M_MMAP_MAX`` = 0) and no trimming of the
    heap's free top (``M_TRIM_THRESHOLD`` = -1, "never", per mallopt(3)). Returns whether both
    took effect: False off Linux or on a libc without ``mallopt`` (musl), where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))


def minor_faults() -> int:
    """This process's minor page faults so far (a difference of two readings is what a piece
    of work cost in page mapping)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def reserve_heap(nbytes: int) -> int:
    """Grow glibc's heap by ``nbytes`` and touch every page once, then free it: after
    :func:`retain_freed_memory` the freed block stays the heap's top, mapped, so the
    allocations that follow (a learner's first updates, which otherwise grow the heap a few
    hundred MB at a time over several updates) find their pages already backed. Returns the
    minor page faults the reservation took (what the first updates no longer take). Does
    nothing and returns 0 when ``nbytes`` is 0 or off Linux."""
    if nbytes <= 0 or not sys.platform.startswith("linux"):
        return 0
    libc = _libc()
    libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = [ctypes.c_void_p], None
    before = minor_faults()
    block = libc.malloc(nbytes)
    if not block:
        raise MemoryError(f"could not reserve {nbytes} bytes of heap (learner.reserve_memory_gb too large "
                          f"for this machine's free memory?)")
    try:
        ctypes.memset(block, 0, nbytes)  # the touch is the point: each page is backed now, not mid-update
    finally:
        libc.free(block)
    return minor_faults() - before
