"""Smoke test in Jupyter Notebook 7 (not JupyterLab): the chat widget and ``%%upstage``.

Notebook 7 on 127.0.0.1 with the emulator, Debian chromium: open notebooks/chat_widget.ipynb,
Run > Run All Cells, ask the widget a question and see the answer stream into the transcript,
and see the ``%%upstage`` cell render the emulator's Markdown answer.
Screenshot: artifacts/notebook7_chat.png. On failure: artifacts/notebook7-failure.png/.html
and the server and emulator logs.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from playwright import sync_api

from tests.support.browser import (
    NotebookServer,
    browser_page,
    open_notebook7,
    run_all_cells,
    wait_all_cells_ran,
)
from tests.support.harness import TEST_KEY, EmulatorProcess

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
HEADING = "Answer from the Upstage emulator"


def test_chat_widget_in_notebook7(tmp_path: Path) -> None:
    t_start = time.monotonic()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "chat_widget.ipynb", root / "chat_widget.ipynb")

    emu = None
    try:
        emu = EmulatorProcess(tmp_path)
        with browser_page(NotebookServer, tmp_path, root, emu, ARTIFACTS, "notebook7",
                          timeout_ms=20_000) as (server, page):
            open_notebook7(page, server, "chat_widget.ipynb")
            # Notebook 7 itself, not JupyterLab: its own app and shell, no status bar.
            assert page.evaluate("() => window.jupyterapp.name") == "Jupyter Notebook"
            assert page.locator("#main-panel").count() == 1
            assert page.locator(".jp-LabShell, .jp-StatusBar-Widget").count() == 0

            run_all_cells(page)
            chat = page.locator(".upstage-chat")
            chat.wait_for()
            wait_all_cells_ran(page)

            # The %%upstage cell: the emulator's Markdown rendered as HTML (a real heading).
            magic_cell = page.locator(".jp-CodeCell").filter(
                has=page.locator(".jp-InputArea", has_text="%%upstage"))
            sync_api.expect(magic_cell).to_have_count(1)
            magic_out = magic_cell.locator(".jp-OutputArea-output", has_text=HEADING)
            sync_api.expect(magic_out).to_have_count(1)
            sync_api.expect(magic_out).to_contain_text("You asked: In one sentence: what is a notebook widget?")
            sync_api.expect(magic_out.locator("h5.jp-toc-ignore", has_text=HEADING)).to_be_visible()
            sync_api.expect(magic_out.locator("pre code")).not_to_have_count(0)
            assert "##" not in magic_out.inner_text()  # rendered, not shown as Markdown source

            transcript = chat.locator(".upstage-chat-transcript")
            textarea = chat.locator("textarea.upstage-chat-input")
            status = chat.locator(".upstage-chat-status")
            done = chat.locator(".upstage-turn:not(.upstage-live) .upstage-answer.upstage-status-done")
            # Shared conversation: the cell's question shows up in the widget too.
            sync_api.expect(transcript).to_contain_text("what is a notebook widget?")
            n_done = done.count()

            # Paced, so the answer is seen streaming before it is done. Keyboard only:
            # Shift+Enter is a newline, Enter sends, and the focus stays in the box.
            emu.config(tokens_per_second=60)
            textarea.click()
            page.keyboard.type("What is Solar", delay=0)
            page.keyboard.press("Shift+Enter")
            page.keyboard.type("in Notebook 7?", delay=0)
            page.keyboard.press("Enter")
            sync_api.expect(chat.locator(".upstage-live")).to_have_count(1)
            sync_api.expect(status).to_contain_text("streaming")
            sync_api.expect(done).to_have_count(n_done + 1)
            sync_api.expect(done.last).to_contain_text("You asked: What is Solar in Notebook 7?")
            sync_api.expect(done.last.locator("h5", has_text=HEADING)).to_be_visible()
            sync_api.expect(status).to_contain_text("done")
            sync_api.expect(textarea).to_have_value("")
            assert emu.requests()[-1]["messages"][-1]["content"] == "What is Solar\nin Notebook 7?"
            assert page.evaluate("() => document.activeElement.matches('textarea.upstage-chat-input')")
            # The same keys again without clicking: the focus came back after the answer.
            page.keyboard.type("And again", delay=0)
            page.keyboard.press("Enter")
            sync_api.expect(done).to_have_count(n_done + 2)
            sync_api.expect(done.last).to_contain_text("You asked: And again")
            assert TEST_KEY not in page.content()

            ARTIFACTS.mkdir(exist_ok=True)
            chat.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "notebook7_chat.png"))
    finally:
        if emu is not None:
            emu.close()
        print(f"notebook7 test: {time.monotonic() - t_start:.1f} s")
