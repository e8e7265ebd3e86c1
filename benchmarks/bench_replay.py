"""Replay speed (issue 21, section 1): the quickstart run twice through nbclient, replay on.

    PYTHONPATH=. python benchmarks/bench_replay.py [--notebook notebooks/quickstart.ipynb] [--runs 2]

Runs the notebook the way ``python -m upstage_magic demo`` and CI do (``run_demo``: the offline
emulator, nbclient, replay on, one answer cache shared by the runs, a fresh log each run),
first with an empty cache, then again. Prints each run's time, where it went (kernel
start-up before the first cell, the cells, each of the slowest cells, and the rest: the
emulator, writing the notebook and its HTML), and the ratio first / second against the goal
(>= 2x). The first run is the in-run baseline, so machine load counts on both sides.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL = 2.0


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def cell_times(nb_path: Path) -> tuple[float | None, list[tuple[float, str]]]:
    """From nbclient's timing metadata: when the first cell started (epoch s), and each code cell's time."""
    nb = json.loads(nb_path.read_text())
    first, cells = None, []
    for c in nb["cells"]:
        ex = c.get("metadata", {}).get("execution", {})
        if c["cell_type"] != "code" or "iopub.execute_input" not in ex:
            continue
        start = _stamp(ex["iopub.execute_input"])
        first = start if first is None else min(first, start)
        cells.append((_stamp(ex["shell.execute_reply"]) - start, "".join(c["source"]).splitlines()[0][:60]))
    return first, cells


def run(notebook: Path, out: Path, port: int) -> dict[str, object]:
    from upstage_magic.__main__ import run_demo

    out.mkdir()
    t0 = time.time()
    nb_path, _ = run_demo(notebook, offline=True, tokens_per_second=200.0, timeout=300, out_dir=out,
                          replay=True, port=port)
    wall = time.time() - t0
    first, cells = cell_times(nb_path)
    in_cells = sum(t for t, _ in cells)
    return {"wall": wall, "startup": (first - t0) if first else 0.0, "cells": in_cells, "by_cell": cells,
            "path": nb_path}


def report(name: str, r: dict[str, object]) -> None:
    wall, startup, cells = float(r["wall"]), float(r["startup"]), float(r["cells"])  # type: ignore[arg-type]
    print(f"{name}: {wall:.2f} s = start-up to the first cell {startup:.2f} s + cells {cells:.2f} s "
          f"+ the rest {wall - startup - cells:.2f} s (writing the notebook and HTML, stopping)")
    slow = sorted(r["by_cell"], reverse=True)[:4]  # type: ignore[call-overload]
    print("  slowest cells: " + "; ".join(f"{t:.2f} s {src!r}" for t, src in slow))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notebook", type=Path, default=ROOT / "notebooks" / "quickstart.ipynb")
    parser.add_argument("--runs", type=int, default=2, help="runs after the first (each replayed)")
    args = parser.parse_args()
    import nbclient  # noqa: F401 - imported before timing, so no run pays for it
    import nbconvert  # noqa: F401

    from tests.support.harness import free_port

    print("machine load (1, 5, 15 min): {:.2f} {:.2f} {:.2f} on {} CPUs".format(*os.getloadavg(), os.cpu_count()))
    os.environ["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["UPSTAGE_MAGIC_CACHE"] = str(Path(tmp) / "answers.sqlite3")  # shared by the runs
        port, results = free_port(), []
        for i in range(1 + max(1, args.runs - 1)):
            name = "first run (records)" if i == 0 else f"run {i + 1} (replays)"
            os.environ["UPSTAGE_MAGIC_HOME"] = str(Path(tmp) / f"home-{i}")  # a fresh log each run
            results.append(run(args.notebook, Path(tmp) / f"run{i}", port))
            report(name, results[-1])
        first = float(results[0]["wall"])  # type: ignore[arg-type]
        for i, r in enumerate(results[1:], start=2):
            ratio = first / float(r["wall"])  # type: ignore[arg-type]
            print(f"GOAL CHECK: {'PASS' if ratio >= GOAL else 'MISS'}: run {i} is {ratio:.2f}x faster than the "
                  f"first (goal >= {GOAL:g}x)")


if __name__ == "__main__":
    main()
