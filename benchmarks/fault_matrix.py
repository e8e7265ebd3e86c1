"""Fault matrix on the command line: every fault through every entry point, as one table.

The table, the runners and the judging live in ``tests/support/fault_matrix.py`` (shared
with ``tests/test_fault_matrix.py``); this script only runs them and prints the result.

    .venv/bin/python benchmarks/fault_matrix.py [--entry provider,magic,widget] [--fault NAME]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: upstage_magic, tests.support

from tests.support.fault_matrix import (  # noqa: E402
    ENTRY_POINTS,
    FAULTS,
    FAULTS_BY_NAME,
    Outcome,
    format_table,
    run_matrix,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--entry", default=",".join(ENTRY_POINTS), help="comma list of provider,magic,widget")
    parser.add_argument("--fault", default=None, help="comma list of fault names (default: all)")
    parser.add_argument("--quiet", action="store_true", help="no per-cell progress lines")
    parser.add_argument("--messages", action="store_true", help="also print the message each error showed")
    args = parser.parse_args(argv)
    entries = [e.strip() for e in args.entry.split(",") if e.strip()]
    faults = [FAULTS_BY_NAME[n.strip()] for n in args.fault.split(",")] if args.fault else FAULTS
    t0 = time.monotonic()

    def progress(o: Outcome) -> None:
        if not args.quiet:
            print(f"  {o.entry:<8} {o.fault:<16} {'ok  ' if o.ok else 'FAIL'} {o.summary} "
                  f"[{o.elapsed:.2f} s]", file=sys.stderr, flush=True)

    outcomes = run_matrix(entries, faults, progress=progress)
    print(format_table(outcomes, entries, faults))
    if args.messages:
        print("\nMessages shown:")
        for o in outcomes:
            if o.message:
                print(f"  {o.entry:<8} {o.fault:<16} {o.message}")
    print(f"\n(matrix ran in {time.monotonic() - t0:.1f} s)")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
