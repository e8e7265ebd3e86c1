"""Benchmark the %%upstage magic in a real kernel against the emulator (not a test).

Prints, for a long answer at full speed and one paced at ~50 tokens/s: display messages,
bytes sent to the front end, end-to-end time vs the provider alone, and the delay from
the first bytes leaving the emulator to the first display message. Then the cost of
``%load_ext upstage_magic`` on top of a bare IPython start.

    .venv/bin/python benchmarks/bench_magic.py [--runs 3]

Goals (issue 3): display messages <= 12 per streamed second + 3; end-to-end within 1.3x
of the provider alone; first text shown within 50 ms of arrival; %load_ext adds < 150 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEY = "bench-key-not-secret"

_first_write: list[float] = []
_lock = threading.Lock()


def _patch_emulator_writes() -> None:
    """Record the wall time of each response's first body write (emulator side)."""
    from aiohttp import web

    original = web.StreamResponse.write

    async def write(self, data):  # type: ignore[no-untyped-def]
        if b'"content":"' in data and b'"content":""' not in data[:200] and not getattr(self, "_bench_seen", False):
            self._bench_seen = True
            with _lock:
                _first_write.append(time.time())
        return await original(self, data)

    web.StreamResponse.write = write  # type: ignore[method-assign]


def _collect(kc, msg_id: str, timeout: float = 300):
    msgs = []
    while True:
        m = kc.get_iopub_msg(timeout=timeout)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        msgs.append(m)
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return msgs


def _epoch(date) -> float:
    if isinstance(date, datetime):
        return date.timestamp()
    return datetime.fromisoformat(str(date)).timestamp()


def bench_magic(kc, emu, *, tokens: int, tps: float | None, runs: int) -> dict:
    emu.configure(answer_tokens=tokens, tokens_per_second=tps)
    counts, sizes, e2e, delays = [], [], [], []
    for _ in range(runs):
        with _lock:
            _first_write.clear()
        code = (
            "import time as _t; _t0=_t.perf_counter()\n"
            "get_ipython().run_cell_magic('upstage', '--no-history', 'bench')\n"
            "print('E2E', _t.perf_counter()-_t0)"
        )
        msgs = _collect(kc, kc.execute(code))
        disp = [m for m in msgs if m["msg_type"] in ("display_data", "update_display_data")]
        errs = [m for m in msgs if m["msg_type"] == "error"]
        if errs:
            raise RuntimeError(errs[0]["content"]["evalue"])
        counts.append(len(disp))
        sizes.append(sum(len(json.dumps(m["content"]["data"])) for m in disp))
        out = "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream")
        e2e.append(float(out.split("E2E", 1)[1].split()[0]))
        with _lock:
            first = _first_write[0] if _first_write else None
        if first is not None:
            delays.append(_epoch(disp[0]["header"]["date"]) - first)
    return {"messages": counts, "bytes": sizes, "e2e": e2e, "first_display_delay": delays}


def bench_provider(base_url: str, *, runs: int) -> list[float]:
    """The provider alone, consuming the same stream in a fresh loop (best of runs)."""
    from upstage_magic.providers import Upstage

    async def once() -> float:
        t0 = time.perf_counter()
        async for _ in Upstage.create_async_generator(None, [{"role": "user", "content": "bench"}],
                                                      api_key=KEY, base_url=base_url):
            pass
        dt = time.perf_counter() - t0
        await Upstage.aclose()
        return dt

    return [asyncio.run(once()) for _ in range(runs)]


def bench_import(n: int) -> tuple[float, float, float]:
    base = ("from IPython.core.interactiveshell import InteractiveShell;"
            "ip = InteractiveShell.instance(history_length=0);")
    ext = base + "ip.run_line_magic('load_ext', 'upstage_magic');"
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def best(code: str) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        return min(times)

    t_bare, t_ext = best(base), best(ext)
    # in-process: the import + load itself, after IPython is already imported
    code = (base + "import time; t=time.perf_counter(); ip.run_line_magic('load_ext', 'upstage_magic');"
            "print(time.perf_counter()-t)")
    inproc = min(float(subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True,
                                      text=True).stdout) for _ in range(n))
    return t_bare, t_ext, inproc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--long-tokens", type=int, default=2000)
    parser.add_argument("--paced-tokens", type=int, default=150)
    args = parser.parse_args()

    _patch_emulator_writes()
    from jupyter_client.manager import start_new_kernel

    from upstage_magic.emulator import serve_in_thread

    with serve_in_thread(api_key=KEY) as emu:
        env = dict(os.environ, UPSTAGE_BASE_URL=emu.base_url, UPSTAGE_API_KEY=KEY, PYTHONPATH=str(ROOT))
        km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)
        try:
            _collect(kc, kc.execute("%load_ext upstage_magic"))
            emu.configure(answer_tokens=5)  # warm-up: imports, connection
            _collect(kc, kc.execute("%%upstage --no-history\nwarm up"))
            print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; best/median of {args.runs}")
            for label, tokens, tps in (("long, full speed", args.long_tokens, None),
                                       ("paced ~50 tok/s", args.paced_tokens, 50.0)):
                r = bench_magic(kc, emu, tokens=tokens, tps=tps, runs=args.runs)
                emu.configure(answer_tokens=tokens, tokens_per_second=tps)
                p = bench_provider(emu.base_url, runs=args.runs)
                e2e, prov = min(r["e2e"]), min(p)
                streamed = statistics.median(r["e2e"])
                bound = 12 * streamed + 3
                print(f"\n[{label}: {tokens} tokens]")
                print(f"  display messages : {r['messages']}  (goal <= 12/s*{streamed:.2f}s+3 = {bound:.0f})")
                print(f"  bytes to frontend: {r['bytes']}")
                print(f"  end-to-end magic : {e2e*1000:.0f} ms   provider alone: {prov*1000:.0f} ms"
                      f"   ratio {e2e/prov:.2f} (goal <= 1.3)")
                if r["first_display_delay"]:
                    d = [x * 1000 for x in r["first_display_delay"]]
                    print(f"  first text sent -> first display msg: "
                          f"{', '.join(f'{x:.1f}' for x in d)} ms (goal <= 50)")
            print("\n[interrupt during a paced stream]")
            emu.configure(answer_tokens=2000, tokens_per_second=50)
            lat = []
            for _ in range(args.runs):
                msg_id = kc.execute("%%upstage --no-history\nslow")
                while True:
                    m = kc.get_iopub_msg(timeout=60)
                    if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "display_data":
                        break
                time.sleep(0.5)
                t0 = time.perf_counter()
                km.interrupt_kernel()
                msgs = _collect(kc, msg_id)
                lat.append(time.perf_counter() - t0)
                ename = [m["content"]["ename"] for m in msgs if m["msg_type"] == "error"]
                tb = [m["content"]["traceback"] for m in msgs if m["msg_type"] == "error"]
            print(f"  interrupt -> kernel idle: {', '.join(f'{x*1000:.0f}' for x in lat)} ms (goal < 1000); "
                  f"error {ename}, traceback lines {len(tb[0]) if tb else 0}")
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)

    bare, ext, inproc = bench_import(max(10, args.runs))
    print("\n[%load_ext upstage_magic cost]")
    print(f"  bare IPython shell start : {bare*1000:.0f} ms (best of {max(10, args.runs)})")
    print(f"  + %load_ext upstage_magic: {ext*1000:.0f} ms  (adds {(ext-bare)*1000:.0f} ms; goal < 150)")
    print(f"  %load_ext alone, in-process: {inproc*1000:.1f} ms")


if __name__ == "__main__":
    main()
