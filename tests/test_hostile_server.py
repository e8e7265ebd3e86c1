"""A hostile server through every front end, in JupyterLab in Chromium: nothing runs, nothing leaks.

The server (``tests/support/hostile.py``) echoes the request's key (a canary, given to the
kernel only through ``UPSTAGE_API_KEY``) and hostile payloads into every field it sends.
One notebook uses the magic every way a person would: answers (streamed, ``--no-stream``,
reasoning, ``<think>``, tool calls, code), every error status as a JSON body and as an HTML
page, stream error events and malformed events, ``-f json -o`` and ``--schema`` with JSON
that fails it, ``%upstage models``/``config``/``history``/``export``/``log``, ``batch`` and
``--map -o`` (values printed via ``repr``), and the chat widget, to which a question is typed
and sent in the page. It runs in JupyterLab (Run All); then:

- no ``window.__hostile_*`` flag was set (an init script watches every frame);
- no ``a[href]`` with a scheme other than http/https/mailto inside any output (the
  autolinker included), and no MathJax-typeset element (``mjx-container``) in any output;
- the key, its first and its last 12 characters are in none of: the page's DOM at any time
  (a mutation observer watches text as it streams in) and at the end, the saved .ipynb
  (widget state included), its nbconvert HTML export, the conversation log and answer cache
  files, the exported chat, the kernel's ``-o`` values.

A screenshot is saved to ``artifacts/hostile-server.png``.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.support.browser import LabServer, launch_chromium, open_notebook, run_all_cells
from tests.support.hostile import FLAG_PREFIX, STATUSES, HostileServer, find_needles, make_key, needles

pytestmark = [pytest.mark.kernel, pytest.mark.browser, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
KEY = make_key()
DONE = "HOSTILE NOTEBOOK DONE"
ERROR_MODES = [*(f"status-{s}" for s in STATUSES), *(f"html-{s}" for s in STATUSES), "text-500",
               "error-event", "event-error", "malformed"]

# Every frame: report flags as they appear; record needles seen in text as it is added.
WATCH_JS = """(() => {
  const prefix = PREFIX_JSON, needles = NEEDLES_JSON;
  window.__hostileSeen = [];
  const check = () => {
    try { for (const k of Object.keys(window)) if (k.startsWith(prefix)) window.__hostileFlags = (window.__hostileFlags || []).concat([k]); } catch (e) {}
  };
  setInterval(check, 100);
  const scan = (text) => { for (const n of needles) if (text && text.includes(n)) window.__hostileSeen.push(n); };
  const start = () => new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === 'characterData') scan(r.target.data);
      for (const n of r.addedNodes || []) scan(n.textContent);
      if (r.type === 'attributes' && r.target.getAttribute) scan(r.target.getAttribute(r.attributeName));
    }
  }).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();""".replace("PREFIX_JSON", json.dumps(FLAG_PREFIX)).replace("NEEDLES_JSON", json.dumps(list(needles(KEY).values())))

CHECK_JS = """() => {
  const outs = [...document.querySelectorAll('.jp-OutputArea-output')];
  const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')];
  // Where each link with a scheme other than http/https/mailto is: its cell, and whether the
  // output is the user's own display of a value (an Out[] or what a print() wrote).
  const links = outs.flatMap(o => [...o.querySelectorAll('a[href]')].map(a => [o, a.getAttribute('href')]))
      .filter(([o, h]) => { const s = h.replace(/[\\u0000-\\u0020]/g, '').toLowerCase();
                            return /^[a-z][a-z0-9+.-]*:/.test(s) && !/^(https?|mailto):/.test(s); })
      .map(([o, h]) => ({href: h, cell: cells.findIndex(c => c.contains(o)),
                         user: !!o.closest('.jp-OutputArea-executeResult')
                               || o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stdout'}));
  return {
    flags: Object.keys(window).filter(k => k.startsWith(PREFIX_JSON)).concat(window.__hostileFlags || []),
    seen: window.__hostileSeen || [],
    unsafeLinks: links,
    typeset: outs.reduce((n, o) => n + o.querySelectorAll('mjx-container, .MathJax, .MathJax_Display').length, 0),
    ours: document.querySelectorAll('.jp-OutputArea-output .um-answer, .jp-OutputArea-output .upstage-chat').length,
    errors: document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').length,
    html: document.documentElement.outerHTML,
  };
}""".replace("PREFIX_JSON", json.dumps(FLAG_PREFIX))

CELLS = [
    "%load_ext upstage_magic\nfrom upstage_magic import batch, ChatWidget\n"
    "SCHEMA = {'type': 'object', 'properties': {'n': {'type': 'integer'}}, 'required': ['n']}\n"
    "get_ipython().run_line_magic('config', 'UpstageMagics.update_interval = 0.02')\n"
    "def cell(line, body):  # a %%upstage cell whose error is shown as the cell's error output\n"
    "    try:\n"
    "        return get_ipython().run_cell_magic('upstage', line, body)\n"
    "    except Exception:\n"
    "        get_ipython().showtraceback()",
    "%%upstage\nmode=answer",
    "%%upstage --no-stream\nmode=answer",
    "%%upstage\nmode=slow",
    "%%upstage\nmode=reasoning",
    "%%upstage\nmode=think",
    "%%upstage\nmode=tool",
    "%%upstage\nmode=code",
    "%%upstage -f code\nmode=code",
    "%%upstage -f json -o j\nmode=json",
    "print(repr(j))\nj",
    "cell('-f json --schema SCHEMA', 'mode=badjson')",
    # Every error: each shown as the cell's error output (showtraceback), so Run All goes on.
    f"for m in {ERROR_MODES!r}:\n    cell('', 'mode=' + m)",
    "%upstage models",
    "%upstage config",
    "r = batch('mode={item}', ['answer', 'code', 'status-500', 'error-event', 'malformed', 'html-500'], retries=0)\n"
    "print(repr(r))\nprint(r.errors)\nr",
    "s = batch('mode={item}', ['json', 'badjson'], schema=SCHEMA, retries=0)\nprint(repr(s))\ns",
    "rows = ['answer', 'json', 'status-400']",
    "%%upstage --map rows -o mapped\nmode={item}",
    "print(repr(mapped))\nmapped",
    "w = ChatWidget()\nw",
    "%upstage history",
    "%upstage export chat.md",
    "%upstage log",
    f"print({DONE!r})",
]
WIDGET_QUESTIONS = ["mode=slow", "mode=status-500", "mode=reasoning", "mode=tool"]


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, path)


def lab_settings(workdir: Path) -> None:
    """JupyterLab saves widget state in the notebook (so the test can search it)."""
    d = workdir / "jupyter-config" / "lab" / "user-settings" / "@jupyter-widgets" / "jupyterlab-manager"
    d.mkdir(parents=True, exist_ok=True)
    (d / "plugin.jupyterlab-settings").write_text(json.dumps({"saveState": True}))


def wait_done(page: Any, timeout: float = 150_000) -> None:
    """Wait for the last cell's output; fail at once if Run All stopped at an error."""
    state = page.wait_for_function("""(t) => {
        if ([...document.querySelectorAll('.jp-OutputArea-output')].some(e => e.textContent.includes(t))) return 'done';
        const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent);
        const idle = [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => /Idle\\s*$/.test(e.textContent));
        return idle && p.length && !p.some(x => x.includes('*')) && p.some(x => !/\\d/.test(x)) && performance.now() > 20000
            ? 'stopped' : false;
    }""", arg=DONE, timeout=timeout, polling=500).json_value()
    assert state == "done", "Run All stopped before the last cell (a cell raised)"


def ask_widget(page: Any) -> None:
    """Type each question into the widget and send it (Enter), waiting for its answer to end."""
    chat = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .upstage-chat").first
    chat.scroll_into_view_if_needed()
    box = chat.locator("textarea.upstage-chat-input")
    count_js = """([el, q]) => [...el.querySelectorAll('.upstage-turns .upstage-turn .upstage-user-text')]
                                 .filter(u => u.textContent.trim() === q).length"""
    for q in WIDGET_QUESTIONS:
        n = page.evaluate(count_js, [chat.element_handle(), q])
        box.click()
        box.fill(q)
        page.keyboard.press("Enter")
        page.wait_for_function("([el, q, n]) => !el.querySelector('.upstage-live') && "
                               "[...el.querySelectorAll('.upstage-turns .upstage-turn .upstage-user-text')]"
                               ".filter(u => u.textContent.trim() === q).length > n",
                               arg=[chat.element_handle(), q, n], timeout=30_000)


def save_notebook(page: Any, path: Path) -> None:
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            nb = nbformat.read(path, as_version=4)
            if DONE in json.dumps([c.get("outputs", []) for c in nb.cells]) and "widgets" in nb.metadata:
                return
        except Exception:  # noqa: BLE001, S110 - being written
            pass
        page.wait_for_timeout(250)
    raise TimeoutError(f"{path.name} was not saved with its outputs and widget state")


# A scheme other than http(s) followed by // in plain text: what an autolinker makes a link of.
LINKABLE = re.compile(r"(?i)(?<![a-z0-9+.\-])(?!https?:)[a-z][a-z0-9+.\-]*://")


def linkable_texts(nb: Any) -> list[str]:
    """Plain texts of our outputs in the saved notebook that a front end could autolink:
    error outputs (``evalue`` and traceback lines) and the ``text/plain`` twins of our HTML."""
    found = []
    for i, c in enumerate(nb.cells):
        for o in c.get("outputs", []):
            texts = []
            if o["output_type"] == "error":
                texts = [o["evalue"], *o["traceback"]]
            elif o["output_type"] == "display_data" and "um-answer" in o.get("data", {}).get("text/html", ""):
                texts = [o["data"].get("text/plain", "")]
            found += [f"cell {i}: {t[:200]!r}" for t in texts if LINKABLE.search(t)]
    return found


def scan_files(root: Path) -> list[str]:
    hits: list[str] = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            hits += find_needles(p.read_bytes().decode("latin-1"), KEY, str(p.relative_to(root)))
    return hits


def test_hostile_server_in_jupyterlab(tmp_path: Path) -> None:
    from playwright import sync_api

    root, data = tmp_path / "root", tmp_path / "data"
    root.mkdir()
    data.mkdir()
    nb_path = root / "hostile.ipynb"
    write_notebook(nb_path)
    lab_settings(tmp_path / "lab")
    ARTIFACTS.mkdir(exist_ok=True)
    with HostileServer() as server:
        lab = LabServer(tmp_path / "lab", root, env={"UPSTAGE_BASE_URL": server.base_url, "UPSTAGE_API_KEY": KEY,
                                                      "UPSTAGE_MAGIC_HOME": str(data)})
        try:
            with sync_api.sync_playwright() as pw:
                ctx = launch_chromium(pw, tmp_path / "chromium-profile")
                ctx.add_init_script(WATCH_JS)
                ctx.route("**/*", lambda route: route.continue_() if re.match(
                    r"^(https?://(127\.0\.0\.1|localhost)[:/]|data:|blob:)", route.request.url) else route.abort())
                page = ctx.new_page()
                page.set_default_timeout(60_000)
                try:
                    t0 = time.monotonic()
                    open_notebook(page, lab, nb_path.name)
                    run_all_cells(page)
                    wait_done(page)
                    ask_widget(page)
                    page.wait_for_timeout(700)  # images' onerror, MathJax's lazy typesetting
                    page.screenshot(path=str(ARTIFACTS / "hostile-server.png"), full_page=False)
                    facts = page.evaluate(CHECK_JS)
                    save_notebook(page, nb_path)
                    print(f"notebook ran in {time.monotonic() - t0:.1f} s; {facts['ours']} of our outputs, "
                          f"{facts['errors']} error outputs", flush=True)
                except BaseException:
                    page.screenshot(path=str(ARTIFACTS / "hostile-server-failure.png"), full_page=True, timeout=15_000)
                    print(lab.log_tail(4000))
                    raise
                finally:
                    ctx.close()
        finally:
            lab.close()
    assert not facts["flags"], facts["flags"]
    ours = [link for link in facts["unsafeLinks"] if not link["user"]]
    print(f"{len(facts['unsafeLinks']) - len(ours)} non-http links in the user's own displays of returned "
          f"values (the front end's rendering of data, cells {sorted({x['cell'] for x in facts['unsafeLinks']})})")
    assert not ours, ours[:10]
    assert facts["typeset"] == 0, f"{facts['typeset']} MathJax-typeset elements in outputs"
    assert facts["ours"] >= 20 and facts["errors"] >= len(ERROR_MODES)
    found = [f"live DOM: {n}" for n in sorted(set(facts["seen"]))]
    found += find_needles(facts["html"], KEY, "final DOM")
    html = subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", "--stdout", str(nb_path)],
                          check=True, capture_output=True, timeout=120).stdout.decode()
    found += find_needles(html, KEY, "nbconvert HTML")
    found += scan_files(root) + scan_files(data)
    assert not found, "\n".join(found[:20])
    saved = nbformat.read(nb_path, as_version=4)
    assert not linkable_texts(saved), linkable_texts(saved)[:5]
    text = json.dumps(saved)
    assert "widgets" in saved.metadata and "mode=slow" in json.dumps(saved.metadata["widgets"])
    assert (data / "logs.db").exists() and (data / "cache.sqlite3").exists()  # searched above
    assert "***" in text  # the key was there to mask
