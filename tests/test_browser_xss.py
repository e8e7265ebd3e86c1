"""The hostile corpus in a real browser: nothing an answer says may run or phone home.

Every answer of ``hostile_corpus`` goes, as the emulator's reply, through each output path
of the extension inside a real front end (Debian chromium + Playwright, emulator on
loopback), one notebook per path so a hit names its path:

- JupyterLab: ``%%upstage`` streamed at full speed (then ``%upstage history``), streamed
  one token per display update (emulator pacing, ``update_interval = 0``), ``--no-stream``,
  ``-f code``, and the chat widget driven from a cell (``ChatWidget().send(...)``).
- Notebook 7: ``%%upstage`` at full speed and one token at a time.
- Each JupyterLab notebook is saved, exported with ``jupyter nbconvert --to html``, served on
  loopback and opened; every link in the outputs is clicked.

Checked: no ``window.__xss_*`` flag in any frame of any page (a watcher in every frame
reports flags as they appear, so a payload that navigates away is still caught), the page is
still the notebook and usable, and no request left loopback (all are blocked and recorded;
the nbconvert template's own CDN scripts are allowed to fail quietly). Results per path:
artifacts/xss-results.json.

The answers are driven by a notebook cell that sets the emulator's reply and calls the
magic with ``get_ipython().run_cell_magic('upstage', line, prompt)`` -- exactly what a
``%%upstage`` cell runs -- so one cell can carry a whole path.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.hostile_corpus import CORPUS, EXFIL_HOST, FLAG_PREFIX, answers, by_id, counts
from tests.support.browser import LabServer, NotebookServer, browser_page, open_notebook, open_notebook7, run_all_cells
from tests.support.harness import EmulatorProcess
from tests.support.wirelog import WireLog

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
ANSWERS_FILE = "xss_answers.json"
PACED_TPS = 250  # tokens per second when streaming one token per display update
DONE = "PATH DONE"

# Reports every window.__xss_* property of this frame to the test (as soon as it appears).
WATCH_JS = """(() => {{
  const seen = new Set();
  const check = () => {{
    try {{
      for (const k of Object.keys(window)) {{
        if (k.startsWith('{}') && !seen.has(k)) {{
          seen.add(k);
          if (typeof window.__xssReport === 'function') window.__xssReport(k);
        }}
      }}
    }} catch (e) {{}}
  }};
  setInterval(check, 50);
  addEventListener('pagehide', check);
  addEventListener('beforeunload', check);
}})();""".format(FLAG_PREFIX)
FRAME_FLAGS_JS = "() => Object.keys(window).filter(k => k.startsWith({}))".format(json.dumps(FLAG_PREFIX))

# ------------------------------------------------------------------------ notebooks

SETUP = """\
%load_ext upstage_magic
import asyncio, json, pathlib, urllib.request
ANSWERS = json.loads(pathlib.Path({answers!r}).read_text())
_CTL = {ctl!r}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))

def emu(**cfg):
    req = urllib.request.Request(_CTL + '/_emulator/config', data=json.dumps(cfg).encode(),
                                 method='POST', headers={{'Content-Type': 'application/json'}})
    _OPENER.open(req, timeout=30).read()

def reply_for(a, think):
    # think: the payload arrives as reasoning (a leading <think> block, as OpenAI-compatible
    # servers send it), shown in the Thinking block, then a short answer.
    return '<think>' + a['text'] + '</think>\\n\\nAnswer after thinking.' if think else a['text']


def ask(start, stop, line='', *, paced=False, think=False):
    failed = {{}}
    n = 0
    for a in ANSWERS[start:stop]:
        if (paced or think) and not a['streamable']:
            continue
        emu(reply=reply_for(a, think))
        n += 1
        try:
            get_ipython().run_cell_magic('upstage', line, 'Answer ' + a['id'])
        except Exception as exc:
            failed[a['id']] = type(exc).__name__
    print({done!r}, n, 'answers;', len(failed), 'raised:', failed)
"""

CHUNK = 15  # answers per cell: JupyterLab renders at most 50 outputs of a cell (2 per answer)


def _chunks(call: str, n: int) -> list[str]:
    return [call.format(a=i, b=i + CHUNK) for i in range(0, n, CHUNK)]


def path_cells(path: str, n: int) -> list[str]:
    """The cells of one path's notebook (after the setup cell); each prints DONE."""
    if path == "stream_fast":
        return ["emu(tokens_per_second=None)", *_chunks("ask({a}, {b})", n), f"%upstage history\nprint({DONE!r})"]
    if path == "stream_paced":
        # one display update per token: no coalescing window, emulator paced
        return ["try:\n    get_ipython().run_line_magic('config', 'UpstageMagics.update_interval = 0')\n"
                "except Exception as exc:\n    print('update_interval not settable:', exc)\n"
                f"emu(tokens_per_second={PACED_TPS})", *_chunks("ask({a}, {b}, paced=True)", n)]
    if path == "no_stream":
        return ["emu(tokens_per_second=None)", *_chunks("ask({a}, {b}, '--no-stream')", n)]
    if path == "code":
        return ["emu(tokens_per_second=None)", *_chunks("ask({a}, {b}, '-f code')", n)]
    if path == "reasoning":
        return ["emu(tokens_per_second=None)", *_chunks("ask({a}, {b}, think=True)", n)]
    if path in ("widget", "widget_reasoning"):
        think = path == "widget_reasoning"
        # One widget per 15 answers, each with its own conversation: widgets on one shared
        # conversation all re-render every finished turn, which this test is not about.
        return ["from upstage_magic import ChatWidget\nfrom upstage_magic.session import ChatSession\n"
                "emu(tokens_per_second=None)\n"
                + WIDGET_TRACE +
                "async def widget_turns(start, stop):\n"
                "    w = ChatWidget(session=ChatSession())\n"
                "    display(w)\n"
                "    n = 0\n"
                "    stuck = []\n"
                "    trace(event='cell', start=start)\n"
                "    for a in ANSWERS[start:stop]:\n"
                "        if not a['streamable']:\n"
                "            continue  # 300 KB / 300-deep answers: test_browser.py's extreme widget test\n"
                "        n += 1\n"
                f"        emu(reply=reply_for(a, {think}))\n"
                "        t = w.send('Answer ' + a['id'])\n"
                "        trace(event='sent', id=a['id'], task=t is not None)\n"
                "        try:\n"
                "            if t is not None:\n"
                "                await asyncio.wait_for(asyncio.shield(t), 20)\n"
                "            for _ in range(1000):\n"
                "                if not w.streaming:\n"
                "                    break\n"
                "                await asyncio.sleep(0.02)\n"
                "        except asyncio.TimeoutError:\n"
                "            stuck.append(a['id'])\n"
                "            w.stop()\n"
                "        trace(event='ended', id=a['id'], done=t is not None and t.done(), streaming=w.streaming,\n"
                "              status=w.session.turns[-1].status if w.session.turns else None)\n"
                "    trace(event='cell done', start=start, stuck=stuck)\n"
                "    return n, stuck\n"
                # All widgets from ONE async cell, the notebook's last: with a cell queued after an
                # async cell, ipykernel 7.4.0 can give that cell's idle status to the one before
                # when a view's message arrives meanwhile (tests/test_kernel_idle_race.py), and
                # JupyterLab then shows it running forever. With no cell after, there is no victim.
                "async def all_widget_turns():\n"
                "    total, stuck = 0, []\n"
                f"    for start in range(0, len(ANSWERS), {CHUNK}):\n"
                f"        k, s = await widget_turns(start, start + {CHUNK})\n"
                "        total, stuck = total + k, stuck + s\n"
                f"    print({DONE!r}, total, 'answers; turns that never finished:', stuck)",
                "await all_widget_turns()"]
    raise ValueError(path)


# Widget paths log each answer's send and end, with the comm traffic so far (messages and
# bytes the kernel published on widget comms), to widget_trace.log next to the notebook.
WIDGET_TRACE = (
    "import time as _time, ipykernel.comm.comm as _cc\n"
    "_TRACE = open('widget_trace.log', 'a', buffering=1)\n"
    "_traffic = {'comm_msgs': 0, 'comm_bytes': 0}\n"
    "if not getattr(_cc.BaseComm.publish_msg, '_traced', False):\n"
    "    _orig_pub = _cc.BaseComm.publish_msg\n"
    "    def _pub(self, msg_type, data=None, metadata=None, buffers=None, **keys):\n"
    "        _traffic['comm_msgs'] += 1\n"
    "        _traffic['comm_bytes'] += len(json.dumps(data, default=str))\n"
    "        return _orig_pub(self, msg_type, data, metadata, buffers, **keys)\n"
    "    _pub._traced = True\n"
    "    _cc.BaseComm.publish_msg = _pub\n"
    "def trace(**kw):\n"
    "    _TRACE.write(json.dumps({'t': round(_time.time(), 3), **kw, **_traffic}) + '\\n')\n"
)


def expected_done(path: str, n: int) -> int:
    if path in ("widget", "widget_reasoning"):
        return 1  # one cell drives every widget (path_cells says why)
    return len(range(0, n, CHUNK)) + (path == "stream_fast")


# The widget paths ("widget", "widget_reasoning": the corpus sent from code, one widget per 15
# answers) used to hang now and then: with one ``await`` cell per widget, a cell stayed at [*]
# although the kernel had finished. The browser's websocket log showed that cell's idle status
# going to the cell before: ipykernel 7.4.0's race (tests/test_kernel_idle_race.py). They now
# drive every widget from one last cell (path_cells), so the race has no cell to hit. Each
# answer's send/end and the comm traffic (WIDGET_TRACE) and every kernel websocket frame
# (WireLog) go to artifacts/; UPSTAGE_XSS_LAB_PATHS=widget,widget_reasoning runs only those.
LAB_PATHS = ("stream_fast", "stream_paced", "no_stream", "code", "reasoning", "widget", "widget_reasoning")
# UPSTAGE_XSS_LAB_PATHS=widget,widget_reasoning runs only those (repeated runs of one path).
LAB_PATHS = tuple(p for p in os.environ.get("UPSTAGE_XSS_LAB_PATHS", ",".join(LAB_PATHS)).split(",") if p)
NB7_PATHS = ("stream_fast", "stream_paced")
EXPORTED = ("stream_fast", "no_stream", "code", "reasoning")  # stream_paced's final outputs equal stream_fast's


def write_notebook(path: Path, ctl_root: str, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP.format(answers=ANSWERS_FILE, ctl=ctl_root, done=DONE))]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, path)


# ---------------------------------------------------------------------- browser guard


class Guard:
    """Records flags (per label), non-loopback requests (blocked) and page navigations."""

    def __init__(self, ctx: Any, *, template_urls: set[str]) -> None:
        self.label = "setup"
        self.flags: dict[str, set[str]] = {}
        self.remote: dict[str, list[str]] = {}
        self.template_urls = template_urls
        self.popups: list[Any] = []
        ctx.expose_binding("__xssReport", self._report)
        ctx.add_init_script(WATCH_JS)
        ctx.route("**/*", self._route)
        ctx.on("page", self._on_page)

    def _report(self, source: dict[str, Any], key: str) -> None:
        self.flags.setdefault(self.label, set()).add(key[len(FLAG_PREFIX):])

    def _route(self, route: Any) -> None:
        url = route.request.url
        host = urllib.parse.urlsplit(url).hostname or ""
        if host in LOOPBACK or url.startswith(("data:", "blob:")):
            route.continue_()
            return
        if url not in self.template_urls:
            self.remote.setdefault(self.label, []).append(url)
        route.abort()

    def _on_page(self, page: Any) -> None:
        self.popups.append(page)

    def sweep(self, pages: list[Any]) -> None:
        """Read the flags of every frame of every page now (the watcher may lag)."""
        for page in [*pages, *self.popups]:
            if page.is_closed():
                continue
            for frame in page.frames:
                try:
                    keys = frame.evaluate(FRAME_FLAGS_JS)
                except Exception:  # noqa: BLE001 - detached or navigating frame
                    continue
                for k in keys:
                    self.flags.setdefault(self.label, set()).add(k[len(FLAG_PREFIX):])

    def close_popups(self) -> None:
        for p in self.popups:
            if not p.is_closed():
                p.close()
        self.popups.clear()


def click_links(page: Any, selector: str, clicked: set[str], *, home: str | None = None,
                budget: float = 120.0, left: list[str] | None = None) -> int:
    """Click (a real mouse click) each link under ``selector`` that has a scheme other than
    http/https (javascript:, data:, vbscript:, ... however disguised) and was not clicked before.

    Not clicked: http(s) links (to other hosts: the user's choice; relative or same-origin:
    a GET on our own server that cannot run script). If a click navigates away, back to
    ``home``. Links past the time ``budget`` go to ``left``. Returns how many were clicked.
    """
    hrefs = page.eval_on_selector_all(selector, "els => els.map(e => e.getAttribute('href') || '')")
    n = 0
    deadline = time.monotonic() + budget
    for i, href in enumerate(hrefs):
        scheme = urllib.parse.urlsplit(href).scheme.lower()  # strips what browsers strip (C0, tab, newline)
        if not scheme or scheme in ("http", "https") or href in clicked:
            continue
        if time.monotonic() > deadline:
            if left is not None:
                left.append(href)
            continue
        clicked.add(href)
        link = page.locator(selector).nth(i)
        try:
            link.click(force=True, timeout=1500, no_wait_after=True)
        except Exception:  # noqa: BLE001 - zero-size or covered: a scripted click still activates it
            try:
                link.dispatch_event("click", timeout=1500)
            except Exception:  # noqa: BLE001, S112
                continue
        n += 1
        if home is not None and page.url != home:
            page.goto(home, wait_until="domcontentloaded")
        elif home is None and page.locator(".jp-Dialog").count():
            page.keyboard.press("Escape")
    page.wait_for_timeout(100)
    return n


# ------------------------------------------------------------------------------ export


def template_urls() -> set[str]:
    """Absolute URLs the nbconvert HTML template itself loads (MathJax, require.js, mermaid):
    an export of an empty notebook contains them, so they come from the template."""
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_notebook_node(nbformat.v4.new_notebook())
    return set(re.findall(r"https?://[^\s\"'<>)]+", html))


def export_html(ipynb: Path, out_dir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", "--output-dir", str(out_dir), str(ipynb)],
                   check=True, capture_output=True, timeout=180)
    return out_dir / (ipynb.stem + ".html")


class StaticServer:
    """The export directory over HTTP on 127.0.0.1 (the way a shared HTML file is opened)."""

    def __init__(self, directory: Path) -> None:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------- the runs


def run_path(page: Any, server: Any, guard: Guard, name: str, label: str, *, nb7: bool,
             n_done: int) -> dict[str, Any]:
    """Open notebook ``name``, run it, wait, click its output links; return path facts."""
    guard.label = label
    t0 = time.monotonic()
    if nb7:
        open_notebook7(page, server, name)
    else:
        open_notebook(page, server, name)
    home = page.url
    navigations: list[str] = []
    page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)
    run_all_cells(page)
    wait_cells_settled(page, label)
    done = page.locator(".jp-OutputArea-output", has_text=DONE)
    page.wait_for_function("([sel, t, n]) => [...document.querySelectorAll(sel)]"
                           ".filter(e => e.textContent.includes(t)).length >= n",
                           arg=[".jp-OutputArea-output", DONE, n_done], timeout=120_000)
    page.wait_for_timeout(500)  # onerror of broken images, animations, toggles
    n_clicked = click_links(page, ".jp-OutputArea-output a, .upstage-chat a", set())
    page.wait_for_timeout(300)
    guard.sweep([page])
    guard.close_popups()
    # Still the same, usable notebook: no navigation away, cells there, a new cell runs.
    usable = page.url.split("?")[0] == home.split("?")[0] and page.locator(".jp-NotebookPanel .jp-Cell").count() > 0
    print(f"{label}: {time.monotonic() - t0:.1f} s, {n_clicked} links clicked", flush=True)
    raised = [t for t in done.all_inner_texts() if "raised: {}" not in t and "raised" in t]
    # Thinking blocks (cells: details.um-thinking; widget: details.upstage-reasoning): how
    # many are shown, and how many are still open after their answer arrived.
    thinking = page.evaluate("""() => {
        const all = [...document.querySelectorAll('details.um-thinking, details.upstage-reasoning')]
            .filter(d => !d.hidden);
        return [all.length, all.filter(d => d.open).length];
    }""")
    return {"label": label, "seconds": round(time.monotonic() - t0, 1), "links_clicked": n_clicked,
            "raised": raised, "main_frame_navigations": navigations[1:], "usable": usable,
            "trimmed_outputs": page.locator(".jp-TrimmedOutputs").count(),
            "thinking_blocks": thinking[0], "thinking_open": thinking[1]}


SETTLED_JS = """() => {
    const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
    if (!nb) return null;
    const p = [...nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent);
    if (p.some(t => t.includes('*'))) return null;
    return p;
}"""


# What a stalled notebook shows, per code cell: prompt, outputs, chat views and their status.
STALL_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')].map(c => ({
    prompt: (c.querySelector('.jp-InputArea-prompt') || {}).textContent,
    outputs: c.querySelectorAll('.jp-OutputArea-output').length,
    chats: c.querySelectorAll('.upstage-chat').length,
    turns: c.querySelectorAll('.upstage-chat .upstage-turn').length,
    status: [...c.querySelectorAll('.upstage-status-text')].map(e => e.textContent).join('|').slice(0, 200),
    text: (c.querySelector('.jp-OutputArea') || {innerText: ''}).innerText.slice(0, 160)}))"""


def wait_cells_settled(page: Any, label: str) -> None:
    """Wait until no cell runs or waits; fail if some cell never ran (Run All stopped at an error)."""
    page.locator(".jp-InputArea-prompt", has_text="*").first.wait_for(timeout=30_000)
    try:
        prompts = page.wait_for_function(SETTLED_JS, timeout=240_000, polling=250).json_value()
    except Exception as exc:
        now = page.evaluate(STALL_JS)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"stall_{label.replace(':', '_')}.png"), full_page=False)
        raise AssertionError(f"{label}: cells still running after 240 s; cells now: {json.dumps(now)}") from exc
    not_run = [i for i, t in enumerate(prompts) if not re.search(r"\[\d+\]", t)]
    if not_run:
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
        raise AssertionError(f"{label}: cells {not_run} never ran (an earlier cell failed?): {errors[-1:]!r}"[:3000])


def save_notebook(page: Any, path: Path) -> None:
    """File > Save Notebook, then wait until the file on disk holds the outputs."""
    for dialog in page.locator(".jp-Dialog").all():
        dialog.locator("button").last.click()
    page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Save Notebook").first.click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            nb = nbformat.read(path, as_version=4)
            if DONE in json.dumps([c.get("outputs", []) for c in nb.cells]):
                return
        except Exception:  # noqa: BLE001, S110 - being written
            pass
        page.wait_for_timeout(200)  # not time.sleep: the route handler runs only inside Playwright calls
    raise TimeoutError(f"{path.name} was not saved with its outputs")


def check_export(page: Any, guard: Guard, static: StaticServer, html: Path, label: str,
                 clicked: set[str]) -> dict[str, Any]:
    guard.label = label
    url = static.url(html.name)
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_timeout(1500)
    left: list[str] = []
    n = click_links(page, ".jp-OutputArea-output a, .jp-RenderedHTMLCommon a", clicked, home=url, left=left)
    page.wait_for_timeout(300)
    guard.sweep([page])
    guard.close_popups()
    text = html.read_text(errors="replace")
    print(f"{label}: {n} links clicked, {len(left)} left unclicked", flush=True)
    return {"label": label, "links_clicked": n, "links_not_clicked": left[:20], "mermaid_blocks": len(re.findall(r'class="mermaid"', text))}


def prepare(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path / "root"
    root.mkdir()
    data = [{"id": a.id, "text": a.text, "payloads": list(a.payload_ids), "streamable": a.streamable}
            for a in answers()]
    (root / ANSWERS_FILE).write_text(json.dumps(data))
    return root, data


def summarise(guard: Guard, facts: list[dict[str, Any]], name: str) -> dict[str, Any]:
    ids = by_id()
    per_path = {}
    for label in sorted({f["label"] for f in facts} | set(guard.flags) | set(guard.remote)):
        hit = sorted(guard.flags.get(label, set()))
        per_path[label] = {"ran": len(hit), "payloads": hit,
                           "unknown_flags": [h for h in hit if h not in ids],
                           "remote_requests": len(guard.remote.get(label, [])),
                           "remote_hosts": sorted({urllib.parse.urlsplit(u).hostname or u
                                                   for u in guard.remote.get(label, [])})}
    out = {"corpus": counts(), "paths": per_path, "facts": facts}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"xss-results-{name}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: {kk: v[kk] for kk in ("ran", "remote_requests", "remote_hosts")} for k, v in per_path.items()},
                     indent=1))
    return out


def assert_clean(guard: Guard, facts: list[dict[str, Any]], result: dict[str, Any]) -> None:
    problems = []
    for label, r in result["paths"].items():
        if r["ran"]:
            problems.append(f"{label}: {r['ran']} payloads ran: {r['payloads'][:40]}")
        if r["remote_requests"]:
            problems.append(f"{label}: {r['remote_requests']} requests left loopback: "
                            f"{guard.remote[label][:5]}")
    for f in facts:
        if f.get("links_not_clicked"):
            problems.append(f"{f['label']}: links left unclicked (time budget): {f['links_not_clicked'][:5]}")
        if f.get("error"):
            problems.append(f"{f['label']}: {f['error'][:500]}")
        if f.get("main_frame_navigations"):
            problems.append(f"{f['label']}: the page navigated away: {f['main_frame_navigations'][:3]}")
        if f.get("usable") is False:
            problems.append(f"{f['label']}: the notebook is no longer usable")
        if f.get("trimmed_outputs"):
            problems.append(f"{f['label']}: outputs were trimmed, so some answers were never rendered")
        if f["label"].endswith("reasoning") and f.get("thinking_blocks", 1) == 0:
            problems.append(f"{f['label']}: no Thinking block shown for reasoning answers")
        if f["label"].endswith("reasoning") and f.get("thinking_open"):
            problems.append(f"{f['label']}: {f['thinking_open']} Thinking blocks still open after their answer")
        if f.get("mermaid_blocks"):
            problems.append(f"{f['label']}: {f['mermaid_blocks']} ```mermaid blocks left for mermaid.js in the export")
    assert not problems, "\n".join(problems)


def test_hostile_corpus_jupyterlab(tmp_path: Path) -> None:
    """Every path of JupyterLab, then the nbconvert exports of the saved notebooks."""
    root, data = prepare(tmp_path)
    n = len(data)
    facts: list[dict[str, Any]] = []
    emu = EmulatorProcess(tmp_path)
    static = None
    try:
        for p in LAB_PATHS:
            write_notebook(root / f"xss_{p}.ipynb", emu.root, path_cells(p, n))
        with browser_page(LabServer, tmp_path, root, emu, ARTIFACTS, "xss-lab", timeout_ms=30_000) as (lab, page):
            guard = Guard(page.context, template_urls=template_urls())
            wire = WireLog(page)  # kernel websocket frames and console, kept for a stalled path
            page.reload()  # the watcher and the route apply from here on
            for p in LAB_PATHS:
                wire.mark(p)
                try:
                    facts.append(run_path(page, lab, guard, f"xss_{p}.ipynb", f"lab:{p}", nb7=False,
                                          n_done=expected_done(p, n)))
                    if p in EXPORTED:
                        save_notebook(page, root / f"xss_{p}.ipynb")
                except Exception as exc:  # noqa: BLE001 - recorded; the other paths still run
                    facts.append({"label": f"lab:{p}", "error": f"{type(exc).__name__}: {exc}"[:2000]})
                    guard.sweep([page])
                wire.dump(ARTIFACTS / f"wire_{p}.log")
                wire.lines.clear()
                trace = root / "widget_trace.log"
                if trace.exists():  # the widget paths' per-answer log (kept for a hung run)
                    ARTIFACTS.mkdir(exist_ok=True)
                    shutil.copy(trace, ARTIFACTS / f"widget_trace_{p}.log")
                    print(f"lab:{p} widget trace tail:", *trace.read_text().splitlines()[-6:], sep="\n  ")
                    trace.unlink()
            export_dir = tmp_path / "exports"
            export_dir.mkdir()
            static = StaticServer(export_dir)
            clicked: set[str] = set()
            for p in [e for e in EXPORTED if e in LAB_PATHS]:
                t0 = time.monotonic()
                try:
                    html = export_html(root / f"xss_{p}.ipynb", export_dir)
                    f = check_export(page, guard, static, html, f"export:{p}", clicked)
                except Exception as exc:  # noqa: BLE001 - recorded; the other exports still run
                    f = {"label": f"export:{p}", "error": f"{type(exc).__name__}: {exc}"[:2000]}
                f["seconds"] = round(time.monotonic() - t0, 1)
                print(f, flush=True)
                facts.append(f)
            result = summarise(guard, facts, "jupyterlab")
            assert_clean(guard, facts, result)
    finally:
        if static is not None:
            static.close()
        emu.close()


def test_hostile_corpus_notebook7(tmp_path: Path) -> None:
    """%%upstage at full speed and one token at a time in Notebook 7."""
    root, data = prepare(tmp_path)
    n = len(data)
    facts: list[dict[str, Any]] = []
    emu = EmulatorProcess(tmp_path)
    try:
        for p in NB7_PATHS:
            write_notebook(root / f"xss_{p}.ipynb", emu.root, path_cells(p, n))
        with browser_page(NotebookServer, tmp_path, root, emu, ARTIFACTS, "xss-nb7", timeout_ms=30_000) as (srv, page):
            guard = Guard(page.context, template_urls=set())
            for p in NB7_PATHS:
                try:
                    facts.append(run_path(page, srv, guard, f"xss_{p}.ipynb", f"nb7:{p}", nb7=True,
                                          n_done=expected_done(p, n)))
                except Exception as exc:  # noqa: BLE001 - recorded; the other paths still run
                    facts.append({"label": f"nb7:{p}", "error": f"{type(exc).__name__}: {exc}"[:2000]})
                    guard.sweep([page])
            result = summarise(guard, facts, "notebook7")
            assert_clean(guard, facts, result)
    finally:
        emu.close()


def test_corpus_is_what_the_report_says() -> None:
    """Guard against a shrinking corpus: every class of the issue is present."""
    kinds = counts()
    assert kinds["total"] >= 300
    for k in ("html", "link", "markdown", "math", "mermaid", "exfil", "huge"):
        assert kinds[k] > 0, k
    texts = "\n".join(x.text for x in CORPUS)
    for needle in ("```~~~", "~~~`", '```"><img', "\t\n", "\u00a0javascript:", "\ufeffjavascript:",
                   "\u2028javascript:", "```mermaid", "$<img", EXFIL_HOST, "formaction", "srcdoc"):
        assert needle in texts, needle


# ------------------------------------------------------------- a hostile document (issue 20)

DOC_SETUP = """\
%load_ext upstage_magic
import json, pathlib, urllib.request
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
_req = urllib.request.Request({ctl!r} + '/_emulator/config', data=json.dumps({{'reply': 'echo'}}).encode(),
                              method='POST', headers={{'Content-Type': 'application/json'}})
_OPENER.open(_req, timeout=30).read()
"""


def test_hostile_pdf_through_parse_and_file_jupyterlab(tmp_path: Path) -> None:
    """A PDF whose text is markup and script payloads, through ``%upstage parse`` (the preview,
    the Document as a cell's value) and ``%%upstage --file`` (the attachments block and an
    echoed answer that repeats the document): no flag is set, nothing leaves loopback."""
    from tests.support.pdfs import hostile_pdf

    root = tmp_path / "root"
    root.mkdir()
    (root / "hostile.pdf").write_bytes(hostile_pdf())
    emu = EmulatorProcess(tmp_path)
    facts: list[dict[str, Any]] = []
    try:
        cells = ["%upstage parse hostile.pdf -o doc", "doc",
                 "%%upstage --file hostile.pdf --no-history\nSummarise the attached document.",
                 f"print({DONE!r})"]
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(DOC_SETUP.format(ctl=emu.root))]
        nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
        nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
        nbformat.write(nb, root / "xss_document.ipynb")
        with browser_page(LabServer, tmp_path, root, emu, ARTIFACTS, "xss-doc", timeout_ms=30_000) as (lab, page):
            guard = Guard(page.context, template_urls=set())
            page.reload()
            facts.append(run_path(page, lab, guard, "xss_document.ipynb", "lab:document", nb7=False, n_done=1))
            shown = " ".join(page.locator(".jp-OutputArea-output").all_inner_texts())
            assert "window.__xss_pdf_script=1" in shown  # the payloads are there, as text
            assert "Attached: file hostile.pdf" in shown and "2 pages" in shown
            flags = sorted(guard.flags.get("lab:document", set()))
            assert not flags, flags
            assert not guard.remote.get("lab:document"), guard.remote.get("lab:document")
            assert not facts[0]["main_frame_navigations"] and facts[0]["usable"]
    finally:
        emu.close()
