"""Files attached to the chat widget's next question: ``ChatWidget.attach(path, ...)``.

The same rules as ``%%upstage --file`` (:mod:`upstage_magic.attach`): text and code read
here, csv/parquet summarised, PDFs, images and Office files parsed by Document Parse (on the
runner's background loop, cached on disk). The pieces are kept until the next send, which
takes them (``Ask.attachments``) within the context budget; ``detach()`` forgets them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..attach import AttachmentBlock, Piece, build_block, read_table, read_text
from ..context import DEFAULT_BUDGET_TOKENS
from ..document import file_kind

__all__ = ["AttachMixin"]


class AttachMixin:
    """``attach`` / ``detach`` / ``take_attachments`` for :class:`ChatWidget`."""

    status: str
    config: Any
    _attached: list[Piece] | None = None

    def attach(self, *paths: str | Path, budget_tokens: int = DEFAULT_BUDGET_TOKENS) -> list[str]:
        """Attach files to the next question; returns what is attached (raises DocumentError)."""
        pieces = list(self._attached or [])
        for path in paths:
            pieces.append(_piece(self.config, str(path), budget_tokens))
        self._attached = pieces
        self._attach_budget = budget_tokens
        names = [p.title.removeprefix("file ") for p in pieces]
        self.status = "attached: " + ", ".join(names)
        return names

    def detach(self) -> None:
        """Forget the attached files."""
        self._attached = None
        self.status = "attachments removed"

    def take_attachments(self) -> AttachmentBlock | None:
        """The attached files as a block, forgotten here (the next send takes them)."""
        pieces, self._attached = self._attached, None
        if not pieces:
            return None
        return build_block(pieces, getattr(self, "_attach_budget", DEFAULT_BUDGET_TOKENS))


def _piece(config: Any, path: str, budget_tokens: int) -> Piece:
    kind = file_kind(path)
    if kind == "text":
        return read_text(path)
    if kind == "table":
        return read_table(path, budget_tokens)
    from ..providers.documents import aparse  # noqa: PLC0415 - aiohttp on first use
    from .runner import run_coroutine  # noqa: PLC0415

    doc = run_coroutine(lambda: aparse(path, base_url=getattr(config, "base_url", None) or None))
    return Piece(f"file {Path(path).name}", doc.markdown or doc.text, f"{doc.page_count} pages, Document Parse")
