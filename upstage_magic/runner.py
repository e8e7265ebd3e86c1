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

The shipped version hands items over in batches: the producer collects each burst (all
the items the provider yields from one network read) in a list and hands the list over
from a ``call_soon`` callback through a deque plus an Event, so the caller's thread does
one wake-up per burst, and the magic joins a burst's text in one ``str.join`` (no Python
work per token). The first item is handed over alone and the producer waits (at most
50 ms) until the caller has shown it, so the first text is not held up behind the GIL.
A view may also say when it will next render (``due``): bursts before that pile up
without waking the caller. Measured with the real provider against the emulator in a
real kernel, provider alone run in the same kernel on this loop over the same warm
connection (benchmarks/bench_magic.py, best of 9): 20 000 tokens at full speed, magic
69 ms vs provider 60 ms (1.16x; with the display calls replaced by no-ops the magic is
within ~5% of the provider: the rest is ipykernel publishing the ~250 KB final answer
and the footer); 2 000 tokens 10 vs 8 ms (the same ~2-3 ms of fixed display cost); paced
at 50 tok/s within 1%; first display ~1-5 ms after the first event leaves the emulator;
a kernel interrupt reaches idle in 35-150 ms.

The task way cannot work for a magic (no ``-o`` value, nbclient sees an empty cell,
interrupt does not reach it); it is the widget's way. Both nest-asyncio flavours and the
worker thread stream and stop within milliseconds; the thread costs ~1.5 us per chunk
more (queue hand-off, per item in that measurement; now per burst).

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
import threading
import time
from typing import Any, AsyncIterator, Awaitable, Callable

__all__ = ["BackgroundLoop", "run_stream", "run_coroutine", "close_on_exit"]

_END = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


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

    def submit(self, coro: Awaitable[Any]) -> concurrent.futures.Future:
        """Schedule ``coro`` on the loop; return a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    @property
    def running(self) -> bool:
        return self._loop is not None and self._thread is not None and self._thread.is_alive()


_BG = BackgroundLoop()


def run_stream(
    make_stream: Callable[[], AsyncIterator[Any]],
    on_item: Callable[[Any], None] | None = None,
    *,
    on_batch: Callable[[list[Any]], None] | None = None,
    tick: Callable[[], Any] | None = None,
    tick_interval: float = 0.05,
    cancel_timeout: float = 1.0,
    max_batch: int = 4096,
    first_wait: float = 0.05,
    due: Callable[[], float | None] | None = None,
) -> None:
    """Consume ``make_stream()`` on the background loop, calling ``on_item`` here.

    ``on_item`` runs in the calling thread, in stream order; or give ``on_batch``, which
    gets lists of consecutive items (the first item alone, then each burst the stream
    yielded without waiting, at most ``max_batch`` items). ``tick`` is called about
    every ``tick_interval`` seconds while no item arrives. ``due()`` may return a
    ``time.monotonic()`` time before which the caller has no use for new items (e.g. its
    next render): until then bursts pile up without waking this thread, and it wakes at
    that time to take them (the end of the stream always wakes it at once). An exception raised by the
    stream is re-raised here (after the items before it). On ``KeyboardInterrupt`` (or
    any error in the callback) the stream task is cancelled on its loop (waiting at most
    ``cancel_timeout``) and the exception propagates.
    """
    __tracebackhide__ = True
    if (on_item is None) == (on_batch is None):
        raise TypeError("run_stream needs exactly one of on_item and on_batch")
    if on_batch is None:
        item_cb = on_item

        def on_batch(batch: list[Any]) -> None:
            for item in batch:
                item_cb(item)  # type: ignore[misc]

    # Batches go through a deque; the event wakes this thread. The producer collects the
    # items of one burst (everything the stream yields before it next waits for the
    # network) in a list and hands the list over from a call_soon callback, so at full
    # speed this thread does one wake-up and one callback per burst, not per item.
    buf: collections.deque[Any] = collections.deque()
    wake = threading.Event()
    loop = _BG.loop

    first_seen = loop.create_future()

    def _ack(fut: asyncio.Future = first_seen) -> None:
        if not fut.done():
            fut.set_result(None)

    async def pump() -> None:
        batch: list[Any] = []
        scheduled = False

        def hand_over() -> None:
            nonlocal batch, scheduled
            scheduled = False
            if batch:
                buf.append(batch)
                batch = []
                if time.monotonic() >= hold_until[0]:
                    wake.set()

        try:
            stream = make_stream().__aiter__()
            try:
                first = await stream.__anext__()
            except StopAsyncIteration:
                buf.append(_END)
                wake.set()
                return
            buf.append([first])  # the first item at once: the first text is shown at once
            wake.set()
            # ...and let the caller's thread show it before parsing the rest of the burst:
            # with both threads busy, the GIL would otherwise delay that by a switch
            # interval or more (up to ``first_wait`` s; the network keeps buffering).
            try:
                await asyncio.wait_for(first_seen, first_wait)
            except asyncio.TimeoutError:
                pass
            async for item in stream:
                batch.append(item)
                if not scheduled:
                    scheduled = True
                    loop.call_soon(hand_over)
                elif len(batch) >= max_batch:
                    hand_over()
        except asyncio.CancelledError:
            buf.append(_END)
            wake.set()
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            hand_over()
            buf.append(_Failure(exc))
        else:
            hand_over()
            buf.append(_END)
        wake.set()

    # The caller's "no items needed before" time (read by the producer; a stale value
    # only means this thread wakes by its own timeout, which never passes that time).
    hold_until = [0.0]
    fut = _BG.submit(pump())
    acked = False
    try:
        while True:
            timeout = tick_interval if tick is not None else None
            if due is not None and acked:
                when = due()
                hold_until[0] = 0.0 if when is None else when
                if when is not None:
                    left = when - time.monotonic()
                    if left > 0 and (timeout is None or left < timeout):
                        timeout = left
            woke = wake.wait(timeout)
            wake.clear()
            if not woke and not buf:
                if tick is not None:
                    tick()
                continue
            while buf:
                batch = buf.popleft()
                if batch is _END:
                    return
                if type(batch) is _Failure:
                    raise batch.exc
                on_batch(batch)
                if acked is False:
                    acked = True
                    loop.call_soon_threadsafe(_ack)
    except BaseException:
        _cancel(fut, cancel_timeout)
        raise


def _cancel(fut: concurrent.futures.Future, timeout: float) -> None:
    """Cancel the stream task and wait briefly for its cleanup (a 2nd Ctrl-C skips it)."""
    fut.cancel()
    try:
        concurrent.futures.wait([fut], timeout=timeout)
    except KeyboardInterrupt:
        pass


def run_coroutine(make_coro: Callable[[], Awaitable[Any]], *, timeout: float | None = None) -> Any:
    """Run one coroutine on the background loop and return its result (interruptible)."""
    __tracebackhide__ = True

    async def wrapper() -> Any:
        return await make_coro()

    fut = _BG.submit(wrapper())
    try:
        return fut.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        _cancel(fut, 1.0)
        raise TimeoutError(f"no answer within {timeout} s") from None
    except BaseException:
        if not fut.done():
            _cancel(fut, 1.0)
        raise


_CLOSERS: list[Callable[[], Awaitable[Any]]] = []


def close_on_exit(aclose: Callable[[], Awaitable[Any]]) -> None:
    """Run ``aclose()`` on the background loop at interpreter exit (e.g. a provider's)."""
    if aclose not in _CLOSERS:
        _CLOSERS.append(aclose)


@atexit.register
def _close_all() -> None:
    if not _CLOSERS or not _BG.running:
        return
    for aclose in list(_CLOSERS):
        try:
            _BG.submit(aclose()).result(timeout=2)
        except BaseException:  # noqa: BLE001 - best effort at exit
            pass
