"""The chat widget and %%upstage in a real browser: JupyterLab + emulator + Debian chromium.

One test, one JupyterLab, one browser (to stay within ~1 minute): open
notebooks/chat_widget.ipynb, run it, chat from the keyboard, stop a slow answer, change a
setting, receive a hostile answer and an extreme one (a 300 KB line, 300-deep quotes and
lists, 1000 nested brackets/emphasis, svg/details/anchor/autolink tricks): no window flag may
be set, nothing may overflow the notebook, and the next answer still streams. Then the same
answers through ``%%upstage`` in a second notebook (which must still scroll and take input),
and a positive control showing that unsanitised HTML *would* run in this setup.
Screenshots: artifacts/chat_widget.png, artifacts/hostile_extreme_widget.png,
artifacts/hostile_extreme_magic.png. On failure: artifacts/browser-failure.png/.html and the
server and emulator logs.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from playwright import sync_api

from tests.support.browser import (
    LabServer,
    browser_page,
    open_notebook,
    run_all_cells,
    wait_all_cells_ran,
)
from tests.support.harness import TEST_KEY, EmulatorProcess
from upstage_magic.emulator import HOSTILE_FLAGS

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"

EXTREME_FLAGS = ("__pwned_huge", "__pwned_quote", "__pwned_list", "__pwned_bracket", "__pwned_emph",
                 "__pwned_svg", "__pwned_details", "__pwned_ahref", "__pwned_autolink", "__pwned_bt")
ALL_FLAGS = (*HOSTILE_FLAGS, *EXTREME_FLAGS)
FLAGS_JS = "() => (%s).map(f => [f, typeof window[f]])" % json.dumps(list(ALL_FLAGS))
EXTREME_END = "Extreme end."
NO_TAGS = "script, img, iframe, svg, details, object, embed, video, audio, form, input"


def extreme_reply() -> str:
    """Huge and deeply nested Markdown plus raw-HTML tricks, each setting its own window flag."""
    img = "<img src=x onerror=window.__pwned_{}=1>"
    return "\n\n".join([
        "Extreme hostile answer: nothing below may run or break the page.",
        "H" * 300_000 + img.format("huge"),  # one 300 KB line without spaces
        ">" * 300 + " 300 levels of quote " + img.format("quote"),
        "\n".join("  " * i + f"- level{i}" for i in range(300)) + " " + img.format("list"),
        "[" * 1000 + img.format("bracket") + "]" * 1000,
        "*" * 1000 + img.format("emph") + "*" * 1000 + " " + "_" * 1000 + "x" + "_" * 1000,
        '<svg onload="window.__pwned_svg=1"><circle r="40"/></svg>',
        '<details open ontoggle="window.__pwned_details=1"><summary>details</summary>body</details>',
        '<a href="javascript:window.__pwned_ahref=1">raw anchor</a>',
        "<javascript:window.__pwned_autolink=1>",
        "https://x/`<img src=x onerror=window.__pwned_bt=1>`",  # marked's URL autolink eats the backtick
        EXTREME_END,
    ])


# Geometry of the visible notebook and of the elements matching a selector (CSS pixels);
# deepRight: the right edge of the element's rightmost descendant.
GEOMETRY_JS = """(sel) => {
    const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
    const box = el => { const r = el.getBoundingClientRect();
                        const deepRight = [...el.querySelectorAll('*')].reduce(
                            (m, d) => Math.max(m, d.getBoundingClientRect().right), r.right);
                        return {left: r.left, right: r.right, width: r.width, deepRight,
                                scrollWidth: el.scrollWidth, clientWidth: el.clientWidth}; };
    return {notebook: box(nb), els: [...document.querySelectorAll(sel)].map(box),
            page: {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth}};
}"""


def assert_within_notebook(page, selector: str, *, deep: bool = False) -> dict:
    """Every element matching ``selector`` (and with ``deep``, all it contains) lies within the
    notebook's width; the page has no horizontal scroll."""
    g = page.evaluate(GEOMETRY_JS, selector)
    nb = g["notebook"]
    assert g["els"], f"nothing matches {selector}"
    for el in g["els"]:
        assert el["left"] >= nb["left"] - 1 and el["right"] <= nb["right"] + 1, (selector, el, nb)
        if deep:
            assert el["deepRight"] <= el["right"] + 1, (selector, "content overflows", el)
    assert g["page"]["scrollWidth"] <= g["page"]["innerWidth"], g["page"]
    return g


def assert_extreme_answer_harmless(page, answer) -> None:
    """The whole extreme answer shows as text (its end too); clicking its links runs nothing."""
    sync_api.expect(answer).to_contain_text(EXTREME_END)
    sync_api.expect(answer).to_contain_text("window.__pwned_bt=1")
    sync_api.expect(answer).to_contain_text('<svg onload="window.__pwned_svg=1">')
    sync_api.expect(answer).to_contain_text("level299")  # deep nesting kept as text, not dropped
    click_non_http_links(answer)
    page.wait_for_timeout(300)
    assert_no_flags(page)
    assert answer.locator(NO_TAGS).count() == 0
    assert answer.locator("a[href^='javascript' i]").count() == 0


def click_non_http_links(container) -> int:
    """Click every link that would not leave loopback (javascript:, #, relative); return how many."""
    n = 0
    for link in container.locator("a").all():
        href = (link.get_attribute("href") or "").strip().lower()
        if href.startswith(("http:", "https:", "//")):
            continue
        link.click()
        n += 1
    return n


def hostile_magic_notebook(path: Path, control_root: str) -> None:
    """%%upstage: the hostile answer, then (switched by a cell) the extreme one from extreme.txt."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext upstage_magic"),
        nbformat.v4.new_code_cell("%%upstage\nSay something hostile"),
        nbformat.v4.new_code_cell(
            "import json, pathlib, urllib.request\n"
            f"req = urllib.request.Request({control_root + '/_emulator/config'!r}, method='POST',\n"
            "    data=json.dumps({'reply': pathlib.Path('extreme.txt').read_text()}).encode(),\n"
            "    headers={'Content-Type': 'application/json'})\n"
            "urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req).read()\n"
            "print('extreme reply set')"),
        nbformat.v4.new_code_cell("%%upstage\nSay something extreme"),
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
    assert flags == {f: "undefined" for f in ALL_FLAGS}, flags


def test_chat_widget_in_jupyterlab(tmp_path: Path) -> None:
    t_start = time.monotonic()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "chat_widget.ipynb", root / "chat_widget.ipynb")
    control_notebook(root / "control.ipynb")
    extreme = extreme_reply()
    (root / "extreme.txt").write_text(extreme)

    emu = None
    timings: dict[str, float] = {}
    try:
        emu = EmulatorProcess(tmp_path)
        hostile_magic_notebook(root / "hostile_magic.ipynb", emu.root)
        with browser_page(LabServer, tmp_path, root, emu, ARTIFACTS, "browser",
                          timeout_ms=30_000) as (lab, page):
            timings["servers and browser up"] = time.monotonic() - t_start
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
            sync_api.expect(status).to_contain_text("first token")
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
            timings["hostile widget"] = time.monotonic() - t_start

            # 4b. The extreme answer: all of it shown (the end too), nothing runs, no overflow.
            emu.config(reply=extreme)
            textarea.fill("Be extreme")
            send.click()
            sync_api.expect(done).to_have_count(n_done + 3, timeout=60_000)
            last = done.last
            assert_extreme_answer_harmless(page, last)
            assert_within_notebook(page, ".upstage-chat")
            # The 300 KB line wraps and the 20+ levels of quotes/lists fit: nothing in the
            # transcript sticks out to the right or needs horizontal scrolling.
            assert_within_notebook(page, ".upstage-chat-transcript", deep=True)
            h_scrolling = page.evaluate(
                """() => [...document.querySelectorAll('.upstage-chat-transcript *')]
                   .filter(e => e.tagName !== 'PRE' && e.clientWidth && e.scrollWidth > e.clientWidth + 2)
                   .map(e => [e.tagName, e.className, e.scrollWidth, e.clientWidth])""")
            assert not h_scrolling, h_scrolling
            last.scroll_into_view_if_needed()
            chat.screenshot(path=str(ARTIFACTS / "hostile_extreme_widget.png"))
            timings["extreme widget"] = time.monotonic() - t_start

            # Still usable: the next answer streams (paced), then completes.
            emu.config(reply="echo", tokens_per_second=25)
            textarea.fill("still alive? " + " ".join(f"word{i}" for i in range(20)))
            send.click()
            sync_api.expect(streaming).to_have_count(1)
            sync_api.expect(done).to_have_count(n_done + 4)
            sync_api.expect(done.last).to_contain_text("still alive? word0")
            sync_api.expect(done.last).to_contain_text("word19")
            emu.config(tokens_per_second=None)
            assert_no_flags(page)
            assert TEST_KEY not in page.content()
            timings["follow-up"] = time.monotonic() - t_start

            # Export: a Markdown file next to the notebook and a download link.
            chat.locator("button.upstage-chat-export").click()
            sync_api.expect(chat.locator("a.upstage-export-link")).to_be_visible()
            exported = list(root.glob("upstage-chat-*.md"))
            assert len(exported) == 1 and "still alive? word0" in exported[0].read_text()

            # Screenshot: settings collapsed, a paced hostile answer as the newest turn.
            chat.locator(".upstage-chat-settings").get_by_text("Settings").click()
            emu.config(reply="hostile", tokens_per_second=60)
            textarea.fill("One more hostile answer, for the screenshot")
            send.click()
            sync_api.expect(done).to_have_count(n_done + 5)
            page.wait_for_timeout(300)
            chat.screenshot(path=str(ARTIFACTS / "chat_widget.png"))
            page.screenshot(path=str(ARTIFACTS / "chat_widget_page.png"))
            assert_no_flags(page)

            # 5. The same hostile answer, then the extreme one, through %%upstage cells.
            emu.config(tokens_per_second=None)
            open_notebook(page, lab, "hostile_magic.ipynb")
            run_all_cells(page)
            wait_all_cells_ran(page, timeout=90_000)
            output = page.locator(".jp-OutputArea-output", has_text="The end.")
            sync_api.expect(output).to_have_count(1)
            sync_api.expect(output).to_contain_text("window.__pwned_script=1")
            for link in output.locator("a").all():
                link.click()
            page.wait_for_timeout(300)
            assert_no_flags(page)
            timings["hostile magic"] = time.monotonic() - t_start
            extreme_out = page.locator(".jp-OutputArea-output", has_text=EXTREME_END)
            sync_api.expect(extreme_out).to_have_count(1)
            assert_extreme_answer_harmless(page, extreme_out)
            # JupyterLab does not wrap the 300 KB line (the output area scrolls sideways);
            # the output itself and the page stay within the notebook's width.
            assert_within_notebook(page, ".jp-Cell .jp-OutputArea")
            timings["extreme magic"] = time.monotonic() - t_start

            # The notebook still scrolls, and takes a new cell from the keyboard that streams.
            scroller = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer")
            top = scroller.evaluate("el => { el.scrollTop = 0; return el.scrollTop; }")
            scroller.hover()
            page.mouse.wheel(0, 4000)
            page.wait_for_function(
                "el => el.scrollTop > 1000", arg=scroller.element_handle())
            assert top == 0
            page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").last \
                .locator(".jp-InputArea-editor").click()
            page.keyboard.press("Escape")
            page.keyboard.press("b")  # command mode: new cell below
            page.keyboard.press("Enter")
            emu.config(reply="echo", tokens_per_second=25)
            page.keyboard.type("%%upstage")
            page.keyboard.press("Enter")
            page.keyboard.type("typed after the extreme answer " + " ".join(f"w{i}" for i in range(15)))
            page.keyboard.press("Shift+Enter")
            follow = page.locator(".jp-OutputArea-output", has_text="typed after the extreme answer")
            sync_api.expect(follow).to_have_count(1)
            sync_api.expect(follow).to_contain_text("w14")
            emu.config(tokens_per_second=None)
            assert_no_flags(page)
            extreme_out.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "hostile_extreme_magic.png"))
            timings["magic follow-up"] = time.monotonic() - t_start

            # 6. Positive control: raw HTML in a widget does run here, so the checks above can fail.
            open_notebook(page, lab, "control.ipynb")
            run_all_cells(page)
            page.wait_for_function("() => window.__pwned_control === 1")
            timings["control"] = time.monotonic() - t_start
    finally:
        if emu is not None:
            emu.close()
        timings["total"] = time.monotonic() - t_start
        print(f"browser test timings (s since start): {timings}")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "browser-timings.json").write_text(json.dumps(timings, indent=1))
