"""The one exception tree of upstage-magic.

Pure module: no aiohttp, no IPython. Third-party errors are mapped onto this tree in
exactly one place (``providers/http.py``: ``TRANSPORT_ERRORS`` and
``map_transport_error``), with the third-party tracebacks dropped.

::

    UpstageError
    ├── MissingAPIKeyError            no key given and UPSTAGE_API_KEY unset
    │   └── InvalidAPIKeyError        a key with whitespace or control characters inside
    ├── APIStatusError                the server answered with an HTTP error status
    │   ├── AuthenticationError       401, 403
    │   ├── BadRequestError           400, 422
    │   ├── ModelNotFoundError        404 (unknown model or endpoint)
    │   ├── RateLimitError            429 (carries ``retry_after``)
    │   └── ServerError               5xx
    ├── APIConnectionError            could not connect (refused, DNS, proxy, TLS)
    ├── APITimeoutError               connect timeout or stream idle too long
    └── StreamError                   the stream itself went wrong
        ├── MalformedEventError       an event's data is not valid JSON
        │                             (also a ``json.JSONDecodeError``)
        ├── StreamErrorEvent          the server sent ``data: {"error": ...}``
        └── IncompleteStreamError     the stream ended before it finished

Every message says what happened and what to do; all constructors pass their text through
``secrets.redact`` (registered secrets and key-shaped tokens), so no message shows a key.
"""
from __future__ import annotations

import json
import random
import re
from typing import Any

from .secrets import cut, display_url, redact, scrub

__all__ = [
    "UpstageError",
    "MissingAPIKeyError",
    "InvalidAPIKeyError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ModelNotFoundError",
    "RateLimitError",
    "ServerError",
    "APIConnectionError",
    "APITimeoutError",
    "StreamError",
    "backoff",
    "MalformedEventError",
    "StreamErrorEvent",
    "IncompleteStreamError",
    "api_name",
    "server_host",
    "server_problem_hint",
    "status_error",
]

_SENTENCE_END = (".", "!", "?", ":", ";", "\u2026")


def server_host(url: str | None) -> str | None:
    """``host[:port]`` of a URL that is not Upstage's API (None for Upstage's, or no URL)."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    try:
        parts = urlsplit(url or "")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or host == "upstage.ai" or host.endswith(".upstage.ai"):
        return None
    return f"{host}:{port}" if port else host


def api_name(url: str | None, *, start: bool = False) -> str:
    """How a message names the server ``url`` belongs to: "the Upstage API", or "the server at
    <host>" when the base URL is not Upstage's (issue 21). ``start``: capitalised, to open a sentence.

    The one place errors name the server (status, connection and timeout errors, server-error hints).
    """
    host = server_host(url)
    name = "the Upstage API" if host is None else f"the server at {host}"
    return name[:1].upper() + name[1:] if start else name


def server_problem_hint(url: str | None) -> str:
    """The hint of a 5xx: the server named as :func:`api_name` does."""
    host = server_host(url)
    who = "The Upstage service" if host is None else f"The server at {host}"
    return f"{who} had a problem; try again in a little while."


class UpstageError(Exception):
    """Base of every error raised by upstage-magic.

    ``message`` is what happened, ``hint`` what to do about it. ``str(err)`` joins both.
    """

    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = redact(message)
        self.hint = redact(hint if hint is not None else self.default_hint)
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        message = self.message.rstrip()
        if not message:
            return self.hint
        sep = " " if message.endswith(_SENTENCE_END) else ". "
        return f"{message}{sep}{self.hint}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class MissingAPIKeyError(UpstageError):
    """No API key was given."""

    default_hint = (
        "Set the UPSTAGE_API_KEY environment variable (get a key at "
        "https://console.upstage.ai/api-keys), pass api_key=..., or run `%upstage key` "
        "in a notebook. For an offline try-out, run `python -m upstage_magic.emulator` "
        "and set UPSTAGE_BASE_URL to the URL it prints."
    )

    def __init__(self, message: str = "No Upstage API key found.", *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)


class InvalidAPIKeyError(MissingAPIKeyError):
    """The key given cannot be a key: it has whitespace or control characters inside.

    The message never shows the key (not even in part).
    """

    default_hint = (
        "Copy the key again from https://console.upstage.ai/api-keys and set it without "
        "spaces or line breaks (UPSTAGE_API_KEY, api_key=... or `%upstage key`)."
    )


class APIStatusError(UpstageError):
    """The server answered with an HTTP error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        server_message: str | None = None,
        code: str | None = None,
        body: Any = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.server_message = redact(server_message) if server_message else None
        self.code = cut(code, 200) if code is not None else None  # server text too
        self.body = scrub(body, redacting=True)
        super().__init__(message, hint=hint)


class AuthenticationError(APIStatusError):
    default_hint = (
        "Check UPSTAGE_API_KEY (or `%upstage key`): the key is missing, mistyped, revoked "
        "or lacks access to this model."
    )


class BadRequestError(APIStatusError):
    default_hint = "Check the request's parameters (model options, message roles, max_tokens)."


class ModelNotFoundError(APIStatusError):
    default_hint = (
        "Check the model name: `%upstage models` (or `await Upstage.list_models()`) lists "
        "the ones your key can use, e.g. solar-pro4 or solar-mini4."
    )
    #: Hint for a 404 that is not about the model: the URL itself was not found.
    url_hint = (
        "Check the base URL (UPSTAGE_BASE_URL or base_url=...): it usually ends in /v1, "
        "e.g. https://api.upstage.ai/v1 (or the URL the emulator prints)."
    )


class RateLimitError(APIStatusError):
    default_hint = "You are sending too many requests or tokens; wait a moment and try again."

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ServerError(APIStatusError):
    default_hint = server_problem_hint(None)


class APIConnectionError(UpstageError):
    default_hint = (
        "Check your network, the base URL (UPSTAGE_BASE_URL) and any proxy settings "
        "(HTTPS_PROXY / HTTP_PROXY, proxy=...)."
    )


class APITimeoutError(UpstageError):
    default_hint = "The server was too slow; try again, or raise the timeout (timeout=...)."


class StreamError(UpstageError):
    default_hint = "The answer stream broke off; what arrived is kept. Try again."


class MalformedEventError(StreamError, json.JSONDecodeError):
    """An event's data was not valid JSON. Also a ``json.JSONDecodeError``."""

    def __init__(self, message: str, doc: str = "", pos: int = 0, *, hint: str | None = None) -> None:
        # JSONDecodeError.__init__ formats its own message; set its fields by hand.
        self.doc = cut(doc, 200)
        self.pos = pos
        self.lineno = doc.count("\n", 0, pos) + 1
        self.colno = pos - doc.rfind("\n", 0, pos)
        self.msg = redact(message)
        UpstageError.__init__(self, message, hint=hint)

    def __reduce__(self):  # keep pickling (used by some test runners) working
        return (type(self), (self.message, self.doc, self.pos))


class StreamErrorEvent(StreamError):
    """The server sent an error inside the stream."""

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        self.code = cut(code, 200) if code is not None else None  # server text too
        super().__init__(message, hint=hint)


class IncompleteStreamError(StreamError):
    """The stream ended before the server said it was done."""


def _status_class(status: int) -> type[APIStatusError]:
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return ModelNotFoundError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return BadRequestError
    return APIStatusError


def status_error(
    status: int,
    *,
    server_message: str | None = None,
    code: str | None = None,
    body: Any = None,
    retry_after: float | None = None,
    what: str = "request",
    url: str | None = None,
    model: str | None = None,
) -> APIStatusError:
    """Build the matching APIStatusError for an HTTP status and the server's message.

    ``url`` (the requested URL) and ``model`` (the model asked for) tell a 404 about an
    unknown model from one about a wrong URL (often a base URL missing ``/v1``): the
    latter names the URL (without its query string) and hints at UPSTAGE_BASE_URL.
    """
    cls = _status_class(status)
    hint: str | None = None
    message = f"Upstage API {what} failed with HTTP {status}"
    if (host := server_host(url)) is not None:  # not Upstage's API: name the server it is (issue 21)
        message = f"The {what} to {host} failed with HTTP {status}"
    if cls is ServerError:
        hint = server_problem_hint(url)
    if cls is ModelNotFoundError and not _mentions_model(server_message, code, model):
        hint = ModelNotFoundError.url_hint
        shown = display_url(url)
        if shown:
            message += f" for {shown}"
    if server_message:
        message += f": {server_message}"
    else:
        message += "."
    if cls is RateLimitError and retry_after is not None:
        secs = f"{retry_after:.0f}" if retry_after >= 10 else f"{retry_after:.2g}"
        sep = " " if message.endswith((".", "!", "?")) else ". "
        message += f"{sep}The server asks to retry after {secs} s."
    kw: dict[str, Any] = dict(status=status, server_message=server_message, code=code, body=body, hint=hint)
    if cls is RateLimitError:
        return RateLimitError(message, retry_after=retry_after, **kw)
    return cls(message, **kw)


def _mentions_model(server_message: str | None, code: str | None, model: str | None) -> bool:
    """Whether a 404's server answer is about the model (not about the URL)."""
    if code and "model" in code.lower():
        return True
    if not server_message:
        return False
    if model and model in server_message:
        return True
    return re.search(r"(?i)\bmodels?\b", server_message) is not None


def backoff(attempt: int, *, base: float = 0.5, cap: float = 8.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): exponential, capped, +-25 % jitter.

    The one retry schedule of the package (the provider's retries and batch's per-item ones).
    """
    return min(cap, base * 2 ** (attempt - 1)) * (0.75 + 0.5 * random.random())


#: Texts of a request-validation error (FastAPI/pydantic, vLLM, llama.cpp...) that some servers
#: answer with HTTP 500: a request the server cannot read, which a retry only repeats.
_VALIDATION = re.compile(r"validation error|validationerror|field required|extra inputs are not permitted|"
                         r"input should be|literal_error|value is not a valid|unprocessable", re.IGNORECASE)
VALIDATION_HINT = ("The server refused the request itself (a request-validation error, sent as a server "
                    "error), so it was not retried: change the request (e.g. the format or a field it does "
                    "not know).")


def is_validation_error(err: BaseException) -> bool:
    """Whether an HTTP error's text is a request-validation message (never worth retrying)."""
    return bool(_VALIDATION.search(str(err)))
