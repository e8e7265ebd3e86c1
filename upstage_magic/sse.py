"""Incremental Server-Sent Events decoder: bytes in, events out. Pure, no I/O.

Follows the WHATWG "event stream" interpretation rules:

- lines end with LF, CRLF or CR; a CR at the end of one chunk followed by an LF at the
  start of the next is one line end;
- bytes are decoded as UTF-8 per complete line, so a character split across chunks is
  never mangled; invalid bytes become U+FFFD (never ``UnicodeDecodeError``);
- a leading byte order mark is dropped; lines starting with ``:`` are comments;
- ``field:value`` with one optional space after the colon stripped; a line without a
  colon is a field with an empty value; unknown fields are ignored;
- ``data`` lines are joined with ``"\\n"``; ``event`` sets the type of the next event;
  ``id`` sets the last event id (kept across events; ignored if it contains NUL);
  ``retry`` is kept only if it is all ASCII digits;
- a blank line dispatches an event only if a ``data`` field was seen.

``flush()`` ends the stream and also emits a last event that lacked its blank line.

``feed_data()`` / ``flush_data()`` are the same, for consumers that only need the data
(the chat provider): an event of the default type (no ``event:`` field, or
``event: message``) comes back as its data ``str`` alone; any other event (e.g.
``event: error``) as a :class:`ServerSentEvent`, so its type is not lost. The ``id``
and ``retry`` fields are tracked as usual but not returned for plain events.

Speed: no per-byte Python loop. A chunk without CR skips line-end normalisation; the
complete lines of a chunk are decoded at once and split with ``str.split``; a run of
single-line ``data: ...`` events (what chat completions send) is split on
``"\\n\\ndata: "`` and its events are filled by C-level ``map`` loops (~0.5 us/event,
a fraction of ``json.loads``). A partial line is kept as a list of pieces joined once its
line end arrives (linear in the line's length). A line longer than
:data:`MAX_LINE_BYTES` raises :class:`~upstage_magic.errors.StreamError`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from .errors import StreamError

__all__ = ["ServerSentEvent", "SSEDecoder", "MAX_LINE_BYTES"]

_DEFAULT_TYPES = (None, "message")

#: Longest line (one ``data:`` field, in bytes) the decoder buffers before giving up.
MAX_LINE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. ``event`` is None when the stream gave no ``event:`` field."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


# Building a frozen dataclass through its __init__ costs ~1 us (object.__setattr__ per
# field); setting the slots through their descriptors is ~4x faster. Same object.
_new_event = object.__new__
_set_data = ServerSentEvent.data.__set__  # type: ignore[attr-defined]
_set_event = ServerSentEvent.event.__set__  # type: ignore[attr-defined]
_set_id = ServerSentEvent.id.__set__  # type: ignore[attr-defined]
_set_retry = ServerSentEvent.retry.__set__  # type: ignore[attr-defined]


def _make_event(data: str, event: str | None, id: str | None, retry: int | None) -> ServerSentEvent:
    sse = _new_event(ServerSentEvent)
    _set_data(sse, data)
    _set_event(sse, event)
    _set_id(sse, id)
    _set_retry(sse, retry)
    return sse


def _as_data(events: list[ServerSentEvent]) -> list[Any]:
    """``feed_data``'s shape: default-type events as their data, others unchanged."""
    return [e.data if e.event in _DEFAULT_TYPES else e for e in events]


def _too_large(size: int) -> StreamError:
    return StreamError(
        f"A server-sent event line was too large ({size} bytes, limit {MAX_LINE_BYTES}); "
        "the event was too large to buffer.",
        hint="The server sent an oversized event; the stream was stopped to protect memory.",
    )


class SSEDecoder:
    """Turn a byte stream into :class:`ServerSentEvent` objects, chunk by chunk.

    >>> d = SSEDecoder()
    >>> d.feed(b'data: {"a"') + d.feed(b': 1}\\n\\n')
    [ServerSentEvent(data='{"a": 1}', event=None, id=None, retry=None)]
    """

    __slots__ = ("_pending", "_pending_len", "_after_cr", "_started", "_data", "_event", "_last_id", "_retry")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pending: list[bytes] = []  # pieces of the current, unfinished line
        self._pending_len = 0
        self._after_cr = False  # the previous chunk ended with CR: drop a leading LF
        self._started = False  # the first line was seen (for the BOM rule)
        self._data: list[str] = []
        self._event: str | None = None
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume ``chunk`` and return the events it completed (often none)."""
        return self._feed(chunk, False)

    def feed_data(self, chunk: bytes) -> list[str | ServerSentEvent]:
        """Like :meth:`feed`, but a default-type event is returned as its data ``str``.

        Events with another type (``event: error``, ...) are returned as
        :class:`ServerSentEvent` objects, in stream order.
        """
        return self._feed(chunk, True)

    def flush_data(self) -> list[str | ServerSentEvent]:
        """Like :meth:`flush`, with :meth:`feed_data`'s result shape."""
        return _as_data(self.flush())

    def _feed(self, chunk: bytes, raw: bool) -> list[Any]:
        if not chunk:
            return []
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\r" in chunk:
            self._after_cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")
        if end < 0:
            self._pending.append(chunk)
            self._pending_len += len(chunk)
            if self._pending_len > MAX_LINE_BYTES:
                size = self._pending_len
                self._pending.clear()
                self._pending_len = 0
                raise _too_large(size)
            return []
        block = chunk[:end]
        if self._pending:
            first = chunk.find(b"\n")
            if self._pending_len + first > MAX_LINE_BYTES:
                size = self._pending_len + first
                self._pending.clear()
                self._pending_len = 0
                raise _too_large(size)
            self._pending.append(block)
            block = b"".join(self._pending)
            self._pending.clear()
            self._pending_len = 0
        if len(block) > MAX_LINE_BYTES:
            longest = max(map(len, block.split(b"\n")))
            if longest > MAX_LINE_BYTES:
                raise _too_large(longest)
        tail = chunk[end + 1 :]
        if tail:
            if len(tail) > MAX_LINE_BYTES:
                raise _too_large(len(tail))
            self._pending.append(tail)
            self._pending_len = len(tail)
        # LF never occurs inside a UTF-8 multi-byte sequence, so decoding the block of
        # complete lines at once equals decoding each line on its own.
        return self._text(block.decode("utf-8", "replace"), raw)

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: finish a last unterminated line and emit its pending event."""
        events = []
        if self._pending:
            line = b"".join(self._pending).decode("utf-8", "replace")
            if not self._started and line[:1] == "\ufeff":
                line = line[1:]
            events = self._lines([line])
        if self._data:
            events.append(_make_event("\n".join(self._data), self._event, self._last_id, self._retry))
        self._reset()
        return events

    def _text(self, text: str, raw: bool = False) -> list[Any]:
        """Interpret complete lines (joined by LF, without the last LF).

        ``raw``: return default-type events as their data strings (see ``feed_data``).
        """
        if not self._started:
            self._started = True
            if text[:1] == "\ufeff":
                text = text[1:]
        if text[:6] == "data: " and not self._data and self._event is None and self._retry is None:
            # Fastest path: a run of single-line "data: ..." events, as chat completions send.
            # Split on the separator itself (one string per event, no re-slicing) and fill
            # the events' slots with C-level map() loops.
            parts = text[6:].split("\n\ndata: ")
            last = parts.pop()
            if parts and text.count("\n") == 2 * len(parts) + last.count("\n"):  # no LF inside
                if raw:  # the data strings are the result: no event objects at all
                    parts += self._pieces("data: " + last, True)
                    return parts
                n = len(parts)
                events = list(map(_new_event, repeat(ServerSentEvent, n)))
                deque(map(_set_data, events, parts), 0)
                deque(map(_set_event, events, repeat(None, n)), 0)
                deque(map(_set_id, events, repeat(self._last_id, n)), 0)
                deque(map(_set_retry, events, repeat(None, n)), 0)
                return events + self._pieces("data: " + last)
        return self._pieces(text, raw)

    def _pieces(self, text: str, raw: bool = False) -> list[Any]:
        """General path: blank-line separated pieces; single "data:" lines built directly."""
        # Each piece but the last is followed by a blank line.
        pieces = text.split("\n\n")
        tail = pieces.pop()
        events: list[ServerSentEvent] = []
        if pieces:
            new_event, set_data, set_event, set_id, set_retry = (
                _new_event, _set_data, _set_event, _set_id, _set_retry)
            append = events.append
            last_id = self._last_id
            clean = not self._data and self._event is None and self._retry is None
            for piece in pieces:
                if clean and piece[:6] == "data: " and "\n" not in piece:
                    if raw:
                        append(piece[6:])
                        continue
                    sse = new_event(ServerSentEvent)
                    set_data(sse, piece[6:])
                    set_event(sse, None)
                    set_id(sse, last_id)
                    set_retry(sse, None)
                    append(sse)
                else:
                    lines = piece.split("\n")
                    lines.append("")
                    events += _as_data(self._lines(lines)) if raw else self._lines(lines)
                    last_id = self._last_id
                    clean = True  # a blank line was the last line: the event state is reset
        if tail or not pieces:
            events += _as_data(self._lines(tail.split("\n"))) if raw else self._lines(tail.split("\n"))
        return events

    def _lines(self, lines: list[str]) -> list[ServerSentEvent]:
        """Interpret complete lines; return the events dispatched by blank lines."""
        events: list[ServerSentEvent] = []
        append = events.append
        new_event, set_data, set_event, set_id, set_retry = _new_event, _set_data, _set_event, _set_id, _set_retry
        data = self._data
        event = self._event
        last_id = self._last_id
        retry = self._retry
        for line in lines:
            if not line:
                if data:
                    sse = new_event(ServerSentEvent)
                    set_data(sse, data[0] if len(data) == 1 else "\n".join(data))
                    set_event(sse, event)
                    set_id(sse, last_id)
                    set_retry(sse, retry)
                    append(sse)
                    data = []
                event = None
                retry = None
                continue
            if line[:5] == "data:":  # fast path: the common case
                data.append(line[6:] if line[5:6] == " " else line[5:])
                continue
            colon = line.find(":")
            if colon == 0:
                continue  # comment
            if colon < 0:
                name, value = line, ""
            else:
                name = line[:colon]
                value = line[colon + 2 :] if line[colon + 1 : colon + 2] == " " else line[colon + 1 :]
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value or None
            elif name == "id":
                if "\0" not in value:
                    last_id = value
            elif name == "retry":
                if value.isascii() and value.isdigit():
                    retry = int(value)
        self._data = data
        self._event = event
        self._last_id = last_id
        self._retry = retry
        return events
