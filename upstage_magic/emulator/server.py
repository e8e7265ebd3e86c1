"""The Emulator: routes, streaming and non-streaming answers, control endpoints (aiohttp.web).

It serves ``POST {base}/chat/completions`` (streaming SSE and plain JSON) and ``GET {base}/models``
(also under the legacy ``/v1/solar`` base), checks for a Bearer key and answers deterministically.
A stream sends the reasoning first as ``delta.reasoning`` events, then one content event per
token (or ``delta.tool_calls`` fragments: index, id, type and function name first, then the
arguments in pieces of 8 characters), the last with the finish_reason; a plain reply carries
``message.reasoning`` / ``message.tool_calls``. Usage is always in a plain reply; in a stream only
with ``stream_options: {"include_usage": true}``, in a last event with ``choices: []`` before
``[DONE]``. ``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``;
``prompt_tokens_details.cached_tokens`` counts the prompt prefix an earlier request sent.

Control endpoints (no auth, loopback): ``POST /_emulator/config``, ``POST
/_emulator/fault``, ``GET /_emulator/requests``, ``POST /_emulator/reset``, ``GET
/_emulator/stats`` (also under ``{base}/_emulator/...``): ``connections`` (distinct client
connections seen on the API routes), ``open_connections`` (those still open),
``peak_connections`` (most open at once) and ``requests``. ``Emulator.sleeps`` records
every pause the emulator took (pacing, stalls, slow first byte), in seconds.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .api import CREATED, MODELS, ChatRequest, Reject, check_request, error_body, word_count
from .compat import check_local_request, local_models
from .documents import DocumentParse
from .faults import CONFIG_KEYS, RateWindow, check_config, check_fault, request_tokens, status_reply
from .replies import Answer, compose_answer, pieces

MAX_RECORDED_REQUESTS = 1000
MAX_RECORDED_SLEEPS = 10_000
_MAX_SEEN_PROMPTS = 1000
_BATCH_BYTES = 64 * 1024
_TAIL = b'},"finish_reason":null}]}\n\n'


@dataclass(frozen=True)
class Plan:
    """One chat request, checked, with its settings, answer and fault worked out."""

    id: str
    request: ChatRequest
    settings: dict[str, Any]
    answer: Answer
    fault: dict[str, Any]  # {} for none


class Emulator:
    """An Upstage-compatible chat server on loopback.

    ``async with Emulator(**cfg) as base_url`` starts it and yields e.g. ``"http://127.0.0.1:PORT/v1"``;
    ``await start()`` / ``await stop()`` do the same by hand. Its settings are listed in ``faults``.

    ``requests`` holds every chat request body received (plus ``"has_auth"``, never the key; not
    those refused by rate-limit mode, which ``rate_limited`` counts); ``connections`` counts the
    distinct client connections that reached the API routes, ``open_connections`` those open now,
    ``peak_connections`` the most open at once; ``sleeps`` every pause the emulator took (pacing,
    stalls, slow first byte), so tests can check pacing without a clock.
    """

    # Rate-limit mode (see ``faults``); class defaults keep __init__ untouched.
    rate_limit: dict[str, float] | None = None
    tool_fragments = "first"
    compat: str | None = None  # "openai-local": like a local OpenAI-compatible server (compat.py)
    local_model = "local-model"  # that server's one model
    rate_limited = 0
    _rate: RateWindow | None = None

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 tokens_per_second: float | None = None, reply: str = "markdown", answer_tokens: int | None = None,
                 reasoning: bool | None = None, reasoning_tokens: int | None = None, reasoning_field: str = "reasoning",
                 reject_fields: list[str] | tuple[str, ...] = ()) -> None:
        self.host, self.port, self.api_key = host, port, api_key
        self.reply = reply
        self.answer_tokens = answer_tokens
        self.reasoning = reasoning
        self.reasoning_tokens = reasoning_tokens
        self.reasoning_field = reasoning_field
        self.reject_fields: list[str] = list(reject_fields)
        self.tokens_per_second = tokens_per_second
        self.configure(**self._settings())  # validate
        self._initial = {"api_key": api_key, **self._settings()}
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
        #: Document Parse (``documents.py``): its own request log, jobs and settings.
        self.documents = DocumentParse(self._check_auth)

    # ----------------------------------------------------------------- configuration

    @property
    def connections(self) -> int:
        """Number of distinct client connections seen on the API routes."""
        return len(self._peers)

    @property
    def open_connections(self) -> int:
        """Client connections that reached the API routes and are still open."""
        return len(self._open)

    def _settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CONFIG_KEYS}

    def configure(self, **cfg: Any) -> None:
        """Change any setting listed in ``faults`` (and ``api_key``); ValueError if bad."""
        api_key = cfg.pop("api_key", self.api_key)
        values = check_config(cfg)
        self.api_key = api_key
        for key, value in values.items():
            setattr(self, key, value)

    def set_fault(self, fault: dict[str, Any] | None) -> None:
        """Make the next chat request(s) fail; ``None`` clears the fault."""
        self.fault = check_fault(fault) if fault is not None else None

    def reset(self) -> None:
        """Forget requests, faults and counters; back to the constructor's configuration."""
        self.requests.clear()
        self.sleeps.clear()
        self._seen_prompts.clear()
        self.fault = None
        self._peers.clear()
        self.peak_connections = len(self._open)
        self.rate_limit, self.rate_limited, self._rate = None, 0, None
        self.documents.reset()
        for key, value in self._initial.items():
            setattr(self, key, list(value) if isinstance(value, list) else value)

    async def _sleep(self, seconds: float) -> None:
        """Pause, and record the pause in ``sleeps``."""
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds)

    # ----------------------------------------------------------------- lifecycle

    def make_app(self) -> web.Application:
        """The aiohttp application (routes under /v1, /v1/solar and /_emulator)."""
        app = web.Application(middlewares=[self._count_connections], client_max_size=52 * 1024**2)
        app.on_response_prepare.append(_add_rate_headers)
        for base in ("/v1", "/v1/solar"):
            app.router.add_post(base + "/chat/completions", self._chat)
            app.router.add_get(base + "/models", self._models)
        for prefix in ("", "/v1"):
            app.router.add_post(prefix + "/_emulator/config", self._ctl_config)
            app.router.add_post(prefix + "/_emulator/fault", self._ctl_fault)
            app.router.add_get(prefix + "/_emulator/requests", self._ctl_requests)
            app.router.add_post(prefix + "/_emulator/reset", self._ctl_reset)
            app.router.add_get(prefix + "/_emulator/stats", self._ctl_stats)
        self.documents.add_routes(app, ("/v1",))
        return app

    async def start(self) -> str:
        """Start listening; returns the base URL."""
        if self._runner is not None:
            return self.base_url
        runner = web.AppRunner(self.make_app(), handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
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

    def _check_auth(self, request: web.Request) -> None:
        token = _bearer(request)
        if not token:
            raise Reject(401, "Missing API key. Send the header 'Authorization: Bearer <your key>'.",
                         "authentication_error", "invalid_api_key")
        if self.api_key is not None and token != self.api_key:
            raise Reject(401, "Invalid API key provided.", "authentication_error", "invalid_api_key")

    async def _models(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
        except Reject as exc:
            return exc.response
        data = [{"id": name, "object": "model", "created": CREATED, "owned_by": "upstage"} for name in [*MODELS, *MODELS.values()]]
        if self.compat:
            data = local_models(self.local_model)
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body, is_json = await request.json(loads=json.loads), True
        except (ValueError, UnicodeDecodeError):
            body, is_json = None, False
        if self.rate_limit and (limited := self._check_rate_limit(body)) is not None:
            return limited
        if self.rate_limit:
            request[_RATE_HEADERS] = self._granted_headers()  # sent with the answer (_add_rate_headers)
        if not is_json:
            return Reject(400, "The request body is not valid JSON.").response
        if not isinstance(body, dict):
            return Reject(400, "The request body must be a JSON object.").response
        self.requests.append({**body, "has_auth": bool(_bearer(request))})
        if len(self.requests) > MAX_RECORDED_REQUESTS:
            del self.requests[:-MAX_RECORDED_REQUESTS]
        try:
            self._check_auth(request)
            plan = self._plan(body)
        except Reject as exc:
            return exc.response
        fault = plan.fault
        kind = fault.get("kind")
        if kind == "slow_first_byte":
            await self._sleep(float(fault.get("seconds", 1.0)))
        if kind == "status":
            return status_reply(fault)
        if kind == "empty" and fault.get("body"):
            return web.Response(status=200, content_type="text/event-stream" if plan.request.stream else "application/json")
        if plan.request.stream:
            return await self._stream(request, plan)
        return await self._complete(request, plan)

    def _plan(self, body: dict[str, Any]) -> Plan:
        """Check a chat request and work out its answer (raises Reject)."""
        cfg, fault = self._request_settings(body)
        if cfg["compat"]:
            req = check_local_request(body, refused=cfg["reject_fields"], name=cfg["local_model"])
        else:
            req = check_request(body, refused=cfg["reject_fields"])
        fault = fault or self._take_fault()
        self._counter += 1
        plan_id = f"chatcmpl-emu-{self._counter}"
        answer = compose_answer(req, cfg, plan_id, cached_tokens=self._cached_tokens(req.messages),
                                empty=fault is not None and fault["kind"] == "empty")
        return Plan(plan_id, req, cfg, answer, fault or {})

    def _request_settings(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """This request's settings and fault: the server's, changed by the body's ``"emulator"`` object."""
        overrides = body.get("emulator") or {}
        if not isinstance(overrides, dict):
            raise Reject(400, "'emulator' must be an object.", param="emulator")
        overrides = dict(overrides)
        fault = overrides.pop("fault", None)
        try:
            return {**self._settings(), **check_config(overrides)}, check_fault(fault) if fault is not None else None
        except ValueError as exc:
            raise Reject(400, f"Bad 'emulator' override: {exc}", param="emulator") from None

    def _take_fault(self) -> dict[str, Any] | None:
        """The server's fault for this request, counted down (``times``; None: forever)."""
        fault = self.fault
        if fault is not None and fault.get("times", 1) is not None:
            times = fault.get("times", 1) - 1
            self.fault = {**fault, "times": times} if times > 0 else None
        return fault

    def _cached_tokens(self, messages: list[dict[str, Any]]) -> int:
        """Prompt tokens of the longest message prefix an earlier request sent (then remember this one)."""
        cached = 0
        for k in range(len(messages) - 1, 0, -1):
            if _prompt_key(messages[:k]) in self._seen_prompts:
                cached = word_count(messages[:k])
                break
        self._seen_prompts[_prompt_key(messages)] = None
        while len(self._seen_prompts) > _MAX_SEEN_PROMPTS:
            self._seen_prompts.popitem(last=False)
        return cached

    async def _complete(self, request: web.Request, plan: Plan) -> web.StreamResponse:
        """A non-streaming chat.completion reply (faults mapped to their closest form)."""
        fault, answer = plan.fault, plan.answer
        kind = fault.get("kind")
        if kind == "stall":
            await self._sleep(float(fault.get("seconds", 3600)))
        message: dict[str, Any] = {"role": "assistant", "content": "".join(answer.tokens)}
        if answer.reasoning:
            message[plan.settings["reasoning_field"]] = "".join(answer.reasoning)
        if answer.tool_calls:
            message["content"] = None
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in answer.tool_calls]
        choices = [{"index": i, "message": message, "finish_reason": answer.finish} for i in range(plan.request.n)]
        payload = _envelope(plan, "chat.completion", choices)
        if kind == "error_event":
            payload = error_body(fault.get("message", "The server had an error."), "server_error",
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

    async def _stream(self, request: web.Request, plan: Plan) -> web.StreamResponse:
        """A streaming reply: reasoning, then content or tool-call chunks, usage if asked, [DONE]."""
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                       "Cache-Control": "no-cache", "X-Request-Id": plan.id})
        await resp.prepare(request)
        out = _Events(request, resp, plan, self._sleep)
        answer, fault = plan.answer, plan.fault
        key = json.dumps(plan.settings["reasoning_field"]).encode() + b":"
        for piece in answer.reasoning:
            await out.emit(out.delta(key + json.dumps(piece).encode()))
        if answer.tool_calls:
            bodies = _tool_call_deltas(answer.tool_calls, repeat=plan.settings["tool_fragments"] == "repeat") + [b""]
        else:  # each distinct token encoded once
            encoded = {tok: b'"content":' + json.dumps(tok).encode() for tok in set(answer.tokens)}
            bodies = [encoded[tok] for tok in answer.tokens]
        n = len(bodies)
        after = int(fault.get("after", 0))
        finish_tail = ('},"finish_reason":"' + answer.finish + '"}]}\n\n').encode()
        for i in range(n + 1):
            if fault and i == after and not await self._play_fault(out, fault):
                return resp
            if i == n:
                if n == 0:
                    await out.emit(out.delta(b'"content":""', finish_tail))
                break
            await out.emit(out.delta(bodies[i], finish_tail if i == n - 1 else _TAIL))
        if plan.request.include_usage:
            await out.emit(b"data: " + json.dumps(_envelope(plan, "chat.completion.chunk", [])).encode() + b"\n\n")
        await out.emit(b"data: [DONE]\n\n")
        await out.flush()
        await resp.write_eof()
        return resp

    async def _play_fault(self, out: _Events, fault: dict[str, Any]) -> bool:
        """Play a stream fault where it belongs; False when the stream ends there."""
        kind = fault["kind"]
        if kind == "cut":
            await out.flush()
            if fault.get("clean"):
                await out.resp.write_eof()
            else:
                _abort(out.request)
            return False
        if kind == "malformed":
            await out.emit(b'data: {"id":"' + out.id + b'","choices":[{"index":0,"delta":{"content":"oops\n\n')
        elif kind == "error_event":
            err = error_body(fault.get("message", "The server had an error while streaming."),
                             "server_error", fault.get("code", "server_error"))
            await out.emit(b"data: " + json.dumps(err).encode() + b"\n\n")
            await out.flush()
            await out.resp.write_eof()
            return False
        elif kind == "stall":
            await out.flush()
            await self._sleep(float(fault.get("seconds", 3600)))
        elif kind == "invalid_utf8":
            await out.emit(out.delta(b'"content":"bad \xff\xfe bytes "'))
        return True

    # ----------------------------------------------------------------- rate limits and control endpoints

    def _check_rate_limit(self, body: Any) -> web.Response | None:
        """Rate-limit mode: None when the request (``body``: its JSON) may go on, else its 429 reply."""
        limits = self.rate_limit or {}
        if self._rate is None:
            self._rate = RateWindow()
        tokens = request_tokens(body) if "tpm" in limits else 0
        refused = self._rate.check(asyncio.get_running_loop().time(), limits, tokens)
        if refused is not None:
            self.rate_limited += 1
        return refused

    def _granted_headers(self) -> dict[str, str]:
        return dict(self._rate.granted) if self._rate is not None else {}

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
            return Reject(400, f"Bad emulator config: {exc}").response
        return web.json_response(self._settings())

    async def _ctl_fault(self, request: web.Request) -> web.Response:
        try:
            self.set_fault(await self._ctl_json(request))
        except (ValueError, TypeError) as exc:
            return Reject(400, f"Bad emulator fault: {exc}").response
        return web.json_response({"fault": self.fault})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"connections": self.connections, "open_connections": self.open_connections,
                                  "peak_connections": self.peak_connections, "requests": len(self.requests),
                                  "rate_limited": self.rate_limited})


class _Events:
    """Writes one stream's SSE events: batched at full speed, one per interval when paced."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, plan: Plan,
                 sleep: Callable[[float], Awaitable[None]]) -> None:
        self.request, self.resp, self.sleep = request, resp, sleep
        self.id = plan.id.encode()
        tps = plan.settings["tokens_per_second"]
        self.interval = 1.0 / tps if tps else 0.0
        self.head = (
            f'data: {{"id":"{plan.id}","object":"chat.completion.chunk","created":{CREATED},'
            f'"model":"{plan.request.model.dated_id}","choices":[{{"index":0,"delta":{{'
        ).encode()
        self.batch: list[bytes] = []
        self.size = 0
        self.first = True

    def delta(self, body: bytes, tail: bytes = _TAIL) -> bytes:
        """An event whose delta holds ``body`` (the first also names the role)."""
        if self.first:
            self.first = False
            body = b'"role":"assistant"' + (b"," + body if body else b"")
        return self.head + body + tail

    async def emit(self, event: bytes) -> None:
        if self.interval:
            await self.resp.write(event)
            await self.sleep(self.interval)
            return
        self.batch.append(event)
        self.size += len(event)
        if self.size >= _BATCH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if self.batch:
            data, self.batch, self.size = b"".join(self.batch), [], 0
            await self.resp.write(data)


def _envelope(plan: Plan, object_: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """A reply (or the last, usage-only event of a stream) with these choices."""
    return {"id": plan.id, "object": object_, "created": CREATED, "model": plan.request.model.dated_id,
            "choices": choices, "usage": plan.answer.usage}


def _tool_call_deltas(calls: list[dict[str, Any]], *, repeat: bool = False) -> list[bytes]:
    """Streamed delta bodies for tool calls: id, type and name first, then argument pieces.

    ``repeat``: the name and id in every fragment (as some OpenAI-compatible servers send them).
    """
    out: list[bytes] = []
    for call in calls:
        head = {"index": call["index"], "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        out.append(b'"content":null,"tool_calls":' + json.dumps([head]).encode())
        for piece in pieces(call["function"]["arguments"]):
            frag: dict[str, Any] = {"index": call["index"], "function": {"arguments": piece}}
            if repeat:
                frag = {**head, "function": {"name": call["function"]["name"], "arguments": piece}}
            out.append(b'"tool_calls":' + json.dumps([frag]).encode())
    return out


def _bearer(request: web.Request) -> str:
    """The request's Bearer token ("" for none)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _prompt_key(messages: list[Any]) -> str:
    """A short digest of a message list (for the prompt-cache imitation)."""
    return hashlib.sha1(json.dumps(messages, sort_keys=True).encode(), usedforsecurity=False).hexdigest()


def _abort(request: web.Request) -> None:
    """Close the connection now, mid-body (the client sees a cut stream)."""
    if request.transport is not None:
        request.transport.close()


_RATE_HEADERS = web.RequestKey("upstage_emulator_rate_headers", dict)


async def _add_rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Rate-limit mode: every answer carries the x-ratelimit-*-requests headers (like the real API)."""
    headers = request.get(_RATE_HEADERS)
    if headers:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
