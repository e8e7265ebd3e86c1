"""Math: markdown-it rules for ``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``, and latex2mathml (or escaped text)."""
from __future__ import annotations

import bisect
import html
import itertools
import re
from typing import Any

from .sanitiser import MATHML_TAGS

_MATH_LIMIT = 4000  # longer formulas stay text
_MATH_MAX_DEPTH = 40  # brace/environment nesting beyond this stays text (latex2mathml recurses)
_MATHML_TAG = re.compile(r"</?([a-z]+)[\s/>]")
_INLINE_MATH = {"$": ("$", False), "$$": ("$$", True), "\\(": ("\\)", False), "\\[": ("\\]", True)}  # opener: closer, display


def latex_to_mathml(latex: str, *, display: bool) -> str | None:
    """MathML for ``latex`` or None if it cannot be converted safely."""
    if not latex.strip() or len(latex) > _MATH_LIMIT:
        return None
    deepest = max(itertools.accumulate((ch == "{") - (ch == "}") for ch in latex))
    if deepest > _MATH_MAX_DEPTH or latex.count("\\begin") > _MATH_MAX_DEPTH:
        return None
    try:
        from latex2mathml.converter import convert

        out = convert(latex, display="block" if display else "inline")
    except Exception:  # noqa: BLE001 - malformed TeX, recursion...: show the source instead
        return None
    # latex2mathml copies \text{...} unescaped; only well-known MathML tags may appear.
    tags = _MATHML_TAG.findall(out)
    if out.count("<") != len(tags) or any(t not in MATHML_TAGS for t in tags):
        return None
    return out


#: Hides the MathML where our stylesheet is dropped (an untrusted notebook, a sanitising viewer):
#: there the TeX source shows instead of MathML flattened to plain text (``e^{i\\pi}`` as "eiπ").
#: Our stylesheet shows the MathML (``!important`` outranks this inline style) and hides the source.
MATHML_HIDDEN_STYLE = "display:none"


def math_html(token: Any, *, display: bool) -> str:
    """A math token as MathML with its TeX source beside it for style-less views, or the source as text."""
    mathml = latex_to_mathml(token.content, display=display)
    source = html.escape(token.meta["source"], quote=False)
    if mathml is None:
        return f'<span class="um-math-source">{source}</span>'
    kind = "um-math um-math-display" if display else "um-math"
    return (f'<span class="{kind}"><span class="um-mathml" style="{MATHML_HIDDEN_STYLE}">{mathml}</span>'
            f'<code class="um-tex">{source}</code></span>')


def math_inline_rule(state: Any, silent: bool) -> bool:
    """Inline math: ``$..$`` (pandoc rules: no space inside the dollars, no digit after), ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``."""
    src, pos = state.src, state.pos
    opener = "$$" if src.startswith("$$", pos) else "$" if src[pos] == "$" else src[pos : pos + 2]
    if opener not in _INLINE_MATH or (opener[0] == "\\" and pos + 1 >= state.posMax):
        return False
    closer, display = _INLINE_MATH[opener]
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
            if (i > 0 and not src[i - 1].isspace() and src[i - 1] not in "\\$"
                    and not (i + 1 < end and (src[i + 1].isdigit() or src[i + 1] == "$"))):
                closers.append(i)
            i = src.find("$", i + 1, end)
        state.__dict__["_um_dollars"] = closers
    k = bisect.bisect_left(closers, start)
    return int(closers[k]) if k < len(closers) else -1


def math_block_rule(state: Any, start_line: int, end_line: int, silent: bool) -> bool:
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
    token.content, token.markup, token.map = body, opener, [start_line, line + 1]
    token.meta = {"source": state.getLines(start_line, line + 1, state.blkIndent, False).rstrip("\n")}
    state.line = line + 1
    return True

