"""Fill ``{placeholders}`` in a prompt from the notebook, never inside code.

Pure module (no IPython). The rules:

* ``{name}``, ``{name.attr}``, ``{name[key]}`` (chains of these), optionally with
  ``!r``/``!s``/``!a`` and a ``:spec`` without spaces, are filled from the namespace,
  as ``str.format`` would. ``{{name}}`` gives the literal ``{name}``.
* Only outside code: fenced code blocks (``` or ~~~, any length; per CommonMark the
  closing fence is the same character and at least as long; an unclosed fence runs to
  the end) and inline code spans (a run of backticks up to the next run of the same
  length within the paragraph) are passed through byte for byte, braces and all.
* A placeholder that cannot be filled (unknown name, name or attribute starting with
  ``_``, failed lookup, bad format spec) is left as written and reported, never an error.
* No calls, no ``eval``: ``{f()}``, ``{1}``, ``{ x }``, ``{x: 1}`` and JSON are not
  placeholders and stay as written.
* ``{In[3]}`` and ``{Out[3]}`` come from IPython's ``In`` list and ``Out`` dict in the
  user namespace; ``{Err[3]}`` from the ``errors`` mapping given to :func:`fill`
  (:class:`upstage_magic.fix.ErrorLog`), which is looked up only if the namespace has no
  ``Err`` of its own.

::

    result = fill(cell, shell.user_ns, errors=error_log)
    send(result.text); note = result.summary()   # "filled: {name} · left as written: {x!r}"
"""
from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Filled", "code_spans", "fill", "fill_item", "read_field"]

_NAME = r"[A-Za-z_]\w*"
_FIELD = rf"{_NAME}(?:\.{_NAME}|\[[^\[\]{{}}\s]+\])*"
_PLACEHOLDER = rf"(?P<field>{_FIELD})(?:!(?P<conv>[rsa]))?(?::(?P<spec>[^{{}}\s]*))?"
_ESCAPED = rf"(?P<esc>{_FIELD}(?:![rsa])?(?::[^{{}}\s]*)?)"
_TOKEN_RE = re.compile(rf"\{{\{{{_ESCAPED}\}}\}}|\{{{_PLACEHOLDER}\}}")
_PART_RE = re.compile(rf"\.(?P<attr>{_NAME})|\[(?P<index>[^\]]+)\]")
_NAME_RE = re.compile(_NAME)
_FENCE_OPEN_RE = re.compile(r"[ \t]*(?P<fence>`{3,}|~{3,})(?P<info>[^\r\n]*)")
_BLANK_LINE_RE = re.compile(r"\n[ \t]*(?:\r?\n|$)")
_BACKTICKS_RE = re.compile(r"`+")
_MISSING = object()


@dataclass
class Filled:
    """The prompt after filling, with what was filled and what was left as written.

    ``filled`` and ``left`` list each placeholder once, in order of first appearance;
    ``reasons`` maps a left placeholder to why (for a tooltip or ``--dry-run``).
    """

    text: str
    filled: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def merge(self, other: Filled) -> Filled:
        """This text with ``other``'s filled/left added (one summary for prompt and ``-s``)."""
        out = Filled(self.text, list(self.filled), list(self.left), dict(self.reasons))
        out.filled += [p for p in other.filled if p not in out.filled]
        out.left += [p for p in other.left if p not in out.left]
        for p, why in other.reasons.items():
            out.reasons.setdefault(p, why)
        return out

    def summary(self) -> str | None:
        """One quiet line, ``filled: {a}, {b} · left as written: {x!r}``; None if nothing."""
        parts = []
        if self.filled:
            parts.append("filled: " + ", ".join(self.filled))
        if self.left:
            parts.append("left as written: " + ", ".join(self.left))
            hints = [r for r in self.reasons.values() if "without quotes" in r]
            if hints:
                parts.append(hints[0])
        return " · ".join(parts) or None


class _Unfilled(Exception):
    """A placeholder that stays as written (message: why)."""


def _resolve(field_text: str, lookup: Any) -> Any:
    """Value of ``name(.attr|[index])*``; raises _Unfilled with the reason."""
    m = _NAME_RE.match(field_text)
    assert m is not None
    name = m.group(0)
    if name.startswith("_"):
        raise _Unfilled(f"names starting with '_' are not filled in ({name})")
    value = lookup(name)
    if value is _MISSING:
        raise _Unfilled(f"no variable named {name!r}")
    rest = field_text[m.end():]
    for part in _PART_RE.finditer(rest):
        attr, index = part.group("attr"), part.group("index")
        if attr is not None:
            if attr.startswith("_"):
                raise _Unfilled(f"attributes starting with '_' are not filled in ({attr})")
            try:
                value = getattr(value, attr)
            except Exception:  # noqa: BLE001 - any failing property leaves it as written
                raise _Unfilled(f"{type(value).__name__} object has no attribute {attr!r}") from None
            continue
        key: Any = int(index) if re.fullmatch(r"-?\d+", index) else index
        try:
            value = value[key]
        except Exception as exc:  # noqa: BLE001 - KeyError, IndexError, TypeError, ...
            msg = f"cannot look up [{index}] ({type(exc).__name__})"
            if len(index) >= 2 and index[0] == index[-1] and index[0] in "'\"":
                spelled = field_text[: m.end() + part.start()] + f"[{index[1:-1]}]"
                msg = (f"{msg}; write {{{spelled}}} without quotes, as in str.format")
            raise _Unfilled(msg) from None
    return value


def _format(m: re.Match[str], lookup: Any) -> str:
    """The text for one placeholder match (raises _Unfilled)."""
    value = _resolve(m.group("field"), lookup)
    conv = m.group("conv")
    try:
        if conv == "r":
            value = repr(value)
        elif conv == "s":
            value = str(value)
        elif conv == "a":
            value = ascii(value)
        return format(value, m.group("spec") or "")
    except Exception as exc:  # noqa: BLE001 - a bad spec or a failing __format__/__repr__
        raise _Unfilled(f"{type(exc).__name__}: {exc}") from None


def _fenced_blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the fenced code blocks in ``text``, fence lines included."""
    blocks: list[tuple[int, int]] = []
    pos = 0
    n = len(text)
    open_at = -1
    fence_char = ""
    fence_len = 0
    while pos < n:
        nl = text.find("\n", pos)
        end = n if nl < 0 else nl + 1
        line = text[pos:end].rstrip("\r\n")
        if open_at < 0:
            m = _FENCE_OPEN_RE.fullmatch(line)
            if m and not (m.group("fence")[0] == "`" and "`" in m.group("info")):
                open_at, fence_char, fence_len = pos, m.group("fence")[0], len(m.group("fence"))
        else:
            stripped = line.strip(" \t")
            if (len(stripped) >= fence_len and stripped == fence_char * len(stripped)):
                blocks.append((open_at, end))
                open_at = -1
        pos = end
    if open_at >= 0:
        blocks.append((open_at, n))
    return blocks


def _inline_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) offsets of inline code spans in ``text[start:end]`` (CommonMark).

    A run of n backticks opens a span closed by the next run of exactly n backticks in
    the same paragraph (a blank line ends it); a run with no such partner is plain text.
    Runs are indexed by length, so this is O(runs log runs) on any input.
    """
    runs = [(m.start(), m.end()) for m in _BACKTICKS_RE.finditer(text, start, end)]
    if len(runs) < 2:
        return []
    breaks = [m.start() for m in _BLANK_LINE_RE.finditer(text, start, end)]
    by_length: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(runs):
        by_length.setdefault(b - a, []).append(i)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(runs):
        a, b = runs[i]
        same = by_length[b - a]
        k = bisect_right(same, i)
        p = bisect_left(breaks, b)
        limit = breaks[p] if p < len(breaks) else end
        if k < len(same) and runs[same[k]][0] < limit:
            spans.append((a, runs[same[k]][1]))
            i = same[k] + 1
        else:
            i += 1  # no partner: these backticks are literal text
    return spans


def code_spans(text: str) -> list[tuple[int, int]]:
    """Sorted (start, end) offsets of all code in ``text``: fenced blocks and inline spans."""
    spans: list[tuple[int, int]] = []
    prev = 0
    for b_start, b_end in _fenced_blocks(text):
        spans.extend(_inline_spans(text, prev, b_start))
        spans.append((b_start, b_end))
        prev = b_end
    spans.extend(_inline_spans(text, prev, len(text)))
    return spans


def fill(
    text: str,
    namespace: Mapping[str, Any],
    *,
    raw: bool = False,
    errors: Mapping[int, Any] | None = None,
) -> Filled:
    """Fill ``{placeholders}`` outside code in ``text`` from ``namespace``.

    Args:
        text: the prompt (a cell body or a ``-s`` system prompt).
        namespace: the user namespace (``shell.user_ns``); it is only read.
        raw: return ``text`` unchanged (``--raw``): nothing filled, nothing reported.
        errors: what ``{Err[N]}`` looks up (an ``ErrorLog``), used only when the
            namespace has no ``Err`` of its own.

    Returns:
        :class:`Filled`: the text and the placeholders filled / left as written. Never
        raises for a placeholder; one that cannot be filled stays exactly as written.
    """
    if raw:
        return Filled(text)
    result = Filled("")

    def lookup(name: str) -> Any:
        value = namespace.get(name, _MISSING)
        if value is _MISSING and name == "Err" and errors is not None:
            return errors
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group("esc") is not None:
            return "{" + m.group("esc") + "}"
        placeholder = m.group(0)
        try:
            out = _format(m, lookup)
        except _Unfilled as why:
            if placeholder not in result.left:
                result.left.append(placeholder)
                result.reasons[placeholder] = str(why)
            return placeholder
        if placeholder not in result.filled:
            result.filled.append(placeholder)
        return out

    pieces: list[str] = []
    prev = 0
    for start, end in code_spans(text):
        pieces.append(_TOKEN_RE.sub(sub, text[prev:start]))
        pieces.append(text[start:end])
        prev = end
    pieces.append(_TOKEN_RE.sub(sub, text[prev:]))
    result.text = "".join(pieces)
    return result


# ------------------------------------------------------------------ batch rows
_ITEM_FIELD = re.compile(r"\{(item|index)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[[^\[\]{}]*\])*)\}")
_ITEM_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([^\[\]{}]*)\]")


def read_field(value: Any, name: str, bracket: bool, where: str) -> Any:
    """``value[name]`` / ``value.name`` without calling anything (``KeyError`` naming ``where``)."""
    if isinstance(value, dict):
        if name in value:
            return value[name]
        raise KeyError(f"{where}: no {name!r} (has {', '.join(map(str, list(value)[:12]))})")
    if bracket and isinstance(value, (list, tuple)) and name.lstrip("-").isdigit():
        try:
            return value[int(name)]
        except IndexError:
            raise KeyError(f"{where}: index {name} is out of range (length {len(value)})") from None
    if type(value).__module__.startswith("pandas"):  # a Series row: by label
        try:
            return value[name]
        except (KeyError, IndexError, TypeError):
            raise KeyError(f"{where}: no column {name!r}") from None
    if name.startswith("_"):
        raise KeyError(f"{where}: private attribute {name!r} is not allowed in templates")
    if not bracket and hasattr(value, name):
        got = getattr(value, name)
        if callable(got):
            raise KeyError(f"{where}: {name!r} is a method; templates only read values")
        return got
    raise KeyError(f"{where}: {type(value).__name__} has no {name!r}")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def fill_item(template: str, item: Any, index: Any) -> str:
    """A batch row's template: ``{item}``, ``{item.a}``, ``{item[k]}``, ``{index}`` filled.

    Other braces stay as written. ``.a`` reads a dict's key, a row's column or a public,
    non-callable attribute (nothing is called). A missing field raises ``KeyError`` naming it.
    """

    def sub(m: re.Match[str]) -> str:
        value = item if m.group(1) == "item" else index
        for attr, key in _ITEM_PART.findall(m.group(2)):
            value = read_field(value, attr or key.strip("'\""), bool(key), f"{m.group(0)} at index {index!r}")
        return _text(value)

    return _ITEM_FIELD.sub(sub, template)
