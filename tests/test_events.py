"""Typed stream events: tolerant parsing of the server's usage object."""
from __future__ import annotations

import pytest

from upstage_magic.events import FinishReason, Usage


@pytest.mark.parametrize("raw", [None, 1.0, "x", [], {"prompt_tokens": float("inf")}, {"prompt_tokens": True}])
def test_usage_from_odd_values_counts_zero(raw):
    assert Usage.from_dict(raw).prompt_tokens == 0


def test_usage_reads_details_and_adds_up():
    u = Usage.from_dict({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                         "completion_tokens_details": {"reasoning_tokens": 3},
                         "prompt_tokens_details": {"cached_tokens": 2}})
    assert (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens, u.cached_tokens) == (5, 7, 3, 2)
    assert (u + u).total_tokens == 24


def test_finish_reason_length_means_truncated():
    assert FinishReason("length").truncated and not FinishReason("stop").truncated


def test_tool_call_is_a_value_with_its_arguments():
    from upstage_magic.events import StreamEvent, ToolCall

    call = ToolCall(name="get_weather", arguments='{"city": "Seoul"}', id="call_1")
    assert call == ToolCall("get_weather", '{"city": "Seoul"}', "call_1", 0, "function")
    assert str(call) == 'get_weather({"city": "Seoul"})'
    assert call.parsed_arguments() == {"city": "Seoul"}
    assert ToolCall("now").parsed_arguments() == {}
    with pytest.raises(ValueError):
        ToolCall("f", "{not json").parsed_arguments()
    assert not isinstance(call, str)
    assert ToolCall in StreamEvent.__args__  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        call.name = "other"  # type: ignore[misc]
