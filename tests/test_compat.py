"""Issue 21 part 3: the emulator's compat mode (a local OpenAI-compatible server) and the
client's fallbacks for such servers (json_schema refused, no usage in streams)."""
from __future__ import annotations

import json
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
