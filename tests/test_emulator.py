"""The emulator on its own, driven with raw aiohttp requests (no provider, no sse.py)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
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
    serve_in_thread,
    tokenize,
)

TEST_KEY = "test-key-SECRET123"

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
MSGS = [{"role": "user", "content": "What is Solar?"}]


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "solar-pro3", "messages": MSGS, "stream": True, **kw}


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


def content_of(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


async def post(emu: Emulator, payload: Any, headers: dict[str, str] | None = AUTH) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.post(emu.base_url + "/chat/completions", json=payload, headers=headers) as r:
            return r.status, dict(r.headers), await r.read()


async def stream(emu: Emulator, **kw: Any) -> list[Any]:
    status, _, raw = await post(emu, body(**kw))
    assert status == 200, raw
    return parse_sse(raw)


# ------------------------------------------------------------------------ happy paths


async def test_stream_markdown_shape(emulator: Emulator) -> None:
    events = await stream(emulator)
    expected = canned_reply(MSGS)
    assert "You asked: What is Solar?" in expected and "Turn 1" in expected and "```python" in expected
    assert events[-1] == "[DONE]"
    usage_ev = events[-2]
    chunks = events[:-2]
    assert content_of(chunks) == expected
    assert len(chunks) == len(tokenize(expected))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    ids = {c["id"] for c in events[:-1]}
    assert len(ids) == 1
    for c in events[:-1]:
        assert c["object"] == "chat.completion.chunk"
        assert c["created"] == CREATED
        assert c["model"] == "solar-pro3-251202"
    assert usage_ev["choices"] == []
    u = usage_ev["usage"]
    assert u["prompt_tokens"] == 3
    assert u["completion_tokens"] == len(chunks)
    assert u["total_tokens"] == 3 + len(chunks)
    assert u["completion_tokens_details"]["reasoning_tokens"] == 0


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


async def test_non_stream(emulator: Emulator) -> None:
    status, headers, raw = await post(emulator, body(stream=False))
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    data = json.loads(raw)
    assert data["object"] == "chat.completion"
    assert data["model"] == "solar-pro3-251202"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": canned_reply(MSGS)}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == len(tokenize(canned_reply(MSGS)))


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
    events = await stream(emulator, emulator={"answer_tokens": n})
    chunks = events[:-2]
    assert content_of(chunks) == filler_text(n)
    assert len(chunks) == max(n, 1)  # an empty answer still sends one finishing event
    assert events[-2]["usage"]["completion_tokens"] == n
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_max_tokens_cuts_with_length(emulator: Emulator) -> None:
    events = await stream(emulator, max_tokens=5, emulator={"answer_tokens": 50})
    chunks = events[:-2]
    assert len(chunks) == 5
    assert content_of(chunks) == "".join(tokenize(filler_text(50))[:5])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # not cut when the answer fits
    events = await stream(emulator, max_tokens=50, emulator={"answer_tokens": 50})
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


async def test_stop_sequence(emulator: Emulator) -> None:
    events = await stream(emulator, stop=["Turn"])
    assert content_of(events) == canned_reply(MSGS).split("Turn")[0]


async def test_reasoning_events_come_first(emulator: Emulator) -> None:
    events = await stream(emulator, emulator={"reasoning": True, "reply": "echo"})
    chunks = events[:-2]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    n_r = len(tokenize(REASONING_TEXT))
    assert "".join(d["reasoning"] for d in deltas[:n_r]) == REASONING_TEXT
    assert all("content" not in d for d in deltas[:n_r])
    assert deltas[0]["role"] == "assistant" and "role" not in deltas[n_r]
    assert content_of(chunks[n_r:]) == "What is Solar?"
    assert events[-2]["usage"]["completion_tokens_details"]["reasoning_tokens"] == n_r


async def test_json_modes(emulator: Emulator) -> None:
    msgs = [{"role": "user", "content": "Reply in JSON please"}]
    events = await stream(emulator, messages=msgs, response_format={"type": "json_object"})
    assert isinstance(json.loads(content_of(events)), dict)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "age"],
    }
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    value = json.loads(content_of(await stream(emulator, messages=msgs, response_format=rf)))
    assert isinstance(value["name"], str) and isinstance(value["age"], int) and value["tags"] == ["example"]
    # like the real API: JSON mode needs the word JSON in the conversation
    status, _, raw = await post(emulator, body(response_format={"type": "json_object"}))
    assert status == 400 and b"json" in raw


async def test_models_endpoint(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(emulator.base_url + "/models", headers=AUTH) as r:
            assert r.status == 200
            data = await r.json()
        async with s.get(emulator.base_url + "/models") as r:
            assert r.status == 401
    ids = [m["id"] for m in data["data"]]
    assert data["object"] == "list"
    assert {"solar-pro4", "solar-pro3", "solar-pro2", "solar-mini", "solar-pro4-260806"} <= set(ids)


async def test_dated_id_and_legacy_base_path(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as s:
        url = emulator.base_url + "/solar/chat/completions"
        async with s.post(url, json=body(model="solar-pro4-260806"), headers=AUTH) as r:
            assert r.status == 200
            events = parse_sse(await r.read())
    assert events[0]["model"] == "solar-pro4-260806"


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
        {"model": "solar-pro3", "messages": []},
        {"model": "solar-pro3", "messages": [{"role": "developer", "content": "x"}]},
        {"messages": MSGS},
        {"model": "solar-pro3", "messages": MSGS, "stream": True, "n": 2},
        {"model": "solar-pro3", "messages": MSGS, "max_tokens": 0},
        {"model": "solar-pro3", "messages": MSGS, "emulator": {"bogus": 1}},
        {"model": "solar-pro3", "messages": MSGS, "emulator": {"fault": {"kind": "nope"}}},
        [1, 2],
    ],
)
async def test_bad_requests_400(emulator: Emulator, payload: Any) -> None:
    status, _, raw = await post(emulator, payload)
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"


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
        assert json.loads(raw)["error"]["message"] == "slow down"
    status, _, _ = await post(emulator, body())
    assert status == 200 and emulator.fault is None


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
    assert len(blocks) == 6 + 1 + 2


async def test_error_event(emulator: Emulator) -> None:
    events = await stream(emulator, emulator={"answer_tokens": 6, "fault": {"kind": "error_event", "after": 3, "message": "engine fell over"}})
    assert len(events) == 4 and events[-1]["error"]["message"] == "engine fell over"
    assert "[DONE]" not in events


async def test_stall_then_continue(emulator: Emulator) -> None:
    t0 = time.perf_counter()
    events = await stream(emulator, emulator={"answer_tokens": 4, "fault": {"kind": "stall", "after": 2, "seconds": 0.4}})
    assert time.perf_counter() - t0 >= 0.35
    assert content_of(events) == filler_text(4)


async def test_stall_is_seen_by_a_read_timeout_and_server_shuts_down_fast() -> None:
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
    t0 = time.perf_counter()
    await emu.stop()  # the default stall is an hour; stop must not wait for it
    assert time.perf_counter() - t0 < 3


async def test_slow_first_byte(emulator: Emulator) -> None:
    t0 = time.perf_counter()
    events = await stream(emulator, emulator={"fault": {"kind": "slow_first_byte", "seconds": 0.3}})
    assert time.perf_counter() - t0 >= 0.28
    assert content_of(events) == canned_reply(MSGS)


async def test_invalid_utf8(emulator: Emulator) -> None:
    _, _, raw = await post(emulator, body(emulator={"answer_tokens": 3, "fault": {"kind": "invalid_utf8", "after": 1}}))
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    toks = tokenize(filler_text(3))
    assert content_of(parse_sse(raw)) == toks[0] + "bad \ufffd\ufffd bytes " + "".join(toks[1:])


async def test_empty_answer_and_empty_body(emulator: Emulator) -> None:
    events = await stream(emulator, emulator={"fault": {"kind": "empty"}})
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
    with pytest.raises(ValueError):
        emu.configure(tokens_per_second=0)
    with pytest.raises(ValueError):
        emu.configure(colour="red")


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


async def test_pacing() -> None:
    async with Emulator(tokens_per_second=40, answer_tokens=10) as base:
        async with aiohttp.ClientSession() as s:
            t0 = time.perf_counter()
            arrivals = []
            async with s.post(base + "/chat/completions", json=body(), headers=AUTH) as r:
                async for _ in r.content.iter_any():
                    arrivals.append(time.perf_counter() - t0)
    assert arrivals[-1] >= 11 * (1 / 40) * 0.8  # 10 tokens + usage + [DONE], one interval apart
    assert len(arrivals) >= 5  # arrived in pieces, not one blob


async def test_large_answer_is_fast_and_exact(emulator: Emulator) -> None:
    t0 = time.perf_counter()
    events = await stream(emulator, emulator={"answer_tokens": 100_000})
    assert time.perf_counter() - t0 < 10
    assert len(events) == 100_002
    assert content_of(events[:-2]) == filler_text(100_000)


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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_command_line_prints_url_and_stops_cleanly(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "upstage_magic.emulator", "--port", "0", "--reply", "echo"],
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
            assert content_of(parse_sse(r.read())) == "What is Solar?"
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
    import upstage_magic.emulator as emulator_mod

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
    req = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {settings.get_api_key()}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    # Once a base URL (or key) is set, it changes nothing.
    assert start_offline() is None
