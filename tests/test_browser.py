"""The chat widget and %%upstage in a real browser: JupyterLab + emulator + Debian chromium.

One test, one JupyterLab, one browser (to stay within ~1 minute): open
notebooks/chat_widget.ipynb, run it, chat from the keyboard, stop a slow answer, change a
setting, receive a hostile answer (no window flag may be set), then the same hostile answer
through ``%%upstage`` in a second notebook, and a positive control showing that unsanitised
HTML *would* run in this setup. Screenshot: artifacts/chat_widget.png. On failure:
artifacts/browser-failure.png/.html and the server and emulator logs.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from playwright import sync_api

from browser_support import (
    TEST_KEY,
    EmulatorProcess,
    LabServer,
    launch_chromium,
    open_notebook,
    run_all_cells,
    save_diagnostics,
    wait_all_cells_ran,
)
from upstage_magic.emulator import HOSTILE_FLAGS

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
FLAGS_JS = "() => (%s).map(f => [f, typeof window[f]])" % json.dumps(list(HOSTILE_FLAGS))


def hostile_magic_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext upstage_magic"),
        nbformat.v4.new_code_cell("%%upstage\nSay something hostile"),
    ]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, path)


def control_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import ipywidgets\nipywidgets.HTML('<img src=x onerror=\"window.__pwned_control=1\">')")]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, path)


def assert_no_flags(page) -> None:
    flags = dict(page.evaluate(FLAGS_JS))
    assert flags == {f: "undefined" for f in HOSTILE_FLAGS}, flags


def test_chat_widget_in_jupyterlab(tmp_path: Path) -> None:
    t_start = time.monotonic()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "chat_widget.ipynb", root / "chat_widget.ipynb")
    hostile_magic_notebook(root / "hostile_magic.ipynb")
    control_notebook(root / "control.ipynb")

    emu = lab = page = None
    timings: dict[str, float] = {}
    try:
        emu = EmulatorProcess(tmp_path)
        lab = LabServer(tmp_path, root, env={"UPSTAGE_BASE_URL": emu.base_url, "UPSTAGE_API_KEY": TEST_KEY})
        timings["servers up"] = time.monotonic() - t_start
        with sync_api.sync_playwright() as pw:
            ctx = launch_chromium(pw, tmp_path / "chromium-profile")
            try:
                page = ctx.new_page()
                page.set_default_timeout(30_000)
                open_notebook(page, lab, "chat_widget.ipynb")
                run_all_cells(page)
                chat = page.locator(".upstage-chat")
                chat.wait_for()
                wait_all_cells_ran(page)
                timings["notebook ran"] = time.monotonic() - t_start
                transcript = chat.locator(".upstage-chat-transcript")
                textarea = chat.locator(".upstage-chat-input textarea")
                status = chat.locator(".upstage-chat-status")
                send = chat.locator("button.upstage-chat-send")
                stop = chat.locator("button.upstage-chat-stop")
                done = chat.locator(".upstage-answer.upstage-status-done")

                # The %%upstage cell below the widget shares the conversation: it shows up.
                sync_api.expect(transcript).to_contain_text("what is a notebook widget?")
                n_done = done.count()
                assert stop.is_disabled()

                # 1. Keyboard: type, Tab to Send, Enter. The answer streams in.
                textarea.click()
                textarea.fill("What is Solar?")
                page.keyboard.press("Tab")
                page.keyboard.press("Enter")
                sync_api.expect(transcript).to_contain_text("You asked: What is Solar?")
                sync_api.expect(done).to_have_count(n_done + 1)
                sync_api.expect(textarea).to_have_value("")
                sync_api.expect(textarea).to_be_enabled()
                sync_api.expect(status).to_contain_text("done")
                sync_api.expect(status).to_contain_text("TTFT")
                timings["answer 1"] = time.monotonic() - t_start

                # 2. A slow answer: the input is disabled while it streams; Stop keeps the partial text.
                emu.config(tokens_per_second=8, answer_tokens=400)
                textarea.fill("Tell me a long story")
                send.click()
                streaming = chat.locator(".upstage-answer.upstage-status-streaming")
                sync_api.expect(streaming).to_have_count(1)
                sync_api.expect(textarea).to_be_disabled()
                sync_api.expect(stop).to_be_enabled()
                page.wait_for_function(
                    "() => { const el = document.querySelector('.upstage-status-streaming');"
                    " return el && el.textContent.length > 120; }")
                stop.click()
                stopped = chat.locator(".upstage-answer.upstage-status-stopped")
                sync_api.expect(stopped).to_have_count(1)
                sync_api.expect(stopped).to_contain_text("stopped: partial answer")
                sync_api.expect(status).to_contain_text("stopped")
                sync_api.expect(stop).to_be_disabled()
                sync_api.expect(textarea).to_be_enabled()
                timings["stopped"] = time.monotonic() - t_start

                # 3. Settings reach the request: max tokens 5 cuts the answer.
                emu.config(tokens_per_second=None, answer_tokens=None)
                chat.locator(".upstage-chat-settings").get_by_text("Settings").click()
                max_tokens = chat.locator(".upstage-chat-settings .widget-inline-hbox",
                                          has_text="Max tokens").locator("input")
                max_tokens.fill("5")
                max_tokens.press("Enter")
                textarea.fill("Short please")
                send.click()
                sync_api.expect(chat.locator(".upstage-answer.upstage-status-length")).to_have_count(1)
                assert emu.requests()[-1]["max_tokens"] == 5
                max_tokens.fill("0")
                max_tokens.press("Enter")

                # 4. A hostile answer renders as text; nothing runs, even when its link is clicked.
                emu.config(reply="hostile")
                textarea.fill("Be hostile")
                send.click()
                sync_api.expect(done).to_have_count(n_done + 2)
                last = done.last
                sync_api.expect(last).to_contain_text("window.__pwned_script=1")
                sync_api.expect(last).to_contain_text('<script>alert("kept as code")</script>')
                for link in last.locator("a").all():
                    link.click()
                page.wait_for_timeout(300)
                assert_no_flags(page)
                assert last.locator("script, img, iframe").count() == 0
                # Still usable.
                emu.config(reply="echo")
                textarea.fill("still alive?")
                send.click()
                sync_api.expect(done).to_have_count(n_done + 3)
                sync_api.expect(done.last).to_contain_text("still alive?")
                assert_no_flags(page)
                assert TEST_KEY not in page.content()
                timings["hostile widget"] = time.monotonic() - t_start

                # Export: a Markdown file next to the notebook and a download link.
                chat.locator("button.upstage-chat-export").click()
                sync_api.expect(chat.locator("a.upstage-export-link")).to_be_visible()
                exported = list(root.glob("upstage-chat-*.md"))
                assert len(exported) == 1 and "still alive?" in exported[0].read_text()

                # Screenshot: settings collapsed, a paced hostile answer as the newest turn.
                chat.locator(".upstage-chat-settings").get_by_text("Settings").click()
                emu.config(reply="hostile", tokens_per_second=60)
                textarea.fill("One more hostile answer, for the screenshot")
                send.click()
                sync_api.expect(done).to_have_count(n_done + 4)
                page.wait_for_timeout(300)
                chat.screenshot(path=str(ARTIFACTS / "chat_widget.png"))
                page.screenshot(path=str(ARTIFACTS / "chat_widget_page.png"))
                assert_no_flags(page)

                # 5. The same hostile answer through %%upstage in a notebook cell.
                open_notebook(page, lab, "hostile_magic.ipynb")
                run_all_cells(page)
                wait_all_cells_ran(page)
                output = page.locator(".jp-OutputArea-output", has_text="The end.")
                sync_api.expect(output).to_have_count(1)
                sync_api.expect(output).to_contain_text("window.__pwned_script=1")
                for link in output.locator("a").all():
                    link.click()
                page.wait_for_timeout(300)
                assert_no_flags(page)
                timings["hostile magic"] = time.monotonic() - t_start

                # 6. Positive control: raw HTML in a widget does run here, so the checks above can fail.
                open_notebook(page, lab, "control.ipynb")
                run_all_cells(page)
                page.wait_for_function("() => window.__pwned_control === 1")
                timings["control"] = time.monotonic() - t_start
            except BaseException:
                saved = save_diagnostics(page, lab, emu, ARTIFACTS, "browser")
                print("browser test diagnostics:", *map(str, saved), sep="\n  ")
                if lab is not None:
                    print("--- jupyterlab log tail ---\n" + lab.log_tail(4000))
                raise
            finally:
                ctx.close()
    finally:
        if lab is not None:
            lab.close()
        if emu is not None:
            emu.close()
        timings["total"] = time.monotonic() - t_start
        print(f"browser test timings (s since start): {timings}")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "browser-timings.json").write_text(json.dumps(timings, indent=1))
