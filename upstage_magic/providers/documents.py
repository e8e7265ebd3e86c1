"""Upstage Document Parse over HTTP: a file in, the API's answer (or a Document) out.

``POST {base}/document-digitization`` (multipart, the file in the field ``document``) for
short documents; above ``document.SYNC_PAGES`` pages (or when asked) the asynchronous
``POST .../async`` -> ``request_id``, then ``GET .../requests/{id}`` until every batch is
done, each batch's JSON fetched from its ``download_url`` as soon as it is ready (a
pre-signed URL: the key is never sent there) and the batches merged in page order.
``parse_events`` yields ``("progress", done, total)`` while it waits, then
``("document", Document)``: the notebook shows the progress in the cell's thread, and
cancelling the task (the kernel's interrupt) stops the polling at once.

Transport, retries and the error mapping are :mod:`.http`'s (a 4xx is one clear error);
results are cached on disk (:mod:`upstage_magic.doccache`) before they are returned.
"""
from __future__ import annotations

import asyncio
import mimetypes
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import settings
from ..doccache import DocumentCache, document_key
from ..document import DEFAULT_DOCUMENT_MODEL, SYNC_PAGES, Document, DocumentError, check_file
from ..errors import MissingAPIKeyError, UpstageError
from ..secrets import Secret, SecretURL, register_secret
from .http import DEFAULT_NONSTREAM_TIMEOUT, json_body, read, send

__all__ = ["DEFAULT_OUTPUT_FORMATS", "aparse", "encode_multipart", "form_fields", "merge_batches", "parse_events", "request_document"]

DEFAULT_OUTPUT_FORMATS = ("html", "markdown", "text")
POLL_START = 0.2
POLL_MAX = 2.0


def form_fields(model: str, *, output_formats: tuple[str, ...] = DEFAULT_OUTPUT_FORMATS, ocr: str = "auto",
                coordinates: bool = False) -> dict[str, str]:
    """The form fields of a request, as the API takes them (lists as strings, bools as words)."""
    return {"model": model, "ocr": ocr, "output_formats": str(list(output_formats)),
            "coordinates": "true" if coordinates else "false"}


def encode_multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body (bytes, so a retry can send it again) and its content type."""
    boundary = "upstage-magic-" + uuid.uuid4().hex
    safe_name = "".join(ch for ch in filename if ch.isprintable() and ch not in '"\\\r\n') or "document"
    ctype = mimetypes.guess_type(safe_name)[0] or "application/octet-stream"
    out = bytearray()
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"document\"; filename=\"{safe_name}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode()
    out += data + f"\r\n--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _key(api_key: str | None) -> Secret:
    if api_key and api_key.strip():
        return settings.check_api_key(api_key, source="The api_key given")
    key = settings.get_api_key()
    if not key:
        raise MissingAPIKeyError("No Upstage API key found: UPSTAGE_API_KEY is not set and no api_key was given.")
    register_secret(str(key))
    return key


async def _get_json(url: str, *, headers: dict[str, str], key: Secret, timeout: float, max_retries: int,
                    what: str) -> Any:
    response = await send("GET", url, headers=headers, data=None, proxy=None, timeout=timeout,
                          max_retries=max_retries, key=key, what=what)
    try:
        return json_body(await read(response.read(), key=key, started=True))
    finally:
        response.release()


async def request_document(data: bytes, filename: str, fields: dict[str, str], *, use_async: bool,
                           api_key: str | None = None, base_url: str | None = None, timeout: float | None = None,
                           max_retries: int = 3, poll: float = POLL_START) -> AsyncIterator[tuple[Any, ...]]:
    """Send one document; yield ``("progress", done, total)`` while waiting, then ``("response", dict)``."""
    __tracebackhide__ = True  # noqa: F841 - this frame holds the key
    key = _key(api_key)
    api_key = None
    base = settings.resolve_base_url(SecretURL(base_url) if base_url else None)
    body, ctype = encode_multipart(fields, filename, data)
    auth = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    timeout = DEFAULT_NONSTREAM_TIMEOUT if timeout is None else timeout
    url = base + "/document-digitization" + ("/async" if use_async else "")
    response = await send("POST", url, headers=_Masked({**auth, "Content-Type": ctype}), data=body, proxy=None,
                          timeout=timeout, max_retries=max_retries, key=key, what="document parse request")
    try:
        answer = json_body(await read(response.read(), key=key, started=True))
    finally:
        response.release()
    if not use_async:
        yield ("response", answer)
        return
    request_id = answer.get("request_id") if isinstance(answer, dict) else None
    if not isinstance(request_id, str) or not request_id:
        raise UpstageError("The asynchronous Document Parse answer has no request_id.")
    batches: dict[int, dict[str, Any]] = {}
    while True:
        state = await _get_json(f"{base}/document-digitization/requests/{request_id}", headers=_Masked(auth),
                                key=key, timeout=timeout, max_retries=max_retries, what="document parse status")
        for batch in state.get("batches") or []:
            n = batch.get("id")
            if batch.get("status") == "completed" and n not in batches:
                batches[n] = await _download(batch, key=key, timeout=timeout, max_retries=max_retries)
        status = state.get("status")
        if status == "failed":
            reason = state.get("failure_message") or "no reason given"
            raise UpstageError(f"Document Parse failed: {reason}", hint="Check the file, or try again later.")
        total = state.get("total_pages") or 0
        yield ("progress", sum(_pages_of(b) for b in batches.values()), total)
        if status == "completed" and len(batches) == len(state.get("batches") or []):
            yield ("response", merge_batches([batches[n] for n in sorted(batches, key=lambda x: (x is None, x))]))
            return
        await asyncio.sleep(poll)
        poll = min(poll * 1.5, POLL_MAX)


async def _download(batch: dict[str, Any], *, key: Secret, timeout: float, max_retries: int) -> dict[str, Any]:
    url = batch.get("download_url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise UpstageError("A Document Parse batch has no usable download_url.")
    # Pre-signed: no Authorization header (the key must not go to a storage host).
    result = await _get_json(url, headers={"Accept": "application/json"}, key=key, timeout=timeout,
                             max_retries=max_retries, what="document batch download")
    return result if isinstance(result, dict) else {}


def _pages_of(batch: dict[str, Any]) -> int:
    usage = batch.get("usage")
    return usage.get("pages", 0) if isinstance(usage, dict) and isinstance(usage.get("pages"), int) else 0


def merge_batches(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Batches (in page order) as one answer: elements renumbered, contents joined, pages summed."""
    elements: list[dict[str, Any]] = []
    for part in parts:
        for e in part.get("elements") or []:
            if isinstance(e, dict):
                elements.append({**e, "id": len(elements)})
    joins = {"html": "\n", "markdown": "\n\n", "text": "\n"}
    content = {f: sep.join(str((p.get("content") or {}).get(f) or "") for p in parts if (p.get("content") or {}).get(f))
               for f, sep in joins.items()}
    first = parts[0] if parts else {}
    return {"api": first.get("api"), "model": first.get("model"), "content": content, "elements": elements,
            "usage": {"pages": sum(_pages_of(p) for p in parts)}}


class _Masked(dict):
    """Headers whose repr hides the Authorization value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr({k: ("***" if k.lower() == "authorization" else v) for k, v in self.items()})


async def parse_events(path: str | os.PathLike[str], *, model: str = DEFAULT_DOCUMENT_MODEL,
                       coordinates: bool = False, use_async: bool | None = None, cache: bool = True,
                       api_key: str | None = None, base_url: str | None = None, timeout: float | None = None,
                       cache_dir: str | os.PathLike[str] | None = None,
                       poll: float = POLL_START, cached_only: bool = False) -> AsyncIterator[tuple[Any, ...]]:
    """Parse the file at ``path``: ``("progress", done, total)`` items, then ``("document", Document)``.

    ``cached_only`` (a dry run): a cached parse, else ``("not_cached", pages)`` and nothing is sent.

    The local checks run first (:func:`~upstage_magic.document.check_file`: nothing is sent
    for a missing file, a wrong type or a file over the limits); a cached parse of the same
    bytes, model and options is returned without a request.
    """
    data, pages = check_file(path)
    name = Path(path).name
    fields = form_fields(model, coordinates=coordinates)
    store = DocumentCache(cache_dir)
    key = document_key(data, model, fields, base_url=base_url or settings.get_base_url())
    if cache and (hit := store.get(key)) is not None:
        yield ("document", Document.from_response(hit, name=name, cached=True))
        return
    if cached_only:
        yield ("not_cached", pages)
        return
    if use_async is None:
        use_async = pages is not None and pages > SYNC_PAGES
    async for item in request_document(data, name, fields, use_async=use_async, api_key=api_key, base_url=base_url,
                                       timeout=timeout, poll=poll):
        if item[0] == "progress":
            yield item
            continue
        response = item[1]
        if not isinstance(response, dict):
            raise DocumentError(f"{name}: the Document Parse answer is not a JSON object.")
        if cache:
            store.put(key, response)
        yield ("document", Document.from_response(response, name=name))


async def aparse(path: str | os.PathLike[str], *, on_progress: Callable[[int, int], object] | None = None,
                 **options: Any) -> Document:
    """``await aparse("report.pdf")``: the parsed :class:`Document` (see :func:`parse_events`)."""
    async for item in parse_events(path, **options):
        if item[0] == "progress":
            if on_progress is not None:
                on_progress(item[1], item[2])
        else:
            return item[1]
    raise UpstageError("Document Parse ended without a document.")  # pragma: no cover

