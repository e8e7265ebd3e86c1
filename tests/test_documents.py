"""Document Parse: the emulator's endpoints (raw aiohttp), the client, Document, the disk cache."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core

from tests.support.pdfs import HOSTILE_TEXT, TABLE, hostile_pdf, long_pdf, report_pdf
from tests.test_provider_http import CompatResponse
from upstage_magic.doccache import DocumentCache, document_key
from upstage_magic.document import Document, DocumentError, check_file, file_kind, table_rows
from upstage_magic.emulator import Emulator
from upstage_magic.errors import BadRequestError
from upstage_magic.providers.documents import aparse, encode_multipart, form_fields, merge_batches
from upstage_magic.render.document import preview_html
from upstage_magic.secrets import register_secret

KEY = "test-key-DOC123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def emu():
    emulator = Emulator(api_key=KEY)
    base = await emulator.start()
    emulator.base = base  # type: ignore[attr-defined]
    try:
        yield emulator
    finally:
        await emulator.stop()


def form(data: bytes, filename: str = "r.pdf", **fields: str) -> aiohttp.FormData:
    fd = aiohttp.FormData()
    fd.add_field("document", data, filename=filename)
    for k, v in {"model": "document-parse", "output_formats": "['html', 'markdown', 'text']", **fields}.items():
        fd.add_field(k, v)
    return fd


async def post(emu: Emulator, fd: Any, path: str = "/document-digitization", headers: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(emu.base + path, data=fd,  # type: ignore[attr-defined]
                                                    headers=AUTH if headers is None else headers) as r:
        return r.status, await r.json(content_type=None)


# ------------------------------------------------------------------- the emulator


async def test_sync_answer_has_the_api_shape_and_real_pdf_text(emu: Emulator) -> None:
    status, body = await post(emu, form(report_pdf(), coordinates="true"))
    assert status == 200
    assert set(body) == {"api", "model", "content", "elements", "usage"}
    assert body["usage"] == {"pages": 3}
    assert set(body["content"]) == {"html", "markdown", "text"}
    els = body["elements"]
    assert [e["id"] for e in els] == list(range(len(els)))
    assert els[0]["category"] == "heading1" and els[0]["content"]["text"] == "Quarterly report"
    assert [e["page"] for e in els if e["category"] == "table"] == [2]
    table = next(e for e in els if e["category"] == "table")
    assert table_rows(table["content"]["html"]) == [list(r) for r in TABLE]
    assert "Outlook: steady growth" in body["content"]["markdown"]
    pts = els[1]["coordinates"]
    assert len(pts) == 4 and all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in pts)
    assert emu.documents.requests[-1]["filename"] == "r.pdf"


async def test_only_the_asked_formats_are_filled(emu: Emulator) -> None:
    status, body = await post(emu, form(report_pdf(), output_formats="['markdown']"))
    assert status == 200
    assert body["content"]["html"] == "" and body["content"]["markdown"]
    assert "coordinates" not in body["elements"][0]


async def test_emulator_escapes_pdf_text_in_html(emu: Emulator) -> None:
    _, body = await post(emu, form(hostile_pdf()))
    assert "<script>" not in body["content"]["html"]
    assert "<script>" in body["content"]["text"]  # the text itself is kept as it was


async def test_image_gets_a_marked_stand_in(emu: Emulator) -> None:
    status, body = await post(emu, form(b"\x89PNG\r\n\x1a\nrest", filename="scan.png"))
    assert status == 200
    assert len(body["elements"]) == 1
    assert "emulator stand-in" in body["elements"][0]["content"]["text"] and "scan.png" in body["content"]["text"]


@pytest.mark.parametrize(("fd_kw", "filename", "status", "words"), [
    ({"model": "nope"}, "r.pdf", 400, "model"),
    ({"ocr": "sometimes"}, "r.pdf", 400, "ocr"),
    ({"output_formats": "html"}, "r.pdf", 400, "output_formats"),
    ({}, "notes.exe", 400, "Unsupported document format"),
])
async def test_bad_requests_are_4xx_with_the_envelope(emu: Emulator, fd_kw, filename, status, words) -> None:
    data = b"MZ\x90\x00 not a document" if filename.endswith(".exe") else report_pdf()
    code, body = await post(emu, form(data, filename=filename, **fd_kw))
    assert code == status
    assert words in body["error"]["message"]


async def test_missing_key_and_missing_document(emu: Emulator) -> None:
    code, body = await post(emu, form(report_pdf()), headers={})
    assert code == 401
    fd = aiohttp.FormData()
    fd.add_field("model", "document-parse")
    fd.add_field("x", b"1", filename="x.bin")
    code, body = await post(emu, fd)
    assert code == 400 and "document" in body["error"]["message"]


async def test_sync_refuses_long_documents(emu: Emulator) -> None:
    code, body = await post(emu, form(long_pdf(101)))
    assert code == 400 and "asynchronous" in body["error"]["message"]


async def test_async_batches_of_ten_pages_with_download_urls(emu: Emulator) -> None:
    emu.documents.seconds_per_batch = 0.02
    code, body = await post(emu, form(long_pdf(25)), "/document-digitization/async")
    assert code == 200 and set(body) == {"request_id"}
    url = f"{emu.base}/document-digitization/requests/{body['request_id']}"  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as s:
        seen = []
        while True:
            async with s.get(url, headers=AUTH) as r:
                state = await r.json()
            seen.append(state["status"])
            if state["status"] == "completed":
                break
            await __import__("asyncio").sleep(0.01)
        assert [(b["start_page"], b["end_page"]) for b in state["batches"]] == [(1, 10), (11, 20), (21, 25)]
        assert "submitted" in seen or "started" in seen
        async with s.get(state["batches"][2]["download_url"]) as r:  # pre-signed: no key
            batch = await r.json()
        assert batch["usage"] == {"pages": 5}
        assert [e["page"] for e in batch["elements"]] == [21, 22, 23, 24, 25]
        async with s.get(url.replace(body["request_id"], "nope"), headers=AUTH) as r:
            assert r.status == 404


# ------------------------------------------------------------------- the client


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


async def test_client_sync_parse_gives_document_with_table(emu: Emulator, tmp_path: Path) -> None:
    p = write(tmp_path, "report.pdf", report_pdf())
    doc = await aparse(p, base_url=emu.base, api_key=KEY, cache_dir=tmp_path / "c")  # type: ignore[attr-defined]
    assert doc.page_count == 3 and len(doc.pages) == 3
    assert emu.documents.requests[-1]["path"] == "sync"
    [df] = doc.tables
    assert list(df.columns) == list(TABLE[0])
    assert df.values.tolist() == [list(r) for r in TABLE[1:]]
    assert "Quarterly report" in doc.markdown and "North" in doc.text and "<table>" in doc.html
    assert {e.category for e in doc.elements} == {"heading1", "paragraph", "table"}


async def test_client_async_path_reports_progress_and_merges(emu: Emulator, tmp_path: Path) -> None:
    emu.documents.seconds_per_batch = 0.02
    p = write(tmp_path, "long.pdf", long_pdf(23))
    progress: list[tuple[int, int]] = []
    doc = await aparse(p, base_url=emu.base, api_key=KEY, cache_dir=tmp_path / "c",  # type: ignore[attr-defined]
                       on_progress=lambda d, t: progress.append((d, t)), poll=0.01)
    assert emu.documents.requests[-1]["path"] == "async"
    assert doc.page_count == 23 and [e.id for e in doc.elements] == list(range(23))
    assert doc.pages[22] == "This is page 23 of the long report."
    assert progress[-1] == (23, 23) and all(t == 23 for _, t in progress)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


async def test_second_parse_is_from_the_cache_without_a_request(emu: Emulator, tmp_path: Path) -> None:
    data = report_pdf()  # once: fpdf2 stamps the creation time, so two calls can differ
    p = write(tmp_path, "report.pdf", data)
    kw = {"base_url": emu.base, "api_key": KEY, "cache_dir": tmp_path / "c"}  # type: ignore[attr-defined]
    first = await aparse(p, **kw)
    sent = len(emu.documents.requests)
    same_bytes = write(tmp_path, "copy.pdf", data)
    second = await aparse(same_bytes, **kw)
    assert len(emu.documents.requests) == sent and second.cached and not first.cached
    assert second.markdown == first.markdown
    await aparse(p, coordinates=True, **kw)  # other options: a new parse
    assert len(emu.documents.requests) == sent + 1


async def test_service_4xx_is_one_clear_error(emu: Emulator, tmp_path: Path) -> None:
    emu.documents.fault = {"status": 400, "message": "The document is encrypted."}
    p = write(tmp_path, "report.pdf", report_pdf())
    with pytest.raises(BadRequestError, match="encrypted"):
        await aparse(p, base_url=emu.base, api_key=KEY, cache_dir=tmp_path / "c")  # type: ignore[attr-defined]


async def test_download_url_gets_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioresponses_core, "ClientResponse", CompatResponse)
    base = "http://docs.invalid/v1"
    p = write(tmp_path, "long.pdf", long_pdf(12))
    batch = {"api": "2.0", "content": {"markdown": "x"}, "elements": [], "usage": {"pages": 12}}
    with aioresponses() as m:
        m.post(base + "/document-digitization/async", payload={"request_id": "r1"})
        m.get(base + "/document-digitization/requests/r1", payload={
            "status": "completed", "total_pages": 12,
            "batches": [{"id": 0, "status": "completed", "start_page": 1, "end_page": 12,
                         "download_url": "https://storage.invalid/b0?sig=1"}]})
        m.get("https://storage.invalid/b0?sig=1", payload=batch)
        doc = await aparse(p, base_url=base, api_key=KEY, cache_dir=tmp_path / "c")
        calls = {str(k[1]): v for k, v in m.requests.items()}
    assert doc.page_count == 12
    [download] = [v for k, v in calls.items() if "storage.invalid" in k]
    assert "Authorization" not in (download[0].kwargs.get("headers") or {})
    [status_call] = [v for k, v in calls.items() if "requests/r1" in k]
    assert status_call[0].kwargs["headers"]["Authorization"] == f"Bearer {KEY}"


# ------------------------------------------------------------------- local checks


def test_local_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no such file"):
        check_file(tmp_path / "missing.pdf")
    with pytest.raises(DocumentError, match="unsupported file type"):
        check_file(write(tmp_path, "a.exe", b"MZ"))
    big = tmp_path / "big.pdf"
    with open(big, "wb") as f:
        f.truncate(50 * 1024 * 1024 + 1)
    with pytest.raises(DocumentError, match="over Document Parse's limit of 50 MB"):
        check_file(big)
    assert file_kind("a.py") == "text" and file_kind("t.CSV") == "table" and file_kind("s.pptx") == "document"


async def test_nothing_is_sent_for_a_local_error(emu: Emulator, tmp_path: Path) -> None:
    with pytest.raises(DocumentError):
        await aparse(tmp_path / "missing.pdf", base_url=emu.base, api_key=KEY)  # type: ignore[attr-defined]
    assert emu.documents.requests == []


# ------------------------------------------------------------------- Document, cache, preview


def test_document_masks_secrets_and_preview_is_sanitised() -> None:
    register_secret("sk-doc-secret-9999")
    response = {"content": {"markdown": "x"}, "usage": {"pages": 1}, "elements": [
        {"id": 0, "category": "paragraph", "page": 1,
         "content": {"markdown": HOSTILE_TEXT + " sk-doc-secret-9999", "text": "t", "html": ""}}]}
    doc = Document.from_response(response, name="<img src=x onerror=alert(1)>.pdf")
    assert "sk-doc-secret-9999" not in doc.elements[0].markdown
    page = doc._repr_html_()
    tags = re.findall(r"<[a-zA-Z][^>]*>", page.split("</style>", 1)[1])
    assert tags and not [t for t in tags if re.match(r"<(script|img|iframe)", t) or re.search(r"\son\w+=", t)]
    assert not [t for t in tags if "javascript:" in t.lower()]
    assert "&lt;script&gt;" in page  # shown as text


def test_preview_shows_first_pages_and_counts() -> None:
    page = preview_html("r.pdf", ["one", "two", "three"], {"paragraph": 3}, 3)
    assert "one" in page and "two" in page and "three" not in page and "1 more page" in page
    assert "3 paragraph" in page


def test_cache_round_trip_and_clear(tmp_path: Path) -> None:
    cache = DocumentCache(tmp_path)
    key = document_key(b"abc", "document-parse", form_fields("document-parse"), base_url="http://x/v1")
    assert key != document_key(b"abd", "document-parse", form_fields("document-parse"), base_url="http://x/v1")
    assert cache.get(key) is None
    cache.put(key, {"usage": {"pages": 1}})
    assert cache.get(key) == {"usage": {"pages": 1}} and len(cache) == 1
    assert (tmp_path / f"{key}.json").stat().st_mode & 0o777 == 0o600
    assert cache.clear() == 1 and cache.get(key) is None


def test_cached_read_is_fast(tmp_path: Path) -> None:
    cache = DocumentCache(tmp_path)
    cache.put("a1", {"usage": {"pages": 1}, "elements": []})
    started = time.perf_counter()
    assert cache.get("a1") is not None
    assert time.perf_counter() - started < 1.0  # generous: the goal (<10 ms) is in the benchmark


def test_multipart_and_merge() -> None:
    body, ctype = encode_multipart({"model": "document-parse"}, 'we"ird\r\n.pdf', b"%PDF-1")
    boundary = ctype.split("boundary=")[1]
    assert body.count(boundary.encode()) == 3 and b'filename="weird.pdf"' in body
    merged = merge_batches([{"elements": [{"id": 0, "page": 1}], "content": {"text": "a"}, "usage": {"pages": 10}},
                            {"elements": [{"id": 0, "page": 11}], "content": {"text": "b"}, "usage": {"pages": 2}}])
    assert [e["id"] for e in merged["elements"]] == [0, 1] and merged["usage"] == {"pages": 12}
    assert merged["content"]["text"] == "a\nb"


def test_over_the_page_limit_is_refused_locally(tmp_path: Path) -> None:
    import io

    import pypdf

    writer = pypdf.PdfWriter()
    for _ in range(2001):
        writer.add_blank_page(width=72, height=72)
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(DocumentError, match="2001 pages is over Document Parse's limit of 2000 pages"):
        check_file(write(tmp_path, "many.pdf", buf.getvalue()))
