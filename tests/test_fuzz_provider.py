"""Fuzzing the provider's stream parsing (hypothesis): whatever bytes arrive, in whatever
pieces, only the package's own errors come out, and a good stream gives the same items
however it is split. The parsing is pure (``sse`` + ``providers.wire``), so no HTTP layer
is involved: each example runs the real code the provider runs, in microseconds."""
from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upstage_magic.errors import UpstageError
from upstage_magic.events import FinishReason, Reasoning, ToolCall, Usage
from upstage_magic.providers.sse import SSEDecoder
from upstage_magic.providers.wire import StreamParser, parse_completion

ITEM_TYPES = (str, Usage, FinishReason, Reasoning, ToolCall)


def run(chunks: list[bytes]) -> tuple[list[Any], BaseException | None]:
    """What the provider does with the chunks of a response body: items, then the error."""
    decoder, parser = SSEDecoder(), StreamParser()
    items: list[Any] = []
    try:
        for chunk in chunks:
            items.extend(parser.feed(decoder.feed(chunk)))
            if parser.done:
                break
        else:
            items.extend(parser.feed(decoder.flush()))
        items.extend(parser.close())
    except UpstageError as exc:
        return items, exc
    return items, None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces if p]


def merged(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if out and isinstance(item, str) and isinstance(out[-1], str):
            out[-1] += item
        elif out and isinstance(item, Reasoning) and isinstance(out[-1], Reasoning):
            out[-1] = Reasoning(out[-1].text + item.text)
        else:
            out.append(item)
    return out


KEYS = ["choices", "delta", "content", "finish_reason", "usage", "error", "reasoning",
        "reasoning_content", "message", "index", "tool_calls", "function", "name", "arguments", "id", "x"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=12,
)


def event_bytes(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_random_bytes_raise_only_package_errors(data, cuts):
    items, err = run(split(b"data: " + data, cuts))
    assert err is None or isinstance(err, UpstageError)
    assert all(isinstance(i, ITEM_TYPES) for i in items)


@FUZZ
@given(events=st.lists(json_values, max_size=6), done=st.booleans(),
       cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_odd_json_shapes_raise_only_package_errors(events, done, cuts):
    stream = b"".join(event_bytes(e) for e in events) + (b"data: [DONE]\n\n" if done else b"")
    items, err = run(split(stream, cuts))
    assert err is None or isinstance(err, UpstageError)
    assert all(isinstance(i, ITEM_TYPES) for i in items)
    # the same events as parsed objects, fed one at a time: the same items, the same error
    parser = StreamParser()
    again: list[Any] = []
    try:
        for e in [*events, "[DONE]"] if done else events:
            again.extend(parser.feed([e]))
        again.extend(parser.close())
    except UpstageError as exc:
        assert type(exc) is type(err)
    else:
        assert err is None
        assert merged(again) == merged(items)


@FUZZ
@given(obj=json_values)
def test_whole_answers_of_any_shape_raise_only_package_errors(obj):
    try:
        items = parse_completion(obj)
    except UpstageError:
        return
    assert all(isinstance(i, ITEM_TYPES) for i in items)


ANSWER = st.text(min_size=1, max_size=6)


@FUZZ
@given(reasoning=st.lists(ANSWER, max_size=4), think=st.booleans(), texts=st.lists(ANSWER, min_size=1, max_size=6),
       newline=st.sampled_from(["\n", "\r\n", "\r"]), usage=st.booleans(),
       cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_well_formed_stream_gives_the_same_items_however_split(reasoning, think, texts, newline, usage, cuts):
    head = [{"choices": [{"index": 0, "delta": {"reasoning": r}, "finish_reason": None}]} for r in reasoning]
    answer = "".join(texts)
    if think:  # the <think> form instead, cut into the same pieces as the answer
        content = "<think>" + "".join(reasoning) + "</think>" + answer
        sizes = [len(t) for t in texts]
        pieces, at = [], 0
        for n in sizes[:-1]:
            pieces.append(content[at : at + n])
            at += n
        pieces.append(content[at:])
        head = []
    else:
        pieces = texts
    events = head + [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in pieces]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        events.append({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    stream = (b"".join(event_bytes(e) for e in events) + b"data: [DONE]\n\n").replace(b"\n", newline.encode())
    whole, err = run([stream])
    assert err is None
    items, err = run(split(stream, cuts))
    assert err is None
    assert merged(items) == merged(whole)
    text = "".join(i for i in items if isinstance(i, str))
    thought = "".join(i.text for i in items if isinstance(i, Reasoning))
    if think and not answer.strip():
        assert text == ""  # only layout after </think>
    else:
        assert text == (answer.lstrip() if think else answer)
    assert thought == "".join(reasoning)
    assert FinishReason("stop") in items
    assert isinstance(items[-1], Usage) == usage
