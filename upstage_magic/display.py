"""Streaming view of one answer: throttled rendering into a notebook output or stdout.

:class:`Coalescer` is pure (no IPython) and shared with the chat widget: the first text is
rendered at once, later text at most once per ``interval`` seconds (and, for very long
answers, no more than ``max_bytes_per_second`` of re-rendered text), and :meth:`flush`
renders the final state once. The views read what to show from the answer's
:class:`~upstage_magic.session.Exchange` (text, reasoning, tool calls) and build every
display through :mod:`formats` (our sanitised HTML + plain text). No HTTP here.
"""
from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from . import formats
from .errors import mask_secrets

__all__ = ["Coalescer", "stats_parts", "footer_text", "RichView", "PlainView", "thinking_html"]


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

    def changed(self, length: int) -> None:
        """Something to show changed (the caller keeps the text; ``length`` = its size now)."""
        self._length = length
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
# Stats, footer
# --------------------------------------------------------------------------------------


def _rate(tps: float) -> str:
    return f"{tps:.0f} tok/s" if tps >= 10 else f"{tps:.1f} tok/s"


def stats_parts(answer: Any, *, elapsed: bool = False) -> list[str]:
    """Token counts, timings and speed of an answer, as short phrases.

    ``answer`` is an :class:`~upstage_magic.session.Exchange` or a recorded ``Turn`` (only
    its usage is known). Shared by the magic's footer and the widget's status line, e.g.
    ``["3 prompt + 20 answer + 120 reasoning tokens", "first byte 0.05 s",
    "first answer token 1.30 s", "48 tok/s"]``. Answer and reasoning tokens are counted
    apart (the server's ``completion_tokens`` includes reasoning); without a server count
    the answer tokens are estimated (``"~20 answer tokens"``). Streaming figures are left
    out for an answer that was not streamed. ``elapsed`` adds the total time.
    """
    parts: list[str] = []
    u = getattr(answer, "usage", None)
    chunks = getattr(answer, "chunks", 0) or getattr(answer, "estimated_tokens", 0)
    if u is not None and u.completion_tokens:
        counts = [f"{u.completion_tokens - u.reasoning_tokens} answer"]
        if u.reasoning_tokens:
            counts.append(f"{u.reasoning_tokens} reasoning")
        if u.prompt_tokens:
            counts.insert(0, f"{u.prompt_tokens} prompt")
        text = " + ".join(counts) + " tokens"
        if u.cached_tokens:
            text += f" ({u.cached_tokens} prompt cached)"
        parts.append(text)
    elif chunks:
        parts.append(f"~{chunks} answer tokens")
    elif u is not None and u.prompt_tokens:
        parts.append(f"{u.prompt_tokens} prompt tokens")
    if getattr(answer, "streamed", False):
        ttfb, ttft = getattr(answer, "ttfb", None), getattr(answer, "ttft", None)
        if ttfb is not None and (ttft is None or ttft - ttfb >= 0.05):
            parts.append(f"first byte {ttfb:.2f} s")
        if ttft is not None:
            parts.append(f"first answer token {ttft:.2f} s")
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


def thinking_html(reasoning: str, *, done: bool, summary: str = "Thinking…", renderer: Any = None) -> str:
    """The reasoning as a separate, dimmed block: open while streaming, collapsed after."""
    from .render import render_html  # noqa: PLC0415

    body = renderer.render(reasoning) if renderer is not None else render_html(reasoning)
    return (f'<details class="um-thinking"{"" if done else " open"}><summary>{html.escape(summary)}</summary>'
            f'<div class="um-thinking-body">{body}</div></details>')


def tool_calls_text(calls: list[Any]) -> str:
    """"the model asked to call name(args)" lines for tool calls."""
    lines = []
    for c in calls:
        name = getattr(c, "name", None) or (c.get("name") if isinstance(c, dict) else None) or "?"
        args = getattr(c, "arguments", None) if not isinstance(c, dict) else c.get("arguments")
        lines.append(f"The model asked to call {name}({args or ''})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Views of one answer (used by the magic). Rich: a notebook output updated in place.
# Plain: text written to a stream as it arrives (terminal IPython).
# --------------------------------------------------------------------------------------


_WARMED = False


def _warm_up(render: Any) -> None:
    """Load markdown-it, Pygments, latex2mathml and nh3 once, before a request, not mid-stream."""
    global _WARMED
    if not _WARMED:
        render.render_html("warm `up`\n```python\nx = 1\n```\n$x$")
        _WARMED = True


class RichView:
    """One answer as a notebook output: displayed at first text, updated in place.

    ``fmt`` is markdown, text, code or json (see :mod:`formats`). Every update is our
    sanitised HTML plus the raw text. At most one update per ``interval`` (see
    :class:`Coalescer`); :meth:`finish` renders the final state once and adds the footer.
    Reasoning, if the model streams any, shows first as a separate "Thinking…" block.
    """

    def __init__(self, exchange: Any, fmt: str = "markdown", *, interval: float = 0.1,
                 load_images: bool = False, display: Callable[..., Any] | None = None) -> None:
        if display is None:
            from IPython.display import display as ipython_display  # noqa: PLC0415

            display = ipython_display
        self._display: Callable[..., Any] = display
        self.exchange = exchange
        self.fmt = fmt
        self.load_images = load_images
        self.handle: Any = None
        self.messages = 0
        self._last_bundle: dict[str, Any] | None = None
        self.coalescer = Coalescer(self._render_stream, interval=interval)
        from . import render  # noqa: PLC0415

        # One renderer per answer: it re-parses only the end of a growing answer.
        self.renderer = render.AnswerRenderer(load_images=load_images)
        self._thinking = render.AnswerRenderer()
        _warm_up(render)

    # streaming -------------------------------------------------------------------------
    def changed(self) -> None:
        """New items reached the exchange: render now or when the interval has passed."""
        ex = self.exchange
        self.coalescer.changed(len(ex.text) + len(ex.reasoning))

    def tick(self) -> None:
        self.coalescer.poll()

    def _bundle(self, *, final: bool) -> dict[str, Any]:
        ex = self.exchange
        text = ex.text
        if final and not ex.reasoning and not ex.tool_calls:
            return formats.final_for(self.fmt, text, load_images=self.load_images, renderer=self.renderer).bundle
        bundle = formats.stream_bundle(self.fmt, text, load_images=self.load_images, final=final,
                                       renderer=self.renderer)
        extra_html, extra_plain = "", ""
        if ex.reasoning:
            reasoning = formats.mask_stream(ex.reasoning)
            extra_html = thinking_html(reasoning, done=bool(text) or final, summary=self._thinking_summary(final),
                                       renderer=self._thinking)
            extra_plain = ""
        if ex.tool_calls:
            calls = formats.mask_stream(tool_calls_text(ex.tool_calls))
            bundle = dict(bundle)
            bundle["text/html"] += f'<div class="um-tool-calls"><pre>{html.escape(calls)}</pre></div>'
            bundle["text/plain"] = (bundle["text/plain"] + "\n" + calls).strip("\n")
        if extra_html:
            bundle = dict(bundle)
            style_end = bundle["text/html"].find("</style>") + len("</style>")
            bundle["text/html"] = bundle["text/html"][:style_end] + extra_html + bundle["text/html"][style_end:]
            bundle["text/plain"] = extra_plain + bundle["text/plain"]
        return bundle

    def _thinking_summary(self, final: bool) -> str:
        ex = self.exchange
        if not ex.text and not final:
            return "Thinking…"
        span = getattr(ex, "reasoning_seconds", None)
        return f"Thought for {span:.1f} s" if span else "Thoughts"

    def _render_stream(self, _text: str) -> None:
        self._show(self._bundle(final=False))

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
    def finish(self, final: dict[str, Any] | None, footer: str | None, *, notes: list[str] | None = None,
               metadata: dict[str, Any] | None = None) -> None:
        """Render the final bundle (default: the whole answer) and the footer line."""
        self.coalescer.pending = False  # the final render below replaces the last flush
        ex = self.exchange
        if final is None and (ex.text or ex.reasoning or ex.tool_calls):
            final = self._bundle(final=True)
        if final is not None:
            if metadata and self.handle is not None:
                self._last_bundle = None
                self.messages += 1
                self.handle.update(final, raw=True, metadata=metadata)
            elif metadata:
                self.messages += 1
                self.handle = self._display(final, raw=True, display_id=True, metadata=metadata)
            else:
                self._show(final)
        if footer or notes:
            self.messages += 1
            self._display(formats.footer_bundle(footer or "", notes=notes), raw=True)


class PlainView:
    """One answer as plain text written to ``out`` as it arrives (terminal IPython)."""

    def __init__(self, exchange: Any, fmt: str = "markdown", *, out: TextIO | None = None) -> None:
        self.exchange = exchange
        self.fmt = fmt
        self._out = out
        self._shown = 0  # characters of the masked answer written
        self._reasoning_shown = 0
        self.messages = 0

    @property
    def out(self) -> TextIO:
        return self._out if self._out is not None else sys.stdout

    def changed(self, *, final: bool = False) -> None:
        """Write what arrived since the last call (reasoning first, marked, then the answer).

        The end of the text that could be the start of a secret is held back until it
        is known not to be one (or masked), so a key is never written in parts.
        """
        ex = self.exchange
        out = self.out
        text = ex.text
        if ex.reasoning and not text:
            masked = mask_secrets(ex.reasoning)
            masked = masked[: len(masked) - formats.secret_tail(masked)]
            if len(masked) > self._reasoning_shown:
                if not self._reasoning_shown:
                    out.write("[thinking] ")
                out.write(masked[self._reasoning_shown:])
                self._reasoning_shown = len(masked)
        if text:
            if not final:
                text = text[: len(text) - formats.secret_tail(text)]
            masked = mask_secrets(text)
            if len(masked) > self._shown:
                if self._reasoning_shown and not self._shown:
                    out.write("\n[answer]\n")
                out.write(masked[self._shown:])
                self._shown = len(masked)
        out.flush()

    def tick(self) -> None:
        pass

    def finish(self, final: dict[str, Any] | None, footer: str | None, *, notes: list[str] | None = None,
               metadata: dict[str, Any] | None = None) -> None:
        """End the streamed text with a newline, then print the footer line."""
        self.changed(final=True)
        ex = self.exchange
        out = self.out
        if final is not None and not ex.text:
            out.write(final.get("text/plain", ""))
        if ex.tool_calls:
            out.write(("\n" if ex.text else "") + tool_calls_text(ex.tool_calls))
        if (ex.text or ex.tool_calls or self._reasoning_shown) and not (ex.text or "x").endswith("\n"):
            out.write("\n")
        if footer:
            out.write(f"[{footer}]\n")
        for note in notes or ():
            out.write(note + "\n")
        out.flush()
