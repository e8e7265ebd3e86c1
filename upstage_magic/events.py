"""Typed, immutable stream events yielded beside the answer text.

The provider yields answer text as plain ``str``; everything else arrives as one of these
small value objects, so ``isinstance(chunk, str)`` keeps old callers working. Pure module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Usage", "FinishReason", "Reasoning", "ToolCall", "StreamEvent"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the server reported for one answer.

    ``estimated``: the server sent none and these are the client's estimates (see
    ``providers.estimate``); a footer shows them with ``~``.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    estimated: bool = False

    @classmethod
    def from_dict(cls, data: Any) -> Usage:
        """Read a server's ``usage`` object; missing, odd or non-finite values count as 0."""
        if not isinstance(data, dict):
            data = {}

        def num(v: Any) -> int:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return 0
            return int(v)

        ctd = data.get("completion_tokens_details") or {}
        ptd = data.get("prompt_tokens_details") or {}
        return cls(
            prompt_tokens=num(data.get("prompt_tokens")),
            completion_tokens=num(data.get("completion_tokens")),
            total_tokens=num(data.get("total_tokens")),
            # the server's details objects, else the flat counts ``to_dict`` stores
            reasoning_tokens=num((ctd if isinstance(ctd, dict) and ctd else data).get("reasoning_tokens")),
            cached_tokens=num((ptd if isinstance(ptd, dict) and ptd else data).get("cached_tokens")),
            raw=dict(data),
            estimated=data.get("estimated") is True,  # as ``to_dict`` stores an estimate
        )

    def to_dict(self) -> dict[str, int]:
        """The counts as a plain dict (what exports, the log and output metadata store)."""
        out = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
               "total_tokens": self.total_tokens, "reasoning_tokens": self.reasoning_tokens,
               "cached_tokens": self.cached_tokens}
        if self.estimated:
            out["estimated"] = True
        return out

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cached_tokens + other.cached_tokens,
            estimated=self.estimated or other.estimated,
        )


@dataclass(frozen=True, slots=True)
class FinishReason:
    """Why the answer ended: "stop", "length" (cut by max_tokens), "tool_calls", ..."""

    reason: str

    @property
    def truncated(self) -> bool:
        return self.reason == "length"

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's reasoning text (not part of the answer)."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for (not run here), assembled from its fragments.

    ``arguments`` is the JSON text exactly as the model wrote it (it may be invalid JSON);
    :meth:`parsed_arguments` decodes it.
    """

    name: str
    arguments: str = ""
    id: str = ""
    index: int = 0
    type: str = "function"

    def parsed_arguments(self) -> Any:
        """``arguments`` decoded as JSON ({} when empty); raises ``ValueError`` if invalid."""
        import json

        return json.loads(self.arguments) if self.arguments.strip() else {}

    def __str__(self) -> str:
        return f"{self.name}({self.arguments})"


StreamEvent = Usage | FinishReason | Reasoning | ToolCall
