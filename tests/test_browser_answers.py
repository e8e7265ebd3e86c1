"""How an answer sits in a notebook, measured in a real browser (issue 17).

JupyterLab (light and dark, 1200 px and 420 px) with the emulator echoing a Markdown prompt
(headings, code, math, a table) with reasoning: the answer's headings are no larger than the
notebook's own H4 and are not in the Table of Contents; code lines have no background bands;
the Thinking block is bordered and dimmed; display math is centred. Then the saved notebook
is reopened in a second JupyterLab with its own data directory (so it is untrusted and our
``<style>`` is dropped) and exported with ``nbconvert --to html``: code stays monospace, math
shows its TeX source (or MathML where styles survive), the footer stays small, the Thinking
block stays collapsed. Notebook 7 gets the heading and code checks too.

Screenshots: artifacts/answers_{light,dark}_{1200,420}.png, answers_untrusted.png,
answers_nbconvert.png, answers_notebook7.png.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.support.browser import (
    LabServer,
    NotebookServer,
    browser_page,
    open_notebook,
    open_notebook7,
    run_all_cells,
    wait_all_cells_ran,
)
from tests.support.harness import EmulatorProcess

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
PROMPT = r"""# Big answer heading

## Second answer heading

Some text with `inline code`.

```python
def f(x):
    return x + 1
```

Euler: $e^{i\pi}+1=0$

$$\frac{1}{2} + \sum_{k=1}^{n} k$$

| name | value |
|------|------:|
| a    | 1     |
"""


def make_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Notebook title\n\n## Notebook section\n\n#### Notebook H4"),
        nbformat.v4.new_code_cell("%load_ext upstage_magic"),
        nbformat.v4.new_code_cell("%%upstage --raw\n" + PROMPT),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


MEASURE_JS = r"""() => {
    const px = (el, p) => parseFloat(getComputedStyle(el)[p]);
    const md = document.querySelector('.jp-MarkdownOutput');
    const out = [...document.querySelectorAll('.jp-OutputArea-output')].find(o => o.querySelector('.um-answer pre.um-code'));
    const ans = out.querySelector('.um-answer');
    const heads = [...ans.querySelectorAll('h1,h2,h3,h4,h5,h6')];
    const code = ans.querySelector('pre.um-code');
    const codeEls = [code.querySelector('code'), ...code.querySelectorAll('span')];
    const think = document.querySelector('details.um-thinking');
    const thinkBody = think.querySelector('.um-thinking-body p') || think.querySelector('.um-thinking-body');
    const para = [...ans.querySelectorAll(':scope > p')].find(p => !p.querySelector('.um-math'));
    const dmath = ans.querySelector('.um-math-display math');
    const mrect = dmath ? (dmath.firstElementChild || dmath).getBoundingClientRect() : null;
    const arect = ans.getBoundingClientRect();
    const td = ans.querySelector('td');
    return {
        nb_h1: px(md.querySelector('h1'), 'fontSize'), nb_h4: px(md.querySelector('h4'), 'fontSize'),
        heads: heads.map(h => [h.tagName, px(h, 'fontSize'), h.textContent]),
        code_backgrounds: codeEls.map(e => getComputedStyle(e).backgroundColor),
        pre_background: getComputedStyle(code).backgroundColor,
        code_font: getComputedStyle(code).fontFamily,
        think_open: think.open, think_border: px(think, 'borderLeftWidth'),
        think_color: getComputedStyle(thinkBody).color, answer_color: getComputedStyle(para).color,
        math_shown: !!dmath && dmath.getBoundingClientRect().width > 0,
        tex_shown: [...ans.querySelectorAll('code.um-tex')].some(c => c.getBoundingClientRect().width > 0),
        math_offset: mrect ? Math.abs((mrect.left + mrect.right) / 2 - (arect.left + arect.right) / 2) : null,
        math_width: mrect ? mrect.width : null, answer_width: arect.width,
        td_align: td ? [...ans.querySelectorAll('td')].map(t => getComputedStyle(t).textAlign) : [],
        body_font: px(para, 'fontSize'),
    };
}"""

TOC_JS = r"""() => [...document.querySelectorAll('.jp-TableOfContents-content, .jp-TableOfContents-tree')]
    .map(e => e.textContent).join('|')"""


def check_styled(m: dict, where: str) -> None:
    sizes = [s for _, s, _ in m["heads"]]
    assert len(sizes) == 2, (where, m["heads"])
    assert all(tag in ("H4", "H5", "H6") for tag, _, _ in m["heads"]), (where, m["heads"])
    assert max(sizes) <= m["nb_h4"] + 0.01 < m["nb_h1"], (where, m)
    assert all(bg in ("rgba(0, 0, 0, 0)", "transparent") for bg in m["code_backgrounds"]), (where, m)
    assert "mono" in m["code_font"].lower() or "courier" in m["code_font"].lower(), (where, m["code_font"])
    assert not m["think_open"] and m["think_border"] >= 2, (where, m)
    assert m["math_shown"] and not m["tex_shown"], (where, m)
    assert m["math_offset"] < 0.05 * m["answer_width"], (where, m)  # display math is centred
    assert m["td_align"] == ["left", "right"], (where, m["td_align"])


def test_answers_in_jupyterlab_shared_and_exported(tmp_path: Path) -> None:
    from tests.test_browser import set_theme

    t0 = time.monotonic()
    root = tmp_path / "root"
    root.mkdir()
    make_notebook(root / "answers.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    emu = EmulatorProcess(tmp_path, reply="echo", reasoning=True)
    try:
        with browser_page(LabServer, tmp_path / "lab1", root, emu, ARTIFACTS, "answers",
                          timeout_ms=30_000) as (_lab, page):
            open_notebook(page, _lab, "answers.ipynb")
            run_all_cells(page)
            wait_all_cells_ran(page)
            page.wait_for_selector(".um-footer")
            page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click()  # notebook full width
            for theme in ("JupyterLab Light", "JupyterLab Dark"):
                set_theme(page, theme)
                for width in (1200, 420):
                    page.set_viewport_size({"width": width, "height": 1100})
                    page.wait_for_timeout(300)
                    m = page.evaluate(MEASURE_JS)
                    check_styled(m, f"{theme} {width}")
                    if "Dark" in theme:  # the details block's expanded colour: dimmer than the answer
                        page.evaluate("() => document.querySelector('details.um-thinking').open = true")
                        m2 = page.evaluate(MEASURE_JS)
                        assert m2["think_color"] != m2["answer_color"], m2
                        page.evaluate("() => document.querySelector('details.um-thinking').open = false")
                    page.screenshot(path=str(ARTIFACTS / f"answers_{'dark' if 'Dark' in theme else 'light'}_{width}.png"))
            set_theme(page, "JupyterLab Light")
            page.set_viewport_size({"width": 1280, "height": 1100})
            # The Table of Contents lists the notebook's headings, none of the answer's.
            page.locator(".jp-SideBar .lm-TabBar-tab[data-id='table-of-contents']").click()
            page.wait_for_function("() => document.querySelector('.jp-TableOfContents-tree, "
                                   ".jp-TableOfContents-content')?.textContent.includes('Notebook section')")
            toc = page.evaluate(TOC_JS)
            assert "Notebook title" in toc and "Notebook H4" in toc
            assert "answer heading" not in toc, toc
            page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Save Notebook").first.click()
            page.wait_for_function("() => !document.querySelector('.jp-NotebookPanel-toolbar, .lm-TabBar-tab.jp-mod-dirty')"
                                   " || !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')")
            page.wait_for_timeout(1000)
        saved = json.loads((root / "answers.ipynb").read_text())
        outputs = [o for c in saved["cells"] for o in c.get("outputs", [])]
        assert any("um-footer" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)

        # 2. A colleague's JupyterLab: its own data directory, so the notebook is untrusted.
        with browser_page(LabServer, tmp_path / "lab2", root, emu, ARTIFACTS, "answers-untrusted",
                          timeout_ms=30_000) as (lab2, page):
            open_notebook(page, lab2, "answers.ipynb")
            page.wait_for_selector(".um-answer pre.um-code")
            shared = page.evaluate(SHARED_JS)
            page.screenshot(path=str(ARTIFACTS / "answers_untrusted.png"))
        check_shared(shared, "untrusted JupyterLab", styles=False)

        # 3. nbconvert --to html, default template (our <style> stays there).
        subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", str(root / "answers.ipynb")],
                       check=True, capture_output=True, timeout=120)
        with browser_page(LabServer, tmp_path / "lab3", root, emu, ARTIFACTS, "answers-nbconvert",
                          timeout_ms=30_000) as (_lab3, page):
            page.goto((root / "answers.html").as_uri())
            page.wait_for_selector(".um-answer pre.um-code")
            exported = page.evaluate(SHARED_JS)
            page.screenshot(path=str(ARTIFACTS / "answers_nbconvert.png"), full_page=True)
        check_shared(exported, "nbconvert", styles=True)
    finally:
        emu.close()
        print(f"answers browser test: {time.monotonic() - t0:.1f} s")


SHARED_JS = r"""() => {
    const ans = [...document.querySelectorAll('.um-answer')].find(a => a.querySelector('pre.um-code'));
    const vis = e => !!e && e.getBoundingClientRect().width > 0 && getComputedStyle(e).visibility !== 'hidden';
    const para = [...ans.querySelectorAll('p')].find(p => !p.querySelector('.um-math') && p.textContent.trim());
    const footer = document.querySelector('.um-footer');
    const small = footer.querySelector('small') || footer;
    const heads = [...ans.querySelectorAll('h1,h2,h3,h4,h5,h6')];
    const md = [...document.querySelectorAll('h1')].find(h => h.textContent.includes('Notebook title'));
    return {
        styles: document.querySelectorAll('.jp-OutputArea-output style, .output_html style, .jp-RenderedHTML style').length,
        code_font: getComputedStyle(ans.querySelector('pre.um-code')).fontFamily,
        code_white_space: getComputedStyle(ans.querySelector('pre.um-code')).whiteSpace,
        tex: [...ans.querySelectorAll('code.um-tex')].filter(vis).map(c => c.textContent),
        math_visible: [...ans.querySelectorAll('math')].filter(vis).length,
        text: ans.innerText,
        footer_font: parseFloat(getComputedStyle(small).fontSize), body_font: parseFloat(getComputedStyle(para).fontSize),
        think_open: document.querySelector('details.um-thinking').open,
        head_sizes: heads.map(h => parseFloat(getComputedStyle(h).fontSize)),
        nb_h1: md ? parseFloat(getComputedStyle(md).fontSize) : null,
    };
}"""


def check_shared(m: dict, where: str, *, styles: bool) -> None:
    assert (m["styles"] > 0) == styles, (where, m["styles"])
    assert "mono" in m["code_font"].lower() or "courier" in m["code_font"].lower(), (where, m)
    assert m["code_white_space"].startswith("pre"), (where, m)
    assert m["footer_font"] < m["body_font"], (where, m)
    assert not m["think_open"], where
    assert m["head_sizes"] and (m["nb_h1"] is None or max(m["head_sizes"]) < m["nb_h1"]), (where, m)
    if styles:
        assert m["math_visible"] >= 2 and not m["tex"], (where, m)
    else:  # MathML dropped: the TeX source reads instead, never "eiπ+1=0"
        assert "$e^{i\\pi}+1=0$" in m["tex"], (where, m["tex"])
        assert "eiπ" not in m["text"], (where, m["text"])


def test_answers_in_notebook7(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    make_notebook(root / "answers.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    emu = EmulatorProcess(tmp_path, reply="echo", reasoning=True)
    try:
        with browser_page(NotebookServer, tmp_path, root, emu, ARTIFACTS, "answers-nb7",
                          timeout_ms=30_000) as (server, page):
            open_notebook7(page, server, "answers.ipynb")
            run_all_cells(page)
            wait_all_cells_ran(page)
            page.wait_for_selector(".um-footer")
            for width in (1200, 420):
                page.set_viewport_size({"width": width, "height": 1100})
                page.wait_for_timeout(300)
                check_styled(page.evaluate(MEASURE_JS), f"notebook7 {width}")
            page.screenshot(path=str(ARTIFACTS / "answers_notebook7.png"))
    finally:
        emu.close()
