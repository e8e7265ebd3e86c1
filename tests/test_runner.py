"""runner.run_stream: order, batching, a minimum tick (no busy-spin), errors, interrupts.

No wall-clock windows: the tests count hand-overs and ticks. The one bound that involves
time (``wake-ups <= elapsed / MIN_INTERVAL + 2``) is an invariant of the design that a
slower machine only loosens, never breaks.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from upstage_magic.notebook import runner
from upstage_magic.notebook.runner import MIN_INTERVAL, run_coroutine, run_stream


async def burst(n: int, *, fail: BaseException | None = None) -> AsyncIterator[int]:
    for i in range(n):  # never waits: one burst, like a fast network read
        yield i
    if fail is not None:
        raise fail


async def trickle(n: int, pause: float) -> AsyncIterator[int]:
    for i in range(n):
        yield i
        await asyncio.sleep(pause)


def test_every_item_arrives_once_in_order():
    batches: list[list[int]] = []
    run_stream(lambda: burst(10_000), batches.append)
    assert [x for b in batches for x in b] == list(range(10_000))
    assert all(batches)  # no empty hand-overs


def test_first_item_is_handed_over_alone_when_the_rest_is_not_there_yet():
    gate = threading.Event()

    async def first_then_wait() -> AsyncIterator[int]:
        yield 0
        while not gate.is_set():  # the rest comes only after the caller has shown item 0
            await asyncio.sleep(0.001)
        for i in range(1, 100):
            yield i

    batches: list[list[int]] = []

    def on_batch(items: list[int]) -> None:
        batches.append(items)
        gate.set()

    run_stream(first_then_wait, on_batch)
    assert batches[0] == [0]
    assert [x for b in batches for x in b] == list(range(100))


def test_the_stream_waits_until_the_first_item_is_shown(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runner, "FIRST_WAIT", 30.0)  # so only the caller's ack can end the wait
    handled = threading.Event()
    resumed_after_shown: list[bool] = []

    async def two() -> AsyncIterator[int]:
        yield 0
        resumed_after_shown.append(handled.is_set())  # the producer goes on parsing only now
        yield 1

    def on_batch(items: list[int]) -> None:
        handled.set()

    run_stream(two, on_batch)
    assert resumed_after_shown == [True]


@pytest.mark.parametrize("interval", [0, -1, 0.001])
def test_a_tiny_interval_cannot_busy_spin(interval: float):
    # 400 items ~1 ms apart: with one wake-up per item (the old busy-spin) there would be
    # ~400 hand-overs; with the floor there is at most one per MIN_INTERVAL (+ first, end).
    wakeups = 0

    def count(_items: object = None) -> None:
        nonlocal wakeups
        wakeups += 1

    seen: list[int] = []

    def on_batch(items: list[int]) -> None:
        seen.extend(items)
        count()

    t0 = time.monotonic()
    run_stream(lambda: trickle(400, 0.001), on_batch, tick=count, interval=interval)
    elapsed = time.monotonic() - t0
    assert seen == list(range(400))
    assert wakeups <= elapsed / MIN_INTERVAL + 2
    assert wakeups < 400 / 4  # bounded by ticks, not by items


def test_tick_is_called_while_idle_and_items_flow_after():
    release = asyncio.Event()
    ticks = 0

    async def waits_for_ticks() -> AsyncIterator[int]:
        yield 0
        await release.wait()
        for i in range(1, 10):
            yield i

    loop_of: list[asyncio.AbstractEventLoop] = []

    async def capture_loop() -> None:
        loop_of.append(asyncio.get_running_loop())

    run_coroutine(capture_loop)

    def tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 3:  # the stream only goes on once the caller has ticked 3 times
            loop_of[0].call_soon_threadsafe(release.set)

    seen: list[int] = []
    run_stream(waits_for_ticks, seen.extend, tick=tick, interval=0)
    assert seen == list(range(10))
    assert ticks >= 3


def test_error_is_raised_after_the_items_before_it():
    seen: list[int] = []
    with pytest.raises(ValueError, match="boom"):
        run_stream(lambda: burst(50, fail=ValueError("boom")), seen.extend)
    assert seen == list(range(50))


def test_error_before_any_item_and_empty_stream():
    def broken() -> AsyncIterator[int]:
        raise RuntimeError("could not start")

    with pytest.raises(RuntimeError, match="could not start"):
        run_stream(broken, lambda items: None)
    seen: list[int] = []
    run_stream(lambda: burst(0), seen.extend)
    assert seen == []


def _endless(cleaned: threading.Event) -> AsyncIterator[int]:
    async def gen() -> AsyncIterator[int]:
        i = 0
        try:
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.001)
        finally:
            await asyncio.sleep(0.05)  # slow cleanup (closing a connection, say)
            cleaned.set()

    return gen()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, ValueError])
def test_an_error_in_the_caller_cancels_the_stream_and_waits_for_its_cleanup(exc_type: type[BaseException]):
    cleaned = threading.Event()
    seen: list[int] = []

    def on_batch(items: list[int]) -> None:
        seen.extend(items)
        if len(seen) >= 5:
            raise exc_type("stop")  # what SIGINT does in the caller's thread

    with pytest.raises(exc_type):
        run_stream(lambda: _endless(cleaned), on_batch, interval=0)
    assert cleaned.is_set()  # the stream's cleanup ran before run_stream returned
    assert seen[:5] == list(range(5))


def test_run_coroutine_returns_raises_and_times_out():
    async def value() -> int:
        return 42

    async def fails() -> None:
        raise LookupError("nope")

    cleaned = threading.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    assert run_coroutine(value) == 42
    with pytest.raises(LookupError, match="nope"):
        run_coroutine(fails)
    with pytest.raises(TimeoutError, match="no answer within"):
        run_coroutine(hangs, timeout=0.01)
    assert cleaned.is_set()
