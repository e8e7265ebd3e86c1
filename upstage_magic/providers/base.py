"""Provider base classes, kept in the shape of the original provider framework.

A provider is a class whose ``create_async_generator`` classmethod yields the answer as
``str`` text deltas plus typed events (``events.Usage``, ``FinishReason``, ``Reasoning``).
This module knows nothing about HTTP: no aiohttp import here.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ..errors import UpstageError
from ..events import StreamEvent
from ..secrets import Secret, SecretURL, register_secret

__all__ = [
    "Messages",
    "AsyncResult",
    "AsyncGeneratorProvider",
    "ProviderModelMixin",
    "format_prompt",
]

Messages = list[dict[str, Any]]
AsyncResult = AsyncIterator[str | StreamEvent]


class AsyncGeneratorProvider:
    """A provider that streams its answer from an async generator."""

    url: str = ""
    working: bool = False
    supports_stream: bool = True
    supports_system_message: bool = True
    supports_message_history: bool = True

    @classmethod
    def create_async_generator(
        cls, model: str, messages: Messages, proxy: str | None = None, **kwargs: Any
    ) -> AsyncResult:
        """Stream the answer: ``str`` text deltas and typed stream events."""
        raise NotImplementedError(f"{cls.__name__} must implement create_async_generator()")

    @classmethod
    async def create_async(cls, model: str, messages: Messages, **kwargs: Any) -> str:
        """Await the whole answer text (events such as Usage are dropped)."""
        parts: list[str] = []
        _mask_key(kwargs)
        async for chunk in cls.create_async_generator(model, messages, **kwargs):
            if isinstance(chunk, str):
                parts.append(chunk)
        return "".join(parts)

    @classmethod
    def create_completion(cls, model: str, messages: Messages, **kwargs: Any) -> str:
        """Return the whole answer text, synchronously (for scripts; needs no running loop).

        Runs its own event loop with ``asyncio.run`` and closes the provider's resources for
        that loop before returning. Inside a running loop (a notebook cell, async code) it
        raises ``UpstageError``: use ``await Provider.create_async(...)`` or ``%%upstage``.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UpstageError(
                f"{cls.__name__}.create_completion() cannot run while an event loop is already "
                "running in this thread (as in a notebook cell or async code).",
                hint=f"Use `await {cls.__name__}.create_async(model, messages)` instead, "
                "or the %%upstage cell magic in a notebook.",
            )
        _mask_key(kwargs)
        return asyncio.run(cls._complete_and_close(model, messages, kwargs))

    @classmethod
    async def _complete_and_close(cls, model: str, messages: Messages, kwargs: dict[str, Any]) -> str:
        try:
            return await cls.create_async(model, messages, **kwargs)
        finally:
            await cls.aclose()

    @classmethod
    async def aclose(cls) -> None:
        """Release resources held for the running loop (HTTP sessions). No-op here."""


class ProviderModelMixin:
    """Model names: a default, a list of known names and aliases."""

    default_model: str = ""
    models: list[str] = []
    model_aliases: dict[str, str] = {}

    @classmethod
    def get_default_model(cls) -> str:
        """The model used when none is named (subclasses may consult the environment)."""
        return cls.default_model

    @classmethod
    def get_model(cls, model: str | None) -> str:
        """Resolve a model name: alias -> model id; ""/None -> default; unknown unchanged.

        Unknown names are sent as given: the API is the authority on names (it adds
        date-stamped ids), and its error becomes a clear ``ModelNotFoundError``.
        """
        name = model.strip() if isinstance(model, str) else ""
        if not name:
            name = cls.get_default_model()
        return cls.model_aliases.get(name, name)


def _content_text(content: Any) -> str:
    """Text of a message's content: a str, or the text parts of an OpenAI-style list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def format_prompt(messages: Messages, add_special_tokens: bool = False) -> str:
    """Flatten role messages into one prompt, for backends that take a single string.

    A lone message is returned as its text unless ``add_special_tokens``; otherwise each
    message becomes ``Role: text`` on its own line, ending with ``Assistant:``.
    """
    if not messages:
        return ""
    if not add_special_tokens and len(messages) == 1:
        return _content_text(messages[0].get("content"))
    lines = [
        f"{str(m.get('role', 'user')).capitalize()}: {_content_text(m.get('content'))}"
        for m in messages
    ]
    return "\n".join(lines) + "\nAssistant:"


def _mask_key(kwargs: dict[str, Any]) -> None:
    """Wrap ``api_key=`` and ``base_url=`` kwargs so tracebacks that show ``kwargs`` mask them."""
    key = kwargs.get("api_key")
    if isinstance(key, str) and key and not isinstance(key, Secret):
        register_secret(key)
        kwargs["api_key"] = Secret(key)
    url = kwargs.get("base_url")
    if isinstance(url, str) and "@" in url and not isinstance(url, SecretURL):
        kwargs["base_url"] = SecretURL(url)
