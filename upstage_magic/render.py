"""Make untrusted model answers safe to show in a notebook. Pure; markdown-it-py loads lazily.

Live notebook outputs are trusted by JupyterLab, so nothing downstream sanitises them:
any raw tag left in an answer runs (``<img onerror>``, ``<svg onload>``, ``<script>``).

``safe_markdown(text)`` returns Markdown for ``display(Markdown(...))``. It rewrites the
source instead of re-rendering it, so everything Markdown can do keeps working:

- markdown-it-py (CommonMark + tables + strikethrough, raw HTML *on*, so it finds HTML
  blocks exactly where a CommonMark renderer would) locates fenced and indented code
  blocks; their lines are kept byte-exact.
- Everywhere else every ``<`` becomes ``&lt;`` (shown as ``<``), so no tag, comment or
  autolink to an odd scheme can form. Inside math (``$..$``, ``$$..$$``, ``\\(..\\)``,
  ``\\[..\\]``) a ``<`` that could start a tag becomes ``\\lt `` so MathJax still renders it.
  Inside inline code spans a ``<`` that could start a tag gets an invisible U+2060 after
  it: the code looks the same, and even a renderer that disagrees about where the code
  span is (e.g. marked's GFM URL autolinks eat backticks) sees only text.
- Link and image destinations (inline ``[x](dest)`` and reference ``[x]: dest``) with an
  unsafe scheme (``javascript:``, ``vbscript:``, ``file:``, ``data:`` except
  ``data:image/png|gif|jpeg|webp``) become ``#``. The check is textual, so it does not
  depend on which parser reads the output, and sees through case, entities, backslash
  escapes and control characters.
- An indented code block is kept verbatim only at top level after a blank line (elsewhere
  a renderer may read it as paragraph text once the HTML before it is escaped), and a code
  block inside a list or quote only if its indentation has no tabs.

``safe_html(text)`` renders the answer to HTML with markdown-it-py (raw HTML off, strict
link validation, links open in a new tab with ``rel="noopener noreferrer"``); for
``widgets.HTML``. Both are O(n) in the text length.
"""
from __future__ import annotations

import functools
import html
import re
from bisect import bisect_right
from typing import Any

__all__ = ["safe_markdown", "safe_html", "is_unsafe_url"]

_UNSAFE_SCHEME = re.compile(r"(?:javascript|vbscript|file|data):")
_SAFE_DATA_IMAGE = re.compile(r"data:image/(?:png|gif|jpeg|webp);")
_CONTROLS = re.compile(r"[\x00-\x20\x7f]+")
_BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def is_unsafe_url(url: str) -> bool:
    """True if a browser could read ``url`` as javascript:, vbscript:, file: or non-image data:."""
    u = url
    for _ in range(4):  # entities and backslash escapes, also nested ones
        prev = u
        u = _BACKSLASH_ESCAPE.sub(r"\1", html.unescape(u))
        if u == prev:
            break
    # Browsers drop tabs/newlines anywhere and controls/spaces at the ends; drop them all.
    u = _CONTROLS.sub("", u).lower()
    if not _UNSAFE_SCHEME.match(u):
        return False
    return not _SAFE_DATA_IMAGE.match(u)


# ---------------------------------------------------------------------------- Markdown

# `](` or `]:`, optional whitespace (at most one line end), then the destination.
_LINK_DEST = re.compile(r"\](?:\(|:)[ \t]*(?:\n[ \t]*)?(<[^>\n]*>?|[^\s]+)")
_AUTOLINK = re.compile(
    r"<([A-Za-z][A-Za-z0-9.+\-]{1,31}:[^\s<>\x00-\x1f]*"
    r"|[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*)>"
)
# Math delimiters; escaped backslashes/dollars come first so they are skipped.
_MATH_DELIM = re.compile(r"\\\\|\\\$|\$\$|\$|\\\(|\\\)|\\\[|\\\]")
_MATH_CLOSER = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_BLANK_SPLIT = re.compile(r"(\n[ \t]*\n)")
_BACKTICKS = re.compile(r"`+")
_LEADING_PREFIX = re.compile(r"[ \t>*+\-0-9.)]*")


@functools.lru_cache(maxsize=1)
def _block_parser() -> Any:
    """markdown-it-py block parser only (no inline pass), raw HTML on like a browser-side renderer."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.disable(["inline", "text_join"])
    return _flatten_deep_blocks(md)


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


def _flatten_deep_blocks(md: Any) -> Any:
    md.options["maxNesting"] = _MAX_BLOCK_DEPTH + 10  # never reached by blocks: the rule fires first
    md.block.ruler.before("table", "deep_block_as_text", _deep_block_as_text)
    return md


def _neutralise_links(text: str) -> str:
    """Replace unsafe link/image/reference destinations with ``#``."""
    if "]" not in text:
        return text

    def repl(m: re.Match[str]) -> str:
        dest = m.group(1)
        target = dest[1:-1] if dest.startswith("<") and dest.endswith(">") else dest.lstrip("<")
        if not is_unsafe_url(target):
            return m.group(0)
        rest = ""
        if m.group(0)[1] == "(" and not dest.startswith("<"):
            # keep what follows the destination: stop at the ")" that closes the link
            depth = 0
            for k, ch in enumerate(dest):
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    if depth == 0:
                        rest = dest[k:]
                        break
                    depth -= 1
        return m.group(0)[: m.start(1) - m.start(0)] + "#" + rest

    return _LINK_DEST.sub(repl, text)


def _escape_text(text: str) -> str:
    """Outside code: math keeps ``<`` as ``\\lt``, all other ``<`` become ``&lt;``."""
    if "<" not in text:
        return text
    out: list[str] = []
    pos = 0
    for start, end in _math_spans(text):
        out.append(_escape_plain(text[pos:start]))
        out.append(_TAG_START.sub(r"\\lt ", text[start:end]))
        pos = end
    out.append(_escape_plain(text[pos:]))
    return "".join(out)


def _math_spans(text: str) -> list[tuple[int, int]]:
    """Spans of $..$, $$..$$, \\(..\\), \\[..\\] in one paragraph piece (one linear pass)."""
    if "$" not in text and "\\" not in text:
        return []
    spans = []
    want: str | None = None
    opened = 0
    for m in _MATH_DELIM.finditer(text):
        tok = m.group(0)
        if want is None:
            closer = _MATH_CLOSER.get(tok)
            if closer is not None:
                want, opened = closer, m.start()
        elif tok == want:
            spans.append((opened, m.end()))
            want = None
    return spans


def _escape_plain(text: str) -> str:
    if "<" not in text:
        return text
    text = _AUTOLINK.sub(r"&lt;\1&gt;", text)
    return text.replace("<", "&lt;")


def _code_spans(text: str) -> list[tuple[int, int, int]]:
    """CommonMark code spans in one paragraph: (start, content_start, content_end) ... sorted."""
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
        # an odd number of backslashes before the run escapes its first backtick
        k = s
        while k > 0 and text[k - 1] == "\\":
            k -= 1
        if (s - k) % 2:
            s += 1
        if s == e:
            i += 1
            continue
        same = by_len.get(e - s, [])
        j = bisect_right(same, i)
        if j < len(same):
            close = same[j]
            spans.append((s, e, runs[close][0]))
            i = close + 1
        else:
            i += 1
    return spans


def _safe_paragraph(text: str) -> str:
    if "<" not in text:
        return text
    spans = _code_spans(text) if "`" in text else []
    if not spans:
        return _escape_text(text)
    out: list[str] = []
    pos = 0
    for start, content_start, content_end in spans:
        close_end = content_end + (content_start - start)
        out.append(_escape_text(text[pos:start]))
        out.append(text[start:content_start])
        out.append(_TAG_START.sub("<\u2060", text[content_start:content_end]))
        out.append(text[content_end:close_end])
        pos = close_end
    out.append(_escape_text(text[pos:]))
    return "".join(out)


def _safe_region(text: str) -> str:
    """Lines outside protected code blocks."""
    text = _neutralise_links(text)
    if "<" not in text:
        return text
    parts = _BLANK_SPLIT.split(text)
    return "".join(p if i % 2 else _safe_paragraph(p) for i, p in enumerate(parts))


def _protected_lines(lines: list[str], tokens: list[Any]) -> list[bool]:
    """Which source lines belong to code blocks that every renderer will also see as code."""
    keep = [False] * len(lines)
    for tok in tokens:
        if tok.type not in ("fence", "code_block") or not tok.map:
            continue
        start, end = tok.map
        if tok.type == "code_block":
            if tok.level != 0:
                continue
            if start > 0 and not keep[start - 1] and lines[start - 1].strip():
                continue
        if tok.level != 0 and any("\t" in _LEADING_PREFIX.match(ln).group(0) for ln in lines[start:end]):
            continue
        for i in range(start, min(end, len(lines))):
            keep[i] = True
    return keep


# Streaming calls render a growing answer again and again. The Markdown before the start of
# the last top-level block that follows a blank line can no longer change, so its output is
# cached: (input prefix, output prefix) pairs, newest first.
_PREFIX_CACHE: list[tuple[str, str]] = []
_PREFIX_CACHE_SIZE = 8


def safe_markdown(text: str) -> str:
    """Return ``text`` as Markdown that renders without any raw HTML or unsafe link.

    Raw HTML in the answer shows as literal text, unsafe link schemes are replaced by
    ``#``, fenced and indented code blocks stay byte-exact, math keeps rendering.
    Line ends are normalised to ``\\n`` (and NUL to U+FFFD), as Markdown parsers do.
    Rendering a text that extends an earlier one (a streaming answer) reuses the earlier
    work for the finished blocks, so repeated calls stay cheap.
    """
    if not text:
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")
    if "<" not in text and "]" not in text:
        return text  # nothing to neutralise
    prefix_in, prefix_out = "", ""
    for entry in _PREFIX_CACHE:
        if len(entry[0]) > len(prefix_in) and text.startswith(entry[0]):
            prefix_in, prefix_out = entry
    out, cut_in, cut_out = _render(text[len(prefix_in) :])
    if cut_in:
        entry = (prefix_in + text[len(prefix_in) : len(prefix_in) + cut_in], prefix_out + out[:cut_out])
        _PREFIX_CACHE[:] = [entry] + [e for e in _PREFIX_CACHE if e[0] != prefix_in][: _PREFIX_CACHE_SIZE - 1]
    return prefix_out + out


def _render(text: str) -> tuple[str, int, int]:
    """Make ``text`` safe; also return where its last stable top-level block starts (in, out)."""
    if "<" not in text and "]" not in text:
        return text, 0, 0
    if "`" not in text and "~~~" not in text and "    " not in text and "\t" not in text:
        return _safe_region(text), 0, 0  # no code blocks possible
    lines = text.split("\n")
    tokens = _block_parser().parse(text)
    keep = _protected_lines(lines, tokens)
    # The last top-level block that starts after a blank line: lines before it are final.
    cut_line = 0
    for tok in tokens:
        if tok.level == 0 and tok.map and tok.map[0] > cut_line and not lines[tok.map[0] - 1].strip():
            cut_line = tok.map[0]
    out: list[str] = []
    cut_out = 0
    i = 0
    n = len(lines)
    while i < n:
        flag = keep[i]
        j = i
        while j < n and keep[j] == flag and (j != cut_line or j == i):
            j += 1  # a run of lines of one kind; a run never spans the cut
        if i == cut_line and cut_line:
            cut_out = sum(len(part) + 1 for part in out)
        chunk = "\n".join(lines[i:j])
        out.append(chunk if flag else _safe_region(chunk))
        i = j
    cut_in = sum(len(line) + 1 for line in lines[:cut_line])
    return "\n".join(out), cut_in, cut_out


# ---------------------------------------------------------------------------- HTML


def _validate_link(url: str) -> bool:
    return not is_unsafe_url(url)


@functools.lru_cache(maxsize=1)
def _html_renderer() -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])
    md.validateLink = _validate_link  # type: ignore[method-assign]
    default_link_open = md.renderer.rules.get("link_open")

    def link_open(tokens: Any, idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("target", "_blank")
        tokens[idx].attrSet("rel", "noopener noreferrer")
        if default_link_open is not None:
            return default_link_open(tokens, idx, options, env)
        return md.renderer.renderToken(tokens, idx, options, env)

    md.renderer.rules["link_open"] = link_open
    return _flatten_deep_blocks(md)


def safe_html(text: str) -> str:
    """Render ``text`` (Markdown) to HTML in which no tag or attribute from the model survives.

    Raw HTML is shown as text, links with unsafe schemes are not made into links (their
    text stays), links get ``target="_blank" rel="noopener noreferrer"``.
    """
    if not text:
        return ""
    return _html_renderer().render(text)
