"""Chat-completion wire format -> our typed items. Pure: no HTTP, no I/O.

:class:`StreamParser` turns a stream's decoded SSE events (the data strings
:class:`~upstage_magic.sse.SSEDecoder` returns, or :class:`~upstage_magic.sse.ServerSentEvent`
objects) into what the provider yields, in stream order:

- ``str``: answer text deltas;
- :class:`~upstage_magic.events.Reasoning`: reasoning text (``delta.reasoning``,
  ``delta.reasoning_content``, or a ``<think>...</think>`` block at the start of the
  content, as other OpenAI-compatible servers send it; tags may be split across deltas);
- :class:`~upstage_magic.events.ToolCall`: complete tool calls, assembled from
  ``delta.tool_calls`` fragments and emitted when the answer finishes;
- :class:`~upstage_magic.events.FinishReason`, and last :class:`~upstage_magic.events.Usage`
  (the last usage object seen; often a usage-only event whose ``choices`` is empty).

``data: {"error": ...}`` (or an ``event: error``) raises ``StreamErrorEvent``; data that is
not JSON, or JSON of another shape, raises ``MalformedEventError`` (also a
``json.JSONDecodeError``). Shapes are checked explicitly, so a bug of ours is never
relabelled as a malformed event. :func:`parse_completion` reads a whole (non-streamed)
answer into the same items.

Speed: :meth:`StreamParser.feed` takes a whole batch of events (what one network read
completed) and its loop does little more than ``json.loads`` and three dict lookups for
a text-only delta; everything else goes through :meth:`StreamParser._delta`.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import IncompleteStreamError, MalformedEventError, StreamErrorEvent
from ..events import FinishReason, Reasoning, ToolCall, Usage
from ..secrets import cut
from .sse import ServerSentEvent

__all__ = ["Item", "StreamParser", "parse_completion", "malformed", "stream_error"]

Item = str | Reasoning | ToolCall | FinishReason | Usage

_OPEN = "<think>"
_CLOSE = "</think>"
# States of the <think> detection at the start of the content.
_UNDECIDED, _THINKING, _AFTER_THINK, _ANSWER = range(4)


def malformed(data: str, exc: BaseException | None = None, *, shape: bool = False) -> MalformedEventError:
    """The error for an event that is not JSON (``exc`` from json) or not of the right shape."""
    snippet = cut(data, 80)
    what = "an event of unexpected shape" if shape else "an event that is not valid JSON"
    pos = getattr(exc, "pos", 0) or 0
    return MalformedEventError(f"The server sent {what}: {snippet!r}", data, pos)


def stream_error(error: Any) -> StreamErrorEvent:
    """The error for an error object (or text) the server sent in place of an answer."""
    if isinstance(error, dict):
        message = error.get("message") or json.dumps(error)
        code = error.get("code") or error.get("type")
    else:
        message, code = str(error), None
    if not isinstance(message, str):
        message = json.dumps(message)
    return StreamErrorEvent(
        f"The server reported an error during the answer: {cut(message, 500)}",
        code=str(code) if code is not None else None,
    )


class _Shape(Exception):
    """Internal: the event parsed as JSON but is not a chat.completion.chunk."""


class _Think:
    """Splits ``<think>...</think>`` at the start of the content from the answer, incrementally."""

    __slots__ = ("state", "buf")

    def __init__(self) -> None:
        self.state = _UNDECIDED
        self.buf = ""

    def feed(self, text: str, out: list[Item]) -> None:
        """Append the items ``text`` completes to ``out``."""
        state = self.state
        if state == _ANSWER:
            out.append(text)
            return
        buf = self.buf + text
        if state == _UNDECIDED:
            lead = buf.lstrip()
            if len(lead) < len(_OPEN) and _OPEN.startswith(lead):
                self.buf = buf  # maybe the start of "<think>": wait for more
                return
            if not lead.startswith(_OPEN):
                self.state, self.buf = _ANSWER, ""
                out.append(buf)
                return
            state, buf = _THINKING, lead[len(_OPEN):]
        if state == _THINKING:
            end = buf.find(_CLOSE)
            if end < 0:
                keep = _partial_suffix(buf, _CLOSE)  # a "</thi" at the end may go on
                if len(buf) > keep:
                    out.append(Reasoning(buf[: len(buf) - keep]))
                self.state, self.buf = _THINKING, buf[len(buf) - keep:]
                return
            if end:
                out.append(Reasoning(buf[:end]))
            state, buf = _AFTER_THINK, buf[end + len(_CLOSE):]
        # _AFTER_THINK: the blank lines after </think> are layout, not answer
        buf = buf.lstrip()
        if buf:
            self.state, self.buf = _ANSWER, ""
            out.append(buf)
        else:
            self.state, self.buf = _AFTER_THINK, ""

    def close(self, out: list[Item]) -> None:
        """End of content: what is still held back is emitted as what it turned out to be."""
        if self.buf:
            out.append(Reasoning(self.buf) if self.state == _THINKING else self.buf)
        self.buf = ""


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class _ToolCalls:
    """Tool-call fragments, keyed by their index, until the answer finishes."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: dict[int, list[str]] = {}  # index -> [id, name, arguments, type]

    def add(self, fragments: Any) -> None:
        if not isinstance(fragments, list):
            raise _Shape
        for frag in fragments:
            if not isinstance(frag, dict):
                raise _Shape
            index = frag.get("index", len(self.parts))
            if isinstance(index, bool) or not isinstance(index, int):
                raise _Shape
            part = self.parts.setdefault(index, ["", "", "", "function"])
            call_id, kind, function = frag.get("id"), frag.get("type"), frag.get("function")
            if call_id:
                if not isinstance(call_id, str):
                    raise _Shape
                part[0] = call_id
            if kind:
                if not isinstance(kind, str):
                    raise _Shape
                part[3] = kind
            if function is None:
                continue
            if not isinstance(function, dict):
                raise _Shape
            name, args = function.get("name"), function.get("arguments")
            if name:
                if not isinstance(name, str):
                    raise _Shape
                if name != part[1]:  # some servers repeat the whole name in every fragment
                    part[1] += name
            if args:
                if not isinstance(args, str):  # some servers send the object itself
                    args = json.dumps(args, ensure_ascii=False)
                part[2] += args

    def emit(self, out: list[Item]) -> None:
        for index in sorted(self.parts):
            call_id, name, args, kind = self.parts[index]
            out.append(ToolCall(name=name, arguments=args, id=call_id, index=index, type=kind))
        self.parts.clear()


class StreamParser:
    """Turns one answer stream's events into items (see the module docstring).

    Feed it batches of events with :meth:`feed` and call :meth:`close` at the end of
    the stream. ``done`` says ``[DONE]`` was read (later events are ignored);
    ``seen_event`` says any event arrived at all.
    """

    __slots__ = ("done", "seen_event", "finish", "usage", "_think", "_tools")

    def __init__(self) -> None:
        self.done = False
        self.seen_event = False
        self.finish: str | None = None
        self.usage: Any = None
        self._think = _Think()
        self._tools = _ToolCalls()

    def feed(self, events: Iterable[str | ServerSentEvent | dict[str, Any]]) -> Iterator[Item]:
        """The items ``events`` complete (data strings, SSE events or parsed objects).

        A generator: an error is raised in stream order, after the items of the events
        before it have been yielded. Iterate it to the end.
        """
        if self.done:
            return
        loads = json.loads
        think = self._think
        plain = think.state == _ANSWER  # content needs no <think> check any more
        if not self.seen_event:
            events = list(events)
            self.seen_event = bool(events)
        for data in events:
            try:
                obj = loads(data)  # type: ignore[arg-type]
            except ValueError as exc:
                if data == "[DONE]":
                    self.done = True
                    return
                # Raised below, outside this block: the JSON error (holding the raw data) is
                # not kept as the context of ours.
                obj = malformed(data, exc)  # type: ignore[arg-type]
            except TypeError:  # not text: an SSE event with a type/id, or a parsed object
                if isinstance(data, ServerSentEvent):
                    obj = self._typed(data)
                    if obj is None:
                        self.done = True
                        return
                else:
                    obj = data
            if obj.__class__ is not dict:
                raise obj if isinstance(obj, MalformedEventError) else malformed(_text_of(data), shape=True)
            choices = obj.get("choices")
            if choices:
                choice = choices[0] if choices.__class__ is list else None
                if choice.__class__ is not dict:
                    raise malformed(_text_of(data), shape=True)
                delta = choice.get("delta")
                if delta:
                    content = delta.get("content") if delta.__class__ is dict else None
                    if plain and content and content.__class__ is str and len(delta) == 1:
                        yield content  # the hot path: a text-only delta
                    else:
                        yield from self._delta(delta, data)
                        plain = think.state == _ANSWER
                reason = choice.get("finish_reason")
                if reason:
                    if not isinstance(reason, str):
                        raise malformed(_text_of(data), shape=True)
                    yield from self._finish(reason)
            elif "error" in obj:
                raise stream_error(obj["error"])
            usage = obj.get("usage")
            if usage:
                self.usage = usage

    def close(self) -> list[Item]:
        """End of the stream: held-back text and tool calls, then ``Usage``.

        Raises ``IncompleteStreamError`` if the stream ended without ``[DONE]`` and
        without a finish reason (an answer cut off), or without any event at all.
        """
        if not self.done and self.finish is None:
            if not self.seen_event:
                raise IncompleteStreamError(
                    "The server ended the answer stream without sending any event "
                    "(an empty response).",
                    hint="Try again; if it keeps happening, check the base URL and any proxy.",
                )
            raise IncompleteStreamError(
                "The answer stream ended before the server said it was finished "
                "(no finish_reason and no [DONE])."
            )
        out: list[Item] = []
        self._think.close(out)
        self._tools.emit(out)
        if self.usage:
            out.append(Usage.from_dict(self.usage))
        return out

    def _delta(self, delta: Any, data: Any) -> list[Item]:
        """Everything in a delta but the plain-text case: reasoning, tool calls, think tags."""
        out: list[Item] = []
        try:
            if delta.__class__ is not dict:
                raise _Shape
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if reasoning:
                if not isinstance(reasoning, str):
                    raise _Shape
                out.append(Reasoning(reasoning))
            content = delta.get("content")
            if content:
                if not isinstance(content, str):
                    raise _Shape
                self._think.feed(content, out)
            tool_calls = delta.get("tool_calls")
            if tool_calls:
                self._tools.add(tool_calls)
        except _Shape:
            raise malformed(_text_of(data), shape=True) from None
        return out

    def _finish(self, reason: str) -> list[Item]:
        self.finish = reason
        out: list[Item] = []
        self._think.close(out)
        self._tools.emit(out)
        out.append(FinishReason(reason))
        return out

    def _typed(self, event: ServerSentEvent) -> Any:
        """The parsed data of an event with a type, id or retry; None for ``[DONE]``.

        ``event: error`` always ends the stream with a StreamErrorEvent, whatever its data
        (a JSON error object, any JSON, or plain text). Other types are read like plain events.
        """
        data = event.data
        bad: MalformedEventError | None = None
        try:
            obj = json.loads(data)
        except ValueError as exc:
            bad = malformed(data, exc)  # raised outside: the JSON error (raw data) is not its context
        if bad is not None:
            if event.event == "error":
                raise stream_error(data.strip() or "(no details)")
            if data == "[DONE]":
                return None
            raise bad
        if event.event == "error":
            raise stream_error(obj.get("error", obj) if isinstance(obj, dict) else obj)
        return obj


def _text_of(data: Any) -> str:
    """The event's data as text, for error messages."""
    if isinstance(data, ServerSentEvent):
        return data.data
    if isinstance(data, str):
        return data
    try:
        return json.dumps(data)
    except (TypeError, ValueError):
        return repr(data)


def parse_completion(obj: Any) -> list[Item]:
    """The items of a whole (non-streamed) answer: Reasoning, text, ToolCalls, FinishReason, Usage."""
    if isinstance(obj, dict) and obj.get("error") and not obj.get("choices"):
        raise stream_error(obj["error"])
    choices = obj.get("choices") if isinstance(obj, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") or {} if isinstance(choice, dict) else None
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(calls, (list, type(None))):
        raise malformed(_text_of(obj)[:200], shape=True)
    out: list[Item] = []
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if reasoning:
        out.append(Reasoning(reasoning if isinstance(reasoning, str) else json.dumps(reasoning)))
    content = message.get("content")
    if content:
        think = _Think()
        think.feed(content if isinstance(content, str) else json.dumps(content), out)
        think.close(out)
    if calls:
        tools = _ToolCalls()
        try:
            for i, call in enumerate(calls):
                tools.add([{"index": i, **call} if isinstance(call, dict) else call])
        except _Shape:
            raise malformed(_text_of(obj)[:200], shape=True) from None
        tools.emit(out)
    reason = choice.get("finish_reason") if isinstance(choice, dict) else None
    if reason:
        out.append(FinishReason(str(reason)))
    if obj.get("usage"):
        out.append(Usage.from_dict(obj["usage"]))
    return out
