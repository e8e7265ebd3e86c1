"""The chat as a panel in a real JupyterLab: side panel, calm busy states, narrow layout.

One JupyterLab, one notebook: ``%upstage chat --side`` opens the chat in JupyterLab's side
area (sidecar); the cell keeps one line saying so. In the side panel: the model shows in the
header before any answer; Retry/Export/New chat are disabled on an empty chat; the panel stays
put while the notebook scrolls; an answer streams there with the caret inline at the end of
the text; questions sent meanwhile are queued (shown, one cancelled), Stop works there and the
queued question is sent next; nothing red; New chat can be undone. Then the inline view at
360 px: no horizontal overflow, a one-line status, the placeholder fits; no font glyphs in the
chrome. Computed checks, plus screenshots: artifacts/panel_{side,light_360,dark_360,dark_side}.png.
"""
from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from playwright import sync_api

from tests.support.browser import LabServer, browser_page, open_notebook, run_all_cells, wait_all_cells_ran
from tests.support.harness import EmulatorProcess
from tests.test_browser import OVERFLOW_JS, set_theme

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
SIDE = ".jupyterlab-sidecar .upstage-chat"
INLINE = ".jp-NotebookPanel:not(.lm-mod-hidden) .upstage-chat"
FONT_GLYPHS = "⏹✂⚠▍↓●○■□▶⬇"

# Text of the widget's own chrome (not answers or questions) that uses a font glyph.
GLYPHS_JS = """([chat, glyphs]) => {
    const bad = [];
    const walker = document.createTreeWalker(chat, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        if (n.parentElement.closest('.upstage-answer-body, .upstage-user-text, .upstage-reasoning-body')) continue;
        if ([...n.textContent].some(c => glyphs.includes(c))) bad.push(n.textContent);
    }
    return bad;
}"""

# Layout at the chat's current width: the status line is one line, the placeholder fits.
NARROW_JS = """(chat) => {
    const status = chat.querySelector('.upstage-chat-status');
    const lh = parseFloat(getComputedStyle(status).lineHeight) || 18;
    const input = chat.querySelector('textarea.upstage-chat-input');
    const cs = getComputedStyle(input);
    const ctx = document.createElement('canvas').getContext('2d');
    ctx.font = cs.font;
    const room = input.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    return {width: chat.getBoundingClientRect().width, statusHeight: status.getBoundingClientRect().height,
            lineHeight: lh, placeholder: ctx.measureText(input.placeholder).width, room,
            header: chat.querySelector('.upstage-chat-header').getBoundingClientRect().height};
}"""

# Where the caret is while streaming: inside the text's last block, right after its text.
CARET_JS = """(chat) => {
    const caret = chat.querySelector('.upstage-live .upstage-caret');
    if (!caret) return null;
    const block = caret.parentElement;
    const r = caret.getBoundingClientRect();
    const range = document.createRange();
    range.selectNodeContents(block);
    const rects = [...range.getClientRects()].filter(x => x.width > 0 && !caret.contains(document.elementFromPoint(x.left + 1, x.top + 1)));
    const last = rects.length ? rects[rects.length - 1] : null;
    return {parent: block.tagName, body: block.classList.contains('upstage-answer-body')
            || block.classList.contains('upstage-tail') || block.classList.contains('upstage-frozen'),
            top: r.top, lastTop: last ? last.top : null, lastBottom: last ? last.bottom : null, lead: !!caret.previousSibling};
}"""


def panel_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext upstage_magic"),
                nbformat.v4.new_code_cell("%upstage chat --side")]
    nb.cells += [nbformat.v4.new_markdown_cell(f"## Filler {i}\n\n" + "Some text to scroll past. " * 40)
                 for i in range(40)]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, path)


def prompts(chat) -> list[str]:
    return chat.locator(".upstage-turn:not(.upstage-live) .upstage-user-text").all_text_contents()


def test_chat_as_a_side_panel(tmp_path: Path) -> None:
    t0 = time.monotonic()
    root = tmp_path / "root"
    root.mkdir()
    panel_notebook(root / "panel.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    emu = EmulatorProcess(tmp_path)
    console_errors: list[str] = []
    try:
        with browser_page(LabServer, tmp_path, root, emu, ARTIFACTS, "browser_panel",
                          timeout_ms=30_000) as (lab, page):
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            open_notebook(page, lab, "panel.ipynb")
            page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()  # file browser closed
            run_all_cells(page)
            wait_all_cells_ran(page)

            # 1. Opened in the side area; the cell says so in one line.
            side = page.locator(SIDE)
            side.wait_for()
            inline = page.locator(INLINE)
            sync_api.expect(inline.locator(".upstage-elsewhere-note")).to_contain_text("open in the side panel")
            sync_api.expect(inline.locator(".upstage-chat-input")).to_be_hidden()
            sync_api.expect(side.locator("button.upstage-chat-side")).to_be_hidden()  # already there
            # The model in use, before any answer.
            model_name = side.locator(".upstage-chat-model").inner_text()
            assert model_name.strip() and "solar" in model_name.lower(), model_name
            # Nothing to retry, export or clear yet.
            for name in ("retry", "export", "export-json", "new"):
                sync_api.expect(side.locator(f"button.upstage-chat-{name}")).to_be_disabled()
            sync_api.expect(side.locator("button.upstage-chat-send")).to_be_enabled()
            page.screenshot(path=str(ARTIFACTS / "panel_side.png"))

            # 2. It stays put while the notebook scrolls.
            before = side.bounding_box()
            scroller = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer")
            scroller.hover()
            page.mouse.wheel(0, 5000)
            page.wait_for_function("el => el.scrollTop > 1500", arg=scroller.element_handle())
            after = side.bounding_box()
            assert before and after and abs(before["y"] - after["y"]) < 1 and after["height"] > 200, (before, after)
            assert side.locator("textarea.upstage-chat-input").is_visible()

            # 3. Streams there; the caret sits at the end of the text.
            emu.config(reply="echo", tokens_per_second=12)
            box = side.locator("textarea.upstage-chat-input")
            first = "first question " + " ".join(f"w{i}" for i in range(60))
            box.fill(first)
            box.press("Enter")
            live = side.locator(".upstage-live .upstage-answer-body")
            sync_api.expect(live).to_contain_text("w3")
            caret = side.evaluate(CARET_JS)
            assert caret and not caret["body"] and caret["lead"], caret  # inside the paragraph, after text
            assert caret["lastTop"] is not None and caret["top"] >= caret["lastTop"] - 2, caret
            assert caret["top"] < caret["lastBottom"], caret  # on the text's last line, not below it

            # 4. Sent meanwhile: queued (Send says Queue), one cancelled, no red anywhere.
            sync_api.expect(side.locator("button.upstage-chat-send")).to_have_text("Queue")
            box.fill("second question")
            box.press("Enter")
            sync_api.expect(box).to_have_value("")
            box.fill("third question")
            box.press("Enter")
            queued = side.locator(".upstage-queued")
            sync_api.expect(queued).to_have_count(2)
            sync_api.expect(queued.first).to_contain_text("second question")
            sync_api.expect(queued.first).to_contain_text("Queued")
            queued.nth(1).locator("button.upstage-unqueue").click()
            sync_api.expect(queued).to_have_count(1)
            sync_api.expect(box).to_have_value("third question")  # cancelled: back in the box
            box.fill("")
            assert page.locator(".upstage-chat .upstage-error").count() == 0
            assert side.locator(".upstage-hint").is_hidden()
            page.screenshot(path=str(ARTIFACTS / "panel_side_queued.png"))

            # 5. Stop works in the side panel; the queued question goes out next.
            side.locator("button.upstage-chat-stop").click()
            sync_api.expect(side.locator(".upstage-answer.upstage-status-stopped")).to_have_count(1)
            sync_api.expect(queued).to_have_count(0)
            emu.config(tokens_per_second=None)
            sync_api.expect(side.locator(".upstage-answer.upstage-status-done")).to_have_count(1, timeout=30_000)
            assert prompts(side) == [first, "second question"]
            sync_api.expect(side.locator(".upstage-chat-status")).to_contain_text("done")
            assert page.locator(".upstage-chat .upstage-error").count() == 0
            assert side.locator(".upstage-hint").is_hidden()
            for name in ("retry", "export", "export-json", "new"):
                sync_api.expect(side.locator(f"button.upstage-chat-{name}")).to_be_enabled()
            bad = page.evaluate(GLYPHS_JS, [side.element_handle(), FONT_GLYPHS])
            assert not bad, bad

            # 6. New chat can be undone.
            side.locator("button.upstage-chat-new").click()
            sync_api.expect(side.locator(".upstage-turn")).to_have_count(0)
            undo = side.locator(".upstage-undo")
            sync_api.expect(undo).to_contain_text("Chat cleared (2 turns)")
            undo.locator("button").click()
            sync_api.expect(side.locator(".upstage-turn")).to_have_count(2)
            sync_api.expect(undo).to_be_hidden()

            # 7. The inline view at 360 px: nothing sticks out, one-line status, placeholder fits.
            inline.locator("button.upstage-show-here").click()
            sync_api.expect(inline.locator("textarea.upstage-chat-input")).to_be_visible()
            results = {}
            for theme in ("JupyterLab Light", "JupyterLab Dark"):
                set_theme(page, theme)
                tag = "dark" if "Dark" in theme else "light"
                inline.evaluate("el => { el.parentElement.style.width = '360px'; }")
                inline.scroll_into_view_if_needed()
                page.wait_for_timeout(300)
                bad = inline.evaluate(OVERFLOW_JS)
                assert not bad, f"{theme} 360px: {bad[:8]}"
                m = inline.evaluate(NARROW_JS)
                results[tag] = m
                assert abs(m["width"] - 360) < 2, m
                assert m["statusHeight"] <= 1.6 * m["lineHeight"], m  # one line
                assert m["placeholder"] <= m["room"], m
                inline.screenshot(path=str(ARTIFACTS / f"panel_{tag}_360.png"))
                if tag == "dark":
                    page.screenshot(path=str(ARTIFACTS / "panel_dark_side.png"))
            set_theme(page, "JupyterLab Light")
            print("narrow layout:", results)
            bad = page.evaluate(GLYPHS_JS, [inline.element_handle(), FONT_GLYPHS])
            assert not bad, bad
    finally:
        emu.close()
        print(f"panel test: {time.monotonic() - t0:.1f} s; console errors: {console_errors[:10]}")
