"""Estimated usage for answers a server sent no token counts for.

Some OpenAI-compatible servers never send a usage chunk, even when ``include_usage`` is
asked (issue 21). Then the prompt tokens are estimated from the messages sent
(``request.estimate_request_tokens``) and the answer tokens from the text, reasoning and
tool calls that came (``context.estimate_tokens``), in one ``Usage(estimated=True)`` yielded
last, so footers, the log and batch statistics mark them as estimates. A stream that stops
early yields nothing more (the caller estimates what it kept).
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..context import estimate_tokens
from ..events import Reasoning, ToolCall, Usage
from ..request import estimate_request_tokens

__all__ = ["estimated_usage", "with_estimated_usage"]


def estimated_usage(messages: Sequence[Any], answer: str, reasoning: str = "") -> Usage:
    """A ``Usage`` estimated from the messages sent and the text that came back."""
    prompt = estimate_request_tokens([m for m in messages if isinstance(m, dict)])
    thought = estimate_tokens(reasoning) if reasoning else 0
    completion = (estimate_tokens(answer) if answer else 0) + thought
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                 reasoning_tokens=thought, estimated=True)


async def with_estimated_usage(items: AsyncIterator[Any], messages: Sequence[Any]) -> AsyncIterator[Any]:
    """``items`` as they come, then an estimated ``Usage`` when none of them was one."""
    answer: list[str] = []
    reasoning: list[str] = []
    reported = False
    async for item in items:
        if isinstance(item, Usage):
            reported = True
        elif isinstance(item, str):
            answer.append(item)
        elif isinstance(item, Reasoning):
            reasoning.append(item.text)
        elif isinstance(item, ToolCall):
            answer.append(item.name + item.arguments)
        yield item
    if not reported:
        yield estimated_usage(messages, "".join(answer), "".join(reasoning))
