"""Who hears about a retry while it waits: "retrying (2/3) in 1.5 s". Pure.

The HTTP layer calls :func:`announce` just before it sleeps between attempts. Whoever drives
an answer can listen for the duration of its stream with :func:`listening`, an async
generator wrapper: the listener lives in a context variable of the task that iterates the
stream, so two answers streaming at once (a cell and a widget) never hear each other's
retries. The listener is called on the stream's thread; it should only record the notice.
"""
from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["RetryNotice", "announce", "listening"]


@dataclass(frozen=True)
class RetryNotice:
    attempt: int
    """The retry about to be made (1 = the first retry)."""
    of: int
    """Retries allowed in all."""
    delay: float
    """Seconds to wait before it."""
    reason: str = ""
    """What failed (our error's message, masked)."""

    def describe(self) -> str:
        """``"retrying (2/3) in 1.5 s: Could not connect to the Upstage API."``"""
        text = f"retrying ({self.attempt}/{self.of}) in {self.delay:.1f} s"
        return f"{text}: {self.reason}" if self.reason else text


_LISTENER: contextvars.ContextVar[Callable[[RetryNotice], Any] | None] = contextvars.ContextVar(
    "upstage_retry_listener", default=None)


def announce(attempt: int, of: int, delay: float, reason: Any = "") -> None:
    """Tell this task's listener (if any) that a retry waits ``delay`` seconds."""
    listener = _LISTENER.get()
    if listener is not None:
        from .errorview_text import short_reason  # noqa: PLC0415

        try:
            listener(RetryNotice(attempt, of, float(delay), short_reason(reason)))
        except Exception:  # noqa: BLE001,S110 - a display problem must not break the request
            pass


async def listening(stream: Callable[[], AsyncIterator[Any]],
                    listener: Callable[[RetryNotice], Any]) -> AsyncIterator[Any]:
    """``stream()``'s items, with ``listener`` hearing the retries made while it runs."""
    token = _LISTENER.set(listener)
    try:
        async for item in stream():
            yield item
    finally:
        try:
            _LISTENER.reset(token)
        except ValueError:  # closed from another context: the task's context ends with it anyway
            pass
