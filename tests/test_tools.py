"""Tools: schema from a function, argument checks, results as text, the plan, records, the emulator."""
from __future__ import annotations

import dataclasses
import json
from typing import Literal, Optional

import pytest
from pydantic import BaseModel

from tests.support.fake import request
from upstage_magic.events import ToolCall
from upstage_magic.log import ConversationLog, SessionLog, session_turns
from upstage_magic.request import RequestError
from upstage_magic.secrets import register_secret
from upstage_magic.session import ChatSession
from upstage_magic.tools import (
    RESULT_CHARS,
    ToolArgumentError,
    ToolError,
    as_tool,
    as_tools,
    result_text,
    tool,
)


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Person(BaseModel):
    name: str
    age: int = 0


def google(count: int, unit: Literal["cm", "m"] = "cm", tags: list[str] | None = None,
           where: Optional[Point] = None, who: Person | None = None,  # noqa: UP045 - Optional is what is tested
           weights: dict[str, float] | None = None) -> str:
    """Measure things.

    Longer text about it.

    Args:
        count: how many things.
        unit: the unit to use.
    """
    return f"{count} {unit}"


def numpy_style(a, /, b: float = 1.0):
    """Add.

    Parameters
    ----------
    a : int
        the first number
    b : float
        the second number
    """
    return a + b


def test_schema_from_hints_and_google_docstring():
    spec = as_tool(google).spec()
    fn = spec["function"]
    assert spec["type"] == "function" and "strict" not in fn and fn["name"] == "google"
    assert fn["description"] == "Measure things.\n\nLonger text about it."
    props, params = fn["parameters"]["properties"], fn["parameters"]
    assert params["required"] == ["count"] and params["type"] == "object"
    assert props["count"] == {"type": "integer", "description": "how many things."}
    assert props["unit"]["enum"] == ["cm", "m"] and props["unit"]["default"] == "cm"
    assert props["unit"]["description"] == "the unit to use."
    assert {"type": "array", "items": {"type": "string"}} in props["tags"]["anyOf"]
    assert props["where"]["anyOf"][0] == {"$ref": "#/$defs/Point"}
    assert params["$defs"]["Point"]["required"] == ["x", "y"]
    assert params["$defs"]["Person"]["properties"]["name"]["type"] == "string"
    assert {"type": "object", "additionalProperties": {"type": "number"}} in props["weights"]["anyOf"]
    json.dumps(spec)  # sendable


def test_numpy_docstring_and_positional_only_call():
    t = as_tool(numpy_style)
    props = t.spec()["function"]["parameters"]["properties"]
    assert props["a"]["description"] == "the first number" and props["b"]["description"] == "the second number"
    assert t.call(t.arguments('{"a": 2, "b": 3}')) == 5


def test_arguments_are_checked_and_converted():
    t = as_tool(google)
    args = t.arguments('{"count": "3", "where": {"x": 1, "y": 2}, "who": {"name": "Ada"}}')
    assert args["count"] == 3 and args["where"] == Point(1, 2) and args["who"] == Person(name="Ada")
    assert args["unit"] == "cm" and args["tags"] is None
    with pytest.raises(ToolArgumentError, match="count"):
        t.arguments('{"count": "many"}')
    with pytest.raises(ToolArgumentError, match="unit"):
        t.arguments('{"count": 1, "unit": "km"}')
    with pytest.raises(ToolArgumentError, match="extra|Extra"):
        t.arguments('{"count": 1, "approve": true}')
    with pytest.raises(ToolArgumentError, match="not valid JSON"):
        t.arguments('{"count": 1')
    with pytest.raises(ToolArgumentError, match="JSON object"):
        t.arguments("[1, 2]")
    with pytest.raises(ToolArgumentError, match="count"):
        t.arguments("")


def test_decorator_keeps_the_function_and_its_approval():
    @tool(approve=False, name="quick", description="Fast.")
    def f(x: int) -> int:
        return x * 2

    assert f(2) == 4
    t = as_tool(f)
    assert (t.name, t.description, t.approve) == ("quick", "Fast.", False)
    assert as_tool(f, approve=True).approve is True and as_tool(f).approve is False
    assert as_tool(google).approve is True  # the default: ask


def test_what_cannot_be_a_tool_says_why():
    with pytest.raises(ToolError, match="name"):
        as_tool(lambda x: x)
    with pytest.raises(ToolError, match="'_secret'"):
        def g(_secret: int) -> None: ...
        as_tool(g)
    with pytest.raises(ToolError, match="not a function"):
        as_tool(42)
    with pytest.raises(ToolError, match="named google"):
        as_tools([google, google])
    with pytest.raises(ToolError, match="name"):
        tool(name="has space")(google)


def test_results_become_bounded_masked_text():
    pd = pytest.importorskip("pandas")
    register_secret("CANARY-tool-test-secret-not-a-key")
    assert result_text({"a": 1, "b": [1, 2]}) == '{"a": 1, "b": [1, 2]}'
    assert result_text(Person(name="Ada")) == '{"name":"Ada","age":0}'
    assert result_text(Point(1, 2)) == '{"x": 1, "y": 2}'
    assert "CANARY-tool-test-secret-not-a-key" not in result_text("key CANARY-tool-test-secret-not-a-key")
    frame = result_text(pd.DataFrame({"a": range(1000)}))
    assert len(frame) < 2000 and "999" in frame and ".." in frame
    long = result_text("x" * 50_000)
    assert len(long) < RESULT_CHARS + 100 and long.endswith("[cut: 50,000 characters in all]")

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert "repr failed" in result_text(Broken())


def test_plan_offers_the_tools():
    req = request("Measure it", tools=[google, numpy_style], tool_choice="auto")
    assert [t["function"]["name"] for t in req.options["tools"]] == ["google", "numpy_style"]
    assert req.options["tool_choice"] == "auto" and [t.name for t in req.tools] == ["google", "numpy_style"]
    assert req.public_options()["tools"] == ["google", "numpy_style"]  # stored by name with each turn
    assert "tools" not in request("No tools").options
    with pytest.raises(RequestError, match="tool_choice"):
        request("x", tool_choice="required")
    with pytest.raises(RequestError, match="--tools"):
        request("x", tools=[lambda: 1])


def test_a_tool_turn_is_recorded_logged_resumed_and_exported(tmp_path):
    session = ChatSession()
    slog = SessionLog(lambda: str(tmp_path / "log.sqlite"))
    slog.attach(session)
    from upstage_magic.session import Turn

    calls = [{"id": "c1", "name": "area", "arguments": '{"r": 2}', "step": 1, "approval": "yes",
              "seconds": 0.01, "result": "12.56", "error": False}]
    session.record(Turn(prompt="Area?", answer="It is 12.56.", tool_calls=calls))
    assert session.turns[-1].tool_calls == calls
    rows = ConversationLog(tmp_path / "log.sqlite").load(slog.conversation)
    assert rows[-1]["tool_calls"] == calls
    assert session_turns(rows)[-1].tool_calls == calls
    assert json.loads(session.export_json())["turns"][0]["tool_calls"] == calls
    md = session.export_markdown()
    assert "tool call area" in md and "12.56" in md


# ----------------------------------------------------------------------------- emulator

WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}}}


async def _post(emulator, **body):
    import aiohttp

    async with aiohttp.ClientSession() as http, http.post(
            emulator.base_url + "/chat/completions", json={"model": "solar-pro4", **body},
            headers={"Authorization": "Bearer k"}) as resp:
        return resp.status, await resp.json()


async def test_emulator_calls_the_tools_the_prompt_names(emulator):
    status, data = await _post(emulator, messages=[{"role": "user", "content": "Ask weather and clock"}],
                               tools=[WEATHER, CLOCK])
    assert status == 200
    calls = data["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["weather", "clock"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "example"}
    assert data["choices"][0]["finish_reason"] == "tool_calls"
    status, data = await _post(emulator, messages=[{"role": "user", "content": "Tell me a joke"}], tools=[WEATHER])
    assert data["choices"][0]["message"].get("tool_calls") is None  # named nothing: text


async def test_emulator_answers_from_the_tool_results(emulator):
    messages = [{"role": "user", "content": "Ask weather"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c7", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c7", "content": "sunny, 21 C"}]
    status, data = await _post(emulator, messages=messages, tools=[WEATHER])
    text = data["choices"][0]["message"]["content"]
    assert status == 200 and "The tool weather returned: sunny, 21 C" in text
    assert data["choices"][0]["finish_reason"] == "stop"


async def test_emulator_can_repeat_name_and_id_in_every_fragment(emulator):
    from upstage_magic.providers import Upstage

    emulator.configure(tool_fragments="repeat")
    items = [i async for i in Upstage.create_async_generator(
        "solar-pro4", [{"role": "user", "content": "weather please"}], api_key="k", base_url=emulator.base_url,
        tools=[WEATHER])]
    calls = [i for i in items if isinstance(i, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [("weather", '{"city": "example"}')]  # not "weatherweather..."
    import aiohttp

    async with aiohttp.ClientSession() as http, http.post(emulator.base_url + "/chat/completions", json={
            "model": "solar-pro4", "stream": True, "tools": [WEATHER],
            "messages": [{"role": "user", "content": "weather please"}]}, headers={"Authorization": "Bearer k"}) as resp:
        raw = (await resp.read()).decode()
    frags = [f for line in raw.splitlines() if line.startswith("data: {")
             for c in json.loads(line[6:])["choices"] for f in c["delta"].get("tool_calls") or []]
    assert len(frags) >= 3 and all(f["id"] == frags[0]["id"] and f["function"]["name"] == "weather" for f in frags)
