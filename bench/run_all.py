"""Run every bench script in bench/ in turn (``make bench``).

A bench script is any ``bench/*.py`` except this file and helpers whose name starts with ``_``.
Each runs as its own process with this interpreter; its output is streamed as it comes. At the end
a summary lists each script's exit status, duration and the load average (1 minute) before and after it, with
the machine's description; the exit status is 1 if any script failed.
Usage: ``python bench/run_all.py [-k SUBSTRING ...] [--list]``; arguments after ``--`` go to every script.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import machine

HERE = Path(__file__).resolve().parent


def scripts() -> list[Path]:
    return sorted(path for path in HERE.glob("*.py") if path.name != Path(__file__).name and not path.name.startswith("_"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", dest="only", action="append", default=[], help="run only scripts whose name contains this (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the bench scripts and exit")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then arguments passed to every script")
    args = parser.parse_args()
    found = [path for path in scripts() if not args.only or any(word in path.name for word in args.only)]
    if args.list:
        print("\n".join(path.name for path in found))
        return 0
    extra = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    summary: list[tuple[str, int, float, float, float]] = []
    print(f"make bench: {machine()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    for path in found:
        load_before = os.getloadavg()[0]
        print(f"\n=== {path.name} (load average {load_before:.2f}) ===", flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run([sys.executable, str(path), *extra], cwd=HERE.parent, check=False).returncode
        except KeyboardInterrupt:
            code = 130
        summary.append((path.name, code, time.monotonic() - started, load_before, os.getloadavg()[0]))
        if code == 130:
            break
    print(f"\n=== summary: {machine()} ===")
    for name, code, seconds, before, after in summary:
        print(f"{'ok    ' if code == 0 else f'FAILED ({code})'}  {name:<40} {seconds:6.0f} s  load average {before:.2f} -> {after:.2f}")
    return 0 if all(row[1] == 0 for row in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
