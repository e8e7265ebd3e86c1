"""The chat widget and %%upstage in a real browser: JupyterLab + emulator + Debian chromium.

One test, one JupyterLab, one browser (to stay within ~1 minute): open
notebooks/chat_widget.ipynb and run it; then, in the chat widget, from the keyboard: 20
questions typed at 0 ms per key and sent with Enter arrive exactly (the focus is back in the box
after each answer), Shift+Enter is a newline, Up recalls, Escape stops a slow answer (partial
kept); Settings reach the request; an error shows kind/message/what to do and Retry works; a
rich answer has bordered tables (highlighted code and MathML with the new renderer) and Copy
puts the exact code on the clipboard; the hostile answer (also inside tables, math and code)
and an extreme one (a 300 KB line, 300-deep quotes and lists, 1000 nested brackets/emphasis,
svg/details/anchor/autolink tricks) stay inert; the transcript follows the stream unless
scrolled up (then "jump to latest"); Export downloads in the browser; no horizontal overflow at
1200 and 360 px, text contrast >= 4.5 in JupyterLab Light and Dark; after a kernel restart the
widget says so. Then the same answers through ``%%upstage`` in a second notebook (which must
still scroll and take input), and a positive control showing that unsanitised HTML *would* run
in this setup.
Screenshots: artifacts/chat_widget_{light,dark}_{1200,360}.png (with UPSTAGE_UPDATE_DOCS=1 also
docs/chat_widget_{light,dark}.png for the README), artifacts/chat_widget_restarted.png,
artifacts/hostile_extreme_magic.png. On failure: artifacts/browser-failure.png/.html and the
server and emulator logs.
"""
from __future__ import annotations

import json
import os
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
from upstage_magic.notebook.widget import MAX_SHOWN

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"

EXTREME_FLAGS = ("__pwned_huge", "__pwned_quote", "__pwned_list", "__pwned_bracket", "__pwned_emph",
                 "__pwned_svg", "__pwned_details", "__pwned_ahref", "__pwned_autolink", "__pwned_bt")
ALL_FLAGS = (*HOSTILE_FLAGS, *EXTREME_FLAGS)
FLAGS_JS = "() => ({}).map(f => [f, typeof window[f]])".format(json.dumps(list(ALL_FLAGS)))
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


def saved_widget_notebook(path: Path, emu: EmulatorProcess, tmp_path: Path) -> None:
    """A notebook run by nbclient with its widget state saved: one chat turn in the widget."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from upstage_magic import ChatSession, ChatWidget\n"
                                  "w = ChatWidget(session=ChatSession(), fetch_models=False)\n"
                                  "t = w.send('A question saved with the notebook')\nw"),
        # nbclient records only the comm messages of the cell it runs (a browser records all):
        # re-send the finished state from this cell so the saved notebook has it.
        nbformat.v4.new_code_cell("await t\nw.send_state()\nprint([x.status for x in w.session.turns])"),
    ]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPSTAGE_")}
    env.update(PYTHONPATH=str(REPO), UPSTAGE_BASE_URL=emu.base_url, UPSTAGE_API_KEY=TEST_KEY,
               IPYTHONDIR=str(tmp_path / "nbclient-ipython"))
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute(env=env)
    assert "['done']" in nb.cells[1].outputs[0]["text"]
    state = json.dumps(nb.metadata["widgets"])
    assert "A question saved with the notebook" in state and TEST_KEY not in state
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


# ---------------------------------------------------------------------------- the chat widget
CHAT = ".jp-NotebookPanel:not(.lm-mod-hidden) .upstage-chat"
CODE = "def f(x):\n    return x < 1 and '<b>' != \"&amp;\"  # exact, tabs\tand all"
RICH_REPLY = "\n\n".join([
    "Rich answer: a table, code and math.",
    "| Speed | Memory |\n|---|---|\n| fast | small |\n| slow <img src=x onerror=window.__pwned_table=1> | big |",
    "```python\n" + CODE + "\n```",
    "Inline math $\\bar{x} = \\frac{1}{n}$ and a hostile one $<img src=x onerror=window.__pwned_math=1>$.",
    "$$\n\\sum_{i=1}^{n} x_i\n$$",
    "```html\n<img src=x onerror=window.__pwned_code=1>\n```",
    "Rich end.",
])
RICH_FLAGS = ("__pwned_table", "__pwned_math", "__pwned_code")
SHOWCASE_REPLY = """Here is a short comparison:

| Model | Context | Best for |
|---|---|---|
| solar-pro3 | 64K tokens | reasoning, long documents |
| solar-mini | 32K tokens | fast, cheap answers |

Calling it from Python:

```python
from upstage_magic import ChatSession

chat = ChatSession()
print(len(chat.turns))  # 0
```

The mean of $n$ values is $\\bar{x} = \\frac{1}{n}\\sum_{i=1}^{n} x_i$."""
WIDE_LINE = "```\n" + "wide_code_line_" * 40 + "\n```\n\nAfter the wide line."

# Contrast of an element's text against its effective background (WCAG formula), with
# translucent colours blended over the backgrounds behind them.
CONTRAST_JS = """(el) => {
    const parse = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return [0, 0, 0, 0];
        const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
        return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
    const blend = (fg, bg) => [0, 1, 2].map(i => fg[i] * fg[3] + bg[i] * (1 - fg[3])).concat([1]);
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];
    for (const l of layers.reverse()) bg = blend(l, bg);
    const fg = blend(parse(getComputedStyle(el).color), bg);
    const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
                       return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
    const a = lum(fg), b = lum(bg);
    return {ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05), fg: getComputedStyle(el).color,
            bg: 'rgb(' + bg.slice(0, 3).map(Math.round).join(',') + ')'};
}"""

# Anything inside the widget that sticks out of it or scrolls sideways (code blocks, tables
# and display math may scroll inside themselves; nothing else may).
OVERFLOW_JS = """(chat) => {
    const r = chat.getBoundingClientRect();
    const scrollers = 'pre, table, math';
    const bad = [];
    if (chat.scrollWidth > chat.clientWidth + 1) bad.push(['chat scrolls', chat.scrollWidth, chat.clientWidth]);
    const out = chat.closest('.jp-OutputArea-output');
    if (out && out.scrollWidth > out.clientWidth + 1) bad.push(['output scrolls', out.scrollWidth, out.clientWidth]);
    for (const e of chat.querySelectorAll('*')) {
        if (e.closest(scrollers) && !e.matches(scrollers)) continue;
        const b = e.getBoundingClientRect();
        if (!b.width) continue;
        if (b.right > r.right + 1 || b.left < r.left - 1) bad.push([e.tagName, e.className, b.left, b.right, r.left, r.right]);
        // (one-line text cut with an ellipsis, its full text in a title, is not overflow)
        if (!e.matches(scrollers) && e.clientWidth && e.scrollWidth > e.clientWidth + 1
            && getComputedStyle(e).overflowX !== 'visible' && getComputedStyle(e).textOverflow !== 'ellipsis')
            bad.push(['scrolls', e.tagName, e.className, e.scrollWidth, e.clientWidth]);
    }
    return bad;
}"""


def set_theme(page, name: str) -> None:
    """Settings > Theme > name, through the menu like a user."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text=name).first.click()
    light = "false" if "Dark" in name else "true"
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'")
    page.wait_for_timeout(400)


def contrasts(page, chat) -> dict[str, dict]:
    """Text contrast of the user's bubble, an answer, an error and the status line."""
    targets = {
        "user bubble": chat.locator(".upstage-user-text").last,
        "answer": chat.locator(".upstage-answer-body p").last,
        "answer meta": chat.locator(".upstage-answer-meta").last,
        "error kind": chat.locator(".upstage-error-kind").last,
        "error message": chat.locator(".upstage-error-message").last,
        "error hint": chat.locator(".upstage-error-hint").last,
        "status": chat.locator(".upstage-chat-status"),
        "input": chat.locator("textarea.upstage-chat-input"),
        "send button": chat.locator("button.upstage-chat-send"),
    }
    return {name: loc.evaluate(CONTRAST_JS) for name, loc in targets.items()}


AT_BOTTOM_JS = """(s) => new Promise((ok, fail) => {
    let n = 0;  // the widget scrolls in the next animation frame: allow a second's worth
    const check = () => s.scrollHeight - s.scrollTop - s.clientHeight < 50 ? ok(true)
        : (++n > 60 ? fail(new Error('the transcript is not at the bottom')) : requestAnimationFrame(check));
    check();
})"""


# Records the height each turn has when chat.js marks it as leaving the transcript.
DOOMED_WATCH_JS = """(chat) => { window.__doomed = [];
    new MutationObserver((records) => { for (const r of records) {
        if (r.target.classList.contains('upstage-doomed') && !(r.oldValue || '').includes('upstage-doomed'))
            window.__doomed.push(r.target.getBoundingClientRect().height); } })
      .observe(chat.querySelector('.upstage-turns'),
               {subtree: true, attributes: true, attributeFilter: ['class'], attributeOldValue: true}); }"""


def wait_at_bottom(chat) -> None:
    """The transcript shows its newest message (it follows the stream)."""
    chat.locator(".upstage-chat-scroll").evaluate(AT_BOTTOM_JS)


def focused_is_input(page) -> bool:
    return page.evaluate("() => !!document.activeElement && document.activeElement.matches('textarea.upstage-chat-input')")


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
    console_errors: list[str] = []
    try:
        emu = EmulatorProcess(tmp_path)
        hostile_magic_notebook(root / "hostile_magic.ipynb", emu.root)
        saved_widget_notebook(root / "saved.ipynb", emu, tmp_path)
        with browser_page(LabServer, tmp_path, root, emu, ARTIFACTS, "browser",
                          timeout_ms=30_000) as (lab, page):
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.context.grant_permissions(["clipboard-read", "clipboard-write"])
            timings["servers and browser up"] = time.monotonic() - t_start
            open_notebook(page, lab, "chat_widget.ipynb")
            run_all_cells(page)
            chat = page.locator(CHAT)
            chat.wait_for()
            wait_all_cells_ran(page)
            timings["notebook ran"] = time.monotonic() - t_start
            transcript = chat.locator(".upstage-chat-transcript")
            textarea = chat.locator("textarea.upstage-chat-input")
            status = chat.locator(".upstage-chat-status")
            stop = chat.locator("button.upstage-chat-stop")
            done = chat.locator(".upstage-turn:not(.upstage-live) .upstage-answer.upstage-status-done")
            live = chat.locator(".upstage-live")

            # The %%upstage cell below the widget shares the conversation: it shows up.
            sync_api.expect(transcript).to_contain_text("what is a notebook widget?")
            sync_api.expect(chat.locator(".upstage-chat-banner")).to_be_hidden()
            n_done = done.count()
            assert stop.is_disabled()

            # 1. Keyboard first: type at 0 ms per key, Enter sends, 20 times. Typing goes to
            # whatever has the focus, so every question arriving intact also proves the
            # focus is back in the box after each send and answer.
            emu.config(reply="echo")
            textarea.click()
            questions = [f"q{i:02d} fast: the quick brown fox {i} <b>&amp; ünïcode" for i in range(20)]
            for i, q in enumerate(questions):
                page.keyboard.type(q, delay=0)
                page.keyboard.press("Enter")
                sync_api.expect(done).to_have_count(n_done + i + 1)
                sync_api.expect(textarea).to_have_value("")
                page.wait_for_function("() => document.activeElement && "
                                       "document.activeElement.matches('textarea.upstage-chat-input')")
            sent = [r["messages"][-1]["content"] for r in emu.requests()[-20:]]
            assert sent == questions
            n_done += 20
            sync_api.expect(done.last.locator(".upstage-answer-body")).to_contain_text("q19 fast: the quick brown fox 19 <b>")
            sync_api.expect(status).to_contain_text("done")
            timings["20 fast questions"] = time.monotonic() - t_start

            # Past MAX_SHOWN turns the oldest leave the page: out of view at once (no height
            # from the moment they are marked), then out of the DOM, and the note says so.
            chat.evaluate(DOOMED_WATCH_JS)
            shown = chat.locator(".upstage-turn:not(.upstage-live) .upstage-user-text")
            before = shown.all_text_contents()
            assert len(before) == n_done
            extra = MAX_SHOWN - n_done + 2
            for i in range(extra):
                textarea.fill(f"filler {i}")
                textarea.press("Enter")
                sync_api.expect(done.last.locator(".upstage-answer-body")).to_contain_text(f"filler {i}")
            sync_api.expect(done).to_have_count(MAX_SHOWN)
            sync_api.expect(chat.locator(".upstage-hidden-note")).to_have_text(
                f"{n_done + extra - MAX_SHOWN} earlier turns not shown here (Export has the whole conversation).")
            doomed = page.evaluate("() => window.__doomed")
            assert len(doomed) == n_done + extra - MAX_SHOWN and set(doomed) == {0}, doomed
            sync_api.expect(chat.locator(".upstage-turn")).to_have_count(MAX_SHOWN)  # the two are gone
            assert shown.all_text_contents() == before[2:] + [f"filler {i}" for i in range(extra)]
            wait_at_bottom(chat)
            n_done = MAX_SHOWN

            # New chat empties the transcript (and the shared conversation).
            chat.locator("button.upstage-chat-new").click()
            sync_api.expect(done).to_have_count(0)
            sync_api.expect(transcript).to_contain_text("shared with %%upstage")
            n_done = 0
            textarea.click()

            # Shift+Enter is a newline; Up in an empty box recalls the last question.
            page.keyboard.type("line one", delay=0)
            page.keyboard.press("Shift+Enter")
            page.keyboard.type("line two", delay=0)
            assert textarea.input_value() == "line one\nline two"
            page.keyboard.press("Enter")
            sync_api.expect(done).to_have_count(n_done + 1)
            n_done += 1
            assert emu.requests()[-1]["messages"][-1]["content"] == "line one\nline two"
            page.keyboard.press("ArrowUp")
            sync_api.expect(textarea).to_have_value("line one\nline two")
            textarea.fill("")
            assert focused_is_input(page)

            # 2. A slow answer: Escape stops it; the partial answer is kept.
            emu.config(reply="markdown", tokens_per_second=20, answer_tokens=400)
            page.keyboard.type("Tell me a long story", delay=0)
            page.keyboard.press("Enter")
            sync_api.expect(live).to_have_count(1)
            sync_api.expect(stop).to_be_enabled()
            page.wait_for_function(
                "() => { const el = document.querySelector('.upstage-live .upstage-answer-body');"
                " return el && el.textContent.length > 60; }")
            page.keyboard.press("Escape")
            stopped = chat.locator(".upstage-answer.upstage-status-stopped")
            sync_api.expect(stopped).to_have_count(1)
            sync_api.expect(stopped).to_contain_text("stopped: partial answer")
            sync_api.expect(status).to_contain_text("stopped")
            sync_api.expect(stop).to_be_disabled()
            assert focused_is_input(page)
            timings["stopped"] = time.monotonic() - t_start

            # 3. Settings reach the request: max tokens 5 cuts the answer.
            emu.config(tokens_per_second=None, answer_tokens=None)
            chat.locator(".upstage-chat-settings > summary").click()
            max_tokens = chat.locator("input.upstage-set-max-tokens")
            max_tokens.fill("5")
            max_tokens.press("Tab")
            sync_api.expect(status).to_contain_text("settings saved")
            textarea.fill("Short please")
            textarea.press("Enter")
            sync_api.expect(chat.locator(".upstage-answer.upstage-status-length")).to_have_count(1)
            assert emu.requests()[-1]["max_tokens"] == 5
            max_tokens.fill("")
            max_tokens.press("Tab")
            sync_api.expect(status).to_contain_text("settings saved")
            chat.locator(".upstage-chat-settings > summary").click()

            # 3b. Reasoning: hostile text in the reasoning (a leading <think> block) shows in
            # its own Thinking block, collapsed once the answer is in, and runs nothing.
            emu.config(reply="<think>Thinking <img src=x onerror=\"window.__pwned_think=1\"> "
                             "[x](javascript:window.__pwned_think_link=1)</think>\n\nThe answer.")
            textarea.fill("Think first")
            textarea.press("Enter")
            last = chat.locator(".upstage-answer").last
            sync_api.expect(last).to_contain_text("The answer.")
            thinking = last.locator("details.upstage-reasoning")
            sync_api.expect(thinking).to_be_visible()
            assert thinking.evaluate("d => !d.open"), "the Thinking block is still open after the answer"
            assert "Thinking" in thinking.inner_text() or "onerror" in thinking.evaluate("d => d.textContent")
            assert "The answer." not in thinking.evaluate("d => d.textContent")  # kept apart from the answer
            thinking.locator("summary").click()
            page.wait_for_timeout(300)
            assert page.evaluate("() => [window.__pwned_think, window.__pwned_think_link]") == [None, None]
            emu.config(reply="markdown")
            n_done = done.count()

            # 4. An error: one form (kind, message, what to do) and a Retry that works.
            emu.fault({"kind": "status", "status": 400, "message": "Slow down please", "times": 1})
            textarea.fill("This one fails")
            textarea.press("Enter")
            error = chat.locator(".upstage-error").last
            sync_api.expect(error.locator(".upstage-error-kind")).to_have_text("BadRequestError")
            sync_api.expect(error.locator(".upstage-error-message")).to_contain_text("Slow down please")
            sync_api.expect(error.locator(".upstage-error-hint")).to_contain_text("What to do")
            assert chat.locator(".upstage-error").count() == 1
            error.locator("button.upstage-retry-turn").click()
            sync_api.expect(done).to_have_count(n_done + 1)
            n_done += 1
            sync_api.expect(done.last).to_contain_text("You asked: This one fails")
            sync_api.expect(chat.locator(".upstage-error")).to_have_count(0)
            # Leave one error turn for the contrast checks.
            emu.fault({"kind": "status", "status": 400, "message": "Slow down please", "times": 1})
            textarea.fill("This one fails too")
            textarea.press("Enter")
            sync_api.expect(chat.locator(".upstage-error")).to_have_count(1)
            timings["error and retry"] = time.monotonic() - t_start

            # 5. Rich answer: table borders and padding, highlighted code, MathML; hostile bits
            # inside the table, math and code stay text. Copy puts the exact code on the clipboard.
            emu.config(reply=RICH_REPLY)
            textarea.fill("Show me everything")
            textarea.press("Enter")
            sync_api.expect(done).to_have_count(n_done + 1)
            n_done += 1
            rich = done.last
            sync_api.expect(rich).to_contain_text("Rich end.")
            cell = rich.locator("td").first
            style = cell.evaluate("e => { const s = getComputedStyle(e); return [s.borderTopWidth, s.borderTopStyle, s.paddingLeft]; }")
            assert style[0] != "0px" and style[1] != "none" and float(style[2].rstrip("px")) >= 3, style
            from upstage_magic import render as render_module
            if hasattr(render_module, "render_html"):  # the new renderer: highlighting and MathML
                assert rich.locator("pre span[class]").count() > 0
                assert rich.locator("math").count() >= 2
            rich.locator(".upstage-code", has_text="return x").locator("button.upstage-copy-code").click()
            sync_api.expect(rich.locator("button.upstage-copy-code").first).to_have_text("Copied")
            assert page.evaluate("() => navigator.clipboard.readText()") == CODE
            flags = dict(page.evaluate("(fs) => fs.map(f => [f, typeof window[f]])", list(RICH_FLAGS)))
            assert set(flags.values()) == {"undefined"}, flags
            assert rich.locator(".upstage-answer-body").locator(NO_TAGS).count() == 0
            sync_api.expect(rich).to_contain_text("onerror=window.__pwned_code=1")
            timings["rich answer"] = time.monotonic() - t_start

            # 5b. Reasoning streams in a separate "Thinking" block, collapsed once the answer is in.
            emu.config(reply="echo", reasoning=True, tokens_per_second=40)
            textarea.fill("Think first")
            textarea.press("Enter")
            sync_api.expect(live.locator(".upstage-reasoning")).to_be_visible()
            sync_api.expect(live.locator(".upstage-reasoning-body")).to_contain_text("step by step")
            sync_api.expect(done).to_have_count(n_done + 1)
            n_done += 1
            thinking = done.last.locator("details.upstage-reasoning")
            sync_api.expect(thinking).to_be_visible()
            assert thinking.get_attribute("open") is None
            sync_api.expect(done.last.locator(".upstage-answer-body")).to_have_text("Think first")
            thinking.locator("summary").click()
            sync_api.expect(thinking.locator(".upstage-reasoning-body")).to_contain_text("step by step")
            emu.config(reasoning=False, tokens_per_second=None)

            # 6. The hostile answer renders as text; nothing runs, even when its link is clicked.
            emu.config(reply="hostile")
            textarea.fill("Be hostile")
            textarea.press("Enter")
            sync_api.expect(done).to_have_count(n_done + 1)
            n_done += 1
            last = done.last
            sync_api.expect(last).to_contain_text("window.__pwned_script=1")
            sync_api.expect(last).to_contain_text('<script>alert("kept as code")</script>')
            for link in last.locator("a").all():
                link.click()
            page.wait_for_timeout(300)
            assert_no_flags(page)
            assert last.locator("script, img, iframe").count() == 0
            timings["hostile widget"] = time.monotonic() - t_start

            # 6b. The extreme answer: all of it shown (the end too), nothing runs, no overflow.
            emu.config(reply=extreme)
            textarea.fill("Be extreme")
            textarea.press("Enter")
            sync_api.expect(done).to_have_count(n_done + 1, timeout=60_000)
            n_done += 1
            assert_extreme_answer_harmless(page, done.last.locator(".upstage-answer-body"))
            assert_within_notebook(page, CHAT)
            assert chat.evaluate(OVERFLOW_JS) == []
            timings["extreme widget"] = time.monotonic() - t_start

            # Still usable: the next answer streams (paced) and the transcript follows it.
            emu.config(reply="echo", tokens_per_second=25)
            textarea.fill("still alive? " + " ".join(f"word{i}" for i in range(40)))
            textarea.press("Enter")
            sync_api.expect(live).to_have_count(1)
            sync_api.expect(done).to_have_count(n_done + 1)
            n_done += 1
            sync_api.expect(done.last).to_contain_text("word39")
            wait_at_bottom(chat)
            # Scrolled up while streaming: not pulled down, a "jump to latest" button instead;
            # a new question of the user's is always revealed.
            textarea.fill("scroll test " + " ".join(f"w{i}" for i in range(60)))
            textarea.press("Enter")
            sync_api.expect(live).to_have_count(1)
            chat.locator(".upstage-chat-scroll").evaluate("s => { s.scrollTop = 0; s.dispatchEvent(new Event('scroll')); }")
            jump = chat.locator("button.upstage-jump")
            sync_api.expect(jump).to_be_visible()
            assert chat.locator(".upstage-chat-scroll").evaluate("s => s.scrollTop") < 50
            jump.click()
            sync_api.expect(jump).to_be_hidden()
            sync_api.expect(done).to_have_count(n_done + 1)
            n_done += 1
            wait_at_bottom(chat)
            emu.config(tokens_per_second=None)
            assert_no_flags(page)
            assert TEST_KEY not in page.content()
            timings["follow-up"] = time.monotonic() - t_start

            # Export: a download built in the browser (no file on the server).
            with page.expect_download() as dl:
                chat.locator("button.upstage-chat-export").click()
            text = Path(dl.value.path()).read_text()
            assert dl.value.suggested_filename.endswith(".md") and "still alive? word0" in text
            assert not list(root.glob("upstage-chat-*"))

            # 7. Layout and themes: a wide code line scrolls inside its block only; no
            # horizontal overflow at 1200 px or 360 px; contrast >= 4.5 in light and dark.
            emu.config(reply=WIDE_LINE)
            textarea.fill("A wide line please")
            textarea.press("Enter")
            sync_api.expect(done).to_have_count(n_done + 1)
            n_done += 1
            pre = done.last.locator("pre")
            assert pre.evaluate("e => e.scrollWidth > e.clientWidth")  # it scrolls, inside itself
            emu.config(reply=SHOWCASE_REPLY, tokens_per_second=80)  # paced: realistic stats
            textarea.fill("Compare two Solar models, with a code example")
            textarea.press("Enter")
            sync_api.expect(live).to_have_count(1)
            sync_api.expect(done).to_have_count(n_done + 1)
            n_done += 1
            page.keyboard.type("Next question…", delay=0)
            # The file browser would take most of a 360 px screen: close it, as a user would.
            page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()
            results: dict[str, dict] = {}
            for theme in ("JupyterLab Light", "JupyterLab Dark"):
                set_theme(page, theme)
                tag = "dark" if "Dark" in theme else "light"
                for width in (1200, 360):
                    page.set_viewport_size({"width": width, "height": 1000})
                    page.wait_for_timeout(400)
                    chat.scroll_into_view_if_needed()
                    bad = chat.evaluate(OVERFLOW_JS)
                    assert not bad, f"{theme} {width}px: {bad[:8]}"
                    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
                    shot = ARTIFACTS / f"chat_widget_{tag}_{width}.png"
                    chat.screenshot(path=str(shot))
                    if width == 1200 and os.environ.get("UPSTAGE_UPDATE_DOCS"):  # README screenshots
                        shutil.copy(shot, REPO / "docs" / f"chat_widget_{tag}.png")
                results[tag] = contrasts(page, chat)
            page.set_viewport_size({"width": 1280, "height": 1000})
            set_theme(page, "JupyterLab Light")
            low = {(t, k): v for t, r in results.items() for k, v in r.items() if v["ratio"] < 4.5}
            assert not low, low
            print("contrast:", {t: {k: round(v["ratio"], 1) for k, v in r.items()} for t, r in results.items()})
            timings["layout and themes"] = time.monotonic() - t_start

            # 8. Kernel restart: the widget says so in place instead of doing nothing.
            page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel…").first.click()
            page.locator(".jp-Dialog .jp-mod-accept").click()
            page.wait_for_timeout(1500)
            textarea.fill("Are you there?")
            textarea.press("Enter")
            banner = chat.locator(".upstage-chat-banner")
            sync_api.expect(banner).to_contain_text("kernel restarted: run the cell again", timeout=15_000)
            sync_api.expect(textarea).to_have_value("Are you there?")  # the question is not lost
            chat.screenshot(path=str(ARTIFACTS / "chat_widget_restarted.png"))
            timings["kernel restart"] = time.monotonic() - t_start

            # 8b. A saved notebook reopened (its kernel is new, the widget's is gone): the
            # saved transcript shows, read-only, and the widget says what to do. (Signed with the
            # server's key, as a notebook the user saved is; else JupyterLab shows text/plain.)
            from nbformat.sign import NotebookNotary

            notary = NotebookNotary(data_dir=str(tmp_path / "jupyter-data"))
            signed = nbformat.read(root / "saved.ipynb", as_version=4)
            notary.sign(signed)
            open_notebook(page, lab, "saved.ipynb")
            saved = page.locator(CHAT)
            sync_api.expect(saved.locator(".upstage-user-text")).to_have_text("A question saved with the notebook")
            sync_api.expect(saved.locator(".upstage-answer.upstage-status-done")).to_contain_text(
                "You asked: A question saved with the notebook")
            sync_api.expect(saved.locator(".upstage-chat-banner")).to_contain_text(
                "kernel restarted: run the cell again", timeout=15_000)
            for name in ("send", "retry", "new", "export"):
                sync_api.expect(saved.locator(f"button.upstage-chat-{name}")).to_be_disabled()
            saved.screenshot(path=str(ARTIFACTS / "chat_widget_reopened.png"))
            timings["reopened"] = time.monotonic() - t_start

            # 9. The same hostile answer, then the extreme one, through %%upstage cells.
            emu.config(reply="hostile", tokens_per_second=None)
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

            # 10. Positive control: raw HTML in a widget does run here, so the checks above can fail.
            open_notebook(page, lab, "control.ipynb")
            run_all_cells(page)
            page.wait_for_function("() => window.__pwned_control === 1")
            timings["control"] = time.monotonic() - t_start
    finally:
        if emu is not None:
            emu.close()
        timings["total"] = time.monotonic() - t_start
        print(f"browser test timings (s since start): {timings}")
        print("console errors:", console_errors[:20])
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "browser-timings.json").write_text(json.dumps(timings, indent=1))
