"""How one answer looks in a notebook: throttled rendering into an output, or text to stdout.

:class:`Coalescer` is pure and shared with the chat widget: the first text is rendered at
once, later text at most once per ``interval`` seconds (and, for very long answers, no
more than ``max_bytes_per_second`` of re-rendered text). The views read what to show from
the answer's :class:`~upstage_magic.session.Exchange` on its owner's thread; every display
is a MIME bundle of HTML our renderer built and sanitised plus ``text/plain``, never
Markdown for a front end to parse. A partial answer never shows a key's beginning.
"""
from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ..formats import Final, fence
from ..secrets import defang, mask_partial, secret_tail

__all__ = ["Coalescer", "PlainView", "RichView", "footer_bundle", "footer_text", "html_bundle", "stats_parts",
           "text_bundle", "thinking_html"]


class Coalescer:
    """Turn many small changes into few renders.

    ``changed(length)`` renders at once the first time, then only when ``interval`` has
    passed since the last render (otherwise it is marked pending); ``poll()`` renders
    pending changes whose time has come; ``flush()`` renders them unconditionally. Each
    render re-renders ``length`` characters, so for long texts the interval grows to keep
    that under ``max_bytes_per_second`` (None: no such bound).
    """

    def __init__(self, render: Callable[[], None], *, interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic, max_bytes_per_second: float | None = 200_000) -> None:
        self._render = render
        self.interval = float(interval)
        self._clock = clock
        self.max_bytes_per_second = max_bytes_per_second
        self._length = 0
        self.renders = 0
        self.pending = False
        self._last: float | None = None

    def current_interval(self) -> float:
        """The interval in force now (grows with the text for long answers)."""
        if not self.max_bytes_per_second:
            return self.interval
        return max(self.interval, self._length / self.max_bytes_per_second)

    def changed(self, length: int) -> None:
        """Something to show changed (``length``: the size a render re-renders now)."""
        self._length = length
        self.pending = True
        self.poll()

    def poll(self) -> bool:
        """Render pending changes if their interval has passed; return whether it rendered."""
        if self.pending and (self._last is None or self._clock() - self._last >= self.current_interval()):
            self._do_render()
            return True
        return False

    def flush(self) -> None:
        """Render once if anything is pending."""
        if self.pending:
            self._do_render()

    def _do_render(self) -> None:
        self.pending = False
        self._last = self._clock()
        self.renders += 1
        self._render()


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
    t = "~" if getattr(u, "estimated", False) else ""  # the server sent no usage: the client's estimate
    if u is not None and u.completion_tokens:
        counts = [f"{t}{u.completion_tokens - u.reasoning_tokens} answer"]
        if u.reasoning_tokens:
            counts.append(f"{t}{u.reasoning_tokens} reasoning")
        if u.prompt_tokens:
            counts.insert(0, f"{t}{u.prompt_tokens} prompt")
        text = " + ".join(counts) + " tokens"
        if u.cached_tokens:
            text += f" ({u.cached_tokens} prompt cached)"
        parts.append(text)
    elif chunks:
        parts.append(f"~{chunks} answer tokens")
    elif u is not None and u.prompt_tokens:
        parts.append(f"{t}{u.prompt_tokens} prompt tokens")
    if getattr(answer, "streamed", False) and getattr(answer, "replayed", None) is None:  # replayed: no timings
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
    """One short line: model · tokens in / out (reasoning) · time, and why it ended if notable.

    See :mod:`footer`; the detailed timings stay in ``metadata.upstage``.
    """
    from .footer import footer_line  # noqa: PLC0415

    return footer_line(exchange, status)


def thinking_html(reasoning: str, *, done: bool, summary: str = "Thinking…", renderer: Any = None) -> str:
    """The reasoning as a separate, dimmed block: open while streaming, collapsed after."""
    from ..render import render_html  # noqa: PLC0415

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
# Bundles: our sanitised HTML (with the answer stylesheet) + plain text
# --------------------------------------------------------------------------------------

# Our own wrappers around rendered answers (thinking, context, tool calls, footer, notes).
WRAPPER_CSS = """
details.um-thinking, details.um-context {
  margin: 0.25em 0 0.5em; padding: 0.25em 0.6em; border-left: 3px solid var(--jp-border-color1, #ccc);
  color: var(--jp-content-font-color2, #555);
}
details.um-thinking > summary, details.um-context > summary {
  cursor: pointer; font-size: 0.9em; color: var(--jp-content-font-color2, #555);
}
.um-thinking-body, .um-context-body { font-size: 0.9em; }
.um-answer .um-thinking-body p, .um-answer .um-thinking-body li { color: inherit; }
.um-answer details.um-tool { margin: 0.25em 0; padding: 0.2em 0.6em; border-left: 3px solid var(--jp-brand-color1, #1976d2); }
.um-answer .um-tool-calls pre { border-left: 3px solid var(--jp-brand-color1, #1976d2); padding-left: 0.6em; }
.um-answer .um-footer, .um-answer .um-note {
  font-size: 0.85em; font-style: italic; color: var(--jp-content-font-color2, #555); margin-top: 0.2em;
}
.um-answer .um-footer small, .um-answer .um-note small { font-size: 1em; }
""".strip()


def html_bundle(answer_html: str, plain: str) -> dict[str, Any]:
    """A MIME bundle of our sanitised HTML (with the answer stylesheet) and plain text (defanged)."""
    from ..render import CSS  # noqa: PLC0415

    # We render math ourselves: the front end's MathJax must not typeset server or notebook
    # text inside our outputs (mathjax_ignore: MathJax 3 in JupyterLab 4 and Notebook 7;
    # tex2jax_ignore: MathJax 2 in classic pages and older nbconvert templates).
    return {"text/html": f'<style>{CSS}\n{WRAPPER_CSS}</style>'
                         f'<div class="um-answer mathjax_ignore tex2jax_ignore">{answer_html}</div>',
            "text/plain": defang(plain)}  # a text front end's autolinker sees this twin


def text_bundle(text: str) -> dict[str, Any]:
    """Plain text shown as preformatted HTML (and as text/plain)."""
    from ..render import render_text_html  # noqa: PLC0415

    return html_bundle(render_text_html(text), text)


def body_html(fmt: str, text: str, *, renderer: Any = None, final: Final | None = None,
              load_images: bool = False) -> str:
    """The answer's HTML in its format: a streamed ``text`` (masked), or its ``final`` value."""
    from ..render import render_html, render_text_html  # noqa: PLC0415

    if final is not None:
        kind, shown, lang = final.kind, final.shown, final.lang
    else:
        kind, shown, lang = ("text" if fmt == "text" else "code" if fmt == "json" else "markdown"), text, "json"
    if kind == "text":
        return render_text_html(shown)
    if kind == "code":
        return render_html(fence(shown, lang))
    return renderer.render(shown) if renderer is not None else render_html(shown, load_images=load_images)


def footer_bundle(line: str, *, notes: list[str] | None = None) -> dict[str, Any]:
    """The one-line footer (and quiet notes under it) as escaped HTML and plain text."""
    # <small>: stays small where our stylesheet is dropped (an untrusted or exported notebook).
    parts = [f'<div class="um-footer"><small>{html.escape(line)}</small></div>'] if line else []
    parts += [f'<div class="um-note"><small>{html.escape(n)}</small></div>' for n in notes or ()]
    plain = "\n".join(([f"[{line}]"] if line else []) + list(notes or ()))
    return html_bundle("".join(parts), plain)


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

    ``fmt`` is markdown, text, code or json. Every update is our sanitised HTML plus the
    raw text; reasoning shows first as a separate "Thinking…" block, tool calls after the
    answer. At most one update per ``interval`` (:class:`Coalescer`); :meth:`finish`
    renders the final state once (the format's final value) and adds the footer.
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
        self.coalescer = Coalescer(lambda: self._show(self._bundle(None)), interval=interval)
        from .. import render  # noqa: PLC0415

        # One renderer per answer: it re-parses only the end of a growing answer.
        self.renderer = render.AnswerRenderer(load_images=load_images)
        self._thinking = render.AnswerRenderer()
        _warm_up(render)

    def changed(self) -> None:
        """New items reached the exchange: render now or when the interval has passed."""
        ex = self.exchange
        self.coalescer.changed(len(ex.text) + len(ex.reasoning))

    def tick(self) -> None:
        self.coalescer.poll()

    def _bundle(self, final: Final | None) -> dict[str, Any]:
        """The output now: streamed (``final`` None) or the complete answer in its format."""
        ex = self.exchange
        done = final is not None or ex.status != "streaming"
        text = ex.text if done else mask_partial(ex.text)
        body = body_html(self.fmt, text, renderer=self.renderer, final=final, load_images=self.load_images)
        plain = final.shown if final is not None else text
        if ex.reasoning:
            reasoning = ex.reasoning if done else mask_partial(ex.reasoning)
            body = thinking_html(reasoning, done=bool(text) or done, summary=self._thinking_summary(done),
                                 renderer=self._thinking) + body
        if ex.tool_calls:
            calls = tool_calls_text(ex.tool_calls)
            body += f'<div class="um-tool-calls"><pre>{html.escape(calls)}</pre></div>'
            plain = (plain + "\n" + calls).strip("\n")
        return html_bundle(body, plain)

    def _thinking_summary(self, done: bool) -> str:
        ex = self.exchange
        if not ex.text and not done:
            return "Thinking…"
        span = ex.reasoning_seconds
        return f"Thought for {span:.1f} s" if span else "Thoughts"

    def _show(self, bundle: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        if bundle == self._last_bundle and metadata is None:
            return
        self._last_bundle = bundle
        self.messages += 1
        extra = {"metadata": metadata} if metadata else {}
        if self.handle is None:
            self.handle = self._display(bundle, raw=True, display_id=True, **extra)
        else:
            self.handle.update(bundle, raw=True, **extra)

    def finish(self, final: Final | None, footer: str | None, *, notes: list[str] | None = None,
               metadata: dict[str, Any] | None = None) -> None:
        """Render the final state (``final``: the format's value of a complete answer) and the footer."""
        self.coalescer.pending = False  # the final render below replaces the last flush
        ex = self.exchange
        if ex.text or ex.reasoning or ex.tool_calls:
            self._show(self._bundle(final if ex.text else None), metadata)
        if footer or notes:
            self.messages += 1
            self._display(footer_bundle(footer or "", notes=notes), raw=True)


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

        The end of the text that could be the start of a secret is held back until it is
        known not to be one, so a key is never written in parts.
        """
        ex, out = self.exchange, self.out
        text = ex.text
        if ex.reasoning and not text:
            shown = ex.reasoning[: len(ex.reasoning) - secret_tail(ex.reasoning)]
            if len(shown) > self._reasoning_shown:
                out.write(("" if self._reasoning_shown else "[thinking] ") + shown[self._reasoning_shown:])
                self._reasoning_shown = len(shown)
        if text:
            shown = text if final or ex.status != "streaming" else text[: len(text) - secret_tail(text)]
            if len(shown) > self._shown:
                if self._reasoning_shown and not self._shown:
                    out.write("\n[answer]\n")
                out.write(shown[self._shown:])
                self._shown = len(shown)
        out.flush()

    def tick(self) -> None:
        pass

    def finish(self, final: Final | None, footer: str | None, *, notes: list[str] | None = None,
               metadata: dict[str, Any] | None = None) -> None:
        """End the streamed text with a newline, then print the footer line."""
        self.changed(final=True)
        ex, out = self.exchange, self.out
        if ex.tool_calls:
            out.write(("\n" if ex.text else "") + tool_calls_text(ex.tool_calls))
        if (ex.text or ex.tool_calls or self._reasoning_shown) and not (ex.text or "x").endswith("\n"):
            out.write("\n")
        if footer:
            out.write(f"[{footer}]\n")
        for note in notes or ():
            out.write(note + "\n")
        out.flush()
