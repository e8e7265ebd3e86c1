"""Conversation state shared by the ``%%upstage`` magic and the chat widget.

Pure module (no IPython, no aiohttp). A :class:`ChatSession` holds the system prompt and
the recorded turns, builds the role messages sent to the API (at most ``max_history``
previous turns), totals usage and exports. One answer in progress is an
:class:`Exchange` (like simonw/llm's Response): it buffers the text, times the stream and
records its :class:`Turn` exactly once, when the stream ends, however it ends::

    ex = session.start("Hi", model="solar-pro3")
    for chunk in stream: ex.add(chunk)
    turn = ex.finish()            # or ex.finish("stopped") / ex.finish(error=exc)

History rules: every recorded turn is kept (``turns``, ``%upstage history`` and the
exports show the whole conversation). Turns with status "done", "length" or "stopped"
(with a non-empty answer) are sent back to the model; "error" turns are kept for the
record but not sent, so a retry does not repeat a failed question. ``max_history`` caps
only what is sent: the last ``max_history`` of the turns that are sent (error turns do
not count against it).

Conversation content is exported through ``errors.mask_secrets`` (registered keys only),
not ``redact``, so ordinary text such as ``group_by_category`` is exported unchanged.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import mask_secrets, redact
from .events import FinishReason, Reasoning, Usage

__all__ = ["Turn", "ChatSession", "Exchange", "SessionBusyError", "default_session", "plural", "STATUSES"]

#: Final statuses of a turn; an Exchange is "streaming" until it finishes.
STATUSES = ("done", "stopped", "error", "length")
_SENT_STATUSES = frozenset({"done", "length", "stopped"})


class SessionBusyError(RuntimeError):
    """A second answer was started while one is still streaming in the same conversation."""

    def __init__(self) -> None:
        super().__init__(
            "Another answer is still streaming in this conversation (a chat widget or another "
            "cell). Wait for it or stop it, or ask a one-off with --no-history."
        )


def plural(n: int, word: str, plural_word: str | None = None) -> str:
    """``"1 turn"``, ``"0 turns"``, ``"2 turns"`` (``plural_word`` for irregular plurals)."""
    return f"{n} {word if n == 1 else (plural_word or word + 's')}"


@dataclass
class Turn:
    """One recorded question and answer."""

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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (usage as a dict of counts)."""
        return {
            "prompt": self.prompt,
            "answer": self.answer,
            "status": self.status,
            "model": self.model,
            "usage": _usage_dict(self.usage),
            "error": self.error,
            "system": self.system,
            "created": datetime.fromtimestamp(self.created, timezone.utc).isoformat(),
            "reasoning": self.reasoning,
            "tool_calls": self.tool_calls,
            "estimated_tokens": self.estimated_tokens,
        }


def _tool_call_dict(call: Any) -> dict[str, Any]:
    """A tool call event as a plain dict (id, name, arguments)."""
    return {"id": getattr(call, "id", None), "name": getattr(call, "name", None),
            "arguments": getattr(call, "arguments", None)}


def _usage_dict(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cached_tokens": usage.cached_tokens,
    }


class Exchange:
    """One answer in progress: buffers text, times the stream, records its turn once.

    Attributes: ``messages`` (what is sent), ``text``, ``reasoning``, ``usage``,
    ``finish_reason``, ``status`` ("streaming" until :meth:`finish`), ``error``,
    ``ttft`` (seconds to first text), ``tokens_per_second``, ``elapsed``, ``turn``.
    """

    def __init__(
        self,
        session: ChatSession | None,
        prompt: str,
        messages: list[dict[str, Any]],
        *,
        model: str,
        system: str | None = None,
        record: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.session = session
        self.prompt = prompt
        self.messages = messages
        self.model = model
        self.system = system
        self.record = record
        self._clock = clock
        self._parts: list[str] = []
        self._text_cache: str | None = ""
        self.reasoning = ""
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.status = "streaming"
        self.error: BaseException | None = None
        self.turn: Turn | None = None
        self.tool_calls: list[Any] = []
        self.options: dict[str, Any] = {}
        self.chunks = 0
        self.reasoning_chunks = 0
        self.streamed = True
        self._finish_lock = threading.Lock()
        self.started = clock()
        #: Clock times: first item of any kind, first reasoning text, first answer text.
        self.first_item_at: float | None = None
        self.reasoning_at: float | None = None
        self.first_token_at: float | None = None
        self.ended: float | None = None

    # -- streaming -------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The answer text so far."""
        if self._text_cache is None:
            self._text_cache = "".join(self._parts)
        return self._text_cache

    def add(self, chunk: Any) -> str | None:
        """Take one item of the provider's stream; return it if it is answer text."""
        if self.first_item_at is None:
            self.first_item_at = self._clock()
        if type(chunk) is str or isinstance(chunk, str):
            if not chunk:
                return None
            if self.first_token_at is None:
                self.first_token_at = self._clock()
            self._parts.append(chunk)
            self._text_cache = None
            self.chunks += 1
            return chunk
        self._event(chunk)
        return None

    def extend(self, items: list[Any]) -> str:
        """Take a batch of stream items (as :meth:`add` each); return their text joined.

        Same result as calling :meth:`add` on each item, with no Python-level work per
        text chunk (the runner hands over whole bursts at full speed).
        """
        if items and self.first_item_at is None:
            self.first_item_at = self._clock()
        texts = [x for x in items if isinstance(x, str)]
        if len(texts) != len(items):
            for x in [x for x in items if not isinstance(x, str)]:
                self._event(x)
        delta = "".join(texts)
        if not delta:
            return ""
        if self.first_token_at is None:
            self.first_token_at = self._clock()
        self._parts.append(delta)
        self._text_cache = None
        self.chunks += len(texts) - texts.count("")
        return delta

    def _event(self, chunk: Any) -> None:
        if isinstance(chunk, Reasoning):
            if chunk.text:
                if self.reasoning_at is None:
                    self.reasoning_at = self._clock()
                self.reasoning += chunk.text
                self.reasoning_chunks += 1
        elif isinstance(chunk, FinishReason):
            self.finish_reason = chunk.reason
        elif isinstance(chunk, Usage):
            self.usage = chunk
        elif type(chunk).__name__ == "ToolCall":
            self.tool_calls.append(chunk)

    async def stream(self, provider: Any, options: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        """Drive ``provider``'s stream for this answer: the one stream path of the package.

        Yields each item of the provider's stream (text as ``str``, typed events) after
        recording it here, so a front end only shows what it is given (or reads
        :attr:`text`). The turn ends exactly once, however the stream ends: "done" or
        "length" when it completes, "stopped" when it is cancelled (interrupt, Stop) or
        closed early, "error" (with :attr:`error`) when it fails; the exception is
        re-raised after the turn is recorded.
        """
        import asyncio  # noqa: PLC0415 - loaded already whenever a stream runs; kept off %load_ext
        import inspect  # noqa: PLC0415

        options = options or {}
        self.options = dict(options)
        self.streamed = options.get("stream", True) is not False
        agen: Any = provider.create_async_generator(self.model, self.messages, **options)
        if inspect.isawaitable(agen) and not hasattr(agen, "__anext__"):
            agen = await agen
        try:
            async for item in agen:
                self.add(item)
                yield item
        except (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt):
            self.finish("stopped")
            raise
        except BaseException as exc:
            self.finish(error=exc)
            raise
        else:
            self.finish()
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except BaseException:  # noqa: BLE001,S110 - closing must not mask the result
                    pass

    # -- timing ----------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        """Seconds since start (until the end once finished)."""
        end = self.ended if self.ended is not None else self._clock()
        return end - self.started

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
        end = self.first_token_at or self.ended or self._clock()
        return max(0.0, end - self.reasoning_at)

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
        end = self.ended if self.ended is not None else self._clock()
        span = end - self.first_token_at
        tokens = self.answer_tokens
        if span <= 0 or tokens <= 1:
            return None
        return tokens / span

    # -- end -------------------------------------------------------------------------
    def finish(self, status: str | None = None, error: BaseException | None = None) -> Turn:
        """End the stream and record its turn (once; later calls return the same turn).

        ``status`` defaults to "error" with ``error``, "length" if the server cut the
        answer at max_tokens, else "done".
        """
        with self._finish_lock:
            if self.turn is None:
                self._finish(status, error)
            assert self.turn is not None
            return self.turn

    def _finish(self, status: str | None, error: BaseException | None) -> None:
        self.ended = self._clock()
        if status is None:
            if error is not None:
                status = "error"
            elif self.finish_reason == "length":
                status = "length"
            else:
                status = "done"
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
        self.status = status
        self.error = error
        self.turn = Turn(
            prompt=self.prompt,
            answer=self.text,
            status=status,
            model=self.model,
            usage=self.usage,
            error=redact(error) if error is not None else None,
            system=self.system,
            reasoning=self.reasoning,
            tool_calls=[_tool_call_dict(c) for c in self.tool_calls],
            estimated_tokens=0 if self.usage is not None else self.chunks,
        )
        if self.session is not None:
            self.session._end(self)

    def __repr__(self) -> str:
        return f"<Exchange {self.status} model={self.model!r} chars={len(self.text)}>"


class ChatSession:
    """System prompt, recorded turns, usage totals; builds messages; exports."""

    def __init__(
        self,
        *,
        system_prompt: str | None = None,
        max_history: int = 20,
        model: str | None = None,
    ) -> None:
        self.system_prompt = system_prompt
        self.max_history = max_history
        self.model = model
        self.turns: list[Turn] = []
        self.usage = Usage()
        #: Answer tokens estimated for answers the server reported no usage for (stopped ones).
        self.estimated_tokens = 0
        #: The recorded answer streaming now, if any (one at a time).
        self.active: Exchange | None = None
        self._callbacks: list[Callable[[ChatSession], Any]] = []
        self._end_callbacks: list[Callable[[Exchange], Any]] = []
        self._lock = threading.RLock()

    # -- messages --------------------------------------------------------------------
    def sent_turns(self) -> list[Turn]:
        """The recorded turns sent back as history: the last ``max_history`` sendable ones."""
        limit = max(0, int(self.max_history))
        if not limit:
            return []
        picked: list[Turn] = []
        with self._lock:
            for turn in reversed(self.turns):
                if turn.status in _SENT_STATUSES and turn.answer:
                    picked.append(turn)
                    if len(picked) >= limit:
                        break
        picked.reverse()
        return picked

    def history_messages(self) -> list[dict[str, Any]]:
        """The user/assistant messages of the turns that are sent back (see sent_turns)."""
        out: list[dict[str, Any]] = []
        for turn in self.sent_turns():
            out.append({"role": "user", "content": turn.prompt})
            out.append({"role": "assistant", "content": turn.answer})
        return out

    def build_messages(
        self, prompt: str, *, system: str | None = None, history: bool = True
    ) -> list[dict[str, Any]]:
        """Role messages for ``prompt``: system (``system`` or the session's), history, user."""
        messages: list[dict[str, Any]] = []
        sys_text = system if system is not None else self.system_prompt
        if sys_text:
            messages.append({"role": "system", "content": sys_text})
        if history:
            messages.extend(self.history_messages())
        messages.append({"role": "user", "content": prompt})
        return messages

    def start(
        self,
        prompt: str,
        *,
        model: str,
        system: str | None = None,
        history: bool = True,
        record: bool = True,
        instructions: str | None = None,
    ) -> Exchange:
        """Begin an answer; ``record=False`` keeps it out of the history (a one-off).

        ``instructions`` (e.g. a format's "reply with one code block") are added to the
        system message that is sent, not to the recorded system prompt. One recorded answer
        streams per session at a time: starting another raises :class:`SessionBusyError`
        (one-offs with ``record=False`` may run beside it).
        """
        messages = self.build_messages(prompt, system=system, history=history)
        if instructions:
            _add_system(messages, instructions)
        sys_text = system if system is not None else self.system_prompt
        exchange = Exchange(self, prompt, messages, model=model, system=sys_text, record=record)
        if record:
            with self._lock:
                if self.active is not None and self.active.turn is None:
                    raise SessionBusyError()
                self.active = exchange
        return exchange

    # -- state -----------------------------------------------------------------------
    def _end(self, exchange: Exchange) -> None:
        """An exchange ended: record its turn (or only its usage for a one-off)."""
        turn = exchange.turn
        assert turn is not None
        with self._lock:
            if self.active is exchange:
                self.active = None
            if exchange.record:
                self.turns.append(turn)
            if turn.usage is not None:
                self.usage = self.usage + turn.usage
            self.estimated_tokens += turn.estimated_tokens
        if exchange.record:
            self._notify()
        for cb in list(self._end_callbacks):
            try:
                cb(exchange)
            except Exception:  # a broken listener (e.g. a full disk for the log) must not break the answer
                import logging

                logging.getLogger(__name__).exception("ChatSession end callback failed")

    def on_end(self, callback: Callable[[Exchange], Any]) -> None:
        """Call ``callback(exchange)`` after every answer ends (recorded or one-off); once each."""
        if callback not in self._end_callbacks:
            self._end_callbacks.append(callback)

    def remove_end_callback(self, callback: Callable[[Exchange], Any]) -> None:
        """Stop calling ``callback`` after answers."""
        if callback in self._end_callbacks:
            self._end_callbacks.remove(callback)

    def load_turns(self, turns: list[Turn]) -> None:
        """Replace the conversation with ``turns`` (a resumed one): totals rebuilt, listeners told."""
        with self._lock:
            self.turns = list(turns)
            total = Usage()
            for t in self.turns:
                if t.usage is not None:
                    total = total + t.usage
            self.usage = total
            self.estimated_tokens = sum(t.estimated_tokens for t in self.turns)
        self._notify()

    def reset(self) -> None:
        """Forget all turns and usage totals (keeps system prompt and settings)."""
        with self._lock:
            self.turns.clear()
            self.usage = Usage()
            self.estimated_tokens = 0
        self._notify()

    def on_change(self, callback: Callable[[ChatSession], Any]) -> None:
        """Call ``callback(session)`` after a turn is recorded or the session is reset."""
        self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[ChatSession], Any]) -> None:
        """Stop calling ``callback``."""
        try:
            self._callbacks.remove(callback)
        except ValueError:
            pass

    def _notify(self) -> None:
        for cb in list(self._callbacks):
            try:
                cb(self)
            except Exception:  # a broken listener must not break the conversation
                import logging

                logging.getLogger(__name__).exception("ChatSession callback failed")

    def __len__(self) -> int:
        return len(self.turns)

    def __repr__(self) -> str:
        return f"<ChatSession turns={len(self.turns)} model={self.model!r}>"

    # -- export ----------------------------------------------------------------------
    def export_markdown(self) -> str:
        """The conversation as Markdown (every turn; registered secrets masked).

        Raw HTML in prompts and answers is escaped and unsafe links are dropped
        (``render.export_markdown_text``), so any Markdown viewer shows it as text.
        """
        from .render import export_markdown_text as md  # noqa: PLC0415

        lines = ["# Upstage chat", ""]
        if self.system_prompt:
            lines += ["**System:** " + md(self.system_prompt), ""]
        for i, t in enumerate(self.turns, 1):
            lines += [f"## {i}. You", "", md(t.prompt), ""]
            label = md(t.model or "assistant")
            lines += [f"### {label}", "", md(t.answer) if t.answer else "_(no answer)_", ""]
            if t.status != "done":
                note = {"stopped": "stopped by the user (partial answer)",
                        "length": "cut at max_tokens",
                        "error": f"error: {md(t.error or '')}"}.get(t.status, t.status)
                lines += [f"_({note})_", ""]
        lines.append(f"_Total: {self.totals_text()}._")
        return mask_secrets("\n".join(lines) + "\n")

    def export_json(self) -> str:
        """The conversation as JSON (every turn; registered secrets masked)."""
        data = {
            "system_prompt": self.system_prompt,
            "model": self.model,
            "max_history": self.max_history,
            "turns": [t.to_dict() for t in self.turns],
            "usage": _usage_dict(self.usage),
        }
        return json.dumps(_mask_value(data), indent=2, ensure_ascii=False) + "\n"

    def export(self, path: str | Path) -> Path:
        """Write Markdown (``.md``/``.markdown``) or JSON (``.json``) by suffix."""
        p = Path(path).expanduser()
        suffix = p.suffix.lower()
        if suffix in (".md", ".markdown"):
            text = self.export_markdown()
        elif suffix == ".json":
            text = self.export_json()
        else:
            raise ValueError(f"Cannot export to {p.name!r}: use a .md or .json file name.")
        p.write_text(text, encoding="utf-8")
        return p

    def totals_text(self) -> str:
        """``"12 prompt + 40 answer tokens"`` (``"+ ~35 estimated"`` for answers without usage)."""
        u = self.usage
        text = f"{u.prompt_tokens} prompt + {u.completion_tokens} answer tokens"
        if self.estimated_tokens:
            text += f" (+ ~{self.estimated_tokens} estimated for stopped answers)"
        return text

    def describe_export(self, path: str | Path) -> str:
        """What a front end prints after :meth:`export`: ``"Saved 1 turn to chat.md"``."""
        return f"Saved {plural(len(self.turns), 'turn')} to {path}"


def _add_system(messages: list[dict[str, Any]], text: str) -> None:
    """Append ``text`` to the system message (creating one first if needed)."""
    if messages and messages[0].get("role") == "system":
        messages[0] = {**messages[0], "content": f"{messages[0].get('content', '')}\n\n{text}".strip()}
    else:
        messages.insert(0, {"role": "system", "content": text})


def _mask_value(value: Any) -> Any:
    """A copy of a JSON-able value with registered secrets masked in every string."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {_mask_value(k): _mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_value(v) for v in value]
    return value


_DEFAULT: ChatSession | None = None
_DEFAULT_LOCK = threading.Lock()


def default_session() -> ChatSession:
    """The process's (= kernel's) shared session, created on first use."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = ChatSession()
        return _DEFAULT
