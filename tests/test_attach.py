"""Attachments (files, cells) as one bounded block, and where plan puts it. Pure units."""
from __future__ import annotations

from pathlib import Path

import pytest

from upstage_magic.attach import (
    Piece,
    build_block,
    cell_pieces,
    cut_to_tokens,
    notebook_sources,
    parse_cell_range,
    read_table,
    read_text,
)
from upstage_magic.context import estimate_tokens
from upstage_magic.document import DocumentError
from upstage_magic.request import Ask, plan
from upstage_magic.secrets import register_secret
from upstage_magic.settings import Settings


def test_block_respects_budget_and_says_what_was_cut() -> None:
    pieces = [Piece("file a.txt", "alpha " * 2000), Piece("file b.txt", "short b")]
    block = build_block(pieces, 300)
    assert block.tokens <= 300 and estimate_tokens(block.text) <= 300
    assert "(cut to fit the context budget)" in block.text
    assert "short b" in block.text
    assert block.cut == ["file a.txt: cut to fit"]
    assert "file a.txt (cut)" in block.label


@pytest.mark.parametrize("budget", [100, 150, 400, 2000, 9000])
def test_many_pieces_never_exceed_budget(budget: int) -> None:
    pieces = [Piece(f"cell {n}", f"x = {n}\n" * (n * 30), greedy=True) for n in range(40, 0, -1)]
    block = build_block(pieces, budget)
    assert estimate_tokens(block.text) <= budget
    if len(block.items) < 40:
        assert "left out" in block.label and "Left out, over the context budget" in block.text


def test_cells_newest_first_take_what_they_need() -> None:
    entries = [(5, "c = 3", "3"), (4, "b = 2", ""), (3, "x" * 4000, "")]
    block = build_block(cell_pieces(entries), 400)
    titles = [it["title"] for it in block.items]
    assert titles[:2] == ["cell 5", "cell 4"]
    assert not block.items[0]["cut"] and "# Out[5]:\n3" in block.text


def test_secrets_are_masked_in_attached_text() -> None:
    register_secret("sk-attach-secret-4242")
    block = build_block([Piece("file k.txt", "key=sk-attach-secret-4242")], 500)
    assert "sk-attach-secret-4242" not in block.text


def test_cut_to_tokens() -> None:
    text = "line one\n" * 100
    cut = cut_to_tokens(text, 50)
    assert estimate_tokens(cut) <= 50 and text.startswith(cut)
    assert cut_to_tokens("short", 50) == "short"
    assert estimate_tokens(cut_to_tokens("한국어" * 100, 30)) <= 30


def test_notebook_sources_skip_current_and_empty() -> None:
    inputs = ["", "a = 1", "", "a", "%%upstage\nwhat is a?", "current"]
    entries = notebook_sources(inputs, {3: 1}, current=5)
    assert [n for n, _, _ in entries] == [4, 3, 1]
    assert entries[1][2] == "1"
    assert [n for n, _, _ in notebook_sources(inputs, {}, current=5, cells=(1, 3))] == [3, 1]


def test_answers_only_when_asked() -> None:
    entries = [(4, "%%upstage\nwhat is a?", "")]
    assert "answer" not in cell_pieces(entries)[0].text
    assert "# answer:\nA is 1." in cell_pieces(entries, {"what is a?": "A is 1."})[0].text


@pytest.mark.parametrize(("spec", "expected"), [("3-7", (3, 7)), ("5", (5, 5)), (" 2-2 ", (2, 2))])
def test_cell_range(spec: str, expected: tuple[int, int]) -> None:
    assert parse_cell_range(spec) == expected


@pytest.mark.parametrize("spec", ["a-b", "7-3", "0-2", ""])
def test_bad_cell_range(spec: str) -> None:
    with pytest.raises(ValueError, match="--cells"):
        parse_cell_range(spec)


def test_read_text_and_notebook_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print('{name}')\n")
    assert read_text(tmp_path / "a.py").text == "print('{name}')\n"
    nb = '{"cells": [{"cell_type": "code", "source": ["x = 1\\n", "y = 2"]}]}'
    (tmp_path / "n.ipynb").write_text(nb)
    assert "x = 1\ny = 2" in read_text(tmp_path / "n.ipynb").text
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02")
    with pytest.raises(DocumentError, match="binary"):
        read_text(tmp_path / "bin.txt")
    with pytest.raises(DocumentError, match="no such file"):
        read_text(tmp_path / "nope.md")


def test_read_table_summarises_like_context(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("city,pop\nSeoul,9.7\nBusan,3.4\n")
    piece = read_table(tmp_path / "t.csv", 500)
    assert "city" in piece.text and "Seoul" in piece.text and "2×2" in piece.info


def test_plan_puts_attachments_first_and_never_fills_them() -> None:
    block = build_block([Piece("file t.md", "hello {name} and {secret_var}")], 500)
    ask = Ask("Explain {name}", namespace={"name": "Ada", "secret_var": "S"}, attachments=block, history=False)
    request = plan(Settings(), ask)
    user = request.messages[-1]["content"]
    assert user.startswith(block.text) and user.endswith("Explain Ada")
    assert "hello {name} and {secret_var}" in user
    assert "hello {name}" in request.describe()
    row = request.for_item({"x": 1}, 0)
    assert row.messages[-1]["content"].startswith(block.text)


async def test_turn_records_what_was_attached() -> None:
    from tests.support.fake import FakeProvider
    from upstage_magic.session import ChatSession, Exchange

    block = build_block([Piece("file t.md", "hello", "5 bytes"), Piece("file big.txt", "x " * 5000, "10 KB")], 300)
    request = plan(Settings(), Ask("q", attachments=block))
    exchange = Exchange(request, ChatSession())
    fake = FakeProvider().enqueue(["fine"])
    async for _ in exchange.stream(fake):
        pass
    turn = exchange.turn
    assert turn is not None and turn.answer == "fine"
    assert [a["title"] for a in turn.attachments] == ["file t.md", "file big.txt"]
    assert turn.attachments[0]["info"] == "5 bytes" and turn.attachments[1]["cut"] is True
    assert turn.to_dict()["attachments"] == turn.attachments
