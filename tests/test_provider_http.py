"""Upstage provider over mocked HTTP (aioresponses): request shape, error mapping, retries.

Cases aioresponses cannot express (real sockets: stalls measured by the idle timer, slow
first byte, invalid UTF-8 from a live server, many concurrent streams) are covered by the
emulator tests over loopback.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import traceback
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core
from yarl import URL

from upstage_magic import errors, secrets, settings
from upstage_magic.events import FinishReason, Reasoning, ToolCall, Usage
from upstage_magic.providers import Upstage
from upstage_magic.providers import http as http_mod
from upstage_magic.providers import upstage as upstage_mod

KEY = "test-key-SECRET123"
CHAT = "https://api.upstage.ai/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
]


# ----------------------------------------------------------------------------- helpers


def chunk(content: str | None = None, *, finish: str | None = None, reasoning: str | None = None,
          reasoning_key: str = "reasoning", usage: dict | None = None, role: bool = False) -> dict:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta[reasoning_key] = reasoning
    event: dict[str, Any] = {
        "id": "c1", "object": "chat.completion.chunk", "model": "solar-pro3",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        event["usage"] = usage
    return event


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
         "completion_tokens_details": {"reasoning_tokens": 0}}


def sse(*events: dict | str, done: bool = True) -> bytes:
    out = []
    for ev in events:
        data = ev if isinstance(ev, str) else json.dumps(ev)
        out.append(f"data: {data}\n\n")
    if done:
        out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def good_stream() -> bytes:
    return sse(
        chunk("", role=True),
        chunk("Hel"),
        chunk("lo"),
        chunk(None, finish="stop"),
        {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": USAGE},
    )


def ok(m: aioresponses, url: str = CHAT, body: bytes | None = None, **kw: Any) -> None:
    m.post(url, status=200, body=good_stream() if body is None else body,
           content_type="text/event-stream", **kw)


def envelope(message: str, code: str = "some_code") -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def calls(m: aioresponses, method: str = "POST", url: str = CHAT) -> list:
    return m.requests.get((method, URL(url)), [])


def sent_body(m: aioresponses, url: str = CHAT, index: int = -1) -> dict:
    return json.loads(calls(m, url=url)[index].kwargs["data"])


async def collect(model: str | None = "solar-pro3", messages: Any = MESSAGES, **kw: Any) -> list:
    kw.setdefault("api_key", KEY)
    return [c async for c in Upstage.create_async_generator(model, messages, **kw)]


async def collect_until_error(**kw: Any) -> tuple[list, BaseException]:
    items: list = []
    kw.setdefault("api_key", KEY)
    with pytest.raises(errors.UpstageError) as info:
        async for c in Upstage.create_async_generator("solar-pro3", MESSAGES, **kw):
            items.append(c)
    return items, info.value


def assert_no_key(err: BaseException) -> None:
    text = "".join(traceback.format_exception(err))
    for shown in (str(err), repr(err), repr(err.args), text):
        assert KEY not in shown


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's new ``stream_writer``
    argument (pnuckowski/aioresponses#289); supply a stand-in so mocks keep working."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class _CutContent:
    """A response body that yields some chunks, then raises (a break mid-answer)."""

    def __init__(self, chunks: list[bytes], exc: BaseException) -> None:
        self._chunks, self._exc = chunks, exc

    def feed_data(self, data: bytes) -> None:  # aioresponses fills its body here; unused
        pass

    def feed_eof(self) -> None:
        pass

    def exception(self) -> None:  # aiohttp's release()/close() ask the reader
        return None

    def set_exception(self, exc: BaseException, *args: Any) -> None:
        pass

    def iter_any(self):
        async def gen():
            for c in self._chunks:
                yield c
            raise self._exc
        return gen()


def cut_response(chunks: list[bytes], exc: BaseException) -> type:
    class CutResponse(CompatResponse):
        @property
        def content(self):  # type: ignore[override]
            return _CutContent(chunks, exc)

        @content.setter
        def content(self, value):  # aioresponses assigns its own reader; ignore it
            pass

    return CutResponse


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UPSTAGE_API_KEY", "UPSTAGE_BASE_URL", "UPSTAGE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(settings, "_api_key", None)


# Retry waits are recorded, not slept, in every test here (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("sleeps")


@pytest.fixture
async def m(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(aioresponses_core, "ClientResponse", CompatResponse)
    with aioresponses() as mocked:
        yield mocked
    await Upstage.aclose()


# ------------------------------------------------------------------ request: URL, headers, body


async def test_default_url_headers_and_real_role_messages(m):
    ok(m)
    items = await collect()
    assert items == ["Hel", "lo", FinishReason("stop"), Usage.from_dict(USAGE)]
    (call,) = calls(m)
    headers = call.kwargs["headers"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Accept"] == "text/event-stream"
    assert headers["Content-Type"] == "application/json"
    assert sent_body(m) == {"model": "solar-pro3", "messages": MESSAGES, "stream": True,
                            "stream_options": {"include_usage": True}}


async def test_base_url_argument(m):
    ok(m, "http://127.0.0.1:9/custom/v1/chat/completions")
    assert "".join(x for x in await collect(base_url="http://127.0.0.1:9/custom/v1/") if isinstance(x, str)) == "Hello"
    assert len(calls(m, url="http://127.0.0.1:9/custom/v1/chat/completions")) == 1


async def test_base_url_from_env(m, monkeypatch):
    monkeypatch.setenv("UPSTAGE_BASE_URL", "http://127.0.0.1:9/v9/")
    ok(m, "http://127.0.0.1:9/v9/chat/completions")
    await collect()
    assert len(calls(m, url="http://127.0.0.1:9/v9/chat/completions")) == 1


async def test_plain_string_is_one_user_message(m):
    ok(m)
    await collect(messages="Hi there")
    assert sent_body(m)["messages"] == [{"role": "user", "content": "Hi there"}]


async def test_options_present_and_none_omitted(m):
    ok(m)
    ok(m)
    fmt = {"type": "json_object"}
    await collect(temperature=0.2, top_p=0.9, max_tokens=50, stop=["\n\n"], reasoning_effort="high",
                  response_format=fmt)
    body = sent_body(m, index=0)
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9 and body["max_tokens"] == 50
    assert body["stop"] == ["\n\n"] and body["reasoning_effort"] == "high" and body["response_format"] == fmt
    await collect(temperature=None, top_p=None, max_tokens=None, stop=None, reasoning_effort=None)
    assert set(sent_body(m, index=1)) == {"model", "messages", "stream", "stream_options"}


async def test_unknown_kwargs_pass_through(m):
    ok(m)
    await collect(frequency_penalty=0.5, emulator={"reply": "echo"}, tools=[{"type": "function"}],
                  presence_penalty=None)
    body = sent_body(m)
    assert body["frequency_penalty"] == 0.5
    assert body["emulator"] == {"reply": "echo"}
    assert body["tools"] == [{"type": "function"}]
    assert "presence_penalty" not in body


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("solar", "solar-pro4"),
        ("solar", "solar-pro4"),
        ("solar-pro", "solar-pro"),  # retired names go as written: the server decides
        ("solar-mini", "solar-mini"),
        ("solar-1-mini-chat-ja", "solar-1-mini-chat-ja"),
        ("", "solar-pro4"),
        (None, "solar-pro4"),
        ("solar-pro3", "solar-pro3"),
        ("solar-pro2", "solar-pro2"),
        ("solar-pro4", "solar-pro4"),
        ("solar-pro4-260806", "solar-pro4-260806"),
        ("my-own-model", "my-own-model"),
    ],
)
async def test_model_resolution_in_body(m, given, sent):
    ok(m)
    await collect(model=given)
    assert sent_body(m)["model"] == sent


async def test_env_default_model_read_at_call_time(m, monkeypatch):
    ok(m)
    ok(m)
    monkeypatch.setenv("UPSTAGE_MODEL", "solar")
    await collect(model=None)
    monkeypatch.setenv("UPSTAGE_MODEL", "solar-pro3")
    await collect(model="")
    assert [json.loads(c.kwargs["data"])["model"] for c in calls(m)] == ["solar-pro4", "solar-pro3"]
    assert Upstage.default_model == "solar-pro4"


async def test_proxy_and_timeouts_per_request(m):
    ok(m)
    await collect(proxy="http://proxy.local:3128", timeout=5)
    kwargs = calls(m)[0].kwargs
    assert kwargs["proxy"] == "http://proxy.local:3128"
    t = kwargs["timeout"]
    assert (t.total, t.sock_connect, t.sock_read) == (None, http_mod.CONNECT_TIMEOUT, 5)


async def test_default_idle_timeout(m):
    ok(m)
    await collect()
    assert calls(m)[0].kwargs["timeout"].sock_read == http_mod.DEFAULT_TIMEOUT == 60


async def test_one_session_per_loop_reused_and_closed(m):
    ok(m)
    ok(m)
    await collect()
    loop = asyncio.get_running_loop()
    first = http_mod._sessions[loop].session
    await collect()
    assert http_mod._sessions[loop].session is first
    assert first.trust_env is True
    assert first.connector.limit == http_mod.CONNECTION_LIMIT
    await Upstage.aclose()
    assert first.closed and loop not in http_mod._sessions


def test_asyncio_run_closes_the_session_without_aclose():
    """asyncio.run shuts down async generators before closing: the session goes with it."""
    async def open_session():
        return http_mod.client_session()

    session = asyncio.run(open_session())
    assert session.closed
    http_mod._sweep_closed_loops()
    assert all(not loop.is_closed() for loop in http_mod._sessions)


def test_session_of_closed_loop_is_swept():
    """A loop closed without aclose(): its session is closed on the next use elsewhere."""
    async def open_session():
        return http_mod.client_session()

    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(open_session())
    loop.close()
    assert not session.closed
    http_mod._sweep_closed_loops()
    assert session.closed and loop not in http_mod._sessions


# ------------------------------------------------------------------------ stream contents


async def test_usage_finish_and_reasoning_are_typed_in_order(m):
    body = sse(
        chunk(None, reasoning="Think", role=True),
        chunk(None, reasoning="ing.", reasoning_key="reasoning_content"),
        chunk("An"),
        chunk("swer", usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
        chunk(None, finish="length"),
        {"choices": [], "usage": USAGE},
    )
    ok(m, body=body)
    items = await collect()
    assert items == [Reasoning("Think"), Reasoning("ing."), "An", "swer", FinishReason("length"),
                     Usage.from_dict(USAGE)]
    assert items[4].truncated
    assert sum(isinstance(i, Usage) for i in items) == 1


async def test_empty_and_null_content_are_skipped(m):
    body = sse(chunk(""), {"choices": [{"index": 0, "delta": {"content": None}}]},
               {"choices": [{"index": 0, "delta": {}}]}, chunk("x"), chunk(None, finish="stop"))
    ok(m, body=body)
    items = await collect()
    assert items[:-1] == ["x", FinishReason("stop")]
    assert items[-1].estimated and items[-1].completion_tokens == 1  # no usage sent: estimated (issue 21)


async def test_finish_without_done_is_complete(m):
    ok(m, body=sse(chunk("Hi"), chunk(None, finish="stop", usage=USAGE), done=False))
    assert await collect() == ["Hi", FinishReason("stop"), Usage.from_dict(USAGE)]


async def test_stream_without_done_or_finish_is_incomplete_after_text(m):
    ok(m, body=sse(chunk("Hel"), chunk("lo"), done=False))
    items, err = await collect_until_error()
    assert items == ["Hel", "lo"]
    assert isinstance(err, errors.IncompleteStreamError)


async def test_empty_body_is_incomplete(m):
    ok(m, body=b"")
    items, err = await collect_until_error()
    assert items == [] and isinstance(err, errors.IncompleteStreamError)


async def test_malformed_event_is_also_json_decode_error(m):
    ok(m, body=sse(chunk("Hel"), "{not json", chunk("lo")))
    items, err = await collect_until_error()
    assert items == ["Hel"]
    assert isinstance(err, errors.MalformedEventError)
    assert isinstance(err, json.JSONDecodeError)
    assert "{not json" in str(err)


async def test_event_of_wrong_shape_is_malformed(m):
    ok(m, body=sse(chunk("a"), "[1, 2]"))
    items, err = await collect_until_error()
    assert items == ["a"] and isinstance(err, errors.MalformedEventError)


async def test_error_event_in_stream(m):
    ok(m, body=sse(chunk("Par"), {"error": {"message": "Upstream model overloaded", "code": "overloaded"}}))
    items, err = await collect_until_error()
    assert items == ["Par"]
    assert isinstance(err, errors.StreamErrorEvent)
    assert "Upstream model overloaded" in str(err)
    assert err.code == "overloaded"


async def test_stream_false_yields_whole_answer_once(m):
    answer = {
        "id": "x", "object": "chat.completion", "model": "solar-pro3",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Whole answer.",
                                             "reasoning": "because"}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
    m.post(CHAT, status=200, payload=answer)
    items = await collect(stream=False)
    assert items == [Reasoning("because"), "Whole answer.", FinishReason("stop"), Usage.from_dict(USAGE)]
    call = calls(m)[0]
    assert call.kwargs["headers"]["Accept"] == "application/json"
    assert json.loads(call.kwargs["data"])["stream"] is False
    assert call.kwargs["timeout"].sock_read == http_mod.DEFAULT_NONSTREAM_TIMEOUT


async def test_stream_false_malformed_body(m):
    m.post(CHAT, status=200, body=b"<html>oops</html>")
    with pytest.raises(json.JSONDecodeError):
        await collect(stream=False)


async def test_create_async_joins_text_only(m):
    ok(m)
    assert await Upstage.create_async("solar-pro3", MESSAGES, api_key=KEY) == "Hello"


# ------------------------------------------------------------------------ errors: statuses


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.AuthenticationError),
        (404, errors.ModelNotFoundError),
        (422, errors.BadRequestError),
        (429, errors.RateLimitError),
        (500, errors.ServerError),
        (502, errors.ServerError),
        (503, errors.ServerError),
    ],
)
async def test_status_maps_to_error_class(m, status, cls):
    # The server even echoes the key back: it must still never show.
    m.post(CHAT, status=status, payload=envelope(f"Server says {status}: bad key {KEY}", code="c"))
    with pytest.raises(cls) as info:
        await collect(max_retries=0)
    err = info.value
    assert err.status == status
    assert f"Server says {status}" in str(err)
    assert err.hint and err.hint in str(err)
    assert err.code == "c"
    assert_no_key(err)
    assert len(calls(m)) == 1


async def test_text_error_body_is_shown_truncated(m):
    m.post(CHAT, status=502, body="<html><body>Bad   gateway\n from proxy</body></html>" + "x" * 2000,
           content_type="text/html")
    with pytest.raises(errors.ServerError) as info:
        await collect(max_retries=0)
    assert "Bad gateway from proxy" in str(info.value)
    assert len(str(info.value)) < 1000


async def test_missing_key_says_how_to_set_it(m):
    with pytest.raises(errors.MissingAPIKeyError) as info:
        await collect(api_key=None)
    assert "UPSTAGE_API_KEY" in str(info.value)
    assert m.requests == {}


async def test_key_from_env_and_from_settings(m, monkeypatch):
    ok(m)
    ok(m)
    monkeypatch.setenv("UPSTAGE_API_KEY", "test-key-ENV456")
    await collect(api_key=None)
    settings.set_api_key("test-key-MEM789")
    await collect(api_key=None)
    auths = [c.kwargs["headers"]["Authorization"] for c in calls(m)]
    assert auths == ["Bearer test-key-ENV456", "Bearer test-key-MEM789"]
    assert "test-key-MEM789" not in secrets.redact("x test-key-MEM789 y")


async def test_provider_stores_no_key():
    dump = repr(vars(Upstage)) + repr(Upstage)
    assert KEY not in dump


# ------------------------------------------------------------------------------ retries


async def test_retry_after_seconds_honoured(m, sleeps):
    m.post(CHAT, status=429, payload=envelope("Too many requests"), headers={"Retry-After": "7"})
    ok(m)
    items = await collect()
    assert "".join(i for i in items if isinstance(i, str)) == "Hello"
    assert sleeps == [7.0]
    assert len(calls(m)) == 2


async def test_retry_after_http_date_honoured(m, sleeps):
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    m.post(CHAT, status=503, payload=envelope("busy"), headers={"Retry-After": when})
    ok(m)
    await collect()
    assert len(sleeps) == 1 and 27 <= sleeps[0] <= 30


async def test_retry_after_too_long_gives_up_at_once(m, sleeps):
    m.post(CHAT, status=429, payload=envelope("Slow down"), headers={"Retry-After": "120"})
    with pytest.raises(errors.RateLimitError) as info:
        await collect()
    assert info.value.retry_after == 120
    assert sleeps == [] and len(calls(m)) == 1


async def test_5xx_retried_with_growing_backoff_then_success(m, sleeps):
    for status in (500, 502, 503):
        m.post(CHAT, status=status, payload=envelope("oops"))
    ok(m)
    items = await collect()
    assert items[:2] == ["Hel", "lo"]
    assert len(calls(m)) == 4
    assert len(sleeps) == 3
    for delay, base in zip(sleeps, (0.5, 1.0, 2.0), strict=False):
        assert 0.75 * base <= delay <= 1.25 * base


async def test_gives_up_after_max_retries(m, sleeps):
    m.post(CHAT, status=503, payload=envelope("still down"), repeat=True)
    with pytest.raises(errors.ServerError) as info:
        await collect(max_retries=2)
    assert "still down" in str(info.value)
    assert len(calls(m)) == 3 and len(sleeps) == 2


async def test_max_retries_zero_disables(m, sleeps):
    m.post(CHAT, status=500, payload=envelope("x"), repeat=True)
    with pytest.raises(errors.ServerError):
        await collect(max_retries=0)
    assert len(calls(m)) == 1 and sleeps == []


@pytest.mark.parametrize("message", [
    "1 validation error for ChatCompletionRequest\nresponse_format.type\n  Input should be 'text' or 'json_object'",
    "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type')}]",
])
async def test_5xx_with_a_request_validation_body_is_not_retried(m, sleeps, message):
    m.post(CHAT, status=500, payload=envelope(message), repeat=True)
    with pytest.raises(errors.ServerError) as info:
        await collect()
    assert len(calls(m)) == 1 and sleeps == []
    assert "not retried" in (info.value.hint or "")


async def test_client_errors_not_retried(m, sleeps):
    m.post(CHAT, status=400, payload=envelope("bad param"), repeat=True)
    with pytest.raises(errors.BadRequestError):
        await collect()
    assert len(calls(m)) == 1 and sleeps == []


def _refused() -> aiohttp.ClientConnectorError:
    return aiohttp.ClientConnectorError(
        SimpleNamespace(host="api.upstage.ai", port=443, ssl=True), ConnectionRefusedError(111, "Connection refused")
    )


async def test_connection_errors_retried_then_success(m, sleeps):
    m.post(CHAT, exception=_refused())
    m.post(CHAT, exception=aiohttp.ServerDisconnectedError())
    ok(m)
    items = await collect()
    assert items[:2] == ["Hel", "lo"]
    assert len(calls(m)) == 3 and len(sleeps) == 2


async def test_connection_error_gives_up_with_mapped_error(m, sleeps):
    m.post(CHAT, exception=_refused(), repeat=True)
    with pytest.raises(errors.APIConnectionError) as info:
        await collect(max_retries=1)
    err = info.value
    assert "Connection refused" in str(err) and "proxy" in str(err)  # detail and hint
    assert isinstance(err.__cause__, aiohttp.ClientConnectorError)
    assert len(calls(m)) == 2
    assert_no_key(err)


async def test_aiohttp_text_with_key_is_not_chained(m):
    m.post(CHAT, exception=aiohttp.ClientOSError(f"failed sending Authorization: Bearer {KEY}"), repeat=True)
    with pytest.raises(errors.APIConnectionError) as info:
        await collect(max_retries=0)
    assert info.value.__cause__ is None
    assert_no_key(info.value)


async def test_read_timeout_before_first_byte_is_timeout_not_retried(m, sleeps):
    m.post(CHAT, exception=asyncio.TimeoutError(), repeat=True)
    with pytest.raises(errors.APITimeoutError):
        await collect()
    assert len(calls(m)) == 1 and sleeps == []


async def test_connect_timeout_is_retried(m, sleeps):
    m.post(CHAT, exception=aiohttp.ConnectionTimeoutError("Connection timeout"))
    ok(m)
    await collect()
    assert len(calls(m)) == 2 and len(sleeps) == 1


# ---------------------------------------------------- no retry once the answer has started


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (aiohttp.ClientPayloadError("Response payload is not completed"), errors.IncompleteStreamError),
        (aiohttp.ServerDisconnectedError(), errors.IncompleteStreamError),
        (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), errors.APITimeoutError),
    ],
)
async def test_break_mid_stream_raises_after_partial_text_without_retry(m, sleeps, exc, cls):
    parts = [sse(chunk("Hel"), done=False), sse(chunk("lo"), done=False)[:-5]]
    m.post(CHAT, status=200, body=b"", content_type="text/event-stream",
           response_class=cut_response(parts, exc))
    ok(m)  # a second answer would be available: it must not be requested
    items, err = await collect_until_error()
    assert items == ["Hel"]
    assert isinstance(err, cls)
    assert "kept" in str(err)
    assert len(calls(m)) == 1 and sleeps == []
    assert_no_key(err)


# ---------------------------------------------------------------------------- list_models


async def test_list_models(m):
    url = "https://api.upstage.ai/v1/models"
    m.get(url, payload={"object": "list", "data": [{"id": "solar-pro3", "object": "model"},
                                                    {"id": "solar-mini", "object": "model"}]})
    assert await Upstage.list_models(api_key=KEY) == ["solar-pro3", "solar-mini"]
    call = calls(m, "GET", url)[0]
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {KEY}"


async def test_list_models_custom_base_and_error_mapping(m):
    url = "http://127.0.0.1:9/v1/models"
    m.get(url, status=401, payload=envelope("Invalid API key"))
    with pytest.raises(errors.AuthenticationError) as info:
        await Upstage.list_models(api_key=KEY, base_url="http://127.0.0.1:9/v1")
    assert "Invalid API key" in str(info.value)
    assert "model list" in str(info.value)


# ------------------------------------------------------------ fault-matrix findings


async def test_cut_message_is_plain_and_says_kept_once(m, sleeps):
    exc = aiohttp.ClientPayloadError(
        "Response payload is not completed: <TransferEncodingError: 400, message='Not enough data'>")
    m.post(CHAT, status=200, body=b"", content_type="text/event-stream",
           response_class=cut_response([sse(chunk("Hel"), done=False)], exc))
    items, err = await collect_until_error()
    assert items == ["Hel"]
    assert err.message == "The connection closed before the answer finished."
    assert "400" not in str(err) and "<" not in str(err)
    assert str(err).lower().count("kept") == 1


async def test_empty_200_body_does_not_claim_text_was_kept(m):
    m.post(CHAT, status=200, body=b"", content_type="text/event-stream")
    items, err = await collect_until_error()
    assert items == [] and isinstance(err, errors.IncompleteStreamError)
    assert "kept" not in str(err) and "empty" in str(err)


async def test_stream_without_done_says_kept_once(m):
    m.post(CHAT, status=200, body=sse(chunk("Hel"), done=False), content_type="text/event-stream")
    items, err = await collect_until_error()
    assert items == ["Hel"] and isinstance(err, errors.IncompleteStreamError)
    assert str(err).lower().count("kept") == 1


async def test_retry_after_too_long_message_says_how_long(m, sleeps):
    m.post(CHAT, status=429, payload=envelope("Slow down"), headers={"Retry-After": "120"})
    _, err = await collect_until_error()
    assert "The server asks to retry after 120 s." in str(err)


async def test_html_error_page_becomes_its_title(m, sleeps):
    page = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
            "</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n")
    m.post(CHAT, status=502, body=page, content_type="text/html")
    _, err = await collect_until_error(max_retries=0)
    assert isinstance(err, errors.ServerError)
    assert err.server_message == "502 Bad Gateway"
    assert "<" not in str(err)


def test_html_without_title_is_tag_stripped():
    message, _, body = http_mod._server_message(
        b"<!DOCTYPE html><html><body><script>x()</script><p>Service   temporarily\n unavailable</p></body></html>")
    assert message == "Service temporarily unavailable" and body is None


async def test_typed_error_event_raises_stream_error_event(m):
    body = (sse(chunk("Hel"), done=False) + b"event: error\ndata: Engine overloaded\n\n"
            + sse(chunk("lo")))
    m.post(CHAT, status=200, body=body, content_type="text/event-stream")
    items, err = await collect_until_error()
    assert items == ["Hel"] and isinstance(err, errors.StreamErrorEvent)
    assert "Engine overloaded" in str(err)


async def test_other_typed_events_and_ids_are_read_like_plain_ones(m):
    body = (b"id: 1\nevent: message\ndata: " + json.dumps(chunk("Hel")).encode() + b"\n\n"
            b"event: ping\ndata: {}\n\n" + sse(chunk("lo"), chunk(None, finish="stop")))
    m.post(CHAT, status=200, body=body, content_type="text/event-stream")
    items = await collect()
    assert [i for i in items if isinstance(i, str)] == ["Hel", "lo"]


def test_key_and_headers_reprs_are_masked():
    key = upstage_mod.Secret(KEY)
    headers = upstage_mod._Headers({"Authorization": f"Bearer {key}", "Accept": "x"})
    assert headers["Authorization"] == f"Bearer {KEY}" and str(key) == KEY and key == KEY
    assert KEY not in repr(key) and KEY not in repr(headers) and KEY not in repr({"k": key, "h": headers})
    import pydoc
    assert KEY not in pydoc.text.repr(key) and KEY not in pydoc.text.repr(headers)  # IPython's verbose repr


# ------------------------------------------------------- stream_options (exact usage)


@pytest.fixture
def no_memory(monkeypatch: pytest.MonkeyPatch) -> dict:
    memory: dict = {}
    monkeypatch.setattr(upstage_mod, "_NO_STREAM_OPTIONS", memory)
    return memory


async def test_stream_options_refused_is_asked_once_more_without_and_remembered(m, sleeps, no_memory):
    base = "http://127.0.0.1:9/compat/v1"
    url = base + "/chat/completions"
    m.post(url, status=400, payload=envelope("Unrecognized request argument supplied: stream_options"))
    ok(m, url)
    ok(m, url)
    assert "".join(x for x in await collect(base_url=base) if isinstance(x, str)) == "Hello"
    assert "".join(x for x in await collect(base_url=base + "/") if isinstance(x, str)) == "Hello"
    bodies = [json.loads(c.kwargs["data"]) for c in calls(m, url=url)]
    assert len(bodies) == 3 and sleeps == []
    assert bodies[0]["stream_options"] == {"include_usage": True}
    assert "stream_options" not in bodies[1] and "stream_options" not in bodies[2]  # remembered
    assert no_memory == {base: True}
    ok(m)  # another server still gets it
    await collect()
    assert sent_body(m)["stream_options"] == {"include_usage": True}


async def test_stream_options_param_in_error_body_counts_too(m, no_memory):
    m.post(CHAT, status=400, payload={"error": {"message": "Extra inputs are not permitted",
                                                "param": "stream_options", "code": None}})
    ok(m)
    await collect()
    assert len(calls(m)) == 2 and "stream_options" not in sent_body(m)


async def test_other_400s_are_not_retried_and_a_second_refusal_is_raised(m, no_memory):
    m.post(CHAT, status=400, payload=envelope("temperature must be at most 2"))
    with pytest.raises(errors.BadRequestError, match="temperature"):
        await collect(temperature=5)
    assert len(calls(m)) == 1 and no_memory == {}
    m.post(CHAT, status=400, payload=envelope("stream_options is not supported"))
    m.post(CHAT, status=400, payload=envelope("stream_options is still not supported"))
    with pytest.raises(errors.BadRequestError, match="still"):
        await collect()
    assert len(calls(m)) == 3  # one more, not a loop


async def test_no_stream_options_without_streaming_or_when_given(m, no_memory):
    m.post(CHAT, status=200, payload={"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]})
    await collect(stream=False)
    assert "stream_options" not in sent_body(m)
    ok(m)
    await collect(stream_options={"include_usage": False})
    assert sent_body(m)["stream_options"] == {"include_usage": False}


async def test_a_refusal_after_the_answer_started_is_never_retried(m, sleeps, no_memory):
    """An error event naming stream_options mid-answer is the answer's error: no second request."""
    body = sse(chunk("Hel"), {"error": {"message": "stream_options broke"}}, done=False)
    m.post(CHAT, status=200, body=body, content_type="text/event-stream")
    ok(m)
    items, err = await collect_until_error()
    assert items == ["Hel"] and isinstance(err, errors.StreamErrorEvent)
    assert len(calls(m)) == 1 and no_memory == {}


async def test_legacy_solar_base_url_works(m):
    ok(m, "https://api.upstage.ai/v1/solar/chat/completions")
    await collect(base_url="https://api.upstage.ai/v1/solar")
    assert len(calls(m, url="https://api.upstage.ai/v1/solar/chat/completions")) == 1


async def test_tool_call_answer_is_not_empty(m):
    frags = [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": ""}},
             {"index": 0, "function": {"arguments": '{"q": "solar"}'}}]
    body = sse(*({"choices": [{"index": 0, "delta": {"tool_calls": [f]}, "finish_reason": None}]} for f in frags),
               chunk(None, finish="tool_calls"))
    ok(m, body=body)
    items = await collect()
    assert items[:-1] == [ToolCall("lookup", '{"q": "solar"}', "call_9", 0), FinishReason("tool_calls")]
    assert isinstance(items[-1], Usage) and items[-1].estimated  # no usage sent: estimated (issue 21)


async def test_invalid_url_is_shown_through_display_url(m):
    exc = aiohttp.InvalidURL("http://host:99999999/v1?token=abc#frag")
    m.post(CHAT, exception=exc)
    with pytest.raises(errors.APIConnectionError) as info:
        await collect(max_retries=0)
    assert "http://host:99999999/v1" in str(info.value) and "token" not in str(info.value)
