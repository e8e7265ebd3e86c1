"""The one fake model of the test suite (like simonw/llm's enqueue-style mock model).

``FakeProvider().enqueue("Hel", "lo", Usage(...))`` queues one answer: its stream items in
order; an exception instance among them is raised at that point, ``Pause(s)`` sleeps.
``calls`` records what each request sent. ``answer(session_or_none, prompt, *items)`` runs
one whole exchange through it and returns the exchange. No HTTP anywhere.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from upstage_magic.request import Ask, Request, plan
from upstage_magic.session import ChatSession, Exchange
from upstage_magic.settings import Settings


@dataclass(frozen=True)
class Pause:
    """Sleep this long inside the stream (to interleave answers or interrupt them)."""

    seconds: float


class FakeProvider:
    """A provider whose answers are queued by the test (default answer: "ok").

    ``enqueue("a", "b")`` or ``enqueue(["a", "b"], delay=0.01, error=exc)`` queues one answer
    (``delay`` before each item, ``error`` raised after them). ``calls`` holds each request as
    ``{"model", "messages", **options}``; ``pause`` sleeps after every item of every answer.
    """

    default_model = "fake-model"
    models = ["fake-model", "fake-mini"]
    model_aliases = {"fake": "fake-model"}

    def __init__(self, *, raise_on_call: BaseException | None = None) -> None:
        self.queue: list[list[Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.raise_on_call = raise_on_call
        self.pause: float | None = None

    def enqueue(self, *items: Any, delay: float = 0.0, error: BaseException | None = None) -> FakeProvider:
        chunks = list(items[0]) if len(items) == 1 and isinstance(items[0], list) else list(items)
        if delay:
            chunks = [x for c in chunks for x in (Pause(delay), c)]
        self.queue.append(chunks + ([error] if error is not None else []))
        return self

    def get_model(self, name: str | None) -> str:
        return self.model_aliases.get(name, name) if name else self.default_model

    def create_async_generator(self, model: str, messages: list[dict[str, Any]], proxy: Any = None,
                               **options: Any) -> AsyncIterator[Any]:
        if self.raise_on_call is not None:
            raise self.raise_on_call
        self.calls.append({"model": model, "messages": [dict(m) for m in messages], **options})
        return self._stream(self.queue.pop(0) if self.queue else ["ok"])

    async def _stream(self, items: list[Any]) -> AsyncIterator[Any]:
        for item in items:
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Pause):
                await asyncio.sleep(item.seconds)
                continue
            yield item
            if self.pause is not None:
                await asyncio.sleep(self.pause)

    async def list_models(self, **options: Any) -> list[str]:
        return [*self.models, "fake-large"]


def request(prompt: str, *, session: ChatSession | None = None, settings: Settings | None = None,
            provider: Any = None, **ask: Any) -> Request:
    """The planned request for ``prompt`` (the fake provider's model unless ``model=``)."""
    return plan(settings or Settings(), Ask(prompt, **ask), session=session, provider=provider or FakeProvider())


def answer(session: ChatSession | None, prompt: str, *items: Any, **ask: Any) -> Exchange:
    """Run one exchange of ``prompt`` answered by ``items`` to its end; return it (errors kept on it)."""
    fake = FakeProvider().enqueue(*items)
    exchange = Exchange(request(prompt, session=session, provider=fake, **ask), session)

    async def drive() -> None:
        try:
            async for _ in exchange.stream(fake):
                pass
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - recorded on the exchange
            pass

    try:
        asyncio.run(drive())
    except asyncio.CancelledError:
        pass
    return exchange


def record(session: ChatSession, prompt: str, *items: Any, **ask: Any) -> Exchange:
    """Record one answer of ``items`` in ``session`` without a provider (works inside a running loop)."""
    exchange = session.start(request(prompt, session=session, **ask))
    exchange.apply(items)
    exchange._end()
    return exchange
