"""Load: many concurrent provider streams, and many chat widgets in one kernel.

1. ``--streams N`` concurrent ``Upstage.create_async_generator`` streams against the
   emulator running in a *subprocess* (``python -m upstage_magic.emulator``), each with a
   distinct echo prompt, so every answer can be compared exactly (no text lost,
   duplicated or mixed between streams). Reports wall time, streams/s, tokens/s, the peak
   number of concurrent TCP connections to the emulator (counted by the emulator; must
   be <= ``upstage.CONNECTION_LIMIT``), the distinct connections the emulator saw, peak
   RSS and the tracemalloc peak.
2. ``--widgets M`` ChatWidgets in one real kernel send at once while another cell runs
   a CPU loop for ``--cpu-seconds``; the CPU cell must finish, and every widget must end
   "done" with exactly its own answer.

    .venv/bin/python benchmarks/bench_load.py [--streams 500 --words 60 --tps 400] [--widgets 20]

``tests/test_load.py`` runs a CI-sized version and asserts correctness and bounds.
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package, and tests/harness.py

from harness import EmulatorProcess, KernelSession  # noqa: E402

KEY = "test-key-LOADBENCH-1"


def prompt_for(i: int, words: int) -> str:
    """A distinct prompt (the echo answer) of ``words`` words for stream ``i``."""
    return " ".join([f"s{i}w{j}" for j in range(words - 1)] + [f"end{i}."])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def _streams(base_url: str, n: int, words: int) -> dict[str, Any]:
    from upstage_magic.providers import Upstage

    async def one(i: int) -> tuple[int, str, int]:
        parts: list[str] = []
        chunks = 0
        async for chunk in Upstage.create_async_generator(
            "solar-mini", [{"role": "user", "content": prompt_for(i, words)}],
            api_key=KEY, base_url=base_url, timeout=120,
        ):
            if isinstance(chunk, str):
                parts.append(chunk)
                chunks += 1
        return i, "".join(parts), chunks

    try:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        elapsed = time.perf_counter() - t0
    finally:
        await Upstage.aclose()
    errors = [r for r in results if isinstance(r, BaseException)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    wrong = [i for i, text, _ in ok if text != prompt_for(i, words)]
    return {
        "elapsed": elapsed,
        "errors": [f"{type(e).__name__}: {e}" for e in errors[:5]],
        "n_errors": len(errors),
        "wrong": wrong[:10],
        "n_wrong": len(wrong),
        "n_ok": len(ok) - len(wrong),
        "tokens": sum(c for _, _, c in ok),
    }


def run_streams(n: int = 500, words: int = 60, tps: float | None = 400.0, *,
                workdir: Path | None = None) -> dict[str, Any]:
    """N concurrent provider streams against an emulator subprocess; figures as a dict."""
    from upstage_magic.providers import upstage as up

    with tempfile.TemporaryDirectory() as tmp:
        emu = EmulatorProcess(Path(workdir or tmp), api_key=KEY, reply="echo", tokens_per_second=tps)
        try:
            # Pass 1 (timed). Pass 2: the same under tracemalloc (slower). The emulator
            # counts connections server-side; reset drops the readiness probe's one.
            emu.reset()
            emu.config(reply="echo", tokens_per_second=tps)
            res = asyncio.run(_streams(emu.base_url, n, words))
            peak = emu.stats()["peak_connections"]
            tracemalloc.start()
            mem = asyncio.run(_streams(emu.base_url, n, words))
            _, traced_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            stats = emu.stats()
        finally:
            emu.close()
    for k in ("n_errors", "n_wrong"):
        res[k] += mem[k]
    res["errors"] += mem["errors"]
    res["wrong"] += mem["wrong"]
    res["n_ok"] = min(res["n_ok"], mem["n_ok"])
    res.update(
        streams=n,
        words=words,
        tps=tps,
        limit=up.CONNECTION_LIMIT,
        peak_connections=peak,
        emulator_connections=stats.get("connections"),
        emulator_requests=stats.get("requests"),  # both passes
        memory_pass_elapsed=mem["elapsed"],
        tracemalloc_peak_mb=traced_peak / 1e6,
        peak_rss_mb=_peak_rss_mb(),
    )
    return res


WIDGET_SETUP = r"""
import asyncio, json, time
from upstage_magic import ChatWidget
from upstage_magic.session import default_session
default_session().reset()
ws = [ChatWidget(fetch_models=False) for _ in range({n})]
prompts = {prompts!r}
print(len(ws))
"""

WIDGET_SEND = r"""
t_send = time.monotonic()
tasks = [w.send(p) for w, p in zip(ws, prompts)]
print(json.dumps([t is not None for t in tasks]))
"""

WIDGET_CPU = r"""
before = sum(w.streaming for w in ws)
t0 = time.perf_counter(); n = 0
while time.perf_counter() - t0 < {seconds}:
    n += 1
cpu = time.perf_counter() - t0
print(json.dumps(dict(before=before, after=sum(w.streaming for w in ws), loops=n, cpu=cpu)))
"""

WIDGET_WAIT = r"""
def html_of(w):
    out, stack = [], [w.transcript]
    while stack:
        x = stack.pop()
        out.append(getattr(x, "value", "") if isinstance(getattr(x, "value", None), str) else "")
        stack.extend(getattr(x, "children", ()) or ())
    return "".join(out)
done, pending = await asyncio.wait(tasks, timeout={timeout})
turns = default_session().turns
by_prompt = {{}}
for t in turns:
    by_prompt.setdefault(t.prompt, []).append(t)
rows = []
for w, p in zip(ws, prompts):
    ts = by_prompt.get(p, [])
    rows.append(dict(n=len(ts), status=ts[0].status if ts else None, exact=bool(ts) and ts[0].answer == p,
                     streaming=w.streaming, send_disabled=w.send_button.disabled,
                     html_has_end=("end" + p.rsplit("end", 1)[1]) in html_of(w)))
import resource
print(json.dumps(dict(pending=len(pending), turns=len(turns), rows=rows, all_done_after=time.monotonic() - t_send,
                      kernel_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def run_widgets(n: int = 20, words: int = 80, tps: float = 40.0, cpu_seconds: float = 2.0, *,
                workdir: Path | None = None) -> dict[str, Any]:
    """N ChatWidgets streaming at once in one kernel while a cell computes."""
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(workdir or tmp)
        emu = EmulatorProcess(wd, api_key=KEY, reply="echo", tokens_per_second=tps)
        kernel = KernelSession({"UPSTAGE_BASE_URL": emu.base_url, "UPSTAGE_API_KEY": KEY})
        try:
            prompts = [prompt_for(i, words) for i in range(n)]
            kernel.run(WIDGET_SETUP.format(n=n, prompts=prompts))
            sent = kernel.json(WIDGET_SEND)
            t0 = time.monotonic()
            cpu = kernel.json(WIDGET_CPU.format(seconds=cpu_seconds), timeout=120)
            cpu_cell = time.monotonic() - t0
            res = kernel.json(WIDGET_WAIT.format(timeout=180), timeout=240)
            alive = kernel.alive() and kernel.run("print(1 + 1)").strip() == "2"
        finally:
            kernel.close()
            emu.close()
    res.update(widgets=n, words=words, tps=tps, sent=sent, cpu=cpu, cpu_cell_seconds=cpu_cell, alive=alive)
    return res


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
              f"emulator saw {r['emulator_connections']} distinct connections, {r['emulator_requests']} requests (2 passes)")
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
        print(f"  widgets done, exact text {n_good}/{w['widgets']}  (turns recorded {w['turns']}, pending {w['pending']})")
        print(f"  all done after           {w['all_done_after']:.2f} s from the send cell")
        print(f"  kernel peak RSS          {w['kernel_peak_rss_mb']:.0f} MB; kernel alive {w['alive']}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
