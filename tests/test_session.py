"""ChatSession / Exchange: messages, history cap, statuses, usage, export."""
from __future__ import annotations

import json

import pytest

from upstage_magic.events import FinishReason, Reasoning, Usage
from upstage_magic.session import ChatSession, Exchange, default_session


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def run_turn(session: ChatSession, prompt: str, answer: str, **kw) -> Exchange:
    ex = session.start(prompt, model="solar-mini", **kw)
    for part in answer.split(" "):
        ex.add(part + " ")
    ex.finish()
    return ex


def test_build_messages_system_history_user():
    s = ChatSession(system_prompt="be brief")
    run_turn(s, "q1", "a1")
    msgs = s.build_messages("q2")
    assert msgs == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1 "},
        {"role": "user", "content": "q2"},
    ]
    assert s.build_messages("q2", history=False, system="other") == [
        {"role": "system", "content": "other"},
        {"role": "user", "content": "q2"},
    ]
    # empty system string overrides the session's and sends none
    assert s.build_messages("x", system="", history=False) == [{"role": "user", "content": "x"}]


def test_max_history_caps_what_is_sent_not_what_is_kept():
    s = ChatSession(max_history=2)
    for i in range(5):
        run_turn(s, f"q{i}", f"a{i}")
    assert [t.prompt for t in s.turns] == ["q0", "q1", "q2", "q3", "q4"]  # all kept
    users = [m["content"] for m in s.build_messages("next") if m["role"] == "user"]
    assert users == ["q3", "q4", "next"]
    assert [t.prompt for t in s.sent_turns()] == ["q3", "q4"]
    s.max_history = 0
    assert s.build_messages("z") == [{"role": "user", "content": "z"}]
    s.max_history = 10  # raising the cap brings older turns back into the context
    users = [m["content"] for m in s.build_messages("next") if m["role"] == "user"]
    assert users == ["q0", "q1", "q2", "q3", "q4", "next"]


def test_error_turns_do_not_count_against_max_history():
    s = ChatSession(max_history=2)
    run_turn(s, "good1", "a1")
    run_turn(s, "good2", "a2")
    for i in range(3):
        ex = s.start(f"bad{i}", model="m")
        ex.finish(error=RuntimeError("boom"))
    assert len(s.turns) == 5
    users = [m["content"] for m in s.build_messages("next") if m["role"] == "user"]
    assert users == ["good1", "good2", "next"]


def test_exports_keep_every_turn(tmp_path):
    s = ChatSession(max_history=1)
    for i in range(3):
        run_turn(s, f"question {i}", f"answer {i}")
    md = s.export_markdown()
    assert all(f"question {i}" in md for i in range(3)) and "## 3. You" in md
    assert [t["prompt"] for t in json.loads(s.export_json())["turns"]] == [f"question {i}" for i in range(3)]


def test_export_leaves_ordinary_text_and_key_shapes_in_content_alone():
    from upstage_magic.errors import register_secret

    register_secret("test-key-SECRET123")
    code = ("df.groupby('group_by_category'); set_up_database_connection(); "
            "open('backup_20240101.csv'); headers = 'Bearer tokenize_me_please'; "
            "example = 'up_" + "Ab3" * 10 + "'")
    s = ChatSession()
    run_turn(s, "explain test-key-SECRET123 please", code)
    md, js = s.export_markdown(), s.export_json()
    assert code in md and "test-key-SECRET123" not in md and "explain *** please" in md
    assert json.loads(js)["turns"][0]["answer"] == code + " "
    assert "test-key-SECRET123" not in js


def test_plural_and_describe_export(tmp_path):
    from upstage_magic.session import plural

    assert (plural(0, "turn"), plural(1, "turn"), plural(2, "turn")) == ("0 turns", "1 turn", "2 turns")
    assert plural(2, "reply", "replies") == "2 replies"
    s = ChatSession()
    run_turn(s, "q", "a")
    path = s.export(tmp_path / "x.md")
    assert s.describe_export(path) == f"Saved 1 turn to {path}"
    run_turn(s, "q2", "a2")
    assert s.describe_export("y.json") == "Saved 2 turns to y.json"


def test_record_false_is_one_off_but_counts_usage():
    s = ChatSession()
    ex = s.start("hi", model="m", record=False)
    ex.add("x")
    ex.add(Usage(3, 4, 7))
    turn = ex.finish()
    assert turn.answer == "x" and s.turns == []
    assert s.usage.total_tokens == 7


def test_exchange_statuses_and_events():
    s = ChatSession()
    ex = s.start("p", model="m")
    assert ex.status == "streaming"
    assert ex.add(Reasoning("thinking")) is None
    assert ex.add("Hello") == "Hello"
    assert ex.add("") is None
    assert ex.add(FinishReason("length")) is None
    ex.add(Usage(5, 2, 7))
    t = ex.finish()
    assert (t.status, t.answer, ex.reasoning, ex.finish_reason) == ("length", "Hello", "thinking", "length")
    assert ex.finish("error") is t  # records once
    assert len(s.turns) == 1 and s.usage.completion_tokens == 2


def test_stopped_turn_is_partial_and_sent_error_turn_not_sent():
    s = ChatSession()
    ex = s.start("long one", model="m")
    ex.add("partial")
    ex.finish("stopped")
    ex2 = s.start("broken", model="m")
    ex2.add("half")
    ex2.finish(error=RuntimeError("boom"))
    assert [t.status for t in s.turns] == ["stopped", "error"]
    assert s.turns[1].error == "boom"
    contents = [m["content"] for m in s.build_messages("n")]
    assert contents == ["long one", "partial", "n"]
    with pytest.raises(ValueError):
        s.start("x", model="m").finish("weird")


def test_timing_ttft_and_tokens_per_second():
    clock = FakeClock()
    ex = Exchange(None, "p", [], model="m", clock=clock)
    clock.t += 0.5
    ex.add("a")
    clock.t += 1.0
    ex.add("b")
    ex.add(Usage(1, 20, 21))
    ex.finish()
    assert ex.ttft == pytest.approx(0.5)
    assert ex.tokens_per_second == pytest.approx(20.0)
    assert ex.elapsed == pytest.approx(1.5)


def test_on_change_and_reset():
    s = ChatSession()
    seen = []
    s.on_change(lambda sess: seen.append(len(sess.turns)))
    s.on_change(lambda sess: 1 / 0)  # a broken listener does not break recording
    run_turn(s, "q", "a")
    s.reset()
    assert seen == [1, 0]
    assert s.turns == [] and s.usage.total_tokens == 0


def test_export_markdown_and_json(tmp_path):
    from upstage_magic.errors import register_secret

    register_secret("test-key-SECRET123")
    s = ChatSession(system_prompt="sys")
    run_turn(s, "what is test-key-SECRET123?", "an answer")
    ex = s.start("q2", model="m")
    ex.add("cut")
    ex.finish("stopped")
    md = s.export(tmp_path / "c.md").read_text()
    assert "## 1. You" in md and "an answer" in md and "stopped" in md
    assert "test-key-SECRET123" not in md
    data = json.loads(s.export(tmp_path / "c.json").read_text())
    assert [t["status"] for t in data["turns"]] == ["done", "stopped"]
    assert "SECRET123" not in json.dumps(data)
    with pytest.raises(ValueError):
        s.export(tmp_path / "c.txt")


def test_default_session_is_shared():
    assert default_session() is default_session()


def test_extend_matches_add_item_by_item():
    items = [Reasoning("think "), "", "Hel", "lo", FinishReason("length"), "", " world", Usage(5, 3, 8)]
    one, many = ChatSession().start("q", model="m"), ChatSession().start("q", model="m")
    deltas = [d for d in map(one.add, items) if d]
    assert many.extend(items[:3]) + many.extend(items[3:]) == "".join(deltas) == "Hello world"
    for attr in ("text", "reasoning", "chunks", "finish_reason", "usage"):
        assert getattr(many, attr) == getattr(one, attr), attr
    assert many.first_token_at is not None
    assert many.finish().status == "length"
    assert ChatSession().start("q", model="m").extend(["", FinishReason("stop")]) == ""


def test_markdown_export_shows_raw_html_as_text():
    from markdown_it import MarkdownIt

    s = ChatSession()
    ex = s.start("<img src=x onerror=alert(1)>", model="m")
    ex.add('Hi <script>alert(1)</script> [x](javascript:alert(1))\n\n```~~~\n<b>code</b>\n```\n')
    ex.finish()
    md = s.export_markdown()
    page = MarkdownIt("commonmark", {"html": True}).render(md)  # a viewer that allows raw HTML
    assert "<script" not in page and "<img" not in page and "href=\"javascript" not in page
    assert "&lt;b&gt;code&lt;/b&gt;" in page  # the code block is still code
