"""What servers say about their rate limits (``x-ratelimit-*-requests`` headers), per host.

Many OpenAI-compatible APIs send, with every answer, ``x-ratelimit-limit-requests`` (requests
allowed per window), ``x-ratelimit-remaining-requests`` (left now) and
``x-ratelimit-reset-requests`` (time until the limit is back to full, e.g. ``"1s"``,
``"20ms"``, ``"6m0s"``). :func:`observe` (called by :func:`~upstage_magic.providers.http.send`
for every response) keeps the latest reading per host; batch pacing
(:mod:`upstage_magic.notebook.pacing`) reads it with :func:`latest`. A server that sends none
is simply never observed, and batch falls back to AIMD. Pure (no aiohttp).
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Reading", "host_of", "latest", "observe", "parse_duration", "reset"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Reading:
    """One response's rate-limit headers: ``at`` is ``time.monotonic()`` when it arrived; ``seq`` counts readings.

    ``refused``: the response was a 429, whose reset is often the time until one request is
    allowed again rather than until the limit is back to full (so no rate is learned from it).
    """

    limit: int
    remaining: int
    reset: float | None
    at: float
    seq: int
    refused: bool = False


_LATEST: dict[str, Reading] = {}
_LOCK = threading.Lock()
_SEQ = [0]


def host_of(url: Any) -> str:
    """The ``host:port`` a URL names (the key readings are kept under)."""
    return urlsplit(str(url or "")).netloc.rpartition("@")[2].lower()


def parse_duration(value: Any) -> float | None:
    """``"1s"`` -> 1.0, ``"20ms"`` -> 0.02, ``"6m0s"`` -> 360.0, ``"0.5"`` -> 0.5; None if unreadable."""
    text = str(value or "").strip().lower()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _int(value: Any) -> int | None:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


def observe(url: Any, headers: Mapping[str, Any], status: int = 200) -> Reading | None:
    """Keep the request-limit reading of a response (HTTP ``status``) from ``url`` (None when it has none)."""
    limit = _int(headers.get("x-ratelimit-limit-requests"))
    remaining = _int(headers.get("x-ratelimit-remaining-requests"))
    if limit is None or remaining is None or limit <= 0:
        return None
    reset = parse_duration(headers.get("x-ratelimit-reset-requests"))
    with _LOCK:
        _SEQ[0] += 1
        reading = Reading(limit, max(0, remaining), reset, time.monotonic(), _SEQ[0], status == 429)
        _LATEST[host_of(url)] = reading
    return reading


def latest(url: Any) -> Reading | None:
    """The newest reading for the host of ``url``, or None."""
    with _LOCK:
        return _LATEST.get(host_of(url))


def reset() -> None:
    """Forget every reading (tests)."""
    with _LOCK:
        _LATEST.clear()
