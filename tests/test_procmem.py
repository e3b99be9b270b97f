"""softverify.infra.procmem: after retain_freed_memory() a process re-allocating memory it freed
maps no new pages; without it glibc maps a large block afresh every time. Each case runs in
its own interpreter (the setting is process-wide and must not leak into the test process)."""
from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from softverify.infra.procmem import minor_faults, retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
block = 64 << 20
bytearray(block)  # allocated, zero-filled (every page touched), freed
f = minor_faults()
for _ in range(3):
    bytearray(block)
print(minor_faults() - f)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_retained_memory_is_reused_without_page_faults(realloc_fault_bounds):
    retained_max, fresh_min = realloc_fault_bounds
    assert _faults("default") > fresh_min  # mmap'd afresh each time: a fault per page (measured: 49,155 of 49,152)
    assert _faults("retain") < retained_max  # the freed heap block is reused as is (measured: 0)


RESERVE = """
import sys
from softverify.infra.procmem import minor_faults, reserve_heap, retain_freed_memory
assert retain_freed_memory()
took = reserve_heap(256 << 20) if sys.argv[1] == "reserve" else 0
f = minor_faults()
for _ in range(3):
    bytearray(64 << 20)  # the first round counted too: only a reservation has mapped its pages before
print(took, minor_faults() - f)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_a_reserved_heap_serves_the_first_allocations_without_page_faults(realloc_fault_bounds):
    retained_max, fresh_min = realloc_fault_bounds

    def run(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", RESERVE, mode], capture_output=True, text=True, check=True)
        took, after = out.stdout.split()
        return int(took), int(after)

    _, first_rounds = run("retain")
    assert first_rounds > fresh_min // 3  # retention alone: the first round still maps its 64 MB
    took, first_rounds = run("reserve")
    assert took > fresh_min  # the 256 MB reservation took the faults (measured: 65,5xx)
    assert first_rounds < retained_max  # ...so the first round found its pages mapped


def test_reserving_nothing_is_free():
    from softverify.infra.procmem import reserve_heap

    assert reserve_heap(0) == 0
