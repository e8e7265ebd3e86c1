"""How fast does the provider turn an SSE stream into text? (a benchmark, not a test)

Runs the emulator in a subprocess (so it does not share this event loop), asks it for one
answer of N events (default 100,000) and measures, best of R runs each:

  raw read     read the response bytes with aiohttp (iter_any), no parsing
  json floor   json.loads of every event's data string alone (pre-extracted list):
               the floor for any stdlib-json parser, without the network
  naive loop   what the original class did: async for line in response.content,
               decode, strip, startswith "data:", json.loads, take delta content
  provider     async for chunk in Upstage.create_async_generator(...)

and reports provider / json floor, provider / (raw read + json floor) (the floor a
provider that reads from the network can reach with stdlib json), and naive / provider.
Then peak traced memory (tracemalloc) of the provider for a small and a large answer,
once keeping every text chunk (grows with the answer) and once discarding them (the
provider's own footprint should not grow with the answer).

    .venv/bin/python benchmarks/bench_provider.py [--events 100000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from upstage_magic.emulator import filler_text
from upstage_magic.providers.upstage import Upstage

KEY = "bench-key-not-secret"
MSGS = [{"role": "user", "content": "Benchmark, please."}]


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    """``python -m upstage_magic.emulator --port 0`` in a subprocess; returns (proc, base_url)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "upstage_magic.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+/v1)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    return proc, match.group(1)


def body(n: int, stream: bool = True) -> dict[str, Any]:
    return {"model": "solar-pro3", "messages": MSGS, "stream": stream, "emulator": {"answer_tokens": n}}


async def raw_read(session: aiohttp.ClientSession, base: str, n: int) -> bytes:
    parts = []
    async with session.post(base + "/chat/completions", json=body(n)) as r:
        async for chunk in r.content.iter_any():
            parts.append(chunk)
    return b"".join(parts)


async def naive_loop(session: aiohttp.ClientSession, base: str, n: int) -> str:
    """The original class's loop."""
    text = []
    async with session.post(base + "/chat/completions", json=body(n)) as response:
        async for line in response.content:
            line = line.decode().strip()
            if line.startswith("data:"):
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("choices"):
                    content = chunk["choices"][0]["delta"].get("content")
                    if content:
                        text.append(content)
    return "".join(text)


async def provider(base: str, n: int, keep: bool = True) -> int:
    text: list[str] = []
    count = 0
    async for chunk in Upstage.create_async_generator("solar-pro3", MSGS, base_url=base, api_key=KEY,
                                                      emulator={"answer_tokens": n}):
        if isinstance(chunk, str):
            count += 1
            if keep:
                text.append(chunk)
    return count


async def peak_memory(base: str, n: int, keep: bool) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        await provider(base, n, keep=keep)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def run(base: str, n: int, repeat: int, small: int) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    times: dict[str, list[float]] = {"raw": [], "json": [], "naive": [], "provider": []}

    async def timed(name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        gc.collect()
        t0 = time.perf_counter()
        result = await fn()
        times[name].append(time.perf_counter() - t0)
        return result

    async def floor() -> None:
        loads = json.loads
        for d in datas:
            loads(d)

    async with aiohttp.ClientSession(headers=headers) as session:
        await raw_read(session, base, 100)  # warm up the connection and the emulator
        await provider(base, 100)
        # Round robin, so machine noise hits every measurement alike; best of `repeat`.
        for _ in range(repeat):
            raw = await timed("raw", lambda: raw_read(session, base, n))
            datas = [b[6:].decode() for b in raw.split(b"\n\n") if b.startswith(b"data: ") and b != b"data: [DONE]"]
            await timed("json", floor)
            naive_text = await timed("naive", lambda: naive_loop(session, base, n))
            count = await timed("provider", lambda: provider(base, n))
            assert count == n, (count, n)
            assert naive_text == filler_text(n)
    t_raw, t_json, t_naive, t_prov = (min(times[k]) for k in ("raw", "json", "naive", "provider"))
    mem = {
        (size, keep): await peak_memory(base, size, keep)
        for size in (small, n)
        for keep in (True, False)
    }
    await Upstage.aclose()

    mb = len(raw) / 1e6
    print(f"answer: {n:,} content events, {len(datas):,} data events, {mb:.1f} MB on the wire; best of {repeat}")
    print()
    print(f"{'measurement':<34}{'seconds':>9}{'us/event':>10}{'MB/s':>8}")
    for name, t in (
        ("raw read (aiohttp iter_any)", t_raw),
        ("json.loads floor (data only)", t_json),
        ("raw read + json.loads floor", t_raw + t_json),
        ("naive loop (original class)", t_naive),
        ("provider (create_async_generator)", t_prov),
    ):
        print(f"{name:<34}{t:>9.3f}{t / len(datas) * 1e6:>10.2f}{mb / t:>8.0f}")
    print()
    r1 = t_prov / t_json
    r2 = t_prov / (t_raw + t_json)
    r3 = t_naive / t_prov
    print(f"provider / json.loads floor           {r1:5.2f}x   (goal <= 1.5x; floor excludes the network read)")
    print(f"provider / (raw read + json floor)    {r2:5.2f}x   (goal <= 1.5x; floor includes the network read)")
    print(f"naive loop / provider                 {r3:5.2f}x   (goal >= 1.5x)")
    print()
    print(f"peak traced memory (tracemalloc)      {small:>9,} events {n:>9,} events   ratio (events x{n / small:g})")
    for keep in (True, False):
        label = "keeping every text chunk" if keep else "discarding text chunks"
        a, b = mem[(small, keep)], mem[(n, keep)]
        print(f"  provider, {label:<27}{a / 1e6:>9.2f} MB   {b / 1e6:>9.2f} MB    {b / a:5.1f}x")
    ga = mem[(small, True)] - mem[(small, False)]
    gb = mem[(n, True)] - mem[(n, False)]
    print(f"  growth from the kept text            {ga / 1e6:>9.2f} MB   {gb / 1e6:>9.2f} MB    {gb / max(ga, 1):5.1f}x"
          f"   ({gb / n:.0f} bytes per kept chunk)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="small answer for the memory comparison")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    proc, base = start_emulator()
    t0 = time.perf_counter()
    try:
        asyncio.run(run(base, args.events, args.repeat, args.small))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\n(total {time.perf_counter() - t0:.1f} s; python {sys.version.split()[0]}, aiohttp {aiohttp.__version__})")


if __name__ == "__main__":
    main()
