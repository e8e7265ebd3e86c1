"""HTTP for the providers: one aiohttp session per loop, retries, and the one error mapping.

aiohttp is imported here (and in ``upstage``) and nowhere else. Every await that touches the
network catches ``TRANSPORT_ERRORS`` (aiohttp, OS/ssl, asyncio timeouts and the
``ValueError`` aiohttp raises for a bad URL or header) and maps them with
``map_transport_error``, which also drops aiohttp's frames (their locals hold the request
headers); HTTP error statuses become ``errors.status_error``; server texts are masked
before they are cut (``secrets.cut``).

Connection handling
    One ``aiohttp.ClientSession`` per event loop, created lazily and reused (keep-alive).
    ``trust_env=True`` so HTTP(S)_PROXY / NO_PROXY work; ``proxy=`` per call wins.
    A ``TCPConnector(limit=100)`` makes many concurrent streams queue instead of
    exhausting file descriptors. After ``[DONE]`` the rest of the body (the chunked
    terminator, often a separate read) is drained, briefly and bounded, so the connection
    goes back to the pool. Sessions of loops that have since closed are closed on the next
    use and at interpreter exit, so no "Unclosed client session" warnings are left behind.

Timeouts
    Connecting a socket: ``CONNECT_TIMEOUT`` (10 s). Idle time between reads (also the
    wait for the first byte): ``timeout=`` (default 60 s when streaming, 300 s for
    ``stream=False`` where the server sends nothing until the whole answer is ready).
    A stalled stream ends with ``APITimeoutError``; there is no total deadline.

Retries (``max_retries``, default 3; 0 disables)
    429, 408 and 5xx (except 501) answers and connection failures (refused, reset, DNS,
    proxy unreachable, connect timeout) are retried with ``errors.backoff`` (0.5 s, 1 s,
    2 s, ... capped at 8 s, +-25 %). A ``Retry-After`` (seconds or HTTP date) is honoured
    exactly; if it asks for more than ``MAX_RETRY_AFTER`` (60 s) we give up at once with a
    ``RateLimitError`` carrying ``retry_after`` rather than block. Read timeouts and
    TLS/URL errors are not retried. Nothing is retried once an OK response has started.
"""
from __future__ import annotations

import asyncio
import atexit
import email.utils
import json
import re
import threading
from collections.abc import Awaitable
from datetime import datetime, timezone
from typing import Any, TypeVar

import aiohttp

from ..errors import (
    VALIDATION_HINT,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    IncompleteStreamError,
    UpstageError,
    api_name,
    backoff,
    is_validation_error,
    status_error,
)
from ..retries import announce
from ..secrets import cut, display_url
from . import ratelimit
from .wire import malformed, stream_error

__all__ = ["CONNECT_TIMEOUT", "DEFAULT_NONSTREAM_TIMEOUT", "DEFAULT_TIMEOUT", "TRANSPORT_ERRORS", "aclose_running_loop",
           "client_session", "drain", "json_body", "map_transport_error", "read", "send"]

_T = TypeVar("_T")

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

#: What a network operation can raise that is not ours; mapped by ``map_transport_error``.
#: ``ValueError``: aiohttp/yarl refuse a malformed URL or a header with a line break so.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError)


async def send(
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
    session = client_session()
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=timeout)
    attempt = 0
    while True:
        failure: UpstageError | None = None
        try:
            response = await session.request(
                method, url, headers=headers, data=data, proxy=proxy or None, timeout=client_timeout
            )
        except TRANSPORT_ERRORS as exc:
            failure, retryable = map_transport_error(exc, started=False, key=key, url=url)
        if failure is not None:  # raised outside the except: no implicit chaining
            if retryable and attempt < max_retries:
                attempt += 1
                wait = backoff(attempt, base=RETRY_BASE_DELAY, cap=RETRY_MAX_DELAY)
                announce(attempt, max_retries, wait, failure)
                await _sleep(wait)
                continue
            raise failure
        ratelimit.observe(url, response.headers, response.status)
        if response.status < 400:
            return response
        retry_after = _parse_retry_after(response.headers)
        try:
            err = await _status_error(response, what=what, retry_after=retry_after, url=url, model=model)
        finally:
            response.release()
        delay = _retry_delay(response.status, retry_after, attempt + 1) if attempt < max_retries else None
        if response.status >= 500 and is_validation_error(err):  # the same request fails the same way
            err.hint = VALIDATION_HINT
            raise err
        if delay is None:
            raise err
        attempt += 1
        announce(attempt, max_retries, delay, err)
        await _sleep(delay)


async def read(operation: Awaitable[_T], *, key: str, started: bool, url: str | None = None) -> _T:
    """Await one read from the network; its transport errors become ours (see above; ``url`` names the server)."""
    __tracebackhide__ = True  # noqa: F841
    try:
        return await operation
    except TRANSPORT_ERRORS as exc:
        failure, _ = map_transport_error(exc, started=started, key=key, url=url)
    raise failure  # outside the except: the aiohttp error is at most a sanitised cause


def _retry_delay(status: int, retry_after: float | None, attempt: int) -> float | None:
    """Seconds to wait before retrying after HTTP ``status``, or None to give up."""
    if not (status in _RETRY_STATUSES or (status >= 500 and status != 501)):
        return None
    if retry_after is None:
        return backoff(attempt, base=RETRY_BASE_DELAY, cap=RETRY_MAX_DELAY)
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


def json_body(raw: bytes) -> Any:
    """A whole JSON body; an error envelope in place of an answer raises StreamErrorEvent."""
    text = raw.decode("utf-8", "replace")
    bad = None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        bad = malformed(text, exc)
    if bad is not None:  # raised outside the except: the JSON error (raw body) is not its context
        raise bad
    if isinstance(obj, dict) and obj.get("error") and not obj.get("choices"):
        raise stream_error(obj["error"])
    return obj


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
    for e in chain:
        e.__traceback__ = None
    try:
        for e in chain:
            texts = (str(e), repr(e), repr(e.args), repr(getattr(e, "request_info", "")))
            if any(key in t for t in texts):
                return None
    except Exception:  # a broken __repr__: do not chain what we cannot check
        return None
    return exc


def _describe(exc: BaseException) -> str:
    """``"ErrorType: text"``, without nested exception reprs like ``<XError: ...>``."""
    text = _NESTED_REPR.sub("", str(exc)).strip().rstrip(":").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_NESTED_REPR = re.compile(r":?\s*<\w*(?:Error|Exception)\b[^>]*>")


def map_transport_error(exc: BaseException, *, started: bool, key: str,
                        url: str | None = None) -> tuple[UpstageError, bool]:
    """The one mapping of a ``TRANSPORT_ERRORS`` error to (our error, retryable).

    The error's ``__cause__`` is ``exc`` with every traceback in its chain dropped (or
    nothing, when ``exc`` shows the key), so no traceback mode can show aiohttp's frames
    and their request headers. Raise it outside the ``except`` block that caught ``exc``.
    ``url`` (the request's) names the server in the message when it is not Upstage's.
    """
    err, retryable = _transport_error(exc, started=started, url=url)
    err.__cause__ = _safe_cause(exc, key)
    err.__suppress_context__ = True
    return err, retryable


def _transport_error(exc: BaseException, *, started: bool, url: str | None = None) -> tuple[UpstageError, bool]:
    """Map an aiohttp/asyncio/OS error to (UpstageError, retryable).

    ``started``: an OK response had begun, so a break is an incomplete answer, and
    nothing may be retried. Messages go through ``errors.redact`` in UpstageError.
    """
    detail = _describe(exc)
    api, api_ = api_name(url), api_name(url, start=True)  # "the Upstage API", or "the server at <host>"
    if isinstance(exc, asyncio.TimeoutError):  # includes aiohttp's ServerTimeoutError family
        connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", None)
        if connect_timeout is not None and isinstance(exc, connect_timeout):
            return APITimeoutError(
                f"Timed out connecting to {api} after {CONNECT_TIMEOUT:g} s ({detail})."
            ), not started
        if started:
            return APITimeoutError(
                "The answer stream stalled: no data arrived within the idle timeout; "
                "the text so far was kept."
            ), False
        return APITimeoutError(
            f"{api_} did not answer within the timeout (waiting for the first byte)."
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
        return APIConnectionError(f"TLS/SSL error talking to {api} ({detail})."), False
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return APIConnectionError(f"Could not connect to the proxy ({detail})."), True
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return APIConnectionError(
            f"The proxy refused the connection (HTTP {getattr(exc, 'status', '?')})."
        ), False
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", None)
    if dns_error is not None and isinstance(exc, dns_error):
        return APIConnectionError(f"Could not resolve the host of {api} ({detail})."), True
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(f"Could not connect to {api} ({detail})."), True
    if isinstance(exc, (aiohttp.InvalidURL, getattr(aiohttp, "NonHttpUrlClientError", aiohttp.InvalidURL))):
        shown = display_url(str(getattr(exc, "url", "") or "")) or "?"
        return APIConnectionError(
            f"Invalid API URL ({type(exc).__name__}: {shown}).",
            hint="Check UPSTAGE_BASE_URL / base_url: it should look like https://api.upstage.ai/v1.",
        ), False
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)):
        return APIConnectionError(
            f"The connection to {api} broke before an answer arrived ({detail})."
        ), True
    if isinstance(exc, ValueError) and not isinstance(exc, aiohttp.ClientError):
        return APIConnectionError(
            f"The request could not be sent ({type(exc).__name__}: a malformed URL or header).",
            hint="Check UPSTAGE_BASE_URL / base_url (it should look like "
            "https://api.upstage.ai/v1) and the API key (no spaces or line breaks).",
        ), False
    return APIConnectionError(f"Request to {api} failed ({detail})."), False


async def drain(response: aiohttp.ClientResponse) -> None:
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
    except TRANSPORT_ERRORS:
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
    return cut(" ".join(html.unescape(found).split()), 200)


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
    return cut(message, 500) if message else None, (str(code) if code is not None else None), body


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
    except TRANSPORT_ERRORS:
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


def client_session() -> aiohttp.ClientSession:
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


async def aclose_running_loop() -> None:
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
