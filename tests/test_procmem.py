"""softverify.procmem: after retain_freed_memory() a process re-allocating memory it freed
maps no new pages; without it glibc maps a large block afresh every time. Each case runs in
its own interpreter (the setting is process-wide and must not leak into the test process)."""
from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from softverify.procmem import minor_faults, retain_freed_memory
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
