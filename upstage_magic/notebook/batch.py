"""One prompt over many items: paced, cached, resumable batch answers.

::

    from upstage_magic import batch
    labels = batch("Label the sentiment of: {item}", reviews)            # list -> list of str
    df["label"] = batch("Sentiment of {item.text}?", df)                   # DataFrame -> Series
    out = batch("Extract from {item}", docs, schema=Invoice)               # Pydantic objects
    out = await abatch(...)                                                # same, on a running loop

Template fields (a small safe formatter: lookups only, never calls or eval): ``{item}`` the
element, ``{item.name}`` / ``{item[key]}`` a field of it (a DataFrame row's column, a dict's
key, an object's public attribute, a sequence's ``[0]``), ``{index}`` its list position,
dict key or pandas index label. Any other brace is left as written (JSON examples are safe).

Results come back in input order: ``str`` answers for ``format="text"``, parsed JSON for
``format="json"``, validated dicts / model instances with ``schema=``. The return value is:

- list (or other iterable) in -> :class:`BatchResult`, a ``list`` with ``.errors`` and ``.stats``;
- dict in -> :class:`BatchDict`, a ``dict`` with the same keys plus ``.errors`` and ``.stats``;
- pandas Series/DataFrame in -> a Series aligned to its index (named ``answer``), or with
  ``schema`` a DataFrame with one column per schema field; ``result.attrs["errors"]`` and
  ``result.attrs["stats"]`` hold the rest (pandas is imported only when given one).

A failed item does not stop the batch: its result is a :class:`BatchError` (falsy; in a
schema DataFrame the row's columns are None) and ``errors`` lists them. ``fail_fast=True``
raises the first failure instead. A bad key, unknown model or missing key stops the batch
at once (every item would fail the same way).

Pacing: at most ``concurrency`` requests in flight (default 8), paced from the server's
``x-ratelimit-*-requests`` headers (remaining, reset, and the rate learned from them; see
:mod:`.pacing`) so that few requests are answered 429. A 429 closes a shared gate for
everyone until its Retry-After has passed and halves the limit; each success adds
``1/limit`` back (AIMD), up to ``concurrency``: all that is left for a server that sends no
such headers (or with ``pacing="aimd"``). 5xx, connection errors, timeouts and broken
streams are retried per item with exponential backoff (``retries`` times, default 3).
The provider's own retries are off (``max_retries=0``): this module owns them.

Cache: every answer is stored on disk as it arrives (see :mod:`upstage_magic.cache`), so a
re-run sends only what is missing. ``cache=False`` turns it off; ``cache="path/to/file"``
or an :class:`~upstage_magic.cache.AnswerCache` chooses the file.

Interrupt: in the synchronous :func:`batch`, Ctrl-C / the kernel's interrupt cancels every
request within a second, returns nothing and raises :class:`BatchInterrupted` saying how
many answers are done and cached. In :func:`abatch` a cancellation does the same (the
CancelledError propagates; ``Batch.stats`` tells the counts).
"""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..cache import AnswerCache
from ..errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    MissingAPIKeyError,
    ModelNotFoundError,
    RateLimitError,
    ServerError,
    StreamError,
    UpstageError,
    backoff,
    is_validation_error,
)
from ..formats import final_for
from ..placeholders import read_field
from ..request import Ask, Request, RequestError, plan
from ..schema import SchemaValidationError
from ..secrets import cut
from ..session import Exchange
from .pacing import AimdPacer, HeaderPacer

__all__ = [
    "Batch",
    "BatchDict",
    "BatchError",
    "BatchInterrupted",
    "BatchResult",
    "BatchStats",
    "abatch",
    "batch",
    "map_cell",
]

DEFAULT_CONCURRENCY = 8
DEFAULT_RETRIES = 3
MAX_RATE_LIMIT_RETRIES = 1000  # per item: a storm may refuse an item many times; not forever
MAX_RETRY_AFTER = 300.0  # a longer Retry-After (e.g. a daily quota) fails the item instead of waiting
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
PROGRESS_INTERVAL = 0.2
_FORMATS = ("text", "json")
_RETRYABLE = (ServerError, APIConnectionError, APITimeoutError, StreamError)
_FATAL = (AuthenticationError, MissingAPIKeyError, ModelNotFoundError)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class BatchError:
    """The result of an item that failed: falsy, with the error's kind and message (no key)."""

    index: Any
    kind: str
    message: str
    attempts: int = 1

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class BatchInterrupted(KeyboardInterrupt):
    """The batch was interrupted; ``stats`` says how much is done (and cached)."""

    def __init__(self, stats: BatchStats) -> None:
        self.stats = stats
        cached = " and cached" if stats.caching else ""
        resume = "; run it again to resume" if stats.caching else ""
        super().__init__(
            f"Batch stopped: {stats.done} of {stats.total} answers done{cached}{resume}."
        )


@dataclass
class BatchStats:
    """Live counters of a batch (read by progress views; written on the batch's loop)."""

    total: int = 0
    done: int = 0  # finished items (answered, from the cache, or failed)
    cached: int = 0  # of those, taken from the cache
    failed: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 answers received
    requests: int = 0  # requests sent
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_estimated: bool = False  # some counts are the client's estimates (a server that sent no usage)
    concurrency: int = 0  # the current limit
    in_flight: int = 0
    caching: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    waiting_until: float = 0.0  # monotonic time the rate-limit gate opens (0: open)
    first_errors: list[BatchError] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Items answered by the API per second (cache hits excluded)."""
        sent = self.done - self.cached
        return sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None when unknown)."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        rate = self.rate
        return left / rate if rate > 0 else None

    def tokens_text(self) -> str:
        """``"tokens 1,200 in / 300 out"``; ``~`` on both when some counts are estimates."""
        t = "~" if self.tokens_estimated else ""
        return f"tokens {t}{self.tokens_in:,} in / {t}{self.tokens_out:,} out"

    def summary(self) -> str:
        """One line: counts, time, rate, tokens, retries."""
        parts = [f"{self.done - self.failed}/{self.total} answered"]
        if self.cached:
            parts.append(f"{self.cached} from cache")
        if self.failed:
            parts.append(f"{self.failed} failed")
        parts.append(f"{self.elapsed:.1f} s")
        if self.done - self.cached:
            parts.append(f"{self.rate:.1f}/s")
        parts.append(self.tokens_text())
        if self.retries:
            parts.append(f"{self.retries} retries ({self.rate_limited} rate-limited)")
        return " · ".join(parts)


class BatchResult(list):
    """The answers in input order (a list) plus ``errors`` and ``stats``."""

    errors: list[BatchError]
    stats: BatchStats


class BatchDict(dict):
    """The answers by the input dict's keys (a dict) plus ``errors`` and ``stats``."""

    errors: list[BatchError]
    stats: BatchStats


# --------------------------------------------------------------------------- templates

# --------------------------------------------------------------------------- pacing


_Pacer = AimdPacer  # the AIMD fallback; HeaderPacer paces from x-ratelimit-* headers (see pacing)


# --------------------------------------------------------------------------- items


def _is_pandas(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "pandas"


def _entries(items: Any) -> tuple[str, list[Any], list[Any]]:
    """``(kind, indexes, elements)`` for list/dict/Series/DataFrame/iterable input."""
    if _is_pandas(items):
        name = type(items).__name__
        if name == "DataFrame":
            rows = items.to_dict("records")
            return "dataframe", list(items.index), rows
        if name == "Series":
            return "series", list(items.index), items.tolist()
        raise TypeError(f"items: a pandas {name} is not supported; pass a DataFrame, a Series or a list")
    if isinstance(items, (str, bytes)):
        raise TypeError("items must be a list (or dict, Series, DataFrame) of things to ask about, not one "
                        "string; wrap it in a list: batch(template, [text])")
    if isinstance(items, dict):
        return "dict", list(items.keys()), list(items.values())
    if isinstance(items, Iterable):
        elements = list(items)
        return "list", list(range(len(elements))), elements
    raise TypeError(f"items must be a list, dict, pandas Series or DataFrame, not {type(items).__name__}")


# --------------------------------------------------------------------------- the batch


class Batch:
    """One batch run: build it, then ``await run()`` (or use :func:`abatch` / :func:`batch`).

    ``template`` is the prompt (or an :class:`~upstage_magic.request.Ask` whose prompt it
    is); one :func:`~upstage_magic.request.plan` decides the request and each item fills its
    ``{item}``/``{index}``. ``stats`` is live while it runs; ``results`` (input order) after.
    Keyword arguments as for :func:`batch`; ``on_progress(stats)`` is called on the loop
    every ``progress_interval`` seconds and once at the end. ``provider`` replaces the
    Upstage provider; ``settings`` the kernel's settings.
    """

    def __init__(self, template: str | Ask, items: Any, *, model: str | None = None, system: str | None = None,
                 concurrency: int | None = None, schema: Any = None, format: str = "text",
                 cache: bool | str | AnswerCache = True, fail_fast: bool = False, retries: int = DEFAULT_RETRIES,
                 on_progress: Callable[[BatchStats], Any] | None = None, progress_interval: float = PROGRESS_INTERVAL,
                 provider: Any = None, settings: Any = None, fresh: bool = False, pacing: str = "headers",
                 **options: Any) -> None:
        if concurrency is not None and (not isinstance(concurrency, int) or isinstance(concurrency, bool)
                                        or concurrency < 1):
            raise ValueError("concurrency must be a positive integer, e.g. concurrency=8")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError("retries must be a non-negative integer")
        self.kind, self.indexes, self.elements = _entries(items)
        if provider is None:
            from ..providers import Upstage  # noqa: PLC0415

            provider = Upstage
        self._provider = provider
        self.request = replace(_plan(template, settings, provider, model=model, system=system, schema=schema,
                                     format=format, options=options), replay="off")  # our own cache replays
        self.fresh = fresh
        if pacing not in ("headers", "aimd"):
            raise ValueError('pacing must be "headers" (the server\'s x-ratelimit-* headers, then AIMD) or "aimd"')
        self.pacing = pacing
        self.model = self.request.model
        self.key_of = self.request.cache_keys()  # an item's cache key from its messages (the rest is shared)
        self.concurrency = concurrency or DEFAULT_CONCURRENCY
        self.fail_fast = fail_fast
        self.retries = retries
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.cache: AnswerCache | None = cache if isinstance(cache, AnswerCache) else \
            AnswerCache() if cache is True else AnswerCache(cache) if cache else None
        self.stats = BatchStats(total=len(self.elements), caching=self.cache is not None,
                                concurrency=self.concurrency)
        self.results: list[Any] = [None] * len(self.elements)
        self.errors: list[BatchError] = []

    # ------------------------------------------------------------------ requests

    def item_request(self, i: int) -> Request:
        """The request for item ``i`` (``KeyError`` when the item lacks a template field)."""
        return self.request.for_item(self.elements[i], self.indexes[i])

    def _value(self, text: str) -> Any:
        """An answer's result value (raises SchemaValidationError for bad JSON)."""
        if self.request.format != "json":
            return text
        final = final_for("json", text, schema=self.request.schema)
        if final.problem:
            raise SchemaValidationError(final.problem, text=text)
        return final.value

    async def _ask(self, request: Request) -> tuple[str, int, int, bool]:
        """One answer without retries: (masked text, prompt tokens, completion tokens, estimated)."""
        self.stats.requests += 1
        exchange = Exchange(request)
        async for _ in exchange.stream(self._provider):
            pass
        usage = exchange.usage
        return (exchange.text, (usage.prompt_tokens if usage else 0), (usage.completion_tokens if usage else 0),
                bool(usage is not None and usage.estimated))

    # ------------------------------------------------------------------ running

    def _fail(self, i: int, exc: BaseException, attempts: int) -> None:
        err = BatchError(self.indexes[i], type(exc).__name__, cut(exc, 1000), attempts)
        self.results[i] = err
        self.errors.append(err)
        self.stats.failed += 1
        self.stats.done += 1
        if len(self.stats.first_errors) < 10:
            self.stats.first_errors.append(err)
        if self.fail_fast:
            raise exc

    async def _attempt(self, i: int, request: Request, pacer: _Pacer,
                       tries: list[int]) -> tuple[str, int, int, bool] | None:
        """One try at item ``i``: its answer, or None to try again (after waiting); fails the item when done."""
        attempts, limited = tries
        await pacer.acquire()
        try:
            text, p_tok, c_tok, estimated = await self._ask(request)
            value = self._value(text)
        except RateLimitError as exc:
            pacer.release(refused=True)
            tries[1] += 1
            self.stats.rate_limited += 1
            wait = exc.retry_after if exc.retry_after is not None else backoff(min(limited + 1, 5))
            if wait > MAX_RETRY_AFTER or limited + 1 > MAX_RATE_LIMIT_RETRIES:
                self._fail(i, exc, attempts + limited + 1)
                return None
            self.stats.retries += 1
            pacer.rate_limited(wait)
            raise _Again from None
        except _FATAL:
            pacer.release()
            raise
        except _RETRYABLE as exc:
            pacer.release()
            tries[0] += 1
            if attempts + 1 > self.retries or is_validation_error(exc):  # a refused request fails again
                self._fail(i, exc, attempts + 1 + limited)
                return None
            self.stats.retries += 1
            await asyncio.sleep(backoff(attempts + 1))
            raise _Again from None
        except (UpstageError, SchemaValidationError) as exc:
            pacer.release()
            self._fail(i, exc, attempts + limited + 1)
            return None
        except BaseException:
            pacer.release()
            raise
        pacer.release()
        pacer.success()
        self.results[i] = value
        return text, p_tok, c_tok, estimated

    async def _item(self, i: int, pacer: _Pacer) -> None:
        try:
            request = self.item_request(i)
        except KeyError as exc:  # the row lacks a template field: this item fails, the rest go on
            self._fail(i, RequestError(str(exc.args[0])), 0)
            return
        tries = [0, 0]  # attempts (5xx, connection), rate-limited
        while True:
            try:
                answer = await self._attempt(i, request, pacer, tries)
            except _Again:
                continue
            break
        if answer is None:
            return
        text, p_tok, c_tok, estimated = answer
        if self.cache is not None:
            self.cache.put(self.key_of(request.messages), text, prompt_tokens=p_tok, completion_tokens=c_tok,
                           model=self.model, estimated=estimated)
        self.stats.tokens_in += p_tok
        self.stats.tokens_out += c_tok
        self.stats.tokens_estimated |= estimated
        self.stats.done += 1

    def _from_cache(self) -> list[int]:
        """Fill results from the cache; return the indexes still to ask."""
        n = len(self.elements)
        if self.cache is None or self.fresh:
            return list(range(n))
        todo: list[int] = []
        key_of = self.key_of
        for start in range(0, n, 1000):
            keys: dict[int, str] = {}
            for i in range(start, min(n, start + 1000)):
                try:
                    keys[i] = key_of(self.item_request(i).messages)
                except KeyError:
                    todo.append(i)  # fails when asked, with the field it lacks
            found = self.cache.get_many(list(keys.values()))
            for i, key in keys.items():
                hit = found.get(key)
                if hit is None:
                    todo.append(i)
                    continue
                try:
                    self.results[i] = self._value(hit.text)
                except SchemaValidationError:  # a schema tightened since: ask again
                    todo.append(i)
                    continue
                self.stats.cached += 1
                self.stats.done += 1
                self.stats.tokens_in += hit.prompt_tokens
                self.stats.tokens_out += hit.completion_tokens
                self.stats.tokens_estimated |= hit.estimated
        return sorted(todo)

    def _pacer(self) -> AimdPacer:
        """Header pacing for this batch's host (AIMD alone with ``pacing="aimd"`` or without headers)."""
        if self.pacing == "aimd":
            return AimdPacer(self.concurrency, self.stats)
        from ..settings import get_base_url  # noqa: PLC0415

        url = self.request.options.get("base_url") or get_base_url()
        return HeaderPacer(self.concurrency, self.stats, url)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            self._report()

    def _report(self) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(self.stats)
            except Exception:  # noqa: BLE001 - a broken view must not stop the batch
                self.on_progress = None

    async def run(self) -> list[Any]:
        """Answer every item; returns the results in input order (also in ``results``)."""
        self.stats.started = time.monotonic()
        ticker = asyncio.ensure_future(self._ticker()) if self.on_progress is not None else None
        try:
            todo = iter(self._from_cache())
            self._report()
            pacer = self._pacer()

            async def worker() -> None:
                for i in todo:
                    await self._item(i, pacer)

            workers = [asyncio.ensure_future(worker()) for _ in range(self.concurrency)]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
        finally:
            self.stats.finished = time.monotonic()
            self.stats.in_flight = 0
            if ticker is not None:
                ticker.cancel()
            self._report()
        return self.results

    # ------------------------------------------------------------------ shaping

    def shaped(self, items: Any) -> Any:
        """The results in the input's shape (see the module docstring)."""
        errors = [r for r in self.results if isinstance(r, BatchError)]  # in input order
        if self.kind in ("series", "dataframe"):
            import pandas as pd  # type: ignore[import-untyped,unused-ignore]

            if self.request.schema is not None and self.request.schema.fields:
                rows = [_row(v, self.request.schema.fields) for v in self.results]
                out: Any = pd.DataFrame(rows, index=items.index, columns=self.request.schema.fields)
            else:
                out = pd.Series(self.results, index=items.index, name="answer", dtype=object)
            out.attrs["errors"] = errors
            out.attrs["stats"] = self.stats
            return out
        if self.kind == "dict":
            result: Any = BatchDict(zip(self.indexes, self.results, strict=False))
        else:
            result = BatchResult(self.results)
        result.errors = errors
        result.stats = self.stats
        return result


def _row(value: Any, fields: list[str]) -> dict[str, Any]:
    """A schema result as a row dict (None for every field of a failed item)."""
    if isinstance(value, BatchError) or value is None:
        return dict.fromkeys(fields)
    if isinstance(value, dict):
        return {f: value.get(f) for f in fields}
    return {f: getattr(value, f, None) for f in fields}


class _Again(Exception):
    """Internal: try the item again (after a rate limit or a retryable failure)."""


def _plan(template: str | Ask, settings: Any, provider: Any, *, model: str | None, system: str | None,
          schema: Any, format: str, options: dict[str, Any]) -> Request:
    """The batch's one request plan (``{item}`` and ``{index}`` still in its prompt)."""
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {', '.join(_FORMATS)} (schema= implies json), not {format!r}")
    if isinstance(template, Ask):
        ask = template
    else:
        if not isinstance(template, str) or not template.strip():
            raise TypeError("template must be a non-empty string such as 'Summarise: {item}'")
        fields = {k: options.pop(k) for k in ("temperature", "top_p", "max_tokens", "reasoning_effort", "base_url")
                  if k in options}
        ask = Ask(prompt=template, model=model, system=system, schema=schema, history=False,
                  format="json" if schema is not None else format, **fields)
    options.pop("stream", None)
    ask = replace(ask, stream=False, extra={**ask.extra, **options, "max_retries": 0})  # retries are ours
    if settings is None:
        from ..settings import default_settings  # noqa: PLC0415

        settings = default_settings()
    try:
        return plan(settings, ask, provider=provider)
    except RequestError as exc:
        raise ValueError(str(exc)) from None


async def abatch(template: str, items: Any, **kwargs: Any) -> Any:
    """Async :func:`batch` for code already on an event loop (widgets, ``await`` in a cell).

    Same arguments as :func:`batch` except ``progress``; ``on_progress(stats)`` gets live
    :class:`BatchStats`. A cancellation stops every request and propagates.
    """
    kwargs.pop("progress", None)  # the sync API's display switch; use on_progress here
    job = Batch(template, items, **kwargs)
    await job.run()
    return job.shaped(items)


def batch(template: str | Ask, items: Any, *, progress: bool = True, **kwargs: Any) -> Any:
    """Ask ``template`` about every item; return the answers in input order.

    Args:
        template: the prompt, with ``{item}``, ``{item.col}``, ``{item[key]}``, ``{index}``.
        items: a list (or other iterable), dict, pandas Series or DataFrame.
        progress: show a progress display (widget in a notebook, a line on stderr elsewhere).
        model: model name (default: ``%config UpstageMagics.model``, ``UPSTAGE_MODEL`` or the
            package default). system: a system message for every item.
        concurrency: most requests in flight (default 8); lowered on 429s, raised again.
        schema: a JSON-schema dict or Pydantic model class: validated results (implies JSON).
        format: ``"text"`` (str answers) or ``"json"`` (parsed JSON).
        cache: ``True`` (default location), ``False``, a file path or an ``AnswerCache``.
        fail_fast: raise the first failure instead of recording it and going on.
        retries: per-item retries of 5xx/connection errors (default 3).
        **options: request options (``temperature``, ``max_tokens``, ``api_key``, ``base_url``,
            ``reasoning_effort``, ...), on top of the kernel's settings.

    Returns:
        See the module docstring: a list/dict with ``.errors`` and ``.stats``, or an aligned
        pandas Series/DataFrame with ``.attrs["errors"]``.

    Raises:
        BatchInterrupted: on interrupt (a ``KeyboardInterrupt``; nothing is returned, every
            finished answer is cached). The first item's error with ``fail_fast=True``;
            ``AuthenticationError`` / ``ModelNotFoundError`` / ``MissingAPIKeyError`` at once.
    """
    from .runner import run_coroutine  # noqa: PLC0415

    view = None
    if progress:
        from .progress import make_progress  # noqa: PLC0415

        view = make_progress()
    job = Batch(template, items, on_progress=view.update if view is not None else None, **kwargs)
    if view is not None:
        view.start(job.stats)
    try:
        run_coroutine(job.run)
    except BaseException as exc:
        if view is not None:
            view.finish(job.stats, interrupted=True)
        if isinstance(exc, KeyboardInterrupt):
            raise BatchInterrupted(job.stats) from None
        raise
    if view is not None:
        view.finish(job.stats)
    return job.shaped(items)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _from_namespace(name: str, namespace: dict[str, Any], what: str) -> Any:
    """``name`` or ``name.attr`` looked up in the user's namespace (no calls, no eval)."""
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r}: give a variable name such as reviews or df.text")
    head, *rest = name.split(".")
    if head not in namespace:
        raise ValueError(f"{what} {name!r}: no variable {head!r} in the notebook; define it first")
    value = namespace[head]
    for attr in rest:
        try:
            value = read_field(value, attr, False, f"{what} {name!r}")
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
    return value


def map_cell(template: str | Ask, items: str, namespace: dict[str, Any], *, out: str | None = None,
             schema: str | None = None, show: bool = True, **kwargs: Any) -> Any:
    """What ``%%upstage --map NAME [-o OUT] [--schema S] [...]`` calls.

    ``template`` is the cell body (or the cell's :class:`~upstage_magic.request.Ask`),
    ``items`` the name after ``--map`` (``df`` or ``df.text``) and ``schema`` the name of a
    schema dict / Pydantic class, both looked up in ``namespace``. Other keyword arguments go
    to :func:`batch`. The result is stored as ``namespace[out]`` when ``out`` is given, and
    returned only when ``show`` (with ``-o`` the cell shows the progress, not every row).
    Raises ``ValueError``/``TypeError`` for bad names or arguments, :class:`BatchInterrupted`
    on interrupt and ``UpstageError`` for a bad key or model.
    """
    if out is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", out):
        raise ValueError(f"-o {out!r}: give a variable name to store the answers in")
    data = _from_namespace(items, namespace, "--map")
    if schema is not None:
        kwargs["schema"] = _from_namespace(schema, namespace, "--schema")
    result = batch(template, data, **kwargs)
    if out is not None:
        namespace[out] = result
    return result if show else None
