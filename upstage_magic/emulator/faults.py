"""The emulator's settings and faults (validated), and its rate-limit mode.

Settings (``Emulator(**cfg)``, ``configure(**cfg)``, ``POST /_emulator/config`` or per
request in an ``"emulator": {...}`` object of the body, which may also carry a ``"fault"``):

- ``reply``, ``answer_tokens``, ``reasoning_tokens``: what to answer (see ``replies``).
- ``reasoning``: ``None`` (default: by model and effort, see ``api``), ``True`` (always
  reason; length by the effort sent, else medium) or ``False`` (never).
- ``reasoning_field``: ``"reasoning"`` (Upstage, default), ``"reasoning_content"`` (other
  OpenAI-compatible servers) or ``"think"`` (``<think>...</think>`` opening ``content``, as
  servers without a reasoning parser send it).
- ``reject_fields``: request fields refused with 400 naming them (like OpenAI-compatible
  servers that do not know ``stream_options``), e.g. ``["stream_options"]``.
- ``tool_fragments``: ``"first"`` (default: a streamed tool call's id and name in its first
  fragment only, as OpenAI and Upstage send them) or ``"repeat"`` (in every fragment).
- ``compat``: ``None`` (default: Upstage's API) or ``"openai-local"``: behave like a local
  OpenAI-compatible server (json_schema refused with a 500 validation error, ``/models``
  naming only ``local-model``, no usage in streams; see ``compat``).
- ``local_model``: the one model's name in compat mode (default ``"local-model"``; a local
  server may call its model anything, ``"solar-pro2"`` too).
- ``tokens_per_second``: pace the stream (one event per interval), default full speed.
- ``rate_limit``: rate-limit mode (``{"rps": 100, "rpm": 3000, "tpm": 100000}``, any subset;
  ``None`` turns it off): like the real API, a chat request over a limit gets a 429 with
  ``Retry-After`` (whole seconds), ``retry-after-ms`` and ``x-ratelimit-limit-requests`` /
  ``-remaining-requests`` / ``-reset-requests`` (and ``-tokens`` equivalents). Windows slide
  (1 s for rps, 60 s for rpm/tpm); a request's tokens are its prompt's words plus its
  ``max_tokens``. Refused requests are not recorded in ``requests``; ``rate_limited`` counts them.

Faults (``set_fault``, ``POST /_emulator/fault`` or per request), each with ``"times"``
(default 1, ``null`` = forever); ``after`` counts content events:

- ``{"kind": "status", "status": 429, "message": "...", "retry_after": 1, "body": None}``; a 429
  carries ``x-ratelimit-limit-requests`` (``"limit"``, default 100), ``-remaining-requests: 0``
  and ``-reset-requests`` (``retry_after``, default 1, as ``"1s"``), and ``Retry-After`` if given
- ``{"kind": "cut", "after": N}``: close the connection mid-answer (``"clean": true``
  ends the HTTP body properly instead, still without finish_reason/[DONE])
- ``{"kind": "malformed", "after": N}``: one event whose data is not JSON
- ``{"kind": "error_event", "after": N, "message": "...", "code": "..."}``
- ``{"kind": "stall", "after": N, "seconds": S}``: go silent for S seconds, then go on
- ``{"kind": "slow_first_byte", "seconds": S}``: wait before sending the headers
- ``{"kind": "invalid_utf8", "after": N}``: one content event with bytes that are not UTF-8
- ``{"kind": "empty"}``: an answer with no text (``"body": true``: an empty 200 body)
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any

from aiohttp import web

from .api import STATUS_DEFAULTS, error_body, is_count, word_count
from .compat import COMPAT_MODES

CONFIG_KEYS = ("reply", "answer_tokens", "reasoning", "reasoning_tokens", "reasoning_field", "reject_fields",
               "tokens_per_second", "rate_limit", "tool_fragments", "compat",
               "local_model")
REASONING_FIELDS = ("reasoning", "reasoning_content", "think")
#: How streamed tool calls are split: "first" (id and name in the first fragment only, as
#: OpenAI and Upstage do) or "repeat" (name and id in every fragment, as some servers do).
TOOL_FRAGMENTS = ("first", "repeat")
FAULT_KINDS = ("status", "cut", "malformed", "error_event", "stall", "slow_first_byte", "invalid_utf8", "empty")


def check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate configure()/override keys (raises ValueError)."""
    unknown = set(cfg) - set(CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: {', '.join(CONFIG_KEYS)}, fault")
    out = dict(cfg)
    for key, ok, what in (
        ("reply", lambda v: isinstance(v, str), "a string"),
        ("answer_tokens", lambda v: v is None or is_count(v, 0), "a non-negative integer or null"),
        ("tokens_per_second", lambda v: v is None or _is_positive(v), "a positive number or null"),
        ("reasoning_tokens", lambda v: v is None or is_count(v, 0), "a non-negative integer or null"),
        ("reasoning_field", lambda v: v in REASONING_FIELDS, f"one of {', '.join(REASONING_FIELDS)}"),
        ("tool_fragments", lambda v: v in TOOL_FRAGMENTS, f"one of {', '.join(TOOL_FRAGMENTS)}"),
        ("compat", lambda v: v in COMPAT_MODES, "null or 'openai-local'"),
        ("local_model", lambda v: isinstance(v, str) and 0 < len(v) <= 200, "a model name"),
        ("reject_fields", lambda v: isinstance(v, (list, tuple)) and all(isinstance(f, str) for f in v),
         "a list of request field names"),
    ):
        if key in out and not ok(out[key]):
            raise ValueError(f"'{key}' must be {what}")
    if out.get("reasoning") is not None:
        out["reasoning"] = bool(out["reasoning"])
    if "reject_fields" in out:
        out["reject_fields"] = list(out["reject_fields"])
    if out.get("rate_limit") is not None:
        out["rate_limit"] = _check_rate_limit(out["rate_limit"])
    return out


def _check_rate_limit(cfg: Any) -> dict[str, float]:
    """Validate a ``rate_limit`` config: {"rps"|"rpm"|"tpm": positive number} (raises ValueError)."""
    if not isinstance(cfg, dict) or not cfg or set(cfg) - {"rps", "rpm", "tpm"}:
        raise ValueError("'rate_limit' is an object with some of 'rps', 'rpm', 'tpm' (or null)")
    for key, value in cfg.items():
        if not _is_positive(value):
            raise ValueError(f"'rate_limit.{key}' must be a positive number")
    return dict(cfg)


def _is_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def check_fault(fault: Any) -> dict[str, Any]:
    """Validate a fault dict (raises ValueError)."""
    if not isinstance(fault, dict):
        raise ValueError("a fault is a JSON object with a 'kind'")
    kind = fault.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
    times = fault.get("times", 1)
    if times is not None and not is_count(times, 1):
        raise ValueError("'times' must be a positive integer or null (forever)")
    for key in ("after", "status"):
        if fault.get(key) is not None and not is_count(fault[key], 0):
            raise ValueError(f"{key!r} must be a non-negative integer")
    if kind == "status" and not 400 <= int(fault.get("status", 500)) <= 599:
        raise ValueError("'status' must be 400..599")
    return dict(fault)


def status_reply(fault: dict[str, Any]) -> web.Response:
    """The reply of a ``status`` fault: the API's error body (or the fault's own) and headers."""
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
    message, type_, code = STATUS_DEFAULTS.get(status, ("Error.", "server_error" if status >= 500 else "invalid_request_error", None))
    body = error_body(fault.get("message") or message, type_, fault.get("code", code))
    return web.json_response(body, status=status, headers=headers)


def rate_limit_headers(*, limit: int, remaining: int, reset_seconds: float,
                       retry_after: float | None = None) -> dict[str, str]:
    """The rate-limit headers the real API sends (``x-ratelimit-*-requests``, ``retry-after``)."""
    headers = {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(max(0, remaining)),
        "x-ratelimit-reset-requests": f"{_num(reset_seconds)}s",
    }
    if retry_after is not None:
        headers["Retry-After"] = _num(retry_after)
    return headers


def _num(x: float) -> str:
    """A number as a header value: ``2``, not ``2.0``."""
    return str(int(x)) if float(x).is_integer() else str(x)


def request_tokens(body: Any) -> int:
    """A request's tokens for tpm: its prompt's words plus max_tokens (0 if unreadable)."""
    try:
        words = word_count(body["messages"])
        max_tokens = body.get("max_tokens")
    except (KeyError, TypeError, AttributeError):
        return 0
    return words + (max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0)


class RateWindow:
    """Sliding-window counters for rate-limit mode (times from the event loop's clock)."""

    def __init__(self) -> None:
        #: The x-ratelimit-*-requests headers of the request ``check`` let through last.
        self.granted: dict[str, str] = {}
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
            self.granted = self.headers(now, limits)
            return None
        wait = max(0.001, max(o[2] for o in over))
        headers = {"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(math.ceil(wait * 1000))}
        for what, limit, w, used in over:
            headers[f"x-ratelimit-limit-{what}"] = str(int(limit))
            headers[f"x-ratelimit-remaining-{what}"] = str(max(0, int(limit - used)))
            headers[f"x-ratelimit-reset-{what}"] = f"{max(0.001, w):.3f}s"
        kinds = " and ".join(sorted({o[0] for o in over}))
        body = error_body(f"Rate limit reached for {kinds}. Please retry after {wait:.3f} s.",
                          "requests" if "requests" in kinds else "tokens", "rate_limit_exceeded")
        return web.json_response(body, status=429, headers=headers)

    def headers(self, now: float, limits: dict[str, float]) -> dict[str, str]:
        """The request limit nearest to running out, as the real API reports it on every answer.

        ``limit`` and ``remaining`` in the window; ``reset``: time until the window is back to
        full (its newest request leaves it). Nothing when only ``tpm`` is configured.
        """
        best: tuple[int, float, float] | None = None  # (remaining, limit, reset)
        for span, window, limit in ((1.0, self.second, limits.get("rps")), (60.0, self.minute, limits.get("rpm"))):
            if limit is None:
                continue
            left = max(0, int(limit - len(window)))
            reset = max(0.0, window[-1] + span - now) if window else 0.0
            if best is None or left < best[0]:
                best = (left, limit, reset)
        if best is None:
            return {}
        return rate_limit_headers(limit=int(best[1]), remaining=best[0], reset_seconds=round(best[2], 3))
