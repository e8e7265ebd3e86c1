"""A streamed answer rendered again and again: finished blocks kept, only the unfinished end re-parsed."""
from __future__ import annotations

import re
from typing import Any

from .rules import markdown, normalise, render_tokens


class AnswerRenderer:
    """Render one growing (streamed) answer again and again, re-parsing only its unfinished end.

    :meth:`split` gives the HTML as the *frozen* top-level blocks (nothing that follows can
    change them; kept while each new text extends the last one) and the *tail*; :meth:`render`
    joins them: exactly ``render_html(text, load_images=...)``. One instance per answer.
    """

    def __init__(self, *, load_images: bool = False) -> None:
        self.load_images = bool(load_images)
        self._done_src = ""  # normalised text of the frozen blocks
        self._done_html = ""
        self._last = ""  # the last text split (normalised): reuse only when the new one extends it
        self.reparsed_chars = 0  # how much text the last split parsed (for tests/benchmarks)

    @property
    def frozen_chars(self) -> int:
        """How many characters of the last text (normalised) the frozen HTML stands for."""
        return len(self._done_src)

    def render(self, text: str) -> str:
        """Sanitised HTML of ``text`` (the whole answer so far)."""
        return "".join(self.split(text)[:2])

    def split(self, text: str) -> tuple[str, str, bool]:
        """``(frozen_html, tail_html, reset)`` for ``text``, the whole answer so far.

        ``frozen_html + tail_html == render_html(text)``. From one call to the next
        ``frozen_html`` only grows by appending, unless ``reset`` is true: the text does not
        extend the last one, or it has a link reference definition (which changes links
        before it too, so the whole text is rendered again, all of it as the tail). On a
        reset a consumer replaces the frozen HTML it holds instead of appending to it.
        """
        norm = normalise(text)
        reset = not norm.startswith(self._last)
        if reset:
            self._done_src, self._done_html = "", ""
        self._last, start = norm, len(self._done_src)
        tail = norm[start:]
        self.reparsed_chars = len(tail)
        if not norm:
            return "", "", reset
        env: dict[str, Any] = {"load_images": self.load_images}
        tokens = markdown().parse(tail, env)
        if env.get("references") and start:
            self._done_src, self._done_html = "", ""
            return (*self.split(text)[:2], True)
        if env.get("references"):
            return "", render_tokens(tokens, env, load_images=self.load_images), True
        cut = _stable_cut(tokens, tail)
        if cut is not None:
            index, offset = cut
            self._done_html += render_tokens(tokens[:index], env, load_images=self.load_images)
            self._done_src = norm[: start + offset]
            tokens, env = tokens[index:], {"load_images": self.load_images}
        return self._done_html, render_tokens(tokens, env, load_images=self.load_images), reset


_LIST_OR_INDENT = frozenset(" \t-+*0123456789")


def _stable_cut(tokens: list[Any], src: str) -> tuple[int, int] | None:
    """(token index, text offset) of the last top-level block that nothing after it can change.

    Blocks before it are final: it starts after a blank line, at column 0, with a character
    that cannot start a list item (a later list item could join an earlier list and make
    it loose) nor continue an earlier container.
    """
    line_starts: list[int] | None = None
    for i in range(len(tokens) - 1, 0, -1):
        tok = tokens[i]
        if tok.level != 0 or tok.nesting == -1 or not tok.map or tok.map[0] == 0:
            continue
        if line_starts is None:
            line_starts = [0] + [m.end() for m in re.finditer("\n", src)]
        line = tok.map[0]
        begin = line_starts[line]
        prev = src[line_starts[line - 1] : begin]
        # Blank as CommonMark means it: spaces and tabs only (str.strip() would also take a
        # no-break space line for blank, and a "#" line after it is not always a heading).
        if begin < len(src) and src[begin] not in _LIST_OR_INDENT and not prev.strip(" \t\n"):
            return i, begin
    return None
