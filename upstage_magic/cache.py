"""An on-disk answer cache (SQLite), so a re-run batch sends nothing it already has.

Pure module (sqlite3 and hashlib only). Each entry is keyed by the SHA-256 of the model,
the messages and the request options, and stores the answer text and its token counts.
What never goes into the key or the file: the API key, ``api_key``/``proxy``/timeouts/
retry settings, and any user:password or query string of the base URL (the bare base URL
is part of the key, so emulator answers never mix with real ones).

Location: ``cache.sqlite3`` in the data directory (``settings.data_dir``, shared with the
conversation log), or the file ``$UPSTAGE_MAGIC_CACHE`` names. A ``replays`` table holds whole
recorded answers for replay (:mod:`upstage_magic.replay`); a ``servers`` table what was learnt
about a server, by its bare base URL (whether it takes a json_schema ``response_format``). The
directory is created 0700, the file 0600. Writes are one short transaction per answer in WAL
mode, so an interrupted run keeps every answer that had arrived. ``clear_cache()`` empties it (``%upstage cache clear``).
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

__all__ = ["AnswerCache", "CachedAnswer", "cache_key", "clear_cache", "default_cache_path", "server_fact"]

FILE_NAME = "cache.sqlite3"


def default_cache_path() -> Path:
    """Where the cache lives unless told otherwise: ``$UPSTAGE_MAGIC_CACHE``, else the data directory.

    ``UPSTAGE_MAGIC_CACHE`` (a file path) lets a project keep its recorded answers beside its
    notebooks, so a CI run replays them (see :mod:`upstage_magic.replay`).
    """
    env = os.environ.get("UPSTAGE_MAGIC_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    from .settings import data_dir  # noqa: PLC0415

    return data_dir() / FILE_NAME


def _bare_url(url: Any) -> str:
    """``url`` without user:password, query string or fragment, no trailing slash."""
    if not url:
        return ""
    parts = urlsplit(str(url).strip())
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def cache_key(model: str, messages: list[dict[str, Any]], options: dict[str, Any] | None = None,
              *, base_url: str | None = None) -> str:
    """SHA-256 hex of (base URL without credentials, model, messages, answer-relevant options)."""
    return key_for(model, options, base_url=base_url)(messages)


def key_for(model: str, options: dict[str, Any] | None = None,
            *, base_url: str | None = None) -> Callable[[list[dict[str, Any]]], str]:
    """:func:`cache_key` for any messages with this model, options and server (they are read once: a batch's rows)."""
    from .request import answer_options  # noqa: PLC0415

    fixed = {"base_url": _bare_url(base_url), "model": model, "options": answer_options(options)}

    def key(messages: list[dict[str, Any]]) -> str:
        payload = json.dumps({**fixed, "messages": messages},
                             sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=repr)
        return hashlib.sha256(payload.encode()).hexdigest()

    return key


class CachedAnswer(NamedTuple):
    """A stored answer and its token counts (``estimated``: the client's, the server sent none)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False


class AnswerCache:
    """The SQLite answer store. Thread-safe (one connection behind a lock).

    ``get(key)`` / ``get_many(keys)`` / ``put(key, text, ...)`` / ``clear()`` /
    ``close()``; ``len(cache)`` counts entries. ``path=None`` uses ``default_cache_path()``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        """Open (creating dir 0700 and file 0600) on first use."""
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(fd)
                db = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
            except (OSError, sqlite3.Error) as exc:
                raise OSError(
                    f"Cannot open the answer cache at {self.path}: {exc}. Set UPSTAGE_MAGIC_HOME to a "
                    "writable directory, or pass cache=False."
                ) from None
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                "prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0, "
                "model TEXT, created REAL NOT NULL, estimated INTEGER NOT NULL DEFAULT 0)"
            )
            columns = {row[1] for row in db.execute("PRAGMA table_info(answers)")}
            if "estimated" not in columns:  # a cache file written before the flag was kept
                db.execute("ALTER TABLE answers ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0")
            db.execute("CREATE TABLE IF NOT EXISTS replays (key TEXT PRIMARY KEY, record TEXT NOT NULL, "
                       "created REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS servers (base_url TEXT NOT NULL, fact TEXT NOT NULL, "
                       "value TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (base_url, fact))")
            self._db = db
        return self._db

    def get(self, key: str) -> CachedAnswer | None:
        """The stored answer for ``key``, or None."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: list[str]) -> dict[str, CachedAnswer]:
        """The stored answers among ``keys`` (key -> answer)."""
        found: dict[str, CachedAnswer] = {}
        with self._lock:
            db = self._conn()
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, text, pt, ct, est in db.execute(
                    "SELECT key, text, prompt_tokens, completion_tokens, estimated FROM answers "
                    f"WHERE key IN ({marks})",
                    chunk,
                ):
                    found[key] = CachedAnswer(text, pt, ct, bool(est))
        return found

    def put(self, key: str, text: str, *, prompt_tokens: int = 0, completion_tokens: int = 0,
            model: str | None = None, estimated: bool = False) -> None:
        """Store one answer now (its own short transaction)."""
        with self._lock:
            self._conn().execute(
                "INSERT OR REPLACE INTO answers (key, text, prompt_tokens, completion_tokens, model, created, "
                "estimated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, text, int(prompt_tokens), int(completion_tokens), model, time.time(), int(bool(estimated))),
            )

    def put_record(self, key: str, record: str) -> None:
        """Store one replay record (JSON text of a whole answer; see :mod:`upstage_magic.replay`)."""
        with self._lock:
            self._conn().execute("INSERT OR REPLACE INTO replays VALUES (?, ?, ?)", (key, record, time.time()))

    def get_record(self, key: str) -> tuple[dict[str, Any], float] | None:
        """The replay record for ``key`` and when it was stored, or None."""
        with self._lock:
            row = self._conn().execute("SELECT record, created FROM replays WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        return (data, float(row[1])) if isinstance(data, dict) else None

    def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        with self._lock:
            db = self._conn()
            n = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            n += db.execute("SELECT COUNT(*) FROM replays").fetchone()[0]
            db.execute("DELETE FROM answers")
            db.execute("DELETE FROM replays")
            db.execute("DELETE FROM servers")  # what was learnt about servers (json_schema refused...)
            db.execute("VACUUM")
        return int(n)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        """Close the connection (it reopens on next use)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"AnswerCache({str(self.path)!r})"


def server_fact(base_url: str, fact: str, value: str | None = None) -> str | None:
    """A fact learnt about a server (``"json_schema"`` -> ``"refused"``), kept in the default cache
    file beyond the process: stored when ``value`` is given, else read (``None``: unknown). Best
    effort: a file that cannot be used is skipped. The base URL is stored bare (no credentials)."""
    cache = AnswerCache()
    try:
        with cache._lock:
            db = cache._conn()
            if value is not None:
                db.execute("INSERT OR REPLACE INTO servers VALUES (?, ?, ?, ?)",
                           (_bare_url(base_url), fact, value, time.time()))
            row = db.execute("SELECT value FROM servers WHERE base_url = ? AND fact = ?",
                             (_bare_url(base_url), fact)).fetchone()
    except (OSError, sqlite3.Error):
        return None
    finally:
        cache.close()
    return str(row[0]) if row else None


def clear_cache(path: str | os.PathLike[str] | None = None) -> int:
    """Empty the answer cache (default location unless ``path``); returns entries removed.

    What ``%upstage cache clear`` calls. A cache file that does not exist yet counts as empty.
    """
    target = Path(path) if path is not None else default_cache_path()
    if not target.exists():
        return 0
    cache = AnswerCache(target)
    try:
        return cache.clear()
    finally:
        cache.close()
