"""A parsed document (Upstage Document Parse) and the local checks before one is sent. Pure.

:class:`Document` wraps the API's answer: ``.markdown``, ``.html``, ``.text``, ``.elements``
(category, page, content, coordinates when asked), ``.tables`` (each table element as a
pandas DataFrame; pandas is imported only then), ``.pages`` (the Markdown of each page).
Every string from the server is masked (``secrets.mask_secrets``) as it is read; the notebook
display is a sanitised preview built by :mod:`upstage_magic.render.document`.

:func:`check_file` is the local check: the file exists, its type is one Document Parse takes,
it is within the size limit and (PDFs, counted here with pypdf) the page limit. It raises
:class:`DocumentError` (one line that says what to do), so nothing is sent for a local error.
The API's facts used here are from ``UPSTAGE_API.md`` (section Document Parse).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from .errors import UpstageError
from .secrets import mask_secrets

__all__ = ["ASYNC_MAX_PAGES", "DOCUMENT_TYPES", "DEFAULT_DOCUMENT_MODEL", "Document", "DocumentError", "Element",
           "MAX_FILE_BYTES", "SYNC_PAGES", "check_file", "count_pdf_pages", "file_kind", "table_rows"]

DEFAULT_DOCUMENT_MODEL = "document-parse"
MAX_FILE_BYTES = 50 * 1024 * 1024
#: Above this many pages the asynchronous endpoint is used (langchain-upstage splits at 10 too).
SYNC_PAGES = 10
ASYNC_MAX_PAGES = 2000
DOCUMENT_TYPES = (".pdf", ".png", ".jpg", ".jpeg", ".bmp", ".tiff", ".tif", ".heic", ".docx", ".pptx", ".xlsx",
                  ".hwp", ".hwpx")
TEXT_TYPES = (".py", ".md", ".txt", ".json", ".ipynb", ".rst", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".sql",
              ".r", ".js", ".ts", ".html", ".css", ".sh", ".c", ".h", ".cpp", ".java", ".go", ".rs", ".jl", ".tex",
              ".xml", ".log", ".tsv")
TABLE_TYPES = (".csv", ".parquet")


class DocumentError(UpstageError, ValueError):
    """A file that cannot be attached or parsed as it is (the message says what to do)."""


def file_kind(path: str | os.PathLike[str]) -> str:
    """``"text"`` (read locally), ``"table"`` (csv/parquet), ``"document"`` (Document Parse).

    Raises DocumentError for any other type.
    """
    suffix = Path(path).suffix.lower()
    if suffix in TEXT_TYPES:
        return "text"
    if suffix in TABLE_TYPES:
        return "table"
    if suffix in DOCUMENT_TYPES:
        return "document"
    raise DocumentError(f"{Path(path).name}: unsupported file type {suffix or '(none)'!r}. Attach text or code "
                        f"({', '.join(TEXT_TYPES[:5])}...), .csv/.parquet, or a document "
                        f"({', '.join(DOCUMENT_TYPES)}).")


def count_pdf_pages(data: bytes) -> int | None:
    """A PDF's page count (pypdf), or None when it cannot be read here (the server decides)."""
    import pypdf  # noqa: PLC0415 - only for PDFs

    try:
        return len(pypdf.PdfReader(io.BytesIO(data)).pages)
    except Exception:  # noqa: BLE001 - a PDF pypdf cannot read may still be one the API reads
        return None


def check_file(path: str | os.PathLike[str]) -> tuple[bytes, int | None]:
    """The bytes of a document to parse and its page count (PDFs; else None), checked locally."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DocumentError(f"{path}: no such file. Check the path (relative to the notebook's folder: "
                            f"{Path.cwd()}).")
    if p.suffix.lower() not in DOCUMENT_TYPES:
        file_kind(p)  # raises for an unknown type
        raise DocumentError(f"{p.name}: Document Parse takes {', '.join(DOCUMENT_TYPES)}; "
                            "attach this file with --file instead.")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DocumentError(f"{p.name}: {size / 2**20:.1f} MB is over Document Parse's limit of "
                            f"{MAX_FILE_BYTES // 2**20} MB a file; split it first.")
    data = p.read_bytes()
    pages = count_pdf_pages(data) if p.suffix.lower() == ".pdf" else None
    if pages is not None and pages > ASYNC_MAX_PAGES:
        raise DocumentError(f"{p.name}: {pages} pages is over Document Parse's limit of {ASYNC_MAX_PAGES} pages; "
                            "split the PDF first.")
    return data, pages


@dataclass(frozen=True)
class Element:
    """One layout element: ``category`` (table, paragraph, heading1...), ``page`` (1-based), contents."""

    id: int
    category: str
    page: int
    markdown: str = ""
    html: str = ""
    text: str = ""
    coordinates: list[dict[str, float]] | None = None

    def __repr__(self) -> str:
        snippet = (self.text or self.markdown)[:40].replace("\n", " ")
        return f"Element(id={self.id}, category={self.category!r}, page={self.page}, text={snippet!r})"


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _s(value: Any) -> str:
    return mask_secrets(value) if isinstance(value, str) else ""


@dataclass
class Document:
    """A document as Document Parse read it (see the module docstring)."""

    name: str
    markdown: str
    html: str
    text: str
    elements: list[Element]
    page_count: int
    model: str = ""
    cached: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_response(cls, response: dict[str, Any], *, name: str = "document", cached: bool = False) -> Document:
        """The Document of an API answer (masked as read)."""
        content = _d(response.get("content"))
        elements = []
        for i, raw in enumerate(response.get("elements") or []):
            if not isinstance(raw, dict):
                continue
            c = _d(raw.get("content"))
            coords = raw.get("coordinates")
            page = raw.get("page")
            elements.append(Element(
                id=raw["id"] if isinstance(raw.get("id"), int) else i, category=_s(raw.get("category")) or "paragraph",
                page=page if isinstance(page, int) else 1, markdown=_s(c.get("markdown")), html=_s(c.get("html")),
                text=_s(c.get("text")), coordinates=coords if isinstance(coords, list) else None))
        usage = _d(response.get("usage"))
        pages = usage["pages"] if isinstance(usage.get("pages"), int) else max((e.page for e in elements), default=0)
        markdown = _s(content.get("markdown")) or "\n\n".join(e.markdown for e in elements if e.markdown)
        return cls(name=name, markdown=markdown, html=_s(content.get("html")), text=_s(content.get("text")),
                   elements=elements, page_count=pages, model=_s(response.get("model")), cached=cached, raw=response)

    @property
    def pages(self) -> list[str]:
        """The Markdown of each page (``pages[0]`` is page 1)."""
        out: list[list[str]] = [[] for _ in range(max(self.page_count, max((e.page for e in self.elements),
                                                                              default=0)))]
        for e in self.elements:
            if 1 <= e.page <= len(out):
                out[e.page - 1].append(e.markdown or e.text)
        return ["\n\n".join(parts) for parts in out]

    @property
    def tables(self) -> list[Any]:
        """Each table element as a pandas DataFrame (first row as the header)."""
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415 - only for tables

        frames = []
        for e in self.elements:
            if e.category != "table":
                continue
            rows = table_rows(e.html) if e.html else [line.split() for line in e.text.splitlines()]
            if not rows:
                continue
            width = max(len(r) for r in rows)
            rows = [r + [""] * (width - len(r)) for r in rows]
            header = rows[0] if len(set(rows[0])) == len(rows[0]) else list(range(width))
            frames.append(pd.DataFrame(rows[1:] if header is rows[0] else rows, columns=header))
        return frames

    def counts(self) -> dict[str, int]:
        """How many elements of each category."""
        out: dict[str, int] = {}
        for e in self.elements:
            out[e.category] = out.get(e.category, 0) + 1
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {c}" for c, n in sorted(self.counts().items()))
        return f"<Document {self.name!r}: {self.page_count} pages, {len(self.elements)} elements ({counts})>"

    def _repr_html_(self) -> str:
        from .render.document import preview_html  # noqa: PLC0415

        return preview_html(self.name, self.pages, self.counts(), self.page_count, cached=self.cached)


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            if not self.rows:
                self.rows.append([])
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(table_html: str) -> list[list[str]]:
    """The cells of an HTML table, row by row (stdlib parser; no markup kept)."""
    parser = _TableParser()
    parser.feed(table_html)
    parser.close()
    return [r for r in parser.rows if r]
