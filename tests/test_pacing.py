"""Batch pacing from x-ratelimit headers: parsing, the emulator's headers, the pacer, a paced batch."""
from __future__ import annotations

import asyncio
import collections

import pytest

from upstage_magic.emulator import Emulator
from upstage_magic.notebook.batch import BatchStats, abatch
from upstage_magic.notebook.pacing import AimdPacer, HeaderPacer
from upstage_magic.providers import Upstage, ratelimit

KEY = "pacing-test-key"


@pytest.fixture(autouse=True)
async def _clean():
    ratelimit.reset()
    yield
    ratelimit.reset()
    await Upstage.aclose()


@pytest.fixture
async def emu():
    e = Emulator(reply="echo")
    await e.start()
    try:
        yield e
    finally:
        await e.stop()


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("20ms", 0.02), ("6m0s", 360.0), ("1m30.5s", 90.5), ("0.5", 0.5), ("2", 2.0), ("1h", 3600.0),
])
def test_durations(text, seconds):
    assert ratelimit.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "s", "-"])
def test_unreadable_durations(text):
    assert ratelimit.parse_duration(text) is None


def test_observe_keeps_the_newest_reading_per_host():
    assert ratelimit.observe("http://a:1/v1/chat/completions", {"content-type": "x"}) is None
    ratelimit.observe("http://a:1/v1/chat/completions", {"x-ratelimit-limit-requests": "100",
                                                          "x-ratelimit-remaining-requests": "7",
                                                          "x-ratelimit-reset-requests": "1s"})
    got = ratelimit.latest("http://a:1/v1")
    assert got is not None and (got.limit, got.remaining, got.reset) == (100, 7, 1.0)
    assert ratelimit.latest("http://b:1/v1") is None


async def _post(session, url):
    payload = {"model": "solar-mini4", "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(url + "/chat/completions", json=payload, headers={"Authorization": f"Bearer {KEY}"}) as r:
        await r.read()
        return r.status, dict(r.headers)


async def test_emulator_sends_rate_limit_headers_with_every_answer(emu):
    import aiohttp

    async with aiohttp.ClientSession() as s:
        plain = await _post(s, emu.base_url)
        emu.configure(rate_limit={"rps": 3, "rpm": 100})
        got = [await _post(s, emu.base_url) for _ in range(4)]
    assert plain[0] == 200 and "x-ratelimit-limit-requests" not in plain[1]  # no rate limit, no headers
    assert [st for st, _ in got] == [200, 200, 200, 429]
    assert [h["x-ratelimit-remaining-requests"] for _, h in got[:3]] == ["2", "1", "0"]
    assert {h["x-ratelimit-limit-requests"] for _, h in got[:3]} == {"3"}  # the limit nearest to running out
    assert all(ratelimit.parse_duration(h["x-ratelimit-reset-requests"]) == pytest.approx(1.0, abs=0.01)
               for _, h in got[:3])


def _send_times(pacer, start: float, end: float, latency: float) -> list[float]:
    """When the pacer lets requests go over [start, end), each answered ``latency`` s after it went."""
    sent: list[float] = []
    answers: list[float] = []  # when the ones on the way come back
    t = start
    while t < end:
        while answers and answers[0] <= t:
            pacer.active -= 1
            pacer.answered(answers.pop(0))
        wait = pacer.pace(t)
        if wait == 0:
            pacer.active += 1
            pacer.sent(t)
            sent.append(t)
            answers.append(t + latency)
            continue
        t = min(t + wait if wait != float("inf") else end, answers[0] if answers else end)
    return sent


def _observe(host, limit, remaining, reset, status=200):
    ratelimit.observe(f"http://{host}/v1/chat/completions", {"x-ratelimit-limit-requests": str(limit),
                                                            "x-ratelimit-remaining-requests": str(remaining),
                                                            "x-ratelimit-reset-requests": reset}, status)


def test_header_pacer_holds_a_slot_from_the_send_until_a_window_after_the_answer():
    pacer = HeaderPacer(16, BatchStats(), "http://h:1/v1")
    assert pacer.pace(0.0) == 0.0  # no reading yet: AIMD alone
    _observe("h:1", 10, 0, "1s")
    pacer.pace(0.0)
    assert pacer.rate == pytest.approx(10.0) and pacer.window == pytest.approx(1.0)  # 10 used, back in 1 s
    sent = _send_times(pacer, 0.0, 2.5, latency=0.2)
    assert sent[:9] == [0.0] * 9  # the limit less one
    # the server counted each at some moment between its send and its answer (0.2 s later):
    # the next nine wait for a window after the answers, not after the sends
    assert sent[9:18] == [pytest.approx(1.2, abs=0.002)] * 9


def test_header_pacer_tells_a_window_counter_from_a_token_bucket():
    window = HeaderPacer(8, BatchStats(), "http://w:1/v1")
    _observe("w:1", 100, 99, "1s")  # one used, and still a second until it is back to full
    window.pace(0.0)
    _observe("w:1", 100, 10, "1s")
    window.pace(0.0)
    assert window.windowed and window.window == pytest.approx(1.0)  # not 100 / 90 requests/s = 1.11 s

    bucket = HeaderPacer(8, BatchStats(), "http://b:1/v1")
    _observe("b:1", 10, 9, "100ms")  # a bucket's reset grows with use
    bucket.pace(0.0)
    _observe("b:1", 10, 5, "500ms")
    bucket.pace(0.0)
    assert not bucket.windowed and bucket.window == pytest.approx(1.0)  # 10 per second either way


async def test_a_refused_request_holds_no_slot():
    pacer = HeaderPacer(8, BatchStats(), "http://r:1/v1")
    _observe("r:1", 10, 0, "1s")
    await pacer.acquire()
    pacer.release(refused=True)  # answered 429: the server did not count it
    await pacer.acquire()
    pacer.release()
    assert len(pacer.answered_at) == 1


def test_header_pacer_waits_for_the_reset_of_a_refusal_before_a_rate_is_known():
    import time

    pacer = HeaderPacer(8, BatchStats(), "http://h:2/v1")
    _observe("h:2", 10, 0, "500ms", 429)
    wait = pacer.pace(time.monotonic())
    assert pacer.rate == 0 and 0.3 < wait <= 0.5  # no rate learned from a 429: its reset is waited


def test_aimd_pacer_never_waits_on_headers():
    ratelimit.observe("http://h:1/v1/chat/completions", {"x-ratelimit-limit-requests": "1",
                                                          "x-ratelimit-remaining-requests": "0",
                                                          "x-ratelimit-reset-requests": "9s"})
    assert AimdPacer(8, BatchStats()).pace(0.0) == 0.0


async def test_header_pacing_keeps_429s_rare_and_loses_nothing(emu, tmp_path):
    emu.configure(rate_limit={"rps": 50})
    items = [f"p{i}" for i in range(150)]
    base = {"base_url": emu.base_url, "api_key": KEY, "model": "solar-mini4"}
    t0 = asyncio.get_running_loop().time()
    out = await abatch("{item}", items, cache=str(tmp_path / "a.sqlite3"), **base)
    wall = asyncio.get_running_loop().time() - t0
    assert out == items and out.errors == []
    assert emu.rate_limited <= 3  # under 2%
    counts = collections.Counter(r["messages"][-1]["content"] for r in emu.requests)
    assert counts == collections.Counter(items)
    assert wall < 150 / 50 * 1.25 + 0.5
    emu.reset()
    emu.configure(reply="echo", rate_limit={"rps": 50})
    old = await abatch("{item}", items, cache=str(tmp_path / "b.sqlite3"), pacing="aimd", **base)
    assert old == items and emu.rate_limited > 3  # the old pacing learns only from 429s


async def test_batch_does_not_retry_a_5xx_validation_error(tmp_path):
    from upstage_magic.errors import ServerError

    class Refusing:
        default_model = "solar-mini4"
        calls = 0

        async def create_async_generator(self, model, messages, **options):
            Refusing.calls += 1
            raise ServerError("HTTP 500: 1 validation error for ChatCompletionRequest: response_format.type "
                              "Input should be 'text' or 'json_object'", status=500)
            yield ""  # pragma: no cover - an async generator

    out = await abatch("{item}", ["a", "b"], provider=Refusing(), cache=False)
    assert Refusing.calls == 2 and len(out.errors) == 2  # one request per item, not four
