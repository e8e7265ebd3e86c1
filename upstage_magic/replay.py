"""Replay: re-running a notebook costs nothing and tells the same story. Pure (sqlite3 via cache).

Every answer that ends "done" or "length" is recorded in the on-disk answer cache
(:mod:`upstage_magic.cache`, table ``replays``), keyed by :meth:`Request.cache_key
<upstage_magic.request.Request.cache_key>`: the bare base URL, the model, the messages as sent
and the answer options (:func:`~upstage_magic.request.answer_options`; never the key, nor
timeouts, retries or streaming). With replay on, a request whose key was recorded is answered
from the record at once (text, reasoning, tool calls, finish reason, usage) and the answer is
marked replayed with the time it was recorded; nothing is sent.

Replay is off by default: re-running a cell normally means "ask again", and a replayed answer
could hide a change on the server's side. Turn it on with ``%config UpstageMagics.replay =
True``, ``--replay`` on a cell, or ``UPSTAGE_MAGIC_REPLAY=1`` in the environment (for CI runs
with nbclient or papermill, and ``python -m upstage_magic demo``). ``--fresh`` asks again and
records the new answer. :func:`~upstage_magic.plan` decides the mode (:func:`mode_for`); the
:class:`~upstage_magic.session.Exchange` looks the record up when it begins and records its
answer when it ends, so the magic, the widget and ``%upstage fix`` replay by construction.
Batch runs keep their own cache (they always re-use it) and ``fresh=True`` re-asks them.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, NamedTuple

from .events import FinishReason, Reasoning, ToolCall, Usage

__all__ = ["ENV", "OFF", "RECORD", "REPLAY", "Recorded", "env_replay", "items", "lookup", "mode_for", "record",
           "recorded_label"]

ENV = "UPSTAGE_MAGIC_REPLAY"
#: Request.replay values: leave the record alone, record the answer, replay a record if any.
OFF, RECORD, REPLAY = "off", "record", "replay"
_RECORDED_STATUSES = ("done", "length")
_CACHES: dict[str, Any] = {}
_LOCK = threading.Lock()


class Recorded(NamedTuple):
    """A recorded answer: what the exchange yields again, and when it was first answered."""

    data: dict[str, Any]
    created: float


def env_replay() -> bool:
    """Whether ``UPSTAGE_MAGIC_REPLAY`` turns replay on (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def mode_for(settings: Any, ask: Any) -> str:
    """The replay mode of a request: ``--fresh`` records; ``--replay``/the setting/the env replays."""
    if getattr(ask, "fresh", False):
        return RECORD
    on = getattr(ask, "replay", None)
    if on is None:
        on = bool(getattr(settings, "replay", False)) or env_replay()
    return REPLAY if on else RECORD


def _cache() -> Any:
    from .cache import AnswerCache, default_cache_path  # noqa: PLC0415

    path = str(default_cache_path())
    with _LOCK:
        cache = _CACHES.get(path)
        if cache is None:
            cache = _CACHES[path] = AnswerCache(path)
        return cache


def _key(request: Any) -> str | None:
    try:
        return str(request.cache_key())
    except Exception:  # noqa: BLE001 - a request without a key is simply not replayed
        return None


def lookup(request: Any) -> Recorded | None:
    """The recorded answer for ``request`` when its mode is replay (else, or on any cache trouble, None)."""
    if getattr(request, "replay", OFF) != REPLAY:
        return None
    key = _key(request)
    if key is None:
        return None
    try:
        found = _cache().get_record(key)
    except (OSError, sqlite3.Error, ValueError):
        return None
    return Recorded(*found) if found is not None else None


def record(exchange: Any) -> None:
    """Record ``exchange``'s answer (masked, as its turn holds it) when its request asks for it.

    Only answers that ended "done" or "length", were not themselves replayed, and have text
    or tool calls. Cache trouble (a read-only data directory) never fails an answer.
    """
    turn = exchange.turn
    if (turn is None or getattr(exchange.request, "replay", OFF) == OFF or exchange.replayed is not None
            or turn.status not in _RECORDED_STATUSES or not (turn.answer or turn.tool_calls)):
        return
    key = _key(exchange.request)
    if key is None:
        return
    data = {"text": turn.answer, "reasoning": turn.reasoning, "finish_reason": turn.finish_reason,
            "tool_calls": turn.tool_calls, "model": turn.model,
            "usage": turn.usage.to_dict() if turn.usage is not None else None}
    try:
        _cache().put_record(key, json.dumps(data, ensure_ascii=False, default=str))
    except (OSError, sqlite3.Error):
        pass


async def items(recorded: Recorded) -> AsyncIterator[Any]:
    """The recorded answer as a provider's stream items (reasoning, text, tool calls, finish, usage)."""
    data = recorded.data
    if data.get("reasoning"):
        yield Reasoning(str(data["reasoning"]))
    if data.get("text"):
        yield str(data["text"])
    for i, call in enumerate(data.get("tool_calls") or ()):
        yield ToolCall(name=str(call.get("name", "")), arguments=str(call.get("arguments", "")),
                       id=str(call.get("id", "")), index=i)
    if data.get("finish_reason"):
        yield FinishReason(str(data["finish_reason"]))
    if isinstance(data.get("usage"), dict):
        yield Usage.from_dict(data["usage"])


def recorded_label(created: float) -> str:
    """``"replayed · recorded 2026-12-03 16:20 UTC"``: the footer's note for a replayed answer."""
    when = datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"replayed · recorded {when}"
