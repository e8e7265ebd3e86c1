"""Bounded summaries of notebook variables, sent as context with a prompt (``--context``).

Pure module: no IPython, and pandas, polars and numpy are never imported here; an object
is recognised by its class's module (``type(obj).__mro__``), so their code runs only when
such an object is passed (the library is then already loaded).

What each kind of value becomes:

* pandas / polars DataFrame: shape, columns with dtype and null count, the first rows as a
  Markdown table (cells cut to 40 characters, at most 20 columns).
* pandas / polars Series: name, dtype, length, null count, the first values.
* numpy array: shape, dtype, min/max (numbers only), a sample of the values.
* anything else: its type, its length when it has one, and its repr cut to the budget.

The budget is in tokens, estimated by :func:`estimate_tokens` as one token per 4 ASCII
characters and one per non-ASCII character (conservative for Korean and other non-Latin
text). The whole block, headers and notes included, never exceeds ``budget_tokens`` by
that estimate; whatever was cut is said in the block.
"""
from __future__ import annotations

import math
import reprlib
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .formats import fence_ticks
from .secrets import mask_secrets

__all__ = [
    "DEFAULT_BUDGET_TOKENS",
    "MIN_BUDGET_TOKENS",
    "ContextBlock",
    "ContextError",
    "estimate_tokens",
    "parse_names",
    "summarize",
]

DEFAULT_BUDGET_TOKENS = 2000
MIN_BUDGET_TOKENS = 100
_HEAD_ROWS = 5
_MAX_TABLE_COLUMNS = 20
_MAX_LISTED_COLUMNS = 200
_NULL_COUNT_SECONDS = 0.1  # null counting stops after this (object columns are slow)
_MAX_NULL_COUNT_CELLS = 50_000_000
_MAX_MINMAX_ELEMENTS = 10_000_000
_CELL_CHARS = 40
_NOTE_RESERVE = 30  # units kept free in each variable's share for its "cut" note


class ContextError(ValueError):
    """A ``--context`` name that cannot be summarised (message says which and what to do)."""


def _units(text: str) -> int:
    """Cost of ``text`` in quarter tokens: 1 per ASCII character, 4 per other character."""
    if text.isascii():
        return len(text)
    return len(text) + 3 * sum(1 for ch in text if ord(ch) > 127)


def estimate_tokens(text: str) -> int:
    """Estimated tokens of ``text``: ASCII characters / 4 + non-ASCII characters, rounded up."""
    return math.ceil(_units(text) / 4)


def _fit(text: str, units: int, marker: str = "…") -> str:
    """``text`` cut so that it costs at most ``units`` (with ``marker`` when cut)."""
    if _units(text) <= units:
        return text
    room = units - _units(marker)
    if room <= 0:
        return ""
    if text.isascii():
        return text[:room] + marker
    out: list[str] = []
    used = 0
    for ch in text:
        cost = 1 if ord(ch) < 128 else 4
        if used + cost > room:
            break
        out.append(ch)
        used += cost
    return "".join(out) + marker


@dataclass
class ContextItem:
    """One variable's summary: ``name``, ``kind`` (``pandas.DataFrame``...), ``text``, ``cut``."""

    name: str
    kind: str
    text: str
    cut: bool = False
    brief: str = ""  # short description for the label: "DataFrame 1,000,000×5"


@dataclass
class ContextBlock:
    """The context to send: ``text`` (the delimited block), ``label`` (one short line).

    ``tokens`` is the estimate of ``text``; ``budget_tokens`` the limit it respects;
    ``items`` the per-variable summaries; ``cut`` notes what was left out.
    """

    text: str
    label: str
    tokens: int
    budget_tokens: int
    items: list[ContextItem] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0

    def __str__(self) -> str:
        return self.text


class _Writer:
    """Lines within a budget of units; ``add`` refuses a line that would not fit."""

    def __init__(self, units: int) -> None:
        self.units = units
        self.used = 0
        self.lines: list[str] = []
        self.cut = False

    def fits(self, line: str) -> bool:
        return self.used + _units(line) + 1 <= self.units

    def add(self, line: str, *, cut_to_fit: bool = False) -> bool:
        if not self.fits(line):
            if not cut_to_fit:
                self.cut = True
                return False
            line = _fit(line, self.units - self.used - 1)
            self.cut = True
            if not line:
                return False
        self.lines.append(line)
        self.used += _units(line) + 1
        return True

    @property
    def left(self) -> int:
        return self.units - self.used


def _summariser_key(obj: Any) -> tuple[str, str] | None:
    """("pandas", "DataFrame") etc. for ``obj`` or a subclass; None for anything else.

    Reads class names and modules only: nothing is imported.
    """
    for cls in type(obj).__mro__:
        key = (cls.__module__.split(".")[0], cls.__name__)
        if key in _SUMMARISERS:
            return key
    return None


def _cell(value: Any) -> str:
    """A value as a Markdown table cell: one line, ``|`` escaped, at most 40 characters."""
    try:
        if isinstance(value, float) or getattr(getattr(value, "dtype", None), "kind", "") == "f":
            s = f"{value:.6g}"  # 0.141247, not 0.1412465569010316: more rows fit
        else:
            s = str(value)
    except Exception:  # noqa: BLE001
        s = "<unprintable>"
    s = s.replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    return s if len(s) <= _CELL_CHARS else s[: _CELL_CHARS - 1] + "…"


def _table(w: _Writer, columns: list[str], rows: Iterable[Iterable[Any]], total_rows: int, index_name: str = "") -> None:
    """Add a Markdown table; stops at the first row that would not fit and says so."""
    header = "| " + " | ".join([_cell(index_name)] + [_cell(c) for c in columns]) + " |"
    rule = "|" + "---|" * (len(columns) + 1)
    if not (w.fits(header) and w.add(header) and w.add(rule)):
        if w.lines and w.lines[-1] == header:
            w.lines.pop()
            w.used -= _units(header) + 1
        w.cut = True
        return
    shown = 0
    for row in rows:
        if not w.add("| " + " | ".join(_cell(v) for v in row) + " |"):
            break
        shown += 1
    if shown < min(total_rows, _HEAD_ROWS):
        w.cut = True


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _column_lines(w: _Writer, ncols: int, entries: Iterable[tuple[str, Any, Any]]) -> int:
    """List ``(name, dtype, null count or callable)`` lines within part of the budget.

    On frames wider than the table the list takes at most half of what is left, so the
    first rows still fit. Null counts are computed only for listed columns, and stop after
    ``_NULL_COUNT_SECONDS``. Returns how many columns were listed.
    """
    w.add("columns (dtype, nulls):")
    tail = 70  # room kept for the "more columns" and "nulls not counted" notes
    limit = w.used + (w.left // 2 if ncols > _MAX_TABLE_COLUMNS else w.left) - tail
    deadline = time.perf_counter() + _NULL_COUNT_SECONDS
    shown = 0
    uncounted = 0
    for name, dtype, nulls in entries:
        line = f"- {_cell(name)}: {dtype}, "
        if w.used + _units(line) + 24 > limit:
            break
        if callable(nulls):
            if time.perf_counter() < deadline:
                nulls = nulls()
            else:
                nulls = None
        if nulls is None:
            uncounted += 1
            line += "nulls not counted"
        else:
            line += f"{_fmt_int(int(nulls))} nulls"
        w.add(line)
        shown += 1
    if shown < ncols:
        w.add(f"… {_fmt_int(ncols - shown)} more columns not listed", cut_to_fit=True)
        w.cut = True
    if uncounted:
        w.add(f"(nulls not counted for {uncounted} columns: frame too large)", cut_to_fit=True)
    return shown


def _pandas_frame(obj: Any, w: _Writer) -> str:
    rows, ncols = obj.shape
    w.add(f"shape: {_fmt_int(rows)} rows × {_fmt_int(ncols)} columns")
    if type(obj.index).__name__ != "RangeIndex":
        w.add(f"index: {type(obj.index).__name__} {obj.index.dtype}"
              + (f" named {obj.index.name!r}" if obj.index.name is not None else ""), cut_to_fit=True)
    listed = min(ncols, _MAX_LISTED_COLUMNS)
    part = obj.iloc[:, :listed]
    countable = min(listed, _MAX_NULL_COUNT_CELLS // max(rows, 1))

    def entries() -> Iterator[tuple[str, Any, Any]]:
        for i, (name, dtype) in enumerate(zip(part.columns, part.dtypes, strict=False)):
            if i >= countable:
                yield name, dtype, None
            elif getattr(dtype, "kind", "") in "iub" and type(dtype).__module__.startswith("numpy"):
                yield name, dtype, 0  # numpy ints and bools cannot hold a null: no scan
            else:
                yield name, dtype, lambda i=i: part.iloc[:, i].isna().sum()

    _column_lines(w, ncols, entries())
    k = min(ncols, _MAX_TABLE_COLUMNS)
    if rows and k and w.add(f"first {min(rows, _HEAD_ROWS)} rows"
                            + (f" (first {k} of {_fmt_int(ncols)} columns)" if k < ncols else "") + ":"):
        head = obj.iloc[:_HEAD_ROWS, :k]
        _table(w, [str(c) for c in head.columns], head.itertuples(index=True, name=None), rows,
               str(obj.index.name or ""))
    return f"DataFrame {_fmt_int(rows)}×{_fmt_int(ncols)}"


def _pandas_series(obj: Any, w: _Writer) -> str:
    n = len(obj)
    w.add(f"name: {obj.name!r}, dtype: {obj.dtype}, length: {_fmt_int(n)}", cut_to_fit=True)
    w.add(f"nulls: {_fmt_int(int(obj.isna().sum()))}")
    if n:
        w.add("first values:")
        head = obj.iloc[:_HEAD_ROWS]
        _table(w, [str(obj.name) if obj.name is not None else "value"],
               ((i, v) for i, v in zip(head.index, head.tolist(), strict=False)), n)
    return f"Series {_fmt_int(n)}"


def _polars_frame(obj: Any, w: _Writer) -> str:
    rows, ncols = obj.shape
    w.add(f"shape: {_fmt_int(rows)} rows × {_fmt_int(ncols)} columns")
    listed = min(ncols, _MAX_LISTED_COLUMNS)
    names = obj.columns[:listed]
    countable = names[: max(0, min(listed, _MAX_NULL_COUNT_CELLS // max(rows, 1)))]
    nulls = obj.select(countable).null_count().row(0) if countable else ()
    _column_lines(w, ncols, ((n, d, nulls[i] if i < len(nulls) else None)
                             for i, (n, d) in enumerate(zip(names, obj.dtypes[:listed], strict=False))))
    k = min(ncols, _MAX_TABLE_COLUMNS)
    if rows and k and w.add(f"first {min(rows, _HEAD_ROWS)} rows"
                            + (f" (first {k} of {_fmt_int(ncols)} columns)" if k < ncols else "") + ":"):
        head = obj.select(obj.columns[:k]).head(_HEAD_ROWS)
        _table(w, list(head.columns), ((i, *r) for i, r in enumerate(head.rows())), rows)
    return f"DataFrame {_fmt_int(rows)}×{_fmt_int(ncols)}"


def _polars_series(obj: Any, w: _Writer) -> str:
    n = len(obj)
    w.add(f"name: {obj.name!r}, dtype: {obj.dtype}, length: {_fmt_int(n)}", cut_to_fit=True)
    w.add(f"nulls: {_fmt_int(int(obj.null_count()))}")
    if n:
        w.add("first values:")
        _table(w, [obj.name or "value"], enumerate(obj.head(_HEAD_ROWS).to_list()), n)
    return f"Series {_fmt_int(n)}"


def _numpy_array(obj: Any, w: _Writer) -> str:
    np = sys.modules["numpy"]
    ma = sys.modules.get("numpy.ma")
    masked = ma is not None and isinstance(obj, ma.MaskedArray)
    shape = "×".join(_fmt_int(d) for d in obj.shape) or "scalar"
    w.add(f"shape: {tuple(obj.shape)}, dtype: {obj.dtype}, size: {_fmt_int(obj.size)}", cut_to_fit=True)
    if masked and ma is not None:
        w.add(f"masked: {_fmt_int(int(ma.count_masked(obj)))}")
    if obj.size and obj.dtype.kind in "iufbmM":
        flat = obj if obj.size <= _MAX_MINMAX_ELEMENTS else np.asarray(obj.flat[:_MAX_MINMAX_ELEMENTS])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # all-NaN slices, NaT comparisons
                if obj.dtype.kind == "f":
                    lo, hi = np.nanmin(flat), np.nanmax(flat)
                    extra = f", NaN: {_fmt_int(int(np.isnan(flat).sum()))}"
                else:
                    lo, hi, extra = flat.min(), flat.max(), ""
            scope = "" if flat is obj else f" (of the first {_fmt_int(_MAX_MINMAX_ELEMENTS)} values)"
            w.add(f"min: {lo}, max: {hi}{extra}{scope}", cut_to_fit=True)
        except (ValueError, TypeError):  # empty after masking, odd dtypes
            pass
    if obj.size:
        with np.printoptions(threshold=20, edgeitems=3, linewidth=100):
            sample = str(obj) if masked else np.array2string(obj)
        w.add("values:")
        lines = sample.splitlines()
        for line in lines[:20]:
            if not w.add(line, cut_to_fit=True) or w.cut:
                break
        if len(lines) > 20:
            w.add("…", cut_to_fit=True)
            w.cut = True
    return f"ndarray {shape} {obj.dtype}"


def _other(obj: Any, w: _Writer) -> str:
    t = type(obj)
    try:
        n = len(obj)
    except Exception:  # noqa: BLE001 - no len, or a failing one
        n = None
    if n is not None:
        w.add(f"length: {_fmt_int(n)}")
    room = max(0, w.left - 10)
    r = reprlib.Repr()
    r.maxstring = r.maxother = max(20, room)
    r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 50
    r.maxdict = 30
    r.maxlevel = 4
    try:
        if isinstance(obj, str):
            text = repr(obj[:room]) + (f"… ({_fmt_int(len(obj))} characters)" if len(obj) > room else "")
        else:
            text = r.repr(obj)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__
        text = f"<repr failed: {type(exc).__name__}>"
    lines = text.splitlines() or [""]
    for line in lines:
        if not w.add(line, cut_to_fit=True):
            break
        if w.cut:
            break
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return name + (f" len {_fmt_int(n)}" if n is not None else "")


_SUMMARISERS = {
    ("pandas", "DataFrame"): _pandas_frame,
    ("pandas", "Series"): _pandas_series,
    ("polars", "DataFrame"): _polars_frame,
    ("polars", "Series"): _polars_series,
    ("numpy", "ndarray"): _numpy_array,
}


def _type_name(obj: Any) -> str:
    """``pandas.DataFrame`` for the libraries' own classes, else ``module.QualName``."""
    t = type(obj)
    key = _summariser_key(obj)
    if key is not None and t.__name__ == key[1] and t.__module__.split(".")[0] == key[0]:
        return f"{key[0]}.{key[1]}"
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def parse_names(spec: str | Iterable[str]) -> list[str]:
    """``"df, arr"`` (or a list of such) as ``["df", "arr"]``; ContextError if one is not a name."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for part in parts:
        for name in str(part).split(","):
            name = name.strip()
            if not name:
                continue
            if not name.isidentifier():
                raise ContextError(f"--context {name!r}: not a variable name. "
                                   "Give names separated by commas, as in --context df,arr.")
            if name not in names:
                names.append(name)
    return names


def _summary(name: str, obj: Any, share: int) -> ContextItem | None:
    """One variable's summary within ``share`` units (None when even a short one does not fit)."""
    kind = _type_name(obj)
    head = f"### {name} ({kind})"
    w = _Writer(share - _NOTE_RESERVE - _units(head) - 2 * 12)  # 12 ≈ two fence lines
    if w.units < 40:
        return None
    key = _summariser_key(obj)
    summariser = _SUMMARISERS[key] if key is not None else _other
    try:
        brief = summariser(obj, w)
    except Exception as exc:  # noqa: BLE001 - a strange object must not sink the prompt
        w.add(f"(could not summarise: {type(exc).__name__}: {_fit(str(exc), 80)})", cut_to_fit=True)
        brief = kind
    body = mask_secrets("\n".join(w.lines))
    note = "(cut to fit the context budget)" if w.cut else ""
    fence = fence_ticks(body)
    text = "\n".join([head, fence, body, fence] + ([note] if note else []))
    if _units(text) + 2 > share:  # should not happen; the hard guarantee is in summarize
        text = _fit(text, share - 2)
    return ContextItem(name, kind, text, w.cut, brief)


def summarize(
    names: list[str] | str,
    namespace: Mapping[str, Any],
    *,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
) -> ContextBlock:
    """Summaries of the variables ``names`` from ``namespace``, within ``budget_tokens``.

    Args:
        names: variable names (a list, or ``"df,arr"`` as given to ``--context``).
        namespace: the user namespace (only read).
        budget_tokens: the limit for the whole block (estimated by :func:`estimate_tokens`);
            at least ``MIN_BUDGET_TOKENS``.

    Returns:
        A :class:`ContextBlock` whose ``text`` is the delimited block to send and ``label``
        a short line for the collapsed "Context" view. Registered secrets are masked.

    Raises:
        ContextError: a name is not defined (the message names it), no names were given,
            or the budget is too small.
    """
    names = parse_names(names)
    if not names:
        raise ContextError("--context: give at least one variable name, as in --context df.")
    if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < MIN_BUDGET_TOKENS:
        raise ContextError(f"--context-budget {budget_tokens!r}: use a whole number of tokens, "
                           f"at least {MIN_BUDGET_TOKENS} (default {DEFAULT_BUDGET_TOKENS}).")
    missing = [n for n in names if n not in namespace]
    if missing:
        listed = ", ".join(repr(n) for n in missing)
        raise ContextError(f"--context: no variable named {listed} in the notebook. "
                           "Run the cell that defines it first, or check the spelling.")
    total_units = budget_tokens * 4
    intro = ("Context: summaries of notebook variables the user attached "
             "(not the full data).")
    closing = "End of context."
    overhead = _units(intro) + _units(closing) + 4
    reserve_cut_line = 120
    remaining = total_units - overhead - reserve_cut_line
    items: list[ContextItem] = []
    omitted: list[str] = []
    chunks: list[str] = []
    started = time.perf_counter()
    for i, name in enumerate(names):
        share = remaining // (len(names) - i)
        item = _summary(name, namespace[name], share)
        if item is None:
            omitted.append(name)
            continue
        remaining -= _units(item.text) + 2
        chunks.append(item.text)
        items.append(item)
    cut_notes = [f"{it.name}: cut to fit" for it in items if it.cut]
    if omitted:
        cut_notes.append("not included (over budget): " + ", ".join(omitted))
    parts = [intro, ""] + [c + "\n" for c in chunks]
    if omitted:
        parts.append(_fit("Not included, over the context budget: " + ", ".join(omitted) + ".",
                          reserve_cut_line - 2) + "\n")
    parts.append(closing)
    text = "\n".join(parts)
    if _units(text) > total_units:  # the guarantee, whatever the summaries did
        text = _fit(text, total_units - _units(closing) - 2) + "\n" + closing
    elapsed_ms = (time.perf_counter() - started) * 1000
    tokens = estimate_tokens(text)
    label = "Context: " + ", ".join(f"{it.name} ({it.brief})" for it in items)
    if omitted:
        label += " · not included: " + ", ".join(omitted)
    label += f" · ~{_fmt_int(tokens)} tokens"
    return ContextBlock(text=text, label=label, tokens=tokens, budget_tokens=budget_tokens,
                        items=items, cut=cut_notes, elapsed_ms=elapsed_ms)
