"""The pure wire parser: chat-completion events in, typed items out (no HTTP at all)."""
from __future__ import annotations

import json
from typing import Any

import pytest

from upstage_magic.errors import (
    IncompleteStreamError,
    MalformedEventError,
    StreamErrorEvent,
)
from upstage_magic.events import FinishReason, Reasoning, ToolCall, Usage
from upstage_magic.providers.sse import ServerSentEvent
from upstage_magic.providers.wire import StreamParser, parse_completion


def delta(**fields: Any) -> str:
    return json.dumps({"object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": fields, "finish_reason": None}]})


def finish(reason: str = "stop") -> str:
    return json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})


USAGE = {"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29,
         "completion_tokens_details": {"reasoning_tokens": 12},
         "prompt_tokens_details": {"cached_tokens": 4}}


def parse(*events: Any, batches: int = 1) -> list[Any]:
    """Run events through a parser, in ``batches`` roughly equal feeds, then close it."""
    parser = StreamParser()
    items: list[Any] = []
    size = max(1, -(-len(events) // batches))
    for i in range(0, len(events), size):
        items += parser.feed(events[i : i + size])
    return items + parser.close()


def merged(items: list[Any]) -> list[Any]:
    """Adjacent text and adjacent Reasoning pieces joined (how they were split is free)."""
    out: list[Any] = []
    for item in items:
        if out and isinstance(item, str) and isinstance(out[-1], str):
            out[-1] += item
        elif out and isinstance(item, Reasoning) and isinstance(out[-1], Reasoning):
            out[-1] = Reasoning(out[-1].text + item.text)
        else:
            out.append(item)
    return out


def test_text_finish_usage_done():
    items = parse(delta(role="assistant", content=""), delta(content="Hel"), delta(content="lo"),
                  finish(), json.dumps({"choices": [], "usage": USAGE}), "[DONE]")
    assert items == ["Hel", "lo", FinishReason("stop"), Usage.from_dict(USAGE)]
    assert items[-1].reasoning_tokens == 12 and items[-1].cached_tokens == 4


@pytest.mark.parametrize("content", [None, "", "MISSING"])
def test_content_missing_null_or_empty_gives_nothing(content):
    fields = {} if content == "MISSING" else {"content": content}
    assert parse(delta(role="assistant", **fields), finish(), "[DONE]") == [FinishReason("stop")]


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_before_content(field):
    items = parse(delta(**{field: "Let me "}), delta(**{field: "think."}), delta(content="42"),
                  finish(), "[DONE]")
    assert items == [Reasoning("Let me "), Reasoning("think."), "42", FinishReason("stop")]


def test_usage_only_last_event_without_done():
    """choices empty: a usage-only event; the finish reason before it ends the answer."""
    items = parse(delta(content="a"), finish("length"), json.dumps({"choices": [], "usage": USAGE}))
    assert items == ["a", FinishReason("length"), Usage.from_dict(USAGE)]
    assert items[1].truncated


THINK = "<think>Plan: add.\nThen answer.</think>\n\nThe answer is 4."


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 100])
def test_think_prefix_split_anywhere(size):
    pieces = [THINK[i : i + size] for i in range(0, len(THINK), size)]
    items = parse(*(delta(content=p) for p in pieces), finish(), "[DONE]")
    assert merged(items) == [Reasoning("Plan: add.\nThen answer."), "The answer is 4.", FinishReason("stop")]


def test_think_only_at_the_start():
    text = "Use <think> tags like <think>this</think>."
    items = parse(delta(content=text[:5]), delta(content=text[5:]), finish(), "[DONE]")
    assert merged(items) == [text, FinishReason("stop")]


def test_text_that_begins_like_a_tag_is_kept():
    items = parse(delta(content="<thi"), delta(content="s is html>"), finish(), "[DONE]")
    assert merged(items) == ["<this is html>", FinishReason("stop")]
    items = parse(delta(content="<th"), finish(), "[DONE]")  # the answer ends mid-"tag"
    assert merged(items) == ["<th", FinishReason("stop")]


def test_unclosed_think_is_reasoning():
    items = parse(delta(content="<think>never closed"), delta(content=" </thi"), finish("length"))
    assert merged(items) == [Reasoning("never closed </thi"), FinishReason("length")]


def test_leading_whitespace_before_think():
    items = parse(delta(content="\n"), delta(content="<think>x</think>y"), finish(), "[DONE]")
    assert merged(items) == [Reasoning("x"), "y", FinishReason("stop")]


def tool_fragments() -> list[str]:
    frag = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 1, "id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
        {"index": 0, "function": {"arguments": '"Seoul"}'}},
    ]
    return [delta(tool_calls=[f]) for f in frag]


def test_tool_calls_assembled_from_fragments():
    items = parse(delta(role="assistant", content=None), *tool_fragments(), finish("tool_calls"),
                  json.dumps({"choices": [], "usage": USAGE}), "[DONE]")
    calls = [i for i in items if isinstance(i, ToolCall)]
    assert calls == [ToolCall(name="get_weather", arguments='{"city": "Seoul"}', id="call_1", index=0),
                     ToolCall(name="now", arguments="{}", id="call_2", index=1)]
    assert calls[0].parsed_arguments() == {"city": "Seoul"}
    assert str(calls[1]) == "now({})"
    assert items[2:] == [FinishReason("tool_calls"), Usage.from_dict(USAGE)]
    assert not any(isinstance(i, str) for i in items)


def test_servers_that_repeat_the_name_and_id_in_every_fragment():
    """Some OpenAI-compatible servers send the full name and id with each argument piece."""
    pieces = ['{"city"', ': "Se', 'oul"}']
    frag = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": p}}
            for p in pieces]
    items = parse(*[delta(tool_calls=[f]) for f in frag], finish("tool_calls"), "[DONE]")
    assert [i for i in items if isinstance(i, ToolCall)] == [
        ToolCall(name="get_weather", arguments='{"city": "Seoul"}', id="call_1", index=0)]


def test_tool_calls_without_finish_reason_come_at_done():
    items = parse(*tool_fragments(), "[DONE]")
    assert [i.name for i in items if isinstance(i, ToolCall)] == ["get_weather", "now"]


@pytest.mark.parametrize("batches", [1, 2, 5, 20])
def test_same_items_however_the_events_are_batched(batches):
    events = [delta(reasoning="r1"), delta(content="<think>"), delta(content="t</think>A"),
              delta(content="B"), *tool_fragments(), finish("tool_calls"),
              json.dumps({"choices": [], "usage": USAGE}), "[DONE]"]
    assert parse(*events, batches=batches) == parse(*events)


def test_done_ends_the_stream_and_later_events_are_ignored():
    parser = StreamParser()
    assert list(parser.feed([delta(content="a"), "[DONE]", "not json"])) == ["a"]
    assert parser.done
    assert list(parser.feed(["also not json"])) == []


def test_parsed_objects_and_sse_events_are_accepted():
    items = parse({"choices": [{"delta": {"content": "x"}, "finish_reason": "stop"}]},
                  ServerSentEvent(delta(content="y"), event="delta", id="1"),
                  ServerSentEvent("[DONE]", id="2"))
    assert items == ["x", FinishReason("stop"), "y"]


@pytest.mark.parametrize(
    "event",
    [
        json.dumps({"error": {"message": "overloaded", "code": "server_busy"}}),
        ServerSentEvent('{"message": "overloaded", "code": "server_busy"}', event="error"),
        ServerSentEvent("overloaded", event="error"),
    ],
)
def test_error_events(event):
    parser = StreamParser()
    items: list[Any] = []
    with pytest.raises(StreamErrorEvent, match="overloaded"):
        for item in parser.feed([delta(content="Par"), event, delta(content="never")]):
            items.append(item)
    assert items == ["Par"]  # what came before the error was handed out first


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "[1, 2]",
        '"a string"',
        '{"choices": {"0": {}}}',
        '{"choices": ["x"]}',
        '{"choices": [{"delta": "text"}]}',
        '{"choices": [{"delta": {"content": 5}}]}',
        '{"choices": [{"delta": {"reasoning": ["x"]}}]}',
        '{"choices": [{"delta": {"tool_calls": {"index": 0}}}]}',
        '{"choices": [{"delta": {"tool_calls": [{"index": "0"}]}}]}',
        '{"choices": [{"delta": {}, "finish_reason": 3}]}',
    ],
)
def test_malformed_events(data):
    parser = StreamParser()
    items: list[Any] = []
    with pytest.raises(MalformedEventError) as info:
        for item in parser.feed([delta(content="ok"), data]):
            items.append(item)
    assert items == ["ok"]
    assert isinstance(info.value, json.JSONDecodeError)
    assert data[:20] in str(info.value)


def test_a_bug_of_ours_is_not_relabelled_as_malformed(monkeypatch):
    """Only shape problems become MalformedEventError; our own exceptions pass unchanged."""
    from upstage_magic.providers import wire

    def broken(self, text, out):
        raise KeyError("bug in our code")

    monkeypatch.setattr(wire._Think, "feed", broken)
    with pytest.raises(KeyError, match="bug in our code"):
        parse(delta(content="<think>"), finish())


def test_incomplete_streams():
    with pytest.raises(IncompleteStreamError, match="without sending any event"):
        parse()
    with pytest.raises(IncompleteStreamError, match="before the server said it was finished"):
        parse(delta(content="a"))


# ------------------------------------------------------------------ whole answers


def completion(message: dict[str, Any], reason: str = "stop", usage: Any = USAGE) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": reason}],
            "usage": usage}


def test_whole_answer_with_reasoning():
    items = parse_completion(completion({"role": "assistant", "content": "42", "reasoning": "thought"}))
    assert items == [Reasoning("thought"), "42", FinishReason("stop"), Usage.from_dict(USAGE)]


def test_whole_answer_with_think_prefix():
    items = parse_completion(completion({"content": THINK}))
    assert items[:2] == [Reasoning("Plan: add.\nThen answer."), "The answer is 4."]


def test_whole_answer_with_tool_calls():
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
             {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}}]
    items = parse_completion(completion({"content": None, "tool_calls": calls}, "tool_calls"))
    assert items[:3] == [ToolCall("f", '{"a": 1}', "c1", 0), ToolCall("g", "", "c2", 1),
                         FinishReason("tool_calls")]


@pytest.mark.parametrize("obj", [[], {"choices": []}, {"choices": [1]}, {"choices": [{"message": "x"}]},
                                 {"choices": [{"message": {"tool_calls": "x"}}]}])
def test_whole_answer_malformed(obj):
    with pytest.raises(MalformedEventError):
        parse_completion(obj)


def test_whole_answer_error_envelope():
    with pytest.raises(StreamErrorEvent, match="quota"):
        parse_completion({"error": {"message": "quota exceeded"}})
