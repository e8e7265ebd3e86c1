"""What the chat shows for one answer, as pure functions of the text: the HTML of an answer
(masked, rendered, sanitised), the live answer's frozen blocks and tail, the stats line and the
one form every error takes. :mod:`~upstage_magic.notebook.widget` is the glue that sends them."""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import ModelNotFoundError, UpstageError
from ..render import AnswerRenderer, render_html
from ..secrets import mask_partial, mask_secrets, redact
from ..session import Exchange, SessionBusyError, Turn
from .display import stats_parts

__all__ = ["LiveAnswer", "answer_html", "error_parts", "fmt_stats", "widget_css"]

_STATIC = Path(__file__).parent / "static"
_GENERIC_HINT = "This looks like a bug in upstage-magic; the chat is still usable, try again."
_MODEL_HINT = ("Check the model name in this chat's Settings: its Model list holds the models your key can use "
               "(e.g. solar-pro4 or solar-mini4); pick one and press Retry.")
_STATUS_LABELS = {"streaming": "streaming…", "done": "done", "stopped": "stopped",
                  "length": "cut at max tokens", "error": "error"}


def widget_css() -> str:
    """The widget's stylesheet, plus the renderer's answer stylesheet when it has one."""
    from .. import render

    own = (_STATIC / "chat.css").read_text(encoding="utf-8")
    return own + "\n" + str(getattr(render, "CSS", ""))


# --------------------------------------------------------------------- pure helpers
# A newline right after these tags is whitespace between blocks (no effect on the page; pre
# contents are escaped text, so no real tag occurs there): not sent, ~10% of a long answer.
_BLOCK_NL = re.compile(r"(</(?:p|li|tr|td|th|thead|tbody|table|ul|ol|h[1-6]|blockquote|pre|div)>"
                       r"|<(?:tr|thead|tbody|table|ul|ol|blockquote|li)>|<hr ?/?>)\n")


def answer_html(text: str, *, load_images: bool = False) -> str:
    """Model text -> the HTML the browser gets: secrets masked, :func:`render_html`, block
    newlines dropped."""
    return _BLOCK_NL.sub(r"\1", render_html(mask_secrets(text), load_images=load_images))


def error_parts(exc: BaseException | str | None) -> dict[str, str]:
    """{kind, message, hint} of an error, secrets redacted (one form for every error)."""
    if isinstance(exc, ModelNotFoundError) and exc.hint == ModelNotFoundError.default_hint:
        # The cell's hint names `%upstage models`; in the chat the fix is the Model field.
        return {"kind": type(exc).__name__, "message": redact(exc.message), "hint": _MODEL_HINT}
    if isinstance(exc, UpstageError):
        return {"kind": type(exc).__name__, "message": redact(exc.message),
                "hint": exc.hint or "Press Retry to ask again."}
    if isinstance(exc, SessionBusyError):
        return {"kind": "Busy", "message": str(exc), "hint": "Wait for the answer or press Stop, then send again."}
    if isinstance(exc, BaseException):
        return {"kind": type(exc).__name__, "message": redact(exc) or type(exc).__name__, "hint": _GENERIC_HINT}
    return {"kind": "Error", "message": redact(exc or "the answer failed"), "hint": "Press Retry to ask again."}


def fmt_stats(status: str, answer: Exchange | Turn | None, *, elapsed: bool = False) -> str:
    bits = [_STATUS_LABELS.get(status, status)]
    if answer is not None:
        bits += stats_parts(answer, elapsed=elapsed)
        when = getattr(answer, "replayed", None)
        if when is not None:
            from ..replay import recorded_label  # noqa: PLC0415

            bits.append(recorded_label(when))
    return " · ".join(bits)


class LiveAnswer:
    """Render state of the streaming answer: frozen HTML (sent once) + tail, as in :func:`answer_html`."""

    def __init__(self, *, load_images: bool) -> None:
        self.renderer = AnswerRenderer(load_images=load_images)
        self.frozen_html: list[str] = []  # the pieces sent, block newlines dropped
        self._rendered = 0  # length of the renderer's frozen HTML in those pieces
        self.reasoning_len = -1

    @property
    def frozen(self) -> int:
        """Chars of the answer's Markdown that the frozen HTML stands for."""
        return self.renderer.frozen_chars

    def update(self, text: str) -> tuple[str, str, bool]:
        """(newly frozen HTML to append, HTML of the tail, reset: the frozen HTML starts over) for ``text``."""
        frozen, tail, reset = self.renderer.split(mask_partial(text))  # a key's beginning at the end never shows
        if reset:
            self.frozen_html, self._rendered = [], 0
        # Pieces end after a block's closing tag and newline, so dropping newlines per piece
        # gives what answer_html gives for the whole text.
        append = _BLOCK_NL.sub(r"\1", frozen[self._rendered:])
        if append:
            self.frozen_html.append(append)
        self._rendered = len(frozen)
        return append, _BLOCK_NL.sub(r"\1", tail), reset

