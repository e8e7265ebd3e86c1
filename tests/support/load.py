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

``tests/test_load.py`` runs a CI-sized version and asserts correctness and bounds;
``benchmarks/bench_load.py`` is the command line that prints the figures:

    .venv/bin/python benchmarks/bench_load.py [--streams 500 --words 60 --tps 400] [--widgets 20]
"""
from __future__ import annotations

import asyncio
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from .harness import EmulatorProcess, KernelSession

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
            "solar-mini4", [{"role": "user", "content": prompt_for(i, words)}],
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
    from upstage_magic.providers import http as up

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
from upstage_magic.session import ChatSession
# One answer streams per conversation at a time, so each widget has its own conversation.
ws = [ChatWidget(session=ChatSession(), fetch_models=False) for _ in range({n})]
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
    return "".join(e.get("html", "") for e in w.transcript)
done, pending = await asyncio.wait(tasks, timeout={timeout})
turns = [t for w in ws for t in w.session.turns]
by_prompt = {{}}
for t in turns:
    by_prompt.setdefault(t.prompt, []).append(t)
rows = []
for w, p in zip(ws, prompts):
    ts = by_prompt.get(p, [])
    rows.append(dict(n=len(ts), status=ts[0].status if ts else None, exact=bool(ts) and ts[0].answer == p,
                     streaming=w.streaming, send_disabled=w.busy,
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
