"""The conversation follows the notebook: re-runs replace, a token budget, stopped answers stay home."""
from __future__ import annotations

from tests.support.fake import answer, request
from upstage_magic.conversation import context_full_hint, history_for
from upstage_magic.errors import IncompleteStreamError
from upstage_magic.session import ChatSession
from upstage_magic.settings import Settings


def ask_in(s: ChatSession, cell: str | None, prompt: str, text: str = "ok") -> None:
    answer(s, prompt, text, cell=cell)


def users(messages) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


def test_rerunning_a_cell_replaces_its_turn_in_place_and_sends_only_what_came_before():
    s = ChatSession()
    for c in "abcd":
        ask_in(s, f"cell:{c}", f"q{c}", f"answer {c}")
    assert [t.prompt for t in s.turns] == ["qa", "qb", "qc", "qd"]
    # Re-running cell b sends only the turn before it, and replaces b where it was.
    r = request("qb again", session=s, cell="cell:b")
    assert users(r.messages) == ["qa", "qb again"]
    assert r.history_info.replaces and r.history_info.sent == 1
    ask_in(s, "cell:b", "qb again", "answer b2")
    assert [t.prompt for t in s.turns] == ["qa", "qb again", "qc", "qd"]
    assert [t.cell for t in s.turns] == ["cell:a", "cell:b", "cell:c", "cell:d"]
    # "Run all" twice gives the same conversation as once: four turns, not eight.
    for c in "abcd":
        ask_in(s, f"cell:{c}", f"q{c}", f"answer {c}")
    assert [t.prompt for t in s.turns] == ["qa", "qb", "qc", "qd"]
    assert users(request("next", session=s, cell="cell:e").messages) == ["qa", "qb", "qc", "qd", "next"]


def test_cells_without_identity_or_with_run_numbers_append():
    s = ChatSession()
    ask_in(s, None, "one")
    ask_in(s, None, "one")
    ask_in(s, "run:3", "two")
    ask_in(s, "run:3", "two")  # a run number names a turn; it never replaces one
    assert [t.prompt for t in s.turns] == ["one", "one", "two", "two"]
    assert not request("two", session=s, cell="run:3").history_info.replaces


def test_history_budget_keeps_the_newest_turns_that_fit_and_says_what_was_left_out():
    s = ChatSession()
    for i in range(6):
        ask_in(s, f"cell:{i}", f"q{i}", "word " * 200)  # ~200+ tokens per turn
    one_turn = history_for(s, budget=None)[1].tokens // 6
    settings = Settings(history_tokens=one_turn * 2 + 1)
    r = request("next", session=s, settings=settings, cell="cell:new")
    assert users(r.messages) == ["q4", "q5", "next"]
    info = r.history_info
    assert (info.sent, info.left_out, info.budget) == (2, 4, one_turn * 2 + 1)
    assert info.tokens <= info.budget
    assert "4 older left out" in info.describe()
    assert users(request("next", session=s, settings=Settings(history_tokens=0)).messages) == ["next"]
    assert len(users(request("next", session=s, settings=Settings(history_tokens=None)).messages)) == 7
    # The default budget is 4000 tokens: six ~210-token turns all fit.
    assert request("next", session=s).history_info.sent == 6


def test_context_full_hint_only_for_an_empty_stream_after_a_large_prompt():
    s = ChatSession()
    ask_in(s, "cell:a", "q", "word " * 3000)
    big = request("next", session=s, settings=Settings(history_tokens=None))
    empty = IncompleteStreamError("The server ended the answer stream without sending any event (an empty response).")
    hint = context_full_hint(empty, big)
    assert hint and "--no-history" in hint and "history_tokens" in hint and "context may be full" in hint
    assert context_full_hint(empty, request("small")) is None
    assert context_full_hint(IncompleteStreamError("cut off"), big) is None
