"""Fuzzing the provider's stream parser: whatever bytes arrive, in whatever pieces, only
the package's own errors come out (hypothesis). The HTTP layer is replaced by a fake
response so each example runs the real parsing loop in microseconds."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import upstage_magic.providers.upstage as upstage_mod
from upstage_magic.errors import UpstageError
from upstage_magic.events import FinishReason, Reasoning, Usage
from upstage_magic.providers import Upstage


class _Content:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def _iter(self):
        for chunk in self._chunks:
            yield chunk

    def iter_any(self):
        return self._iter()

    def at_eof(self) -> bool:
        return True


class _FakeResponse:
    def __init__(self, chunks: list[bytes]) -> None:
        self.content = _Content(chunks)
        self.released = False

    def release(self) -> None:
        self.released = True


def run_parser(chunks: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], BaseException | None, _FakeResponse]:
    response = _FakeResponse(chunks)

    async def fake_send(*args: Any, **kwargs: Any) -> _FakeResponse:
        return response

    monkeypatch.setattr(upstage_mod, "_send", fake_send)
    items: list[Any] = []

    async def consume() -> None:
        async for item in Upstage.create_async_generator("solar-pro3", "hi", api_key="test-key-SECRET123"):
            items.append(item)

    try:
        asyncio.run(consume())
    except UpstageError as exc:
        return items, exc, response
    return items, None, response


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces if p]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["choices", "delta", "content", "finish_reason", "usage", "error",
                         "reasoning", "reasoning_content", "message", "index", "x"]),
        inner, max_size=4),
    max_leaves=12,
)


def event_bytes(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_random_bytes_raise_only_package_errors(data, cuts, monkeypatch):
    items, err, response = run_parser(split(b"data: " + data, cuts), monkeypatch)
    assert err is None or isinstance(err, UpstageError)
    assert all(isinstance(i, (str, Usage, FinishReason, Reasoning)) for i in items)
    assert response.released


@FUZZ
@given(events=st.lists(json_values, max_size=6), done=st.booleans(),
       cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_odd_json_shapes_raise_only_package_errors(events, done, cuts, monkeypatch):
    stream = b"".join(event_bytes(e) for e in events) + (b"data: [DONE]\n\n" if done else b"")
    items, err, _ = run_parser(split(stream, cuts), monkeypatch)
    assert err is None or isinstance(err, UpstageError)
    assert all(isinstance(i, (str, Usage, FinishReason, Reasoning)) for i in items)


@FUZZ
@given(texts=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=8),
       cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_well_formed_stream_gives_the_same_text_however_split(texts, cuts, monkeypatch):
    events = [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in texts]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    stream = b"".join(event_bytes(e) for e in events) + b"data: [DONE]\n\n"
    items, err, _ = run_parser(split(stream, cuts), monkeypatch)
    assert err is None
    assert "".join(i for i in items if isinstance(i, str)) == "".join(texts)
    assert FinishReason("stop") in items
