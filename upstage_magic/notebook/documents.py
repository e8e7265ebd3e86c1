"""Documents and the notebook itself in a cell: ``%upstage parse`` and ``%%upstage --file/--cells/--notebook``.

``parse_with_progress`` runs Document Parse on the runner's background loop
(:func:`runner.run_stream`) and shows "pages done/total" in the cell's thread while the
asynchronous endpoint works; the kernel's interrupt cancels the polling at once and
nothing is stored. ``attachments_for`` gathers what a cell attached (files read here, csv
and parquet summarised, documents parsed, the kernel's ``In``/``Out`` history) into one
:class:`~upstage_magic.attach.AttachmentBlock` within the context budget.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError

from ..attach import (
    AttachmentBlock,
    Piece,
    build_block,
    cell_pieces,
    notebook_sources,
    parse_cell_range,
    read_table,
    read_text,
)
from ..context import DEFAULT_BUDGET_TOKENS
from ..document import Document, DocumentError, file_kind
from ..errors import UpstageError
from ..secrets import defang, redact

__all__ = ["attachments_for", "parse_command", "parse_with_progress"]


class _Progress:
    """"Parsing NAME: done/total pages" in one output that is updated (rich) or one stderr line."""

    def __init__(self, name: str, rich: bool) -> None:
        self.name, self.rich, self.handle = name, rich, None
        self.last = ""

    def show(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if not self.rich:
            print(f"\r{text}", end="", file=sys.stderr, flush=True)
            return
        from IPython.display import display  # noqa: PLC0415

        from .display import text_bundle  # noqa: PLC0415

        bundle = text_bundle(defang(text))
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)

    def end(self, text: str) -> None:
        self.show(text)
        if not self.rich:
            print(file=sys.stderr)


def parse_with_progress(magics: Any, path: str, *, coordinates: bool = False, use_async: bool | None = None,
                        cache: bool = True, cached_only: bool = False) -> Document | None:
    """Parse ``path`` (local checks first), showing progress; UsageError with one line on failure.

    ``cached_only`` (``--dry-run``): the cached parse, or None; nothing is sent.
    """
    __tracebackhide__ = True
    from ..providers.documents import parse_events  # noqa: PLC0415 - aiohttp on first use
    from .runner import run_stream  # noqa: PLC0415

    name = Path(path).name
    progress = _Progress(name, magics.rich())
    found: list[Document] = []

    def on_batch(items: list[Any]) -> None:
        for item in items:
            if item[0] == "progress":
                progress.show(f"Parsing {name}: {item[1]}/{item[2]} pages")
            elif item[0] == "document":
                found.append(item[1])

    options: dict[str, Any] = {"base_url": magics.base_url or None, "coordinates": coordinates,
                               "use_async": use_async, "cache": cache, "cached_only": cached_only}
    if magics.timeout is not None:
        options["timeout"] = magics.timeout
    try:
        run_stream(lambda: parse_events(path, **options), on_batch, interval=0.1)
    except KeyboardInterrupt:
        if progress.last:
            progress.end(f"{progress.last} · stopped (nothing was stored)")
        raise _one_line(KeyboardInterrupt(f"parse of {name} stopped; nothing was stored")) from None
    except DocumentError as exc:
        raise UsageError(defang(redact(exc))) from None
    except UpstageError as exc:
        raise UsageError(defang(f"{type(exc).__name__}: {redact(exc)}")) from None
    if not found and cached_only:
        return None
    if not found:
        raise UsageError(f"{name}: Document Parse gave no document.")
    doc = found[0]
    if progress.last:
        progress.end(f"Parsed {name}: {doc.page_count} pages")
    return doc


def _one_line(exc: BaseException) -> BaseException:
    line = defang(f"{type(exc).__name__}: {redact(exc)}")
    exc._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
    return exc


def parse_command(magics: Any, args: Any) -> Any:
    """``%upstage parse FILE [-o NAME] [--coordinates] [--async] [--no-cache]``."""
    __tracebackhide__ = True
    if args.out is not None and not args.out.isidentifier():
        raise UsageError(f"-o {args.out!r}: not a valid Python variable name.")
    doc = parse_with_progress(magics, args.file, coordinates=args.coordinates,
                              use_async=True if args.use_async else None, cache=not args.no_cache)
    assert doc is not None
    if args.out is None:
        return doc
    magics.user_namespace()[args.out] = doc
    if magics.rich():
        from IPython.display import display  # noqa: PLC0415

        display(doc)
    else:
        print(repr(doc))
    return None


# ------------------------------------------------------------------------ --file, --cells


def _file_piece(magics: Any, path: str, share: int, dry_run: bool) -> Piece:
    kind = file_kind(path)
    if kind == "text":
        return read_text(path)
    if kind == "table":
        return read_table(path, share)
    doc = parse_with_progress(magics, path, cached_only=dry_run)
    if doc is None:
        return Piece(f"file {Path(path).name}", "(dry run: this document would be parsed by Upstage Document "
                     "Parse first and its Markdown sent here; it was not parsed, nothing was sent)", fenced=False)
    counts = ", ".join(f"{n} {c}" for c, n in sorted(doc.counts().items()))
    return Piece(f"file {Path(path).name}", doc.markdown or doc.text,
                 f"{doc.page_count} pages, Document Parse: {counts}" + (", cached" if doc.cached else ""))


def _answers(magics: Any) -> dict[str, str]:
    session = getattr(magics, "session", None)
    return {t.prompt: t.answer for t in getattr(session, "turns", []) or []}


def attachments_for(magics: Any, args: Any, *, used_tokens: int = 0) -> AttachmentBlock | None:
    """The cell's ``--file``/``--cells``/``--notebook`` as one block (None when none was given)."""
    __tracebackhide__ = True
    files = [p.strip() for p in (args.file or "").split(",") if p.strip()]
    if not files and args.cells is None and not args.notebook:
        if args.with_answers:
            raise UsageError("--with-answers works with --cells or --notebook.")
        return None
    budget = max((args.context_budget or DEFAULT_BUDGET_TOKENS) - used_tokens, 100)
    share = budget // max(len(files) + (1 if args.cells or args.notebook else 0), 1)
    pieces: list[Piece] = []
    try:
        for raw in files:
            pieces.append(_file_piece(magics, raw, share, bool(getattr(args, "dry_run", False))))
        if args.cells is not None or args.notebook:
            cells = parse_cell_range(args.cells) if args.cells is not None else None
            ns = magics.user_namespace()
            shell = magics.shell
            raw_inputs = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
            inputs = raw_inputs or ns.get("In") or [""]
            # The running cell is already the last entry of the history: never attach it.
            entries = notebook_sources(inputs, ns.get("Out") or {}, cells=cells, current=len(inputs) - 1)
            if not entries:
                raise UsageError("--cells/--notebook: no earlier cells in this kernel's history"
                                 + (f" in {args.cells}" if args.cells else "") + ".")
            pieces.extend(cell_pieces(entries, _answers(magics) if args.with_answers else None))
    except (DocumentError, ValueError) as exc:
        raise UsageError(defang(redact(exc))) from None
    return build_block(pieces, budget)
