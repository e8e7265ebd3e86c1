"""The Upstage Solar chat provider (OpenAI-compatible HTTP + Server-Sent Events).

aiohttp is imported here and nowhere else in the package's core. This module is also the
one place where third-party (aiohttp/asyncio) errors and HTTP statuses are mapped onto
``upstage_magic.errors``: see ``_transport_error`` and ``_status_error``.

Connection handling
    One ``aiohttp.ClientSession`` per event loop, created lazily and reused (keep-alive).
    ``trust_env=True`` so HTTP(S)_PROXY / NO_PROXY work; ``proxy=`` per call wins.
    A ``TCPConnector(limit=100)`` makes many concurrent streams queue instead of
    exhausting file descriptors. After ``[DONE]`` the rest of the body (the chunked
    terminator, often a separate read) is drained, briefly and bounded, so the connection
    goes back to the pool. ``await Upstage.aclose()`` closes the running loop's
    session; sessions of loops that have since closed are closed on the next use and at
    interpreter exit, so no "Unclosed client session" warnings are left behind.

Timeouts
    Connecting a socket: ``CONNECT_TIMEOUT`` (10 s). Idle time between reads (also the
    wait for the first byte): ``timeout=`` (default 60 s when streaming, 300 s for
    ``stream=False`` where the server sends nothing until the whole answer is ready).
    A stalled stream ends with ``APITimeoutError``; there is no total deadline.

Retries (``max_retries``, default 3; 0 disables)
    429, 408 and 5xx (except 501) answers and connection failures (refused, reset, DNS,
    proxy unreachable, connect timeout) are retried with exponential backoff and jitter
    (0.5 s, 1 s, 2 s, ... capped at 8 s, +-25 %). A ``Retry-After`` (seconds or HTTP
    date) is honoured exactly; if it asks for more than ``MAX_RETRY_AFTER`` (60 s) we give
    up at once with a ``RateLimitError`` carrying ``retry_after`` rather than block.
    Read timeouts and TLS/URL errors are not retried. Nothing is retried once an OK
    response has started: the text is never duplicated.
"""
from __future__ import annotations

import asyncio
import atexit
import email.utils
import json
import os
import random
import re
import threading
from datetime import datetime, timezone
from typing import Any

import aiohttp

from .. import settings
from ..settings import Secret
from ..errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    IncompleteStreamError,
    MalformedEventError,
    MissingAPIKeyError,
    StreamErrorEvent,
    UpstageError,
    register_secret,
    status_error,
)
from ..events import FinishReason, Reasoning, Usage
from ..sse import SSEDecoder
from .base import AsyncGeneratorProvider, AsyncResult, Messages, ProviderModelMixin

__all__ = ["Upstage"]

CONNECT_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 60.0
DEFAULT_NONSTREAM_TIMEOUT = 300.0
MAX_RETRY_AFTER = 60.0
RETRY_BASE_DELAY = 0.5
RETRY_MAX_DELAY = 8.0
CONNECTION_LIMIT = 100
_RETRY_STATUSES = frozenset({408, 429})
_ERROR_BODY_LIMIT = 65536
_DRAIN_LIMIT = 65536  # after [DONE]: bytes read to reach the body's end (keep-alive)
_DRAIN_TIMEOUT = 1.0  # ... within this many seconds in all
_USER_AGENT = "upstage-magic/0.1"

# Patchable in tests (module global looked up at call time): the retry wait.
_sleep = asyncio.sleep


class Upstage(AsyncGeneratorProvider, ProviderModelMixin):
    """Upstage Solar chat models, streamed.

    ``async for chunk in Upstage.create_async_generator(model, messages): ...`` yields
    ``str`` answer text and typed events (``Reasoning``, ``FinishReason``, ``Usage``).
    The API key is never stored on the class: it is looked up per call.
    """

    url = "https://console.upstage.ai"
    api_endpoint = "https://api.upstage.ai/v1/chat/completions"
    working = True
    supports_stream = True
    supports_system_message = True
    supports_message_history = True

    # Built-in default; env UPSTAGE_MODEL overrides it at call time (see get_default_model).
    default_model = settings.DEFAULT_MODEL
    models = [
        "solar-pro4",
        "solar-pro3",
        "solar-pro2",
        "solar-mini",
        # Older names users still type; they are resolved through model_aliases below.
        "solar-pro",
        "solar-1-mini-chat",
        "solar-1-mini-chat-ja",
    ]
    # Aliases are fixed mappings (only the default model depends on the environment).
    # - "solar": the family name, meaning the built-in default model.
    # - "solar-pro": the retired first Solar Pro; its successor line is the current Pro.
    # - "solar-1-mini-chat" / "-ja": renamed to solar-mini (multilingual, incl. Japanese);
    #   sending the new name works whether or not the API still accepts the old one.
    # Names not listed here (including date-stamped ids like "solar-pro4-260806") are
    # sent unchanged.
    model_aliases = {
        "solar": settings.DEFAULT_MODEL,
        "solar-pro": settings.DEFAULT_MODEL,
        "solar-1-mini-chat": "solar-mini",
        "solar-1-mini-chat-ja": "solar-mini",
    }

    @classmethod
    def get_default_model(cls) -> str:
        """Env ``UPSTAGE_MODEL`` (read on every call), else ``default_model``."""
        return os.environ.get("UPSTAGE_MODEL", "").strip() or cls.default_model

    @classmethod
    async def create_async_generator(  # type: ignore[override]
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

        Yields ``str`` text deltas, ``Reasoning`` pieces, ``FinishReason`` and, last,
        ``Usage``, in stream order. ``messages`` are sent as real role messages (a plain
        string is taken as one user message). Options that are ``None`` are left out of
        the request; unknown keyword arguments are passed into the request body as given.
        ``stream=False`` yields the whole answer once. ``timeout`` is the idle time allowed
        between reads, in seconds. Raises a subclass of ``UpstageError``; a stream that
        breaks off raises after the text that already arrived has been yielded.
        """
        __tracebackhide__ = True  # noqa: F841 - IPython/pytest: this frame holds the key
        key = _api_key(api_key)
        api_key = None  # only the masked copy stays in this frame
        body: dict[str, Any] = {
            "model": cls.get_model(model),
            "messages": _messages(messages),
            "stream": bool(stream),
        }
        for name, value in (
            ("temperature", temperature),
            ("top_p", top_p),
            ("max_tokens", max_tokens),
            ("stop", stop),
            ("reasoning_effort", reasoning_effort),
            ("response_format", response_format),
        ):
            if value is not None:
                body[name] = value
        for name, value in extra.items():
            if value is not None:
                body[name] = value
        headers = _Headers({
            "Authorization": f"Bearer {key}",
            "Accept": "text/event-stream" if stream else "application/json",
            "Content-Type": "application/json",
        })
        if timeout is None:
            timeout = DEFAULT_TIMEOUT if stream else DEFAULT_NONSTREAM_TIMEOUT
        response = await _send(
            "POST",
            _base_url(base_url) + "/chat/completions",
            headers=headers,
            data=json.dumps(body, ensure_ascii=False).encode(),
            proxy=proxy,
            timeout=timeout,
            max_retries=max_retries,
            key=key,
            what="chat request",
            model=body.get("model"),
        )
        try:
            if not stream:
                obj = _parse_json_body(await _read_body(response, key))
                for item in _whole_answer(obj):
                    yield item
                return

            # Hot path: keep per-event work to a dict lookup or three. The decoder hands
            # over plain events as their data strings (no event objects); an event with an
            # ``event:`` type comes as a ServerSentEvent, which json.loads rejects with a
            # TypeError, so that rare case costs nothing on the common one.
            decoder = SSEDecoder()
            feed = decoder.feed_data
            loads = json.loads
            done = False
            finish = None
            usage = None
            data = None  # stays None while no event has arrived
            chunks = response.content.iter_any()  # per chunk (KBs), not per event
            eof = False
            try:
                while not (done or eof):
                    try:
                        datas = feed(await chunks.__anext__())
                    except StopAsyncIteration:
                        datas = decoder.flush_data()
                        eof = True
                    for data in datas:
                        try:
                            obj = loads(data)
                        except ValueError as exc:
                            if data == "[DONE]":
                                done = True
                                break
                            raise _malformed(data, exc) from None
                        except TypeError:  # a typed event (ServerSentEvent), see above
                            event = data
                            data = event.data
                            obj = _typed_event(event)
                            if obj is None:
                                done = True
                                break
                        choices = obj.get("choices")
                        if choices:
                            choice = choices[0]
                            delta = choice.get("delta")
                            if delta:
                                content = delta.get("content")
                                if len(delta) > 1 or not content:  # fast path: text only
                                    reasoning = delta.get("reasoning") or delta.get("reasoning_content")
                                    if reasoning:
                                        yield Reasoning(reasoning)
                                if content:
                                    yield content
                            reason = choice.get("finish_reason")
                            if reason:
                                finish = reason
                                yield FinishReason(reason)
                        elif "error" in obj:
                            raise _stream_error_event(obj["error"])
                        event_usage = obj.get("usage")
                        if event_usage:
                            usage = event_usage
            except (AttributeError, TypeError, IndexError, KeyError) as exc:
                raise _malformed(data or "", exc, shape=True) from None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                err, _ = _transport_error(exc, started=True, key=key)
                raise err from _safe_cause(exc, key)
            if not done and finish is None:
                if data is None:
                    raise IncompleteStreamError(
                        "The server ended the answer stream without sending any event "
                        "(an empty response).",
                        hint="Try again; if it keeps happening, check the base URL and any proxy.",
                    )
                raise IncompleteStreamError(
                    "The answer stream ended before the server said it was finished "
                    "(no finish_reason and no [DONE])."
                )
            if done and not eof:
                await _drain(response)
            if usage:
                yield Usage.from_dict(usage)
        finally:
            response.release()

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
        key = _api_key(api_key)
        api_key = None
        response = await _send(
            "GET",
            _base_url(base_url) + "/models",
            headers=_Headers({"Authorization": f"Bearer {key}", "Accept": "application/json"}),
            data=None,
            proxy=proxy,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            max_retries=max_retries,
            key=key,
            what="model list request",
        )
        try:
            obj = _parse_json_body(await _read_body(response, key))
        finally:
            response.release()
        items = obj.get("data") if isinstance(obj, dict) else obj
        if not isinstance(items, list):
            raise MalformedEventError("The model list answer has no 'data' list.", "", 0)
        return [item["id"] if isinstance(item, dict) else str(item) for item in items
                if not isinstance(item, dict) or "id" in item]

    @classmethod
    async def aclose(cls) -> None:
        """Close the running loop's HTTP session (and any left over by closed loops)."""
        await _aclose_running_loop()


# --------------------------------------------------------------------------- request


class _Headers(dict):
    """Request headers whose repr masks the ``Authorization`` value (see ``Secret``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr({k: ("***" if k.lower() in ("authorization", "proxy-authorization") else v)
                     for k, v in self.items()})


def _api_key(api_key: str | None) -> Secret:
    __tracebackhide__ = True  # noqa: F841
    key = (api_key.strip() if api_key else None) or settings.get_api_key()
    if not key:
        raise MissingAPIKeyError(
            "No Upstage API key found: UPSTAGE_API_KEY is not set and no api_key was given."
        )
    register_secret(str(key))
    return Secret(key)


def _base_url(base_url: str | None) -> str:
    url = (base_url.strip() if base_url else "") or settings.get_base_url()
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):  # a full endpoint given as base URL
        url = url[: -len("/chat/completions")]
    return url


def _messages(messages: Messages | str) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return list(messages)


async def _send(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    data: bytes | None,
    proxy: str | None,
    timeout: float,
    max_retries: int,
    key: str,
    what: str,
    model: str | None = None,
) -> aiohttp.ClientResponse:
    """Send a request, retrying while no answer has started; return an OK response.

    The caller must ``release()`` the response. ``headers`` and ``key`` hold the key: pass
    them masked (``_Headers``, ``Secret``) so a verbose traceback cannot show it.
    """
    __tracebackhide__ = True  # noqa: F841
    session = _session()
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=timeout)
    attempt = 0
    while True:
        try:
            response = await session.request(
                method, url, headers=headers, data=data, proxy=proxy or None, timeout=client_timeout
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            err, retryable = _transport_error(exc, started=False, key=key)
            if retryable and attempt < max_retries:
                attempt += 1
                await _sleep(_backoff(attempt))
                continue
            raise err from _safe_cause(exc, key)
        if response.status < 400:
            return response
        retry_after = _parse_retry_after(response.headers)
        try:
            err = await _status_error(response, what=what, retry_after=retry_after, url=url, model=model)
        finally:
            response.release()
        delay = _retry_delay(response.status, retry_after, attempt + 1) if attempt < max_retries else None
        if delay is None:
            raise err
        attempt += 1
        await _sleep(delay)


def _backoff(attempt: int) -> float:
    """Exponential backoff with +-25 % jitter for retry number ``attempt`` (1-based)."""
    base = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2 ** (attempt - 1))
    return base * (0.75 + 0.5 * random.random())


def _retry_delay(status: int, retry_after: float | None, attempt: int) -> float | None:
    """Seconds to wait before retrying after HTTP ``status``, or None to give up."""
    if not (status in _RETRY_STATUSES or (status >= 500 and status != 501)):
        return None
    if retry_after is None:
        return _backoff(attempt)
    if retry_after > MAX_RETRY_AFTER:
        return None
    return retry_after


def _parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            ms = float(value)
            if ms >= 0 and ms == ms:
                return ms / 1000.0
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if seconds != seconds or seconds == float("inf"):
        return None
    return max(0.0, seconds)


async def _read_body(response: aiohttp.ClientResponse, key: str) -> bytes:
    """Read a whole (non-streamed) OK body, mapping transport errors."""
    try:
        return await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        err, _ = _transport_error(exc, started=True, key=key)
        raise err from _safe_cause(exc, key)


def _parse_json_body(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise _malformed(text, exc) from None
    if isinstance(obj, dict) and obj.get("error") and not obj.get("choices"):
        raise _stream_error_event(obj["error"])
    return obj


def _whole_answer(obj: Any) -> list[Any]:
    """The items a non-streamed answer yields: Reasoning, text, FinishReason, Usage."""
    try:
        choice = obj["choices"][0]
        message = choice.get("message") or {}
        items: list[Any] = []
        reasoning = message.get("reasoning") or message.get("reasoning_content")
        if reasoning:
            items.append(Reasoning(reasoning))
        content = message.get("content")
        if content:
            items.append(content if isinstance(content, str) else json.dumps(content))
        if choice.get("finish_reason"):
            items.append(FinishReason(choice["finish_reason"]))
        if obj.get("usage"):
            items.append(Usage.from_dict(obj["usage"]))
        return items
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise _malformed(json.dumps(obj)[:200], exc, shape=True) from None


# ------------------------------------------------------------ error mapping (one place)


def _safe_cause(exc: BaseException, key: str) -> BaseException | None:
    """``exc`` to chain as ``__cause__`` if nothing about it shows the key, else None.

    The tracebacks of ``exc`` and of the exceptions chained to it are dropped: their
    frames are aiohttp's, whose locals hold the request headers (with the key), and a
    verbose traceback (``%xmode Verbose``) prints every frame's locals.
    """
    seen: set[int] = set()
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    try:
        for e in chain:
            texts = (str(e), repr(e), repr(e.args), repr(getattr(e, "request_info", "")))
            if any(key in t for t in texts):
                return None
    except Exception:  # a broken __repr__: do not chain what we cannot check
        return None
    for e in chain:
        e.__traceback__ = None
    return exc


def _describe(exc: BaseException) -> str:
    """``"ErrorType: text"``, without nested exception reprs like ``<XError: ...>``."""
    text = _NESTED_REPR.sub("", str(exc)).strip().rstrip(":").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_NESTED_REPR = re.compile(r":?\s*<\w*(?:Error|Exception)\b[^>]*>")


def _transport_error(exc: BaseException, *, started: bool, key: str) -> tuple[UpstageError, bool]:
    """Map an aiohttp/asyncio error to (UpstageError, retryable).

    ``started``: an OK response had begun, so a break is an incomplete answer, and
    nothing may be retried. Messages go through ``errors.redact`` in UpstageError.
    """
    detail = _describe(exc)
    if isinstance(exc, asyncio.TimeoutError):  # includes aiohttp's ServerTimeoutError family
        connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", None)
        if connect_timeout is not None and isinstance(exc, connect_timeout):
            return APITimeoutError(
                f"Timed out connecting to the Upstage API after {CONNECT_TIMEOUT:g} s ({detail})."
            ), not started
        if started:
            return APITimeoutError(
                "The answer stream stalled: no data arrived within the idle timeout; "
                "the text so far was kept."
            ), False
        return APITimeoutError(
            "The Upstage API did not answer within the timeout (waiting for the first byte)."
        ), False
    if started:
        if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            return IncompleteStreamError(
                "The connection closed before the answer finished."
            ), False
        return IncompleteStreamError(
            f"The connection broke while the answer was arriving ({detail})."
        ), False
    if isinstance(exc, aiohttp.ClientSSLError):
        return APIConnectionError(f"TLS/SSL error talking to the Upstage API ({detail})."), False
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return APIConnectionError(f"Could not connect to the proxy ({detail})."), True
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return APIConnectionError(
            f"The proxy refused the connection (HTTP {getattr(exc, 'status', '?')})."
        ), False
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", None)
    if dns_error is not None and isinstance(exc, dns_error):
        return APIConnectionError(f"Could not resolve the API host ({detail})."), True
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(f"Could not connect to the Upstage API ({detail})."), True
    if isinstance(exc, (aiohttp.InvalidURL, getattr(aiohttp, "NonHttpUrlClientError", aiohttp.InvalidURL))):
        return APIConnectionError(
            f"Invalid API URL ({detail}).",
            hint="Check UPSTAGE_BASE_URL / base_url: it should look like https://api.upstage.ai/v1.",
        ), False
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)):
        return APIConnectionError(
            f"The connection to the Upstage API broke before an answer arrived ({detail})."
        ), True
    return APIConnectionError(f"Request to the Upstage API failed ({detail})."), False


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read what is left of a finished stream's body (normally just the chunked-encoding
    terminator) so ``release()`` returns the connection to the pool instead of closing it.
    Bounded: about ``_DRAIN_LIMIT`` bytes within ``_DRAIN_TIMEOUT`` s in all; errors ignored
    (the connection is then simply not reused)."""
    content = response.content
    if content.at_eof():
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DRAIN_TIMEOUT
    size = 0
    try:
        while size <= _DRAIN_LIMIT:
            left = deadline - loop.time()
            if left <= 0:
                return
            part = await asyncio.wait_for(content.readany(), left)
            if not part:
                return
            size += len(part)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        pass


_HTML_START = re.compile(r"\s*<(?:!doctype\s+html|html|head|body|title)\b", re.I)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_HTML_DROP = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.I | re.S)
_HTML_TAG = re.compile(r"<[^>]*>")


def _html_text(text: str) -> str:
    """The readable text of an HTML error page: its <title>, else its tag-stripped text."""
    import html

    match = _HTML_TITLE.search(text)
    if match and match.group(1).strip():
        found = match.group(1)
    else:
        found = _HTML_TAG.sub(" ", _HTML_DROP.sub(" ", text))
    found = " ".join(html.unescape(found).split())
    return found[:200] + ("..." if len(found) > 200 else "")


def _server_message(raw: bytes) -> tuple[str | None, str | None, Any]:
    """(message, code, parsed body) from an error body: OpenAI envelope, JSON, HTML or text."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = None
    message = code = None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or err.get("msg")
            code = err.get("code") or err.get("type")
        elif isinstance(err, str):
            message = err
        if not message and isinstance(body.get("message"), str):
            message = body["message"]
        if not message and isinstance(body.get("detail"), str):
            message = body["detail"]
    if message is not None and not isinstance(message, str):
        message = json.dumps(message)
    if not message and text:
        message = _html_text(text) if _HTML_START.match(text) else " ".join(text.split())
    if message and len(message) > 500:
        message = message[:500] + "..."
    return message or None, (str(code) if code is not None else None), body


async def _status_error(
    response: aiohttp.ClientResponse,
    *,
    what: str,
    retry_after: float | None,
    url: str | None = None,
    model: str | None = None,
) -> APIStatusError:
    """The APIStatusError for an HTTP error response (reads at most 64 KiB of its body)."""
    parts: list[bytes] = []
    size = 0
    try:
        while size < _ERROR_BODY_LIMIT:
            part = await response.content.read(_ERROR_BODY_LIMIT - size)
            if not part:
                break
            parts.append(part)
            size += len(part)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        pass  # keep what arrived; the status alone still maps to the right error
    raw = b"".join(parts)
    message, code, body = _server_message(raw)
    return status_error(
        response.status,
        server_message=message,
        code=code,
        body=body,
        retry_after=retry_after,
        what=what,
        url=url,
        model=model,
    )


def _typed_event(event: Any) -> Any:
    """The parsed data of an event with an ``event:`` type; None for ``[DONE]``.

    ``event: error`` always ends the stream with a StreamErrorEvent, whatever its data
    (a JSON error object, any JSON, or plain text). Other types are read like plain events.
    """
    data = event.data
    try:
        obj = json.loads(data)
    except ValueError as exc:
        if event.event == "error":
            raise _stream_error_event(data.strip() or "(no details)") from None
        if data == "[DONE]":
            return None
        raise _malformed(data, exc) from None
    if event.event == "error":
        raise _stream_error_event(obj.get("error", obj) if isinstance(obj, dict) else obj)
    return obj


def _stream_error_event(error: Any) -> StreamErrorEvent:
    if isinstance(error, dict):
        message = error.get("message") or json.dumps(error)
        code = error.get("code") or error.get("type")
    else:
        message, code = str(error), None
    return StreamErrorEvent(
        f"The server reported an error during the answer: {message}",
        code=str(code) if code is not None else None,
    )


def _malformed(data: str, exc: BaseException, *, shape: bool = False) -> MalformedEventError:
    snippet = data[:80] + ("..." if len(data) > 80 else "")
    what = "an event of unexpected shape" if shape else "an event that is not valid JSON"
    pos = getattr(exc, "pos", 0) or 0
    return MalformedEventError(f"The server sent {what}: {snippet!r}", data, pos)


# ------------------------------------------------------------- sessions (one per loop)
#
# Keyed by loop (a WeakKeyDictionary would not help: a session refers to its loop, so the
# loop would never be collected). Each session gets a "guard": an async generator parked
# at its first ``yield`` and registered with the loop through the asyncgen hooks. When the
# loop shuts down its async generators (``asyncio.run`` and ``asyncio.Runner`` do this just
# before closing the loop, as do pytest-asyncio's loops), the guard's ``finally`` closes
# the session inside that loop, so scripts that never call ``aclose()`` leave no
# "Unclosed client session". Loops closed without that step are swept on the next use
# and at interpreter exit.


class _Entry:
    __slots__ = ("session", "guard")

    def __init__(self, session: aiohttp.ClientSession, guard: Any) -> None:
        self.session = session
        self.guard = guard


_sessions: dict[asyncio.AbstractEventLoop, _Entry] = {}
_lock = threading.Lock()


async def _close_with_loop(loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession):
    """Guard: parked until the loop (or aclose) finalises it; then closes the session."""
    try:
        yield
    finally:
        if loop.is_closed():
            _close_now(session)
        elif not session.closed:
            await session.close()


def _session() -> aiohttp.ClientSession:
    """The running loop's ClientSession, created on first use."""
    loop = asyncio.get_running_loop()
    entry = _sessions.get(loop)
    if entry is not None and not entry.session.closed:
        return entry.session
    _sweep_closed_loops()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONNECTION_LIMIT),
        trust_env=True,
        headers={"User-Agent": _USER_AGENT},
    )
    guard = _close_with_loop(loop, session)
    try:  # start it synchronously: runs the loop's firstiter hook, stops at the yield
        guard.asend(None).send(None)
    except StopIteration:
        pass
    with _lock:
        old = _sessions.get(loop)
        _sessions[loop] = _Entry(session, guard)
    if old is not None:
        _finish_now(old)
    return session


def _close_now(session: aiohttp.ClientSession) -> None:
    """Close a session without awaiting (its loop cannot run any more)."""
    connector = session.connector
    if connector is None or connector.closed:
        return
    close = getattr(connector, "_close", None)  # sync; public close() returns an awaitable
    try:
        if close is not None:
            close()
        else:  # pragma: no cover - very old aiohttp
            connector.close()
    except Exception:
        pass


def _finish_now(entry: _Entry) -> None:
    """Finish a guard synchronously (no loop needed when the session is closed/its loop is)."""
    try:
        entry.guard.aclose().send(None)
    except (StopIteration, StopAsyncIteration):
        pass
    except Exception:
        pass
    _close_now(entry.session)


def _sweep_closed_loops() -> None:
    """Drop (and close) sessions whose event loop has been closed."""
    with _lock:
        dead = [(loop, e) for loop, e in _sessions.items() if loop.is_closed()]
        for loop, _ in dead:
            del _sessions[loop]
    for _, entry in dead:
        _finish_now(entry)


async def _aclose_running_loop() -> None:
    _sweep_closed_loops()
    with _lock:
        entry = _sessions.pop(asyncio.get_running_loop(), None)
    if entry is not None:
        await entry.guard.aclose()  # runs the guard's finally: closes the session


@atexit.register
def _close_all_sessions() -> None:
    """At interpreter exit: close every session, politely when its loop can still run."""
    with _lock:
        items = list(_sessions.items())
        _sessions.clear()
    for loop, entry in items:
        if not entry.session.closed and not loop.is_closed() and not loop.is_running():
            try:
                loop.run_until_complete(entry.guard.aclose())
            except Exception:
                pass
        if not entry.session.closed:
            _finish_now(entry)
