"""Code blocks: the fence's language tag cleaned, the code escaped and highlighted with Pygments."""
from __future__ import annotations

import functools
import html
import itertools
import re
from typing import Any

from .sanitiser import PYGMENTS_CLASSES

_LANG_CHARS = re.compile(r"[^\w+#.\-]")
# Some Pygments lexers are quadratic in a line's length (measured: 60 KB of ``'\\`` in one
# js or perl line took 40+ s), so larger blocks and longer lines are shown unhighlighted.
_HIGHLIGHT_LIMIT = 20_000
_HIGHLIGHT_LINE_LIMIT = 1000


def clean_language(info: str) -> str:
    """First word of a fence's info string, reduced to ``[\\w+#.-]`` (at most 32 characters)."""
    word = info.strip().split(maxsplit=1)[0] if info.strip() else ""
    return _LANG_CHARS.sub("", word)[:32]


@functools.lru_cache(maxsize=64)
def _lexer_class(lang: str) -> Any:
    """Pygments lexer class for a language name, or None (bounded cache of name lookups)."""
    from pygments.lexers import get_lexer_by_name

    try:
        return type(get_lexer_by_name(lang))
    except Exception:  # noqa: BLE001 - ClassNotFound, or a broken plugin lexer: no highlighting
        return None


@functools.lru_cache(maxsize=512)
def _token_class(ttype: Any) -> str:
    """The class for a Pygments token type: its standard short name if allow-listed, else none."""
    from pygments.token import STANDARD_TYPES

    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    cls = STANDARD_TYPES[ttype]
    return cls if cls in PYGMENTS_CLASSES else ""


def _tokens(code: str, lang: str) -> list[tuple[int, Any, str]] | None:
    """Pygments tokens of ``code``, or None: unknown language, too big to lex fast, or the lexer failed."""
    if not lang or len(code) > _HIGHLIGHT_LIMIT or max(map(len, code.split("\n"))) > _HIGHLIGHT_LINE_LIMIT:
        return None
    lexer_class = _lexer_class(lang)
    if lexer_class is None:
        return None
    try:
        lexer = lexer_class(stripnl=False, stripall=False, ensurenl=False, tabsize=0)
        return list(lexer.get_tokens_unprocessed(code))
    except Exception:  # noqa: BLE001 - any lexer failing on odd input: show the code unhighlighted
        return None


def highlight_code(code: str, lang: str) -> str:
    """Escaped code, with Pygments ``<span class="k">`` token classes when ``lang`` is known."""
    tokens = _tokens(code, lang)
    if tokens is None or "".join(t[2] for t in tokens) != code:  # never show text other than the code
        return html.escape(code, quote=False)
    runs = itertools.groupby(tokens, key=lambda t: _token_class(t[1]))  # one span per run of a class
    parts = ((cls, html.escape("".join(t[2] for t in run), quote=False)) for cls, run in runs)
    return "".join(f'<span class="{cls}">{text}</span>' if cls else text for cls, text in parts)


def code_block_html(code: str, info: str) -> str:
    """A fenced or indented code block: ``<pre class="um-code">``, highlighted by its info string's language."""
    return f'<pre class="um-code"><code>{highlight_code(code, clean_language(info))}</code></pre>\n'
