"""The conversation log: a private SQLite file in WAL mode that loses nothing and keeps no key."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import upstage_magic.log as log_module
from tests.support.fake import answer, request
from upstage_magic.events import Reasoning, ToolCall, Usage
from upstage_magic.log import (
    ConversationLog,
    LogError,
    current_notebook,
    default_log_path,
    format_conversations,
    resolve_log_path,
    session_turns,
    turn_record,
)
from upstage_magic.session import ChatSession

ROOT = Path(__file__).resolve().parents[1]


def turn(prompt: str, answer: str = "ok", **extra) -> dict:
    return {"prompt": prompt, "answer": answer, **extra}


@pytest.fixture
def log(tmp_path) -> ConversationLog:
    return ConversationLog(tmp_path / "data" / "logs.db")


def test_paths_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("UPSTAGE_MAGIC_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_log_path() == tmp_path / "xdg" / "upstage-magic" / "logs.db"
    monkeypatch.setenv("UPSTAGE_MAGIC_HOME", str(tmp_path / "home"))
    assert default_log_path() == tmp_path / "home" / "logs.db"
    assert resolve_log_path(None) == tmp_path / "home" / "logs.db"
    assert resolve_log_path("") is None and resolve_log_path("  ") is None
    assert resolve_log_path("~/x.db") == Path.home() / "x.db"
    monkeypatch.delenv("UPSTAGE_MAGIC_HOME")
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_log_path() == Path.home() / ".local" / "share" / "upstage-magic" / "logs.db"


def test_current_notebook(monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert current_notebook() is None
    assert current_notebook({"__vsc_ipynb_file__": "/w/a.ipynb"}) == "/w/a.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", "/w/analysis.ipynb")
    assert current_notebook({"__vsc_ipynb_file__": "/w/a.ipynb"}) == "/w/analysis.ipynb"


def test_file_is_private_and_in_wal_mode(log):
    cid = log.new_conversation("nb.ipynb")
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700
    reader = sqlite3.connect(log.path)  # an open reader keeps the -wal and -shm files around
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        log.append(cid, turn("q"))
        for suffix in ("-wal", "-shm"):  # SQLite gives them the database's mode
            side = log.path.with_name(log.path.name + suffix)
            assert stat.S_IMODE(side.stat().st_mode) == 0o600, suffix
    finally:
        reader.close()


def test_reading_a_missing_log_creates_nothing(log):
    assert log.recent() == [] and log.latest() is None
    assert not log.path.exists()
    with pytest.raises(LogError, match="No conversation 7"):
        log.load(7)


def test_turns_round_trip_in_order_with_details(log):
    cid = log.new_conversation("nb.ipynb")
    log.append(cid, turn("first", "one", model="solar-pro3", usage=Usage(3, 4, 7), status="done",
                         options={"temperature": 0.2, "max_tokens": 50, "api_key": "SHOULD-NOT-STORE",
                                  "headers": {"Authorization": "Bearer x"}},
                         timings={"elapsed_s": 1.5}, reasoning="thinking", finish_reason="stop"))
    log.append(cid, turn("second", "two", status="stopped", created=1_700_000_000.0))
    got = log.load(cid)
    assert [t["prompt"] for t in got] == ["first", "second"]
    first = got[0]
    assert first["usage"]["total_tokens"] == 7 and first["model"] == "solar-pro3"
    assert first["options"] == {"temperature": 0.2, "max_tokens": 50}
    assert first["timings"] == {"elapsed_s": 1.5, "finish_reason": "stop"}
    assert first["reasoning"] == "thinking"
    assert got[1]["status"] == "stopped" and got[1]["created"].startswith("2023-11-14T22:13:20")
    raw = b"".join(f.read_bytes() for f in log.path.parent.iterdir())
    assert b"SHOULD-NOT-STORE" not in raw and b"Bearer" not in raw


def test_the_key_is_never_stored(log, monkeypatch):
    key = "up_" + "Kx9" * 10  # built at run time
    monkeypatch.setenv("UPSTAGE_API_KEY", key)
    cid = log.new_conversation(title=f"about {key}")
    log.append(cid, turn(f"my key is {key}", f"you said {key}", system=key, error=key,
                         options={"note": key}))
    for conn_file in log.path.parent.iterdir():
        assert key.encode() not in conn_file.read_bytes(), conn_file.name
    assert key not in json.dumps(log.load(cid))


def test_recent_lists_latest_first_with_counts_and_search(log):
    a = log.new_conversation("a.ipynb")
    log.append(a, turn("How do I plot a histogram?", "Use plt.hist", usage={"total_tokens": 10}))
    log.append(a, turn("And bins?", "bins=30", usage={"prompt_tokens": 5, "completion_tokens": 6}))
    b = log.new_conversation("b.ipynb")
    log.append(b, turn("What is 100% of x_y?", "x_y"))
    rows = log.recent()
    assert [r.id for r in rows] == [b, a]
    assert (rows[1].title, rows[1].turns, rows[1].tokens, rows[1].notebook) == (
        "How do I plot a histogram?", 2, 21, "a.ipynb")
    log.append(a, turn("thanks", "welcome"))
    assert [r.id for r in log.recent()] == [a, b]  # last activity first
    assert [r.id for r in log.recent(search="BINS=30")] == [a]
    assert [r.id for r in log.recent(search="100%")] == [b]  # % and _ are literal
    assert log.recent(search="0%_") == []
    assert len(log.recent(limit=1)) == 1
    table = format_conversations(log.recent())
    assert "How do I plot a histogram?" in table and "[a.ipynb]" in table
    assert format_conversations([]) == "No conversations in the log yet."


def test_latest_by_notebook_for_resume(log):
    a1 = log.new_conversation("a.ipynb")
    log.append(a1, turn("old"))
    b = log.new_conversation("b.ipynb")
    a2 = log.new_conversation("a.ipynb")
    log.append(a2, turn("new"))
    log.append(b, turn("b latest"))
    assert log.latest("a.ipynb") == a2
    assert log.latest("c.ipynb") is None
    assert log.latest() == b


def test_import_of_an_export(log, tmp_path):
    session = ChatSession(system_prompt="Be brief.", model="solar-mini")
    for q, a in [("q1", "a1"), ("q2", "a2")]:
        answer(session, q, a, Usage(2, 3, 5), model="solar-mini")
    path = session.export(tmp_path / "chat.json")
    cid = log.import_json(path)
    got = log.load(cid)
    assert [(t["prompt"], t["answer"], t["model"], t["system"]) for t in got] == [
        ("q1", "a1", "solar-mini", "Be brief."), ("q2", "a2", "solar-mini", "Be brief.")]
    assert got[0]["usage"]["total_tokens"] == 5
    assert log.recent()[0].title == "q1"


def test_resume_into_a_session_sends_the_earlier_turns(log):
    cid = log.new_conversation("nb.ipynb")
    log.append(cid, turn("q1", "a1", model="solar-pro3", usage={"prompt_tokens": 1, "completion_tokens": 2,
                                                                 "total_tokens": 3}))
    log.append(cid, turn("q2", "partial", status="stopped"))
    log.append(cid, turn("q3", "", status="error", error="HTTP 500"))
    session = ChatSession()
    session.load_turns(session_turns(log.load(log.latest("nb.ipynb"))))
    assert [t.prompt for t in session.turns] == ["q1", "q2", "q3"]
    assert session.turns[0].usage.total_tokens == 3 and session.turns[2].error == "HTTP 500"
    assert session.turns[1].created > 1.7e9
    sent = request("q4", session=session).messages
    assert [m["content"] for m in sent] == ["q1", "a1", "q4"]  # stopped and error turns are not sent


@pytest.mark.parametrize(("content", "match"), [
    ("not json", "as JSON"),
    ('{"turns": "x"}', "not an upstage-magic export"),
    ('[1, 2]', "not an upstage-magic export"),
    ('{"turns": [{"prompt": 1}]}', "not an upstage-magic export"),
])
def test_import_rejects_other_files_clearly(log, tmp_path, content, match):
    p = tmp_path / "x.json"
    p.write_text(content)
    with pytest.raises(LogError, match=match):
        log.import_json(p)
    with pytest.raises(LogError, match="No file"):
        log.import_json(tmp_path / "missing.json")


def test_turn_record_from_a_turn_and_resume_keeps_reasoning_and_tool_calls(log):
    """Defect: %upstage resume dropped reasoning and tool calls."""
    session = ChatSession()
    ex = answer(session, "hi", Reasoning("let me see"), "hel", "lo", ToolCall("f", '{"x": 1}', "c1"),
                Usage(1, 2, 3), system="sys", temperature=0.5)
    rec = turn_record(ex.turn)
    assert rec["prompt"] == "hi" and rec["answer"] == "hello" and rec["system"] == "sys"
    assert rec["usage"]["total_tokens"] == 3 and rec["status"] == "done"
    assert "total" in rec["timings"] and rec["options"] == {"temperature": 0.5}
    cid = log.new_conversation()
    log.append(cid, rec)
    back = session_turns(log.load(cid))[0]
    assert (back.answer, back.reasoning, back.tool_calls) == ("hello", "let me see", ex.turn.tool_calls)
    assert back.usage == ex.turn.usage and back.options == {"temperature": 0.5}


def test_a_deleted_turn_is_not_resumed(log):
    cid = log.new_conversation()
    first = log.append(cid, turn("q1"))
    second = log.append(cid, turn("q2"))
    log.delete_turn(second)
    assert [t["prompt"] for t in log.load(cid)] == ["q1"] and log.load(cid)[0]["id"] == first


def test_a_version_1_file_gains_the_tool_calls_column(tmp_path):
    import sqlite3

    path = tmp_path / "v1.db"
    old = sqlite3.connect(path)
    old.executescript(log_module._SCHEMA.replace(",\n    tool_calls TEXT", ""))
    old.execute("INSERT INTO conversations (notebook, title, created, updated) VALUES (NULL, 't', 'x', 'x')")
    old.commit()
    old.close()
    clog = ConversationLog(path)
    clog.append(1, {**turn("q"), "tool_calls": [{"name": "f"}]})
    assert clog.load(1)[0]["tool_calls"] == [{"name": "f"}]


def test_a_broken_file_gives_a_clear_error(tmp_path):
    p = tmp_path / "logs.db"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LogError, match="cannot be used|Cannot open"):
        ConversationLog(p).new_conversation()


def test_append_to_an_unknown_conversation_is_an_error(log):
    log.new_conversation()
    with pytest.raises(LogError, match="No conversation 99"):
        log.append(99, turn("q"))


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from upstage_magic.log import ConversationLog
    path, cid, tag, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    log = ConversationLog(path)
    Path(go.parent / ("ready-" + tag)).touch()
    while not go.exists():
        time.sleep(0.005)
    for i in range(200):
        log.append(cid, {"prompt": f"{tag} {i}", "answer": "a" * 200, "usage": {"total_tokens": 1}})
        time.sleep(0.001)  # spread the writes so the two processes overlap
""")


def test_two_processes_appending_at_once_lose_nothing(log, tmp_path):
    cid = log.new_conversation("shared.ipynb")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(log.path), str(cid), tag, str(go)],
                              env=env, stderr=subprocess.PIPE, text=True) for tag in ("A", "B")]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{t}").exists() for t in "AB"):
        assert time.monotonic() < deadline, "writers did not start"
        time.sleep(0.01)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    turns = log.load(cid)
    assert len(turns) == 400
    for tag in "AB":  # each writer's turns all there, in its own order
        mine = [int(t["prompt"].split()[1]) for t in turns if t["prompt"].startswith(tag)]
        assert mine == list(range(200))
    assert log.recent()[0].turns == 400 and log.recent()[0].tokens == 400
