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

Pacing: at most ``concurrency`` requests in flight (default 8). A 429 closes a shared gate
for everyone until its Retry-After has passed and halves the limit; each success adds
``1/limit`` back (AIMD), up to ``concurrency``. 5xx, connection errors, timeouts and broken
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
import json
import random
import re
import sys
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import settings
from .cache import AnswerCache, cache_key
from .errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    MissingAPIKeyError,
    ModelNotFoundError,
    RateLimitError,
    ServerError,
    StreamError,
    UpstageError,
    redact,
)
from .schema import Schema, SchemaValidationError, parse_json

__all__ = [
    "Batch",
    "BatchDict",
    "BatchError",
    "BatchInterrupted",
    "BatchResult",
    "BatchStats",
    "abatch",
    "batch",
    "fill_template",
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
        parts.append(f"tokens {self.tokens_in:,} in / {self.tokens_out:,} out")
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

_FIELD = re.compile(r"\{(item|index)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[[^\[\]{}]*\])*)\}")
_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([^\[\]{}]*)\]")


def _lookup(value: Any, name: str, bracket: bool, where: str) -> Any:
    """``value[name]`` / ``value.name`` without calling anything."""
    if isinstance(value, dict):
        if name in value:
            return value[name]
        raise KeyError(f"{where}: no {name!r} (has {', '.join(map(str, list(value)[:12]))})")
    if bracket and isinstance(value, (list, tuple)) and name.lstrip("-").isdigit():
        try:
            return value[int(name)]
        except IndexError:
            raise KeyError(f"{where}: index {name} is out of range (length {len(value)})") from None
    if type(value).__module__.startswith("pandas"):  # a Series row: by label
        try:
            return value[name]
        except (KeyError, IndexError, TypeError):
            raise KeyError(f"{where}: no column {name!r}") from None
    if name.startswith("_"):
        raise KeyError(f"{where}: private attribute {name!r} is not allowed in templates")
    if not bracket and hasattr(value, name):
        got = getattr(value, name)
        if callable(got):
            raise KeyError(f"{where}: {name!r} is a method; templates only read values")
        return got
    raise KeyError(f"{where}: {type(value).__name__} has no {name!r}")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def fill_template(template: str, item: Any, index: Any) -> str:
    """Fill ``{item}``, ``{item.a}``, ``{item[k]}``, ``{index}``; other braces stay as written."""

    def sub(m: re.Match[str]) -> str:
        value = item if m.group(1) == "item" else index
        for attr, key in _PART.findall(m.group(2)):
            value = _lookup(value, attr or key.strip("'\""), bool(key), f"{m.group(0)} at index {index!r}")
        return _text(value)

    return _FIELD.sub(sub, template)


# --------------------------------------------------------------------------- pacing


class _Pacer:
    """Concurrency limit with a shared rate-limit gate and AIMD (on the batch's loop)."""

    def __init__(self, limit: int, stats: BatchStats) -> None:
        self.max = limit
        self.limit = float(limit)
        self.active = 0
        self.gate = 0.0  # loop time before which nobody sends
        self.no_cut_until = 0.0
        self.waiters: list[asyncio.Future[None]] = []
        self.stats = stats
        stats.concurrency = limit

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self.gate > now:
                await asyncio.sleep(self.gate - now)
                continue
            if self.active < int(self.limit):
                self.active += 1
                self.stats.in_flight = self.active
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
        for fut in self.waiters[: max(1, int(self.limit) - self.active)]:
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


def _backoff(attempt: int) -> float:
    """Exponential backoff with +-25 % jitter for retry ``attempt`` (1-based)."""
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1)) * (0.75 + 0.5 * random.random())


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

    ``stats`` is live while it runs; ``results`` (input order) after. Keyword arguments as
    for :func:`batch`; ``on_progress(stats)`` is called on the loop every ``progress_interval``
    seconds and once at the end. ``provider`` replaces the Upstage provider (anything with
    ``create_async_generator(model, messages, **options)``; tests use it).
    """

    def __init__(
        self,
        template: str,
        items: Any,
        *,
        model: str | None = None,
        system: str | None = None,
        concurrency: int | None = None,
        schema: Any = None,
        format: str = "text",
        cache: bool | str | AnswerCache = True,
        fail_fast: bool = False,
        retries: int = DEFAULT_RETRIES,
        on_progress: Callable[[BatchStats], Any] | None = None,
        progress_interval: float = PROGRESS_INTERVAL,
        provider: Any = None,
        **options: Any,
    ) -> None:
        if not isinstance(template, str) or not template.strip():
            raise TypeError("template must be a non-empty string such as 'Summarise: {item}'")
        if format not in _FORMATS:
            raise ValueError(f"format must be one of {', '.join(_FORMATS)} (schema= implies json), not {format!r}")
        if concurrency is not None and (not isinstance(concurrency, int) or isinstance(concurrency, bool)
                                        or concurrency < 1):
            raise ValueError("concurrency must be a positive integer, e.g. concurrency=8")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError("retries must be a non-negative integer")
        for secret_free in ("stream", "max_retries"):
            options.pop(secret_free, None)
        self.template = template
        self.kind, self.indexes, self.elements = _entries(items)
        self.model = model or settings.get_default_model()
        self.system = system
        self.concurrency = concurrency or DEFAULT_CONCURRENCY
        self.schema = Schema.of(schema) if schema is not None else None
        self.format = "json" if self.schema is not None else format
        self.fail_fast = fail_fast
        self.retries = retries
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.options = options
        if self.schema is not None:
            options["response_format"] = self.schema.response_format
        elif self.format == "json" and "response_format" not in options:
            options["response_format"] = {"type": "json_object"}
        if isinstance(cache, AnswerCache):
            self.cache: AnswerCache | None = cache
        elif cache is True:
            self.cache = AnswerCache()
        elif cache:
            self.cache = AnswerCache(cache)
        else:
            self.cache = None
        self._provider = provider
        self.stats = BatchStats(total=len(self.elements), caching=self.cache is not None,
                                concurrency=self.concurrency)
        self.results: list[Any] = [None] * len(self.elements)
        self.errors: list[BatchError] = []

    # ------------------------------------------------------------------ requests

    def messages(self, i: int) -> list[dict[str, Any]]:
        """The chat messages for item ``i``."""
        prompt = fill_template(self.template, self.elements[i], self.indexes[i])
        system = self.system
        if self.format == "json" and "json" not in (prompt + " " + (system or "")).lower():
            # JSON mode needs the word "JSON" in the conversation (the API answers 400 otherwise).
            system = ((system or "").rstrip() + "\n\nReply with JSON only.").strip()
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        return messages

    def _key(self, messages: list[dict[str, Any]]) -> str:
        return cache_key(self.model, messages, self.options,
                         base_url=self.options.get("base_url") or settings.get_base_url())

    def _value(self, text: str) -> Any:
        """An answer's result value (raises SchemaValidationError for bad JSON)."""
        if self.schema is not None:
            return self.schema.parse(text)
        if self.format == "json":
            return parse_json(text)
        return text

    async def _ask(self, messages: list[dict[str, Any]]) -> tuple[str, int, int]:
        """One request without retries: (text, prompt tokens, completion tokens)."""
        from .events import Usage

        provider = self._provider
        if provider is None:
            from .providers import Upstage

            provider = Upstage
        parts: list[str] = []
        usage: Usage | None = None
        self.stats.requests += 1
        async for chunk in provider.create_async_generator(
            self.model, messages, stream=False, max_retries=0, **self.options
        ):
            if isinstance(chunk, str):
                parts.append(chunk)
            elif isinstance(chunk, Usage):
                usage = chunk
        return "".join(parts), (usage.prompt_tokens if usage else 0), (usage.completion_tokens if usage else 0)

    # ------------------------------------------------------------------ running

    def _fail(self, i: int, exc: BaseException, attempts: int) -> None:
        err = BatchError(self.indexes[i], type(exc).__name__, redact(str(exc)), attempts)
        self.results[i] = err
        self.errors.append(err)
        self.stats.failed += 1
        self.stats.done += 1
        if len(self.stats.first_errors) < 10:
            self.stats.first_errors.append(err)
        if self.fail_fast:
            raise exc

    async def _item(self, i: int, pacer: _Pacer) -> None:
        messages = self.messages(i)
        key = self._key(messages) if self.cache is not None else ""
        attempts = limited = 0
        while True:
            await pacer.acquire()
            try:
                text, p_tok, c_tok = await self._ask(messages)
                value = self._value(text)
            except RateLimitError as exc:
                pacer.release()
                limited += 1
                self.stats.rate_limited += 1
                wait = exc.retry_after if exc.retry_after is not None else _backoff(min(limited, 5))
                if wait > MAX_RETRY_AFTER or limited > MAX_RATE_LIMIT_RETRIES:
                    self._fail(i, exc, attempts + limited)
                    return
                self.stats.retries += 1
                pacer.rate_limited(wait)
                continue
            except _FATAL:
                pacer.release()
                raise
            except _RETRYABLE as exc:
                pacer.release()
                attempts += 1
                if attempts > self.retries:
                    self._fail(i, exc, attempts + limited)
                    return
                self.stats.retries += 1
                await asyncio.sleep(_backoff(attempts))
                continue
            except (UpstageError, SchemaValidationError) as exc:
                pacer.release()
                self._fail(i, exc, attempts + limited + 1)
                return
            except BaseException:
                pacer.release()
                raise
            pacer.release()
            pacer.success()
            break
        if self.cache is not None:
            self.cache.put(key, text, prompt_tokens=p_tok, completion_tokens=c_tok, model=self.model)
        self.results[i] = value
        self.stats.tokens_in += p_tok
        self.stats.tokens_out += c_tok
        self.stats.done += 1

    def _from_cache(self) -> list[int]:
        """Fill results from the cache; return the indexes still to ask."""
        n = len(self.elements)
        if self.cache is None:
            return list(range(n))
        todo: list[int] = []
        for start in range(0, n, 1000):
            chunk = range(start, min(n, start + 1000))
            keys = [self._key(self.messages(i)) for i in chunk]
            found = self.cache.get_many(keys)
            for i, key in zip(chunk, keys, strict=False):
                hit = found.get(key)
                if hit is None:
                    todo.append(i)
                    continue
                try:
                    self.results[i] = self._value(hit.text)
                except SchemaValidationError:
                    todo.append(i)  # e.g. a schema tightened since: ask again
                    continue
                self.stats.cached += 1
                self.stats.done += 1
                self.stats.tokens_in += hit.prompt_tokens
                self.stats.tokens_out += hit.completion_tokens
        return todo

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
            pacer = _Pacer(self.concurrency, self.stats)

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

            if self.schema is not None and self.schema.fields:
                rows = [_row(v, self.schema.fields) for v in self.results]
                out: Any = pd.DataFrame(rows, index=items.index, columns=self.schema.fields)
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


async def abatch(template: str, items: Any, **kwargs: Any) -> Any:
    """Async :func:`batch` for code already on an event loop (widgets, ``await`` in a cell).

    Same arguments as :func:`batch` except ``progress``; ``on_progress(stats)`` gets live
    :class:`BatchStats`. A cancellation stops every request and propagates.
    """
    kwargs.pop("progress", None)  # the sync API's display switch; use on_progress here
    job = Batch(template, items, **kwargs)
    await job.run()
    return job.shaped(items)


def batch(
    template: str,
    items: Any,
    *,
    model: str | None = None,
    system: str | None = None,
    concurrency: int | None = None,
    schema: Any = None,
    format: str = "text",
    cache: bool | str | AnswerCache = True,
    fail_fast: bool = False,
    progress: bool = True,
    **options: Any,
) -> Any:
    """Ask ``template`` about every item; return the answers in input order.

    Args:
        template: the prompt, with ``{item}``, ``{item.col}``, ``{item[key]}``, ``{index}``.
        items: a list (or other iterable), dict, pandas Series or DataFrame.
        model: model name (default: ``UPSTAGE_MODEL`` or the package default).
        system: an optional system message for every item.
        concurrency: most requests in flight (default 8); lowered on 429s, raised again.
        schema: a JSON-schema dict or Pydantic model class: validated results (implies JSON).
        format: ``"text"`` (str answers) or ``"json"`` (parsed JSON).
        cache: ``True`` (default location), ``False``, a file path or an ``AnswerCache``.
        fail_fast: raise the first failure instead of recording it and going on.
        progress: show a progress display (widget in a notebook, a line on stderr elsewhere).
        **options: request options (``temperature``, ``max_tokens``, ``api_key``,
            ``base_url``, ``reasoning_effort``, ...) and ``retries`` (per-item retries of
            5xx/connection errors, default 3).

    Returns:
        See the module docstring: a list/dict with ``.errors`` and ``.stats``, or an aligned
        pandas Series/DataFrame with ``.attrs["errors"]``.

    Raises:
        BatchInterrupted: on interrupt (a ``KeyboardInterrupt``; nothing is returned, every
            finished answer is cached). The first item's error with ``fail_fast=True``;
            ``AuthenticationError`` / ``ModelNotFoundError`` / ``MissingAPIKeyError`` at once.
    """
    from .runner import run_coroutine

    model, options = _with_settings(model, options)
    view = None
    if progress:
        from .progress import make_progress

        view = make_progress()
    job = Batch(template, items, model=model, system=system, concurrency=concurrency, schema=schema,
                format=format, cache=cache, fail_fast=fail_fast,
                on_progress=view.update if view is not None else None, **options)
    if view is not None:
        view.start(job.stats)
    try:
        run_coroutine(job.run)
    except KeyboardInterrupt:
        if view is not None:
            view.finish(job.stats, interrupted=True)
        raise BatchInterrupted(job.stats) from None
    except BaseException:
        if view is not None:
            view.finish(job.stats, interrupted=True)
        raise
    if view is not None:
        view.finish(job.stats)
    return job.shaped(items)


def _with_settings(model: str | None, options: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The kernel's settings (``%config UpstageMagics.*``) under the call's own options.

    Only what shapes the request is taken (model, base URL, sampling, reasoning, timeout);
    a batch never streams, so ``stream`` is left out.
    """
    from .config import default_settings

    settings = default_settings()
    merged = settings.request_options()
    merged.pop("stream", None)
    merged.update(options)
    return model or settings.model or None, merged


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
            value = _lookup(value, attr, False, f"{what} {name!r}")
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
    return value


def map_cell(
    template: str,
    items: str,
    namespace: dict[str, Any],
    *,
    out: str | None = None,
    schema: str | None = None,
    **kwargs: Any,
) -> Any:
    """What ``%%upstage --map NAME [-o OUT] [--schema S] [...]`` calls.

    ``template`` is the cell body, ``items`` the name after ``--map`` (``df`` or
    ``df.text``), ``schema`` the name of a schema dict / Pydantic class, both looked up in
    ``namespace`` (the user's). Other keyword arguments go to :func:`batch` (``model``,
    ``system``, ``format``, ``cache``, ``fail_fast``, ``concurrency``, request options).
    The result is stored as ``namespace[out]`` when ``out`` is given, and returned.
    Raises ``ValueError``/``TypeError`` for bad names or arguments (show them as usage
    errors), :class:`BatchInterrupted` on interrupt (re-raise it: queued cells stop) and
    ``UpstageError`` for a bad key or model.
    """
    if out is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", out):
        raise ValueError(f"-o {out!r}: give a variable name to store the answers in")
    data = _from_namespace(items, namespace, "--map")
    schema_value = _from_namespace(schema, namespace, "--schema") if schema else None
    result = batch(template, data, schema=schema_value, **kwargs)
    if out is not None:
        namespace[out] = result
    return result


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`batch`.

    ``from upstage_magic import batch`` must give something to call, but once this
    submodule is imported Python sets the package's ``batch`` attribute to the module
    itself; calling the module calls the function, so both spellings work.
    """

    def __call__(self, template: str, items: Any, **kwargs: Any) -> Any:
        return batch(template, items, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
