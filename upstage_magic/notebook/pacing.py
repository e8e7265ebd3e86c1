"""Batch pacing: the server's own rate-limit headers first, AIMD for servers that send none.

:class:`AimdPacer` (the fallback, and the whole of the old pacing): at most ``limit``
requests in flight; a 429 closes a shared gate until its Retry-After has passed and halves
the limit once per episode; each success adds ``1/limit`` back, up to the maximum.

:class:`HeaderPacer` adds pacing from ``x-ratelimit-*-requests`` (read per host by
:mod:`upstage_magic.providers.ratelimit`), so a batch is not answered 429 in the first place:

- the limit ``L`` comes from ``x-ratelimit-limit-requests``;
- the window ``W`` is learned: the rate a reading implies is ``used / reset`` (``used = L -
  remaining``; ``reset`` is the time until the limit is back to full), the largest seen is
  the learned rate ``r``, and ``W = L / r`` (1 s for a 100 requests/s limit). Before a rate
  is known ``W`` is the largest reset seen;
- it never sends more than ``L - margin`` requests in any ``W`` seconds of its own send
  times (a client-side sliding window: safe against sliding windows and token buckets);
- before a rate is learned it trusts ``remaining``: with the newest reading's ``remaining``
  spent by requests sent since, it waits for that reading's reset.

A 429 still closes the gate (its Retry-After) as before. Without headers it is AIMD.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

__all__ = ["AimdPacer", "HeaderPacer", "MARGIN"]

#: The share of the server's limit kept free for clock and network jitter, beyond the 1 request always kept.
MARGIN = 0.01


class AimdPacer:
    """Concurrency limit with a shared rate-limit gate and AIMD (on the batch's loop)."""

    def __init__(self, limit: int, stats: Any) -> None:
        self.max = limit
        self.limit = float(limit)
        self.active = 0
        self.gate = 0.0  # loop time before which nobody sends
        self.no_cut_until = 0.0
        self.waiters: list[asyncio.Future[None]] = []
        self.stats = stats
        stats.concurrency = limit

    def pace(self, now: float) -> float:
        """Seconds to wait before the next send may go (0: now). AIMD alone never waits here."""
        return 0.0

    def sent(self, now: float) -> None:
        """A request goes now."""

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self.gate > now:
                await asyncio.sleep(self.gate - now)
                continue
            if self.active < int(self.limit):
                wait = self.pace(now)
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                self.active += 1
                self.stats.in_flight = self.active
                self.sent(now)
                return
            fut = loop.create_future()
            self.waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self.waiters:
                    self.waiters.remove(fut)

    def release(self) -> None:
        self.active -= 1
        self.stats.in_flight = self.active
        self._wake()

    def _wake(self) -> None:
        """Wake every waiter (at most ``concurrency``): each checks again, so no wake-up is lost."""
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(None)

    def success(self) -> None:
        if self.limit < self.max:
            self.limit = min(float(self.max), self.limit + 1.0 / self.limit)
            self.stats.concurrency = int(self.limit)
            self._wake()

    def rate_limited(self, retry_after: float) -> None:
        """Close the gate for everyone for ``retry_after`` s; halve the limit once per episode."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.gate = max(self.gate, now + retry_after)
        self.stats.waiting_until = time.monotonic() + (self.gate - now)
        if now >= self.no_cut_until:
            self.limit = max(1.0, self.limit / 2)
            self.stats.concurrency = int(self.limit)
            self.no_cut_until = self.gate


class HeaderPacer(AimdPacer):
    """AIMD plus pacing from the server's rate-limit headers for ``url``'s host (see the module docstring)."""

    def __init__(self, limit: int, stats: Any, url: Any, *, margin: float = MARGIN) -> None:
        super().__init__(limit, stats)
        self.url = url
        self.margin = margin
        self.sends: deque[float] = deque()  # our send times (loop clock), the last window's
        self.rate = 0.0  # learned requests per second
        self.window = 0.0  # learned window, seconds
        self._seen = 0
        self._reading: Any = None
        self._sent_since = 0  # sends after the newest reading arrived

    def _learn(self) -> Any:
        from ..providers import ratelimit  # noqa: PLC0415

        reading = ratelimit.latest(self.url)
        if reading is None or reading.seq == self._seen:
            return self._reading
        self._seen, self._reading, self._sent_since = reading.seq, reading, 0
        used = reading.limit - reading.remaining
        if reading.reset:
            if used > 0 and not reading.refused:
                self.rate = max(self.rate, used / reading.reset)
            self.window = max(self.window, reading.reset)
        if self.rate > 0:
            self.window = reading.limit / self.rate
        return reading

    def pace(self, now: float) -> float:
        reading = self._learn()
        if reading is None or self.window <= 0:
            return 0.0
        sends, window = self.sends, self.window
        while sends and sends[0] <= now - window:
            sends.popleft()
        allowed = max(1, int(reading.limit * (1 - self.margin)) - 1)
        if len(sends) >= allowed:
            return max(0.001, sends[len(sends) - allowed] + window - now)
        if self.rate <= 0 and self._sent_since >= reading.remaining:  # none left, no rate yet: wait for the reset
            return max(0.001, reading.at + (reading.reset or 1.0) - time.monotonic())
        return 0.0

    def sent(self, now: float) -> None:
        self.sends.append(now)
        self._sent_since += 1

    def rate_limited(self, retry_after: float) -> None:
        """A 429 despite the pacing: close the gate; cut the concurrency only without headers.

        With readings the pace is already the server's rate: halving the requests in flight
        would only lower the throughput below it.
        """
        if self._reading is None:
            super().rate_limited(retry_after)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.gate = max(self.gate, now + retry_after)
        self.stats.waiting_until = time.monotonic() + (self.gate - now)
