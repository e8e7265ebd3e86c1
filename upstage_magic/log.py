"""A conversation log that outlives the kernel: one local SQLite file (like simonw/llm's logs.db).

Pure module (stdlib ``sqlite3`` only). Every turn is appended with its model, options,
usage, timings and status, so ``%upstage log`` can list past conversations and
``%upstage resume`` can load one into a new kernel.

* Where: :func:`default_log_path` (``logs.db`` in ``settings.data_dir()``);
  :func:`resolve_log_path` turns a setting into a path (``""`` = logging off).
* Safety: the file is created with mode 0600 (its directory 0700); stored text passes
  through ``secrets.mask_secrets`` and options lose any key-like entry, so the API key is
  never written.
* Concurrency: WAL mode, one short ``BEGIN IMMEDIATE`` transaction per write, a busy
  timeout; several kernels can append to the same file at once and nothing is lost.

::

    log = ConversationLog(resolve_log_path(setting))
    cid = log.latest(current_notebook()) or log.new_conversation(current_notebook())
    row = log.append(cid, turn_record(turn))     # log.delete_turn(row) when it is retried away
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .request import public_options
from .secrets import mask_secrets, scrub

__all__ = [
    "ConversationLog",
    "SessionLog",
    "ConversationSummary",
    "LogError",
    "current_notebook",
    "default_log_path",
    "format_conversations",
    "resolve_log_path",
    "session_turns",
    "turn_record",
]

_SCHEMA_VERSION = 2  # 2: turns.tool_calls
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notebook TEXT,
    title TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    reasoning TEXT,
    system TEXT,
    model TEXT,
    status TEXT NOT NULL,
    error TEXT,
    options TEXT,
    usage TEXT,
    timings TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    tool_calls TEXT
);
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns(conversation_id, id);
CREATE INDEX IF NOT EXISTS conversations_by_notebook ON conversations(notebook, updated);
"""
_BUSY_TIMEOUT_S = 30.0
_TITLE_CHARS = 200

class LogError(RuntimeError):
    """The log file cannot be used (message names the file and what to do)."""


def default_log_path() -> Path:
    """``logs.db`` in the data directory (``settings.data_dir()``: ``$UPSTAGE_MAGIC_HOME``, ...)."""
    from .settings import data_dir  # noqa: PLC0415

    return data_dir() / "logs.db"


def resolve_log_path(setting: str | os.PathLike[str] | None) -> Path | None:
    """The log file for a setting: None = :func:`default_log_path`, ``""`` = off (None)."""
    if setting is None:
        return default_log_path()
    text = os.fspath(setting)
    if not text.strip():
        return None
    return Path(text).expanduser()


def current_notebook(user_ns: Mapping[str, Any] | None = None) -> str | None:
    """This kernel's notebook path: ``JPY_SESSION_NAME`` (set by jupyter-server), else VS
    Code's ``__vsc_ipynb_file__`` in ``user_ns``, else None."""
    name = os.environ.get("JPY_SESSION_NAME", "").strip()
    if name:
        return name
    if user_ns is not None:
        vsc = user_ns.get("__vsc_ipynb_file__")
        if isinstance(vsc, str) and vsc:
            return vsc
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _iso(value: Any) -> str:
    """A timestamp (ISO string or epoch seconds) as an ISO 8601 UTC string."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="microseconds")
    if isinstance(value, str) and value:
        return value
    return _now()


def _mask(text: Any) -> str | None:
    """Text with registered secrets masked; None stays None."""
    return None if text is None else mask_secrets(text)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return mask_secrets(json.dumps(value, ensure_ascii=False, default=str, sort_keys=True))


def _usage(value: Any) -> dict[str, Any] | None:
    """A usage dict from a dict or an ``events.Usage``."""
    if value is None or hasattr(value, "to_dict"):
        return None if value is None else value.to_dict()
    out: dict[str, Any] = {k: int(v) for k, v in dict(value).items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if dict(value).get("estimated") is True:  # the client's estimate (Usage.to_dict): kept so
        out["estimated"] = True              # a resumed conversation's totals still say so
    return out


def turn_record(turn: Any) -> dict[str, Any]:
    """The dict :meth:`ConversationLog.append` takes, from a recorded ``session.Turn``."""
    return {**turn.to_dict(), "created": turn.created}


@dataclass(frozen=True)
class ConversationSummary:
    """One row of ``%upstage log``."""

    id: int
    notebook: str | None
    title: str
    turns: int
    tokens: int
    created: str
    updated: str
    #: Some of ``tokens`` are the client's estimates (a server that sent no usage).
    estimated: bool = False

    @property
    def date(self) -> str:
        """``2026-12-01 12:34`` (UTC) of the last activity."""
        return self.updated[:16].replace("T", " ")


class ConversationLog:
    """The SQLite conversation log at ``path`` (created on the first write).

    One connection per log object, kept open (closing the last connection checkpoints the
    WAL, ~10 ms); every method is one short transaction, so several kernels can share the
    file. Reads of a file that does not exist yet return nothing. Thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<ConversationLog {str(self.path)!r}>"

    # -- connection ------------------------------------------------------------------
    def _create_file(self) -> None:
        """Create the directory (0700) and the file (0600) if missing."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
        except OSError as exc:
            raise LogError(f"Cannot create the conversation log {str(self.path)!r}: {exc.strerror}. "
                           "Set UpstageMagics.log_path to a writable file, or to '' to turn "
                           "the log off.") from None

    def _open(self) -> sqlite3.Connection:
        """The process's connection to the file (opened, set up once; kept open)."""
        if self._conn is not None:
            return self._conn
        self._create_file()
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise LogError(f"Cannot open the conversation log {str(self.path)!r}: {exc}.") from None
        try:
            conn.row_factory = sqlite3.Row
            # WAL + NORMAL: every commit is atomic and the file never corrupts; no fsync per
            # turn (a power cut may lose the last turns, not the log)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection | None]:
        """The connection inside one short transaction (``BEGIN IMMEDIATE`` for writes).

        Reads of a file that does not exist yield None (nothing is created).
        """
        with self._lock:
            if self._conn is None and not write and not self.path.exists():
                yield None
                return
            try:
                conn = self._open()
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self.close()
                raise LogError(f"The conversation log {str(self.path)!r} cannot be used: {exc}. "
                               "Move the file away (a new one is created) or set "
                               "UpstageMagics.log_path to '' to turn the log off.") from None

    def close(self) -> None:
        """Close the connection (the next call opens it again)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _setup(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the tables (once per process and file)."""
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LogError(f"The conversation log {str(self.path)!r} could not use WAL mode "
                           f"(got {mode!r}); put it on a local disk.")
        conn.execute("BEGIN IMMEDIATE")
        for stmt in filter(str.strip, _SCHEMA.split(";")):
            conn.execute(stmt)
        if "tool_calls" not in {r[1] for r in conn.execute("PRAGMA table_info(turns)")}:  # a version 1 file
            conn.execute("ALTER TABLE turns ADD COLUMN tool_calls TEXT")
        conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        conn.execute("COMMIT")

    # -- writing ---------------------------------------------------------------------
    def new_conversation(self, notebook: str | None = None, *, title: str | None = None) -> int:
        """Start a conversation (for ``notebook``, a path or None); return its id."""
        now = _now()
        with self._connect(write=True) as conn:
            assert conn is not None
            cur = conn.execute(
                "INSERT INTO conversations (notebook, title, created, updated) VALUES (?, ?, ?, ?)",
                (notebook, _mask(title[:_TITLE_CHARS]) if title else None, now, now),
            )
            return int(cur.lastrowid or 0)

    def append(self, conversation_id: int, turn: Mapping[str, Any]) -> int:
        """Append one turn (a dict as from :func:`turn_record` or ``Turn.to_dict()``); return its id.

        Keys: ``prompt``, ``answer`` (required), ``reasoning``, ``system``, ``model``,
        ``status`` (default "done"), ``error``, ``options`` (dict; key-like entries are
        dropped), ``usage`` (dict or ``Usage``), ``timings`` (dict), ``finish_reason``,
        ``tool_calls`` (list), ``created`` (epoch seconds or ISO string; default now).
        """
        return self._append_many(conversation_id, [turn])[-1]

    def delete_turn(self, turn_id: int) -> None:
        """Remove one turn (an answer that was retried away), so a resumed conversation lacks it."""
        with self._connect(write=True) as conn:
            assert conn is not None
            conn.execute("DELETE FROM turns WHERE id = ?", (int(turn_id),))

    def _append_many(self, conversation_id: int, turns: Sequence[Mapping[str, Any]]) -> list[int]:
        rows = [self._row(conversation_id, t) for t in turns]
        ids: list[int] = []
        with self._connect(write=True) as conn:
            assert conn is not None
            conv = conn.execute("SELECT title FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if conv is None:
                raise LogError(f"No conversation {conversation_id} in {str(self.path)!r}.")
            for row in rows:
                cur = conn.execute(
                    "INSERT INTO turns (conversation_id, prompt, answer, reasoning, system, model, status,"
                    " error, options, usage, timings, prompt_tokens, completion_tokens, total_tokens, created,"
                    " tool_calls) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                ids.append(int(cur.lastrowid or 0))
            title = conv["title"] or (rows[0][1][:_TITLE_CHARS] if rows else None)
            conn.execute("UPDATE conversations SET updated = ?, title = ? WHERE id = ?",
                         (_now(), title, conversation_id))
        return ids

    @staticmethod
    def _row(conversation_id: int, t: Mapping[str, Any]) -> tuple[Any, ...]:
        if "prompt" not in t or "answer" not in t:
            raise ValueError("a turn needs 'prompt' and 'answer'")
        usage = _usage(t.get("usage"))
        timings = dict(t.get("timings") or {})
        if t.get("finish_reason"):
            timings.setdefault("finish_reason", t.get("finish_reason"))
        u = usage or {}
        return (
            conversation_id,
            _mask(t["prompt"]) or "",
            _mask(t["answer"]) or "",
            _mask(t.get("reasoning")),
            _mask(t.get("system")),
            _mask(t.get("model")),
            _mask(t.get("status") or "done"),
            _mask(t.get("error")),
            _json(public_options(t.get("options"))),
            _json(usage),
            _json(timings or None),
            int(u.get("prompt_tokens", 0)),
            int(u.get("completion_tokens", 0)),
            int(u.get("total_tokens", 0)) or int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0)),
            _iso(t.get("created")),
            _json(scrub(t.get("tool_calls")) or None),
        )

    def import_json(self, path: str | os.PathLike[str], *, notebook: str | None = None) -> int:
        """Read a ``ChatSession.export_json()`` file into a new conversation; return its id."""
        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LogError(f"No file {str(p)!r} to import.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LogError(f"Cannot read {str(p)!r} as JSON ({exc}). Import a file written by "
                           "%upstage export chat.json.") from None
        turns = data.get("turns") if isinstance(data, dict) else None
        if not isinstance(turns, list) or not all(
            isinstance(t, dict) and isinstance(t.get("prompt"), str) and isinstance(t.get("answer"), str)
            for t in turns
        ):
            raise LogError(f"{str(p)!r} is not an upstage-magic export (expected a 'turns' list of "
                           "prompt/answer objects, as %upstage export chat.json writes).")
        cid = self.new_conversation(notebook)
        system = data.get("system_prompt")
        rows = []
        for t in turns:
            row = dict(t)
            row.setdefault("model", data.get("model"))
            if system and not row.get("system"):
                row["system"] = system
            rows.append(row)
        if rows:
            self._append_many(cid, rows)
        return cid

    # -- reading ---------------------------------------------------------------------
    def recent(self, limit: int = 20, search: str | None = None) -> list[ConversationSummary]:
        """The latest conversations first; ``search`` keeps those whose questions or answers
        contain it (case-insensitive for ASCII)."""
        sql = ("SELECT c.id, c.notebook, c.title, c.created, c.updated,"
               " COUNT(t.id) AS turns, COALESCE(SUM(t.total_tokens), 0) AS tokens,"
               " COALESCE(MAX(t.usage LIKE '%\"estimated\": true%'), 0) AS estimated"
               " FROM conversations c LEFT JOIN turns t ON t.conversation_id = c.id")
        params: list[Any] = []
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            sql += (" WHERE c.id IN (SELECT conversation_id FROM turns WHERE prompt LIKE ? ESCAPE '\\'"
                    " OR answer LIKE ? ESCAPE '\\') OR c.title LIKE ? ESCAPE '\\'")
            params += [pattern, pattern, pattern]
        sql += " GROUP BY c.id ORDER BY c.updated DESC, c.id DESC LIMIT ?"
        params.append(max(0, int(limit)))
        with self._connect(write=False) as conn:
            if conn is None:
                return []
            return [ConversationSummary(r["id"], r["notebook"], r["title"] or "", r["turns"], r["tokens"],
                                        r["created"], r["updated"], bool(r["estimated"]))
                    for r in conn.execute(sql, params)]

    def load(self, conversation_id: int) -> list[dict[str, Any]]:
        """The conversation's turns in order, as dicts (keys as ``Turn.to_dict()`` plus
        ``reasoning``, ``options``, ``timings``); LogError if there is no such conversation."""
        with self._connect(write=False) as conn:
            if conn is None or conn.execute("SELECT 1 FROM conversations WHERE id = ?",
                                            (conversation_id,)).fetchone() is None:
                raise LogError(f"No conversation {conversation_id} in the log. "
                               "%upstage log lists them.")
            rows = conn.execute("SELECT * FROM turns WHERE conversation_id = ? ORDER BY id",
                                (conversation_id,)).fetchall()
        out = []
        for r in rows:
            out.append({
                "prompt": r["prompt"], "answer": r["answer"], "reasoning": r["reasoning"],
                "system": r["system"], "model": r["model"], "status": r["status"], "error": r["error"],
                "options": json.loads(r["options"]) if r["options"] else {},
                "usage": json.loads(r["usage"]) if r["usage"] else None,
                "timings": json.loads(r["timings"]) if r["timings"] else {},
                "tool_calls": json.loads(r["tool_calls"]) if r["tool_calls"] else [],
                "created": r["created"], "id": r["id"],
            })
        return out

    def latest(self, notebook: str | None = None) -> int | None:
        """Id of the most recently active conversation of ``notebook`` (of any, if None)."""
        sql = "SELECT id FROM conversations"
        params: tuple[Any, ...] = ()
        if notebook is not None:
            sql += " WHERE notebook = ?"
            params = (notebook,)
        sql += " ORDER BY updated DESC, id DESC LIMIT 1"
        with self._connect(write=False) as conn:
            if conn is None:
                return None
            row = conn.execute(sql, params).fetchone()
        return None if row is None else int(row[0])


def session_turns(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``session.Turn`` objects from :meth:`ConversationLog.load` rows (for ``%upstage resume``)."""
    from .events import Usage  # noqa: PLC0415 - the log itself does not need the session
    from .session import Turn  # noqa: PLC0415

    turns = []
    for r in rows:
        created = r.get("created")
        when = time.time()
        try:
            if isinstance(created, str):
                when = datetime.fromisoformat(created).timestamp()
            elif isinstance(created, (int, float)):
                when = float(created)
        except ValueError:
            pass
        timings = dict(r.get("timings") or {})
        finish = timings.pop("finish_reason", None)
        turns.append(Turn(
            prompt=r["prompt"], answer=r["answer"], status=r.get("status") or "done",
            model=r.get("model"), usage=Usage.from_dict(r["usage"]) if r.get("usage") else None,
            error=r.get("error"), system=r.get("system"), created=when, reasoning=r.get("reasoning") or "",
            tool_calls=list(r.get("tool_calls") or []), finish_reason=finish, options=dict(r.get("options") or {}),
            timings=timings,
        ))
    return turns


class SessionLog:
    """Keeps a ChatSession in the log: each recorded turn appended as it ends, a retried one removed.

    ``path_setting()`` gives the ``log_path`` setting (None: default file, "": off) and
    ``namespace()`` the user namespace (to name the notebook). A log that cannot be written
    is turned off for the process with one ``warn(message)``; the answer is never affected.
    """

    def __init__(self, path_setting: Any, namespace: Any = None, *, warn: Any = None) -> None:
        self._path_setting = path_setting
        self._namespace = namespace or (lambda: None)
        self._warn = warn or (lambda message: None)
        self._log: ConversationLog | None = None
        self.conversation: int | None = None
        self._rows: dict[int, int] = {}  # id(turn) -> row id
        self.failed = False

    def open(self) -> ConversationLog | None:
        """The ConversationLog of the current setting (None when the log is off)."""
        path = resolve_log_path(self._path_setting())
        if path is None:
            return None
        if self._log is None or self._log.path != path:
            self._log = ConversationLog(path)
        return self._log

    def attach(self, session: Any) -> None:
        session.on_end(self.ended)
        session.on_remove(self.removed)

    def detach(self, session: Any) -> None:
        session.remove_callback(self.ended)
        session.remove_callback(self.removed)
        self.conversation = None

    def new_conversation(self) -> None:
        """The next answer starts a new conversation in the log."""
        self.conversation = None

    def ended(self, exchange: Any) -> None:
        """Append a finished, recorded answer."""
        if not exchange.record or self.failed or exchange.turn is None:
            return
        try:
            clog = self.open()
            if clog is None:
                return
            if self.conversation is None:
                self.conversation = clog.new_conversation(current_notebook(self._namespace()))
            self._rows[id(exchange.turn)] = clog.append(self.conversation, turn_record(exchange.turn))
        except (LogError, OSError) as exc:
            self.failed = True
            self._warn(f"Note: the conversation log is off for this kernel ({mask_secrets(exc)}). "
                       "Set UpstageMagics.log_path to a writable file, or '' to turn it off.")

    def removed(self, turn: Any) -> None:
        """Delete a turn that was taken back (Retry), so a resumed conversation lacks it."""
        row = self._rows.pop(id(turn), None)
        clog = self._log
        if row is not None and clog is not None and not self.failed:
            try:
                clog.delete_turn(row)
            except (LogError, OSError):
                pass

    def resumed(self, conversation: int, turns: list[Any], rows: Sequence[Mapping[str, Any]]) -> None:
        """``turns`` (loaded from ``rows`` of ``conversation``) continue that conversation."""
        self.conversation = conversation
        self._rows = {id(t): int(r["id"]) for t, r in zip(turns, rows, strict=False) if r.get("id") is not None}


def format_conversations(rows: list[ConversationSummary], *, width: int = 60) -> str:
    """A plain-text table for ``%upstage log`` (or a hint when there is none)."""
    if not rows:
        return "No conversations in the log yet."
    lines = [f"{'id':>5}  {'date (UTC)':16}  {'turns':>5}  {'tokens':>7}  first question  [notebook]"]
    for r in rows:
        title = " ".join(r.title.split())
        if len(title) > width:
            title = title[: width - 1] + "…"
        nb = f"  [{r.notebook}]" if r.notebook else ""
        tokens = f"~{r.tokens}" if r.estimated else str(r.tokens)  # ~: some are estimates
        lines.append(f"{r.id:>5}  {r.date:16}  {r.turns:>5}  {tokens:>7}  {title}{nb}")
    return "\n".join(lines)

