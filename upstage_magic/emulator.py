"""An offline, Upstage-compatible chat completions server (aiohttp.web).

Run it for an offline demo::

    python -m upstage_magic.emulator --port 8765
    export UPSTAGE_BASE_URL=http://127.0.0.1:8765/v1
    export UPSTAGE_API_KEY=anything

or in-process (tests)::

    async with Emulator(reply="echo") as base_url:
        ...   # POST {base_url}/chat/completions

It serves ``POST {base}/chat/completions`` (streaming SSE and plain JSON) and
``GET {base}/models``, checks for a Bearer key, answers deterministically and can be told
to fail (see ``set_fault``). Answers:

- ``reply``: ``"markdown"`` (canned answer: heading, list, python code block, "You asked:
  <last user message>", "Turn N"), ``"echo"`` (last user message), ``"hostile"``
  (``HOSTILE_REPLY``: raw HTML/JS that a front end must neutralise), ``"code"`` (one fenced
  python block), or any other string (sent as is). ``response_format`` json_object /
  json_schema gives a JSON object string. ``answer_tokens=N`` gives N filler tokens.
- Tokens are the pieces of ``tokenize(text)``: one content event per token.
- ``max_tokens`` in the request cuts the answer (finish_reason "length"); ``stop`` cuts it
  before the first stop string.
- Per request, an ``"emulator": {...}`` object in the body overrides ``configure()`` keys
  and may carry a ``"fault"``.

Rate-limit mode (``configure(rate_limit={"rps": 100, "rpm": 3000, "tpm": 100000})``, any
subset; ``None`` turns it off): like the real API, a chat request over a limit gets a 429
with ``Retry-After`` (whole seconds), ``retry-after-ms`` and ``x-ratelimit-limit-requests``
/ ``-remaining-requests`` / ``-reset-requests`` (and ``-tokens`` equivalents). Windows
slide (1 s for rps, 60 s for rpm/tpm); a request's tokens are its prompt's words plus its
``max_tokens``. Refused requests are not recorded in ``requests``; ``rate_limited`` counts them.

Faults (``set_fault``, ``POST /_emulator/fault`` or per request), each with ``"times"``
(default 1, ``null`` = forever); ``after`` counts content events:

- ``{"kind": "status", "status": 429, "message": "...", "retry_after": 1, "body": None}``
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
``peak_connections`` (most open at once) and ``requests``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

MAX_RECORDED_REQUESTS = 1000

__all__ = [
    "Emulator",
    "main",
    "serve_in_thread",
    "start_offline",
    "canned_reply",
    "tokenize",
    "filler_text",
    "resolve_model",
    "HOSTILE_REPLY",
    "HOSTILE_FLAGS",
    "MARKDOWN_REPLY_TEMPLATE",
    "CODE_REPLY",
    "REASONING_TEXT",
    "MODELS",
    "CREATED",
]

#: Fixed ``created`` timestamp in every reply (determinism).
CREATED = 1_754_000_000

#: Model names the emulator accepts: alias -> dated id (dated ids are accepted too).
MODELS: dict[str, str] = {
    "solar-pro4": "solar-pro4-260806",
    "solar-pro3": "solar-pro3-251202",
    "solar-pro2": "solar-pro2-250909",
    "solar-mini": "solar-mini-250422",
    "solar-pro": "solar-pro-250422",
    "solar-1-mini-chat": "solar-1-mini-chat-240612",
    "solar-1-mini-chat-ja": "solar-1-mini-chat-ja-240612",
}
_DATED = {v: v for v in MODELS.values()}

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
_CONFIG_KEYS = ("reply", "answer_tokens", "reasoning", "tokens_per_second", "rate_limit")
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
    return {"string": "example", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(typ, "example")


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
    """Alias or dated id -> dated id; None when the emulator does not know the model."""
    if not isinstance(name, str):
        return None
    return MODELS.get(name) or _DATED.get(name)


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
    were open at once.
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
        reasoning: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self._initial = dict(
            api_key=api_key,
            reply=reply, answer_tokens=answer_tokens, reasoning=reasoning, tokens_per_second=tokens_per_second
        )
        self.reply = reply
        self.answer_tokens = answer_tokens
        self.reasoning = reasoning
        self.tokens_per_second = tokens_per_second
        # The most recent request bodies (bounded: a long-running demo server must not grow).
        self.requests: list[dict[str, Any]] = []
        self.fault: dict[str, Any] | None = None
        self.base_url = ""
        self._peers: set[Any] = set()
        self._open: set[Any] = set()  # request handlers (one per connection) of open API connections
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
        """Change reply/answer_tokens/reasoning/tokens_per_second (and api_key)."""
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
        self.fault = None
        self._peers.clear()
        self.peak_connections = len(self._open)
        self.rate_limit, self.rate_limited, self._rate = None, 0, None
        for key, value in self._initial.items():
            setattr(self, key, value)

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

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ----------------------------------------------------------------- handlers

    @web.middleware
    async def _count_connections(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith(("/_emulator", "/v1/_emulator")) and request.transport is not None:
            self._peers.add(request.transport.get_extra_info("peername"))
            opened = self._open
            if request.protocol not in opened:
                opened.add(request.protocol)
                if len(opened) > self.peak_connections:
                    self.peak_connections = len(opened)
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
            for name in [*MODELS, *MODELS.values()]
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
            await asyncio.sleep(float(fault.get("seconds", 1.0)))
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

        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Reject(400, "'messages' must be a non-empty list.", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                role = m.get("role") if isinstance(m, dict) else None
                raise _Reject(
                    400,
                    f"messages[{i}]: invalid role {role!r}; use one of {', '.join(_ROLES)}.",
                    param=f"messages[{i}].role",
                )
        stream = bool(body.get("stream", False))
        if stream and body.get("n", 1) not in (1, None):
            raise _Reject(400, "'n' must be 1 when streaming.", param="n")
        if "model" not in body:
            raise _Reject(400, "'model' is required.", param="model")
        model = resolve_model(body.get("model"))
        if model is None:
            raise _Reject(
                404,
                f"The model `{body.get('model')}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        rf = body.get("response_format")
        if isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema"):
            words = " ".join(_text_of(m.get("content")) for m in messages)
            if "json" not in words.lower():
                raise _Reject(
                    400,
                    "'messages' must contain the word 'json' in some form, to use 'response_format' "
                    "of type 'json_object'.",
                    param="messages",
                )
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

        empty = fault is not None and fault["kind"] == "empty"
        answer_tokens = cfg["answer_tokens"]
        if empty:
            tokens: list[str] = []
        elif answer_tokens is not None and not (isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")):
            tokens = _filler_tokens(answer_tokens)
        else:
            text = canned_reply(messages, cfg["reply"], response_format=rf)
            text = _apply_stop(text, body.get("stop"))
            tokens = tokenize(text)
        finish = "stop"
        if max_tokens is not None and len(tokens) > max_tokens:
            tokens = tokens[:max_tokens]
            finish = "length"
        reasoning = tokenize(REASONING_TEXT) if cfg["reasoning"] and not empty else []
        self._counter += 1
        prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens) + len(reasoning),
            "total_tokens": prompt_tokens + len(tokens) + len(reasoning),
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": len(reasoning)},
        }
        return {
            "id": f"chatcmpl-emu-{self._counter}",
            "model": model,
            "stream": stream,
            "tokens": tokens,
            "reasoning": reasoning,
            "finish": finish,
            "usage": usage,
            "fault": fault,
            "tps": cfg["tokens_per_second"],
        }

    async def _complete(self, request: web.Request, plan: dict[str, Any]) -> web.StreamResponse:
        """A non-streaming chat.completion reply (faults mapped to their closest form)."""
        fault = plan["fault"]
        kind = fault["kind"] if fault else None
        if kind == "stall":
            await asyncio.sleep(float(fault.get("seconds", 3600)))
        message: dict[str, Any] = {"role": "assistant", "content": "".join(plan["tokens"])}
        if plan["reasoning"]:
            message["reasoning"] = "".join(plan["reasoning"])
        payload = {
            "id": plan["id"],
            "object": "chat.completion",
            "created": CREATED,
            "model": plan["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": plan["finish"]}],
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
        """A streaming reply: SSE chunks, a usage-only chunk, then [DONE]."""
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
                await asyncio.sleep(interval)
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

        def role() -> bytes:
            nonlocal first
            if first:
                first = False
                return b'"role":"assistant",'
            return b""

        for piece in plan["reasoning"]:
            await emit(head + role() + b'"reasoning":' + json.dumps(piece).encode() + tail)

        tokens = plan["tokens"]
        n = len(tokens)
        cache: dict[str, bytes] = {}
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
                    await asyncio.sleep(float(fault.get("seconds", 3600)))
                elif kind == "invalid_utf8":
                    await emit(head + role() + b'"content":"bad \xff\xfe bytes "' + tail)
            if i == n:
                if n == 0:
                    await emit(head + role() + b'"content":""' + finish_tail)
                break
            tok = tokens[i]
            enc = cache.get(tok)
            if enc is None:
                enc = cache[tok] = b'"content":' + json.dumps(tok).encode()
            await emit(head + role() + enc + (finish_tail if i == n - 1 else tail))
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


def _status_fault(fault: dict[str, Any]) -> web.Response:
    status = int(fault.get("status", 500))
    headers = {}
    if fault.get("retry_after") is not None:
        headers["Retry-After"] = str(fault["retry_after"])
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
    if "reasoning" in out:
        out["reasoning"] = bool(out["reasoning"])
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
    parser.add_argument("--reply", default="markdown", help="markdown, echo, hostile, code, or literal text")
    parser.add_argument("--answer-tokens", type=int, default=None, help="answer with N filler tokens")
    parser.add_argument("--reasoning", action="store_true", help="send reasoning events first")
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
