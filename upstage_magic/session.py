"""Conversation state: one answer's :class:`Exchange`, its recorded :class:`Turn`, the :class:`ChatSession`.

Pure module (no IPython, no aiohttp). An exchange owns one answer (as simonw/llm's Response
does): it drives the provider's stream for its :class:`~upstage_magic.request.Request`,
records text, reasoning, usage, finish reason and tool calls, and ends exactly once
("done", "length", "stopped", "error") on every path, a provider that raises when called
included. Front ends only read it. Its state is changed on one thread, its owner's (the
thread that made it): :meth:`Exchange.stream` applies items on the running loop's thread;
:meth:`Exchange.run` lets a worker (``pump``) move the raw items and applies them here::

    exchange = session.start(request)               # or Exchange(request) for a one-off
    async for item in exchange.stream(provider): ...  # widget, batch
    turn = exchange.run(provider, pump=run_stream, on_change=view.changed)   # the magic

Everything an exchange shows or records is masked (``secrets``): the text a server sent
passes :func:`~upstage_magic.secrets.mask_secrets` when it is read, a stopped or cut answer
also loses a key's beginning at its end, events are scrubbed as they arrive, error texts
are cut only after masking. So a key the model echoed is never stored nor sent back.

History rules: every recorded turn is kept (``turns``, ``%upstage history``, exports).
Turns "done" and "length" (with an answer) are sent back to the model; "stopped" (a
partial answer the user interrupted) and "error" turns are kept for the record but not
sent. ``max_history`` caps only what is sent; :mod:`conversation` adds the token budget.
A turn asked from a notebook cell (``Turn.cell``) that is asked again replaces its earlier
turn in place (the conversation follows the notebook, not the number of runs).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .events import FinishReason, Reasoning, ToolCall, Usage
from .request import public_options
from .secrets import cut, mask_partial, mask_secrets, scrub

__all__ = ["STATUSES", "ChatSession", "Exchange", "Recorded", "SessionBusyError", "Turn", "default_session", "plural"]

#: Final statuses of a turn; an Exchange is "streaming" until it ends.
STATUSES = ("done", "stopped", "error", "length")
_SENT_STATUSES = frozenset({"done", "length"})
_ERROR_CHARS = 2000


def _replaces(cell: str | None) -> bool:
    """Whether a turn of ``cell`` replaces the earlier one: not for ``run:<n>`` (a run number only names)."""
    return bool(cell) and not str(cell).startswith("run:")


class SessionBusyError(RuntimeError):
    """A second answer was started while one is still streaming in the same conversation."""

    def __init__(self) -> None:
        super().__init__("Another answer is still streaming in this conversation (a chat widget or another "
                         "cell). Wait for it or stop it, or ask a one-off with --no-history.")


def plural(n: int, word: str, plural_word: str | None = None) -> str:
    """``"1 turn"``, ``"0 turns"``, ``"2 turns"`` (``plural_word`` for irregular plurals)."""
    return f"{n} {word if n == 1 else (plural_word or word + 's')}"


@dataclass
class Turn:
    """One recorded question and answer (masked)."""

    prompt: str
    answer: str
    status: str = "done"  # "done" | "stopped" | "error" | "length"
    model: str | None = None
    usage: Usage | None = None
    error: str | None = None
    system: str | None = None
    created: float = field(default_factory=time.time)
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: Answer pieces counted when the server reported no usage (a stopped stream): an estimate.
    estimated_tokens: int = 0
    finish_reason: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: When the replayed answer was first recorded (epoch seconds); None: asked for real.
    replayed: float | None = None
    #: The notebook cell that asked (``"cell:<cellId>"`` or ``"run:<n>"``); None elsewhere.
    cell: str | None = None
    #: What was attached (``--file``, ``--cells``, the widget's attach): title, info (size, pages), tokens, cut.
    attachments: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (usage as a dict of counts)."""
        return {
            "prompt": self.prompt, "answer": self.answer, "status": self.status, "model": self.model,
            "usage": self.usage.to_dict() if self.usage is not None else None, "error": self.error,
            "system": self.system, "created": datetime.fromtimestamp(self.created, timezone.utc).isoformat(),
            "reasoning": self.reasoning, "tool_calls": self.tool_calls, "estimated_tokens": self.estimated_tokens,
            "finish_reason": self.finish_reason, "options": self.options, "timings": self.timings,
            "replayed": _iso(self.replayed),
            "cell": self.cell,
            "attachments": self.attachments,
        }


@dataclass(frozen=True)
class Recorded:
    """What ``on_end`` listeners get for a turn recorded by :meth:`ChatSession.record` (an Exchange's shape)."""

    turn: Turn
    record: bool = True


class Exchange:
    """One answer: drives its request's stream, records its turn once (see the module docstring).

    Read: ``text``, ``reasoning``, ``tool_calls``, ``usage``, ``finish_reason``, ``status``
    ("streaming" until it ends), ``error``, ``turn``, timings (``ttfb``, ``ttft``,
    ``elapsed``, ``tokens_per_second``) and the request's ``model``/``messages``/``options``.
    """

    def __init__(self, request: Any, session: ChatSession | None = None, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.request = request
        self.session = session
        self.record = bool(getattr(request, "record", True)) and session is not None
        self._begun = False
        self._owner = threading.get_ident()
        self._clock = clock
        self._parts: list[str] = []
        self._text: str | None = ""
        self._reasoning: list[str] = []
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.status = "streaming"
        self.error: BaseException | None = None
        self.turn: Turn | None = None
        self.tool_calls: list[ToolCall] = []
        self.chunks = 0
        self.reasoning_chunks = 0
        self.started = clock()
        #: Clock times: first item of any kind, first reasoning text, first answer text, the end.
        self.first_item_at: float | None = None
        self.reasoning_at: float | None = None
        self.first_token_at: float | None = None
        self.ended: float | None = None
        #: A recorded answer this exchange replays (found when it begins), and when it was recorded.
        self._recorded: Any = None
        self.replayed: float | None = None

    # -- the request ------------------------------------------------------------------
    prompt = property(lambda self: self.request.prompt)
    model = property(lambda self: self.request.model)
    messages = property(lambda self: self.request.messages)
    options = property(lambda self: self.request.options)
    system = property(lambda self: self.request.system)
    streamed = property(lambda self: self.request.streamed)

    # -- what arrived (masked) ------------------------------------------------------------
    @property
    def text(self) -> str:
        """The answer text so far, registered secrets masked."""
        if self._text is None:
            raw = "".join(self._parts)
            self._parts = [raw]
            self._text = mask_secrets(raw)
        return self._text

    @property
    def reasoning(self) -> str:
        """The reasoning text so far, registered secrets masked."""
        return mask_secrets("".join(self._reasoning)) if self._reasoning else ""

    def apply(self, items: Iterable[Any]) -> None:
        """Take items of the provider's stream, in order (the owner's thread only)."""
        if threading.get_ident() != self._owner:
            raise RuntimeError("An Exchange is changed only on the thread that made it; hand items over instead.")
        texts: list[str] = []
        for item in items:
            if self.first_item_at is None:
                self.first_item_at = self._clock()
            if isinstance(item, str):
                if item:
                    texts.append(item)
                    if self.first_token_at is None:
                        self.first_token_at = self._clock()
            else:
                self._event(item)
        if texts:
            self._parts.append("".join(texts))
            self.chunks += len(texts)
            self._text = None

    def _event(self, item: Any) -> None:
        if isinstance(item, Reasoning):
            if item.text:
                if self.reasoning_at is None:
                    self.reasoning_at = self._clock()
                self._reasoning.append(item.text)
                self.reasoning_chunks += 1
        elif isinstance(item, FinishReason):
            self.finish_reason = cut(item.reason, 100)
        elif isinstance(item, Usage):
            self.usage = item
        elif isinstance(item, ToolCall):
            self.tool_calls.append(scrub(item))

    # -- driving the stream ---------------------------------------------------------------
    async def _source(self, provider: Any) -> AsyncIterator[Any]:
        """The provider's raw stream for this request (reads only the request: any thread)."""
        import inspect  # noqa: PLC0415

        if self._recorded is not None:  # replay: the record, nothing sent
            from .replay import items as recorded_items  # noqa: PLC0415

            async for item in recorded_items(self._recorded):
                yield item
            return
        agen: Any = provider.create_async_generator(self.model, self.messages, **self.options)
        if inspect.isawaitable(agen) and not hasattr(agen, "__anext__"):
            agen = await agen
        try:
            async for item in agen:
                yield item
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except BaseException:  # noqa: BLE001,S110 - closing must not mask the result
                    pass

    async def stream(self, provider: Any) -> AsyncIterator[Any]:
        """Drive the answer on this loop: apply each item, then yield it; end on every path.

        Cancelled (interrupt, Stop) or closed early: "stopped"; failed: "error" and the
        exception is re-raised after the turn is recorded.
        """
        import asyncio  # noqa: PLC0415 - kept off %load_ext

        self._begin()
        try:
            async for item in self._source(provider):
                self.apply((item,))
                yield item
        except (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt):
            self._end("stopped")
            raise
        except BaseException as exc:
            self._end(error=exc)
            raise
        self._end()

    def run(self, provider: Any, *, pump: Callable[..., Any], on_change: Callable[[], Any] | None = None,
            tick: Callable[[], Any] | None = None, interval: float = 0.05) -> Turn:
        """Drive the answer from a synchronous caller (the owner) and return its turn.

        ``pump(make_stream, on_batch, tick=, interval=)`` (``runner.run_stream``) runs the
        provider's stream elsewhere and hands its raw items to ``on_batch`` on this thread,
        which applies them and calls ``on_change()``. An interrupt ends the turn "stopped".
        """
        def take(items: list[Any]) -> None:
            self.apply(items)
            if on_change is not None:
                on_change()

        self._begin()
        try:
            pump(lambda: self._source(provider), take, tick=tick, interval=interval)
        except KeyboardInterrupt:
            self._end("stopped")
            raise
        except BaseException as exc:
            self._end(error=exc)
            raise
        return self._end()

    def _begin(self) -> None:
        """Become the conversation's answer in progress (SessionBusyError if one streams)."""
        if not self._begun:
            if self.record and self.session is not None:
                self.session._activate(self)
            self._begun = True
            from .replay import lookup  # noqa: PLC0415

            self._recorded = lookup(self.request)
            self.replayed = self._recorded.created if self._recorded is not None else None

    def forget(self) -> None:
        """Do not record this answer in the conversation (a New chat while it streams)."""
        self.record = False

    # -- timing --------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        """Seconds since start (until the end once finished)."""
        return (self.ended if self.ended is not None else self._clock()) - self.started

    @property
    def ttfb(self) -> float | None:
        """Seconds from start to the first item of any kind (reasoning included)."""
        return None if self.first_item_at is None else self.first_item_at - self.started

    @property
    def ttft(self) -> float | None:
        """Seconds from start to the first answer text (reasoning does not count)."""
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def reasoning_seconds(self) -> float | None:
        """How long the model reasoned: first reasoning text to first answer text (or now/end)."""
        if self.reasoning_at is None:
            return None
        return max(0.0, (self.first_token_at or self.ended or self._clock()) - self.reasoning_at)

    @property
    def answer_tokens(self) -> int:
        """Answer tokens: the server's completion count less its reasoning tokens, else pieces."""
        u = self.usage
        if u is not None and u.completion_tokens:
            return max(0, u.completion_tokens - u.reasoning_tokens)
        return self.chunks

    @property
    def tokens_per_second(self) -> float | None:
        """Answer tokens per second over the answer phase (first answer text to the end)."""
        if self.first_token_at is None:
            return None
        span = (self.ended if self.ended is not None else self._clock()) - self.first_token_at
        return self.answer_tokens / span if span > 0 and self.answer_tokens > 1 else None

    def timings(self) -> dict[str, float]:
        """Rounded timings for output metadata and the log (absent ones left out)."""
        values = {"first_byte": self.ttfb, "first_answer_token": self.ttft, "reasoning": self.reasoning_seconds,
                  "total": self.elapsed, "tokens_per_second": self.tokens_per_second}
        return {k: round(v, 3) for k, v in values.items() if v is not None}

    # -- the end ---------------------------------------------------------------------------
    def _end(self, status: str | None = None, error: BaseException | None = None) -> Turn:
        """End the answer and record its turn: once; later calls return the same turn."""
        if self.turn is not None:
            return self.turn
        self.ended = self._clock()
        status = status or ("error" if error is not None else "length" if self.finish_reason == "length" else "done")
        self.status, self.error = status, error
        raw = "".join(self._parts)
        self.turn = Turn(
            prompt=mask_secrets(self.prompt), answer=mask_secrets(raw) if status == "done" else mask_partial(raw, final=True),
            status=status, model=self.model, usage=self.usage,
            error=cut(error, _ERROR_CHARS) if error is not None else None,
            system=mask_secrets(self.system) if self.system else self.system,
            reasoning=mask_partial("".join(self._reasoning), final=True),
            tool_calls=[{"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls],
            estimated_tokens=0 if self.usage is not None else self.chunks, finish_reason=self.finish_reason,
            options=public_options(self.options), timings=self.timings(),
            replayed=self.replayed,
            cell=getattr(self.request, "cell", None),
            attachments=[{k: mask_secrets(v) if isinstance(v, str) else v for k, v in item.items()}
                         for item in getattr(self.request.attachments, "items", None) or []],
        )
        self._text = self.turn.answer
        from .replay import record  # noqa: PLC0415

        record(self)
        if self.session is not None:
            self.session._ended(self)
        return self.turn

    def __repr__(self) -> str:
        return f"<Exchange {self.status} model={self.model!r} chars={len(self.text)}>"


class ChatSession:
    """System prompt, recorded turns, usage totals; history to send; exports."""

    def __init__(self, *, system_prompt: str | None = None, max_history: int = 20, model: str | None = None) -> None:
        self.system_prompt = system_prompt
        self.max_history = max_history
        self.model = model
        self.turns: list[Turn] = []
        self.usage = Usage()
        #: Answer tokens estimated for answers the server reported no usage for (stopped ones).
        self.estimated_tokens = 0
        #: The recorded answer streaming now, if any (one at a time).
        self.active: Exchange | None = None
        #: Notices said once per session (a retired model, the server's own model): not said again.
        self.said: set[str] = set()
        self._listeners: dict[str, list[Callable[[Any], Any]]] = {"change": [], "end": [], "remove": []}
        self._lock = threading.RLock()

    # -- history ----------------------------------------------------------------------------
    def sent_turns(self, before_cell: str | None = None) -> list[Turn]:
        """The recorded turns sent back as history: the last ``max_history`` sendable ones.

        ``before_cell``: only those recorded before that cell's turn, if it has one (a re-run).
        """
        limit = max(0, int(self.max_history))
        with self._lock:
            turns = self.turns
            mine = [i for i, t in enumerate(turns) if _replaces(before_cell) and t.cell == before_cell]
            if mine:
                turns = turns[: mine[0]]
            sendable = [t for t in turns if t.status in _SENT_STATUSES and t.answer]
        return sendable[-limit:] if limit else []

    def history_messages(self) -> list[dict[str, Any]]:
        """The user/assistant messages of the turns that are sent back (see sent_turns)."""
        out: list[dict[str, Any]] = []
        for turn in self.sent_turns():
            out += [{"role": "user", "content": turn.prompt}, {"role": "assistant", "content": turn.answer}]
        return out

    def start(self, request: Any) -> Exchange:
        """Begin the answer to ``request`` in this conversation now (one recorded answer at a time).

        A request with ``record=False`` (a one-off) may run beside another; a second recorded
        one raises :class:`SessionBusyError`. (``Exchange(request, session)`` does the same
        check when it starts streaming.)
        """
        exchange = Exchange(request, self)
        exchange._begin()
        return exchange

    def _activate(self, exchange: Exchange) -> None:
        with self._lock:
            if self.active is not None and self.active.turn is None:
                raise SessionBusyError()
            self.active = exchange

    # -- state ------------------------------------------------------------------------------
    def _ended(self, exchange: Exchange) -> None:
        """An exchange ended: record its turn (or only its usage for a one-off), tell listeners."""
        turn = exchange.turn
        assert turn is not None
        with self._lock:
            if self.active is exchange:
                self.active = None
            replaced = self._record(turn) if exchange.record else None
            if turn.usage is not None:
                self.usage = self.usage + turn.usage
            self.estimated_tokens += turn.estimated_tokens
        if replaced is not None:
            self._tell("remove", replaced)
        self._tell("end", exchange)
        if exchange.record:
            self._tell("change", self)

    def record(self, turn: Turn) -> None:
        """Record a turn made of several answers (a tool loop's steps: one-offs whose usage is counted already)."""
        with self._lock:
            self.turns.append(turn)
        self._tell("end", Recorded(turn))
        self._tell("change", self)

    def _record(self, turn: Turn) -> Turn | None:
        """Append ``turn``, or put it in place of the earlier turn of its cell (returned)."""
        for i, old in enumerate(self.turns):
            if _replaces(turn.cell) and old.cell == turn.cell:
                self.turns[i:] = [turn] + [t for t in self.turns[i + 1:] if t.cell != turn.cell]
                return old
        self.turns.append(turn)
        return None

    def pop_last(self) -> Turn | None:
        """Remove and return the last recorded turn (Retry), telling ``on_remove`` listeners."""
        with self._lock:
            if not self.turns or (self.active is not None and self.active.turn is None):
                return None
            turn = self.turns.pop()
            self._retotal()
        self._tell("remove", turn)
        self._tell("change", self)
        return turn

    def load_turns(self, turns: list[Turn]) -> None:
        """Replace the conversation with ``turns`` (a resumed one): totals rebuilt, listeners told."""
        with self._lock:
            self.turns = list(turns)
            self._retotal()
        self._tell("change", self)

    def reset(self) -> None:
        """Forget all turns and usage totals (keeps system prompt and settings)."""
        self.load_turns([])

    def _retotal(self) -> None:
        total = Usage()
        for t in self.turns:
            if t.usage is not None:
                total = total + t.usage
        self.usage = total
        self.estimated_tokens = sum(t.estimated_tokens for t in self.turns)

    # -- listeners ----------------------------------------------------------------------------
    def on_change(self, callback: Callable[[ChatSession], Any]) -> None:
        """Call ``callback(session)`` after the turns change (recorded, removed, reset, resumed)."""
        self._listen("change", callback)

    def on_end(self, callback: Callable[[Exchange], Any]) -> None:
        """Call ``callback(exchange)`` after every answer ends (recorded or one-off); once each."""
        self._listen("end", callback)

    def on_remove(self, callback: Callable[[Turn], Any]) -> None:
        """Call ``callback(turn)`` after :meth:`pop_last` removed a turn."""
        self._listen("remove", callback)

    def remove_callback(self, callback: Callable[..., Any]) -> None:
        """Stop calling ``callback`` (for any event)."""
        for callbacks in self._listeners.values():
            if callback in callbacks:
                callbacks.remove(callback)

    def _listen(self, event: str, callback: Callable[[Any], Any]) -> None:
        if callback not in self._listeners[event]:
            self._listeners[event].append(callback)

    def _tell(self, event: str, value: Any) -> None:
        for cb in list(self._listeners[event]):
            try:
                cb(value)
            except Exception:  # a broken listener (a full disk for the log) must not break the answer
                import logging  # noqa: PLC0415

                logging.getLogger(__name__).exception("ChatSession %s listener failed", event)

    def __len__(self) -> int:
        return len(self.turns)

    def __repr__(self) -> str:
        return f"<ChatSession turns={len(self.turns)} model={self.model!r}>"

    # -- export ---------------------------------------------------------------------------------
    def export_markdown(self) -> str:
        """The conversation as Markdown (every turn; every field escaped; secrets masked).

        Raw HTML is escaped and unsafe links dropped in every field
        (``render.export_markdown_text``), so any Markdown viewer shows it as text.
        """
        from .render import export_markdown_text as md  # noqa: PLC0415

        lines = ["# Upstage chat", ""]
        if self.system_prompt:
            lines += ["**System:** " + md(self.system_prompt), ""]
        notes = {"stopped": "stopped by the user (partial answer; kept, not sent back as context)", "length": "cut at max_tokens"}
        for i, t in enumerate(self.turns, 1):
            lines += [f"## {i}. You", "", md(t.prompt), "", f"### {md(t.model or 'assistant')}", "",
                      md(t.answer) if t.answer else "_(no answer)_", ""]
            lines += [f"- tool call {md(c.get('name') or '?')}({md(c.get('arguments') or '')}) · "
                      f"{md(c.get('approval') or 'asked')}: {md(str(c.get('result', '(not run)'))[:500])}"
                      for c in t.tool_calls if isinstance(c, dict)]
            lines += [""] if t.tool_calls else []
            if t.status != "done":
                note = f"error: {t.error or ''}" if t.status == "error" else notes.get(t.status, t.status)
                lines += [f"_({md(note)})_", ""]
        lines.append(f"_Total: {self.totals_text()}._")
        return mask_secrets("\n".join(lines) + "\n")

    def export_json(self) -> str:
        """The conversation as JSON (every turn; registered secrets masked)."""
        data = {"system_prompt": self.system_prompt, "model": self.model, "max_history": self.max_history,
                "turns": [t.to_dict() for t in self.turns], "usage": self.usage.to_dict()}
        return json.dumps(scrub(data), indent=2, ensure_ascii=False) + "\n"

    def export(self, path: str | Path) -> Path:
        """Write Markdown (``.md``/``.markdown``) or JSON (``.json``) by suffix."""
        p = Path(path).expanduser()
        suffix = p.suffix.lower()
        if suffix not in (".md", ".markdown", ".json"):
            raise ValueError(f"Cannot export to {p.name!r}: use a .md or .json file name.")
        p.write_text(self.export_json() if suffix == ".json" else self.export_markdown(), encoding="utf-8")
        return p

    def totals_text(self) -> str:
        """``"12 prompt + 40 answer tokens"`` (``"+ ~35 estimated"`` for answers without usage).

        Totals that include a server's missing usage estimated by the client (``Usage.estimated``)
        show with ``~`` and say so: they are not what the server counted.
        """
        u = self.usage
        t = "~" if u.estimated else ""
        text = f"{t}{u.prompt_tokens} prompt + {t}{u.completion_tokens} answer tokens"
        if u.estimated:
            text += " (some estimated: the server sent no usage)"
        if self.estimated_tokens:
            text += f" (+ ~{self.estimated_tokens} estimated for stopped answers)"
        return text

    def describe_export(self, path: str | Path) -> str:
        """What a front end prints after :meth:`export`: ``"Saved 1 turn to chat.md"``."""
        return f"Saved {plural(len(self.turns), 'turn')} to {path}"


_DEFAULT: ChatSession | None = None
_DEFAULT_LOCK = threading.Lock()


def default_session() -> ChatSession:
    """The process's (= kernel's) shared session, created on first use."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = ChatSession()
        return _DEFAULT


def _iso(when: float | None) -> str | None:
    return datetime.fromtimestamp(when, timezone.utc).isoformat() if when is not None else None
