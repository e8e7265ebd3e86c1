"""batch(): 5,000 short prompts against the emulator limited to 100 requests/s.

    PYTHONPATH=. python benchmarks/bench_batch.py [--n 5000] [--rps 100]

Measures (issues 13 and 21), for the old pacing (AIMD on 429s) and the new one (the
emulator's x-ratelimit headers, then AIMD) in the same run:
- wall time vs the limit's lower bound (n / rps; the goal is within 1.03x), the share of
  requests answered 429 (goal under 2%), with 0 lost and 0 duplicated answers (counted at
  the emulator: accepted requests per prompt); a ``GOAL CHECK: PASS|MISS`` line per pacing
  says which of them are met (the last two lines repeat both);
- a re-run with the same cache sends 0 requests and finishes in under 2 s;
- peak memory (tracemalloc, each size in a fresh subprocess, no rate limit) at 1,000 and
  5,000 items;
- the achieved rate, the number of 429s and the concurrency limit over time.

The emulator runs in this process on its own thread and loop (loopback HTTP); the bound is
the configured rate limit, not this machine.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from upstage_magic.emulator import Emulator
from upstage_magic.notebook.batch import BatchStats, abatch


class CountingEmulator(Emulator):
    """Counts the requests it answered (not the 429s), per prompt."""

    def __init__(self, **cfg: Any) -> None:
        super().__init__(**cfg)
        self.answered: collections.Counter[str] = collections.Counter()

    async def _chat(self, request: Any) -> Any:
        response = await super()._chat(request)
        if response.status == 200:
            body = await request.json()
            self.answered[body["messages"][-1]["content"]] += 1
        return response


def serve(emu: Emulator) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(emu.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(emu.stop())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    return loop, thread


def prompts(n: int) -> list[str]:
    return [f"short prompt {i}" for i in range(n)]


def memory_child(n: int) -> None:
    """In a fresh process: peak traced memory of one batch of ``n`` items (no rate limit)."""
    import tracemalloc

    emu = Emulator(reply="echo")
    loop, thread = serve(emu)
    with tempfile.TemporaryDirectory() as tmp:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        result = asyncio.run(abatch("{item}", prompts(n), cache=str(Path(tmp) / "c.sqlite3"),
                                    base_url=emu.base_url, api_key="bench-key", model="solar-mini4"))
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        assert len(result) == n and not result.errors
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    print(json.dumps({"n": n, "peak_bytes": peak}))


#: Issue 21's goal for the new pacing: wall time vs the bound, share answered 429, lost, duplicated.
GOAL_RATIO, GOAL_429_PCT = 1.03, 2.0


def goal_check(ratio: float, pct_429: float, lost: int, dup: int) -> tuple[bool, str]:
    """Whether the figures meet the goal, and one line that says so figure by figure."""
    checks = [(f"ratio {ratio:.3f}x (goal <= {GOAL_RATIO}x)", ratio <= GOAL_RATIO),
              (f"answered 429 {pct_429:.2f}% (goal < {GOAL_429_PCT:g}%)", pct_429 < GOAL_429_PCT),
              (f"lost {lost} (goal 0)", lost == 0), (f"duplicated {dup} (goal 0)", dup == 0)]
    ok = all(passed for _, passed in checks)
    line = "; ".join(f"{text} {'PASS' if passed else 'MISS'}" for text, passed in checks)
    return ok, f"GOAL CHECK: {'PASS' if ok else 'MISS'}: {line}"


def run_once(n: int, rps: float, pacing: str, *, rerun: bool) -> str:
    """One batch of ``n`` against a fresh emulator limited to ``rps``, paced by ``pacing``."""
    emu = CountingEmulator(reply="echo")
    emu.configure(rate_limit={"rps": rps})
    loop, thread = serve(emu)
    items = prompts(n)
    samples: list[tuple[float, int, int, int]] = []  # (t, done, concurrency, 429s)

    def sample(stats: BatchStats) -> None:
        samples.append((stats.elapsed, stats.done, stats.concurrency, stats.rate_limited))

    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache.sqlite3")
        opts = {"cache": cache, "base_url": emu.base_url, "api_key": "bench-key", "model": "solar-mini4",
                "pacing": pacing}
        t0 = time.perf_counter()
        result = asyncio.run(abatch("{item}", items, on_progress=sample, **opts))
        wall = time.perf_counter() - t0
        bound = n / rps
        lost = sum(1 for p, r in zip(items, result, strict=False) if r != p)
        dup = sum(c - 1 for c in emu.answered.values() if c > 1)
        missing_at_server = n - len(emu.answered)
        label = {"aimd": "old pacing (AIMD on 429s only)", "headers": "new pacing (x-ratelimit headers, then AIMD)"}
        print(f"batch of {n} against the emulator limited to {rps:g} requests/s: {label[pacing]}")
        print(f"  wall {wall:.2f} s; lower bound {bound:.1f} s; ratio {wall / bound:.3f}x (goal <= 1.03x)")
        print(f"  achieved {n / wall:.1f} answers/s; 429s {emu.rate_limited} = {100 * emu.rate_limited / n:.2f}% "
              f"of {n} (goal < 2%); errors {len(result.errors)}; lost {lost}; duplicated {dup}; "
              f"never answered {missing_at_server}")
        print("  concurrency over time (t s: done, limit, 429s so far):")
        step, nxt = 10.0, 0.0
        for t, done, conc, limited in samples:
            if t >= nxt:
                print(f"    {t:5.1f}: {done:5d}, {conc}, {limited}")
                nxt += step
        t, done, conc, limited = samples[-1]
        print(f"    {t:5.1f}: {done:5d}, {conc}, {limited}  (end)")
        verdict = goal_check(wall / bound, 100 * emu.rate_limited / n, lost, dup)[1]
        print(f"  {verdict}")
        if rerun:
            before = sum(emu.answered.values()) + emu.rate_limited
            t0 = time.perf_counter()
            again = asyncio.run(abatch("{item}", items, **opts))
            took = time.perf_counter() - t0
            sent = sum(emu.answered.values()) + emu.rate_limited - before
            same = list(again) == list(result)
            print(f"  re-run: {sent} requests sent, {took:.2f} s (goal 0 and < 2 s); same answers: {same}")
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rps", type=float, default=100.0)
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    n, rps = args.n, args.rps
    print("machine load (1, 5, 15 min): {:.2f} {:.2f} {:.2f} on {} CPUs".format(*os.getloadavg(), os.cpu_count()))
    verdicts = {pacing: run_once(n, rps, pacing, rerun=pacing == "headers") for pacing in ("aimd", "headers")}

    peaks = {}
    for size in (1000, 5000):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", str(size)],
                              capture_output=True, text=True, timeout=600, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(1)
        peaks[size] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"]
    growth = (peaks[5000] - peaks[1000]) / 4000
    print(f"  peak traced memory (client + in-process emulator, no rate limit): "
          f"1,000 items {peaks[1000] / 1e6:.2f} MB, 5,000 items {peaks[5000] / 1e6:.2f} MB "
          f"({growth:.0f} bytes per extra item: the results and their cache keys)")
    print(f"old pacing (AIMD, the in-run baseline): {verdicts['aimd']}")
    print(f"new pacing (x-ratelimit headers):       {verdicts['headers']}")


if __name__ == "__main__":
    main()
