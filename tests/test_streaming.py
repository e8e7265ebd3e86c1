"""The Upstage provider against the emulator, over real loopback HTTP."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import upstage_magic.providers.upstage as upstage_module
from upstage_magic.emulator import (
    REASONING_TEXT,
    Emulator,
    canned_reply,
    filler_text,
    serve_in_thread,
    tokenize,
)
from upstage_magic.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    IncompleteStreamError,
    MalformedEventError,
    ModelNotFoundError,
    RateLimitError,
    ServerError,
    StreamErrorEvent,
    UpstageError,
)
from upstage_magic.events import FinishReason, Reasoning, Usage
from upstage_magic.providers.upstage import Upstage

TEST_KEY = "test-key-SECRET123"
MSGS = [{"role": "user", "content": "What is Solar?"}]


@pytest.fixture(autouse=True)
async def _close_provider_session() -> AsyncIterator[None]:
    yield
    await Upstage.aclose()


async def collect(model: str | None = "solar-pro3", messages: Any = MSGS, **kw: Any) -> list[Any]:
    return [c async for c in Upstage.create_async_generator(model, messages, **kw)]


async def collect_until_error(exc_type: type[BaseException], **kw: Any) -> tuple[list[Any], BaseException]:
    """Items yielded before the stream raised ``exc_type`` (which it must)."""
    items: list[Any] = []
    with pytest.raises(exc_type) as info:
        async for chunk in Upstage.create_async_generator(kw.pop("model", "solar-pro3"), kw.pop("messages", MSGS), **kw):
            items.append(chunk)
    assert_no_key(info.value)
    return items, info.value


def text_of(items: list[Any]) -> str:
    return "".join(c for c in items if isinstance(c, str))


def assert_no_key(err: BaseException | None) -> None:
    """Neither the error nor anything it chains to shows the API key."""
    seen = 0
    while err is not None and seen < 10:
        assert TEST_KEY not in str(err) and TEST_KEY not in repr(err), repr(err)
        err = err.__cause__ or err.__context__
        seen += 1


def first(n: int, text: str) -> str:
    return "".join(tokenize(text)[:n])


# ------------------------------------------------------------------------ streaming


async def test_stream_text_finish_and_usage_in_order(emulator_env: Emulator) -> None:
    items = await collect()
    expected = canned_reply(MSGS)
    assert text_of(items) == expected
    strs = [c for c in items if isinstance(c, str)]
    assert len(strs) == len(tokenize(expected))  # one delta per event, none merged or lost
    events = [c for c in items if not isinstance(c, str)]
    assert events == [FinishReason("stop"), Usage(3, len(strs), 3 + len(strs))]
    assert items[-2] == FinishReason("stop") and isinstance(items[-1], Usage)
    assert items[-1].total_tokens == 3 + len(strs)


async def test_request_carries_roles_options_and_auth(emulator_env: Emulator) -> None:
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    items = await collect("solar-pro3", msgs, temperature=0.2, top_p=0.9, stop=["\n\n\n"], seed=7)
    assert "You asked: second" in text_of(items) and "Turn 2" in text_of(items)
    (req,) = emulator_env.requests
    assert req["messages"] == msgs
    assert req["model"] == "solar-pro3" and req["stream"] is True
    assert req["stream_options"] == {"include_usage": True}
    assert (req["temperature"], req["top_p"], req["stop"], req["seed"]) == (0.2, 0.9, ["\n\n\n"], 7)
    assert req["has_auth"] is True
    assert TEST_KEY not in json.dumps(emulator_env.requests)


async def test_every_listed_model_and_alias_is_accepted(emulator_env: Emulator) -> None:
    names = [*Upstage.models, *Upstage.model_aliases, None, ""]
    for name in names:
        items = await collect(name, emulator={"reply": "ok"})
        assert text_of(items) == "ok", name


async def test_reasoning_events(emulator_env: Emulator) -> None:
    items = await collect(emulator={"reasoning": True, "reply": "echo"})
    n_r = len(tokenize(REASONING_TEXT))
    assert all(isinstance(c, Reasoning) for c in items[:n_r])
    assert "".join(c.text for c in items[:n_r]) == REASONING_TEXT
    assert not any(isinstance(c, Reasoning) for c in items[n_r:])
    assert text_of(items) == "What is Solar?"
    assert isinstance(items[-1], Usage) and items[-1].reasoning_tokens == n_r


async def test_stream_false_yields_whole_answer_once(emulator_env: Emulator) -> None:
    items = await collect(stream=False, emulator={"reasoning": True})
    strs = [c for c in items if isinstance(c, str)]
    assert strs == [canned_reply(MSGS)]
    assert isinstance(items[0], Reasoning) and items[0].text == REASONING_TEXT
    assert FinishReason("stop") in items and isinstance(items[-1], Usage)
    assert emulator_env.requests[-1]["stream"] is False


async def test_create_async_joins_text(emulator_env: Emulator) -> None:
    assert await Upstage.create_async("solar-pro3", MSGS) == canned_reply(MSGS)


def test_create_completion_sync_against_threaded_emulator() -> None:
    with serve_in_thread(reply="echo") as emu:
        text = Upstage.create_completion("solar-pro3", MSGS, base_url=emu.base_url, api_key=TEST_KEY)
    assert text == "What is Solar?"


async def test_list_models(emulator_env: Emulator) -> None:
    models = await Upstage.list_models()
    assert {"solar-pro3", "solar-mini", "solar-pro4-260806"} <= set(models)


async def test_large_answer_exact(emulator_env: Emulator) -> None:
    items = await collect(emulator={"answer_tokens": 100_000})
    assert text_of(items) == filler_text(100_000)
    assert items[-1].completion_tokens == 100_000


async def test_empty_answer(emulator_env: Emulator) -> None:
    items = await collect(emulator={"fault": {"kind": "empty"}})
    assert text_of(items) == ""
    assert items[-2:] == [FinishReason("stop"), Usage(3, 0, 3)]
    assert await Upstage.create_async("solar-pro3", MSGS, emulator={"fault": {"kind": "empty"}}) == ""


async def test_max_tokens_gives_length(emulator_env: Emulator) -> None:
    items = await collect(max_tokens=7, emulator={"answer_tokens": 40})
    assert text_of(items) == first(7, filler_text(40))
    finish = [c for c in items if isinstance(c, FinishReason)]
    assert finish == [FinishReason("length")] and finish[0].truncated
    assert emulator_env.requests[-1]["max_tokens"] == 7


async def test_breaking_out_early_releases_the_connection(emulator_env: Emulator) -> None:
    gen = Upstage.create_async_generator("solar-pro3", MSGS, emulator={"answer_tokens": 5000, "tokens_per_second": 2000})
    got = []
    async for chunk in gen:
        got.append(chunk)
        if len(got) == 3:
            break
    await gen.aclose()
    assert text_of(got) == first(3, filler_text(5000))
    assert text_of(await collect(emulator={"reply": "after"})) == "after"


# ------------------------------------------------------------------------ status faults


async def test_429_then_success_honours_retry_after(emulator_env: Emulator, sleeps: list[float]) -> None:
    emulator_env.set_fault({"kind": "status", "status": 429, "retry_after": 2, "times": 1})
    items = await collect()
    assert text_of(items) == canned_reply(MSGS)
    assert sleeps == [2.0]
    assert len(emulator_env.requests) == 2


async def test_503_forever_gives_server_error_after_retries(emulator_env: Emulator, sleeps: list[float]) -> None:
    emulator_env.set_fault({"kind": "status", "status": 503, "times": None, "message": "engine overloaded"})
    items, err = await collect_until_error(ServerError, max_retries=2)
    assert items == []
    assert err.status == 503 and "engine overloaded" in str(err)
    assert len(sleeps) == 2 and len(emulator_env.requests) == 3


async def test_429_without_retries_carries_retry_after(emulator_env: Emulator, sleeps: list[float]) -> None:
    emulator_env.set_fault({"kind": "status", "status": 429, "retry_after": 5, "times": None})
    _, err = await collect_until_error(RateLimitError, max_retries=0)
    assert err.retry_after == 5.0 and sleeps == [] and len(emulator_env.requests) == 1


async def test_non_json_error_body(emulator_env: Emulator, sleeps: list[float]) -> None:
    emulator_env.set_fault({"kind": "status", "status": 502, "body": "<html>bad gateway</html>", "times": None})
    _, err = await collect_until_error(ServerError, max_retries=1)
    assert "bad gateway" in str(err)


async def test_unknown_model(emulator_env: Emulator, sleeps: list[float]) -> None:
    _, err = await collect_until_error(ModelNotFoundError, model="solar-nope")
    assert "solar-nope" in str(err) and err.status == 404
    assert sleeps == [] and len(emulator_env.requests) == 1


async def test_bad_key(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    async with Emulator(api_key="the-right-key-ABC") as base:
        monkeypatch.setenv("UPSTAGE_BASE_URL", base)
        monkeypatch.setenv("UPSTAGE_API_KEY", TEST_KEY)
        _, err = await collect_until_error(AuthenticationError)
        assert err.status == 401 and sleeps == []
        assert "the-right-key" not in str(err)
        assert text_of(await collect(api_key="the-right-key-ABC", emulator={"reply": "in"})) == "in"


# ------------------------------------------------------------------------ stream faults


async def test_cut_mid_answer(emulator_env: Emulator, sleeps: list[float]) -> None:
    items, _ = await collect_until_error(IncompleteStreamError, emulator={"answer_tokens": 20, "fault": {"kind": "cut", "after": 6}})
    assert text_of(items) == first(6, filler_text(20))
    assert sleeps == [] and len(emulator_env.requests) == 1  # never retried after the first byte


async def test_clean_cut_without_done(emulator_env: Emulator) -> None:
    items, _ = await collect_until_error(
        IncompleteStreamError, emulator={"answer_tokens": 20, "fault": {"kind": "cut", "after": 6, "clean": True}}
    )
    assert text_of(items) == first(6, filler_text(20))


async def test_empty_body_is_incomplete(emulator_env: Emulator) -> None:
    items, _ = await collect_until_error(IncompleteStreamError, emulator={"fault": {"kind": "empty", "body": True}})
    assert items == []


async def test_malformed_event(emulator_env: Emulator) -> None:
    items, err = await collect_until_error(MalformedEventError, emulator={"answer_tokens": 10, "fault": {"kind": "malformed", "after": 4}})
    assert isinstance(err, json.JSONDecodeError)
    assert text_of(items) == first(4, filler_text(10))


async def test_error_event(emulator_env: Emulator) -> None:
    items, err = await collect_until_error(
        StreamErrorEvent, emulator={"answer_tokens": 10, "fault": {"kind": "error_event", "after": 3, "message": "engine fell over"}}
    )
    assert "engine fell over" in str(err)
    assert text_of(items) == first(3, filler_text(10))


async def test_stall_times_out(emulator_env: Emulator) -> None:
    t0 = time.perf_counter()
    items, _ = await collect_until_error(
        APITimeoutError, timeout=0.3, emulator={"answer_tokens": 10, "fault": {"kind": "stall", "after": 4, "seconds": 30}}
    )
    assert 0.25 < time.perf_counter() - t0 < 5
    assert text_of(items) == first(4, filler_text(10))
    assert len(emulator_env.requests) == 1


async def test_slow_first_byte_within_timeout(emulator_env: Emulator) -> None:
    items = await collect(timeout=2, emulator={"fault": {"kind": "slow_first_byte", "seconds": 0.4}})
    assert text_of(items) == canned_reply(MSGS)


async def test_slow_first_byte_beyond_timeout(emulator_env: Emulator, sleeps: list[float]) -> None:
    await collect_until_error(APITimeoutError, timeout=0.2, emulator={"fault": {"kind": "slow_first_byte", "seconds": 3}})


async def test_invalid_utf8_becomes_replacement_chars(emulator_env: Emulator) -> None:
    items = await collect(emulator={"answer_tokens": 6, "fault": {"kind": "invalid_utf8", "after": 2}})
    toks = tokenize(filler_text(6))
    assert text_of(items) == "".join(toks[:2]) + "bad \ufffd\ufffd bytes " + "".join(toks[2:])
    assert isinstance(items[-1], Usage)


@pytest.mark.parametrize(
    ("kind", "exc_type"),
    [("cut", IncompleteStreamError), ("malformed", MalformedEventError), ("error_event", StreamErrorEvent)],
)
async def test_non_stream_faults(emulator_env: Emulator, kind: str, exc_type: type[UpstageError]) -> None:
    items, _ = await collect_until_error(exc_type, stream=False, emulator={"fault": {"kind": kind}})
    assert items == []


# ------------------------------------------------------------------------ connections


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connection_refused(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    monkeypatch.setenv("UPSTAGE_API_KEY", TEST_KEY)
    _, err = await collect_until_error(APIConnectionError, base_url=f"http://127.0.0.1:{_closed_port()}/v1", max_retries=2)
    assert len(sleeps) == 2  # connection errors are retried
    assert "UPSTAGE_BASE_URL" in str(err)


async def test_dns_failure(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    monkeypatch.setenv("UPSTAGE_API_KEY", TEST_KEY)
    monkeypatch.setattr(upstage_module, "CONNECT_TIMEOUT", 3.0)
    await asyncio.wait_for(
        collect_until_error(APIConnectionError, base_url="http://nonexistent.invalid/v1", max_retries=1), 20
    )


async def test_keep_alive_reuses_one_connection(emulator_env: Emulator) -> None:
    for i in range(6):
        items = await collect(stream=bool(i % 2), emulator={"reply": f"r{i}"})
        assert text_of(items) == f"r{i}"
    assert await Upstage.list_models()
    assert emulator_env.connections == 1


async def test_50_concurrent_streams_intact(emulator_env: Emulator) -> None:
    emulator_env.configure(reply="echo", tokens_per_second=500)
    prompts = [f"stream {i}: " + " ".join(f"w{i}-{j}" for j in range(i % 7 + 10)) for i in range(50)]

    async def one(prompt: str) -> list[Any]:
        return await collect(messages=[{"role": "user", "content": prompt}])

    results = await asyncio.gather(*(one(p) for p in prompts))
    for prompt, items in zip(prompts, results):
        assert text_of(items) == prompt
        assert items[-2] == FinishReason("stop") and isinstance(items[-1], Usage)
        assert items[-1].completion_tokens == len(tokenize(prompt))
    assert len(emulator_env.requests) == 50
    assert 1 < emulator_env.connections <= 50


# ------------------------------------------------------------------ keep-alive and leaks


async def test_paced_streams_reuse_one_connection(emulator_env: Emulator) -> None:
    """[DONE] and the body's end arrive in separate reads: the body is drained, so the
    connection goes back to the pool instead of being closed."""
    emulator_env.configure(tokens_per_second=200, answer_tokens=5)
    for _ in range(4):
        assert text_of(await collect()) == filler_text(5)
    assert emulator_env.connections == 1
    assert emulator_env.open_connections == 1


async def test_verbose_traceback_shows_no_key(emulator_env: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """IPython's %xmode Verbose prints every frame's locals (by repr): none shows the key."""
    from IPython.core.ultratb import VerboseTB

    emulator_env.api_key = "the-real-key"  # TEST_KEY is rejected, and the server echoes it
    emulator_env.set_fault({"kind": "status", "status": 401, "message": "Incorrect API key provided: " + TEST_KEY})
    try:
        await Upstage.create_async("solar-pro3", MSGS)  # the key from UPSTAGE_API_KEY
    except AuthenticationError as exc:
        err = exc
    vtb = VerboseTB()
    vtb.skip_hidden = False  # show the hidden frames too (as %xmode with hidden frames would)
    text = vtb.text(type(err), err, err.__traceback__.tb_next)  # from create_async on (not this test)
    assert "_send" in text and "headers" in text  # the frames holding the key were shown...
    assert TEST_KEY not in text  # ...masked
    assert "'***'" in text


async def test_base_url_without_v1_is_reported_as_a_url_problem_not_a_model(emulator_env):
    """A 404 that is not about the model points at the base URL (a common slip: no /v1)."""
    base_without_v1 = emulator_env.base_url[: -len("/v1")]
    with pytest.raises(ModelNotFoundError) as info:
        await collect(base_url=base_without_v1)
    text = str(info.value)
    assert base_without_v1 + "/chat/completions" in text
    assert "UPSTAGE_BASE_URL" in text and "Check the model name" not in text


async def test_unknown_model_404_keeps_the_model_hint(emulator_env):
    with pytest.raises(ModelNotFoundError) as info:
        await collect(model="solar-nonexistent")
    assert "solar-nonexistent" in str(info.value) and "model" in info.value.hint.lower()
