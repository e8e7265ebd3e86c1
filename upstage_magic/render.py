"""Model text -> sanitised HTML: the only place HTML is made from untrusted model output.

Model answers are untrusted (prompt injection can put anything in them) and a live notebook
output is trusted by JupyterLab, so nothing downstream protects the page. One pipeline,
never Markdown for a front end to parse again:

    text -> markdown-it-py (CommonMark + tables + strikethrough, raw HTML off, our rules for
            links, images, code and math) -> HTML -> nh3 (ammonia) allow-list -> page

- Tags, attributes and classes come from the short allow-lists below (no ``style``, no
  ``on*``, no ``id``; classes only from Pygments' short token names and our ``um-*`` names,
  so never ``language-*`` or ``mermaid``, which front ends and nbconvert act on).
- A link keeps its ``href`` only if its scheme is http, https or mailto, decided after
  decoding entities and backslash escapes and removing every whitespace, control and
  format character (``\\u00a0``, ``\\ufeff``, ``\\u2028``, ``\\u200b`` ...); nh3 checks
  again with a real URL parser and drops relative URLs (an answer has no base). Every link
  gets ``target="_blank" rel="noopener noreferrer"``.
- Code blocks are escaped and highlighted here with Pygments; the language tag only picks
  a lexer. Math becomes MathML (latex2mathml) or stays escaped text.
- Remote images are not fetched unless ``load_images=True``; otherwise they show as a
  link "image: alt (host)".

Pure: markdown-it-py, nh3, Pygments and latex2mathml load on first use.
"""
from __future__ import annotations

import bisect
import functools
import html
import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "ALLOWED_CLASSES",
    "ALLOWED_TAGS",
    "CSS",
    "LINK_SCHEMES",
    "PYGMENTS_CLASSES",
    "AnswerRenderer",
    "export_markdown_text",
    "is_unsafe_url",
    "render_html",
    "render_text_html",
]

# ---------------------------------------------------------------------------- allow-lists

LINK_SCHEMES = frozenset({"http", "https", "mailto"})
IMAGE_SCHEMES = frozenset({"http", "https"})

# Only what latex2mathml emits for ordinary formulas. Left out on purpose: maction,
# mglyph, semantics/annotation(-xml) (HTML integration points), and the attributes
# href, style, class, id, mathbackground that latex2mathml passes through from the TeX.
_MATHML_TAGS = frozenset({
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup",
    "mfrac", "msqrt", "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd",
    "mstyle", "mpadded", "mphantom", "menclose", "merror",
})
_MATHML_ATTRIBUTES: dict[str, frozenset[str]] = {
    "math": frozenset({"display"}),
    "mo": frozenset({"stretchy", "fence", "separator", "form", "accent", "largeop", "movablelimits",
                     "symmetric", "minsize", "maxsize", "lspace", "rspace"}),
    "mover": frozenset({"accent"}),
    "munder": frozenset({"accentunder"}),
    "munderover": frozenset({"accent", "accentunder"}),
    "mfrac": frozenset({"linethickness"}),
    "mstyle": frozenset({"displaystyle", "scriptlevel", "mathcolor"}),
    "mspace": frozenset({"width", "height", "depth"}),
    "mpadded": frozenset({"width", "height", "depth", "lspace", "voffset"}),
    "mtable": frozenset({"columnalign", "rowalign", "columnlines", "rowlines", "columnspacing",
                         "rowspacing", "frame"}),
    "mtd": frozenset({"columnalign", "rowalign", "columnspan", "rowspan"}),
    "menclose": frozenset({"notation"}),
}

_HTML_TAGS = frozenset({
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "span",
})
ALLOWED_TAGS: frozenset[str] = _HTML_TAGS | _MATHML_TAGS
"""Tags the renderer may emit (``img`` only with ``load_images=True``)."""

ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": frozenset({"href", "title", "target", "rel"}),
    "img": frozenset({"src", "alt", "title"}),
    "ol": frozenset({"start"}),
    **_MATHML_ATTRIBUTES,
}
"""Attributes per tag (besides ``class``, which only takes :data:`ALLOWED_CLASSES`)."""

_ALIGN_CLASSES = frozenset({"um-align-left", "um-align-center", "um-align-right"})

# Pygments' short token class names (pygments.token.STANDARD_TYPES, Pygments 2.x); a token
# whose class is not listed here is shown without one.
PYGMENTS_CLASSES = frozenset({
    "bp", "c", "c1", "ch", "cm", "cp", "cpf", "cs", "dl", "err", "esc", "fm", "g", "gd", "ge",
    "ges", "gh", "gi", "go", "gp", "gr", "gs", "gt", "gu", "il", "k", "kc", "kd", "kn", "kp",
    "kr", "kt", "l", "ld", "m", "mb", "mf", "mh", "mi", "mo", "n", "na", "nb", "nc", "nd", "ne",
    "nf", "ni", "nl", "nn", "no", "nt", "nv", "nx", "o", "ow", "p", "pm", "py", "s", "s1", "s2",
    "sa", "sb", "sc", "sd", "se", "sh", "si", "sr", "ss", "sx", "vc", "vg", "vi", "vm", "w", "x",
})

ALLOWED_CLASSES: dict[str, frozenset[str]] = {
    "pre": frozenset({"um-code", "um-text"}),
    "span": PYGMENTS_CLASSES | {"um-image-link", "um-math-source"},
    "a": frozenset({"um-image-link"}),
    "th": _ALIGN_CLASSES,
    "td": _ALIGN_CLASSES,
}
"""``class`` values allowed per tag: Pygments token classes and our own ``um-*`` names."""

# ---------------------------------------------------------------------------- URLs

_BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")


def _invisible(ch: str) -> bool:
    """Whitespace, controls, format and unassigned characters: a browser or parser may skip them."""
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")


def url_scheme(url: str) -> str | None:
    """The scheme ``url`` could be read as (lower case), or None for a URL without one.

    Sees through entities, backslash escapes (also nested) and every kind of whitespace,
    control or invisible format character anywhere in the URL.
    """
    u = url[:2048]
    for _ in range(4):
        prev = u
        u = _BACKSLASH_ESCAPE.sub(r"\1", html.unescape(u))
        if u == prev:
            break
    u = "".join(ch for ch in u if not _invisible(ch)).lower()
    m = _SCHEME.match(u)
    return m.group(1) if m else None


def _url_allowed(url: str, schemes: frozenset[str] = LINK_SCHEMES) -> bool:
    """True if ``url`` is an absolute URL whose scheme is in ``schemes`` (relative URLs are refused)."""
    scheme = url_scheme(url)
    if scheme is None or scheme not in schemes:
        return False
    # The URL as written must start with that scheme too (what a browser reads), not only
    # after our cleaning: "\u00a0https://x" is a relative URL to a browser.
    return url[: len(scheme) + 1].lower() == scheme + ":"


def is_unsafe_url(url: str) -> bool:
    """True unless ``url`` is an absolute http, https or mailto URL (relative ones are unsafe too)."""
    return not _url_allowed(url)


# ---------------------------------------------------------------------------- code


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
    from pygments.util import ClassNotFound

    try:
        return type(get_lexer_by_name(lang))
    except ClassNotFound:
        return None
    except Exception:  # noqa: BLE001 - a broken plugin lexer must not break rendering
        return None


@functools.lru_cache(maxsize=1)
def _token_class() -> Any:
    from pygments.token import STANDARD_TYPES

    @functools.lru_cache(maxsize=512)
    def token_class(ttype: Any) -> str:
        while ttype not in STANDARD_TYPES:
            ttype = ttype.parent
        cls = STANDARD_TYPES[ttype]
        return cls if cls in PYGMENTS_CLASSES else ""

    return token_class


def highlight_code(code: str, lang: str) -> str:
    """Escaped code, with Pygments ``<span class="k">`` token classes when ``lang`` is known."""
    lexer_class = _lexer_class(lang) if lang and _highlightable(code) else None
    if lexer_class is None:
        return html.escape(code, quote=False)
    try:
        lexer = lexer_class(stripnl=False, stripall=False, ensurenl=False, tabsize=0)
        tokens = list(lexer.get_tokens_unprocessed(code))
    except Exception:  # noqa: BLE001 - any lexer failing on odd input: show the code unhighlighted
        return html.escape(code, quote=False)
    if "".join(t[2] for t in tokens) != code:  # never show text other than the code itself
        return html.escape(code, quote=False)
    token_class = _token_class()
    out: list[str] = []
    run_class, run = "", []  # type: tuple[str, list[str]]
    for _, ttype, value in tokens:
        cls = token_class(ttype)
        if cls != run_class and run:
            out.append(_span(run_class, "".join(run)))
            run = []
        run_class = cls
        run.append(value)
    if run:
        out.append(_span(run_class, "".join(run)))
    return "".join(out)


def _highlightable(code: str) -> bool:
    """Small enough for Pygments to stay fast: bounded size and line length."""
    return len(code) <= _HIGHLIGHT_LIMIT and max(map(len, code.split("\n"))) <= _HIGHLIGHT_LINE_LIMIT


def _span(cls: str, text: str) -> str:
    escaped = html.escape(text, quote=False)
    return f'<span class="{cls}">{escaped}</span>' if cls else escaped


def _code_block(code: str, lang: str) -> str:
    return f'<pre class="um-code"><code>{highlight_code(code, lang)}</code></pre>\n'


# ---------------------------------------------------------------------------- math

_MATH_LIMIT = 4000  # longer formulas stay text
_MATH_MAX_DEPTH = 40  # brace/environment nesting beyond this stays text (latex2mathml recurses)
_MATHML_TAG = re.compile(r"</?([a-z]+)[\s/>]")


def latex_to_mathml(latex: str, *, display: bool) -> str | None:
    """MathML for ``latex`` or None if it cannot be converted safely."""
    if not latex.strip() or len(latex) > _MATH_LIMIT:
        return None
    depth = deepest = 0
    for ch in latex:
        if ch == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == "}":
            depth -= 1
    if deepest > _MATH_MAX_DEPTH or latex.count("\\begin") > _MATH_MAX_DEPTH:
        return None
    try:
        from latex2mathml.converter import convert

        out = convert(latex, display="block" if display else "inline")
    except Exception:  # noqa: BLE001 - malformed TeX, recursion...: show the source instead
        return None
    # latex2mathml copies \text{...} unescaped; only well-known MathML tags may appear.
    tags = _MATHML_TAG.findall(out)
    if out.count("<") != len(tags) or any(t not in _MATHML_TAGS for t in tags):
        return None
    return out


def _math_html(latex: str, source: str, *, display: bool) -> str:
    mathml = latex_to_mathml(latex, display=display)
    if mathml is None:
        return f'<span class="um-math-source">{html.escape(source, quote=False)}</span>'
    return mathml


def _math_inline_rule(state: Any, silent: bool) -> bool:
    """Inline math: ``$..$`` (pandoc rules: no space inside the dollars, no digit after), ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``."""
    src, pos = state.src, state.pos
    ch = src[pos]
    if ch == "$":
        if src.startswith("$$", pos):
            opener, closer, display = "$$", "$$", True
        else:
            opener, closer, display = "$", "$", False
    elif ch == "\\" and pos + 1 < state.posMax and src[pos + 1] in "([":
        opener = src[pos : pos + 2]
        closer, display = ("\\)", False) if opener == "\\(" else ("\\]", True)
    else:
        return False
    start = pos + len(opener)
    if opener == "$":
        if start >= state.posMax or src[start].isspace():
            return False
        end = _next_dollar_closer(state, start)
    else:
        end = _find_memo(state, closer, start)
    if end < 0 or end + len(closer) > state.posMax or end == start or end - start > _MATH_LIMIT:
        return False
    if not silent:
        token = state.push("um_math", "", 0)
        token.content = src[start:end]
        token.markup = opener
        token.info = "display" if display else ""
        token.meta = {"source": src[pos : end + len(closer)]}
    state.pos = end + len(closer)
    return True


def _find_memo(state: Any, needle: str, start: int) -> int:
    """``state.src.find(needle, start)``, remembering the last answer so many openers stay linear."""
    memo = state.__dict__.setdefault("_um_find", {})
    key = (needle, state.posMax)  # link labels are parsed with a smaller posMax
    last = memo.get(key)
    if last is not None and last[0] <= start and (last[1] < 0 or last[1] >= start):
        return int(last[1])
    found = state.src.find(needle, start, state.posMax)
    memo[key] = (start, found)
    return found


def _next_dollar_closer(state: Any, start: int) -> int:
    """Next ``$`` at or after ``start`` that can close inline math (non-space before, no digit after)."""
    closers = state.__dict__.get("_um_dollars")
    if closers is None:  # over the whole source: the caller checks against posMax
        src, end = state.src, len(state.src)
        closers = []
        i = src.find("$", 0, end)
        while i >= 0:
            if (i > 0 and not src[i - 1].isspace() and src[i - 1] != "\\"
                    and not (i + 1 < end and (src[i + 1].isdigit() or src[i + 1] == "$"))
                    and src[i - 1] != "$"):
                closers.append(i)
            i = src.find("$", i + 1, end)
        state.__dict__["_um_dollars"] = closers
    k = bisect.bisect_left(closers, start)
    return int(closers[k]) if k < len(closers) else -1


def _math_block_rule(state: Any, start_line: int, end_line: int, silent: bool) -> bool:
    """Display math on its own lines: ``$$`` or ``\\[`` at a line start up to ``$$`` / ``\\]`` at a line end, no blank line."""
    pos = state.bMarks[start_line] + state.tShift[start_line]
    maximum = state.eMarks[start_line]
    if state.sCount[start_line] - state.blkIndent >= 4:
        return False
    src = state.src
    if src.startswith("$$", pos):
        opener, closer = "$$", "$$"
    elif src.startswith("\\[", pos):
        opener, closer = "\\[", "\\]"
    else:
        return False
    first = src[pos + len(opener) : maximum]
    line = start_line
    if first.rstrip().endswith(closer) and len(first.rstrip()) >= len(closer):
        body = first.rstrip()[: -len(closer)]
    else:
        parts = [first]
        while True:
            line += 1
            if line >= end_line or state.isEmpty(line) or state.sCount[line] < state.blkIndent:
                return False  # unclosed: not math (yet)
            text = src[state.bMarks[line] + state.tShift[line] : state.eMarks[line]].rstrip()
            if text.endswith(closer):
                parts.append(text[: -len(closer)])
                break
            parts.append(text)
        body = "\n".join(parts)
    if silent:
        return True
    token = state.push("um_math_block", "", 0)
    token.content = body
    token.markup = opener
    token.map = [start_line, line + 1]
    token.meta = {"source": state.getLines(start_line, line + 1, state.blkIndent, False).rstrip("\n")}
    state.line = line + 1
    return True


# ---------------------------------------------------------------------------- Markdown

# markdown-it stops parsing at ``maxNesting`` block levels and silently drops the rest of
# the enclosing block (for a deep list: the rest of the answer). Past this depth the lines
# are taken as one plain paragraph instead, so no text is lost and recursion stays bounded.
_MAX_BLOCK_DEPTH = 20


def _deep_block_as_text(state: Any, start_line: int, end_line: int, silent: bool) -> bool:
    """Block rule: at ``_MAX_BLOCK_DEPTH`` levels, the remaining lines become one paragraph."""
    if state.level < _MAX_BLOCK_DEPTH:
        return False
    if silent:
        return True
    line = start_line + 1
    while line < end_line and (state.isEmpty(line) or state.sCount[line] >= state.blkIndent):
        line += 1  # the lines of this block: up to the first one indented less (as tokenize stops)
    token = state.push("paragraph_open", "p", 1)
    token.map = [start_line, line]
    token = state.push("inline", "", 0)
    token.content = state.getLines(start_line, line, state.blkIndent, False).strip()
    token.map = [start_line, line]
    token.children = []
    state.push("paragraph_close", "p", -1)
    state.line = line
    return True


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def _render_link_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    href = str(token.attrGet("href") or "")
    stack = env.setdefault("_um_links", [])
    if not _url_allowed(href):
        stack.append(False)
        return ""  # the link's text stays, as plain text
    stack.append(True)
    title = token.attrGet("title")
    title_attr = f' title="{_attr(str(title))}"' if title else ""
    return f'<a href="{_attr(href)}"{title_attr}>'


def _render_link_close(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    stack = env.get("_um_links") or [False]
    return "</a>" if stack.pop() else ""


def _render_image(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    alt = self.renderInlineAsText(token.children, options, env)
    title = token.attrGet("title")
    title_attr = f' title="{_attr(str(title))}"' if title else ""
    if not _url_allowed(src, IMAGE_SCHEMES):
        label = f"image: {alt}" if alt else "image"
        return f'<span class="um-image-link">{html.escape(label, quote=False)}</span>'
    if env.get("load_images"):
        return f'<img src="{_attr(src)}" alt="{_attr(alt)}"{title_attr}>'
    try:
        host = urlsplit(src).hostname or ""
    except ValueError:
        host = ""
    label = f"image: {alt}" if alt else "image"
    if host:
        label += f" ({host})"
    text = html.escape(label, quote=False)
    if any(env.get("_um_links") or []):  # inside a link: no nested <a>
        return f'<span class="um-image-link">{text}</span>'
    return f'<a class="um-image-link" href="{_attr(src)}"{title_attr}>{text}</a>'


def _render_code(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    return _code_block(token.content, clean_language(token.info or ""))


def _render_cell_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    style = str(token.attrGet("style") or "")
    align = style.removeprefix("text-align:") if style.startswith("text-align:") else ""
    cls = f' class="um-align-{align}"' if align in ("left", "center", "right") else ""
    return f"<{token.tag}{cls}>"


def _render_math(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    return _math_html(token.content, token.meta["source"], display=token.info == "display")


def _render_math_block(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    return f"<p>{_math_html(token.content, token.meta['source'], display=True)}</p>\n"


@functools.lru_cache(maxsize=1)
def _markdown() -> Any:
    """The one markdown-it-py parser: CommonMark + tables + strikethrough, raw HTML off."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    # Every link and image is parsed as CommonMark says; whether it keeps its URL is
    # decided when it is rendered (so a refused link still shows its text).
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    md.options["maxNesting"] = _MAX_BLOCK_DEPTH + 10  # never reached by blocks: the rule fires first
    md.block.ruler.before("table", "deep_block_as_text", _deep_block_as_text)
    md.block.ruler.after("fence", "um_math_block", _math_block_rule)
    md.inline.ruler.before("escape", "um_math", _math_inline_rule)
    for name, rule in [
        ("link_open", _render_link_open), ("link_close", _render_link_close), ("image", _render_image),
        ("fence", _render_code), ("code_block", _render_code), ("th_open", _render_cell_open),
        ("td_open", _render_cell_open), ("um_math", _render_math), ("um_math_block", _render_math_block),
    ]:
        md.add_render_rule(name, rule)
    return md


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")


# ---------------------------------------------------------------------------- sanitiser


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    """Second check on URLs (ours, not only nh3's): the allow-listed schemes after cleaning."""
    if attr == "href":
        return value if _url_allowed(value) else None
    if attr == "src":
        return value if _url_allowed(value, IMAGE_SCHEMES) else None
    return value


@functools.lru_cache(maxsize=2)
def _cleaner(load_images: bool) -> Any:
    import nh3

    tags = set(ALLOWED_TAGS) | ({"img"} if load_images else set())
    attributes = {t: set(a - {"rel", "target"}) for t, a in ALLOWED_ATTRIBUTES.items() if t in tags}
    return nh3.Cleaner(
        tags=tags,
        clean_content_tags={"script", "style"},
        attributes=attributes,
        attribute_filter=_attribute_filter,
        strip_comments=True,
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes=set(LINK_SCHEMES),
        url_relative="deny",
        allowed_classes={t: set(c) for t, c in ALLOWED_CLASSES.items()},
    )


def sanitise(fragment: str, *, load_images: bool = False) -> str:
    """Run an HTML fragment through the nh3 allow-list (the last step of every render)."""
    return str(_cleaner(bool(load_images)).clean(fragment))


# ---------------------------------------------------------------------------- public


def render_html(text: str, *, load_images: bool = False) -> str:
    """Render a Markdown answer (or a streamed prefix of one) to a sanitised HTML fragment.

    Raw HTML in the answer shows as text; links keep their URL only for http, https and
    mailto (and open in a new tab with ``rel="noopener noreferrer"``); code blocks are
    escaped and highlighted with Pygments classes; ``$..$``, ``$$..$$``, ``\\(..\\)``,
    ``\\[..\\]`` become MathML (or stay as text); remote images are shown as links
    unless ``load_images`` is true. Wrap the result in ``<div class="um-answer">`` and
    add :data:`CSS` once. Linear-ish in the length; deep nesting stays bounded.
    """
    if not text:
        return ""
    env: dict[str, Any] = {"load_images": bool(load_images)}
    md = _markdown()
    return sanitise(md.render(_normalise(text), env), load_images=load_images)


class AnswerRenderer:
    """Render one growing (streamed) answer again and again, re-parsing only its unfinished end.

    ``render(text)`` returns exactly ``render_html(text, load_images=...)``. Top-level
    blocks that can no longer change are kept (their sanitised HTML) as long as each new
    text extends the old one; anything else starts over. One instance per answer.
    """

    def __init__(self, *, load_images: bool = False) -> None:
        self.load_images = bool(load_images)
        self._done_src = ""  # normalised text of the finished blocks
        self._done_html = ""
        self._last = ""  # the last text rendered (normalised): reuse only when the new one extends it
        self.reparsed_chars = 0  # how much text the last render parsed (for tests/benchmarks)

    def render(self, text: str) -> str:
        """Sanitised HTML of ``text`` (the whole answer so far)."""
        if not text:
            return ""
        norm = _normalise(text)
        # The finished blocks were judged final by what followed them in the last text, so
        # they may be reused only when the new text extends that whole text.
        if not (self._done_src and norm.startswith(self._last)):
            self._done_src, self._done_html = "", ""
        self._last = norm
        start = len(self._done_src)
        tail = norm[start:]
        md = _markdown()
        env: dict[str, Any] = {"load_images": self.load_images}
        tokens = md.parse(tail, env)
        self.reparsed_chars = len(tail)
        if env.get("references"):
            # A link reference definition applies to links before it too: no reuse.
            self._done_src, self._done_html = "", ""
            if start:
                return self.render(text)
            return sanitise(md.renderer.render(tokens, md.options, env), load_images=self.load_images)
        cut = _stable_cut(tokens, tail)
        if cut is None:
            return self._done_html + sanitise(md.renderer.render(tokens, md.options, env),
                                              load_images=self.load_images)
        index, offset = cut
        done = sanitise(md.renderer.render(tokens[:index], md.options, env), load_images=self.load_images)
        rest = sanitise(md.renderer.render(tokens[index:], md.options, {"load_images": self.load_images}),
                        load_images=self.load_images)
        self._done_src = norm[: start + offset]
        self._done_html += done
        return self._done_html + rest


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
        if begin < len(src) and src[begin] not in _LIST_OR_INDENT and not prev.strip():
            return i, begin
    return None


def render_text_html(text: str) -> str:
    """Plain text (``-f text``, errors, tracebacks) as ``<pre class="um-text">``, fully escaped."""
    body = html.escape(text, quote=False)
    if text.startswith("\n"):
        body = "\n" + body  # HTML drops a newline right after <pre>
    return f'<pre class="um-text">{body}</pre>'


# ---------------------------------------------------------------------------- export

_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_DEST_START = re.compile(r"\]\(|\]:")
_BLANK_AT = re.compile(r"\n[ \t]*\n")
_BACKTICKS = re.compile(r"`+")
_BLANK_SPLIT = re.compile(r"(\n[ \t]*\n)")


def _neutralise_destinations(text: str) -> str:
    """Every ``](`` or ``]:`` followed by a destination with a scheme other than http/https/mailto: destination -> ``#``."""
    out: list[str] = []
    pos = 0
    for m in _DEST_START.finditer(text):
        if m.start() < pos:
            continue  # inside a destination already replaced
        i = m.end()
        while i < len(text) and text[i] in " \t\n" and i - m.end() < 8:
            i += 1
        if i < len(text) and text[i] == "<":
            i += 1
        end = _destination_end(text, i)
        scheme = url_scheme(text[i:end])
        if scheme is not None and scheme not in LINK_SCHEMES:
            out.append(text[pos:i])
            out.append("#")
            pos = end
    out.append(text[pos:])
    return "".join(out)


def _destination_end(text: str, start: int) -> int:
    """End of a link destination: an unbalanced ``)``, a quote, ``>``, a blank line (spaces inside are kept: lax viewers)."""
    depth = 0
    limit = min(len(text), start + 512)
    i = start
    while i < limit:
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif ch in "\"'>" or (ch == "\n" and _BLANK_AT.match(text, i)):
            break
        i += 1
    while i > start and text[i - 1] in " \t\n":
        i -= 1
    return i


def _code_spans(text: str) -> list[tuple[int, int]]:
    """Content ranges of CommonMark code spans in one paragraph."""
    runs = [(m.start(), m.end()) for m in _BACKTICKS.finditer(text)]
    if len(runs) < 2:
        return []
    by_len: dict[int, list[int]] = {}
    for i, (s, e) in enumerate(runs):
        by_len.setdefault(e - s, []).append(i)
    spans = []
    i = 0
    while i < len(runs):
        s, e = runs[i]
        k = s
        while k > 0 and text[k - 1] == "\\":
            k -= 1
        if (s - k) % 2:
            s += 1
        if s == e:
            i += 1
            continue
        same = by_len.get(e - s, [])
        j = bisect.bisect_right(same, i)
        if j < len(same):
            close = same[j]
            spans.append((e, runs[close][0]))
            i = close + 1
        else:
            i += 1
    return spans


def _escape_prose(text: str) -> str:
    """Outside code blocks: ``<`` that could open a tag becomes ``&lt;`` (inside code spans ``<`` + U+2060)."""
    text = _neutralise_destinations(text)
    if "<" not in text:
        return text
    out: list[str] = []
    for n, part in enumerate(_BLANK_SPLIT.split(text)):
        if n % 2 or "<" not in part:
            out.append(part)
            continue
        pos = 0
        for start, end in _code_spans(part) if "`" in part else []:
            out.append(_TAG_START.sub("&lt;", part[pos:start]))
            out.append(_TAG_START.sub("<\u2060", part[start:end]))
            pos = end
        out.append(_TAG_START.sub("&lt;", part[pos:]))
    return "".join(out)


def _fence(code: str, lang: str) -> str:
    longest = max((len(m.group(0)) for m in _BACKTICKS.finditer(code)), default=0)
    fence = "`" * max(3, longest + 1)
    body = code if code.endswith("\n") or not code else code + "\n"
    return f"{fence}{lang}\n{body}{fence}"


def export_markdown_text(text: str) -> str:
    """The answer as Markdown that any Markdown viewer shows without raw HTML or unsafe links.

    Outside code blocks ``<`` that could open a tag becomes ``&lt;`` (inside inline code an
    invisible U+2060 follows it instead, so the code looks the same); link destinations
    with a scheme other than http, https, mailto become ``#``. Every code block (as
    markdown-it-py finds it) is written again as a backtick fence longer than any backtick
    run inside, with a cleaned language tag, at the left margin with blank lines around it
    (a code block inside a list or quote moves out of it: no viewer can misread it).
    """
    if not text:
        return ""
    norm = _normalise(text)
    md = _markdown()
    lines = norm.split("\n")
    blocks = sorted(
        (tok.map[0], tok.map[1], tok)
        for tok in md.parse(norm, {})
        if tok.type in ("fence", "code_block") and tok.map
    )
    pieces: list[str] = []
    line = 0
    for start, end, tok in blocks:
        if start < line:
            continue
        pieces.append(_escape_prose(_strip_blank_lines("\n".join(lines[line:start]))))
        lang = clean_language(tok.info or "") if tok.type == "fence" else ""
        pieces.append(_fence(tok.content, lang))
        line = end
    pieces.append(_escape_prose(_strip_blank_lines("\n".join(lines[line:]))))
    out = "\n\n".join(p for p in pieces if p)
    return out + "\n" if norm.endswith("\n") else out


def _strip_blank_lines(text: str) -> str:
    return _LEADING_BLANK.sub("", _TRAILING_BLANK.sub("", text))


_LEADING_BLANK = re.compile(r"\A(?:[ \t]*\n)+")
_TRAILING_BLANK = re.compile(r"(?:\n[ \t]*)+\Z")


# ---------------------------------------------------------------------------- CSS

CSS = """
.um-answer { line-height: 1.5; overflow-wrap: anywhere; }
.um-answer table { border-collapse: collapse; margin: 0.5em 0; display: block; overflow-x: auto; }
.um-answer th, .um-answer td { border: 1px solid var(--jp-border-color1, #ccc); padding: 0.25em 0.6em; }
.um-answer th { background: var(--jp-layout-color2, rgba(127,127,127,0.12)); font-weight: 600; }
.um-answer .um-align-left { text-align: left; }
.um-answer .um-align-center { text-align: center; }
.um-answer .um-align-right { text-align: right; }
.um-answer pre.um-code, .um-answer pre.um-text {
  background: var(--jp-cell-editor-background, rgba(127,127,127,0.08));
  border: 1px solid var(--jp-border-color2, rgba(127,127,127,0.25));
  border-radius: 3px; padding: 0.5em 0.75em; overflow-x: auto; max-width: 100%;
  font-family: var(--jp-code-font-family, monospace); font-size: var(--jp-code-font-size, 0.9em);
  line-height: var(--jp-code-line-height, 1.4); white-space: pre;
}
.um-answer pre.um-text { white-space: pre-wrap; }
.um-answer pre code { background: none; padding: 0; font: inherit; white-space: inherit; }
.um-answer :not(pre) > code {
  background: var(--jp-layout-color2, rgba(127,127,127,0.15)); padding: 0 0.25em; border-radius: 3px;
  font-family: var(--jp-code-font-family, monospace);
}
.um-answer blockquote {
  margin: 0.5em 0; padding-left: 0.8em; color: var(--jp-content-font-color2, inherit);
  border-left: 3px solid var(--jp-border-color1, #ccc);
}
.um-answer a { color: var(--jp-content-link-color, #1a73e8); text-decoration: underline; }
.um-answer .um-image-link { font-style: italic; }
.um-answer .um-math-source { font-family: var(--jp-code-font-family, monospace); }
.um-answer math { display: inline-block; max-width: 100%; overflow-x: auto; vertical-align: middle; }
.um-answer math[display="block"] { display: block; margin: 0.5em 0; overflow-x: auto; }
.um-answer .k, .um-answer .kc, .um-answer .kd, .um-answer .kn, .um-answer .kp, .um-answer .kr,
.um-answer .ow { color: var(--jp-mirror-editor-keyword-color, #008000); font-weight: bold; }
.um-answer .kt { color: var(--jp-mirror-editor-builtin-color, #b00040); }
.um-answer .s, .um-answer .s1, .um-answer .s2, .um-answer .sa, .um-answer .sb, .um-answer .sc,
.um-answer .sd, .um-answer .se, .um-answer .sh, .um-answer .si, .um-answer .sr, .um-answer .ss,
.um-answer .sx, .um-answer .dl { color: var(--jp-mirror-editor-string-color, #ba2121); }
.um-answer .c, .um-answer .c1, .um-answer .cm, .um-answer .cs, .um-answer .ch, .um-answer .cp,
.um-answer .cpf { color: var(--jp-mirror-editor-comment-color, #408080); font-style: italic; }
.um-answer .m, .um-answer .mi, .um-answer .mf, .um-answer .mh, .um-answer .mo, .um-answer .mb,
.um-answer .il { color: var(--jp-mirror-editor-number-color, #080); }
.um-answer .o { color: var(--jp-mirror-editor-operator-color, #aa22ff); }
.um-answer .nb, .um-answer .bp { color: var(--jp-mirror-editor-builtin-color, #008000); }
.um-answer .nf, .um-answer .fm { color: var(--jp-mirror-editor-def-color, #0000ff); }
.um-answer .nc, .um-answer .nn { color: var(--jp-mirror-editor-def-color, #0000ff); font-weight: bold; }
.um-answer .nd, .um-answer .na { color: var(--jp-mirror-editor-attribute-color, #aa22ff); }
.um-answer .nt { color: var(--jp-mirror-editor-tag-color, #008000); font-weight: bold; }
.um-answer .nv, .um-answer .vc, .um-answer .vg, .um-answer .vi {
  color: var(--jp-mirror-editor-variable-2-color, #19177c);
}
.um-answer .err { color: var(--jp-mirror-editor-error-color, #f00); }
.um-answer .gd { color: var(--jp-error-color1, #a00000); }
.um-answer .gi { color: var(--jp-success-color1, #00a000); }
.um-answer .gh, .um-answer .gu { font-weight: bold; }
""".strip()
"""Stylesheet for the renderer's HTML, scoped to ``.um-answer``; JupyterLab theme variables with fallbacks."""
