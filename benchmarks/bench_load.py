"""Load benchmark on the command line: concurrent provider streams, many chat widgets.

The work is done by ``tests/support/load.py`` (shared with ``tests/test_load.py``); this
script runs it at full size and prints the figures.

    .venv/bin/python benchmarks/bench_load.py [--streams 500 --words 60 --tps 400] [--widgets 20]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: upstage_magic, tests.support

from tests.support.load import run_streams, run_widgets  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load benchmark: concurrent streams and widgets.")
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--words", type=int, default=60, help="words per streamed answer")
    parser.add_argument("--tps", type=float, default=400.0, help="emulator pacing per stream (0 = full speed)")
    parser.add_argument("--widgets", type=int, default=20)
    parser.add_argument("--widget-words", type=int, default=80)
    parser.add_argument("--widget-tps", type=float, default=40.0)
    parser.add_argument("--cpu-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    ok = True
    if args.streams:
        r = run_streams(args.streams, args.words, args.tps or None)
        good = r["n_ok"] == r["streams"] and r["peak_connections"] <= r["limit"]
        ok &= good
        print(f"Provider: {r['streams']} concurrent streams x {r['words']} tokens "
              f"(emulator subprocess, {r['tps'] or 'full speed'} tok/s per stream)")
        print(f"  exact answers        {r['n_ok']}/{r['streams']}  (errors {r['n_errors']}, wrong {r['n_wrong']})")
        print(f"  wall time            {r['elapsed']:.2f} s  ({r['streams'] / r['elapsed']:.0f} streams/s, "
              f"{r['tokens'] / r['elapsed']:.0f} tokens/s)")
        print(f"  peak concurrent conn {r['peak_connections']} (limit {r['limit']}, counted by the emulator); "
              f"emulator saw {r['emulator_connections']} distinct connections, "
              f"{r['emulator_requests']} requests (2 passes)")
        print(f"  memory               tracemalloc peak {r['tracemalloc_peak_mb']:.1f} MB, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
        if r["errors"]:
            print("  first errors:", r["errors"])
    if args.widgets:
        w = run_widgets(args.widgets, args.widget_words, args.widget_tps, args.cpu_seconds)
        rows = w["rows"]
        n_good = sum(1 for x in rows if x["n"] == 1 and x["status"] == "done" and x["exact"]
                     and not x["streaming"] and not x["send_disabled"] and x["html_has_end"])
        good = n_good == w["widgets"] and w["alive"] and w["pending"] == 0
        ok &= good
        print(f"Widgets: {w['widgets']} ChatWidgets x {w['words']} tokens at {w['tps']} tok/s, one kernel, "
              f"while a cell runs a {args.cpu_seconds:g} s CPU loop")
        print(f"  streaming when the CPU cell started/ended  {w['cpu']['before']}/{w['cpu']['after']}")
        print(f"  CPU cell                 {w['cpu_cell_seconds']:.2f} s round trip ({w['cpu']['cpu']:.2f} s loop)")
        print(f"  widgets done, exact text {n_good}/{w['widgets']}  "
              f"(turns recorded {w['turns']}, pending {w['pending']})")
        print(f"  all done after           {w['all_done_after']:.2f} s from the send cell")
        print(f"  kernel peak RSS          {w['kernel_peak_rss_mb']:.0f} MB; kernel alive {w['alive']}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
