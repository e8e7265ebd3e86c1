"""Incremental Server-Sent Events decoder: bytes in, events out. Pure, no I/O.

One API: ``SSEDecoder.feed(chunk)`` returns the events ``chunk`` completed and ``flush()``
ends the stream. An event that carries nothing but data (no ``event:`` type other than
``message``, no ``id`` seen on the stream, no ``retry``) comes back as its data ``str``,
which is all a chat completion stream sends; any other event comes back as a
:class:`ServerSentEvent`, so its type, id and retry are not lost. :func:`as_event` turns
either shape into a ``ServerSentEvent``.

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

One parsing path, no per-byte Python loop: the complete lines of a chunk are decoded at
once and split on blank lines (``"\\n\\n"``); a piece that is a single ``data: ...`` line
while no other field is pending is taken as is (a slice), every other piece goes through
the field-by-field line rules. A run of such one-line events (a whole chat completion
read) is split at C speed in one ``str.split`` on ``"\\n\\ndata: "``. A partial line is
kept as a list of pieces joined once its line end arrives (linear in its length). A
line longer than :data:`MAX_LINE_BYTES` raises :class:`~upstage_magic.errors.StreamError`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import StreamError

__all__ = ["ServerSentEvent", "SSEDecoder", "SSEItem", "as_event", "MAX_LINE_BYTES"]

#: Longest line (one ``data:`` field, in bytes) the decoder buffers before giving up.
MAX_LINE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. ``event`` is None when the stream gave no ``event:`` field."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


SSEItem = str | ServerSentEvent
"""What :meth:`SSEDecoder.feed` returns per event: the data ``str`` of a plain event, else
the whole :class:`ServerSentEvent`."""


def as_event(item: SSEItem) -> ServerSentEvent:
    """``item`` as a :class:`ServerSentEvent` (a plain data ``str`` becomes one)."""
    return ServerSentEvent(item) if isinstance(item, str) else item


def _too_large(size: int) -> StreamError:
    return StreamError(
        f"A server-sent event line was too large ({size} bytes, limit {MAX_LINE_BYTES}); "
        "the event was too large to buffer.",
        hint="The server sent an oversized event; the stream was stopped to protect memory.",
    )


class SSEDecoder:
    """Turn a byte stream into events, chunk by chunk (see the module docstring).

    >>> d = SSEDecoder()
    >>> d.feed(b'data: {"a"') + d.feed(b': 1}\\n\\nevent: x\\ndata: 2\\n\\n')
    ['{"a": 1}', ServerSentEvent(data='2', event='x', id=None, retry=None)]
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

    def feed(self, chunk: bytes) -> list[SSEItem]:
        """Consume ``chunk`` and return the events it completed (often none), in order."""
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
                self._drop_pending()
                raise _too_large(size)
            return []
        block = chunk[:end]
        if self._pending:
            size = self._pending_len + chunk.find(b"\n")
            if size > MAX_LINE_BYTES:
                self._drop_pending()
                raise _too_large(size)
            self._pending.append(block)
            block = b"".join(self._pending)
            self._drop_pending()
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
        return self._text(block.decode("utf-8", "replace"))

    def flush(self) -> list[SSEItem]:
        """End of stream: finish a last unterminated line and emit its pending event.

        The decoder is then reset and can read a new stream.
        """
        text = b"".join(self._pending).decode("utf-8", "replace") if self._pending else ""
        events = self._text(text) if self._pending else []
        if self._data:
            events.append(self._dispatch("\n".join(self._data)))
        self._reset()
        return events

    def _drop_pending(self) -> None:
        self._pending = []
        self._pending_len = 0

    def _dispatch(self, data: str) -> SSEItem:
        """The item for one event with ``data``, given the current event type/id/retry."""
        event, last_id, retry = self._event, self._last_id, self._retry
        if (event is None or event == "message") and last_id is None and retry is None:
            return data
        return ServerSentEvent(data, event, last_id, retry)

    def _text(self, text: str) -> list[SSEItem]:
        """Interpret complete lines (joined by LF, without the last line's LF)."""
        if not self._started:
            self._started = True
            if text[:1] == "\ufeff":
                text = text[1:]
        plain = not self._data and self._event is None and self._retry is None and self._last_id is None
        if plain and text[:6] == "data: ":
            # Shortcut for what chat completions send, a run of one-line "data: ..." events:
            # split on the separator itself; if the line ends add up, no value holds a line
            # end, so every part but the last is exactly one event's data.
            parts = text[6:].split("\n\ndata: ")
            last = parts.pop()
            if parts and text.count("\n") == 2 * len(parts) + last.count("\n"):
                return parts + self._text("data: " + last)
        # Each piece but the last is followed by a blank line (it ends an event).
        pieces = text.split("\n\n")
        tail = pieces.pop()
        events: list[SSEItem] = []
        append = events.append
        for piece in pieces:
            if plain and piece[:6] == "data: " and "\n" not in piece:
                append(piece[6:])  # the common case: one plain "data: ..." line
            else:
                self._lines(piece.split("\n"), events)
                self._end_event(events)
                plain = self._last_id is None
        if tail or not pieces:
            self._lines(tail.split("\n"), events)
        return events

    def _end_event(self, events: list[SSEItem]) -> None:
        """A blank line: dispatch the pending event (if it has data) and reset its fields."""
        if self._data:
            data = self._data
            events.append(self._dispatch(data[0] if len(data) == 1 else "\n".join(data)))
            self._data = []
        self._event = None
        self._retry = None

    def _lines(self, lines: list[str], events: list[SSEItem]) -> None:
        """Apply the field rules to complete lines; blank lines dispatch into ``events``."""
        for line in lines:
            if not line:
                self._end_event(events)
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
                self._data.append(value)
            elif name == "event":
                self._event = value or None
            elif name == "id":
                if "\0" not in value:
                    self._last_id = value
            elif name == "retry":
                if value.isascii() and value.isdigit():
                    self._retry = int(value)
