"""ChatSession / Exchange: history cap, statuses, usage, one owner, masking, export."""
from __future__ import annotations

import asyncio
import json
import sys
import threading

import pytest

from tests.support.fake import FakeProvider, Pause, answer, request
from upstage_magic.events import FinishReason, Reasoning, ToolCall, Usage
from upstage_magic.secrets import register_secret
from upstage_magic.session import ChatSession, Exchange, SessionBusyError, Turn, default_session

KEY = "test-key-SECRET123"


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def run_turn(session: ChatSession, prompt: str, text: str, **kw) -> Exchange:
    return answer(session, prompt, *[part + " " for part in text.split(" ")], **kw)


def sent(session: ChatSession, prompt: str = "next", **kw) -> list[dict]:
    return request(prompt, session=session, **kw).messages


def test_history_goes_out_with_the_system_prompt_and_the_new_question():
    s = ChatSession(system_prompt="be brief")
    run_turn(s, "q1", "a1")
    assert sent(s, "q2") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1 "},
        {"role": "user", "content": "q2"},
    ]
    assert sent(s, "q2", history=False, system="other") == [
        {"role": "system", "content": "other"}, {"role": "user", "content": "q2"}]
    # an empty system string overrides the session's and sends none
    assert sent(s, "x", system="", history=False) == [{"role": "user", "content": "x"}]


def test_max_history_caps_what_is_sent_not_what_is_kept():
    s = ChatSession(max_history=2)
    for i in range(5):
        run_turn(s, f"q{i}", f"a{i}")
    assert [t.prompt for t in s.turns] == ["q0", "q1", "q2", "q3", "q4"]  # all kept
    assert [m["content"] for m in sent(s) if m["role"] == "user"] == ["q3", "q4", "next"]
    s.max_history = 0
    assert sent(s, "z") == [{"role": "user", "content": "z"}]
    s.max_history = 10  # raising the cap brings older turns back into the context
    assert [m["content"] for m in sent(s) if m["role"] == "user"] == ["q0", "q1", "q2", "q3", "q4", "next"]


def test_error_turns_are_kept_but_not_sent_and_do_not_count_against_max_history():
    s = ChatSession(max_history=2)
    run_turn(s, "good1", "a1")
    run_turn(s, "good2", "a2")
    for i in range(3):
        answer(s, f"bad{i}", "half", RuntimeError("boom"))
    assert [t.status for t in s.turns] == ["done", "done", "error", "error", "error"]
    assert s.turns[2].error == "boom"
    assert [m["content"] for m in sent(s) if m["role"] == "user"] == ["good1", "good2", "next"]


def test_stopped_turn_is_partial_kept_and_not_sent_back():
    s = ChatSession()
    ex = Exchange(request("long one", session=s), s)

    async def stop_early() -> None:
        agen = ex.stream(FakeProvider().enqueue("partial", Pause(10), "never"))
        async for _ in agen:
            break
        await agen.aclose()

    asyncio.run(stop_early())
    assert (ex.status, ex.turn.answer) == ("stopped", "partial")
    # Kept for the record (history, exports), but the next question must not continue it.
    assert s.turns[-1].answer == "partial"
    assert [m["content"] for m in sent(s, "n")] == ["n"]


def test_exports_keep_every_turn(tmp_path):
    s = ChatSession(max_history=1)
    for i in range(3):
        run_turn(s, f"question {i}", f"answer {i}")
    md = s.export_markdown()
    assert all(f"question {i}" in md for i in range(3)) and "## 3. You" in md
    assert [t["prompt"] for t in json.loads(s.export_json())["turns"]] == [f"question {i}" for i in range(3)]


def test_export_leaves_ordinary_text_and_key_shapes_in_content_alone():
    register_secret(KEY)
    code = ("df.groupby('group_by_category'); set_up_database_connection(); "
            "open('backup_20240101.csv'); headers = 'Bearer tokenize_me_please'; "
            "example = 'up_" + "Ab3" * 10 + "'")
    s = ChatSession()
    answer(s, f"explain {KEY} please", code)
    md, js = s.export_markdown(), s.export_json()
    assert code in md and KEY not in md and "explain *** please" in md
    assert json.loads(js)["turns"][0]["answer"] == code
    assert KEY not in js


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


def test_a_one_off_is_not_recorded_but_counts_usage():
    s = ChatSession()
    turn = answer(s, "hi", "x", Usage(3, 4, 7), history=False).turn
    assert turn.answer == "x" and s.turns == []
    assert s.usage.total_tokens == 7


def test_exchange_records_text_reasoning_finish_usage_and_tool_calls_once():
    s = ChatSession()
    ex = answer(s, "p", Reasoning("thinking"), "Hel", "", "lo", ToolCall("f", '{"a": 1}', "c1"),
                FinishReason("length"), Usage(5, 2, 7))
    t = ex.turn
    assert (t.status, t.answer, t.reasoning, t.finish_reason) == ("length", "Hello", "thinking", "length")
    assert t.tool_calls == [{"id": "c1", "name": "f", "arguments": '{"a": 1}'}]
    assert ex._end("error") is t  # records once
    assert len(s.turns) == 1 and s.usage.completion_tokens == 2


def test_a_provider_that_raises_when_called_still_ends_the_turn_and_frees_the_session():
    s = ChatSession()
    ex = s.start(request("q", session=s))
    broken = FakeProvider(raise_on_call=RuntimeError("cannot start"))

    async def drive() -> None:
        async for _ in ex.stream(broken):
            pass

    with pytest.raises(RuntimeError, match="cannot start"):
        asyncio.run(drive())
    assert ex.status == "error" and s.turns[-1].error == "cannot start"
    assert s.active is None  # the next answer may start
    answer(s, "again", "fine")
    assert s.turns[-1].answer == "fine"


def test_one_recorded_answer_at_a_time():
    s = ChatSession()
    s.start(request("first", session=s))
    with pytest.raises(SessionBusyError):
        s.start(request("second", session=s))
    assert answer(s, "one-off", "ok", history=False).turn.answer == "ok"  # a one-off may run beside it


def test_an_exchange_is_changed_only_on_its_owners_thread():
    ex = Exchange(request("q"))
    errors: list[BaseException] = []

    def other() -> None:
        try:
            ex.apply(["x"])
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors and "thread" in str(errors[0]) and ex.text == ""


def test_timing_ttft_and_tokens_per_second():
    clock = FakeClock()
    ex = Exchange(request("p"), clock=clock)
    clock.t += 0.5
    ex.apply(["a"])
    clock.t += 1.0
    ex.apply(["b", Usage(1, 20, 21)])
    ex._end()
    assert ex.ttft == pytest.approx(0.5)
    assert ex.tokens_per_second == pytest.approx(20.0)
    assert ex.elapsed == pytest.approx(1.5)


def test_an_echoed_key_is_masked_before_it_is_stored_or_sent_back():
    register_secret(KEY)
    s = ChatSession()
    half = len(KEY) // 2
    answer(s, "what is my key?", "Your key is ", KEY[:half], KEY[half:], ".")  # split across deltas
    assert s.turns[0].answer == "Your key is ***."
    history = json.dumps(sent(s))
    assert KEY not in history and KEY[:12] not in history
    stopped = answer(s, "again", "It starts ", KEY[:10], RuntimeError("cut"))
    assert stopped.turn.answer == "It starts ***" and KEY[:10] not in s.export_json()


def test_on_change_and_reset_and_pop_last():
    s = ChatSession()
    seen, removed = [], []
    s.on_change(lambda sess: seen.append(len(sess.turns)))
    s.on_change(lambda sess: 1 / 0)  # a broken listener does not break recording
    s.on_remove(removed.append)
    run_turn(s, "q", "a")
    run_turn(s, "q2", "a2")
    last = s.pop_last()
    assert last is not None and last.prompt == "q2" and removed == [last]
    s.reset()
    assert seen == [1, 2, 1, 0]
    assert s.turns == [] and s.usage.total_tokens == 0 and s.pop_last() is None


def test_export_markdown_and_json(tmp_path):
    register_secret(KEY)
    s = ChatSession(system_prompt="sys")
    run_turn(s, f"what is {KEY}?", "an answer")
    answer(s, "q2", "cut", asyncio.CancelledError())  # stopped (interrupt, Stop)
    md = s.export(tmp_path / "c.md").read_text()
    assert "## 1. You" in md and "an answer" in md and "stopped" in md
    assert KEY not in md
    data = json.loads(s.export(tmp_path / "c.json").read_text())
    assert [t["status"] for t in data["turns"]] == ["done", "stopped"]
    assert "SECRET123" not in json.dumps(data)
    with pytest.raises(ValueError):
        s.export(tmp_path / "c.txt")


def test_default_session_is_shared():
    assert default_session() is default_session()


def test_markdown_export_escapes_every_field():
    from markdown_it import MarkdownIt

    s = ChatSession()
    answer(s, "<img src=x onerror=alert(1)>", 'Hi <script>alert(1)</script> [x](javascript:alert(1))\n\n'
           '```~~~\n<b>code</b>\n```\n', model="<b onmouseover=alert(1)>m</b>")
    s.load_turns([*s.turns, Turn("q", "", status="<img src=x onerror=alert(2)>", model="[m](javascript:x)")])
    md = s.export_markdown()
    page = MarkdownIt("commonmark", {"html": True}).render(md)  # a viewer that allows raw HTML
    assert "<script" not in page and "<img" not in page and "<b " not in page and "href=\"javascript" not in page
    assert "&lt;b&gt;code&lt;/b&gt;" in page  # the code block is still code


def test_a_thousand_answers_under_a_tiny_switch_interval_are_exact():
    """The magic's path: a worker thread moves raw items, this thread (the owner) applies them."""
    from upstage_magic.notebook.runner import run_stream

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        s = ChatSession(max_history=0)
        for n in range(1000):
            pieces = [f"{n}:{i} " for i in range(n % 17 + 1)]
            fake = FakeProvider().enqueue(*pieces, Usage(1, len(pieces), 1 + len(pieces)))
            ex = Exchange(request(f"q{n}", session=s, provider=fake), s)
            reads: list[str] = []
            turn = ex.run(fake, pump=run_stream, on_change=lambda ex=ex, reads=reads: reads.append(ex.text), interval=0)
            assert turn.answer == ex.text == "".join(pieces), n
            assert reads and reads[-1] == turn.answer
        assert len(s.turns) == 1000 and s.usage.completion_tokens == sum(n % 17 + 1 for n in range(1000))
    finally:
        sys.setswitchinterval(old)
