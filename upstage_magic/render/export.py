"""The answer as Markdown that any viewer shows without raw HTML or unsafe links (exports, copies)."""
from __future__ import annotations

import bisect
import re

from .code import clean_language
from .rules import markdown, normalise
from .sanitiser import LINK_SCHEMES, url_scheme

_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_DEST_START = re.compile(r"\]\(|\]:")
_BACKTICKS = re.compile(r"`+")
_BLANK_LINE = re.compile(r"(\n[ \t]*\n)")
_LEADING_BLANK = re.compile(r"\A(?:[ \t]*\n)+")
_TRAILING_BLANK = re.compile(r"(?:\n[ \t]*)+\Z")


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
        elif ch in "\"'>" or (ch == "\n" and _BLANK_LINE.match(text, i)):
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
    for n, part in enumerate(_BLANK_LINE.split(text)):
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
    """``code`` in a backtick fence longer than any backtick run inside it."""
    fence = "`" * max(3, 1 + max(map(len, _BACKTICKS.findall(code)), default=0))
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
    norm = normalise(text)
    lines = norm.split("\n")
    blocks = sorted((tok.map[0], tok.map[1], tok) for tok in markdown().parse(norm, {})
                    if tok.type in ("fence", "code_block") and tok.map)
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

