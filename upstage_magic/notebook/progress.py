"""Progress views for :func:`upstage_magic.batch.batch`: a widget in a kernel, a line elsewhere.

``make_progress()`` picks the view. ``start(stats)`` and ``finish(stats)`` run in the
caller's (cell's) thread, so their outputs land in the cell; ``update(stats)`` is called
from the batch's event loop a few times per second and only changes widget values (comm
messages, routed by widget id) or rewrites one line on stderr. Error texts shown in HTML
are escaped.
"""
from __future__ import annotations

import html
import sys
import threading
from typing import Any, Protocol, TextIO

from ..secrets import cut, defang

__all__ = ["ProgressView", "TextProgress", "WidgetProgress", "failures_table", "make_progress", "progress_line"]

MAX_FAILURES_SHOWN = 5


class _Stats(Protocol):  # the fields of batch.BatchStats used here
    total: int
    done: int
    cached: int
    failed: int
    retries: int
    rate_limited: int
    tokens_in: int
    tokens_out: int
    concurrency: int
    waiting_until: float
    first_errors: list[Any]

    @property
    def rate(self) -> float: ...
    @property
    def eta(self) -> float | None: ...
    @property
    def elapsed(self) -> float: ...
    def summary(self) -> str: ...
    def tokens_text(self) -> str: ...


class ProgressView(Protocol):
    def start(self, stats: Any) -> None: ...
    def update(self, stats: Any) -> None: ...
    def finish(self, stats: Any, *, interrupted: bool = False) -> None: ...


def _secs(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s // 60:.0f} min {s % 60:02.0f} s"
    return f"{s // 3600:.0f} h {(s % 3600) // 60:02.0f} min"


def progress_line(stats: _Stats) -> str:
    """``done/total · rate · ETA · tokens · retries · failures`` in one line."""
    import time

    parts = [f"{stats.done}/{stats.total}"]
    if stats.cached:
        parts.append(f"{stats.cached} cached")
    parts.append(f"{stats.rate:.1f}/s")
    if stats.done < stats.total:
        parts.append(f"ETA {_secs(stats.eta)}")
    parts.append(stats.tokens_text())
    parts.append(f"concurrency {stats.concurrency}")
    if stats.retries:
        parts.append(f"{stats.retries} retries")
    if stats.failed:
        parts.append(f"{stats.failed} failed")
    wait = stats.waiting_until - time.monotonic()
    if wait > 0.05:
        parts.append(f"rate-limited, waiting {wait:.1f} s")
    return " · ".join(parts)


def failures_table(stats: _Stats, *, as_html: bool) -> str:
    """The first failures as a small table (HTML escaped) or aligned text; "" if none."""
    errors = list(stats.first_errors)[:MAX_FAILURES_SHOWN]
    if not errors:
        return ""
    more = stats.failed - len(errors)
    if as_html:
        rows = "".join(
            f"<tr><td>{html.escape(repr(e.index))}</td><td>{html.escape(e.kind)}</td>"
            f"<td>{html.escape(_cut(e.message))}</td></tr>"
            for e in errors
        )
        tail = f"<div>... and {more} more (see <code>.errors</code>)</div>" if more > 0 else ""
        return (
            "<table><thead><tr><th>item</th><th>error</th><th>message</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>{tail}"
        )
    lines = [f"  {e.index!r}: {e.kind}: {_cut(e.message)}" for e in errors]
    if more > 0:
        lines.append(f"  ... and {more} more (see .errors)")
    return "First failures:\n" + "\n".join(lines)


def _cut(text: str, limit: int = 160) -> str:
    """A server's message on one line: masked, cut, its non-http schemes defanged (plain text)."""
    return defang(cut(" ".join(str(text).split()), limit, more="\u2026"))


class TextProgress:
    """One updating line on a text stream (stderr); only the summary when not a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        with self._lock:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()
            self._width = len(line)

    def start(self, stats: Any) -> None:
        if self.live:
            self._write(progress_line(stats))

    def update(self, stats: Any) -> None:
        if self.live:
            self._write(progress_line(stats))

    def finish(self, stats: Any, *, interrupted: bool = False) -> None:
        line = ("Stopped: " if interrupted else "Done: ") + stats.summary()
        if self.live:
            self._write(line)
            self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        table = failures_table(stats, as_html=False)
        if table:
            self.stream.write(table + "\n")
        self.stream.flush()


class WidgetProgress:
    """An ipywidgets progress bar and status line; a summary (and failures) at the end."""

    def __init__(self) -> None:
        import ipywidgets as widgets  # type: ignore[import-untyped,unused-ignore]

        self._widgets = widgets
        self.bar = widgets.IntProgress(value=0, min=0, max=1, description="Batch",
                                       layout=widgets.Layout(width="60%"))
        self.label = widgets.HTML(value="")
        self.box = widgets.VBox([self.bar, self.label])

    def start(self, stats: Any) -> None:
        from IPython.display import display

        self.bar.max = max(1, stats.total)
        self.update(stats)
        display(self.box)

    def update(self, stats: Any) -> None:
        self.bar.value = min(stats.done, self.bar.max)
        self.label.value = f"<span style='font-family: monospace'>{html.escape(progress_line(stats))}</span>"

    def finish(self, stats: Any, *, interrupted: bool = False) -> None:
        from IPython.display import display

        self.update(stats)
        self.label.value = ""  # the summary below says the numbers once (not twice in two fonts)
        self.bar.bar_style = "danger" if interrupted else ("warning" if stats.failed else "success")
        head = ("Stopped: " if interrupted else "Done: ") + stats.summary()
        table_html = failures_table(stats, as_html=True)
        table_text = failures_table(stats, as_html=False)

        class _Summary:  # text/plain and text/html of one output
            def _repr_html_(self) -> str:
                # Our HTML: the front end's MathJax must not typeset server text in it.
                return (f'<div class="mathjax_ignore tex2jax_ignore"><div>{html.escape(head)}</div>'
                        f"{table_html}</div>")

            def __repr__(self) -> str:
                return head + ("\n" + table_text if table_text else "")

        display(_Summary())


def _in_kernel() -> bool:
    ip_mod = sys.modules.get("IPython")
    if ip_mod is None:
        return False
    ip = ip_mod.get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def make_progress(stream: TextIO | None = None) -> ProgressView:
    """A WidgetProgress in a Jupyter kernel (ipywidgets installed), else a TextProgress."""
    if stream is None and _in_kernel():
        try:
            return WidgetProgress()
        except ImportError:
            pass
    return TextProgress(stream)
