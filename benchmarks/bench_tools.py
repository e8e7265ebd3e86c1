"""Benchmark the tool loop's own cost per step in a real kernel (not a test).

A cell ``%%upstage --tools noop --approve noop --max-steps N`` against the emulator, which
calls the tool on every request (``reply: "tool_call"``): N requests, N-1 tool steps, each
step streamed into its own view, its call run, its block shown, the next request planned.
The same N requests (the exact bodies the magic sent, read back from the emulator) are
then sent by the provider alone, in the same kernel, on the magic's background loop over
the same warm connection; runs alternate. The extension's own cost per tool step is

    (cell time - provider-alone time) / (N - 1)

(the function is a no-op; the server's time is in both and cancels out). Then the pure
per-call cost of checking arguments, running the call and building the messages, in process.

    .venv/bin/python benchmarks/bench_tools.py [--steps 11] [--runs 7]

Goal (issue 19): under 5 ms per tool step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.harness import KernelSession  # noqa: E402

KEY = "bench-key-not-secret"

SETUP = """
%load_ext upstage_magic
%config UpstageMagics.log_path = ''
import json as _json, time as _t
from upstage_magic.notebook.runner import run_coroutine as _bench_run
from upstage_magic.providers import Upstage as _U
def noop(x: int) -> int:
    \"\"\"Returns x.\"\"\"
    return x
async def _bench_consume(bodies):
    for body in bodies:
        extra = {k: v for k, v in body.items() if k not in ("model", "messages", "stream", "stream_options")}
        async for _x in _U.create_async_generator(body["model"], body["messages"], **extra):
            pass
"""
MAGIC = ("_t0 = _t.perf_counter()\n"
         "get_ipython().run_cell_magic('upstage', '--tools noop --approve noop --no-history --max-steps {n}', 'go')\n"
         "print('CELL', _t.perf_counter() - _t0)")
PROVIDER = "_b = _json.loads({bodies!r}); _t0 = _t.perf_counter(); _bench_run(lambda: _bench_consume(_b)); print('PROV', _t.perf_counter() - _t0)"


def _figure(kernel: KernelSession, code: str, tag: str) -> float:
    r = kernel.execute(code, 300)
    if r.error is not None:
        raise RuntimeError(f"{r.error['ename']}: {r.error['evalue']}")
    return float(r.stdout.split(tag, 1)[1].split()[0])


def bench_kernel(steps: int, runs: int) -> tuple[list[float], list[float]]:
    from upstage_magic.emulator import serve_in_thread

    with serve_in_thread(api_key=KEY, reply="tool_call") as emu:
        kernel = KernelSession({"UPSTAGE_BASE_URL": emu.base_url, "UPSTAGE_API_KEY": KEY})
        try:
            kernel.run(SETUP)
            cells, provs = [], []
            for i in range(runs + 1):  # the first run warms both up
                emu.reset()
                emu.configure(reply="tool_call")
                cell = _figure(kernel, MAGIC.format(n=steps), "CELL")
                bodies = [{k: v for k, v in b.items() if k != "has_auth"} for b in emu.requests]
                assert len(bodies) == steps, len(bodies)
                prov = _figure(kernel, PROVIDER.format(bodies=json.dumps(bodies)), "PROV")
                if i:
                    cells.append(cell)
                    provs.append(prov)
            return cells, provs
        finally:
            kernel.close()


def bench_pure(n: int = 2000) -> float:
    """Per call: check arguments, approve (auto), run, text, messages (no display, no HTTP)."""
    from upstage_magic.events import ToolCall
    from upstage_magic.notebook.toolrun import run_call, step_messages
    from upstage_magic.tools import tool

    @tool(approve=False)
    def noop(x: int) -> int:
        return x

    from upstage_magic.tools import as_tool

    tools = {"noop": as_tool(noop)}
    call = ToolCall(name="noop", arguments='{"x": 1}', id="c1")
    ex: Any = SimpleNamespace(text="")  # step_messages reads only the step's text
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            step_messages(ex, [run_call(call, tools, step=1, always=set())], 1)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=11, help="requests per cell (tool steps: one fewer)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    cells, provs = bench_kernel(args.steps, args.runs)
    per = [(c - p) / (args.steps - 1) * 1000 for c, p in zip(cells, provs, strict=True)]
    print(f"tool loop in a kernel: {args.steps} requests, {args.steps - 1} tool steps, {args.runs} runs")
    print(f"  cell (magic)    : best {min(cells) * 1000:.1f} ms, median {statistics.median(cells) * 1000:.1f} ms")
    print(f"  provider alone  : best {min(provs) * 1000:.1f} ms, median {statistics.median(provs) * 1000:.1f} ms")
    print(f"  own cost / step : best {min(per):.2f} ms, median {statistics.median(per):.2f} ms "
          f"(goal < 5 ms: {'met' if statistics.median(per) < 5 else 'NOT met'})")
    print(f"pure per call (check, run, text, messages): {bench_pure() * 1e6:.1f} us")


if __name__ == "__main__":
    main()
