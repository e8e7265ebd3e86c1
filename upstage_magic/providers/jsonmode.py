"""The json_schema fallback for servers that only take ``text`` / ``json_object``.

Some OpenAI-compatible servers refuse ``response_format: {"type": "json_schema", ...}``
(issue 21: HTTP 500 with a pydantic validation message naming ``response_format``). Such a
request is asked once more with ``{"type": "json_object"}`` and the schema in the
instructions (a system message); the caller validates the answer locally, as it does for
every schema (``Schema.parse``). The refusal is remembered per base URL for the process
(``_JSON_SCHEMA``, like ``include_usage`` in ``upstage``), so later requests go straight to
the fallback; the answer is also kept in the cache file (``cache.server_fact``), so a new
kernel does not ask json_schema of a server known to refuse it. While a base URL's answer is
not known, one request of an event loop finds
out and the others with a schema wait for it: ``batch(schema=S)`` over N items costs N + 1
requests, not 2N.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import APIStatusError, is_validation_error

__all__ = ["asks_schema", "fall_back", "refuses_schema", "send"]

T = TypeVar("T")

#: Base URL -> whether its server takes json_schema (absent: not known yet).
_JSON_SCHEMA: dict[str, bool] = {}
#: (event loop id, base URL) -> set when the request finding out is done.
_PROBES: dict[tuple[int, str], asyncio.Event] = {}

INSTRUCTION = ("Answer with one JSON object only (no prose, no code fence) that fits this JSON Schema:\n")


def asks_schema(body: dict[str, Any]) -> bool:
    rf = body.get("response_format")
    return isinstance(rf, dict) and rf.get("type") == "json_schema"


def refuses_schema(exc: BaseException) -> bool:
    """Whether an HTTP error is the server refusing the json_schema response_format."""
    if not isinstance(exc, APIStatusError) or exc.status not in (400, 422) and exc.status < 500:
        return False
    text = f"{exc} {exc.server_message or ''} {json.dumps(exc.body, default=str)}"
    names_it = any(word in text for word in ("response_format", "json_schema", "json_object"))
    return names_it and (exc.status < 500 or is_validation_error(exc))


def fall_back(body: dict[str, Any]) -> None:
    """Turn a json_schema body into json_object with the schema in a system message (in place)."""
    spec = body["response_format"].get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, dict) else None
    body["response_format"] = {"type": "json_object"}
    note = {"role": "system", "content": INSTRUCTION + json.dumps(schema if schema is not None else {},
                                                                  ensure_ascii=False)}
    messages = list(body.get("messages") or [])
    lead = 0
    while lead < len(messages) and isinstance(messages[lead], dict) and messages[lead].get("role") == "system":
        lead += 1
    body["messages"] = [*messages[:lead], note, *messages[lead:]]  # after the caller's system messages


async def send(post: Callable[[], Awaitable[T]], body: dict[str, Any], base: str) -> T:
    """``post()`` the body; one that asks json_schema of a server that refuses it falls back (once)."""
    if not asks_schema(body):
        return await post()
    if base not in _JSON_SCHEMA and (known := _stored(base)) is not None:
        _JSON_SCHEMA[base] = known  # learnt by an earlier process
    probe = await _turn(base)
    try:
        if _JSON_SCHEMA.get(base) is False:
            fall_back(body)
            return await post()
        refused = False
        try:
            response = await post()
        except APIStatusError as exc:
            if not refuses_schema(exc):
                raise
            refused = True
        if not refused:
            _remember(base, True)
            return response
        _remember(base, False)  # asked again outside the except: no chained error to show
        fall_back(body)
        return await post()
    finally:
        if probe:
            _PROBES.pop((id(asyncio.get_running_loop()), base)).set()


def _remember(base: str, takes: bool) -> None:
    """What ``base`` answered, for this process and (when it is news) the cache file: a
    request to a server already known costs no write."""
    if _JSON_SCHEMA.get(base) is not takes:
        _stored(base, takes)
    _JSON_SCHEMA[base] = takes


def _stored(base: str, takes: bool | None = None) -> bool | None:
    """Whether ``base`` takes json_schema, as kept in the cache file (stored when ``takes`` is given)."""
    from ..cache import server_fact  # noqa: PLC0415

    value = server_fact(base, "json_schema", None if takes is None else "taken" if takes else "refused")
    return None if value is None else value == "taken"


async def _turn(base: str) -> bool:
    """Wait while another request of this loop finds out about ``base``; True: this one does."""
    key = (id(asyncio.get_running_loop()), base)
    while base not in _JSON_SCHEMA:
        event = _PROBES.get(key)
        if event is None:
            _PROBES[key] = asyncio.Event()
            return True
        await event.wait()
    return False
