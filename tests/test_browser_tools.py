"""Tools in a real browser: the chat widget's Approve / Deny / Always buttons, and the stdin
question of ``%%upstage --tools`` answered in JupyterLab's own input box.

One JupyterLab, one Chromium. A notebook defines a tool, a tool whose result is the hostile
reply, and a ChatWidget offering both. In the widget: Approve runs the call (the block and the
answer quoting its result land in the transcript), Deny does not run it (the model is told),
Always runs it now and the next time without a card. The hostile result stays inert (no window
flag set, no live tag in the chat). Then a ``%%upstage --tools area`` cell asks on the stdin
channel; typing "y" in JupyterLab's input box runs the call.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from playwright import sync_api

from tests.support.browser import LabServer, browser_page, open_notebook, run_all_cells, wait_all_cells_ran
from tests.support.harness import EmulatorProcess
from upstage_magic.emulator import HOSTILE_FLAGS

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
CHAT = ".jp-NotebookPanel:not(.lm-mod-hidden) .upstage-chat"
FLAGS_JS = "() => ({}).map(f => [f, typeof window[f]])".format(json.dumps(list(HOSTILE_FLAGS)))

SETUP = '''\
%load_ext upstage_magic
from upstage_magic import ChatSession, ChatWidget
from upstage_magic.emulator import HOSTILE_REPLY
calls = []

def area(radius: float) -> float:
    """Area of a square of this side."""
    calls.append(radius)
    return radius * radius

def hostile() -> str:
    """Returns hostile text."""
    return HOSTILE_REPLY

w = ChatWidget(session=ChatSession(), fetch_models=False, tools=[area, hostile])
w'''


def tools_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP)]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, path)


def ask(page, chat, text: str) -> None:
    box = chat.locator("textarea.upstage-chat-input")
    box.click()
    box.fill(text)
    page.keyboard.press("Enter")


def test_tool_approval_in_the_widget_and_on_stdin(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    tools_notebook(root / "tools.ipynb")
    emu = None
    try:
        emu = EmulatorProcess(tmp_path)
        with browser_page(LabServer, tmp_path, root, emu, ARTIFACTS, "browser-tools", timeout_ms=30_000) as (lab, page):
            open_notebook(page, lab, "tools.ipynb")
            run_all_cells(page)
            chat = page.locator(CHAT)
            chat.wait_for()
            wait_all_cells_ran(page)
            done = chat.locator(".upstage-turn:not(.upstage-live) .upstage-answer.upstage-status-done")
            card = chat.locator(".upstage-live .upstage-tool-asking")

            # Approve: the call runs, its block and the answer land in the transcript.
            ask(page, chat, "Please use area")
            sync_api.expect(card).to_have_count(1)
            sync_api.expect(card).to_contain_text("area(radius=1.5)")
            sync_api.expect(card.locator("button")).to_have_text(["Approve", "Deny", "Always"])
            card.locator("button.upstage-tool-yes").click()
            sync_api.expect(done).to_have_count(1)
            turn = done.last
            sync_api.expect(turn.locator(".upstage-answer-body")).to_contain_text("The tool area returned: 2.25")
            sync_api.expect(turn.locator("details.um-tool summary")).to_contain_text("Tool area · approved")
            tool_msgs = [m for m in emu.requests()[-1]["messages"] if m["role"] == "tool"]
            assert [m["content"] for m in tool_msgs] == ["2.25"]

            # Deny: not run, the model is told.
            ask(page, chat, "Please use area again")
            sync_api.expect(card).to_have_count(1)
            card.locator("button.upstage-tool-no").click()
            sync_api.expect(done).to_have_count(2)
            sync_api.expect(done.last.locator(".upstage-answer-body")).to_contain_text("did not approve")

            # Always: runs now, and the next call of that tool needs no card.
            ask(page, chat, "Use area once more")
            sync_api.expect(card).to_have_count(1)
            card.locator("button.upstage-tool-always").click()
            sync_api.expect(done).to_have_count(3)
            n_requests = len(emu.requests())
            ask(page, chat, "And area a last time")
            sync_api.expect(done).to_have_count(4)
            assert len(emu.requests()) == n_requests + 2
            sync_api.expect(done.last.locator("details.um-tool summary")).to_contain_text("approved (always)")

            # A hostile result stays text.
            ask(page, chat, "Call hostile")
            sync_api.expect(card).to_have_count(1)
            card.locator("button.upstage-tool-yes").click()
            sync_api.expect(done).to_have_count(5)
            sync_api.expect(done.last.locator(".upstage-answer-body")).to_contain_text("Hostile test answer")
            done.last.locator("details.um-tool summary").click()
            sync_api.expect(done.last.locator(".upstage-tools")).to_contain_text("<script>window.__pwned_script=1")
            page.wait_for_timeout(300)
            assert all(kind == "undefined" for _f, kind in page.evaluate(FLAGS_JS))
            assert chat.locator("script, img, iframe").count() == 0

            # %%upstage --tools asks on the stdin channel: JupyterLab's input box.
            page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").last.click()
            page.keyboard.press("Escape")
            page.keyboard.press("b")
            page.keyboard.press("Enter")
            page.keyboard.type("%%upstage --tools area\nPlease use area", delay=0)
            page.keyboard.press("Shift+Enter")
            stdin = page.locator(".jp-Stdin-input").last
            stdin.wait_for()
            sync_api.expect(page.locator(".jp-Stdin-prompt").last).to_contain_text("area(radius=1.5)")
            stdin.fill("y")
            stdin.press("Enter")
            out = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(1)  # Shift+Enter added one below
            sync_api.expect(out).to_contain_text("The tool area returned: 2.25")
            sync_api.expect(out.locator("details.um-tool summary")).to_contain_text("Tool area · approved")
            assert all(kind == "undefined" for _f, kind in page.evaluate(FLAGS_JS))
    finally:
        if emu is not None:
            emu.close()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
