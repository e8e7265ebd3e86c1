"""Fault matrix: every fault through every entry point, against the emulator.

Entry points: ``provider`` (``Upstage.create_async_generator`` in this process),
``magic`` (``%%upstage`` in a real ipykernel) and ``widget`` (``ChatWidget.send`` in a
real ipykernel). One emulator (``serve_in_thread``) serves all three; faults are set
through its HTTP control endpoints before each request.

For each (fault, entry point) the outcome must be: the expected error class (or success),
a short clear message (no traceback, no aiohttp internals dumped), the partial text kept
exactly, the session consistent (the failed/cut turn recorded once with the right
status), the kernel alive, and the next request working.

The table and its runners live here (``tests.support.fault_matrix``);
``tests/test_fault_matrix.py`` runs it as one pytest case per cell, and
``benchmarks/fault_matrix.py`` is the command line that prints the whole table:

    .venv/bin/python benchmarks/fault_matrix.py [--entry provider,magic,widget] [--fault NAME]

Retries: the provider's retry wait (``upstage_magic.providers.http._sleep``) is wrapped
by a recorder that logs every requested delay and sleeps at most ``Fault.sleep_cap``
seconds, so "for ever" faults stay fast while the delay the provider *asked for* (e.g. the
Retry-After value) is still checked exactly. "429 then success" sleeps for real (cap None)
and its wall time is checked as a lower bound.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import EmulatorControl, KernelSession, free_port

KEY = "test-key-FAULTMATRIX-1"
PROMPT = "Fault matrix question"
NEXT_PROMPT = "Are you still there"
ENTRY_POINTS = ("provider", "magic", "widget")
MAX_MESSAGE_CHARS = 700  # a "short" message: one paragraph, not a dump


def big_reply(min_bytes: int = 5 * 1024 * 1024) -> str:
    """A deterministic answer of at least ``min_bytes`` (ASCII), in ~80-byte tokens."""
    unit = "abcdefghijklmnopqrstuvwxyz0123456789" * 2
    parts: list[str] = []
    size = 0
    i = 0
    while size < min_bytes:
        piece = f"seg{i:06d}_{unit}" + ("\n" if i % 10 == 9 else " ")
        parts.append(piece)
        size += len(piece)
        i += 1
    return "".join(parts)


# --------------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """One row of the matrix: what the emulator does and what every entry point must show."""

    name: str
    title: str
    fault: dict[str, Any] | None = None  # emulator fault (POST /_emulator/fault)
    config: dict[str, Any] = field(default_factory=dict)  # emulator config for this row
    error: str | None = None  # expected UpstageError subclass name; None = success
    status: str | None = None  # expected turn status (default: "error" / "done")
    partial: int | None = None  # tokens of the answer kept before the break
    message: tuple[str, ...] = ()  # every one must appear in the message (case-insensitive)
    model: str | None = None
    base_url: str | None = None  # "closed" (refused port), or a URL
    proxy: str | None = None  # "closed": a proxy on a refused loopback port
    timeout: float | None = None  # idle timeout for this request
    max_tokens: int | None = None
    attempts: int | None = None  # chat requests the emulator must see
    delays: tuple[float, ...] | None = None  # retry waits the provider must ask for (+-25 % if jitter)
    jitter: bool = False
    sleep_cap: float | None = 0.02  # real sleep per retry wait at most (None = sleep for real)
    min_elapsed: float = 0.0  # lower bound on the request's wall time
    replaced: bool = False  # invalid UTF-8: expect U+FFFD in the text

    @property
    def expected_status(self) -> str:
        return self.status or ("error" if self.error else "done")


BIG = "big"  # marker: config reply = big_reply()
NGINX_502 = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
             "</center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n")

FAULTS: list[Fault] = [
    Fault("http_400", "HTTP 400", {"kind": "status", "status": 400, "message": "Bad parameter 'temperature'."},
          error="BadRequestError", message=("400", "temperature"), attempts=1),
    Fault("http_401", "HTTP 401", {"kind": "status", "status": 401}, error="AuthenticationError",
          message=("401", "UPSTAGE_API_KEY"), attempts=1),
    Fault("http_403", "HTTP 403", {"kind": "status", "status": 403}, error="AuthenticationError",
          message=("403",), attempts=1),
    Fault("unknown_model", "404 unknown model", None, model="no-such-model", error="ModelNotFoundError",
          message=("no-such-model", "model"), attempts=1),
    Fault("http_422", "HTTP 422", {"kind": "status", "status": 422, "message": "messages[0].content is too long."},
          error="BadRequestError", message=("422", "too long"), attempts=1),
    Fault("429_then_ok", "429 then success (Retry-After: 1)",
          {"kind": "status", "status": 429, "retry_after": 1, "times": 1},
          attempts=2, delays=(1.0,), sleep_cap=None, min_elapsed=1.0),
    Fault("429_forever", "429 for ever", {"kind": "status", "status": 429, "retry_after": 1, "times": None},
          error="RateLimitError", message=("429",), attempts=4, delays=(1.0, 1.0, 1.0)),
    Fault("500_then_ok", "500 then success", {"kind": "status", "status": 500, "times": 1},
          attempts=2, delays=(0.5,), jitter=True),
    Fault("503_forever", "503 for ever", {"kind": "status", "status": 503, "times": None},
          error="ServerError", message=("503",), attempts=4, delays=(0.5, 1.0, 2.0), jitter=True),
    Fault("conn_refused", "connection refused", None, base_url="closed", error="APIConnectionError",
          message=("connect",), attempts=0, delays=(0.5, 1.0, 2.0), jitter=True),
    Fault("dns_failure", "DNS failure (nonexistent.invalid)", None, base_url="http://nonexistent.invalid/v1",
          error="APIConnectionError", message=("resolve",), attempts=0, delays=(0.5, 1.0, 2.0), jitter=True),
    Fault("cut", "stream cut mid-answer", {"kind": "cut", "after": 7}, error="IncompleteStreamError",
          partial=7, message=("kept",), attempts=1),
    Fault("malformed", "malformed event", {"kind": "malformed", "after": 7}, error="MalformedEventError",
          partial=7, message=("not valid JSON",), attempts=1),
    Fault("error_event", "error event in the stream",
          {"kind": "error_event", "after": 7, "message": "Engine overloaded mid-answer."},
          error="StreamErrorEvent", partial=7, message=("Engine overloaded mid-answer",), attempts=1),
    Fault("stall", "stall (idle timeout 1 s)", {"kind": "stall", "after": 7, "seconds": 4}, timeout=1.0,
          error="APITimeoutError", partial=7, message=("stalled",), attempts=1),
    Fault("slow_first_byte", "slow first byte (1 s, timeout 3 s)", {"kind": "slow_first_byte", "seconds": 1.0},
          timeout=3.0, attempts=1, min_elapsed=1.0),
    Fault("answer_5mb", "answer of 5 MB", None, config={"reply": BIG}, attempts=1),
    Fault("empty", "empty answer", {"kind": "empty"}, attempts=1),
    Fault("invalid_utf8", "invalid UTF-8 bytes", {"kind": "invalid_utf8", "after": 7}, attempts=1, replaced=True),
    Fault("length", 'finish_reason "length"', None, max_tokens=10, status="length", partial=10, attempts=1),
    Fault("proxy_refused", "proxy refuses", None, proxy="closed", error="APIConnectionError",
          message=("proxy",), attempts=0, delays=(0.5, 1.0, 2.0), jitter=True),
    # Beyond the list:
    Fault("429_too_long", "429 with Retry-After: 120 (too long)",
          {"kind": "status", "status": 429, "retry_after": 120, "times": 1},
          error="RateLimitError", message=("429", "120"), attempts=1),
    Fault("502_html", "502 HTML error page (proxy)",
          {"kind": "status", "status": 502, "times": None, "body": NGINX_502},
          error="ServerError", message=("502", "Bad Gateway"), attempts=4, delays=(0.5, 1.0, 2.0), jitter=True),
    Fault("cut_clean", "stream ends without [DONE]", {"kind": "cut", "after": 7, "clean": True},
          error="IncompleteStreamError", partial=7, attempts=1),
    Fault("first_byte_timeout", "no first byte within timeout (1 s)", {"kind": "slow_first_byte", "seconds": 3.0},
          timeout=1.0, error="APITimeoutError", message=("timeout",), attempts=1),
    Fault("empty_body", "empty 200 body", {"kind": "empty", "body": True}, error="IncompleteStreamError",
          attempts=1),
]
FAULTS_BY_NAME = {f.name: f for f in FAULTS}


# ------------------------------------------------------------------------ expected answers


def messages_for(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def expected_text(f: Fault, prompt: str = PROMPT) -> str:
    """The exact answer text an entry point must end up with for fault ``f``."""
    from upstage_magic.emulator import canned_reply, tokenize

    if f.fault and f.fault.get("kind") == "empty":
        return ""
    reply = f.config.get("reply", "markdown")
    full = canned_reply(messages_for(prompt), big_reply() if reply == BIG else reply)
    tokens = tokenize(full)
    if f.replaced:
        n = f.fault["after"]  # type: ignore[index]
        return "".join(tokens[:n]) + "bad \ufffd\ufffd bytes " + "".join(tokens[n:])
    if f.partial is not None:
        return "".join(tokens[: f.partial])
    if f.error:
        return ""
    return full


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# ------------------------------------------------------------------------ emulator control


class MatrixControl(EmulatorControl):
    """The emulator's control endpoints plus what a matrix row needs (a refused port, options)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.closed_port = free_port()

    def prepare(self, f: Fault) -> None:
        """Reset, then configure the emulator for row ``f``."""
        self.reset()
        if f.config:
            cfg = dict(f.config)
            if cfg.get("reply") == BIG:
                cfg["reply"] = big_reply()
            self.config(**cfg)
        if f.fault is not None:
            self.fault(f.fault)

    def chat_requests(self) -> int:
        return len(self.requests())

    def request_options(self, f: Fault) -> dict[str, Any]:
        """base_url / proxy / timeout / max_tokens for row ``f`` (None = default)."""
        opts: dict[str, Any] = {}
        if f.base_url == "closed":
            opts["base_url"] = f"http://127.0.0.1:{self.closed_port}/v1"
        elif f.base_url:
            opts["base_url"] = f.base_url
        if f.proxy == "closed":
            opts["proxy"] = f"http://127.0.0.1:{self.closed_port}"
        if f.timeout is not None:
            opts["timeout"] = f.timeout
        if f.max_tokens is not None:
            opts["max_tokens"] = f.max_tokens
        return opts


# ------------------------------------------------------------------------------ outcomes


@dataclass
class Observation:
    """What one entry point did for one fault (filled by a runner, judged by ``judge``)."""

    error: str | None = None  # error class name seen (None = success)
    message: str = ""  # the message shown to the user
    text: str | None = None  # answer text kept (or None if only len/hash are known)
    text_len: int = 0
    text_hash: str = ""
    statuses: list[str] = field(default_factory=list)  # session turn statuses after the request
    next_statuses: list[str] = field(default_factory=list)  # ... after the next request
    next_ok: bool = False
    next_detail: str = ""
    alive: bool = True
    attempts: int | None = None
    delays: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    problems: list[str] = field(default_factory=list)  # entry-specific problems found by the runner


@dataclass
class Outcome:
    fault: str
    entry: str
    ok: bool
    summary: str
    problems: list[str]
    elapsed: float
    message: str = ""


def judge(f: Fault, entry: str, obs: Observation) -> Outcome:
    """Compare an observation with what row ``f`` expects."""
    problems = list(obs.problems)
    exp_text = expected_text(f)
    if obs.error != f.error:
        problems.append(f"error class {obs.error!r}, expected {f.error!r} ({obs.message[:200]!r})")
    if f.error:
        msg = obs.message
        if not msg.strip():
            problems.append("no message shown")
        if len(msg) > MAX_MESSAGE_CHARS:
            problems.append(f"message too long ({len(msg)} chars)")
        if "Traceback" in msg:
            problems.append("message contains a traceback")
        nested = re.search(r"<\w*(?:Error|Exception)\b[^>]*>", msg)
        if nested:  # e.g. aiohttp's "<TransferEncodingError: 400, message=...>": internals, and "400" misleads
            problems.append(f"message dumps a nested exception repr: {nested.group(0)[:120]!r}")
        if re.search(r"<(html|head|body|title|center|h1)\b", msg, re.I):
            problems.append(f"message shows raw HTML markup: {msg[:160]!r}")
        for word in f.message:
            if word.lower() not in msg.lower():
                problems.append(f"message lacks {word!r}: {msg[:240]!r}")
    if obs.text is not None:
        if obs.text != exp_text:
            problems.append(f"text differs: got {len(obs.text)} chars {obs.text[:60]!r}..., "
                            f"expected {len(exp_text)} chars {exp_text[:60]!r}...")
    elif (obs.text_len, obs.text_hash) != (len(exp_text), digest(exp_text)):
        problems.append(f"text differs: got {obs.text_len} chars ({obs.text_hash}), expected "
                        f"{len(exp_text)} ({digest(exp_text)})")
    if obs.statuses != [f.expected_status]:
        problems.append(f"session turns {obs.statuses}, expected [{f.expected_status!r}]")
    if obs.next_statuses != [f.expected_status, "done"]:
        problems.append(f"after the next request: turns {obs.next_statuses}, "
                        f"expected [{f.expected_status!r}, 'done']")
    if not obs.alive:
        problems.append("kernel died")
    if not obs.next_ok:
        problems.append(f"next request failed: {obs.next_detail[:300]}")
    if f.attempts is not None and obs.attempts is not None and obs.attempts != f.attempts:
        problems.append(f"{obs.attempts} chat requests reached the emulator, expected {f.attempts}")
    if f.delays is not None:
        got = obs.delays
        if len(got) != len(f.delays):
            problems.append(f"retry waits {got}, expected {list(f.delays)}")
        else:
            for g, e in zip(got, f.delays, strict=True):
                lo, hi = (e * 0.75 - 1e-6, e * 1.25 + 1e-6) if f.jitter else (e - 1e-6, e + 1e-6)
                if not lo <= g <= hi:
                    problems.append(f"retry wait {g:.3f} s, expected {e:g} s{' +-25 %' if f.jitter else ''}")
    elif obs.delays:
        problems.append(f"unexpected retries: waits {obs.delays}")
    if obs.elapsed + 0.02 < f.min_elapsed:
        problems.append(f"took {obs.elapsed:.2f} s, must wait at least {f.min_elapsed:g} s (Retry-After)")

    if problems:
        summary = "FAIL"
    elif f.error:
        summary = f.error
        if f.partial:
            summary += f", {f.partial} tok kept"
    else:
        summary = f.expected_status
        if f.name == "answer_5mb":
            summary += f" {obs.text_len / 1e6:.1f} MB"
        elif f.replaced:
            summary += " (U+FFFD in text)"
        elif not exp_text:
            summary += " (no text)"
    if obs.delays and not problems:
        summary += f", waits {'/'.join(f'{d:.2g}' for d in obs.delays)} s"
    if f.min_elapsed and not problems:
        summary += f" ({obs.elapsed:.2f} s)"
    return Outcome(f.name, entry, not problems, summary, problems, obs.elapsed, obs.message)


# ------------------------------------------------------------------------ provider runner


class SleepRecorder:
    """Stands in for ``upstage._sleep``: logs the wait asked for, sleeps at most ``cap``."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.cap: float | None = None
        self._real = asyncio.sleep

    async def __call__(self, delay: float) -> None:
        self.delays.append(float(delay))
        await self._real(delay if self.cap is None else min(delay, self.cap))


class ProviderRunner:
    """``Upstage.create_async_generator`` in this process, fed into a fresh ChatSession."""

    entry = "provider"

    def __init__(self, ctl: MatrixControl) -> None:
        self.ctl = ctl

    async def run(self, f: Fault) -> Outcome:
        from upstage_magic.errors import UpstageError
        from upstage_magic.providers import http as up_http
        from upstage_magic.providers import upstage as up
        from upstage_magic.request import Ask, plan
        from upstage_magic.session import ChatSession
        from upstage_magic.settings import Settings

        obs = Observation()
        self.ctl.prepare(f)
        opts = self.ctl.request_options(f)
        recorder = SleepRecorder()
        recorder.cap = f.sleep_cap
        saved = up_http._sleep
        up_http._sleep = recorder
        session = ChatSession()
        t0 = time.monotonic()
        def ask(prompt: str, model: str, **options: object) -> Ask:
            base_url = str(options.pop("base_url", self.ctl.base_url))
            return Ask(prompt, model=model, base_url=base_url, extra={"api_key": KEY, **options})

        try:
            ex = session.start(plan(Settings(), ask(PROMPT, f.model or "solar-pro4", **opts), session=session,
                                    provider=up.Upstage))
            try:
                async for _ in ex.stream(up.Upstage):
                    pass
            except UpstageError as exc:
                obs.error = type(exc).__name__
                obs.message = str(exc)
            except Exception as exc:  # noqa: BLE001 - a foreign exception is a finding
                obs.error = f"{type(exc).__module__}.{type(exc).__name__}"
                obs.message = repr(exc)
        finally:
            up_http._sleep = saved
        obs.elapsed = time.monotonic() - t0
        obs.delays = recorder.delays
        obs.text = ex.text
        obs.text_len = len(ex.text)
        obs.statuses = [t.status for t in session.turns]
        obs.attempts = self.ctl.chat_requests()
        self.ctl.reset()
        try:
            ex2 = session.start(plan(Settings(), ask(NEXT_PROMPT, "solar-pro4"), session=session, provider=up.Upstage))
            async for _ in ex2.stream(up.Upstage):
                pass
            obs.next_ok = f"You asked: {NEXT_PROMPT}" in ex2.text
            obs.next_detail = ex2.text[:200]
        except Exception as exc:  # noqa: BLE001
            obs.next_detail = repr(exc)
        obs.next_statuses = [t.status for t in session.turns]
        return judge(f, self.entry, obs)

    async def close(self) -> None:
        from upstage_magic.providers import Upstage

        await Upstage.aclose()


# --------------------------------------------------------------------------- kernel runner


# Helpers defined once in the kernel (names start with _fm_ to stay out of the way).
KERNEL_SETUP = r'''
%load_ext upstage_magic
import asyncio as _fm_asyncio, hashlib as _fm_hashlib, json as _fm_json, os as _fm_os, re as _fm_re, time as _fm_time
import upstage_magic.providers.http as _fm_up
from upstage_magic.session import default_session as _fm_session
from upstage_magic import ChatWidget
import ipywidgets as _fm_widgets

class _FMSleep:
    """Records the retry waits the provider asks for; sleeps at most `cap`."""
    def __init__(self):
        self.delays, self.cap, self.real = [], None, _fm_asyncio.sleep
    async def __call__(self, delay):
        self.delays.append(float(delay))
        await self.real(delay if self.cap is None else min(delay, self.cap))

_fm_sleep = _FMSleep()
_fm_up._sleep = _fm_sleep
_fm_m = get_ipython().magics_manager.registry["UpstageMagics"]
_fm_saved = {}

def _fm_prepare(env, timeout, cap):
    _fm_session().reset()
    _fm_sleep.delays.clear()
    _fm_sleep.cap = cap
    _fm_saved.clear()
    _fm_saved["timeout"] = _fm_m.timeout
    for k, v in env.items():
        _fm_saved["env:" + k] = _fm_os.environ.get(k)
        _fm_os.environ[k] = v
    if timeout is not None:
        _fm_m.timeout = timeout

def _fm_restore():
    for k, v in list(_fm_saved.items()):
        if k.startswith("env:"):
            if v is None:
                _fm_os.environ.pop(k[4:], None)
            else:
                _fm_os.environ[k[4:]] = v
    if "timeout" in _fm_saved:
        _fm_m.timeout = _fm_saved["timeout"]
    _fm_saved.clear()

def _fm_digest(text):
    return _fm_hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]

def _fm_html(w):
    """All HTML the widget's transcript holds (answers and reasoning), joined."""
    return "\n".join(e.get("html", "") + e.get("reasoning_html", "") for e in w.transcript)

def _fm_error(w):
    """The last transcript entry's error form ({kind, message, hint}) or None."""
    return w.transcript[-1].get("error") if w.transcript else None

def _fm_state(**extra):
    turns = _fm_session().turns
    last = turns[-1].answer if turns else ""
    d = dict(statuses=[t.status for t in turns], text_len=len(last), text_hash=_fm_digest(last),
             text=last if len(last) < 20000 else None, delays=list(_fm_sleep.delays))
    d.update(extra)
    print(_fm_json.dumps(d))
'''


def _kernel_env_for(ctl: MatrixControl, f: Fault) -> dict[str, str]:
    opts = ctl.request_options(f)
    env: dict[str, str] = {}
    if "base_url" in opts:
        env["UPSTAGE_BASE_URL"] = opts["base_url"]
    if "proxy" in opts:
        env["HTTP_PROXY"] = opts["proxy"]  # the emulator is http://: HTTP_PROXY applies
        env["http_proxy"] = opts["proxy"]
    return env


class _KernelRunner:
    entry = ""

    def __init__(self, ctl: MatrixControl, *, log_path: Path | None = None) -> None:
        self.ctl = ctl
        self.log_path = log_path
        self.kernel: KernelSession | None = None

    def _kernel(self) -> KernelSession:
        if self.kernel is None or not self.kernel.alive():
            if self.kernel is not None:
                self.kernel.close()
            self.kernel = KernelSession({"UPSTAGE_BASE_URL": self.ctl.base_url, "UPSTAGE_API_KEY": KEY},
                                        log_path=self.log_path)
            self.kernel.run(KERNEL_SETUP)
        return self.kernel

    def _prepare(self, f: Fault) -> KernelSession:
        k = self._kernel()
        self.ctl.prepare(f)
        k.run(f"_fm_prepare({json.dumps(_kernel_env_for(self.ctl, f))}, {f.timeout!r}, {f.sleep_cap!r})")
        return k

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None


def _fill(obs: Observation, state: dict[str, Any]) -> None:
    obs.statuses = state["statuses"]
    obs.text = state["text"]
    obs.text_len = state["text_len"]
    obs.text_hash = state["text_hash"]
    obs.delays = state["delays"]


class MagicRunner(_KernelRunner):
    """``%%upstage`` cells in one real kernel."""

    entry = "magic"

    def run(self, f: Fault) -> Outcome:
        obs = Observation()
        k = self._prepare(f)
        line = "%%upstage"
        if f.model:
            line += f" -m {f.model}"
        if f.max_tokens:
            line += f" --max-tokens {f.max_tokens}"
        try:
            cell = k.execute(f"{line}\n{PROMPT}", timeout=180)
        except (TimeoutError, RuntimeError) as exc:
            obs.alive = k.alive()
            obs.problems.append(f"cell did not finish: {exc}")
            return judge(f, self.entry, obs)
        obs.elapsed = cell.elapsed
        obs.attempts = self.ctl.chat_requests()
        stderr = cell.stderr
        if f.error:
            # One error, shown as one line naming its class ("ModelNotFoundError: ... what to
            # do"): no traceback, not labelled UsageError, the API not named twice.
            tb = (cell.error or {}).get("traceback", [])
            if cell.error is None or len(tb) != 1 or not tb[0].startswith(cell.error["ename"] + ": ") \
                    or cell.error["ename"] == "UsageError" or "Upstage: Upstage" in tb[0]:
                obs.problems.append(f"the error is not one clean line: {cell.error!r:.300}")
            else:
                obs.message = tb[0]
            if stderr.strip():
                obs.problems.append(f"unexpected stderr: {stderr[:300]!r}")
        else:
            if cell.error is not None:
                obs.problems.append(f"cell raised {cell.error['ename']} with a traceback "
                                    f"({len(cell.error.get('traceback', []))} frames): {cell.error['evalue'][:200]}")
            if stderr.strip() and not (f.name == "empty" and "empty answer" in stderr):
                obs.problems.append(f"unexpected stderr: {stderr[:300]!r}")
        if "Traceback" in stderr or "Traceback" in cell.stdout:
            obs.problems.append("a traceback was printed")
        state = k.json("_fm_restore()\n_fm_state(error=None if _fm_m.last_exchange.error is None "
                       "else type(_fm_m.last_exchange.error).__name__)")
        _fill(obs, state)
        obs.error = state["error"]
        exp = expected_text(f)
        if f.partial and exp:  # the partial answer stays visible in the cell output
            # What the cell shows at the end: each display's last update (an error block and a
            # footer may follow the answer now, so "the last two displays" is not the answer).
            final: dict[Any, str] = {}
            for n, d in enumerate(cell.displays):
                final[(d.get("transient") or {}).get("display_id") or n] = d["data"].get("text/plain", "")
            mds = list(final.values())
            last_word = exp.split()[-1].strip("#*`.,:") if exp.split() else ""
            if not mds or not any(last_word in m for m in mds):
                obs.problems.append(f"partial text {last_word!r} not shown in the cell output")
        self.ctl.reset()
        nxt = k.execute(f"%%upstage\n{NEXT_PROMPT}", timeout=120)
        md = "\n".join(d["data"].get("text/plain", "") for d in nxt.displays)
        obs.next_ok = nxt.error is None and not nxt.stderr.strip() and f"You asked: {NEXT_PROMPT}" in md
        obs.next_detail = (nxt.stderr or md)[:300]
        obs.next_statuses = k.json("_fm_state()")["statuses"]
        obs.alive = k.alive()
        return judge(f, self.entry, obs)


class WidgetRunner(_KernelRunner):
    """``ChatWidget.send`` in one real kernel; state inspected from later cells."""

    entry = "widget"

    def run(self, f: Fault) -> Outcome:
        obs = Observation()
        k = self._prepare(f)
        # The widget reads the kernel's settings at each send (the magic's traits are the
        # same object), so the fault's model and max_tokens are set there.
        setup = [f"_fm_m.model = {f.model or ''!r}", f"_fm_m.max_tokens = {f.max_tokens or None!r}"]
        k.run("\n".join(setup) + "\n_fm_w = ChatWidget(fetch_models=False)\n_fm_t0 = _fm_time.monotonic()\n"
              f"_fm_task = _fm_w.send({PROMPT!r})\nassert _fm_task is not None")
        try:
            done = k.json("await _fm_asyncio.wait({_fm_task}, timeout=150)\n"
                          "print(_fm_json.dumps([_fm_task.done(), _fm_time.monotonic() - _fm_t0]))", timeout=180)
        except (TimeoutError, RuntimeError) as exc:
            obs.alive = k.alive()
            obs.problems.append(f"waiting for the answer failed: {exc}")
            return judge(f, self.entry, obs)
        if not done[0]:
            obs.problems.append("the answer task did not finish within 150 s")
        obs.elapsed = done[1]
        obs.attempts = self.ctl.chat_requests()
        state = k.json(
            "_fm_restore()\n_fm_h = _fm_html(_fm_w)\n"
            "_fm_state(html=_fm_h if len(_fm_h) < 50000 else _fm_h[-50000:], streaming=_fm_w.streaming, "
            "busy=_fm_w.busy, error_form=_fm_error(_fm_w), task_exc=repr(_fm_task.exception()) "
            "if _fm_task.done() and not _fm_task.cancelled() and _fm_task.exception() else None)")
        _fill(obs, state)
        html_text = state["html"]
        form = state["error_form"]
        obs.error = form["kind"] if form else None
        if form:
            obs.message = f"{form['message']} {form['hint']}".strip()
        if "Traceback" in html_text or (form and "Traceback" in obs.message):
            obs.problems.append("a traceback is shown in the transcript")
        exp = expected_text(f)
        if f.partial and exp:  # the partial answer stays visible in the transcript
            last_word = exp.split()[-1].strip("#*`.,:")
            if last_word not in html_text:
                obs.problems.append(f"partial text {last_word!r} not shown in the transcript")
        if state["streaming"] or state["busy"]:
            obs.problems.append(f"widget not ready for the next question: streaming={state['streaming']} "
                                f"busy={state['busy']}")
        if state["task_exc"]:
            obs.problems.append(f"the send task raised {state['task_exc']}")
        self.ctl.reset()
        k.run("_fm_m.max_tokens = None\n_fm_m.model = 'solar-pro4'")
        nxt = k.json(f"_fm_task = _fm_w.send({NEXT_PROMPT!r})\n"
                     "await _fm_asyncio.wait({_fm_task}, timeout=100)\n"
                     "_fm_t = _fm_session().turns\n"
                     "print(_fm_json.dumps([_fm_task.done(), [t.status for t in _fm_t], "
                     "_fm_t[-1].answer[:2000] if _fm_t else '']))", timeout=150)
        obs.next_statuses = nxt[1]
        obs.next_ok = bool(nxt[0]) and f"You asked: {NEXT_PROMPT}" in nxt[2]
        obs.next_detail = nxt[2][:300]
        k.run("_fm_w.close()\n_fm_m.model = ''")
        obs.alive = k.alive()
        return judge(f, self.entry, obs)


# --------------------------------------------------------------------------------- driver


def run_matrix(entries: list[str], faults: list[Fault], *, progress: Callable[[Outcome], None] | None = None
               ) -> list[Outcome]:
    """Run the matrix (emulator in a thread); return every outcome."""
    from upstage_magic.emulator import serve_in_thread

    outcomes: list[Outcome] = []
    with serve_in_thread(api_key=KEY) as emu:
        ctl = MatrixControl(emu.base_url)
        for entry in entries:
            if entry == "provider":
                async def provider_all() -> None:
                    runner = ProviderRunner(ctl)
                    try:
                        for f in faults:
                            o = await runner.run(f)
                            outcomes.append(o)
                            if progress:
                                progress(o)
                    finally:
                        await runner.close()

                asyncio.run(provider_all())
                continue
            runner: _KernelRunner = MagicRunner(ctl) if entry == "magic" else WidgetRunner(ctl)
            try:
                for f in faults:
                    try:
                        o = runner.run(f)
                    except Exception as exc:  # noqa: BLE001 - one broken cell must not stop the table
                        o = Outcome(f.name, entry, False, "FAIL", [f"runner crashed: {exc!r}"], 0.0)
                    outcomes.append(o)
                    if progress:
                        progress(o)
            finally:
                runner.close()
    return outcomes


def format_table(outcomes: list[Outcome], entries: list[str], faults: list[Fault]) -> str:
    by = {(o.fault, o.entry): o for o in outcomes}
    w0 = max(len(f.title) for f in faults)
    widths = {e: max([len(e) + 2] + [len(("ok " if by[(f.name, e)].ok else "") + by[(f.name, e)].summary)
                                     for f in faults if (f.name, e) in by]) for e in entries}
    head = f"{'fault':<{w0}} | " + " | ".join(f"{e:<{widths[e]}}" for e in entries)
    lines = [head, "-" * len(head)]
    for f in faults:
        cells = []
        for e in entries:
            o = by.get((f.name, e))
            text = "-" if o is None else ("ok " + o.summary if o.ok else "FAIL")
            cells.append(f"{text:<{widths[e]}}")
        lines.append(f"{f.title:<{w0}} | " + " | ".join(cells))
    n_ok = sum(o.ok for o in outcomes)
    lines.append(f"\n{n_ok}/{len(outcomes)} cells pass")
    fails = [o for o in outcomes if not o.ok]
    for o in fails:
        lines.append(f"FAIL {o.fault} x {o.entry}:")
        lines.extend(f"    - {p}" for p in o.problems)
    return "\n".join(lines)
