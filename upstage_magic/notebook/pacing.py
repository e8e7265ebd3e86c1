"""Batch pacing: the server's own rate-limit headers first, AIMD for servers that send none.

:class:`AimdPacer` (the fallback, and the whole of the old pacing): at most ``limit``
requests in flight; a 429 closes a shared gate until its Retry-After has passed and halves
the limit once per episode; each success adds ``1/limit`` back, up to the maximum.

:class:`HeaderPacer` adds pacing from ``x-ratelimit-*-requests`` (read per host by
:mod:`upstage_magic.providers.ratelimit`), so a batch is not answered 429 in the first place:

- the limit ``L`` comes from ``x-ratelimit-limit-requests``;
- the window ``W`` is learned from ``reset`` (the time until the limit is back to full).
  A token bucket (OpenAI's kind) frees ``used = L - remaining`` slots in ``reset``, so
  ``used / reset`` is its rate ``r`` and ``W = L / r``. A window counter (a sliding or fixed
  window, the emulator's kind) says about ``W`` whatever was used: its resets do not shrink
  with use. Which one a server is shows in the readings: when the slowest ``used / reset``
  seen is under half the fastest, resets do not follow use, and ``W`` is the longest reset
  seen. Otherwise ``W = L / r`` (``r`` the fastest seen): never shorter than the true window
  of either kind. Before any rate is known ``W`` is the largest reset seen;
- it keeps at most ``L - 1`` requests (less ``margin``) in any ``W`` seconds, counting a
  request from its send until ``W`` after its answer came back (the server counted it at
  some moment in between): sends counted at the send alone let the server see more than
  ``L - 1`` in its window whenever the way there is slower at one end of it than at the
  other (a loaded machine, a busy network). A 429 holds no slot (the server did not count
  it). The one slot kept free is for requests that overtake each other on the way;
- before a rate is learned it trusts ``remaining``: with the newest reading's ``remaining``
  spent by requests sent since, it waits for that reading's reset.

A 429 still closes the gate (its Retry-After) as before. Without headers it is AIMD.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Any

__all__ = ["AimdPacer", "HeaderPacer", "MARGIN"]

#: The share of the server's limit kept free beyond the 1 request always kept (none: answer times cover jitter).
MARGIN = 0.0


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
        """Seconds to wait before the next send may go (0: now; inf: until an answer comes). AIMD never waits here."""
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
            wait = self.pace(now) if self.active < int(self.limit) else math.inf
            if 0 < wait < math.inf:
                await asyncio.sleep(wait)
                continue
            if wait == 0:
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

    def release(self, refused: bool = False) -> None:
        """A request is done (``refused``: answered 429, so the server did not count it)."""
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
        self.answered_at: deque[float] = deque()  # when counted answers came back (loop clock), the last window's
        self.rate = 0.0  # the fastest used/reset seen: a bucket's rate
        self.slowest = 0.0  # the slowest used/reset seen
        self.longest = 0.0  # the longest reset of an answer (not a 429)
        self.windowed = False  # resets that do not shrink with use: a window counter, not a bucket
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
                pace = used / reading.reset
                self.rate = max(self.rate, pace)
                self.slowest = min(self.slowest, pace) if self.slowest else pace
                self.longest = max(self.longest, reading.reset)
                self.windowed = self.windowed or self.slowest * 2 < self.rate
            self.window = max(self.window, reading.reset)
        if self.windowed:
            self.window = self.longest
        elif self.rate > 0:
            self.window = reading.limit / self.rate
        return reading

    def pace(self, now: float) -> float:
        reading = self._learn()
        if reading is None or self.window <= 0:
            return 0.0
        done, window = self.answered_at, self.window
        while done and done[0] <= now - window:
            done.popleft()
        allowed = max(1, int(reading.limit * (1 - self.margin)) - 1)
        held = len(done) + self.active  # answered in the last window, and still on the way
        if held >= allowed:
            first = held - allowed  # the answer whose slot must come free first
            return max(0.001, done[first] + window - now) if first < len(done) else math.inf
        if self.rate <= 0 and self._sent_since >= reading.remaining:  # none left, no rate yet: wait for the reset
            return max(0.001, reading.at + (reading.reset or 1.0) - time.monotonic())
        return 0.0

    def sent(self, now: float) -> None:
        self._sent_since += 1

    def release(self, refused: bool = False) -> None:
        if not refused:
            self.answered(asyncio.get_running_loop().time())
        super().release(refused)

    def answered(self, now: float) -> None:
        """A request the server counted came back at ``now``: its slot stays held for one window."""
        self.answered_at.append(now)

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
