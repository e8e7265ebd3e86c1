"""runner.run_stream: order, batching of bursts, first item alone, errors after the items."""
from __future__ import annotations

import asyncio

import pytest

from upstage_magic.runner import run_stream


async def burst(n: int, *, fail: BaseException | None = None):
    for i in range(n):  # never waits: one burst, like a fast network read
        yield i
    if fail is not None:
        raise fail


async def paced(n: int):
    for i in range(n):
        yield i
        await asyncio.sleep(0.001)


def test_burst_is_batched_in_order_with_first_item_alone():
    batches: list[list[int]] = []
    run_stream(lambda: burst(10_000), on_batch=batches.append, max_batch=1000)
    assert batches[0] == [0]
    assert [x for b in batches for x in b] == list(range(10_000))
    assert all(len(b) <= 1000 for b in batches)
    assert len(batches) < 100  # not one hand-over per item


def test_paced_stream_hands_over_each_item():
    batches: list[list[int]] = []
    run_stream(lambda: paced(5), on_batch=batches.append)
    assert batches == [[0], [1], [2], [3], [4]]


def test_on_item_sees_every_item_in_order():
    seen: list[int] = []
    run_stream(lambda: burst(500), seen.append)
    assert seen == list(range(500))


def test_error_is_raised_after_the_items_before_it():
    seen: list[int] = []
    with pytest.raises(ValueError, match="boom"):
        run_stream(lambda: burst(50, fail=ValueError("boom")), seen.append)
    assert seen == list(range(50))


def test_empty_stream_and_bad_arguments():
    seen: list[int] = []
    run_stream(lambda: burst(0), seen.append)
    assert seen == []
    with pytest.raises(TypeError):
        run_stream(lambda: burst(1))
    with pytest.raises(TypeError):
        run_stream(lambda: burst(1), seen.append, on_batch=seen.extend)


async def slow(n: int, pause: float):
    for i in range(n):
        yield i
        await asyncio.sleep(pause)


def test_due_holds_items_until_the_caller_needs_them():
    import time

    seen: list[tuple[float, list[int]]] = []
    record = lambda b: seen.append((time.monotonic(), b))  # noqa: E731
    run_stream(lambda: slow(5, 0.03), on_batch=record, due=lambda: time.monotonic() + 60)
    assert [x for _, b in seen for x in b] == list(range(5))
    assert seen[-1][0] - seen[1][0] < 0.02  # items 1..4 came together, at the end
    seen.clear()
    run_stream(lambda: slow(5, 0.03), on_batch=record, due=lambda: None)
    assert seen[-1][0] - seen[1][0] > 0.06  # no hold: each as it arrives


def test_due_in_the_near_future_wakes_the_caller_then():
    import time

    seen: list[tuple[float, list[int]]] = []
    start = time.monotonic()
    run_stream(lambda: slow(20, 0.01), on_batch=lambda b: seen.append((time.monotonic(), b)),
               due=lambda: start + 0.08)
    got_at = [t - start for t, b in seen for _ in b]
    assert any(0.075 < t < 0.15 and t < got_at[-1] - 0.03 for t in got_at[1:])  # woke at the due time
