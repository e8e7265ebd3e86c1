"""The Upstage Solar chat provider (OpenAI-compatible HTTP + Server-Sent Events).

Transport is :mod:`.http` (sessions, retries, the error mapping); what the bytes mean is
read by the pure :mod:`.sse` (bytes -> events) and :mod:`.wire` (events -> our items)
modules. This module builds the request body and turns the response into items.

Usage in streams
    ``stream_options: {"include_usage": true}`` is sent when streaming, so the server sends
    the token counts. A server that refuses the field (a 400 naming ``stream_options``) is
    asked once more without it, and that base URL is remembered for the process
    (``_NO_STREAM_OPTIONS``); nothing is retried once an answer has started.

json_schema
    A server that refuses ``response_format`` of type ``json_schema`` is asked once more with
    ``json_object`` and the schema in the instructions (``jsonmode``), remembered per base URL.
"""
from __future__ import annotations

import json
from typing import Any

import aiohttp

from .. import models as model_table
from .. import settings
from ..errors import APIStatusError, BadRequestError, MalformedEventError, MissingAPIKeyError
from ..events import Reasoning
from ..secrets import Secret, SecretURL, mask_secrets, register_secret, scrub
from . import jsonmode
from .base import AsyncGeneratorProvider, AsyncResult, Messages, ProviderModelMixin
from .estimate import with_estimated_usage
from .http import DEFAULT_NONSTREAM_TIMEOUT, DEFAULT_TIMEOUT, aclose_running_loop, drain, json_body, read, send
from .sse import SSEDecoder
from .wire import StreamParser, parse_completion

__all__ = ["Upstage"]

#: Base URLs whose server refused ``stream_options`` (a 400 naming it): not sent again.
_NO_STREAM_OPTIONS: dict[str, bool] = {}


class Upstage(AsyncGeneratorProvider, ProviderModelMixin):
    """Upstage Solar chat models, streamed.

    ``async for chunk in Upstage.create_async_generator(model, messages): ...`` yields
    ``str`` answer text and typed events (``Reasoning``, ``ToolCall``, ``FinishReason``,
    ``Usage``).
    The API key is never stored on the class: it is looked up per call.
    """

    url = "https://console.upstage.ai"
    api_endpoint = "https://api.upstage.ai/v1/chat/completions"
    working = True
    supports_stream = True
    supports_system_message = True
    supports_message_history = True

    # One model table for the client (models.py): the default, today's models (the fallback
    # list when the API cannot be asked) and the only alias ("solar"). Everything else,
    # dated ids and retired names included, is sent as written; the server decides.
    default_model = model_table.DEFAULT_MODEL
    models = [m.id for m in model_table.KNOWN_MODELS if m.status != "retired"]
    model_aliases = dict(model_table.ALIASES)

    @classmethod
    def get_default_model(cls) -> str:
        """Env ``UPSTAGE_MODEL`` (read on every call), else ``default_model``."""
        return settings.env_model(cls.default_model)

    @classmethod
    async def create_async_generator(
        cls,
        model: str | None,
        messages: Messages | str,
        proxy: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        reasoning_effort: str | None = None,
        response_format: dict[str, Any] | None = None,
        timeout: float | None = None,
        stream: bool = True,
        max_retries: int = 3,
        **extra: Any,
    ) -> AsyncResult:
        """Stream a chat completion.

        Yields ``str`` text deltas, ``Reasoning`` pieces, ``ToolCall``s (complete, when the
        answer finishes), ``FinishReason`` and, last, ``Usage``, in stream order.
        ``messages`` are sent as real role messages (a plain string is taken as one user
        message). When streaming, ``stream_options: {"include_usage": true}`` is sent
        (see the module docstring for servers that refuse it). Options that are ``None`` are left out of
        the request; unknown keyword arguments are passed into the request body as given.
        ``stream=False`` yields the whole answer once. ``timeout`` is the idle time allowed
        between reads, in seconds. Raises a subclass of ``UpstageError``; a stream that
        breaks off raises after the text that already arrived has been yielded.
        """
        __tracebackhide__ = True  # noqa: F841 - IPython/pytest: this frame holds the key
        api_key = Secret(api_key) if api_key else None  # masked in this frame's locals
        key = _api_key(api_key)
        api_key = None  # only the masked copy stays in this frame
        base_url = SecretURL(base_url) if base_url else None  # its repr hides credentials
        base = settings.resolve_base_url(base_url)
        ask_usage = stream and "stream_options" not in extra and base not in _NO_STREAM_OPTIONS
        body = cls._body(model, messages, stream=stream, ask_usage=ask_usage, extra=extra, temperature=temperature,
                         top_p=top_p, max_tokens=max_tokens, stop=stop, reasoning_effort=reasoning_effort,
                         response_format=response_format)
        headers = _Headers({
            "Authorization": f"Bearer {key}",
            "Accept": "text/event-stream" if stream else "application/json",
            "Content-Type": "application/json",
        })
        if timeout is None:
            timeout = DEFAULT_TIMEOUT if stream else DEFAULT_NONSTREAM_TIMEOUT

        async def post() -> aiohttp.ClientResponse:
            return await send("POST", base + "/chat/completions", headers=headers,
                              data=json.dumps(body, ensure_ascii=False).encode(), proxy=proxy, timeout=timeout,
                              max_retries=max_retries, key=key, what="chat request", model=body.get("model"))

        refused = False
        try:
            response = await jsonmode.send(post, body, base)  # json_schema refused: json_object, once
        except BadRequestError as exc:
            if not (ask_usage and _names_stream_options(exc)):
                raise
            refused = True
        if refused:  # asked again outside the except: no chained 400 to show
            _NO_STREAM_OPTIONS[base] = True
            del body["stream_options"]
            response = await jsonmode.send(post, body, base)
        try:
            async for item in with_estimated_usage(_items(response, stream=stream, key=key), body["messages"]):
                yield item  # no usage from the server: an estimate, marked (estimate.py)
        finally:
            response.release()

    @classmethod
    def _body(cls, model: str | None, messages: Messages | str, *, stream: bool, ask_usage: bool,
              extra: dict[str, Any], **options: Any) -> dict[str, Any]:
        """The request body: model, role messages, the options that are set, then ``extra`` as given."""
        body: dict[str, Any] = {"model": cls.get_model(model), "messages": _messages(messages), "stream": bool(stream)}
        body.update({name: value for name, value in options.items() if value is not None})
        if ask_usage:
            body["stream_options"] = {"include_usage": True}
        body.update({name: value for name, value in extra.items() if value is not None})
        return body

    @classmethod
    async def list_models(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        max_retries: int = 3,
    ) -> list[str]:
        """The model ids the key can use (``GET {base_url}/models``)."""
        __tracebackhide__ = True  # noqa: F841 - this frame holds the key
        api_key = Secret(api_key) if api_key else None  # masked in this frame's locals
        key = _api_key(api_key)
        api_key = None
        base_url = SecretURL(base_url) if base_url else None
        response = await send(
            "GET",
            settings.resolve_base_url(base_url) + "/models",
            headers=_Headers({"Authorization": f"Bearer {key}", "Accept": "application/json"}),
            data=None,
            proxy=proxy,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            max_retries=max_retries,
            key=key,
            what="model list request",
        )
        try:
            obj = json_body(await read(response.read(), key=key, started=True))
        finally:
            response.release()
        items = obj.get("data") if isinstance(obj, dict) else obj
        if not isinstance(items, list):
            raise MalformedEventError("The model list answer has no 'data' list.", "", 0)
        # Ids are server text: masked here, where they enter the package (dropdowns, footers, logs).
        return [mask_secrets(item["id"] if isinstance(item, dict) else item) for item in items
                if not isinstance(item, dict) or "id" in item]

    @classmethod
    async def aclose(cls) -> None:
        """Close the running loop's HTTP session (and any left over by closed loops)."""
        await aclose_running_loop()


# --------------------------------------------------------------------------- request


class _Headers(dict):
    """Request headers whose repr masks the ``Authorization`` value (see ``Secret``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr({k: ("***" if k.lower() in ("authorization", "proxy-authorization") else v)
                     for k, v in self.items()})


def _api_key(api_key: str | None) -> Secret:
    """The key to send: ``api_key`` if given (checked), else ``settings.get_api_key()``."""
    __tracebackhide__ = True  # noqa: F841
    if api_key and api_key.strip():
        return settings.check_api_key(api_key, source="The api_key given")
    key = settings.get_api_key()
    if not key:
        raise MissingAPIKeyError(
            "No Upstage API key found: UPSTAGE_API_KEY is not set and no api_key was given."
        )
    register_secret(str(key))
    return key


def _names_stream_options(exc: APIStatusError) -> bool:
    """Whether a 400 is the server refusing the ``stream_options`` field."""
    text = f"{exc.server_message or ''} {exc.code or ''} {json.dumps(exc.body, default=str)}"
    return "stream_options" in text or "include_usage" in text


def _messages(messages: Messages | str) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return list(messages)


async def _items(response: aiohttp.ClientResponse, *, stream: bool, key: str) -> AsyncResult:
    """The answer's items from an OK response, whole values (finish reason, tool calls) masked.

    Text and reasoning pieces come as sent: a key may be split over pieces, so only their
    joined text can be masked (``Exchange`` does, as it reads them).
    """
    async for item in _raw_items(response, stream=stream, key=key):
        yield item if isinstance(item, (str, Reasoning)) else scrub(item)


async def _raw_items(response: aiohttp.ClientResponse, *, stream: bool, key: str) -> AsyncResult:
    """The answer's items from an OK response: a whole JSON body, or the SSE stream read by read."""
    if not stream:
        raw = await read(response.read(), key=key, started=True)
        for item in parse_completion(json_body(raw)):
            yield item
        return
    # Transport only: the decoder cuts bytes into events and the pure parser turns a whole
    # read's events into items (one call each per network read).
    decoder = SSEDecoder()
    parser = StreamParser()
    chunks = response.content.iter_any()  # per chunk (KBs), not per event
    while True:
        try:
            chunk = await read(chunks.__anext__(), key=key, started=True)
        except StopAsyncIteration:
            for item in parser.feed(decoder.flush()):
                yield item
            break
        for item in parser.feed(decoder.feed(chunk)):
            yield item
        if parser.done:
            await drain(response)
            break
    for item in parser.close():
        yield item
