"""The live "retrying (2/3) in 1.5 s: ..." line of a cell while the HTTP layer waits to retry.

The provider announces each retry (:mod:`upstage_magic.retries`) on the stream's thread;
:meth:`RetryLine.heard` only records it, and the cell's own thread shows it at the next
tick (a display updated in place; a line on stderr in a terminal). It is removed as soon as
the answer starts, and when the answer ends whichever way.
"""
from __future__ import annotations

import html
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["RetryLine"]


class RetryLine:
    def __init__(self, rich: bool, *, display: Callable[..., Any] | None = None) -> None:
        self.rich = rich
        self._display = display
        self.notice: Any = None
        self._shown: Any = None
        self.handle: Any = None
        self.shown_texts: list[str] = []

    def heard(self, notice: Any) -> None:
        """A retry was announced (any thread): remember it for the next tick."""
        self.notice = notice

    def pump(self, run_stream: Callable[..., Any]) -> Callable[..., Any]:
        """``run_stream`` with this line listening to the stream's retries."""
        from ..retries import listening  # noqa: PLC0415

        def pump(make_stream: Callable[[], Any], on_batch: Callable[..., Any], **kw: Any) -> Any:
            return run_stream(lambda: listening(make_stream, self.heard), on_batch, **kw)

        return pump

    def tick(self) -> None:
        """Show the newest retry notice if it is not shown yet (the owner's thread)."""
        notice = self.notice
        if notice is None or notice is self._shown:
            return
        self._shown = notice
        text = notice.describe()
        self.shown_texts.append(text)
        if not self.rich:
            print(text, file=sys.stderr)
            return
        from .display import html_bundle  # noqa: PLC0415

        bundle = html_bundle(f'<div class="um-note"><small>{html.escape(text)}</small></div>', text)
        if self.handle is None:
            show = self._display
            if show is None:
                from IPython.display import display as ipython_display  # noqa: PLC0415

                show = ipython_display
            self.handle = show(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)

    def clear(self) -> None:
        """Remove the line (the answer started or ended)."""
        self.notice = None
        if self.handle is not None:
            self.handle.update({"text/plain": ""}, raw=True)
            self.handle = None
