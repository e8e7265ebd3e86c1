"""Document Parse: a cached parse, and a 100-page PDF through the asynchronous path (a benchmark).

  cached parse   ``aparse`` of a file whose parse is in the disk cache: read, local checks
                 (size, type, PDF page count), content hash, JSON read, Document built.
                 Goal: under 10 ms for a small report; the 100-page PDF shown too.
  async 100 p.   a generated 100-page PDF through the asynchronous endpoint of the in-process
                 emulator (10 batches of 10 pages), polling and downloading each batch:
                 with the emulator taking no time per batch (the client's own overhead plus
                 the emulator's PDF reading), and at 0.05 s per batch (the default).

Best of R runs. PDFs are made here with fpdf2 (the test extra); nothing is downloaded.

    .venv/bin/python benchmarks/bench_documents.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.pdfs import long_pdf, report_pdf  # noqa: E402
from upstage_magic.emulator import Emulator  # noqa: E402
from upstage_magic.providers.documents import aparse  # noqa: E402

KEY = "bench-key"


async def best(repeat: int, make) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await make()
        times.append(time.perf_counter() - t0)
    return min(times)


async def main(repeat: int) -> None:
    d = Path(tempfile.mkdtemp(prefix="bench-docs-"))
    small, big = d / "report.pdf", d / "long.pdf"
    small.write_bytes(report_pdf())
    big.write_bytes(long_pdf(100))
    emu = Emulator(api_key=KEY)
    base = await emu.start()
    try:
        kw = {"base_url": base, "api_key": KEY, "cache_dir": d / "cache"}
        first = await best(1, lambda: aparse(small, **kw))
        cached = await best(repeat * 4, lambda: aparse(small, **kw))
        await aparse(big, **kw, poll=0.01)
        cached_big = await best(repeat * 4, lambda: aparse(big, **kw))
        print(f"sync parse, 3-page report (emulator)      {first * 1000:8.1f} ms")
        print(f"cached parse, 3-page report                {cached * 1000:8.2f} ms   goal < 10 ms: "
              f"{'met' if cached < 0.010 else 'NOT met'} ({cached / 0.010:.2f}x of the goal)")
        print(f"cached parse, 100-page PDF                 {cached_big * 1000:8.2f} ms")

        async def fresh() -> None:
            pages: list[int] = []
            doc = await aparse(big, **kw, cache=False, use_async=True, poll=0.01,
                               on_progress=lambda done, total: pages.append(done))
            assert doc.page_count == 100 and pages[-1] == 100

        for per_batch in (0.0, 0.05):
            emu.documents.seconds_per_batch = per_batch
            t = await best(repeat, fresh)
            floor = 10 * per_batch
            print(f"async parse, 100 pages, {per_batch:.2f} s/batch        {t:8.2f} s   (emulated processing "
                  f"{floor:.2f} s; client + emulator PDF reading {t - floor:.2f} s)")
        print(f"cached / first parse of the report: {cached / first:.3f}x")
    finally:
        await emu.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    asyncio.run(main(p.parse_args().repeat))
