"""A hostile OpenAI-compatible (Upstage) chat server for the tests: every field is an attack.

It plays a server (or a proxy in front of one) controlled by an attacker: it echoes the
request's ``Authorization`` bearer key and a set of payloads (event handlers, ``<script>``,
``javascript:`` links for Markdown and for autolinkers, TeX that paints colours or links)
into every field it sends: model ids in ``/models``, stream metadata (``id``, ``model``,
``system_fingerprint``), ``finish_reason``, usage fields, HTTP error bodies (JSON and HTML
pages with a ``<title>``) for 400/401/403/404/422/429/500/503, stream ``error`` events,
malformed events, tool calls (name and arguments), ``reasoning_content``, ``<think>``
blocks, JSON that fails a schema, code blocks.

One server serves every case: the mode is chosen per request by ``mode=NAME`` in the last
user message (a cell's prompt), or by a path prefix ``/m/NAME/v1`` (a base URL per mode,
also for ``/models``). Modes: see :data:`MODES`. ``NAME+keys`` (e.g. ``status-500+keys``)
puts the copies of the key before the payloads in every text (see :func:`hostile_text`).

The key is repeated many times in a text (``key + " "`` periodically), so whatever length a
client cuts a text to, the cut lands inside a copy of the key: a client that cuts before
it masks shows the key's beginning.

Runs in a thread with its own event loop on 127.0.0.1 (random port), so a synchronous test,
an async test and a kernel or browser started by the test can all use it.
"""
from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
from typing import Any

from aiohttp import web

__all__ = ["FLAG_PREFIX", "MODES", "PAYLOADS", "STATUSES", "HostileServer", "hostile_text", "make_key", "needles"]

FLAG_PREFIX = "__hostile_"
# TeX first: in short fields (a finish reason cut to 100 characters, a failures table's
# 160) it survives the cut and reaches our HTML as text, where a front end's MathJax would
# typeset it if our outputs did not opt out.
PAYLOADS = (
    r"\(\color{red}\colorbox{red}{SESSION EXPIRED}\)",
    f'<img src=x onerror="window.{FLAG_PREFIX}img=1">',
    f"<script>window.{FLAG_PREFIX}script=1</script>",
    f'<a href="javascript:window.{FLAG_PREFIX}a=1">a</a>',
    f"[markdown link](javascript:window.{FLAG_PREFIX}md=1)",
    f"[ref link][r]\n\n[r]: javascript:window.{FLAG_PREFIX}ref=1\n",
    f"javascript://%0Awindow.{FLAG_PREFIX}autolink=1",
    "vbscript://x data://text/html,x",
    f"$$\\href{{javascript:window.{FLAG_PREFIX}href=1}}{{x}}$$",
    r"$\color{red}{RED}\mathbin{\style{background:red}{x}}$",
    f'<svg onload="window.{FLAG_PREFIX}svg=1"></svg>',
    f'<div style="position:fixed;inset:0;background:red" onmouseover="window.{FLAG_PREFIX}div=1">X</div>',
)
STATUSES = (400, 401, 403, 404, 422, 429, 500, 503)
MODES = (
    "answer",  # streamed (or JSON without stream) answer; every metadata field hostile
    "slow",  # the same, a few characters per event with pauses (a key streamed in parts)
    "reasoning",  # reasoning_content deltas, then the answer
    "think",  # a leading <think> block in the content
    "tool",  # a tool call: hostile name and arguments (in two deltas)
    "json",  # valid JSON whose strings are hostile (for -f json / -o)
    "badjson",  # JSON that fails a schema (the reply is quoted in the error)
    "code",  # a code block holding the key and payloads
    *(f"status-{s}" for s in STATUSES),  # JSON error body
    *(f"html-{s}" for s in STATUSES),  # HTML error page with a <title>
    "text-500",  # a plain-text error body
    "error-event",  # some text, then data: {"error": {...}}
    "event-error",  # some text, then "event: error" with plain-text data
    "malformed",  # some text, then an event that is not JSON
)
_MODE = re.compile(r"mode=([a-z0-9+-]+)")


def make_key() -> str:
    """A canary key built at run time, not key-shaped (only the registry can mask it).

    Long (106 characters), so a text cut inside one of its copies almost always keeps more
    than the 12 characters the needles look for: a client that cuts before it masks shows.
    """
    return "hk-CANARY-" + secrets.token_hex(48)


def needles(key: str) -> dict[str, str]:
    """The key and its first and last 12 characters: none may show anywhere."""
    return {"key": key, "key-head": key[:12], "key-tail": key[-12:]}


def find_needles(text: str, key: str, where: str) -> list[str]:
    """One line per needle found in ``text`` (with some context)."""
    hits = []
    for name, n in needles(key).items():
        i = text.find(n)
        if i >= 0:
            hits.append(f"{where}: {name} at {i}: ...{text[max(0, i - 80):i + 40]!r}...")
    return hits


def hostile_text(key: str, field: str, *, repeat: int = 30, keys_first: bool = False) -> str:
    """The payloads and the key (whole, then ``repeat`` times back to back) for one field.

    ``keys_first``: the copies of the key come before the payloads, so a text cut anywhere
    in its first ``repeat * (len(key) + 1)`` characters is cut inside a key.
    """
    keys = (key + " ") * repeat
    if keys_first:
        return f"[{field}] key={key} " + keys + " ".join(PAYLOADS)
    return f"[{field}] " + " ".join(PAYLOADS) + f" key={key} " + keys


class HostileServer:
    """The hostile server on 127.0.0.1 (random port) in a thread; ``base_url`` ends in /v1."""

    def __init__(self, *, repeat: int = 20) -> None:
        self.repeat = repeat
        self.requests: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="hostile-server")
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> HostileServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/m/{mode}/v1/{tail:.*}", self._handle)
        app.router.add_route("*", "/v1/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def mode_url(self, mode: str) -> str:
        """A base URL whose every request is served in ``mode``."""
        return f"{self.root}/m/{mode}/v1"

    # -- requests ------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        key = auth.split(" ", 1)[1] if " " in auth else auth
        body: Any = None
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                body = None
        mode = request.match_info.get("mode") or _mode_of(body) or "answer"
        mode, _, layout = mode.partition("+")
        tail = request.match_info["tail"]
        self.requests.append({"path": request.path, "mode": mode, "body": body})
        h = _Hostile(key, self.repeat, keys_first=layout == "keys")
        if mode.startswith(("status-", "html-", "text-")):
            return h.error_page(mode)
        if tail.startswith("models"):
            return h.models()
        if tail.startswith("chat/completions"):
            stream = bool(isinstance(body, dict) and body.get("stream"))
            return await h.stream(request, mode) if stream else h.completion(mode)
        return h.error_page("status-404")


def _mode_of(body: Any) -> str | None:
    """``mode=NAME`` in the last user message of a chat request."""
    if not isinstance(body, dict):
        return None
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            m = _MODE.search(text)
            return m.group(1) if m else None
    return None


class _Hostile:
    """The replies of one request, every text field built from the request's key."""

    def __init__(self, key: str, repeat: int, *, keys_first: bool = False) -> None:
        self.key = key
        self.repeat = repeat
        self.keys_first = keys_first

    def t(self, field: str, repeat: int | None = None) -> str:
        return hostile_text(self.key, field, repeat=self.repeat if repeat is None else repeat,
                            keys_first=self.keys_first)

    def usage(self) -> dict[str, Any]:
        return {"prompt_tokens": 3, "completion_tokens": 12, "total_tokens": 15,
                "completion_tokens_details": {"reasoning_tokens": self.t("usage.reasoning_tokens", 2)},
                "prompt_tokens_details": {"cached_tokens": self.t("usage.cached_tokens", 2)},
                "note": self.t("usage.note", 2)}

    def meta(self) -> dict[str, Any]:
        return {"id": self.t("id", 2), "object": "chat.completion.chunk", "created": 1,
                "model": self.t("model", 2), "system_fingerprint": self.t("system_fingerprint", 2)}

    def models(self) -> web.Response:
        ids = [self.t(f"model-id-{i}", 1) for i in range(2)] + ["solar-pro2"]
        data = [{"id": i, "object": "model", "created": 1, "owned_by": self.t("owned_by", 1)} for i in ids]
        return web.json_response({"object": "list", "data": data})

    def content(self, mode: str) -> str:
        if mode == "json":
            return json.dumps({"answer": self.t("json.answer"), "items": [self.t("json.item", 2)]})
        if mode == "badjson":
            return json.dumps({"n": self.t("badjson.n")})
        if mode == "code":
            return "```python\n# " + self.t("code") + f"\nprint({self.key!r})\n```\n" + self.t("after-code", 2)
        if mode == "think":
            return "<think>" + self.t("think") + "</think>\n\n" + self.t("content")
        if mode == "tool":
            return ""
        if mode == "slow":
            return self.t("content", 3)  # a few copies: the pieces are what matters
        return self.t("content")

    def error_page(self, mode: str) -> web.Response:
        kind, _, code = mode.partition("-")
        status = int(code)
        headers = {"Retry-After": "0"}  # retried at once: the test stays fast
        if kind == "html":
            page = (f"<!doctype html><html><head><title>{self.t('html.title')}</title></head>"
                    f"<body><h1>{self.t('html.h1', 2)}</h1>{self.t('html.body', 2)}</body></html>")
            return web.Response(status=status, text=page, content_type="text/html", headers=headers)
        if kind == "text":
            return web.Response(status=status, text=self.t("text.body"), headers=headers)
        body = {"error": {"message": self.t(f"error.message.{status}"), "type": self.t("error.type", 1),
                          "code": self.t("error.code", 1), "param": self.t("error.param", 1)}}
        return web.json_response(body, status=status, headers=headers)

    def completion(self, mode: str) -> web.Response:
        """The non-streamed reply (``stream: false``)."""
        if mode in ("error-event", "event-error", "malformed"):
            return web.json_response({"error": {"message": self.t("error.nostream"), "code": self.t("code", 1)}},
                                     status=200)
        message: dict[str, Any] = {"role": "assistant", "content": self.content(mode)}
        if mode == "reasoning":
            message["reasoning_content"] = self.t("reasoning_content")
        if mode == "tool":
            message["tool_calls"] = [self.tool_call()]
        choice = {"index": 0, "message": message, "finish_reason": self.t("finish_reason", 1)}
        return web.json_response({**self.meta(), "object": "chat.completion", "choices": [choice],
                                  "usage": self.usage()})

    def tool_call(self, arguments: str | None = None) -> dict[str, Any]:
        return {"index": 0, "id": self.t("tool.id", 1), "type": "function",
                "function": {"name": self.t("tool.name", 1),
                             "arguments": json.dumps({"q": self.t("tool.arguments", 2)}) if arguments is None
                             else arguments}}

    def events(self, mode: str) -> list[str | dict[str, Any]]:
        """The stream's events: dicts are sent as JSON data, strings as they are."""
        meta = self.meta()

        def delta(d: dict[str, Any], finish: Any = None) -> dict[str, Any]:
            return {**meta, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

        out: list[str | dict[str, Any]] = [delta({"role": "assistant", "content": ""})]
        step = 5 if mode == "slow" else 64
        if mode == "reasoning":
            r = self.t("reasoning_content")
            out += [delta({"reasoning_content": r[i:i + step]}) for i in range(0, len(r), step)]
        if mode == "tool":
            args = json.dumps({"q": self.t("tool.arguments", 2)})
            first = self.tool_call(args[: len(args) // 2])
            out.append(delta({"tool_calls": [first]}))
            out.append(delta({"tool_calls": [{"index": 0, "function": {"arguments": args[len(args) // 2:]}}]}))
        text = self.content(mode) if mode not in ("error-event", "event-error", "malformed") else self.t("before", 1)
        out += [delta({"content": text[i:i + step]}) for i in range(0, len(text), step)]
        if mode == "error-event":
            out.append({"error": {"message": self.t("stream.error"), "type": self.t("stream.type", 1),
                                  "code": self.t("stream.code", 1)}})
            return out
        if mode == "event-error":
            out.append("event: error\ndata: " + self.t("event.error").replace("\n", " "))
            return out
        if mode == "malformed":
            out.append("data: {" + self.t("malformed").replace("\n", " "))
            return out
        out.append(delta({}, self.t("finish_reason", 1)))
        out.append({**meta, "choices": [], "usage": self.usage()})
        out.append("data: [DONE]")
        return out

    async def stream(self, request: web.Request, mode: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Request-Id": self.t("x-request-id", 1).replace("\n", " ")})
        await resp.prepare(request)
        pause = 0.004 if mode == "slow" else 0.0
        for ev in self.events(mode):
            frame = ev if isinstance(ev, str) else "data: " + json.dumps(ev)
            await resp.write((frame + "\n\n").encode())
            if pause:
                await asyncio.sleep(pause)
        await resp.write_eof()
        return resp
