"""The one short line under an answer: model · tokens in / out (reasoning) · time.

Detailed timings (first byte, first answer token, tokens/s, cached prompt tokens) stay in
the output's ``metadata.upstage`` and in ``%upstage history``; the footer says only what a
reader needs. A number the server did not send (no usage: a stopped stream, a server that
reports none) is an estimate and shows with a leading ``~`` (``~120 in``).
"""
from __future__ import annotations

from typing import Any

__all__ = ["footer_line", "token_phrase"]


def _n(value: int, estimated: bool) -> str:
    return f"{'~' if estimated else ''}{value:,}"


def token_phrase(answer: Any) -> str:
    """``"1,074 in / 200 out (120 reasoning)"``; estimated numbers marked ``~``."""
    u = getattr(answer, "usage", None)
    estimated = bool(getattr(u, "estimated", False))
    if u is not None and (u.prompt_tokens or u.completion_tokens):
        prompt_estimated = estimated or not u.prompt_tokens
        prompt = u.prompt_tokens or _estimated_prompt(answer)
        out = max(0, u.completion_tokens - u.reasoning_tokens)
        text = f"{_n(prompt, prompt_estimated)} in / {_n(out, estimated)} out"
        if u.reasoning_tokens:
            text += f" ({_n(u.reasoning_tokens, estimated)} reasoning)"
        return text
    chunks = getattr(answer, "chunks", 0) or getattr(answer, "estimated_tokens", 0)
    return f"~{_estimated_prompt(answer):,} in / ~{chunks:,} out"


def _estimated_prompt(answer: Any) -> int:
    from ..request import estimate_request_tokens  # noqa: PLC0415

    messages = getattr(answer, "messages", None) or []
    return estimate_request_tokens(messages)


def footer_line(exchange: Any, status: str) -> str:
    """One short line: model, tokens, total time, how much history went if some was left out, why it ended."""
    parts = [str(exchange.model), token_phrase(exchange)]
    elapsed = getattr(exchange, "elapsed", None)
    if elapsed is not None and getattr(exchange, "replayed", None) is None:  # a replay has no timing of its own
        parts.append(f"{elapsed:.1f} s")
    info = getattr(getattr(exchange, "request", None), "history_info", None)
    if info is not None and info.left_out:
        parts.append(f"history {info.sent} of {info.sent + info.left_out} turns")
    if status == "length":
        parts.append("cut at max_tokens: raise --max-tokens for more")
    elif status == "stopped":
        parts.append("stopped: partial answer kept, not sent back")
    elif status == "error":
        parts.append("failed: partial answer kept" if exchange.text else "failed")
    elif exchange.finish_reason and exchange.finish_reason not in ("stop", "length"):
        parts.append(f"finish reason {exchange.finish_reason!r}")
    if getattr(exchange, "replayed", None) is not None:
        from ..replay import recorded_label  # noqa: PLC0415

        parts.append(recorded_label(exchange.replayed))
    return " · ".join(parts)
