"""The notebook's errors, and the prompt that asks the model to fix one.

Pure module (no IPython import; the shell is passed in). Three parts:

* :class:`ErrorRecord`: one failed cell as plain data (type, message, frames, source);
  no exception or frame objects are kept, so nothing holds the cell's locals alive.
* :class:`ErrorLog`: the last ``maxlen`` records by execution count, a read-only mapping
  (``log[3]``; ``log[-1]`` is the latest) that ``{Err[3]}`` placeholders read.
  :func:`install_error_recorder` fills it from IPython's ``post_run_cell`` event, so
  IPython's own error display is untouched (no ``set_custom_exc``).
* :func:`build_fix_prompt`: error, traceback trimmed to the user's own frames (library,
  standard-library and IPython frames are dropped and counted), bounded, plus the cell's
  source; registered secrets (and the env API key) are masked in everything it returns.
"""
from __future__ import annotations

import os
import re
import sys
import sysconfig
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..formats import fence_ticks
from ..secrets import cut, mask_secrets

__all__ = [
    "FIX_INSTRUCTION",
    "MAX_TRACEBACK_CHARS",
    "ErrorLog",
    "ErrorRecord",
    "Frame",
    "build_fix_prompt",
    "format_traceback",
    "install_error_recorder",
    "is_user_frame",
    "record_exception",
    "record_last_exception",
    "uninstall_error_recorder",
]

#: Longest traceback (characters) sent in a fix prompt; longer ones are cut in the middle.
MAX_TRACEBACK_CHARS = 4000
MAX_SOURCE_CHARS = 8000
MAX_MESSAGE_CHARS = 2000
_MAX_FRAMES = 200

FIX_INSTRUCTION = (
    "A cell in my Jupyter notebook raised the error below. Explain briefly what went "
    "wrong and why, then give the corrected cell, complete and ready to run, in one "
    "fenced ```python code block."
)

_CELL_FILE_RE = re.compile(r"^<ipython-input-\d+-[0-9a-f]+>$|[\\/]ipykernel_\d+[\\/]\d+\.py$")
_LIB_DIR_RE = re.compile(r"[\\/](?:site|dist)-packages[\\/]")


def _cut_middle(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters, cut in the middle with a marker."""
    if len(text) <= limit:
        return text
    marker = "\n… [{} characters cut] …\n"
    room = max(0, limit - len(marker.format(len(text))))
    head = room * 2 // 3
    tail = room - head
    cut = len(text) - head - tail
    return text[:head] + marker.format(cut) + (text[len(text) - tail:] if tail else "")


@dataclass(frozen=True)
class Frame:
    """One traceback frame: file, line number, function, source line, IPython label."""

    filename: str
    lineno: int | None
    name: str
    line: str = ""
    label: str | None = None  # "Cell In[3]" for a notebook cell, when the shell knows

    def format(self) -> str:
        """``  Cell In[3], line 2, in f`` (or ``File "...", line ...``) plus the line."""
        where = self.label or f'File "{self.filename}"'
        head = f"  {where}, line {self.lineno}, in {self.name}"
        return head + (f"\n    {self.line.strip()}" if self.line.strip() else "")


@dataclass(frozen=True)
class ErrorRecord:
    """One failed cell, as plain data.

    ``type`` is the exception's class name (qualified by module unless builtin),
    ``message`` its text, ``summary`` Python's last line(s) (``KeyError: 'a'``, with any
    notes), ``frames`` the traceback of the final exception, ``chain`` one summary line per
    earlier exception (``raise ... from``), ``source`` the cell.
    """

    execution_count: int | None
    type: str
    message: str
    summary: str
    frames: tuple[Frame, ...] = ()
    chain: tuple[str, ...] = ()
    source: str = ""
    created: float = field(default_factory=time.time)

    def traceback_text(self, *, limit: int = MAX_TRACEBACK_CHARS) -> str:
        """The traceback trimmed to the user's frames, at most ``limit`` characters."""
        return format_traceback(self, limit=limit)

    def __str__(self) -> str:
        return self.traceback_text()

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _frame_label(shell: Any, filename: str) -> str | None:
    """IPython's ``Cell In[3]`` name for a cell's file, else None."""
    compiler = getattr(shell, "compile", None)
    fmt = getattr(compiler, "format_code_name", None)
    if fmt is None:
        return None
    try:
        got = fmt(filename)
    except Exception:  # noqa: BLE001 - a label is a nicety
        return None
    return " ".join(got) if got else None


def record_exception(
    exc: BaseException,
    *,
    execution_count: int | None = None,
    source: str = "",
    shell: Any = None,
) -> ErrorRecord:
    """An :class:`ErrorRecord` of ``exc`` (its traceback read now; nothing kept alive)."""
    te = traceback.TracebackException.from_exception(exc, capture_locals=False)
    frames = tuple(
        Frame(f.filename, f.lineno, f.name, f.line or "", _frame_label(shell, f.filename))
        for f in list(te.stack)[-_MAX_FRAMES:]
    )
    summary = "".join(te.format_exception_only()).strip()
    chain: list[str] = []
    seen = te
    for _ in range(5):
        if seen.__cause__ is not None:
            nxt, link = seen.__cause__, "The above exception was the direct cause of the following exception:"
        elif seen.__context__ is not None and not seen.__suppress_context__:
            nxt, link = seen.__context__, "During handling of the above exception, another exception occurred:"
        else:
            break
        text = "".join(nxt.format_exception_only()).strip()
        if text != summary:  # pandas re-raises KeyError(key) from KeyError(key): say it once
            chain.append(text + "\n\n" + link)
        seen = nxt
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__
        message = "<message unavailable>"
    return ErrorRecord(
        execution_count=execution_count,
        type=name,
        message=cut(message, MAX_MESSAGE_CHARS, more='', redacting=False),
        summary=cut(summary, MAX_MESSAGE_CHARS, more='', redacting=False),
        frames=frames,
        chain=tuple(cut(c, MAX_MESSAGE_CHARS, more='', redacting=False) for c in reversed(chain)),
        source=mask_secrets(source),
    )


def record_last_exception(shell: Any = None) -> ErrorRecord | None:
    """The error IPython showed last (``sys.last_value``), for errors from before the
    recorder was installed; its cell number and source are unknown (the frames name the
    cells). None if there was none."""
    exc = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if not isinstance(exc, BaseException) or isinstance(exc, KeyboardInterrupt):
        return None
    return record_exception(exc, shell=shell)


class ErrorLog(Mapping[int, ErrorRecord]):
    """The last ``maxlen`` errors by execution count; read-only to everyone but the recorder.

    ``log[3]`` is cell 3's error (KeyError if it had none); a negative index counts back
    from the latest (``log[-1]``). ``log.last()`` is the latest, or None.
    """

    def __init__(self, *, maxlen: int = 50) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen
        self._records: OrderedDict[int, ErrorRecord] = OrderedDict()
        self._unnumbered = 0

    def add(self, record: ErrorRecord) -> None:
        """Keep ``record`` (the oldest is dropped beyond ``maxlen``)."""
        key = record.execution_count
        if key is None:  # not from a numbered cell: a negative key keeps it reachable by last()
            self._unnumbered -= 1
            key = self._unnumbered
        self._records.pop(key, None)
        self._records[key] = record
        while len(self._records) > self.maxlen:
            self._records.popitem(last=False)

    def last(self, *, skip_magic: bool = True) -> ErrorRecord | None:
        """The latest error; with ``skip_magic``, not one from a ``%upstage``/``%%upstage`` cell."""
        for record in reversed(self._records.values()):
            if skip_magic and record.source.lstrip().startswith(("%upstage", "%%upstage")):
                continue
            return record
        return None

    def __getitem__(self, key: int) -> ErrorRecord:
        if isinstance(key, bool) or not isinstance(key, int):
            raise KeyError(key)
        if key < 0:
            values = list(self._records.values())
            if -key > len(values):
                raise KeyError(key)
            return values[key]
        return self._records[key]

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"<ErrorLog cells={sorted(k for k in self._records if k >= 0)}>"


_INSTALLED: weakref.WeakKeyDictionary[Any, tuple[ErrorLog, Any]] = weakref.WeakKeyDictionary()


def install_error_recorder(shell: Any, *, maxlen: int = 50, ignore: tuple[type[BaseException], ...] = (KeyboardInterrupt,)) -> ErrorLog:
    """Record every failing cell of ``shell`` into an :class:`ErrorLog` (returned).

    Uses ``shell.events`` ``post_run_cell``, so IPython shows errors as always. Calling it
    again for the same shell returns the same log. ``ignore``d exception types (by default
    KeyboardInterrupt: a stop is not an error to fix) are not recorded.
    """
    if shell in _INSTALLED:
        return _INSTALLED[shell][0]
    log = ErrorLog(maxlen=maxlen)
    shell_ref = weakref.ref(shell)

    def on_post_run_cell(result: Any) -> None:
        exc = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        if exc is None or isinstance(exc, ignore):
            return
        info = getattr(result, "info", None)
        source = getattr(info, "raw_cell", "") or ""
        try:
            log.add(record_exception(exc, execution_count=getattr(result, "execution_count", None),
                                     source=source, shell=shell_ref()))
        except Exception:
            import logging

            logging.getLogger(__name__).debug("could not record an error", exc_info=True)

    shell.events.register("post_run_cell", on_post_run_cell)
    _INSTALLED[shell] = (log, on_post_run_cell)
    return log


def uninstall_error_recorder(shell: Any) -> None:
    """Stop recording ``shell``'s errors (for ``unload_ipython_extension``)."""
    entry = _INSTALLED.pop(shell, None)
    if entry is not None:
        try:
            shell.events.unregister("post_run_cell", entry[1])
        except ValueError:
            pass


def _dir_prefix(path: str) -> str:
    return os.path.normcase(os.path.abspath(path)) + os.sep


_OWN_DIR = _dir_prefix(os.path.dirname(os.path.abspath(__file__)))
_LIB_DIRS = tuple({_dir_prefix(d) for d in (sysconfig.get_paths().get("stdlib"),
                                            sysconfig.get_paths().get("platstdlib")) if d} | {_OWN_DIR})


def is_user_frame(filename: str) -> bool:
    """True for a notebook cell or the user's own file; False for library/stdlib/IPython code."""
    if _CELL_FILE_RE.search(filename):
        return True
    if filename.startswith("<"):  # <frozen ...>, <string>, <__array_function__ ...>
        return False
    if _LIB_DIR_RE.search(filename):
        return False
    norm = os.path.normcase(os.path.abspath(filename))
    return not norm.startswith(_LIB_DIRS)


def _package_of(filename: str) -> str:
    """``pandas`` for ``.../site-packages/pandas/core/frame.py``; ``python`` for stdlib."""
    m = _LIB_DIR_RE.search(filename)
    if m:
        rest = re.split(r"[\\/]", filename[m.end():])
        return rest[0].removesuffix(".py") if rest else "library"
    if filename.startswith("<"):
        return "python"
    if os.path.normcase(os.path.abspath(filename)).startswith(_OWN_DIR):
        return "upstage_magic"
    return "python"


def format_traceback(record: ErrorRecord, *, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """The record's traceback with only the user's frames, at most ``limit`` characters.

    Runs of library frames become one line (``[3 frames in pandas omitted]``); if no frame
    is the user's, the last frame is kept so the error has a place.
    """
    lines: list[str] = []
    for c in record.chain:
        lines += [c, ""]
    lines.append("Traceback (most recent call last; library frames omitted):")
    frames = list(record.frames)
    keep = [is_user_frame(f.filename) for f in frames]
    if frames and not any(keep):
        keep[-1] = True
    skipped: list[str] = []

    def flush() -> None:
        if skipped:
            pkgs = sorted(set(skipped))
            n = len(skipped)
            lines.append(f"  [{n} frame{'s' if n != 1 else ''} in {', '.join(pkgs)} omitted]")
            skipped.clear()

    first_user = next((i for i, k in enumerate(keep) if k), len(frames))
    for i, (frame, kept) in enumerate(zip(frames, keep, strict=False)):
        if kept:
            flush()
            lines.append(frame.format())
        elif i > first_user:  # frames before the first user frame are the shell's own
            skipped.append(_package_of(frame.filename))
    flush()
    lines.append(record.summary or f"{record.type}: {record.message}")
    return mask_secrets(_cut_middle("\n".join(lines), limit))


def build_fix_prompt(
    record: ErrorRecord,
    source: str | None = None,
    *,
    max_traceback_chars: int = MAX_TRACEBACK_CHARS,
    max_source_chars: int = MAX_SOURCE_CHARS,
) -> str:
    """The user message for ``%upstage fix``: instruction, error, trimmed traceback, cell.

    Args:
        record: the error (``error_log.last()`` or ``error_log[N]``).
        source: the failing cell's source; default ``record.source``.
        max_traceback_chars / max_source_chars: bounds; longer texts are cut in the middle
            with a marker saying how much was cut.

    Returns:
        The prompt, with registered secrets (and the ``UPSTAGE_API_KEY`` value) masked.
    """
    src = record.source if source is None else source
    src = _cut_middle(src.strip("\n"), max_source_chars)
    where = f"In[{record.execution_count}]" if record.execution_count is not None else "the cell"
    fence = fence_ticks(src)
    parts = [
        FIX_INSTRUCTION,
        "",
        f"Error: {record.summary or record.type + ': ' + record.message}",
        "",
        format_traceback(record, limit=max_traceback_chars),
        "",
        f"The cell ({where}):",
        f"{fence}python",
        src,
        fence,
    ]
    return mask_secrets("\n".join(parts))
