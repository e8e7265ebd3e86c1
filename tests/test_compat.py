"""Issue 21 part 3: the emulator's compat mode (a local OpenAI-compatible server) and the
client's fallbacks for such servers (json_schema refused, no usage in streams)."""
from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import pytest

from upstage_magic.emulator import Emulator

from .test_emulator import AUTH, MSGS, USAGE, body, complete, content_of, parse_sse, post, refused, stream

SCHEMA = {"type": "object", "properties": {"label": {"enum": ["pos", "neg"]}, "score": {"type": "integer"}},
          "required": ["label", "score"]}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}}


# ------------------------------------------------------------------------ the emulator's compat mode


async def test_compat_refuses_json_schema_with_a_500_validation_body(emulator: Emulator) -> None:
    emulator.configure(compat="openai-local")
    err = await refused(emulator, body(response_format=JSON_SCHEMA), status=500)
    assert "validation error" in err["message"] and "'text' or 'json_object'" in err["message"]
    emulator.configure(compat=None)  # Upstage's API takes it
    assert json.loads(content_of(await stream(emulator, response_format=JSON_SCHEMA)))["label"] == "pos"


async def test_compat_json_object_follows_the_schema_shown_in_the_messages(emulator: Emulator) -> None:
    emulator.configure(compat="openai-local")
    msgs = [{"role": "system", "content": "Answer in JSON fitting this schema:\n" + json.dumps(SCHEMA)}, *MSGS]
    value = json.loads(content_of(await stream(emulator, messages=msgs, response_format={"type": "json_object"})))
    assert value == {"label": "pos", "score": 1}
    # the schema inside response_format (as some servers take it) is followed too
    rf = {"type": "json_object", "schema": SCHEMA}
    msgs = [{"role": "user", "content": "json please"}]
    assert json.loads(content_of(await stream(emulator, messages=msgs, response_format=rf))) == value


async def test_compat_lists_only_its_local_model_and_serves_any_name(emulator: Emulator) -> None:
    emulator.configure(compat="openai-local")
    async with aiohttp.ClientSession() as s, s.get(emulator.base_url + "/models", headers=AUTH) as r:
        ids = [m["id"] for m in (await r.json())["data"]]
    assert ids == ["local-model"]
    for name in ("solar-pro2", "solar-pro4", "whatever"):  # retired and unknown names too
        reply = await complete(emulator, model=name)
        assert reply["model"] == "local-model" and reply["usage"]["prompt_tokens"] == 3
    emulator.reset()  # back to Upstage's API: the retired name is refused again
    assert (await refused(emulator, body(model="solar-pro2")))["code"] == "model_retired"


async def test_compat_streams_send_no_usage_even_when_asked(emulator: Emulator) -> None:
    emulator.configure(compat="openai-local")
    events = await stream(emulator, **USAGE)
    assert events[-1] == "[DONE]" and not [e for e in events if isinstance(e, dict) and e.get("usage")]
    assert content_of(events)
    # per request, through the body's "emulator" object
    emulator.configure(compat=None)
    status, _, raw = await post(emulator, body(**USAGE, emulator={"compat": "openai-local"}))
    assert status == 200 and not [e for e in parse_sse(raw) if isinstance(e, dict) and e.get("usage")]
    assert [e for e in await stream(emulator, **USAGE) if isinstance(e, dict) and e.get("usage")]


@pytest.mark.parametrize("bad", ["openai", 1, True])
async def test_compat_setting_is_checked(emulator: Emulator, bad: Any) -> None:
    with pytest.raises(ValueError, match="compat"):
        emulator.configure(compat=bad)


# ------------------------------------------------------------------------ the json_schema fallback

from upstage_magic import errors  # noqa: E402
from upstage_magic.notebook.batch import abatch  # noqa: E402
from upstage_magic.providers import Upstage, jsonmode  # noqa: E402
from upstage_magic.schema import Schema  # noqa: E402

KEY = "test-key-SECRET123"


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonmode, "_JSON_SCHEMA", {})


async def ask(emu: Emulator, rf: dict[str, Any] | None = JSON_SCHEMA, **kw: Any) -> str:
    items = [c async for c in Upstage.create_async_generator(
        "solar-mini4", [{"role": "system", "content": "Be brief."}, *MSGS], api_key=KEY,
        base_url=emu.base_url, response_format=rf, **kw)]
    return "".join(c for c in items if isinstance(c, str))


async def test_a_refused_json_schema_falls_back_to_json_object_once_and_is_remembered(emulator: Emulator) -> None:
    emulator.configure(compat="openai-local")
    text = await ask(emulator)
    assert Schema.of(SCHEMA).parse(text) == {"label": "pos", "score": 1}  # validated locally
    first, second = emulator.requests
    assert first["response_format"] == JSON_SCHEMA and second["response_format"] == {"type": "json_object"}
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["system", "system", "user"]  # the schema after the caller's system message
    assert json.dumps(SCHEMA) in second["messages"][1]["content"]
    emulator.requests.clear()
    assert Schema.of(SCHEMA).parse(await ask(emulator, stream=False)) == {"label": "pos", "score": 1}
    assert [r["response_format"]["type"] for r in emulator.requests] == ["json_object"]  # straight to it


async def test_a_server_that_takes_json_schema_keeps_getting_it(emulator: Emulator) -> None:
    for _ in range(2):
        assert json.loads(await ask(emulator)) == {"label": "pos", "score": 1}
    assert [r["response_format"]["type"] for r in emulator.requests] == ["json_schema"] * 2


async def test_batch_with_a_schema_costs_one_extra_request_not_a_retry_storm(emulator: Emulator, tmp_path) -> None:
    emulator.configure(compat="openai-local")
    out = await abatch("Label {item} as JSON", ["good", "bad"], schema=SCHEMA, base_url=emulator.base_url,
                       api_key=KEY, model="solar-mini4", cache=False, concurrency=4)
    assert out == [{"label": "pos", "score": 1}] * 2
    assert len(emulator.requests) <= 3  # issue 21: 8 before
    assert sum(r["response_format"]["type"] == "json_schema" for r in emulator.requests) == 1


async def test_a_validation_error_about_something_else_does_not_fall_back(emulator: Emulator) -> None:
    emulator.set_fault({"kind": "status", "status": 500, "message": "1 validation error for ChatCompletionRequest\n"
                        "temperature\n  Input should be less than or equal to 2"})
    with pytest.raises(errors.ServerError):
        await ask(emulator)
    assert len(emulator.requests) == 1 and jsonmode._JSON_SCHEMA == {}


@pytest.mark.parametrize("status", [400, 422])
async def test_a_4xx_naming_response_format_falls_back_too(emulator: Emulator, status: int) -> None:
    emulator.set_fault({"kind": "status", "status": status,
                        "message": "response_format type 'json_schema' is not supported"})
    assert isinstance(json.loads(await ask(emulator)), dict)  # JSON mode (Upstage's emulator: its own object)
    assert [r["response_format"]["type"] for r in emulator.requests] == ["json_schema", "json_object"]


def test_cell_with_a_schema_sets_o_to_the_validated_value_on_a_local_server(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """`%%upstage -f json --schema S -o v` against the local server: 2 requests, v set (issue 21: unset)."""
    from IPython.core.interactiveshell import InteractiveShell

    from upstage_magic.emulator import serve_in_thread
    from upstage_magic.session import ChatSession

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "upstage_magic")
    try:
        m = shell.magics_manager.registry["UpstageMagics"]
        m.provider, m.session, m.display_mode, m.model = None, ChatSession(), "plain", ""
        with serve_in_thread(api_key=KEY) as emu:
            emu.configure(compat="openai-local")
            monkeypatch.setenv("UPSTAGE_BASE_URL", emu.base_url)
            monkeypatch.setenv("UPSTAGE_API_KEY", KEY)
            shell.user_ns["S"] = SCHEMA
            shell.run_cell_magic("upstage", "-m solar-mini4 -f json --schema S -o verdict", "Is this good?")
            assert shell.user_ns["verdict"] == {"label": "pos", "score": 1}
            assert [r["response_format"]["type"] for r in emu.requests] == ["json_schema", "json_object"]
            # the local server sent no usage in the stream: the footer shows estimates of both sides
            assert re.search(r"solar-mini4 · ~\d+ in / ~\d+ out", capsys.readouterr().out)
    finally:
        shell.run_line_magic("unload_ext", "upstage_magic")


# ------------------------------------------------------------------------ estimated usage


async def test_a_stream_without_usage_gets_an_estimate_of_both_sides(emulator: Emulator) -> None:
    from upstage_magic.context import estimate_tokens
    from upstage_magic.events import Usage
    from upstage_magic.request import estimate_request_tokens

    emulator.configure(compat="openai-local")
    msgs = [{"role": "system", "content": "Be brief."}, *MSGS]
    items = [c async for c in Upstage.create_async_generator("solar-mini4", msgs, api_key=KEY,
                                                             base_url=emulator.base_url)]
    usage = [c for c in items if isinstance(c, Usage)]
    text = "".join(c for c in items if isinstance(c, str))
    assert len(usage) == 1 and usage[0] is items[-1] and usage[0].estimated
    assert usage[0].prompt_tokens == estimate_request_tokens(msgs) > 0
    assert usage[0].completion_tokens == estimate_tokens(text) > 0
    assert usage[0].to_dict()["estimated"] is True and Usage.from_dict(usage[0].to_dict()) == usage[0]
    emulator.configure(compat=None)  # a server that reports usage: its numbers, not an estimate
    items = [c async for c in Upstage.create_async_generator("solar-mini4", msgs, api_key=KEY,
                                                             base_url=emulator.base_url)]
    reported = [c for c in items if isinstance(c, Usage)]
    assert len(reported) == 1 and not reported[0].estimated and reported[0].prompt_tokens == 5


def test_footer_marks_estimated_usage_with_tildes() -> None:
    from types import SimpleNamespace

    from upstage_magic.events import Usage
    from upstage_magic.notebook.footer import footer_line, token_phrase

    est = SimpleNamespace(usage=Usage(40, 120, 160, estimated=True), model="local-model", elapsed=1.0,
                          text="x", finish_reason="stop", messages=[])
    assert token_phrase(est) == "~40 in / ~120 out"
    assert footer_line(est, "done").startswith("local-model · ~40 in / ~120 out")
    real = SimpleNamespace(**{**vars(est), "usage": Usage(40, 120, 160)})
    assert token_phrase(real) == "40 in / 120 out"


# ------------------------------------------------------------------------ errors name the server


async def test_status_errors_name_the_host_of_a_server_that_is_not_upstages(emulator: Emulator) -> None:
    emulator.set_fault({"kind": "status", "status": 503, "times": None})
    with pytest.raises(errors.ServerError) as info:
        await ask(emulator, rf=None, max_retries=0)
    host = emulator.base_url.split("/")[2]
    assert str(info.value).startswith(f"The chat request to {host} failed with HTTP 503")
    assert "Upstage" not in str(info.value) and host in (info.value.hint or "")
    assert errors.server_host("https://api.upstage.ai/v1/chat/completions") is None
    upstage = errors.status_error(503, url="https://api.upstage.ai/v1/chat/completions", what="chat request")
    assert str(upstage).startswith("Upstage API chat request failed") and "Upstage service" in (upstage.hint or "")
