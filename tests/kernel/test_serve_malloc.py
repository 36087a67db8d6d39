"""The serving master fixes glibc's mmap threshold, so a worker's freed large blocks go back to the system."""

from __future__ import annotations

import subprocess
import sys

import pytest

from botcriptofy._serve import fix_mmap_threshold

_CHILD = r"""
import sys
from botcriptofy._serve import fix_mmap_threshold

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

fixed = sys.argv[1] == "fixed" and fix_mmap_threshold()
before = rss_mb()
big = bytearray(24 << 20)
del big  # freeing a 24 MiB block: glibc would serve blocks up to that size from the heap from now on
blocks = [bytearray(1 << 20) for _ in range(40)]
del blocks
print(fixed, round(rss_mb() - before, 1))
"""


def _kept_after_free(mode: str) -> tuple[bool, float]:
    done = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=60, check=True)
    fixed, kept = done.stdout.split()
    return fixed == "True", float(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_with_the_threshold_fixed_freed_blocks_are_returned():
    assert _kept_after_free("default") == (False, pytest.approx(40, abs=4))  # glibc's own behaviour: 40 MiB kept
    fixed, kept = _kept_after_free("fixed")
    assert fixed and kept < 4


def test_an_operator_setting_is_left_alone(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert fix_mmap_threshold() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert fix_mmap_threshold() is False
