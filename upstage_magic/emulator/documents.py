"""Document Parse in the emulator: ``POST {base}/document-digitization`` (and ``/async``).

The API's facts, stated here from ``UPSTAGE_API.md`` (section Document Parse) and nowhere
taken from the client:

* ``multipart/form-data`` with the file in the field ``document``; form fields ``model``
  (``document-parse``, ``document-parse-nightly``), ``ocr`` (``auto`` | ``force``),
  ``output_formats`` (a list as a string, ``"['html', 'markdown', 'text']"``),
  ``coordinates``, ``chart_recognition``, ``merge_multipage_tables`` (bools) and
  ``base64_encoding`` (a list of categories as a string).
* The answer: ``api``, ``model``, ``content`` {html, markdown, text}, ``elements[]`` each
  {id, category, page, content {html, markdown, text}, coordinates (when asked: relative
  ``{x, y}`` points), base64_encoding}, ``usage`` {pages}.
* Formats: PDF, images (jpeg, png, bmp, tiff, heic), docx, pptx, xlsx, hwp/hwpx; at most
  50 MB a file. Asynchronous: up to 2,000 pages, processed in batches of 10 pages;
  ``POST .../async`` returns ``{"request_id"}``, ``GET .../requests/{id}`` the status and
  ``batches[]`` {id, status, start_page, end_page, download_url}; a batch's JSON is the
  answer shape above. The synchronous call is for short documents: this emulator refuses
  more than ``SYNC_MAX_PAGES`` pages there (the real limit is not verified).

What the emulator reads: a PDF's real text, page by page (pypdf, layout mode); lines whose
columns line up (two or more columns separated by runs of spaces, on two or more lines in
a row) become a ``table`` element with an HTML table; the first line of the document a
``heading1``; other runs of lines ``paragraph`` elements. Images and Office files get one
clearly marked stand-in element (the emulator does no OCR). Download URLs point back at
the emulator (``/_emulator/documents/...``, no key needed, like a pre-signed URL).
"""
from __future__ import annotations

import ast
import asyncio
import html
import io
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .api import Reject

MODELS = ("document-parse", "document-parse-nightly")
DATED_MODEL = "document-parse-250618"
API_VERSION = "2.0"
MAX_FILE_BYTES = 50 * 1024 * 1024
SYNC_MAX_PAGES = 100
ASYNC_MAX_PAGES = 2000
BATCH_PAGES = 10
OUTPUT_FORMATS = ("html", "markdown", "text")
PDF_TYPES = ("pdf",)
IMAGE_TYPES = ("jpeg", "jpg", "png", "bmp", "tiff", "tif", "heic")
OFFICE_TYPES = ("docx", "pptx", "xlsx", "hwp", "hwpx")
CATEGORIES = ("table", "figure", "chart", "heading1", "header", "footer", "caption", "paragraph",
              "equation", "list", "index", "footnote", "code")
STAND_IN = "[emulator stand-in: {kind} {name!r}, {size} bytes; the emulator does no OCR or layout analysis]"
_COLUMN_GAP = re.compile(r"\s{2,}")
MAX_RECORDED = 1000


@dataclass
class Job:
    """One asynchronous request: its batches (computed at once) and when each is done."""

    id: str
    pages: list[list[dict[str, Any]]]  # elements per page
    options: dict[str, Any]
    created: float
    seconds_per_batch: float
    batches: list[tuple[int, int]] = field(default_factory=list)  # (start_page, end_page), 1-based


class DocumentParse:
    """The Document Parse routes of one emulator; ``requests`` records each call (no file bytes)."""

    def __init__(self, check_auth: Callable[[web.Request], None]) -> None:
        self._check_auth = check_auth
        self.requests: list[dict[str, Any]] = []
        self.jobs: dict[str, Job] = {}
        #: Simulated processing time of one 10-page batch on the asynchronous path.
        self.seconds_per_batch = 0.05
        #: Make the next document request fail with this status (``{"status": 500}``), once.
        self.fault: dict[str, Any] | None = None

    def reset(self) -> None:
        self.requests.clear()
        self.jobs.clear()
        self.seconds_per_batch = 0.05
        self.fault = None

    def add_routes(self, app: web.Application, bases: tuple[str, ...]) -> None:
        for base in bases:
            app.router.add_post(base + "/document-digitization", self._sync)
            app.router.add_post(base + "/document-digitization/async", self._async)
            app.router.add_get(base + "/document-digitization/requests/{id}", self._status)
        app.router.add_get("/_emulator/documents/{id}/batches/{n}", self._download)
        app.router.add_post("/_emulator/documents/config", self._config)
        app.router.add_get("/_emulator/documents/requests", self._requests)

    # ------------------------------------------------------------------ handlers

    async def _sync(self, request: web.Request) -> web.Response:
        try:
            pages, options = await self._read(request, "sync")
            if len(pages) > SYNC_MAX_PAGES:
                raise Reject(400, f"The document has {len(pages)} pages; the synchronous API takes at most "
                                  f"{SYNC_MAX_PAGES}. Use the asynchronous API for long documents.",
                             code="too_many_pages")
        except Reject as exc:
            return exc.response
        return web.json_response(answer([e for page in pages for e in page], options, len(pages)))

    async def _async(self, request: web.Request) -> web.Response:
        try:
            pages, options = await self._read(request, "async")
            if len(pages) > ASYNC_MAX_PAGES:
                raise Reject(400, f"The document has {len(pages)} pages; the asynchronous API takes at most "
                                  f"{ASYNC_MAX_PAGES}.", code="too_many_pages")
        except Reject as exc:
            return exc.response
        job = Job(str(uuid.uuid4()), pages, options, time.monotonic(), self.seconds_per_batch)
        job.batches = [(start + 1, min(start + BATCH_PAGES, len(pages))) for start in range(0, max(len(pages), 1),
                                                                                          BATCH_PAGES)]
        self.jobs[job.id] = job
        return web.json_response({"request_id": job.id})

    async def _status(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
        except Reject as exc:
            return exc.response
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return Reject(404, "No such request id.", code="not_found").response
        done = self._done(job)
        base = f"{request.scheme}://{request.host}"
        batches = [{"id": i, "status": "completed" if i < done else ("started" if i == done else "scheduled"),
                    "start_page": s, "end_page": e,
                    "download_url": f"{base}/_emulator/documents/{job.id}/batches/{i}?sig=emulator" if i < done else None}
                   for i, (s, e) in enumerate(job.batches)]
        total = len(job.pages)
        status = "completed" if done == len(job.batches) else ("started" if done else "submitted")
        completed_pages = sum(e - s + 1 for s, e in job.batches[:done]) if total else 0
        return web.json_response({"id": job.id, "status": status, "total_pages": total,
                                  "completed_pages": completed_pages, "batches": batches})

    async def _download(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        try:
            n = int(request.match_info["n"])
        except ValueError:
            n = -1
        if job is None or not 0 <= n < self._done(job) or request.query.get("sig") != "emulator":
            return web.Response(status=403, text="Access denied (expired or unknown download URL).")
        start, end = job.batches[n]
        elements = [e for page in job.pages[start - 1:end] for e in page]
        return web.json_response(answer(elements, job.options, end - start + 1 if job.pages else 0))

    async def _config(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict):
            return Reject(400, "send a JSON object").response
        if "seconds_per_batch" in body:
            self.seconds_per_batch = float(body["seconds_per_batch"])
        if "fault" in body:
            self.fault = body["fault"]
        return web.json_response({"seconds_per_batch": self.seconds_per_batch, "fault": self.fault})

    async def _requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    def _done(self, job: Job) -> int:
        """How many batches of ``job`` are finished by now."""
        if job.seconds_per_batch <= 0:
            return len(job.batches)
        return min(len(job.batches), int((time.monotonic() - job.created) / job.seconds_per_batch))

    # ------------------------------------------------------------------ reading a request

    async def _read(self, request: web.Request, path: str) -> tuple[list[list[dict[str, Any]]], dict[str, Any]]:
        """Check auth, size, fields and type; the document's elements per page and the options."""
        self._check_auth(request)
        if (request.content_length or 0) > MAX_FILE_BYTES + 64 * 1024:
            raise Reject(413, f"The file is larger than {MAX_FILE_BYTES // 2**20} MB.", code="file_too_large")
        if not request.content_type.startswith("multipart/"):
            raise Reject(400, "Send multipart/form-data with the file in the field 'document'.")
        form = await request.post()
        document = form.get("document")
        if not isinstance(document, web.FileField):
            raise Reject(400, "The field 'document' (the file) is missing.", param="document")
        data = document.file.read()
        record = {"path": path, "filename": document.filename, "size": len(data),
                  **{k: str(v) for k, v in form.items() if k != "document"}}
        self.requests.append(record)
        del self.requests[:-MAX_RECORDED]
        if self.fault:
            fault, self.fault = self.fault, None
            raise Reject(int(fault.get("status", 500)), str(fault.get("message", "Emulated document fault.")))
        if len(data) > MAX_FILE_BYTES:
            raise Reject(413, f"The file is larger than {MAX_FILE_BYTES // 2**20} MB.", code="file_too_large")
        options = _options(form)
        kind = _kind(document.filename or "", data)
        loop = asyncio.get_running_loop()
        pages = await loop.run_in_executor(None, _elements_of, kind, document.filename or "document", data)
        _number(pages, options)
        return pages, options


def _options(form: Any) -> dict[str, Any]:
    model = str(form.get("model") or "")
    if model not in MODELS:
        raise Reject(400, f"Unknown document model {model!r}; use one of {', '.join(MODELS)}.", param="model")
    ocr = str(form.get("ocr") or "auto")
    if ocr not in ("auto", "force"):
        raise Reject(400, "ocr must be 'auto' or 'force'.", param="ocr")
    formats = _list_field(form.get("output_formats"), "output_formats") or ["html"]
    bad = [f for f in formats if f not in OUTPUT_FORMATS]
    if bad:
        raise Reject(400, f"Unknown output format(s) {bad}; use {list(OUTPUT_FORMATS)}.", param="output_formats")
    return {"model": model, "formats": formats, "coordinates": _bool(form.get("coordinates"), "coordinates"),
            "base64": _list_field(form.get("base64_encoding"), "base64_encoding")}


def _list_field(value: Any, name: str) -> list[str]:
    if value is None or str(value).strip() == "":
        return []
    try:
        parsed = ast.literal_eval(str(value))
    except (ValueError, SyntaxError):
        raise Reject(400, f"{name} must be a list as a string, e.g. \"['html', 'markdown']\".", param=name) from None
    if isinstance(parsed, str):
        parsed = [parsed]
    if not isinstance(parsed, (list, tuple)) or not all(isinstance(x, str) for x in parsed):
        raise Reject(400, f"{name} must be a list of strings.", param=name)
    return list(parsed)


def _bool(value: Any, name: str) -> bool:
    text = str(value if value is not None else "false").strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise Reject(400, f"{name} must be true or false.", param=name)
    return text in ("true", "1")


def _kind(filename: str, data: bytes) -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if ext in PDF_TYPES or data[:5] == b"%PDF-":
        return "pdf"
    if ext in IMAGE_TYPES:
        return "image"
    if ext in OFFICE_TYPES:
        return "office"
    raise Reject(400, f"Unsupported document format {ext or filename!r}: send PDF, an image (jpeg, png, bmp, "
                      "tiff, heic) or docx, pptx, xlsx, hwp.", code="unsupported_document_format")


# ---------------------------------------------------------------------------- content


def _elements_of(kind: str, name: str, data: bytes) -> list[list[dict[str, Any]]]:
    """Elements per page (not yet numbered): the real text of a PDF, else one stand-in."""
    if kind != "pdf":
        text = STAND_IN.format(kind="image" if kind == "image" else "office document", name=name, size=len(data))
        return [[_element("paragraph", text)]]
    import pypdf  # noqa: PLC0415 - only for PDFs

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        texts = [page.extract_text(extraction_mode="layout") or "" for page in reader.pages]
    except Exception as exc:  # noqa: BLE001 - any broken PDF is the caller's 400
        raise Reject(400, f"The PDF could not be read ({type(exc).__name__}).", code="invalid_document") from None
    pages = [_page_elements(text) for text in texts]
    if pages and pages[0] and pages[0][0]["category"] == "paragraph":
        first = pages[0][0]
        lines = first["_lines"]
        if len(lines[0]) <= 80 and not lines[0].endswith("."):
            pages[0][0:1] = [_element("heading1", lines[0])] + ([_element("paragraph", " ".join(lines[1:]))]
                                                                if lines[1:] else [])
    return pages


def _page_elements(text: str) -> list[dict[str, Any]]:
    """A page's layout text as paragraph and table elements (see the module docstring)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.strip():
            rows.append(_COLUMN_GAP.split(line.strip()))
    elements: list[dict[str, Any]] = []
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and len(rows[j]) >= 2 and len(rows[j]) == len(rows[i]):
            j += 1
        if j - i >= 2:
            elements.append(_table(rows[i:j]))
            i = j
            continue
        k = i
        lines = []
        while k < len(rows) and not (len(rows[k]) >= 2 and k + 1 < len(rows) and len(rows[k + 1]) == len(rows[k])):
            lines.append(" ".join(rows[k]))
            k += 1
        if not lines:  # a lone aligned line: a paragraph of its own
            lines, k = [" ".join(rows[i])], i + 1
        element = _element("paragraph", " ".join(lines))
        element["_lines"] = lines
        elements.append(element)
        i = k
    return elements


def _table(rows: list[list[str]]) -> dict[str, Any]:
    head, body = rows[0], rows[1:]
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    markdown = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(r) + " |" for r in body])
    return {"category": "table", "html": f"<table><thead><tr>{cells}</tr></thead><tbody>{trs}</tbody></table>",
            "markdown": markdown, "text": "\n".join(" ".join(r) for r in rows)}


def _element(category: str, text: str) -> dict[str, Any]:
    tag, md = ("h1", "# ") if category == "heading1" else ("p", "")
    return {"category": category, "html": f"<{tag}>{html.escape(text)}</{tag}>", "markdown": md + text,
            "text": text}


def _number(pages: list[list[dict[str, Any]]], options: dict[str, Any]) -> None:
    """Give every element its API shape in place: id, page, content in the asked formats."""
    n = 0
    for page_no, page in enumerate(pages, 1):
        for pos, raw in enumerate(page):
            content = {f: (raw[f] if f in options["formats"] else "") for f in OUTPUT_FORMATS}
            element: dict[str, Any] = {"id": n, "category": raw["category"], "page": page_no, "content": content}
            if options["coordinates"]:
                top, bottom = pos / max(len(page), 1), (pos + 1) / max(len(page), 1)
                element["coordinates"] = [{"x": 0.1, "y": round(top, 4)}, {"x": 0.9, "y": round(top, 4)},
                                          {"x": 0.9, "y": round(bottom, 4)}, {"x": 0.1, "y": round(bottom, 4)}]
            if raw["category"] in options["base64"]:
                element["base64_encoding"] = ""  # the emulator renders no images
            page[pos] = element
            n += 1


def answer(elements: list[dict[str, Any]], options: dict[str, Any], pages: int) -> dict[str, Any]:
    """The API's answer for ``elements`` (whole document or one batch)."""
    joins = {"html": "\n", "markdown": "\n\n", "text": "\n"}
    content = {f: (joins[f].join(e["content"][f] for e in elements) if f in options["formats"] else "")
               for f in OUTPUT_FORMATS}
    return {"api": API_VERSION, "model": DATED_MODEL, "content": content, "elements": elements,
            "usage": {"pages": pages}}
