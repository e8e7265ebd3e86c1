"""The one markdown-it-py parser and our render rules; :func:`render_html` runs it and the sanitiser."""
from __future__ import annotations

import functools
import html
from typing import Any
from urllib.parse import urlsplit

from .code import code_block_html
from .mathml import math_block_rule, math_html, math_inline_rule
from .sanitiser import IMAGE_SCHEMES, sanitise, url_allowed

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
    state.push("paragraph_open", "p", 1).map = [start_line, line]
    token = state.push("inline", "", 0)
    token.map, token.children = [start_line, line], []
    token.content = state.getLines(start_line, line, state.blkIndent, False).strip()
    state.push("paragraph_close", "p", -1)
    state.line = line
    return True


_attr = functools.partial(html.escape, quote=True)  # an attribute value


def _title_attr(token: Any) -> str:
    title = token.attrGet("title")
    return f' title="{_attr(str(title))}"' if title else ""


def _render_link_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    href = str(token.attrGet("href") or "")
    stack = env.setdefault("_um_links", [])
    stack.append(url_allowed(href))  # a refused link's text stays, as plain text
    return f'<a href="{_attr(href)}"{_title_attr(token)}>' if stack[-1] else ""


def _render_link_close(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    stack = env.get("_um_links") or [False]
    return "</a>" if stack.pop() else ""


def _render_image(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    alt = self.renderInlineAsText(token.children, options, env)
    label = f"image: {alt}" if alt else "image"
    if not url_allowed(src, IMAGE_SCHEMES):
        return f'<span class="um-image-link">{html.escape(label, quote=False)}</span>'
    if env.get("load_images"):
        return f'<img src="{_attr(src)}" alt="{_attr(alt)}"{_title_attr(token)}>'
    try:
        host = urlsplit(src).hostname or ""
    except ValueError:
        host = ""
    text = html.escape(f"{label} ({host})" if host else label, quote=False)
    if any(env.get("_um_links") or []):  # inside a link: no nested <a>
        return f'<span class="um-image-link">{text}</span>'
    return f'<a class="um-image-link" href="{_attr(src)}"{_title_attr(token)}>{text}</a>'


def _render_code(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    return code_block_html(tokens[idx].content, tokens[idx].info or "")


def _render_cell_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    align = str(token.attrGet("style") or "").removeprefix("text-align:")  # markdown-it's only style
    cls = f' class="um-align-{align}"' if align in ("left", "center", "right") else ""
    return f"<{token.tag}{cls}>"


#: An answer's headings sit below the notebook's own: ``#`` -> h4, ``##`` -> h5, deeper -> h6.
_HEADING_TAGS = {"h1": "h4", "h2": "h5"}
#: ``jp-toc-ignore``/``tocSkip``: JupyterLab's Table of Contents skips headings with these classes.
HEADING_CLASSES = "um-h jp-toc-ignore tocSkip"


def _render_heading_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    return f'<{_HEADING_TAGS.get(tokens[idx].tag, "h6")} class="{HEADING_CLASSES}">'


def _render_heading_close(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    return f"</{_HEADING_TAGS.get(tokens[idx].tag, 'h6')}>\n"


def _render_math(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    return math_html(tokens[idx], display=tokens[idx].info == "display")


def _render_math_block(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    return f"<p>{math_html(tokens[idx], display=True)}</p>\n"


@functools.lru_cache(maxsize=1)
def markdown() -> Any:
    """The one markdown-it-py parser: CommonMark + tables + strikethrough, raw HTML off."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    # Every link and image is parsed as CommonMark says; whether it keeps its URL is
    # decided when it is rendered (so a refused link still shows its text).
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    md.options["maxNesting"] = _MAX_BLOCK_DEPTH + 10  # never reached by blocks: the rule fires first
    md.block.ruler.before("table", "deep_block_as_text", _deep_block_as_text)
    md.block.ruler.after("fence", "um_math_block", math_block_rule)
    md.inline.ruler.before("escape", "um_math", math_inline_rule)
    for name, rule in [
        ("link_open", _render_link_open), ("link_close", _render_link_close), ("image", _render_image),
        ("fence", _render_code), ("code_block", _render_code), ("th_open", _render_cell_open),
        ("td_open", _render_cell_open), ("um_math", _render_math), ("um_math_block", _render_math_block),
        ("heading_open", _render_heading_open), ("heading_close", _render_heading_close),
    ]:
        md.add_render_rule(name, rule)
    return md


def normalise(text: str) -> str:
    """Line ends as ``\\n``, NUL as U+FFFD (as CommonMark reads them)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")


def render_tokens(tokens: list[Any], env: dict[str, Any], *, load_images: bool) -> str:
    """Sanitised HTML of parsed tokens (``env`` from the same parse)."""
    md = markdown()
    return sanitise(md.renderer.render(tokens, md.options, env), load_images=load_images)


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
    return sanitise(markdown().render(normalise(text), env), load_images=load_images)


def render_text_html(text: str) -> str:
    """Plain text (``-f text``, errors, tracebacks) as ``<pre class="um-text">``, fully escaped."""
    body = html.escape(text, quote=False)
    if text.startswith("\n"):
        body = "\n" + body  # HTML drops a newline right after <pre>
    return f'<pre class="um-text">{body}</pre>'
