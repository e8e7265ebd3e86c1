"""An offline chat completions server that behaves like Upstage's API (aiohttp.web).

Run it for an offline demo::

    python -m upstage_magic.emulator --port 8765
    export UPSTAGE_BASE_URL=http://127.0.0.1:8765/v1
    export UPSTAGE_API_KEY=anything

or in-process (tests)::

    async with Emulator(reply="echo") as base_url:
        ...   # POST {base_url}/chat/completions

It serves ``POST {base}/chat/completions`` (streaming SSE and plain JSON) and
``GET {base}/models`` (also under the legacy ``/v1/solar`` base), checks for a Bearer key
and answers deterministically. It follows the real API (see ``UPSTAGE_API.md``; the model
facts come from ``upstage_magic.models``) so that code tested against it works for real:

- **Models**: ``GET /models`` lists today's ids, aliases then dated ids (solar-pro4,
  solar-mini4, syn-pro, solar-pro3), not retired ones. Replies name the dated id
  (``"model": "solar-pro4-260806"``). A retired model (solar-pro2, solar-mini, ...) gets
  400 ``model_retired`` naming the replacement; an unknown one 404 ``model_not_found``.
- **Reasoning**: solar-pro3 reasons by default (effort medium; ``low`` turns it off);
  solar-pro4 / solar-mini4 only with ``reasoning_effort`` low..max (none/minimal: off);
  syn-pro (unknown to us) accepts any known effort and reasons for low..max. An effort the
  model does not take gets 400 (``param: "reasoning_effort"``, naming the accepted values).
  Reasoning streams first as ``delta.reasoning`` events (low: 8 tokens, medium: the
  ``REASONING_TEXT``, high/xhigh/max: 2x/3x/4x), then the answer; non-streaming replies
  carry ``message.reasoning``. ``max_tokens`` counts reasoning and answer together.
- **Usage**: always in a non-streaming reply; in a stream only when the request has
  ``stream_options: {"include_usage": true}``, in a last event with ``choices: []`` before
  ``[DONE]``. ``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``;
  ``prompt_tokens_details.cached_tokens`` counts the prompt prefix an earlier request sent.
- **Refused like the real API (400)**: ``store``; role ``developer``;
  ``tools[].function.strict``; ``n`` > 1 with ``stream``; ``response_format`` json_object
  without the word "JSON" in the messages; a json_schema without ``name`` and ``schema``;
  ``tool_choice`` without ``tools`` or naming a function not in ``tools``.
- **Structured output**: ``response_format`` json_object gives a JSON object; json_schema
  gives an example object that fits the schema.
- **Tool calls**: when the request has ``tools`` and ``tool_choice`` forces a call
  (``"required"`` or a named function), or ``reply`` is ``"tool_call"`` (call the first or
  forced tool) or ``"tool_calls"`` (call every tool, indexes 0..n-1), the answer is a tool
  call: streamed as ``delta.tool_calls`` fragments (index, id, type and function name
  first, then the arguments in pieces of 8 characters) ending with finish_reason
  ``"tool_calls"``; non-streaming: ``message.tool_calls``. Arguments fit the parameters
  schema. ``tool_choice: "none"`` never calls.

Settings (``Emulator(**cfg)``, ``configure(**cfg)``, ``POST /_emulator/config`` or per
request in an ``"emulator": {...}`` object of the body, which may also carry a ``"fault"``):

- ``reply``: ``"markdown"`` (canned answer: heading, list, python code block, "You asked:
  <last user message>", "Turn N"), ``"echo"`` (last user message), ``"hostile"``
  (``HOSTILE_REPLY``: raw HTML/JS that a front end must neutralise), ``"code"`` (one fenced
  python block), ``"tool_call"`` / ``"tool_calls"`` (see above; plain markdown when the
  request has no tools), or any other string (sent as is).
- ``answer_tokens=N``: answer with N filler tokens (``filler_text``).
- ``reasoning``: ``None`` (default: by model and effort, as above), ``True`` (always
  reason; length by the effort sent, else medium) or ``False`` (never).
- ``reasoning_tokens=N``: reason with exactly N tokens when reasoning.
- ``reasoning_field``: how reasoning is sent: ``"reasoning"`` (Upstage, default),
  ``"reasoning_content"`` (other OpenAI-compatible servers) or ``"think"``
  (``<think>...</think>`` at the start of ``content``, as servers without a reasoning parser do).
- ``reject_fields``: request fields this server refuses with 400 naming them (like OpenAI-
  compatible servers that do not know ``stream_options``), e.g. ``["stream_options"]``.
- ``tokens_per_second``: pace the stream (one event per interval), default full speed.

Tokens are the pieces of ``tokenize(text)``: one content event per token. ``max_tokens``
cuts the answer (finish_reason "length"); ``stop`` cuts it before the first stop string.

Rate-limit mode (``configure(rate_limit={"rps": 100, "rpm": 3000, "tpm": 100000})``, any
subset; ``None`` turns it off): like the real API, a chat request over a limit gets a 429
with ``Retry-After`` (whole seconds), ``retry-after-ms`` and ``x-ratelimit-limit-requests``
/ ``-remaining-requests`` / ``-reset-requests`` (and ``-tokens`` equivalents). Windows
slide (1 s for rps, 60 s for rpm/tpm); a request's tokens are its prompt's words plus its
``max_tokens``. Refused requests are not recorded in ``requests``; ``rate_limited`` counts them.

Faults (``set_fault``, ``POST /_emulator/fault`` or per request), each with ``"times"``
(default 1, ``null`` = forever); ``after`` counts content events:

- ``{"kind": "status", "status": 429, "message": "...", "retry_after": 1, "body": None}``;
  a 429 carries ``x-ratelimit-limit-requests`` (``"limit"``, default 100),
  ``x-ratelimit-remaining-requests: 0`` and ``x-ratelimit-reset-requests`` (the
  ``retry_after`` seconds, default 1, as ``"1s"``), plus ``Retry-After`` when ``retry_after``
  is given
- ``{"kind": "cut", "after": N}``: close the connection mid-answer (``"clean": true``
  ends the HTTP body properly instead, still without finish_reason/[DONE])
- ``{"kind": "malformed", "after": N}``: one event whose data is not JSON
- ``{"kind": "error_event", "after": N, "message": "...", "code": "..."}``
- ``{"kind": "stall", "after": N, "seconds": S}``: go silent for S seconds, then go on
- ``{"kind": "slow_first_byte", "seconds": S}``: wait before sending the headers
- ``{"kind": "invalid_utf8", "after": N}``: one content event with bytes that are not UTF-8
- ``{"kind": "empty"}``: an answer with no text (``"body": true``: an empty 200 body)

Control endpoints (no auth, loopback): ``POST /_emulator/config``, ``POST
/_emulator/fault``, ``GET /_emulator/requests``, ``POST /_emulator/reset``, ``GET
/_emulator/stats`` (also under ``{base}/_emulator/...``): ``connections`` (distinct client
connections seen on the API routes), ``open_connections`` (those still open),
``peak_connections`` (most open at once) and ``requests``. ``Emulator.sleeps`` records
every pause the emulator took (pacing, stalls, slow first byte), in seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
import signal
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from . import models as model_table

MAX_RECORDED_REQUESTS = 1000
MAX_RECORDED_SLEEPS = 10_000

__all__ = [
    "CODE_REPLY",
    "CREATED",
    "HOSTILE_FLAGS",
    "HOSTILE_REPLY",
    "MARKDOWN_REPLY_TEMPLATE",
    "MODELS",
    "REASONING_TEXT",
    "Emulator",
    "canned_reply",
    "filler_text",
    "main",
    "rate_limit_headers",
    "reasoning_text",
    "resolve_model",
    "serve_in_thread",
    "start_offline",
    "tokenize",
]

#: Fixed ``created`` timestamp in every reply (determinism).
CREATED = 1_754_000_000

#: Models ``GET /models`` lists: alias -> dated id (both are accepted; replies name the dated id).
MODELS: dict[str, str] = {
    m.id: m.dated_id or m.id for m in model_table.KNOWN_MODELS if m.status != "retired"
}

MARKDOWN_REPLY_TEMPLATE = """\
## Answer from the Upstage emulator

You asked: {prompt}

Turn {turn}

This offline emulator answers with canned text, so you can try things out:

- **Bold**, *italic* and `inline code`
- A link to the [Upstage console](https://console.upstage.ai)
- Math stays as written: $e^{{i\\pi}} + 1 = 0$

```python
def greet(name: str) -> str:
    return f"Hello, {{name}}!"
```

Point UPSTAGE_BASE_URL at https://api.upstage.ai/v1 for real answers.
"""

CODE_REPLY = """\
```python
import math

def area(radius: float) -> float:
    return math.pi * radius ** 2

print(area(2.0))
```
"""

#: Window flags set by the hostile reply if a front end ever executes it.
HOSTILE_FLAGS = ("__pwned_script", "__pwned_img", "__pwned_link", "__pwned_iframe")

HOSTILE_REPLY = """\
Hostile test answer: everything below must show as text and never run.

<script>window.__pwned_script=1</script>

<img src=x onerror="window.__pwned_img=1">

[click me](javascript:window.__pwned_link=1)

<iframe src="javascript:window.__pwned_iframe=1"></iframe>

```html
<script>alert("kept as code")</script>
```

The end.
"""

REASONING_TEXT = "Let me think about this step by step. The user wants an answer, so I will write one."

_FILLER = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
)
_TOKEN_RE = re.compile(r"\S+\s*|\s+")
_CONFIG_KEYS = (
    "reply", "answer_tokens", "reasoning", "reasoning_tokens", "reasoning_field", "reject_fields",
    "tokens_per_second", "rate_limit",
)
_REASONING_FIELDS = ("reasoning", "reasoning_content", "think")
_TOOL_REPLIES = ("tool_call", "tool_calls")
_ARGUMENT_PIECE = 8  # characters of tool-call arguments per streamed event
_REASONING_REPEATS = {"high": 2, "xhigh": 3, "max": 4}
_MAX_SEEN_PROMPTS = 1000
_FAULT_KINDS = (
    "status", "cut", "malformed", "error_event", "stall", "slow_first_byte", "invalid_utf8", "empty",
)
_BATCH_BYTES = 64 * 1024
_ROLES = ("system", "user", "assistant", "tool")


# --------------------------------------------------------------------------- answers


def tokenize(text: str) -> list[str]:
    """Split text into the emulator's tokens (word plus trailing whitespace)."""
    return _TOKEN_RE.findall(text)


def filler_text(n: int) -> str:
    """The deterministic filler answer of exactly ``n`` tokens."""
    return "".join(_filler_tokens(n))


def _filler_tokens(n: int) -> list[str]:
    words = [w + " " for w in _FILLER]
    k = len(words)
    tokens = words * (n // k) + words[: n % k]
    if tokens:
        tokens[-1] = tokens[-1].rstrip() + "."
    return tokens


def _text_of(content: Any) -> str:
    """Text of a message's content (a string or a list of OpenAI content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def _example_for(schema: Any, depth: int = 0) -> Any:
    """A small value that fits a JSON schema (enough for demos, not a validator)."""
    if not isinstance(schema, dict) or depth > 6:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _example_for(schema[key][0], depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: _example_for(v, depth + 1) for k, v in props.items() if isinstance(k, str)}
    if typ == "array":
        return [_example_for(schema.get("items"), depth + 1)] if isinstance(schema.get("items"), dict) else []
    return {"string": "example", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(typ), "example")


def canned_reply(
    messages: list[dict[str, Any]],
    reply: str = "markdown",
    *,
    answer_tokens: int | None = None,
    response_format: dict[str, Any] | None = None,
) -> str:
    """The full answer text the emulator gives for these messages (before max_tokens/stop)."""
    if answer_tokens is not None:
        return filler_text(answer_tokens)
    prompt = _last_user(messages)
    turn = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        if response_format["type"] == "json_schema":
            js = response_format.get("json_schema") or {}
            value = _example_for(js.get("schema") if isinstance(js, dict) else None)
            if isinstance(value, dict):
                return json.dumps(value)
        return json.dumps({"answer": f"You asked: {prompt}", "turn": turn})
    if reply == "markdown":
        return MARKDOWN_REPLY_TEMPLATE.format(prompt=prompt, turn=turn)
    if reply == "echo":
        return prompt
    if reply == "hostile":
        return HOSTILE_REPLY
    if reply == "code":
        return CODE_REPLY
    return reply


def resolve_model(name: Any) -> str | None:
    """Alias or dated id -> the dated id replies name; None for unknown or retired models."""
    info = model_table.model_info(name)
    if info is None or info.status == "retired":
        return None
    return info.dated_id or info.id


def reasoning_text(effort: str | None = None) -> str:
    """The reasoning the emulator sends for an effort: low is short, high..max repeat it."""
    if effort == "low":
        return REASONING_TEXT.split(". ")[0] + ". "
    return " ".join([REASONING_TEXT] * _REASONING_REPEATS.get(effort or "", 1))


def _reasoning_tokens(effort: str | None, n: int | None) -> list[str]:
    """Reasoning tokens for ``effort``, or exactly ``n`` when given."""
    if n is None:
        return tokenize(reasoning_text(effort))
    base = tokenize(REASONING_TEXT + " ")
    return [base[i % len(base)] for i in range(n)]


def rate_limit_headers(*, limit: int, remaining: int, reset_seconds: float,
                       retry_after: float | None = None) -> dict[str, str]:
    """The rate-limit headers the real API sends (``x-ratelimit-*-requests``, ``retry-after``)."""
    reset = f"{_num(reset_seconds)}s"
    headers = {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(max(0, remaining)),
        "x-ratelimit-reset-requests": reset,
    }
    if retry_after is not None:
        headers["Retry-After"] = _num(retry_after)
    return headers


def _num(x: float) -> str:
    """A number as a header value: ``2``, not ``2.0``."""
    return str(int(x)) if float(x).is_integer() else str(x)


def _prompt_key(messages: list[Any]) -> str:
    """A short digest of a message list (for the prompt-cache imitation)."""
    return hashlib.sha1(json.dumps(messages, sort_keys=True).encode(), usedforsecurity=False).hexdigest()


def _word_count(messages: list[Any]) -> int:
    return sum(len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))


def _tool_call(index: int, call_id: str, tool: dict[str, Any]) -> dict[str, Any]:
    """One tool call whose arguments fit the tool's parameters schema."""
    fn = tool["function"]
    args = _example_for(fn.get("parameters")) if isinstance(fn.get("parameters"), dict) else {}
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": fn["name"], "arguments": json.dumps(args if isinstance(args, dict) else {})},
    }


def _error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_STATUS_DEFAULTS = {
    400: ("Bad request.", "invalid_request_error", "bad_request"),
    401: ("Invalid API key.", "authentication_error", "invalid_api_key"),
    403: ("Your key has no access to this resource.", "permission_error", "forbidden"),
    404: ("Not found.", "invalid_request_error", "not_found"),
    422: ("Unprocessable request.", "invalid_request_error", "unprocessable"),
    429: ("Rate limit reached for requests. Please retry later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", "internal_error"),
    502: ("Bad gateway.", "server_error", "bad_gateway"),
    503: ("The engine is currently overloaded, please try again later.", "server_error", "overloaded"),
}


# --------------------------------------------------------------------------- server


class _Reject(Exception):
    """An HTTP error reply (raised inside request handling)."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.response = web.json_response(_error_body(message, type_, code, param), status=status)


class Emulator:
    """An Upstage-compatible chat server on loopback.

    ``async with Emulator(**cfg) as base_url`` starts it and yields e.g.
    ``"http://127.0.0.1:PORT/v1"``; ``await start()`` / ``await stop()`` do the same by hand.

    ``requests`` holds every chat request body received (plus ``"has_auth"``, never the key;
    not those refused by rate-limit mode, which ``rate_limited`` counts);
    ``connections`` counts the distinct client connections that reached the API routes;
    ``open_connections`` how many of them are open now, ``peak_connections`` the most that
    were open at once; ``sleeps`` every pause the emulator took (pacing, stalls, slow first
    byte), so tests can check pacing without a clock. Settings (``reply``, ``reasoning``,
    ...) are described in the module docstring; ``configure()`` changes them.
    """

    # Rate-limit mode (see the module docstring); class defaults keep __init__ untouched.
    rate_limit: dict[str, float] | None = None
    rate_limited = 0
    _rate: _RateWindow | None = None

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        tokens_per_second: float | None = None,
        reply: str = "markdown",
        answer_tokens: int | None = None,
        reasoning: bool | None = None,
        reasoning_tokens: int | None = None,
        reasoning_field: str = "reasoning",
        reject_fields: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.reply = reply
        self.answer_tokens = answer_tokens
        self.reasoning = reasoning
        self.reasoning_tokens = reasoning_tokens
        self.reasoning_field = reasoning_field
        self.reject_fields: list[str] = list(reject_fields)
        self.tokens_per_second = tokens_per_second
        self.configure(**{k: getattr(self, k) for k in _CONFIG_KEYS})  # validate
        self._initial = {"api_key": api_key, **{k: getattr(self, k) for k in _CONFIG_KEYS}}
        # The most recent request bodies (bounded: a long-running demo server must not grow).
        self.requests: list[dict[str, Any]] = []
        #: Every pause taken (pacing interval, stall, slow first byte), in seconds; bounded.
        self.sleeps: deque[float] = deque(maxlen=MAX_RECORDED_SLEEPS)
        self.fault: dict[str, Any] | None = None
        self.base_url = ""
        self._peers: set[Any] = set()
        self._open: set[Any] = set()  # request handlers (one per connection) of open API connections
        self._seen_prompts: OrderedDict[str, None] = OrderedDict()  # for cached_tokens
        self.peak_connections = 0
        self._counter = 0
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------- configuration

    @property
    def connections(self) -> int:
        """Number of distinct client connections seen on the API routes."""
        return len(self._peers)

    @property
    def open_connections(self) -> int:
        """Client connections that reached the API routes and are still open."""
        return len(self._open)

    def configure(self, **cfg: Any) -> None:
        """Change any setting of the module docstring's list (and ``api_key``); ValueError if bad."""
        api_key = cfg.pop("api_key", self.api_key)
        values = _check_config(cfg)
        self.api_key = api_key
        for key, value in values.items():
            setattr(self, key, value)

    def set_fault(self, fault: dict[str, Any] | None) -> None:
        """Make the next chat request(s) fail; ``None`` clears the fault."""
        self.fault = _check_fault(fault) if fault is not None else None

    def reset(self) -> None:
        """Forget requests, faults and counters; back to the constructor's configuration."""
        self.requests.clear()
        self.sleeps.clear()
        self._seen_prompts.clear()
        self.fault = None
        self._peers.clear()
        self.peak_connections = len(self._open)
        self.rate_limit, self.rate_limited, self._rate = None, 0, None
        for key, value in self._initial.items():
            setattr(self, key, list(value) if isinstance(value, list) else value)

    async def _sleep(self, seconds: float) -> None:
        """Pause, and record the pause in ``sleeps``."""
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds)

    # ----------------------------------------------------------------- lifecycle

    def make_app(self) -> web.Application:
        """The aiohttp application (routes under /v1, /v1/solar and /_emulator)."""
        app = web.Application(middlewares=[self._count_connections], client_max_size=32 * 1024**2)
        for base in ("/v1", "/v1/solar"):
            app.router.add_post(base + "/chat/completions", self._chat)
            app.router.add_get(base + "/models", self._models)
        for prefix in ("", "/v1"):
            app.router.add_post(prefix + "/_emulator/config", self._ctl_config)
            app.router.add_post(prefix + "/_emulator/fault", self._ctl_fault)
            app.router.add_get(prefix + "/_emulator/requests", self._ctl_requests)
            app.router.add_post(prefix + "/_emulator/reset", self._ctl_reset)
            app.router.add_get(prefix + "/_emulator/stats", self._ctl_stats)
        return app

    async def start(self) -> str:
        """Start listening; returns the base URL."""
        if self._runner is not None:
            return self.base_url
        runner = web.AppRunner(
            self.make_app(), handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await runner.setup()
        self._watch_connections(runner.server)
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", None) else self.host
        if ":" in host:
            host = f"[{host}]"
        self.base_url = f"http://{host}:{self.port}/v1"
        return self.base_url

    def _watch_connections(self, server: Any) -> None:
        """Forget a connection in ``_open`` when it closes (wraps the server's hook)."""
        lost = getattr(server, "connection_lost", None)
        if lost is None:  # pragma: no cover - other aiohttp versions
            return

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self._open.discard(handler)
            lost(handler, exc)

        server.connection_lost = connection_lost

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- handlers

    @web.middleware
    async def _count_connections(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith(("/_emulator", "/v1/_emulator")) and request.transport is not None:
            self._peers.add(request.transport.get_extra_info("peername"))
            opened = self._open
            if request.protocol not in opened:
                opened.add(request.protocol)
                self.peak_connections = max(self.peak_connections, len(opened))
        return await handler(request)

    def _check_auth(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        has_auth = scheme.lower() == "bearer" and bool(token.strip())
        if not has_auth:
            raise _Reject(
                401,
                "Missing API key. Send the header 'Authorization: Bearer <your key>'.",
                "authentication_error",
                "invalid_api_key",
            )
        if self.api_key is not None and token.strip() != self.api_key:
            raise _Reject(401, "Invalid API key provided.", "authentication_error", "invalid_api_key")
        return True

    async def _models(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
        except _Reject as exc:
            return exc.response
        data = [
            {"id": name, "object": "model", "created": CREATED, "owned_by": "upstage"}
            for name in model_table.listed_model_ids()
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if self.rate_limit and (limited := await self._check_rate_limit(request)) is not None:
            return limited
        try:
            body = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError):
            return _Reject(400, "The request body is not valid JSON.").response
        if not isinstance(body, dict):
            return _Reject(400, "The request body must be a JSON object.").response
        header = request.headers.get("Authorization", "")
        self.requests.append(
            {**body, "has_auth": header.lower().startswith("bearer ") and bool(header[7:].strip())}
        )
        if len(self.requests) > MAX_RECORDED_REQUESTS:
            del self.requests[:-MAX_RECORDED_REQUESTS]
        try:
            self._check_auth(request)
            plan = self._plan(body)
        except _Reject as exc:
            return exc.response
        fault = plan["fault"]
        kind = fault["kind"] if fault else None
        if kind == "slow_first_byte":
            await self._sleep(float(fault.get("seconds", 1.0)))
        if kind == "status":
            return _status_fault(fault)
        if kind == "empty" and fault.get("body"):
            return web.Response(
                status=200,
                content_type="text/event-stream" if plan["stream"] else "application/json",
            )
        if plan["stream"]:
            return await self._stream(request, plan)
        return await self._complete(request, plan)

    def _plan(self, body: dict[str, Any]) -> dict[str, Any]:
        """Validate a chat request and work out the answer (raises _Reject)."""
        overrides = body.get("emulator") or {}
        if not isinstance(overrides, dict):
            raise _Reject(400, "'emulator' must be an object.", param="emulator")
        overrides = dict(overrides)
        req_fault = overrides.pop("fault", None)
        try:
            cfg = {k: getattr(self, k) for k in _CONFIG_KEYS}
            cfg.update(_check_config(overrides))
            fault = _check_fault(req_fault) if req_fault is not None else None
        except ValueError as exc:
            raise _Reject(400, f"Bad 'emulator' override: {exc}", param="emulator") from None

        for name in ("store", *cfg["reject_fields"]):
            if name in body:
                raise _Reject(400, f"Unsupported parameter: '{name}' is not supported by this API; remove it.",
                              code="unsupported_parameter", param=name)
        messages = _check_messages(body.get("messages"))
        stream = bool(body.get("stream", False))
        n = body.get("n", 1)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise _Reject(400, "'n' must be a positive integer.", param="n")
        if stream and n not in (1, None):
            raise _Reject(400, "'n' must be 1 when streaming.", param="n")
        include_usage = _check_stream_options(body.get("stream_options")) if stream else False
        if "model" not in body:
            raise _Reject(400, "'model' is required.", param="model")
        name = body.get("model")
        notice = model_table.retired_notice(name) if isinstance(name, str) else None
        if notice:
            raise _Reject(400, notice, code="model_retired", param="model")
        model = resolve_model(name)
        if model is None:
            raise _Reject(
                404,
                f"The model `{name}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        effort = _check_effort(model, body.get("reasoning_effort"))
        rf = _check_response_format(body.get("response_format"), messages)
        tools = _check_tools(body.get("tools"), body.get("tool_choice"))
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise _Reject(400, "'max_tokens' must be a positive integer.", param="max_tokens")

        if fault is None and self.fault is not None:
            fault = self.fault
            times = fault.get("times", 1)
            if times is not None:
                times -= 1
                if times <= 0:
                    self.fault = None
                else:
                    self.fault = {**fault, "times": times}

        self._counter += 1
        plan_id = f"chatcmpl-emu-{self._counter}"
        empty = fault is not None and fault["kind"] == "empty"
        reasoning: list[str] = []
        if not empty and (cfg["reasoning"] if cfg["reasoning"] is not None else _reasons(model, effort)):
            info = model_table.model_info(model)
            default = info.default_effort if info is not None else None
            reasoning = _reasoning_tokens(effort or default or "medium", cfg["reasoning_tokens"])
        calls = [] if empty or rf else _tool_calls(tools, body.get("tool_choice"), cfg["reply"], plan_id)
        answer_tokens = cfg["answer_tokens"]
        reply = "markdown" if cfg["reply"] in _TOOL_REPLIES else cfg["reply"]
        if empty or calls:
            tokens: list[str] = []
        elif answer_tokens is not None and rf is None:
            tokens = _filler_tokens(answer_tokens)
        else:
            text = canned_reply(messages, reply, response_format=rf)
            text = _apply_stop(text, body.get("stop"))
            tokens = tokenize(text)
        finish = "tool_calls" if calls else "stop"
        if max_tokens is not None and len(reasoning) + len(tokens) > max_tokens:
            reasoning = reasoning[:max_tokens]
            tokens = tokens[: max_tokens - len(reasoning)]
            finish = "length"
        n_reasoning = len(reasoning)
        if reasoning and cfg["reasoning_field"] == "think":
            tokens = ["<think>\n", *reasoning, "\n</think>\n\n", *tokens]
            reasoning = []
        n_calls = sum(1 + len(_pieces(c["function"]["arguments"])) for c in calls)
        prompt_tokens = _word_count(messages)
        completion = len(tokens) + len(reasoning) + n_calls
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": self._cached_tokens(messages)},
            "completion_tokens_details": {"reasoning_tokens": n_reasoning},
        }
        return {
            "id": plan_id,
            "model": model,
            "stream": stream,
            "n": n or 1,
            "tokens": tokens,
            "reasoning": reasoning,
            "reasoning_field": cfg["reasoning_field"],
            "tool_calls": calls,
            "finish": finish,
            "usage": usage,
            "include_usage": include_usage,
            "fault": fault,
            "tps": cfg["tokens_per_second"],
        }

    def _cached_tokens(self, messages: list[dict[str, Any]]) -> int:
        """Prompt tokens of the longest message prefix an earlier request sent (then remember this one)."""
        cached = 0
        for k in range(len(messages) - 1, 0, -1):
            if _prompt_key(messages[:k]) in self._seen_prompts:
                cached = _word_count(messages[:k])
                break
        self._seen_prompts[_prompt_key(messages)] = None
        while len(self._seen_prompts) > _MAX_SEEN_PROMPTS:
            self._seen_prompts.popitem(last=False)
        return cached

    async def _complete(self, request: web.Request, plan: dict[str, Any]) -> web.StreamResponse:
        """A non-streaming chat.completion reply (faults mapped to their closest form)."""
        fault = plan["fault"]
        kind = fault["kind"] if fault else None
        if kind == "stall":
            await self._sleep(float(fault.get("seconds", 3600)))
        message: dict[str, Any] = {"role": "assistant", "content": "".join(plan["tokens"])}
        if plan["reasoning"]:
            message[plan["reasoning_field"]] = "".join(plan["reasoning"])
        if plan["tool_calls"]:
            message["content"] = None
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in plan["tool_calls"]]
        payload = {
            "id": plan["id"],
            "object": "chat.completion",
            "created": CREATED,
            "model": plan["model"],
            "choices": [
                {"index": i, "message": message, "finish_reason": plan["finish"]} for i in range(plan["n"])
            ],
            "usage": plan["usage"],
        }
        if kind == "error_event":
            payload = _error_body(fault.get("message", "The server had an error."), "server_error",
                                  fault.get("code", "server_error"))
        data = json.dumps(payload).encode()
        if kind == "malformed":
            data = data[: len(data) // 2]
        elif kind == "invalid_utf8":
            data = data.replace(b'"content": "', b'"content": "\xff\xfe', 1)
        if kind == "cut":
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            _abort(request)
            return resp
        return web.Response(body=data, content_type="application/json")

    async def _stream(self, request: web.Request, plan: dict[str, Any]) -> web.StreamResponse:
        """A streaming reply: reasoning, then content or tool-call chunks, usage if asked, [DONE]."""
        fault = plan["fault"]
        kind = fault["kind"] if fault else None
        after = int(fault.get("after", 0)) if fault else 0
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Request-Id": plan["id"],
            },
        )
        await resp.prepare(request)
        head = (
            f'data: {{"id":"{plan["id"]}","object":"chat.completion.chunk","created":{CREATED},'
            f'"model":"{plan["model"]}","choices":[{{"index":0,"delta":{{'
        ).encode()
        tail = b'},"finish_reason":null}]}\n\n'
        tps = plan["tps"]
        interval = 1.0 / tps if tps else 0.0
        batch: list[bytes] = []
        size = 0
        first = True

        async def emit(event: bytes) -> None:
            nonlocal size, batch
            if interval:
                await resp.write(event)
                await self._sleep(interval)
                return
            batch.append(event)
            size += len(event)
            if size >= _BATCH_BYTES:
                await flush()

        async def flush() -> None:
            nonlocal size, batch
            if batch:
                data, batch, size = b"".join(batch), [], 0
                await resp.write(data)

        def delta(body: bytes) -> bytes:
            """The start of an event whose delta holds ``body`` (the first also names the role)."""
            nonlocal first
            if first:
                first = False
                return head + b'"role":"assistant"' + (b"," + body if body else b"")
            return head + body

        key = json.dumps(plan["reasoning_field"]).encode() + b":"
        for piece in plan["reasoning"]:
            await emit(delta(key + json.dumps(piece).encode()) + tail)

        if plan["tool_calls"]:
            bodies = _tool_call_deltas(plan["tool_calls"]) + [b""]
        else:
            cache: dict[str, bytes] = {}
            bodies = []
            for tok in plan["tokens"]:
                enc = cache.get(tok)
                if enc is None:
                    enc = cache[tok] = b'"content":' + json.dumps(tok).encode()
                bodies.append(enc)
        n = len(bodies)
        finish_tail = ('},"finish_reason":"' + plan["finish"] + '"}]}\n\n').encode()
        for i in range(n + 1):
            if fault is not None and i == after:
                if kind == "cut":
                    await flush()
                    if fault.get("clean"):
                        await resp.write_eof()
                    else:
                        _abort(request)
                    return resp
                if kind == "malformed":
                    await emit(b'data: {"id":"' + plan["id"].encode() + b'","choices":[{"index":0,"delta":{"content":"oops\n\n')
                elif kind == "error_event":
                    err = _error_body(fault.get("message", "The server had an error while streaming."),
                                      "server_error", fault.get("code", "server_error"))
                    await emit(b"data: " + json.dumps(err).encode() + b"\n\n")
                    await flush()
                    await resp.write_eof()
                    return resp
                elif kind == "stall":
                    await flush()
                    await self._sleep(float(fault.get("seconds", 3600)))
                elif kind == "invalid_utf8":
                    await emit(delta(b'"content":"bad \xff\xfe bytes "') + tail)
            if i == n:
                if n == 0:
                    await emit(delta(b'"content":""') + finish_tail)
                break
            await emit(delta(bodies[i]) + (finish_tail if i == n - 1 else tail))
        if plan["include_usage"]:
            usage_event = {
                "id": plan["id"],
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": plan["model"],
                "choices": [],
                "usage": plan["usage"],
            }
            await emit(b"data: " + json.dumps(usage_event).encode() + b"\n\n")
        await emit(b"data: [DONE]\n\n")
        await flush()
        await resp.write_eof()
        return resp

    # ----------------------------------------------------------------- control endpoints

    async def _check_rate_limit(self, request: web.Request) -> web.Response | None:
        """Rate-limit mode: None when the request may go on, else its 429 reply."""
        limits = self.rate_limit or {}
        tokens = await _rate_limit_tokens(request) if "tpm" in limits else 0
        if self._rate is None:
            self._rate = _RateWindow()
        refused = self._rate.check(asyncio.get_running_loop().time(), limits, tokens)
        if refused is not None:
            self.rate_limited += 1
        return refused

    async def _ctl_json(self, request: web.Request) -> Any:
        raw = await request.read()
        return json.loads(raw) if raw.strip() else None

    async def _ctl_config(self, request: web.Request) -> web.Response:
        try:
            cfg = await self._ctl_json(request)
            if not isinstance(cfg, dict):
                raise ValueError("send a JSON object")
            self.configure(**cfg)
        except (ValueError, TypeError) as exc:
            return _Reject(400, f"Bad emulator config: {exc}").response
        return web.json_response({k: getattr(self, k) for k in _CONFIG_KEYS})

    async def _ctl_fault(self, request: web.Request) -> web.Response:
        try:
            self.set_fault(await self._ctl_json(request))
        except (ValueError, TypeError) as exc:
            return _Reject(400, f"Bad emulator fault: {exc}").response
        return web.json_response({"fault": self.fault})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "connections": self.connections,
            "open_connections": self.open_connections,
            "peak_connections": self.peak_connections,
            "requests": len(self.requests),
            "rate_limited": self.rate_limited,
        })


def _abort(request: web.Request) -> None:
    """Close the connection now, mid-body (the client sees a cut stream)."""
    if request.transport is not None:
        request.transport.close()


def _apply_stop(text: str, stop: Any) -> str:
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def _tool_call_deltas(calls: list[dict[str, Any]]) -> list[bytes]:
    """Streamed delta bodies for tool calls: id, type and name first, then argument pieces."""
    out: list[bytes] = []
    for call in calls:
        head = {"index": call["index"], "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        out.append(b'"content":null,"tool_calls":' + json.dumps([head]).encode())
        for piece in _pieces(call["function"]["arguments"]):
            frag = {"index": call["index"], "function": {"arguments": piece}}
            out.append(b'"tool_calls":' + json.dumps([frag]).encode())
    return out


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    """Messages must be a non-empty list with known roles (``developer`` is refused)."""
    if not isinstance(messages, list) or not messages:
        raise _Reject(400, "'messages' must be a non-empty list.", param="messages")
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role == "developer":
            raise _Reject(400, f"messages[{i}]: role 'developer' is not supported; use 'system'.",
                          param=f"messages[{i}].role")
        if role not in _ROLES:
            raise _Reject(
                400,
                f"messages[{i}]: invalid role {role!r}; use one of {', '.join(_ROLES)}.",
                param=f"messages[{i}].role",
            )
    return messages


def _check_stream_options(options: Any) -> bool:
    """Whether a streaming request asked for usage (``stream_options.include_usage``)."""
    if options is None:
        return False
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise _Reject(400, "'stream_options' must be an object like {\"include_usage\": true}.",
                      param="stream_options")
    return bool(options.get("include_usage"))


def _check_effort(model: str, effort: Any) -> str | None:
    """The request's reasoning_effort, refused (400) when the model does not take it."""
    if effort is None:
        return None
    if not isinstance(effort, str):
        raise _Reject(400, "'reasoning_effort' must be a string.", param="reasoning_effort")
    try:
        model_table.check_effort(model, effort)
    except model_table.ReasoningEffortError as exc:
        raise _Reject(400, str(exc), param="reasoning_effort") from None
    if effort not in model_table.ALL_EFFORTS:  # models whose values are unknown: the known set
        raise _Reject(400, f"Invalid reasoning_effort {effort!r}; use one of "
                      f"{', '.join(model_table.ALL_EFFORTS)}.", param="reasoning_effort")
    return effort


def _reasons(model: str, effort: str | None) -> bool:
    """Whether the model reasons with this effort (unknown controls: for low..max only)."""
    on = model_table.reasons(model, effort)
    if on is None:
        return effort is not None and effort not in ("none", "minimal")
    return on


def _check_response_format(rf: Any, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON response_format asked for (None for plain text); 400 when malformed."""
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None
    if kind not in ("json_object", "json_schema"):
        raise _Reject(400, "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
                      param="response_format")
    assert isinstance(rf, dict)
    if kind == "json_schema":
        js = rf.get("json_schema")
        if not (isinstance(js, dict) and isinstance(js.get("name"), str) and js["name"]
                and isinstance(js.get("schema"), dict)):
            raise _Reject(400, "'response_format.json_schema' must be an object with a 'name' and a "
                          "'schema' (a JSON Schema object).", param="response_format.json_schema")
    else:
        words = " ".join(_text_of(m.get("content")) for m in messages)
        if "json" not in words.lower():
            raise _Reject(
                400,
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                param="messages",
            )
    return rf


def _check_tools(tools: Any, tool_choice: Any) -> list[dict[str, Any]]:
    """The request's function tools (400 for a malformed list, ``strict`` or a bad tool_choice)."""
    if tools is None:
        if tool_choice not in (None, "none"):
            raise _Reject(400, "'tool_choice' is only allowed when 'tools' are given.", param="tool_choice")
        return []
    if not isinstance(tools, list):
        raise _Reject(400, "'tools' must be a list.", param="tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(fn, dict)
                and isinstance(fn.get("name"), str) and fn["name"]):
            raise _Reject(400, f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}.",
                          param=f"tools[{i}]")
        if "strict" in fn:
            raise _Reject(400, f"Unsupported parameter: 'tools[{i}].function.strict' is not supported by "
                          "this API; remove it.", code="unsupported_parameter", param=f"tools[{i}].function.strict")
    if tool_choice in (None, "none", "auto", "required"):
        return tools
    forced = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = forced.get("name") if isinstance(forced, dict) else None
    if not isinstance(name, str):
        raise _Reject(400, "'tool_choice' must be 'none', 'auto', 'required' or "
                      "{\"type\": \"function\", \"function\": {\"name\": ...}}.", param="tool_choice")
    if name not in [t["function"]["name"] for t in tools]:
        raise _Reject(400, f"'tool_choice' names the function {name!r}, which is not in 'tools'.",
                      param="tool_choice")
    return tools


def _tool_calls(tools: list[dict[str, Any]], tool_choice: Any, reply: str, plan_id: str) -> list[dict[str, Any]]:
    """The tool calls to answer with ([] for a text answer)."""
    if not tools or tool_choice == "none":
        return []
    if isinstance(tool_choice, dict):
        name = tool_choice["function"]["name"]
        chosen = [next(t for t in tools if t["function"]["name"] == name)]
    elif reply == "tool_calls":
        chosen = tools
    elif reply == "tool_call" or tool_choice == "required":
        chosen = tools[:1]
    else:
        return []
    suffix = plan_id.rsplit("-", 1)[-1]
    return [_tool_call(i, f"call_emu{suffix}_{i}", t) for i, t in enumerate(chosen)]


def _pieces(text: str) -> list[str]:
    """Tool-call arguments split into streamed fragments."""
    return [text[i:i + _ARGUMENT_PIECE] for i in range(0, len(text), _ARGUMENT_PIECE)]


def _status_fault(fault: dict[str, Any]) -> web.Response:
    status = int(fault.get("status", 500))
    retry_after = fault.get("retry_after")
    headers: dict[str, str] = {}
    if status == 429:
        reset = retry_after if retry_after is not None else 1
        headers = rate_limit_headers(limit=int(fault.get("limit", 100)), remaining=0,
                                     reset_seconds=reset, retry_after=retry_after)
    elif retry_after is not None:
        headers["Retry-After"] = _num(retry_after)
    if fault.get("body") is not None:
        return web.Response(status=status, text=str(fault["body"]), headers=headers, content_type="text/html")
    message, type_, code = _STATUS_DEFAULTS.get(
        status, ("Error.", "server_error" if status >= 500 else "invalid_request_error", None)
    )
    body = _error_body(fault.get("message") or message, type_, fault.get("code", code))
    return web.json_response(body, status=status, headers=headers)


def _check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate configure()/override keys (raises ValueError)."""
    unknown = set(cfg) - set(_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: {', '.join(_CONFIG_KEYS)}, fault")
    out = dict(cfg)
    if "reply" in out and not isinstance(out["reply"], str):
        raise ValueError("'reply' must be a string")
    n = out.get("answer_tokens")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ValueError("'answer_tokens' must be a non-negative integer or null")
    tps = out.get("tokens_per_second")
    if tps is not None and (not isinstance(tps, (int, float)) or isinstance(tps, bool) or tps <= 0):
        raise ValueError("'tokens_per_second' must be a positive number or null")
    if out.get("reasoning") is not None:
        out["reasoning"] = bool(out["reasoning"])
    n = out.get("reasoning_tokens")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ValueError("'reasoning_tokens' must be a non-negative integer or null")
    if "reasoning_field" in out and out["reasoning_field"] not in _REASONING_FIELDS:
        raise ValueError(f"'reasoning_field' must be one of {', '.join(_REASONING_FIELDS)}")
    if "reject_fields" in out:
        fields = out["reject_fields"]
        if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) for f in fields):
            raise ValueError("'reject_fields' must be a list of request field names")
        out["reject_fields"] = list(fields)
    if out.get("rate_limit") is not None:
        out["rate_limit"] = _check_rate_limit(out["rate_limit"])
    return out


def _check_fault(fault: Any) -> dict[str, Any]:
    """Validate a fault dict (raises ValueError)."""
    if not isinstance(fault, dict):
        raise ValueError("a fault is a JSON object with a 'kind'")
    kind = fault.get("kind")
    if kind not in _FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(_FAULT_KINDS)}")
    times = fault.get("times", 1)
    if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
        raise ValueError("'times' must be a positive integer or null (forever)")
    for key in ("after", "status"):
        v = fault.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise ValueError(f"{key!r} must be a non-negative integer")
    if kind == "status" and not 400 <= int(fault.get("status", 500)) <= 599:
        raise ValueError("'status' must be 400..599")
    return dict(fault)


# --------------------------------------------------------------------------- rate limits


def _check_rate_limit(cfg: Any) -> dict[str, float]:
    """Validate a ``rate_limit`` config: {"rps"|"rpm"|"tpm": positive number} (raises ValueError)."""
    if not isinstance(cfg, dict) or not cfg or set(cfg) - {"rps", "rpm", "tpm"}:
        raise ValueError("'rate_limit' is an object with some of 'rps', 'rpm', 'tpm' (or null)")
    for key, value in cfg.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"'rate_limit.{key}' must be a positive number")
    return dict(cfg)


class _RateWindow:
    """Sliding-window counters for rate-limit mode (times from the event loop's clock)."""

    def __init__(self) -> None:
        from collections import deque

        self.second: deque[float] = deque()
        self.minute: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.token_sum = 0

    def check(self, now: float, limits: dict[str, float], tokens: int) -> web.Response | None:
        """Count the request and return None, or a 429 response when it is over a limit."""
        sec, minute, toks = self.second, self.minute, self.tokens
        while sec and sec[0] <= now - 1.0:
            sec.popleft()
        while minute and minute[0] <= now - 60.0:
            minute.popleft()
        while toks and toks[0][0] <= now - 60.0:
            self.token_sum -= toks.popleft()[1]
        over: list[tuple[str, float, float, float]] = []  # (what, limit, wait, used)
        for span, window, limit in ((1.0, sec, limits.get("rps")), (60.0, minute, limits.get("rpm"))):
            if limit is not None and len(window) >= limit:
                oldest = window[max(0, len(window) - int(limit))]
                over.append(("requests", limit, oldest + span - now, len(window)))
        tpm = limits.get("tpm")
        if tpm is not None and toks and self.token_sum + tokens > tpm:
            need, wait = self.token_sum + tokens - tpm, 60.0
            for t, n in toks:
                need -= n
                if need <= 0:
                    wait = t + 60.0 - now
                    break
            over.append(("tokens", tpm, wait, self.token_sum))
        if not over:
            sec.append(now)
            minute.append(now)
            toks.append((now, tokens))
            self.token_sum += tokens
            return None
        wait = max(0.001, max(o[2] for o in over))
        headers = {"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(math.ceil(wait * 1000))}
        for what, limit, w, used in over:
            headers[f"x-ratelimit-limit-{what}"] = str(int(limit))
            headers[f"x-ratelimit-remaining-{what}"] = str(max(0, int(limit - used)))
            headers[f"x-ratelimit-reset-{what}"] = f"{max(0.001, w):.3f}s"
        kinds = " and ".join(sorted({o[0] for o in over}))
        body = _error_body(f"Rate limit reached for {kinds}. Please retry after {wait:.3f} s.",
                           "requests" if "requests" in kinds else "tokens", "rate_limit_exceeded")
        return web.json_response(body, status=429, headers=headers)


async def _rate_limit_tokens(request: web.Request) -> int:
    """A request's tokens for tpm: its prompt's words plus max_tokens (0 if unreadable)."""
    try:
        body = await request.json(loads=json.loads)
        words = sum(len(_text_of(m.get("content")).split()) for m in body["messages"] if isinstance(m, dict))
        max_tokens = body.get("max_tokens")
        return words + (max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        return 0


# --------------------------------------------------------------------------- running


@contextmanager
def serve_in_thread(**cfg: Any) -> Iterator[Emulator]:
    """Run an Emulator on its own event loop in a daemon thread (for sync callers)."""
    emu = Emulator(**cfg)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    error: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(emu.start())
        except BaseException as exc:  # reported to the caller below
            error.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(emu.stop())

    thread = threading.Thread(target=run, name="upstage-emulator", daemon=True)
    thread.start()
    started.wait()
    try:
        if error:
            raise error[0]
        yield emu
    finally:
        if not error:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def start_offline(**cfg: Any) -> str | None:
    """For notebooks: with no API key and no UPSTAGE_BASE_URL, serve the emulator.

    Starts it in a background thread for the rest of the process, points the package at
    it (``UPSTAGE_BASE_URL`` and an in-memory placeholder key) and returns its base URL.
    Returns ``None``, changing nothing, when a key or a base URL is already set.
    """
    import atexit
    import os

    from . import settings

    if settings.get_api_key() or os.environ.get("UPSTAGE_BASE_URL"):
        return None
    server = serve_in_thread(**cfg)
    emu = server.__enter__()
    atexit.register(server.__exit__, None, None, None)
    os.environ["UPSTAGE_BASE_URL"] = emu.base_url
    settings.set_api_key("offline-demo")  # the emulator accepts any key
    return emu.base_url


async def _serve(args: argparse.Namespace) -> None:
    emu = Emulator(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        tokens_per_second=args.tokens_per_second,
        reply=args.reply,
        answer_tokens=args.answer_tokens,
        reasoning=args.reasoning,
        reasoning_tokens=args.reasoning_tokens,
        reasoning_field=args.reasoning_field,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt instead
            pass
    base_url = await emu.start()
    print(f"Upstage emulator running at {base_url}", flush=True)
    print("Point upstage-magic at it with:", flush=True)
    print(f"  export UPSTAGE_BASE_URL={base_url}", flush=True)
    print(f"  export UPSTAGE_API_KEY={'<the --api-key value>' if args.api_key else 'anything'}", flush=True)
    print("Press Ctrl+C to stop.", flush=True)
    try:
        await stop.wait()
    finally:
        await emu.stop()
        print("Upstage emulator stopped.", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m upstage_magic.emulator --port 8765``."""
    parser = argparse.ArgumentParser(
        prog="python -m upstage_magic.emulator",
        description="Run an offline, Upstage-compatible chat server for demos and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 = any free port; default 8765)")
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any Bearer key)")
    parser.add_argument("--tokens-per-second", type=float, default=None, help="pace the stream (default: full speed)")
    parser.add_argument("--reply", default="markdown", help="markdown, echo, hostile, code, tool_call, tool_calls, or literal text")
    parser.add_argument("--answer-tokens", type=int, default=None, help="answer with N filler tokens")
    parser.add_argument("--reasoning", action="store_const", const=True, default=None,
                        help="always reason first (default: by model and reasoning_effort, like the API)")
    parser.add_argument("--no-reasoning", dest="reasoning", action="store_const", const=False,
                        help="never reason")
    parser.add_argument("--reasoning-tokens", type=int, default=None, help="reason with exactly N tokens")
    parser.add_argument("--reasoning-field", default="reasoning", choices=_REASONING_FIELDS,
                        help="send reasoning as delta.reasoning (default), reasoning_content or <think> in content")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: could not listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
