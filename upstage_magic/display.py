"""Streaming view of one answer: throttled rendering into a notebook output or stdout.

:class:`Coalescer` is pure (no IPython) and shared with the chat widget: the first text is
rendered at once, later text at most once per ``interval`` seconds (and, for very long
answers, no more than ``max_bytes_per_second`` of re-rendered text), and :meth:`flush`
renders the final state once. It knows nothing about HTTP.
"""
from __future__ import annotations

import re
import sys
import time
from typing import Any, Callable, TextIO

__all__ = ["Coalescer", "fence", "extract_code", "strip_json_fence", "stats_parts", "footer_text", "RichView", "PlainView"]


class Coalescer:
    """Turn many small text deltas into few renders of the whole text so far.

    ``render(text)`` gets the full text each time. ``push(delta)`` renders at once the
    first time, then only when ``interval`` has passed since the last render (otherwise
    the text is marked pending). ``poll()`` renders pending text whose time has come
    (for stalls between deltas); ``flush()`` renders pending text unconditionally.
    Each render re-sends the whole text, so for long answers the interval grows to keep
    the re-sent bytes under ``max_bytes_per_second`` (None: no such bound).
    """

    def __init__(
        self,
        render: Callable[[str], None],
        *,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        max_bytes_per_second: float | None = 200_000,
    ) -> None:
        self._render = render
        self.interval = float(interval)
        self._clock = clock
        self.max_bytes_per_second = max_bytes_per_second
        self._parts: list[str] = []
        self._text = ""
        self._dirty_text = False
        self._length = 0
        self.renders = 0
        self.pending = False
        self._last: float | None = None

    @property
    def text(self) -> str:
        """All text pushed so far."""
        if self._dirty_text:
            self._text = "".join(self._parts)
            self._parts = [self._text]
            self._dirty_text = False
        return self._text

    def current_interval(self) -> float:
        """The interval in force now (grows with the text for long answers)."""
        if not self.max_bytes_per_second:
            return self.interval
        return max(self.interval, self._length / self.max_bytes_per_second)

    def push(self, delta: str) -> None:
        """Add text; render now if it is the first or the interval has passed."""
        if not delta:
            return
        self._parts.append(delta)
        self._length += len(delta)
        self._dirty_text = True
        self.pending = True
        if self._last is None or self._clock() - self._last >= self.current_interval():
            self._do_render()

    def poll(self) -> bool:
        """Render pending text if its interval has passed; return whether it rendered."""
        if self.pending and (self._last is None or self._clock() - self._last >= self.current_interval()):
            self._do_render()
            return True
        return False

    def due(self) -> float | None:
        """When the next render may happen (clock time); None before the first render."""
        if self._last is None:
            return None
        return self._last + self.current_interval()

    def flush(self) -> None:
        """Render the final state once if anything is pending."""
        if self.pending:
            self._do_render()

    def _do_render(self) -> None:
        self.pending = False
        self._last = self._clock()
        self.renders += 1
        self._render(self.text)


# --------------------------------------------------------------------------------------
# Views of one answer (used by the magic). Rich: a notebook output updated in place.
# Plain: text written to a stream as it arrives (terminal IPython).
# --------------------------------------------------------------------------------------
_FENCE_RE = re.compile(r"^( {0,3})(`{3,}|~{3,})([^\n`]*)\n(.*?)^ {0,3}\2[`~]*[ \t]*$", re.M | re.S)
_LANG_RE = re.compile(r"[^\w+#.\-]")


def fence(code: str, lang: str = "") -> str:
    """A fenced Markdown code block that holds ``code`` byte-exact."""
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    ticks = "`" * max(3, longest + 1)
    lang = _LANG_RE.sub("", lang)[:30]
    nl = "" if code.endswith("\n") else "\n"
    return f"{ticks}{lang}\n{code}{nl}{ticks}"


def extract_code(text: str) -> tuple[str, str]:
    """The first fenced code block of ``text`` as (code, language); else (text, "")."""
    m = _FENCE_RE.search(text)
    if not m:
        # an unclosed fence (answer cut): take everything after the opening line
        m2 = re.search(r"^ {0,3}(`{3,}|~{3,})([^\n`]*)\n", text, re.M)
        if m2:
            return text[m2.end():], m2.group(2).strip().split(" ")[0]
        return text.strip("\n") + ("\n" if text.strip() else ""), ""
    return m.group(4), m.group(3).strip().split(" ")[0] if m.group(3).strip() else ""


def strip_json_fence(text: str) -> str:
    """JSON text without a surrounding ```json fence, if the model added one."""
    s = text.strip()
    if s.startswith("```") or s.startswith("~~~"):
        code, _ = extract_code(s)
        return code
    return s


def _rate(tps: float) -> str:
    return f"{tps:.0f} tok/s" if tps >= 10 else f"{tps:.1f} tok/s"


def stats_parts(answer: Any, *, elapsed: bool = False) -> list[str]:
    """Token counts, time to first token and speed of an answer, as short phrases.

    ``answer`` is an :class:`~upstage_magic.session.Exchange` or a recorded ``Turn`` (only
    its usage is known). Shared by the magic's footer and the widget's status line, e.g.
    ``["3 prompt + 20 answer tokens", "first token 0.21 s", "48 tok/s"]``; without a
    server count the answer tokens are estimated (``"~20 answer tokens"``). ``elapsed``
    adds the total time (``"1.2 s total"``).
    """
    parts: list[str] = []
    u = getattr(answer, "usage", None)
    chunks = getattr(answer, "chunks", 0)
    if u is not None and u.completion_tokens:
        parts.append(f"{u.prompt_tokens} prompt + {u.completion_tokens} answer tokens" if u.prompt_tokens
                     else f"{u.completion_tokens} answer tokens")
    elif chunks:
        parts.append(f"~{chunks} answer tokens")
    elif u is not None and u.prompt_tokens:
        parts.append(f"{u.prompt_tokens} prompt tokens")
    ttft = getattr(answer, "ttft", None)
    if ttft is not None:
        parts.append(f"first token {ttft:.2f} s")
    tps = getattr(answer, "tokens_per_second", None)
    if tps:
        parts.append(_rate(tps))
    if elapsed and getattr(answer, "elapsed", None) is not None:
        parts.append(f"{answer.elapsed:.1f} s total")
    return parts


def footer_text(exchange: Any, status: str) -> str:
    """One line: model, tokens, time to first token, speed, and why it ended if notable."""
    parts = [str(exchange.model), *stats_parts(exchange)]
    if status == "length":
        parts.append('cut at max_tokens (finish reason "length"): raise --max-tokens for more')
    elif status == "stopped":
        parts.append("stopped by interrupt: partial answer kept")
    elif status == "error":
        parts.append("failed: partial answer kept" if exchange.text else "failed")
    elif exchange.finish_reason and exchange.finish_reason not in ("stop", "length"):
        parts.append(f"finish reason {exchange.finish_reason!r}")
    return " · ".join(parts)


_WARM_UP = "```\n<x>\n```\n"  # raw HTML + a code block: safe_markdown runs the block parser


def _md_escape(s: str) -> str:
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", s)


class RichView:
    """One answer as a notebook output: displayed at first text, updated in place.

    ``fmt`` is markdown, text, code or json. Markdown passes through
    ``render.safe_markdown`` (raw HTML neutralised) before it is sent. At most one update
    per ``interval`` (see :class:`Coalescer`); ``finish`` renders the final state once and
    adds a one-line footer.
    """

    def __init__(self, fmt: str = "markdown", *, interval: float = 0.1, display: Callable[..., Any] | None = None) -> None:
        if display is None:
            from IPython.display import display as display  # noqa: PLC0415
        self._display = display
        self.fmt = fmt
        self.handle: Any = None
        self.messages = 0
        self._last_bundle: dict[str, Any] | None = None
        self._md_cache: tuple[str | None, str] = (None, "")
        self.coalescer = Coalescer(self._render_stream, interval=interval)
        if fmt != "text":
            from . import render  # noqa: PLC0415

            self._safe_markdown = render.safe_markdown
            # Import markdown-it and build its parser now (with the view, before the
            # request), not mid-stream at the first code block: the text must reach the parser.
            self._safe_markdown(_WARM_UP)
        else:
            self._safe_markdown = None

    # streaming -------------------------------------------------------------------------
    def push(self, delta: str) -> None:
        self.coalescer.push(delta)

    def tick(self) -> None:
        self.coalescer.poll()

    def due(self) -> float | None:
        """``time.monotonic()`` time before which new text would not be shown anyway."""
        return self.coalescer.due()

    def _stream_bundle(self, text: str) -> dict[str, Any]:
        if self.fmt == "text":
            return {"text/plain": text}
        if self.fmt == "json":
            return {"text/markdown": fence(text, "json")}
        if text != self._md_cache[0]:  # the final render often repeats the last flush's text
            self._md_cache = (text, self._safe_markdown(text))  # type: ignore[misc]
        return {"text/markdown": self._md_cache[1]}

    def _render_stream(self, text: str) -> None:
        self._show(self._stream_bundle(text))

    def _show(self, bundle: dict[str, Any]) -> None:
        if bundle == self._last_bundle:
            return
        self._last_bundle = bundle
        self.messages += 1
        if self.handle is None:
            self.handle = self._display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)

    # end --------------------------------------------------------------------------------
    def finish(self, final: dict[str, Any] | None, footer: str | None) -> None:
        """Render the final bundle (default: the streamed text with text/plain) and footer."""
        text = self.coalescer.text
        self.coalescer.pending = False  # the final render below replaces the last flush
        if final is None and text:
            final = dict(self._stream_bundle(text))
            final.setdefault("text/plain", text)
        if final is not None:
            self._show(final)
        if footer:
            self.messages += 1
            self._display({"text/markdown": "*" + _md_escape(footer) + "*", "text/plain": footer}, raw=True)


class PlainView:
    """One answer as plain text written to ``out`` as it arrives (terminal IPython)."""

    def __init__(self, fmt: str = "markdown", *, out: TextIO | None = None) -> None:
        self.fmt = fmt
        self._out = out
        self._parts: list[str] = []
        self.messages = 0

    @property
    def text(self) -> str:
        """All text written so far."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @text.setter
    def text(self, value: str) -> None:
        self._parts = [value] if value else []

    @property
    def out(self) -> TextIO:
        return self._out if self._out is not None else sys.stdout

    def push(self, delta: str) -> None:
        self._parts.append(delta)  # no growing string copy per delta
        self.out.write(delta)
        self.out.flush()

    def tick(self) -> None:
        pass

    def finish(self, final: dict[str, Any] | None, footer: str | None) -> None:
        """End the streamed text with a newline, then print the footer line."""
        if final is not None and not self.text:
            self.out.write(final.get("text/plain", ""))
            self.text = final.get("text/plain", "")
        if self.text and not self.text.endswith("\n"):
            self.out.write("\n")
        if footer:
            self.out.write(f"[{footer}]\n")
        self.out.flush()
