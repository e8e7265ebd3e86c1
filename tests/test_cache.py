"""cache.py: keys, storage, location, permissions, and no secrets on disk."""
from __future__ import annotations

import os
import stat
import sys

import pytest

from upstage_magic.cache import AnswerCache, cache_key, clear_cache, default_cache_path

MSGS = [{"role": "user", "content": "hello"}]


def test_key_depends_on_what_changes_the_answer_only():
    base = cache_key("solar-mini", MSGS, {"temperature": 0.2}, base_url="https://api.upstage.ai/v1")
    assert len(base) == 64
    assert base == cache_key("solar-mini", MSGS, {"temperature": 0.2, "api_key": "k1", "timeout": 5,
                                                   "max_retries": 0, "proxy": "http://p:1"},
                             base_url="https://api.upstage.ai/v1/")
    assert base != cache_key("solar-pro4", MSGS, {"temperature": 0.2}, base_url="https://api.upstage.ai/v1")
    assert base != cache_key("solar-mini", [{"role": "user", "content": "hello!"}], {"temperature": 0.2},
                             base_url="https://api.upstage.ai/v1")
    assert base != cache_key("solar-mini", MSGS, {"temperature": 0.3}, base_url="https://api.upstage.ai/v1")
    assert base != cache_key("solar-mini", MSGS, {"temperature": 0.2}, base_url="http://127.0.0.1:9/v1")
    # credentials and query strings in the base URL are not part of the key
    assert base == cache_key("solar-mini", MSGS, {"temperature": 0.2},
                             base_url="https://user:pw@api.upstage.ai/v1?token=abc")


def test_put_get_persist_and_clear(tmp_path):
    path = tmp_path / "sub" / "c.sqlite3"
    cache = AnswerCache(path)
    assert cache.get("k") is None
    cache.put("k", "answer", prompt_tokens=3, completion_tokens=7, model="solar-mini")
    cache.put("k2", "other")
    cache.close()
    again = AnswerCache(path)  # another process would see the same
    hit = again.get("k")
    assert hit is not None and hit.text == "answer" and (hit.prompt_tokens, hit.completion_tokens) == (3, 7)
    assert set(again.get_many(["k", "k2", "nope"])) == {"k", "k2"}
    assert len(again) == 2
    assert clear_cache(path) == 2
    assert again.get("k") is None and len(again) == 0
    again.close()


def test_an_estimate_stays_marked_and_an_older_cache_file_opens(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)  # the answers table as cache files had it before the estimated flag
    db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, prompt_tokens INTEGER NOT NULL "
               "DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0, model TEXT, created REAL NOT NULL)")
    db.execute("INSERT INTO answers VALUES ('old', 'kept', 2, 5, 'm', 0)")
    db.commit()
    db.close()
    cache = AnswerCache(path)
    assert cache.get("old") == ("kept", 2, 5, False)
    cache.put("est", "guessed", prompt_tokens=40, completion_tokens=9, estimated=True)
    cache.put("real", "reported", prompt_tokens=40, completion_tokens=9)
    cache.close()
    again = AnswerCache(path)
    assert again.get("est") == ("guessed", 40, 9, True) and again.get("real") == ("reported", 40, 9, False)
    again.close()


def test_clear_cache_without_a_file_is_zero_and_creates_nothing(tmp_path):
    assert clear_cache(tmp_path / "none" / "c.sqlite3") == 0
    assert not (tmp_path / "none").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_file_is_private(tmp_path):
    path = tmp_path / "d" / "c.sqlite3"
    cache = AnswerCache(path)
    cache.put("k", "v")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    for side in path.parent.iterdir():  # WAL / shm files too
        assert stat.S_IMODE(os.stat(side).st_mode) & 0o077 == 0, side
    cache.close()


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.setenv("UPSTAGE_MAGIC_HOME", str(tmp_path / "home"))
    assert default_cache_path() == tmp_path / "home" / "cache.sqlite3"
    monkeypatch.delenv("UPSTAGE_MAGIC_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform != "win32":
        assert default_cache_path() == tmp_path / "xdg" / "upstage-magic" / "cache.sqlite3"


def test_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = AnswerCache(blocker / "c.sqlite3")  # parent is a file
    with pytest.raises(OSError, match="UPSTAGE_MAGIC_HOME"):
        cache.put("k", "v")
