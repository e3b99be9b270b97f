"""softverify.procmem: after retain_freed_memory() a process re-allocating memory it freed
maps no new pages; without it glibc maps a large block afresh every time. Each case runs in
its own interpreter (the setting is process-wide and must not leak into the test process)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def _thp_always() -> bool:
    """Transparent huge pages for every mapping: a fresh 64 MB block then faults per 2 MB."""
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_retained_memory_is_reused_without_page_faults():
    page = (2 << 20) if _thp_always() else 4096
    pages = 3 * (64 << 20) // page  # three 64 MB blocks
    assert _faults("default") > pages // 2  # mmap'd afresh each time: a fault per page (measured: 49,155 of 49,152)
    assert _faults("retain") < min(pages // 4, 200)  # the freed heap block is reused as is (measured: 0)
