"""The emulator on its own, driven with raw aiohttp requests (no provider, no sse.py)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import aiohttp
import pytest

from upstage_magic.emulator import (
    CODE_REPLY,
    CREATED,
    HOSTILE_FLAGS,
    HOSTILE_REPLY,
    REASONING_TEXT,
    Emulator,
    canned_reply,
    filler_text,
    rate_limit_headers,
    reasoning_text,
    serve_in_thread,
    tokenize,
)

TEST_KEY = "test-key-SECRET123"

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
MSGS = [{"role": "user", "content": "What is Solar?"}]
USAGE = {"stream_options": {"include_usage": True}}


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "solar-pro4", "messages": MSGS, "stream": True, **kw}


def parse_sse(raw: bytes) -> list[Any]:
    """Minimal test-side SSE parse: list of JSON payloads, "[DONE]" kept as a string."""
    out: list[Any] = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith(b"data: "), block[:80]
        data = block[6:].decode("utf-8", "replace")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def deltas(events: list[Any]) -> list[dict[str, Any]]:
    return [e["choices"][0]["delta"] for e in events if isinstance(e, dict) and e.get("choices")]


def content_of(events: list[Any]) -> str:
    return "".join(d.get("content") or "" for d in deltas(events))


def reasoning_of(events: list[Any], key: str = "reasoning") -> str:
    return "".join(d.get(key) or "" for d in deltas(events))


async def post(emu: Emulator, payload: Any, headers: dict[str, str] | None = AUTH) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.post(emu.base_url + "/chat/completions", json=payload, headers=headers) as r:
            return r.status, dict(r.headers), await r.read()


async def stream(emu: Emulator, **kw: Any) -> list[Any]:
    status, _, raw = await post(emu, body(**kw))
    assert status == 200, raw
    return parse_sse(raw)


async def complete(emu: Emulator, **kw: Any) -> dict[str, Any]:
    status, _, raw = await post(emu, body(stream=False, **kw))
    assert status == 200, raw
    return json.loads(raw)


async def refused(emu: Emulator, payload: Any, status: int = 400) -> dict[str, Any]:
    got, _, raw = await post(emu, payload)
    assert got == status, raw
    return json.loads(raw)["error"]


# ------------------------------------------------------------------------ happy paths


async def test_stream_markdown_shape_with_usage(emulator: Emulator) -> None:
    events = await stream(emulator, **USAGE)
    expected = canned_reply(MSGS)
    assert "You asked: What is Solar?" in expected and "Turn 1" in expected and "```python" in expected
    assert events[-1] == "[DONE]"
    usage_ev = events[-2]
    chunks = events[:-2]
    assert content_of(chunks) == expected
    assert len(chunks) == len(tokenize(expected))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert all("usage" not in c for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    ids = {c["id"] for c in events[:-1]}
    assert len(ids) == 1
    for c in events[:-1]:
        assert c["object"] == "chat.completion.chunk"
        assert c["created"] == CREATED
        assert c["model"] == "solar-pro4-260806"  # the API answers with the dated id
    assert usage_ev["choices"] == []
    u = usage_ev["usage"]
    assert u["prompt_tokens"] == 3
    assert u["completion_tokens"] == len(chunks)
    assert u["total_tokens"] == 3 + len(chunks)
    assert u["completion_tokens_details"]["reasoning_tokens"] == 0
    assert u["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.parametrize("options", [None, {}, {"include_usage": False}])
async def test_stream_has_no_usage_unless_asked(emulator: Emulator, options: Any) -> None:
    extra = {} if options is None else {"stream_options": options}
    events = await stream(emulator, **extra)
    assert events[-1] == "[DONE]"
    assert all(e["choices"] for e in events[:-1])  # no usage-only event
    assert not any("usage" in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert content_of(events) == canned_reply(MSGS)


async def test_turn_and_prompt_follow_history(emulator: Emulator) -> None:
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
    ]
    events = await stream(emulator, messages=msgs)
    text = content_of(events)
    assert "You asked: second question" in text and "Turn 2" in text


async def test_non_stream_always_has_usage(emulator: Emulator) -> None:
    status, headers, raw = await post(emulator, body(stream=False))
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    data = json.loads(raw)
    assert data["object"] == "chat.completion"
    assert data["model"] == "solar-pro4-260806"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": canned_reply(MSGS)}
    assert data["choices"][0]["finish_reason"] == "stop"
    n = len(tokenize(canned_reply(MSGS)))
    assert data["usage"] == {
        "prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0},
    }


async def test_stream_options_is_ignored_without_stream(emulator: Emulator) -> None:
    data = await complete(emulator, stream_options={"include_usage": True})
    assert data["usage"]["completion_tokens"] > 0


async def test_non_stream_n_gives_n_choices(emulator: Emulator) -> None:
    data = await complete(emulator, n=2)
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert data["choices"][0]["message"] == data["choices"][1]["message"]


async def test_cached_tokens_count_a_prefix_sent_before(emulator: Emulator) -> None:
    first = [{"role": "system", "content": "Be brief please."}, {"role": "user", "content": "one two"}]
    assert (await complete(emulator, messages=first))["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    second = [*first, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "three"}]
    usage = (await complete(emulator, messages=second))["usage"]
    assert usage["prompt_tokens"] == 7 and usage["prompt_tokens_details"]["cached_tokens"] == 5
    other = [{"role": "user", "content": "unrelated question"}, *second[1:]]
    assert (await complete(emulator, messages=other))["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("echo", "What is Solar?"), ("hostile", HOSTILE_REPLY), ("code", CODE_REPLY), ("Just this.", "Just this.")],
)
async def test_reply_kinds(emulator: Emulator, reply: str, expected: str) -> None:
    emulator.configure(reply=reply)
    assert content_of(await stream(emulator)) == expected


def test_hostile_reply_has_every_payload() -> None:
    for needle in (
        "<script>window.__pwned_script=1</script>",
        '<img src=x onerror="window.__pwned_img=1">',
        "[click me](javascript:window.__pwned_link=1)",
        '<iframe src="javascript:window.__pwned_iframe=1"></iframe>',
        '```html\n<script>alert("kept as code")</script>\n```',
    ):
        assert needle in HOSTILE_REPLY
    assert all(flag in HOSTILE_REPLY for flag in HOSTILE_FLAGS)


async def test_echo_keeps_unicode_and_whitespace(emulator: Emulator) -> None:
    prompt = "  héllo\n\nwörld 🌞\t「日本語」  "
    events = await stream(emulator, messages=[{"role": "user", "content": prompt}], emulator={"reply": "echo"})
    assert content_of(events) == prompt


@pytest.mark.parametrize("n", [0, 1, 17, 1000])
async def test_answer_tokens_gives_exactly_n_content_events(emulator: Emulator, n: int) -> None:
    events = await stream(emulator, emulator={"answer_tokens": n}, **USAGE)
    chunks = events[:-2]
    assert content_of(chunks) == filler_text(n)
    assert len(chunks) == max(n, 1)  # an empty answer still sends one finishing event
    assert events[-2]["usage"]["completion_tokens"] == n
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_max_tokens_cuts_with_length(emulator: Emulator) -> None:
    events = await stream(emulator, max_tokens=5, emulator={"answer_tokens": 50})
    chunks = events[:-1]
    assert len(chunks) == 5
    assert content_of(chunks) == "".join(tokenize(filler_text(50))[:5])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # not cut when the answer fits
    events = await stream(emulator, max_tokens=50, emulator={"answer_tokens": 50})
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_stop_sequence(emulator: Emulator) -> None:
    events = await stream(emulator, stop=["Turn"])
    assert content_of(events) == canned_reply(MSGS).split("Turn")[0]


# ------------------------------------------------------------------------ reasoning


async def test_solar_pro3_reasons_by_default_first_then_answers(emulator: Emulator) -> None:
    events = await stream(emulator, model="solar-pro3", emulator={"reply": "echo"}, **USAGE)
    assert events[0]["model"] == "solar-pro3-260323"
    chunks = events[:-2]
    ds = [c["choices"][0]["delta"] for c in chunks]
    n_r = len(tokenize(REASONING_TEXT))
    assert n_r > 5  # several reasoning events
    assert "".join(d["reasoning"] for d in ds[:n_r]) == REASONING_TEXT == reasoning_text("medium")
    assert all("content" not in d for d in ds[:n_r])
    assert all("reasoning" not in d for d in ds[n_r:])
    assert ds[0]["role"] == "assistant" and "role" not in ds[n_r]
    assert content_of(chunks[n_r:]) == "What is Solar?"
    u = events[-2]["usage"]
    assert u["completion_tokens_details"]["reasoning_tokens"] == n_r
    assert u["completion_tokens"] == n_r + len(tokenize("What is Solar?"))  # includes reasoning


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("solar-pro3", None, "medium"), ("solar-pro3", "low", None), ("solar-pro3", "medium", "medium"),
        ("solar-pro3", "high", "high"),
        ("solar-pro4", None, None), ("solar-pro4", "none", None), ("solar-pro4", "minimal", None),
        ("solar-pro4", "low", "low"), ("solar-pro4", "medium", "medium"), ("solar-pro4", "high", "high"),
        ("solar-pro4", "xhigh", "xhigh"), ("solar-mini4", "max", "max"), ("solar-mini4", None, None),
        ("syn-pro", None, None), ("syn-pro", "high", "high"), ("syn-pro", "minimal", None),
    ],
)
async def test_reasoning_by_model_and_effort(
    emulator: Emulator, model: str, effort: str | None, expected: str | None
) -> None:
    extra = {} if effort is None else {"reasoning_effort": effort}
    events = await stream(emulator, model=model, **extra, **USAGE)
    text = reasoning_of(events)
    assert text == (reasoning_text(expected) if expected else "")
    assert events[-2]["usage"]["completion_tokens_details"]["reasoning_tokens"] == len(tokenize(text))
    assert content_of(events) == canned_reply(MSGS)


def test_reasoning_grows_with_effort() -> None:
    sizes = [len(tokenize(reasoning_text(e))) for e in ("low", "medium", "high", "xhigh", "max")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 5


async def test_reasoning_non_stream(emulator: Emulator) -> None:
    data = await complete(emulator, model="solar-pro4-260806", reasoning_effort="high")
    message = data["choices"][0]["message"]
    assert message["reasoning"] == reasoning_text("high") and message["content"] == canned_reply(MSGS)
    n_r = len(tokenize(reasoning_text("high")))
    assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == n_r
    assert data["usage"]["completion_tokens"] == n_r + len(tokenize(canned_reply(MSGS)))
    plain = (await complete(emulator))["choices"][0]["message"]
    assert "reasoning" not in plain


async def test_reasoning_config_forces_on_or_off(emulator: Emulator) -> None:
    assert reasoning_of(await stream(emulator, emulator={"reasoning": True})) == REASONING_TEXT
    forced = await stream(emulator, reasoning_effort="max", emulator={"reasoning": True})
    assert reasoning_of(forced) == reasoning_text("max")
    assert reasoning_of(await stream(emulator, model="solar-pro3", emulator={"reasoning": False})) == ""


async def test_reasoning_tokens_sets_the_length(emulator: Emulator) -> None:
    events = await stream(emulator, model="solar-pro3", emulator={"reasoning_tokens": 40}, **USAGE)
    assert sum(1 for d in deltas(events) if "reasoning" in d) == 40
    assert events[-2]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 40


async def test_reasoning_content_field(emulator: Emulator) -> None:
    emulator.configure(reasoning_field="reasoning_content")
    events = await stream(emulator, model="solar-pro3")
    assert reasoning_of(events, "reasoning_content") == REASONING_TEXT and reasoning_of(events) == ""
    message = (await complete(emulator, model="solar-pro3"))["choices"][0]["message"]
    assert message["reasoning_content"] == REASONING_TEXT and "reasoning" not in message


async def test_think_tags_in_content(emulator: Emulator) -> None:
    emulator.configure(reasoning_field="think", reply="echo")
    events = await stream(emulator, model="solar-pro3", **USAGE)
    assert reasoning_of(events) == ""
    assert content_of(events) == f"<think>\n{REASONING_TEXT}\n</think>\n\nWhat is Solar?"
    assert deltas(events)[0]["content"] == "<think>\n"  # the tag opens the content
    message = (await complete(emulator, model="solar-pro3"))["choices"][0]["message"]
    assert message["content"] == f"<think>\n{REASONING_TEXT}\n</think>\n\nWhat is Solar?"


async def test_max_tokens_counts_reasoning(emulator: Emulator) -> None:
    n_r = len(tokenize(REASONING_TEXT))
    events = await stream(emulator, model="solar-pro3", max_tokens=n_r + 2, emulator={"answer_tokens": 10})
    assert reasoning_of(events) == REASONING_TEXT
    assert content_of(events) == "".join(tokenize(filler_text(10))[:2])
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    events = await stream(emulator, model="solar-pro3", max_tokens=3)  # all spent on reasoning
    assert reasoning_of(events) == "".join(tokenize(REASONING_TEXT)[:3]) and content_of(events) == ""
    assert events[-2]["choices"][0]["finish_reason"] == "length"


# ------------------------------------------------------------------------ models


async def test_models_endpoint_lists_todays_ids(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(emulator.base_url + "/models", headers=AUTH) as r:
            assert r.status == 200
            data = await r.json()
        async with s.get(emulator.base_url + "/models") as r:
            assert r.status == 401
    assert data["object"] == "list"
    assert all(m["object"] == "model" for m in data["data"])
    ids = [m["id"] for m in data["data"]]
    assert ids == [
        "solar-pro4", "solar-mini4", "syn-pro", "solar-pro3",
        "solar-pro4-260806", "solar-mini4-260922", "syn-pro-251021", "solar-pro3-260323",
    ]


@pytest.mark.parametrize(
    ("model", "dated"),
    [("solar-pro4", "solar-pro4-260806"), ("solar-mini4", "solar-mini4-260922"),
     ("syn-pro", "syn-pro-251021"), ("solar-pro3-260323", "solar-pro3-260323")],
)
async def test_every_listed_model_answers_with_its_dated_id(emulator: Emulator, model: str, dated: str) -> None:
    assert (await complete(emulator, model=model))["model"] == dated


async def test_dated_id_and_legacy_base_path(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as s:
        url = emulator.base_url + "/solar/chat/completions"
        async with s.post(url, json=body(model="solar-pro4-260806"), headers=AUTH) as r:
            assert r.status == 200
            events = parse_sse(await r.read())
    assert events[0]["model"] == "solar-pro4-260806"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("solar-pro2", "solar-pro2 was retired on 2026-10-30; use solar-pro4."),
        ("solar-pro2-251215", "solar-pro2-251215 was retired on 2026-10-30; use solar-pro4."),
        ("solar-mini", "solar-mini is a legacy name Upstage no longer serves; use solar-mini4."),
        ("solar-1-mini-chat", "solar-1-mini-chat is a legacy name Upstage no longer serves; use solar-mini4."),
    ],
)
async def test_retired_model_400_names_the_replacement(emulator: Emulator, model: str, message: str) -> None:
    err = await refused(emulator, body(model=model))
    assert err == {"message": message, "type": "invalid_request_error", "param": "model", "code": "model_retired"}


# ------------------------------------------------------------------------ errors


async def test_auth_required(emulator: Emulator) -> None:
    for headers in (None, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        status, _, raw = await post(emulator, body(), headers=headers)
        assert status == 401
        assert json.loads(raw)["error"]["code"] == "invalid_api_key"
    assert [r["has_auth"] for r in emulator.requests] == [False, False, False]


async def test_api_key_must_match_and_is_never_recorded_or_echoed() -> None:
    async with Emulator(api_key=TEST_KEY) as base:
        emu_headers_bad = {"Authorization": "Bearer wrong-key-XYZ987"}
        async with aiohttp.ClientSession() as s:
            async with s.post(base + "/chat/completions", json=body(), headers=emu_headers_bad) as r:
                assert r.status == 401
                raw = await r.read()
                assert b"XYZ987" not in raw
            async with s.post(base + "/chat/completions", json=body(), headers=AUTH) as r:
                assert r.status == 200
                await r.read()
            async with s.get(base.rsplit("/v1", 1)[0] + "/_emulator/requests") as r:
                recorded = await r.text()
    assert TEST_KEY not in recorded and "XYZ987" not in recorded
    assert [r["has_auth"] for r in json.loads(recorded)] == [True, True]


async def test_unknown_model_404(emulator: Emulator) -> None:
    status, _, raw = await post(emulator, body(model="solar-nope"))
    assert status == 404
    err = json.loads(raw)["error"]
    assert err["code"] == "model_not_found" and "`solar-nope` does not exist" in err["message"]


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "solar-pro4", "messages": []},
        {"messages": MSGS},
        {"model": "solar-pro4", "messages": MSGS, "max_tokens": 0},
        {"model": "solar-pro4", "messages": MSGS, "n": 0},
        {"model": "solar-pro4", "messages": MSGS, "emulator": {"bogus": 1}},
        {"model": "solar-pro4", "messages": MSGS, "emulator": {"fault": {"kind": "nope"}}},
        {"model": "solar-pro4", "messages": MSGS, "stream": True, "stream_options": "yes"},
        {"model": "solar-pro4", "messages": MSGS, "response_format": {"type": "xml"}},
        [1, 2],
    ],
)
async def test_bad_requests_400(emulator: Emulator, payload: Any) -> None:
    status, _, raw = await post(emulator, payload)
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("extra", "param", "needle"),
    [
        ({"store": True}, "store", "'store' is not supported"),
        ({"store": False}, "store", "'store' is not supported"),
        ({"messages": [{"role": "developer", "content": "x"}]}, "messages[0].role", "use 'system'"),
        ({"n": 2}, "n", "'n' must be 1 when streaming"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}, "strict": True}}]},
         "tools[0].function.strict", "'tools[0].function.strict' is not supported"),
        ({"response_format": {"type": "json_object"}}, "messages", "the word 'json'"),
        ({"messages": [{"role": "user", "content": "in JSON"}],
          "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
         "response_format.json_schema", "'name'"),
        ({"tool_choice": "required"}, "tool_choice", "only allowed when 'tools'"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}],
          "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice", "'g'"),
        ({"tools": [{"type": "function"}]}, "tools[0]", "tools[0] must be"),
    ],
)
async def test_fields_the_api_rejects(emulator: Emulator, extra: dict[str, Any], param: str, needle: str) -> None:
    err = await refused(emulator, body(**extra))
    assert err["param"] == param and needle in err["message"] and err["type"] == "invalid_request_error"
    assert (await post(emulator, body()))[0] == 200  # the same request without it is fine


@pytest.mark.parametrize(
    ("model", "effort", "message"),
    [
        ("solar-pro3", "max", ("solar-pro3 does not accept reasoning_effort 'max'; use 'low', 'medium' or "
                               "'high' ('low' turns reasoning off).")),
        ("solar-pro3-260323", "none", "solar-pro3 does not accept reasoning_effort 'none'"),
        ("solar-pro4", "extreme", ("solar-pro4 does not accept reasoning_effort 'extreme'; use 'none', "
                                   "'minimal', 'low', 'medium', 'high', 'xhigh' or 'max'")),
        ("solar-mini4", "HIGH", "solar-mini4 does not accept reasoning_effort 'HIGH'"),
        ("syn-pro", "extreme", "Invalid reasoning_effort 'extreme'"),
        ("solar-pro4", 3, "'reasoning_effort' must be a string"),
    ],
)
async def test_effort_the_model_does_not_accept_400(emulator: Emulator, model: str, effort: Any, message: str) -> None:
    err = await refused(emulator, body(model=model, reasoning_effort=effort))
    assert err["param"] == "reasoning_effort" and err["message"].startswith(message)


async def test_stream_options_refused_when_configured(emulator: Emulator) -> None:
    """Like OpenAI-compatible servers that do not know the field: 400 naming it."""
    emulator.configure(reject_fields=["stream_options"])
    err = await refused(emulator, body(**USAGE))
    assert err["param"] == "stream_options" and "'stream_options'" in err["message"]
    assert content_of(await stream(emulator)) == canned_reply(MSGS)
    emulator.reset()
    assert (await post(emulator, body(**USAGE)))[0] == 200


# ------------------------------------------------------------------------ structured output, tools


async def test_json_modes(emulator: Emulator) -> None:
    msgs = [{"role": "user", "content": "Reply in JSON please"}]
    events = await stream(emulator, messages=msgs, response_format={"type": "json_object"})
    assert isinstance(json.loads(content_of(events)), dict)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                       "tags": {"type": "array", "items": {"type": "string"}},
                       "kind": {"enum": ["cat", "dog"]}},
        "required": ["name", "age"],
    }
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    value = json.loads(content_of(await stream(emulator, messages=msgs, response_format=rf)))
    assert value == {"name": "example", "age": 1, "tags": ["example"], "kind": "cat"}
    # json_schema does not need the word JSON; a text format is a plain answer
    plain = [{"role": "user", "content": "hello"}]
    data = await complete(emulator, messages=plain, response_format=rf)
    assert json.loads(data["choices"][0]["message"]["content"])["age"] == 1
    assert content_of(await stream(emulator, response_format={"type": "text"})) == canned_reply(MSGS)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                         "days": {"type": "integer"}}},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def assemble_tool_calls(events: list[Any]) -> dict[int, dict[str, str]]:
    """Put streamed tool-call fragments together the way a client must."""
    calls: dict[int, dict[str, str]] = {}
    for d in deltas(events):
        for frag in d.get("tool_calls") or []:
            call = calls.setdefault(frag["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += frag.get("id", "")
            fn = frag.get("function") or {}
            call["name"] += fn.get("name", "")
            call["arguments"] += fn.get("arguments", "")
    return calls


async def test_tool_call_streams_in_fragments(emulator: Emulator) -> None:
    events = await stream(emulator, tools=[WEATHER, CLOCK], emulator={"reply": "tool_call"}, **USAGE)
    assert events[-1] == "[DONE]" and events[-2]["choices"] == []
    chunks = events[:-2]
    ds = [c["choices"][0]["delta"] for c in chunks]
    first = ds[0]["tool_calls"][0]
    assert ds[0]["role"] == "assistant" and first["index"] == 0 and first["type"] == "function"
    assert first["id"].startswith("call_") and first["function"] == {"name": "get_weather", "arguments": ""}
    pieces = [d["tool_calls"][0]["function"]["arguments"] for d in ds[1:-1]]
    assert len(pieces) >= 3 and all("id" not in d["tool_calls"][0] for d in ds[1:-1])
    assert content_of(chunks) == ""
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["tool_calls"]
    calls = assemble_tool_calls(events)
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "example", "days": 1}
    assert events[-2]["usage"]["completion_tokens"] == 1 + len(pieces)


async def test_tool_calls_reply_calls_every_tool(emulator: Emulator) -> None:
    events = await stream(emulator, tools=[WEATHER, CLOCK], emulator={"reply": "tool_calls"})
    calls = assemble_tool_calls(events)
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    assert json.loads(calls[1]["arguments"]) == {} and calls[0]["id"] != calls[1]["id"]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("tool_choice", "name"),
    [({"type": "function", "function": {"name": "get_time"}}, "get_time"), ("required", "get_weather")],
)
async def test_forced_tool_choice_calls_without_configuration(emulator: Emulator, tool_choice: Any, name: str) -> None:
    calls = assemble_tool_calls(await stream(emulator, tools=[WEATHER, CLOCK], tool_choice=tool_choice))
    assert [c["name"] for c in calls.values()] == [name]


async def test_tools_without_a_forced_call_answer_text(emulator: Emulator) -> None:
    assert content_of(await stream(emulator, tools=[WEATHER])) == canned_reply(MSGS)
    emulator.configure(reply="tool_call")
    events = await stream(emulator, tools=[WEATHER], tool_choice="none")
    assert content_of(events) == canned_reply(MSGS) and not assemble_tool_calls(events)
    assert content_of(await stream(emulator)) == canned_reply(MSGS)  # no tools: a text answer


async def test_tool_call_non_stream(emulator: Emulator) -> None:
    data = await complete(emulator, tools=[WEATHER], tool_choice="required")
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and len(message["tool_calls"]) == 1
    call = message["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "example", "days": 1}


async def test_reasoning_before_tool_call(emulator: Emulator) -> None:
    events = await stream(emulator, model="solar-pro3", tools=[WEATHER], tool_choice="required")
    ds = deltas(events)
    n_r = len(tokenize(REASONING_TEXT))
    assert reasoning_of(events) == REASONING_TEXT and all("reasoning" in d for d in ds[:n_r])
    assert "tool_calls" in ds[n_r] and "role" not in ds[n_r]
    assert assemble_tool_calls(events)[0]["name"] == "get_weather"


async def test_invalid_json_body(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(emulator.base_url + "/chat/completions", data=b"{nope", headers=AUTH) as r:
            assert r.status == 400


# ------------------------------------------------------------------------ faults


async def test_status_fault_times_and_retry_after(emulator: Emulator) -> None:
    emulator.set_fault({"kind": "status", "status": 429, "retry_after": 2, "times": 2, "message": "slow down"})
    for _ in range(2):
        status, headers, raw = await post(emulator, body())
        assert status == 429 and headers["Retry-After"] == "2"
        assert headers["x-ratelimit-limit-requests"] == "100"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"] == "2s"
        assert json.loads(raw)["error"]["message"] == "slow down"
    status, headers, _ = await post(emulator, body())
    assert status == 200 and emulator.fault is None
    assert not any(h.lower().startswith("x-ratelimit") for h in headers)


async def test_429_has_rate_limit_headers_even_without_retry_after(emulator: Emulator) -> None:
    status, headers, raw = await post(emulator, body(emulator={"fault": {"kind": "status", "status": 429, "limit": 7}}))
    assert status == 429 and "Retry-After" not in headers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"],
            headers["x-ratelimit-reset-requests"]) == ("7", "0", "1s")
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"


def test_rate_limit_headers() -> None:
    assert rate_limit_headers(limit=60, remaining=-1, reset_seconds=0.5, retry_after=120) == {
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "0.5s", "Retry-After": "120",
    }


async def test_status_fault_forever_until_cleared(emulator: Emulator) -> None:
    emulator.set_fault({"kind": "status", "status": 503, "times": None})
    for _ in range(4):
        status, headers, raw = await post(emulator, body())
        assert status == 503 and "Retry-After" not in headers
        assert json.loads(raw)["error"]["type"] == "server_error"
    emulator.set_fault(None)
    assert (await post(emulator, body()))[0] == 200


async def test_status_fault_with_non_json_body(emulator: Emulator) -> None:
    _, _, raw = await post(emulator, body(emulator={"fault": {"kind": "status", "status": 502, "body": "<html>bad gateway</html>"}}))
    assert raw == b"<html>bad gateway</html>"


async def test_per_request_fault_does_not_consume_global(emulator: Emulator) -> None:
    emulator.set_fault({"kind": "status", "status": 500})
    status, _, _ = await post(emulator, body(emulator={"fault": {"kind": "status", "status": 418}}))
    assert status == 418
    assert (await post(emulator, body()))[0] == 500
    assert (await post(emulator, body()))[0] == 200


async def test_cut_mid_answer(emulator: Emulator) -> None:
    received = b""
    async with aiohttp.ClientSession() as s:
        async with s.post(emulator.base_url + "/chat/completions", headers=AUTH,
                          json=body(emulator={"answer_tokens": 10, "fault": {"kind": "cut", "after": 4}})) as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in r.content.iter_any():
                    received += chunk
    events = parse_sse(received)
    assert content_of(events) == "".join(tokenize(filler_text(10))[:4])
    assert len(events) == 4 and "[DONE]" not in events


async def test_clean_cut_ends_body_without_done(emulator: Emulator) -> None:
    events = await stream(emulator, emulator={"answer_tokens": 10, "fault": {"kind": "cut", "after": 4, "clean": True}})
    assert len(events) == 4 and all(e["choices"][0]["finish_reason"] is None for e in events)


async def test_malformed_event(emulator: Emulator) -> None:
    _, _, raw = await post(emulator, body(emulator={"answer_tokens": 6, "fault": {"kind": "malformed", "after": 2}}))
    blocks = [b for b in raw.split(b"\n\n") if b]
    for i, block in enumerate(blocks):
        if i == 2:
            with pytest.raises(json.JSONDecodeError):
                json.loads(block[6:])
        elif block != b"data: [DONE]":
            json.loads(block[6:])
    assert len(blocks) == 6 + 1 + 1  # six tokens, the malformed event, [DONE] (no usage unless asked)


async def test_error_event(emulator: Emulator) -> None:
    events = await stream(emulator, emulator={"answer_tokens": 6, "fault": {"kind": "error_event", "after": 3, "message": "engine fell over"}})
    assert len(events) == 4 and events[-1]["error"]["message"] == "engine fell over"
    assert "[DONE]" not in events


async def test_stall_then_continue(emulator: Emulator) -> None:
    events = await stream(emulator, emulator={"answer_tokens": 4, "fault": {"kind": "stall", "after": 2, "seconds": 0.2}})
    assert list(emulator.sleeps) == [0.2]
    assert content_of(events) == filler_text(4)


async def test_stall_is_seen_by_a_read_timeout_and_server_stops_without_waiting_for_it() -> None:
    emu = Emulator()
    await emu.start()
    got = b""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=0.3)) as s:
        async with s.post(emu.base_url + "/chat/completions", headers=AUTH,
                          json=body(emulator={"answer_tokens": 5, "fault": {"kind": "stall", "after": 2}})) as r:
            with pytest.raises(asyncio.TimeoutError):
                async for chunk in r.content.iter_any():
                    got += chunk
    assert len(parse_sse(got)) == 2
    assert list(emu.sleeps) == [3600.0]  # the default stall is an hour...
    await asyncio.wait_for(emu.stop(), 60)  # ...and stop does not wait for it (a hang guard, not a speed limit)


async def test_slow_first_byte(emulator: Emulator) -> None:
    events = await stream(emulator, emulator={"fault": {"kind": "slow_first_byte", "seconds": 0.1}})
    assert list(emulator.sleeps) == [0.1]
    assert content_of(events) == canned_reply(MSGS)


async def test_invalid_utf8(emulator: Emulator) -> None:
    _, _, raw = await post(emulator, body(emulator={"answer_tokens": 3, "fault": {"kind": "invalid_utf8", "after": 1}}))
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    toks = tokenize(filler_text(3))
    assert content_of(parse_sse(raw)) == toks[0] + "bad \ufffd\ufffd bytes " + "".join(toks[1:])


async def test_empty_answer_and_empty_body(emulator: Emulator) -> None:
    events = await stream(emulator, emulator={"fault": {"kind": "empty"}}, **USAGE)
    assert content_of(events) == "" and events[0]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"]["completion_tokens"] == 0 and events[-1] == "[DONE]"
    status, _, raw = await post(emulator, body(emulator={"fault": {"kind": "empty", "body": True}}))
    assert status == 200 and raw == b""


@pytest.mark.parametrize("kind", ["cut", "malformed", "error_event", "invalid_utf8"])
async def test_non_stream_faults(emulator: Emulator, kind: str) -> None:
    try:
        status, _, raw = await post(emulator, body(stream=False, emulator={"fault": {"kind": kind}}))
    except aiohttp.ClientPayloadError:
        assert kind == "cut"
        return
    assert kind != "cut" and status == 200
    if kind == "malformed":
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
    elif kind == "error_event":
        assert "error" in json.loads(raw)
    else:
        assert "\ufffd" in json.loads(raw.decode("utf-8", "replace"))["choices"][0]["message"]["content"]


def test_fault_validation() -> None:
    emu = Emulator()
    for bad in ({"kind": "bogus"}, {"kind": "cut", "after": -1}, {"kind": "status", "status": 200},
                {"kind": "cut", "times": 0}, "cut"):
        with pytest.raises(ValueError):
            emu.set_fault(bad)  # type: ignore[arg-type]
    for bad_cfg in ({"tokens_per_second": 0}, {"colour": "red"}, {"reasoning_field": "thoughts"},
                    {"reasoning_tokens": -1}, {"reject_fields": "store"}, {"answer_tokens": True}):
        with pytest.raises(ValueError):
            emu.configure(**bad_cfg)
    with pytest.raises(ValueError):
        Emulator(reasoning_field="nope")
    emu.configure(reasoning=None, reasoning_field="think", reasoning_tokens=0, reject_fields=["x"])
    assert (emu.reasoning, emu.reasoning_field, emu.reject_fields) == (None, "think", ["x"])


# ------------------------------------------------------------------------ control, pacing, speed


async def test_control_endpoints(emulator: Emulator) -> None:
    root = emulator.base_url.rsplit("/v1", 1)[0]
    async with aiohttp.ClientSession() as s:
        async with s.post(root + "/_emulator/config", json={"reply": "echo"}) as r:
            assert r.status == 200 and (await r.json())["reply"] == "echo"
        async with s.post(root + "/_emulator/config", json={"nope": 1}) as r:
            assert r.status == 400
        async with s.post(emulator.base_url + "/_emulator/fault", json={"kind": "status", "status": 500}) as r:
            assert r.status == 200
        async with s.post(emulator.base_url + "/chat/completions", json=body(), headers=AUTH) as r:
            assert r.status == 500
        async with s.post(emulator.base_url + "/chat/completions", json=body(), headers=AUTH) as r:
            assert content_of(parse_sse(await r.read())) == "What is Solar?"
        async with s.post(root + "/_emulator/fault", data=b"null") as r:
            assert r.status == 200
        async with s.get(root + "/_emulator/requests") as r:
            assert len(await r.json()) == 2
        async with s.post(root + "/_emulator/reset") as r:
            assert r.status == 200
        async with s.get(root + "/_emulator/requests") as r:
            assert await r.json() == []
    assert emulator.reply == "markdown"


async def test_connection_counter_sees_keep_alive(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(5):
            async with s.post(emulator.base_url + "/chat/completions", json=body(), headers=AUTH) as r:
                await r.read()
    assert emulator.connections == 1
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(3):
            async with s.post(emulator.base_url + "/chat/completions", json=body(), headers=AUTH) as r:
                await r.read()
    assert emulator.connections == 4


async def test_open_and_peak_connections(emulator: Emulator) -> None:
    """open_connections follows connections opening/closing; peak_connections is the most at once."""
    assert (emulator.open_connections, emulator.peak_connections) == (0, 0)
    async with aiohttp.ClientSession() as s:
        async def one() -> None:
            async with s.post(emulator.base_url + "/chat/completions", json=body(), headers=AUTH) as r:
                await r.read()

        # Three at once: three connections (each held until its answer was read).
        emulator.configure(tokens_per_second=200)
        await asyncio.gather(one(), one(), one())
        assert emulator.peak_connections == 3
        assert emulator.open_connections == 3  # kept alive in the client's pool
        await one()  # reuses a pooled connection
        assert (emulator.connections, emulator.peak_connections) == (3, 3)
        async with s.get(emulator.base_url + "/_emulator/stats") as r:
            stats = await r.json()
        assert stats["open_connections"] == 3 and stats["peak_connections"] == 3
        assert stats["connections"] == 3 and stats["requests"] == 4
    for _ in range(100):  # the client closed its pool: the server sees the connections go
        if emulator.open_connections == 0:
            break
        await asyncio.sleep(0.01)
    assert emulator.open_connections == 0 and emulator.peak_connections == 3
    emulator.reset()
    assert emulator.peak_connections == 0


async def test_pacing_sends_one_event_per_interval() -> None:
    """Checked on the emulator's own record of its pauses, not on a wall clock."""
    emu = Emulator(tokens_per_second=40, answer_tokens=10)
    async with emu as base:
        async with aiohttp.ClientSession() as s:
            pieces = 0
            async with s.post(base + "/chat/completions", json=body(**USAGE), headers=AUTH) as r:
                async for _ in r.content.iter_any():
                    pieces += 1
    assert list(emu.sleeps) == [1 / 40] * 12  # 10 tokens + usage + [DONE], each followed by a pause
    assert pieces >= 2  # arrived in pieces, not one blob
    assert emu.reset() is None and list(emu.sleeps) == []


async def test_unpaced_large_answer_is_exact(emulator: Emulator) -> None:
    events = await stream(emulator, emulator={"answer_tokens": 100_000})
    assert len(events) == 100_001
    assert content_of(events[:-1]) == filler_text(100_000)
    assert list(emulator.sleeps) == []  # full speed: no pauses at all


# ------------------------------------------------------------------------ running it


def test_serve_in_thread_for_sync_callers() -> None:
    with serve_in_thread(reply="echo") as emu:
        req = urllib.request.Request(
            emu.base_url + "/chat/completions",
            data=json.dumps(body()).encode(),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert content_of(parse_sse(r.read())) == "What is Solar?"


THINK3 = "<think>\n" + "".join(tokenize(REASONING_TEXT)[:3]) + "\n</think>\n\n"


@pytest.mark.parametrize(
    ("sig", "flags", "expected"),
    [
        (signal.SIGINT, [], "What is Solar?"),
        (signal.SIGTERM, ["--reasoning", "--reasoning-field", "think", "--reasoning-tokens", "3"],
         THINK3 + "What is Solar?"),
    ],
)
def test_command_line_prints_url_and_stops_cleanly(sig: signal.Signals, flags: list[str], expected: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "upstage_magic.emulator", "--port", "0", "--reply", "echo", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Upstage emulator running at http://127.0.0.1:")
        base = first.split()[-1]
        lines = [proc.stdout.readline() for _ in range(3)]
        assert f"  export UPSTAGE_BASE_URL={base}\n" in lines
        assert "  export UPSTAGE_API_KEY=anything\n" in lines
        req = urllib.request.Request(
            base + "/chat/completions", data=json.dumps(body()).encode(),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert content_of(parse_sse(r.read())) == expected
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


async def test_request_log_is_bounded(monkeypatch):
    """A long-running demo emulator keeps only the most recent request bodies."""
    import upstage_magic.emulator.server as emulator_mod

    monkeypatch.setattr(emulator_mod, "MAX_RECORDED_REQUESTS", 3)
    emu = Emulator()
    await emu.start()
    try:
        for i in range(5):
            await post(emu, body(stream=False, messages=[{"role": "user", "content": f"q{i}"}]))
        assert [r["messages"][0]["content"] for r in emu.requests] == ["q2", "q3", "q4"]
    finally:
        await emu.stop()


def test_start_offline_points_the_package_at_a_running_emulator(monkeypatch):
    from upstage_magic import settings
    from upstage_magic.emulator import start_offline

    for name in ("UPSTAGE_API_KEY", "UPSTAGE_BASE_URL"):
        monkeypatch.setenv(name, "recorded, so that teardown restores the original")
        monkeypatch.delenv(name)
    monkeypatch.setattr(settings, "_api_key", None)
    url = start_offline(reply="echo")
    assert url and url.startswith("http://127.0.0.1:")
    assert settings.get_base_url() == url and settings.get_api_key()
    assert os.environ["UPSTAGE_BASE_URL"] == url and os.environ["UPSTAGE_API_KEY"]  # the package is told by its environment
    req = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {settings.get_api_key()}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    # Once a base URL (or key) is set, it changes nothing.
    assert start_offline() is None


def test_emulator_imports_nothing_else_of_the_package() -> None:
    """The emulator states the API's facts itself: no client module (models, settings, ...) loads with it.

    Importing it, starting it for a notebook and answering one request must load no
    ``upstage_magic`` module outside ``upstage_magic.emulator`` (the top-level package's
    ``__init__`` is lazy and imports none either).
    """
    code = (
        "import json, sys, urllib.request\n"
        "from upstage_magic.emulator import start_offline\n"
        "url = start_offline()\n"
        "req = urllib.request.Request(url + '/chat/completions', headers={'Content-Type': 'application/json',\n"
        "    'Authorization': 'Bearer any'}, data=json.dumps({'model': 'solar-pro4', 'stream': True,\n"
        "    'messages': [{'role': 'user', 'content': 'hi'}]}).encode())\n"
        "assert b'[DONE]' in urllib.request.urlopen(req, timeout=10).read()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('upstage_magic'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("UPSTAGE_API_KEY", "UPSTAGE_BASE_URL")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "upstage_magic.emulator.server" in loaded  # the check sees the emulator's own modules
    others = [m for m in loaded if m != "upstage_magic" and not m.startswith("upstage_magic.emulator")]
    assert others == [], f"the emulator imported other modules of the package: {others}"
