"""Run the provider's async generator from the synchronous ``%%upstage`` magic.

Why a worker thread with its own event loop (measured before choosing)
--------------------------------------------------------------------
A cell magic is synchronous, but in ipykernel 7 it runs while the kernel's asyncio loop is
already running. Measured in a real ipykernel 7.4 kernel (IPython 9.18, Python 3.11,
2-core machine; throwaway scripts, 20 000 chunks from an ``asyncio.sleep(0)`` generator,
best of 3; interrupt = ``km.interrupt_kernel()`` during a 10 ms-paced stream):

=====================================  ===========  ====================  ===============
way                                    20k chunks   interrupt -> idle     next cell/await
=====================================  ===========  ====================  ===============
``asyncio.run`` in a plain thread      0.053 s      (reference)           -
nest_asyncio2.apply + run_until_comp.  0.063 s      0.004 s, partial kept ok / ok
nest_asyncio (1.6) same                0.060 s      0.004 s, partial kept ok / ok
worker thread, own loop, SimpleQueue   0.092 s      0.005 s, partial kept ok / ok
task on the kernel loop (no blocking)  cell returns with 0 chunks; a following sync cell
                                       starves it; the interrupt did NOT stop it (ran
                                       to the end)
=====================================  ===========  ====================  ===============

The shipped version is a plain hand-off: the stream's task appends each item to a deque
and sets an Event; the caller's thread wakes at most once per tick (``interval``, floored
at ``MIN_INTERVAL`` = 20 ms), takes everything buffered in one list and calls
``on_batch`` (the magic joins a batch's text in one ``str.join``: no Python work per
token on that side), and calls ``tick()`` when a tick passes with nothing new. The first
item is handed over at once, and the stream waits (at most 50 ms) until the caller has
shown it, so the first text is not held up behind the GIL; the end of the stream is seen
at once. With ``update_interval = 0`` the old per-burst hand-off woke the caller ~63 000
times in 0.25 s of idle stream; now 12 (10 ticks, 2 batches). Measured with the real
provider against the emulator in a real kernel, provider alone run in the same kernel on
this loop over the same warm connection (benchmarks/bench_magic.py, best of 9-15, 2-core
machine shared with other jobs): 20 000 tokens at full speed, magic 50-55 ms vs provider
42-48 ms (1.1-1.2x, as before this change: 53 vs 45 ms, 1.20x); 2 000 tokens 7 vs 6 ms;
paced at 50 tok/s within 1% (33 display messages for ~3.1 s); first display 0.5-7 ms
after the first event leaves the emulator; a kernel interrupt reaches idle in 25-210 ms.

The task way cannot work for a magic (no ``-o`` value, nbclient sees an empty cell,
interrupt does not reach it); it is the widget's way. Both nest-asyncio flavours and the
worker thread stream and stop within milliseconds; the thread costs ~1.5 us per chunk
more (queue hand-off, per item in that measurement; now a deque append per item and one
hand-over per tick).

We use the worker thread because:

* nest-asyncio patches globally: ``asyncio.Task``/``Future`` become the pure-Python
  classes for the whole kernel (on Python < 3.14), loop classes get a new ``_run_once``.
  ipykernel 7.4 only applies ``nest_asyncio2`` for ``%gui asyncio``/tk; the old
  ``nest_asyncio`` must not be mixed in (``nest_asyncio2.apply`` silently keeps an old
  ``nest_asyncio`` loop patch, whose ``run_until_complete`` lacks the fix for
  ipykernel 7's shared cell Context). A magic should not change the kernel that much.
* With nest-asyncio the ``KeyboardInterrupt`` is raised inside whatever loop callback runs
  at that moment (possibly aiohttp's protocol code or a kernel handler), which can leave
  that object half-updated. In the thread design SIGINT lands in the main thread's
  ``Event.wait``; the stream is then cancelled cleanly on its own loop (``task.cancel``).
* The same code runs in ipykernel, terminal IPython and plain scripts (no running loop).
* Display calls stay in the main thread, in the cell's context, so ipykernel routes
  the outputs (parent header ContextVar) to the right cell.

The background loop is created on first use, lives for the process (so aiohttp's
connection pool is reused between cells) and is a daemon thread.
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundLoop", "MIN_INTERVAL", "run_stream", "run_coroutine", "close_on_exit"]

T = TypeVar("T")

MIN_INTERVAL = 0.02
"""Floor of ``run_stream``'s ``interval``: the caller's thread wakes at most 50 times a second."""
FIRST_WAIT = 0.05
"""At most this long the stream waits for the caller to show its first item."""


class BackgroundLoop:
    """An asyncio loop running forever in a daemon thread."""

    def __init__(self, name: str = "upstage-magic-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (started on first use)."""
        with self._lock:
            if self._loop is None or self._loop.is_closed() or not (self._thread and self._thread.is_alive()):
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name=self._name, daemon=True)
                self._thread.start()
                ready.wait(5)
                self._loop = loop
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; return a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def running(self) -> bool:
        """Whether the loop's thread is alive."""
        return self._loop is not None and self._thread is not None and self._thread.is_alive()


_BG = BackgroundLoop()


class _Job:
    """A coroutine run as a task on the background loop, watched from another thread."""

    def __init__(self, coro: Coroutine[Any, Any, Any], *, on_done: Callable[[], object] | None = None) -> None:
        self.done = threading.Event()  # set when the task has finished, cleanup included
        self._on_done = on_done
        self._task: asyncio.Task[Any] | None = None
        self._outcome: tuple[bool, Any] = (False, None)  # (ok, result or exception)
        self._loop = _BG.loop
        # call_soon_threadsafe is FIFO: the task always exists before a cancel() reaches it.
        self._loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._task = self._loop.create_task(coro)
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self._outcome = (False, None)
        elif task.exception() is not None:
            self._outcome = (False, task.exception())
        else:
            self._outcome = (True, task.result())
        self.done.set()
        if self._on_done is not None:
            self._on_done()

    def result(self) -> Any:
        """The task's result; re-raises its exception (``None`` if it was cancelled)."""
        ok, value = self._outcome
        if not ok and value is not None:
            raise value
        return value

    def cancel(self, timeout: float) -> None:
        """Cancel the task; wait at most ``timeout`` s for its cleanup (a 2nd Ctrl-C skips that)."""
        self._loop.call_soon_threadsafe(self._cancel_task)
        try:
            self.done.wait(timeout)
        except KeyboardInterrupt:
            pass

    def _cancel_task(self) -> None:
        if self._task is not None:
            self._task.cancel()


class _Handoff:
    """The buffer between a stream's task (the producer, on the background loop) and the caller."""

    def __init__(self, make_stream: Callable[[], AsyncIterator[Any]]) -> None:
        self.make_stream = make_stream
        self.buf: collections.deque[Any] = collections.deque()
        self.wake = threading.Event()  # set by the producer when buf gets an item, and at the end
        self.failure: list[BaseException] = []
        self.loop = _BG.loop
        self.shown: asyncio.Future[None] = self.loop.create_future()  # the caller has shown the first batch

    def ack(self) -> None:
        if not self.shown.done():
            self.shown.set_result(None)

    async def pump(self) -> None:
        append, is_set, set_wake = self.buf.append, self.wake.is_set, self.wake.set
        stream = None
        try:
            stream = self.make_stream().__aiter__()
            async for item in stream:  # the first item: handed over alone, at once...
                append(item)
                set_wake()
                break
            else:
                return
            # ...and shown before the rest is parsed: with both threads busy, the GIL
            # would otherwise delay the first text by a switch interval or more.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.shown), FIRST_WAIT)
            async for item in stream:
                append(item)
                if not is_set():
                    set_wake()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - even KeyboardInterrupt: not on this loop
            self.failure.append(exc)  # re-raised in the caller's thread
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def take(self) -> list[Any]:
        """Everything buffered now, in order (the caller's thread)."""
        n = len(self.buf)
        popleft = self.buf.popleft
        return [popleft() for _ in range(n)]

    def shown_first(self) -> None:
        """The caller has shown the first batch: the producer may go on at full speed."""
        if not self.shown.done():
            self.loop.call_soon_threadsafe(self.ack)


def run_stream(
    make_stream: Callable[[], AsyncIterator[T]],
    on_batch: Callable[[list[T]], object],
    *,
    tick: Callable[[], object] | None = None,
    interval: float = 0.05,
    cancel_timeout: float = 1.0,
) -> None:
    """Consume ``make_stream()`` on the background loop, handing its items to ``on_batch`` here.

    The stream runs on the background loop and appends each item to a buffer; this (the
    calling) thread takes everything buffered in one list and calls ``on_batch(items)``,
    in stream order. It wakes at most once per ``interval`` seconds (floored at
    ``MIN_INTERVAL``, so ``interval=0`` cannot busy-spin), except that the first item is
    handed over as soon as it arrives and the end of the stream is seen at once.
    ``tick()``, if given, is called when an ``interval`` passes with no new item.

    An exception raised by the stream is re-raised here, after ``on_batch`` got the items
    before it. On ``KeyboardInterrupt`` here (or any error raised by ``on_batch`` or
    ``tick``) the stream task is cancelled on its loop, its cleanup is awaited for at most
    ``cancel_timeout`` seconds, and the exception propagates.
    """
    __tracebackhide__ = True
    interval = max(float(interval), MIN_INTERVAL)
    handoff = _Handoff(make_stream)
    job = _Job(handoff.pump(), on_done=handoff.wake.set)
    clock = time.monotonic
    next_wake = float("-inf")  # the first item is handed over at once
    try:
        while True:
            gap = next_wake - clock()
            if gap > 0:
                job.done.wait(gap)  # the minimum tick; only the end of the stream cuts it short
            if not handoff.wake.wait(interval if tick is not None else None):
                if tick is not None:
                    tick()
                continue
            handoff.wake.clear()
            finished = job.done.is_set()  # read before taking the items: then all are in buf
            next_wake = clock() + interval
            items = handoff.take()
            if items:
                on_batch(items)
                handoff.shown_first()
            if finished:
                if handoff.failure:
                    raise handoff.failure[0]  # the stream's exception, after its items
                job.result()  # (an error of our own in pump, if any)
                return
    except BaseException:
        if not job.done.is_set():
            job.cancel(cancel_timeout)
        raise


def run_coroutine(make_coro: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
    """Run one coroutine on the background loop and return its result (interruptible)."""
    __tracebackhide__ = True

    async def wrapper() -> tuple[bool, Any]:
        try:
            return True, await make_coro()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - a KeyboardInterrupt would stop the loop
            return False, exc

    job = _Job(wrapper())
    try:
        finished = job.done.wait(timeout)
    except BaseException:
        job.cancel(1.0)
        raise
    if not finished:
        job.cancel(1.0)
        raise TimeoutError(f"no answer within {timeout} s")
    outcome = job.result()
    if outcome is None:  # cancelled on the loop by someone else
        raise asyncio.CancelledError
    ok, value = outcome
    if not ok:
        raise value
    return value


_CLOSERS: list[Callable[[], Awaitable[Any]]] = []


def close_on_exit(aclose: Callable[[], Awaitable[Any]]) -> None:
    """Run ``aclose()`` on the background loop at interpreter exit (e.g. a provider's)."""
    if aclose not in _CLOSERS:
        _CLOSERS.append(aclose)


@atexit.register
def _close_all() -> None:
    """Run the registered ``aclose`` callables (best effort, 2 s each)."""
    if not _CLOSERS or not _BG.running:
        return

    async def call(aclose: Callable[[], Awaitable[Any]]) -> None:
        await aclose()

    for aclose in list(_CLOSERS):
        try:
            _BG.submit(call(aclose)).result(timeout=2)
        except BaseException:  # noqa: BLE001 - best effort at exit
            pass
