"""Parsed documents on disk, so an unchanged file is never parsed (or paid for) twice. Pure.

One JSON file per parse under ``settings.data_dir()/documents/`` (mode 0600, written to a
temporary file and renamed, so a crash leaves no half file), named by the SHA-256 of the
file's content, the model, the options and the server (base URL without credentials or
query): the same bytes under another name hit, a changed byte or option misses. The file
holds the API's answer as it came (never the key); it is masked when read into a
:class:`~upstage_magic.document.Document`. ``%upstage cache clear`` empties it too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DocumentCache", "clear_documents", "default_documents_dir", "document_key"]

DIR_NAME = "documents"


def default_documents_dir() -> Path:
    from .settings import data_dir  # noqa: PLC0415

    return data_dir() / DIR_NAME


def document_key(data: bytes, model: str, options: dict[str, Any], *, base_url: str | None = None) -> str:
    """SHA-256 hex of (content hash, model, options, bare base URL)."""
    from .cache import cache_key  # noqa: PLC0415 - one home for the bare URL rule

    content = hashlib.sha256(data).hexdigest()
    return cache_key(model, [{"document": content}], {"document_options": options}, base_url=base_url)


class DocumentCache:
    """``get(key)`` / ``put(key, response)`` / ``clear()`` over a directory of JSON files."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_documents_dir()

    def _path(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError("a cache key is a hex digest")
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(self._path(key), encoding="utf-8") as f:
                value = json.load(f)
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, response: dict[str, Any]) -> None:
        """Store ``response`` (best effort: a cache that cannot be written is skipped)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(response, f, ensure_ascii=False)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._path(key))
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)

    def clear(self) -> int:
        """Remove every cached parse; returns how many."""
        n = 0
        if not self.directory.is_dir():
            return 0
        for p in self.directory.glob("*.json"):
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
        return n

    def __len__(self) -> int:
        return len(list(self.directory.glob("*.json"))) if self.directory.is_dir() else 0


def clear_documents(directory: str | os.PathLike[str] | None = None) -> int:
    """Empty the document cache (default location unless ``directory``)."""
    return DocumentCache(directory).clear()
