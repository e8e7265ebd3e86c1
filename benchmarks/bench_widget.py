"""Chat widget speed in a real browser: a long answer with tables and code, today's widget vs the old one.

JupyterLab on 127.0.0.1, Debian chromium, one kernel with both widgets side by side (each with
its own conversation) and a provider in the kernel that streams a generated Markdown answer
(paragraphs, tables, code blocks) of ``--tokens`` tokens, at full speed or paced. Every ~100
tokens a marker word is stamped with the wall-clock time it was handed to the widget; a
MutationObserver in the page stamps when it appears on the page. Printed per run:

- comm bytes: JSON of every comm message the kernel published (state updates and custom
  messages of all widget models) while the answer streamed, and how many messages;
- front-end updates: mutation batches the widget's DOM received while streaming;
- token-to-page delay: marker arrival in the kernel -> on the page (median, p95, max);
- longest main-thread task during the stream (PerformanceObserver "longtask"), and the sum.

"before" is the widget of commit fb1a5a6 (main before issue 18: the whole transcript trait
re-sent and re-rendered at the end of every turn), loaded from git into the same kernel and
measured in the same run. The run: a small probe turn in each fresh chat, both chats filled
to ``--chat-tokens`` with ``--tokens``-token answers at full speed, the probe again, then a
``--slow-tokens`` answer at ``--tps`` in the new widget's long chat (the "before" widget is
closed first and the page's garbage collected, unless ``--old-slow``). Goals (issue 18): longest
task < 50 ms during a 20,000-token answer at 50 tok/s and on a turn after 100,000 tokens of
chat; bytes per turn independent of the chat's length.

    .venv/bin/python benchmarks/bench_widget.py [--tokens 2000] [--chat-tokens 100000]
        [--slow-tokens 20000] [--tps 50] [--old-slow] [--json out.json] [--trace PREFIX]
        [--trace-invalidations]

``--trace PREFIX`` records a Chrome trace (CDP) of the probe-long and slow steps to
``PREFIX-<step>-<widget>.json.gz`` and prints what each main-thread task over 50 ms was made of
(benchmarks/trace_tasks.py), with the widget's own tasks told apart from JupyterLab's;
``--trace-invalidations`` adds what marked style and layout dirty before each (that is how the
end-of-answer task was found: the dropped turns' layout torn down in one frame).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nbformat

from benchmarks.trace_tasks import TraceRecorder, long_tasks
from tests.support.browser import (
    LabServer,
    browser_page,
    open_notebook,
    run_all_cells,
    wait_all_cells_ran,
)
from tests.support.harness import EmulatorProcess

OLD_COMMIT = "fb1a5a6"  # main before issue 18: the transcript trait re-sent whole per turn

SETUP = r'''
import asyncio, json, re, time, importlib.util, sys
import ipykernel.comm.comm as _cc
from upstage_magic.settings import Settings
from upstage_magic.session import ChatSession
from upstage_magic.notebook.widget import ChatWidget

# The widget as it was before issue 18 (whole transcript re-sent per turn), loaded into the package.
_spec = importlib.util.spec_from_file_location("upstage_magic.notebook._bench_before_widget", {old_path!r})
_old = importlib.util.module_from_spec(_spec); sys.modules[_spec.name] = _old; _spec.loader.exec_module(_old)

def make_answer(n_tokens):
    """Markdown with headings, paragraphs (with markers), tables and code; n_tokens word tokens."""
    toks, sec, mark = [], 0, 0
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima".split()
    while len(toks) < n_tokens:
        sec += 1
        block = [f"## Section {{sec}}\n\n"]
        para = []
        for i in range(90):
            if i % 45 == 10:
                mark += 1
                para.append(f"MK{{mark:05d}}X ")
            para.append(words[(sec + i) % len(words)] + ("\n\n" if i == 89 else " "))
        block += para
        block += ["| Name ", "| Speed ", "| Memory |\n", "|---|---|---|\n"]
        for r in range(5):
            block += [f"| row{{r}} ", f"| {{r * 7}} ms ", f"| {{r * 3}} MB |\n"]
        block += ["\n", "```python\n"]
        for r in range(8):
            block += [f"def f{{sec}}_{{r}}(x):", " return", f" x * {{r}}\n"]
        block += ["```\n\n"]
        toks += block
    return toks[:n_tokens]

MARK = re.compile(r"MK\d{{5}}X")
arrivals = {{}}

class BenchProvider:
    models = ["bench"]
    tps = None
    tokens = []
    @staticmethod
    def get_model(name):
        return name or "bench"
    async def create_async_generator(self, model, messages, **kw):
        arrivals.clear()
        t0 = time.perf_counter()
        for i, tok in enumerate(self.tokens):
            if self.tps:
                d = t0 + i / self.tps - time.perf_counter()
                if d > 0:
                    await asyncio.sleep(d)
            elif i % 64 == 0:
                await asyncio.sleep(0)  # a network read's worth of tokens
            m = MARK.search(tok)
            if m:
                arrivals[m.group(0)] = time.time() * 1000
            yield tok

bench = BenchProvider()
comm_bytes = {{"bytes": 0, "msgs": 0}}
_orig_publish = _cc.BaseComm.publish_msg
def _counting_publish(self, msg_type, data=None, metadata=None, buffers=None, **keys):
    if msg_type == "comm_msg":
        comm_bytes["bytes"] += len(json.dumps(data, default=str)) + sum(len(b) for b in (buffers or []))
        comm_bytes["msgs"] += 1
    return _orig_publish(self, msg_type, data, metadata, buffers, **keys)
_cc.BaseComm.publish_msg = _counting_publish
print("setup ok")
'''

NEW_CELL = "new = ChatWidget(session=ChatSession(), provider=bench, settings=Settings(), fetch_models=False)\nnew"
OLD_CELL = "old = _old.ChatWidget(session=ChatSession(), provider=bench, settings=Settings(), fetch_models=False)\nold"

INIT_JS = """
window.__bench = {longtasks: [], seen: {}, batches: 0, active: null};
new PerformanceObserver(list => { for (const e of list.getEntries())
    window.__bench.longtasks.push([e.startTime, e.duration]); }).observe({type: 'longtask', buffered: true});
"""

OBSERVE_JS = """(root) => {
    const b = window.__bench;
    if (b.observer) b.observer.disconnect();
    b.seen = {}; b.batches = 0; b.t0 = performance.now();
    const re = /MK\\d{5}X/g;
    b.observer = new MutationObserver(records => {
        const now = performance.timeOrigin + performance.now();
        b.batches += 1;
        for (const r of records) for (const n of r.addedNodes) {
            const t = n.textContent || '';
            for (const m of t.matchAll(re)) if (!(m[0] in b.seen)) b.seen[m[0]] = now;
        }
    });
    b.observer.observe(root, {childList: true, subtree: true, characterData: true});
}"""

RESULT_JS = """() => { const b = window.__bench; b.observer.disconnect();
    const lt = b.longtasks.filter(x => x[0] >= b.t0).map(x => x[1]);
    const when = b.longtasks.filter(x => x[0] >= b.t0).map(x => [Math.round((x[0] - b.t0) / 100) / 10, Math.round(x[1])]);
    return {seen: b.seen, batches: b.batches, longest: lt.length ? Math.max(...lt) : 0,
            longsum: lt.reduce((a, c) => a + c, 0), nlong: lt.length, when}; }"""


# The id of the last finished turn; the answer has ended in the page when a new one is last,
# nothing is live and the chat is not busy.
LAST_ID_JS = """(out) => { const t = [...out.querySelectorAll('.upstage-turn:not(.upstage-live)')];
    return t.length ? t[t.length - 1].dataset.id : ''; }"""
END_JS = """([out, last]) => { const c = out.querySelector('.upstage-chat');
    const t = [...out.querySelectorAll('.upstage-turn:not(.upstage-live)')];
    return !!c && !c.classList.contains('upstage-busy') && !c.querySelector('.upstage-live')
        && t.length > 0 && t[t.length - 1].dataset.id !== last; }"""


class BenchLab(LabServer):
    def app_args(self, workdir: Path) -> list[str]:
        return [*super().app_args(workdir), "--LabApp.expose_app_in_browser=True"]


def kernel_exec(page, code: str) -> str:
    """Run ``code`` in the notebook's kernel from the page; return its stdout."""
    return page.evaluate("""async (code) => {
        const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
        let out = '';
        const f = k.requestExecute({code, store_history: false});
        f.onIOPub = m => { if (m.header.msg_type === 'stream') out += m.content.text;
                           if (m.header.msg_type === 'error') out += 'ERROR ' + m.content.evalue; };
        await f.done;
        return out;
    }""", code)


def run(page, which: str, tps: float | None, n_tokens: int) -> dict:
    """Stream one answer into ``which`` ("new"/"old"); return the measurements."""
    kernel_exec(page, f"bench.tps = {tps!r}\nbench.tokens = make_answer({n_tokens})\n"
                      "comm_bytes.update(bytes=0, msgs=0)")
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
    idx = 1 if which == "new" else 2
    out = cells.nth(idx).locator(".jp-OutputArea")
    out.scroll_into_view_if_needed()
    page.evaluate(OBSERVE_JS, out.element_handle())
    last_id = page.evaluate(LAST_ID_JS, out.element_handle())
    t0 = time.monotonic()
    kernel_exec(page, f"_t = {which}.send('go')")
    # The end is watched in the page, not by asking the kernel: a request every half second
    # made JupyterLab redraw its kernel status twice a second, work a user's page never does.
    page.wait_for_function(END_JS, arg=[out.element_handle(), last_id], polling=250,
                           timeout=max(120, n_tokens / (tps or 1000) * 3) * 1000)
    wall = time.monotonic() - t0
    kernel_exec(page, f"assert not {which}.streaming")
    page.wait_for_timeout(800)
    res = page.evaluate(RESULT_JS)
    k = json.loads(kernel_exec(page, "print(json.dumps({'arrivals': arrivals, 'comm': comm_bytes, "
                                     f"'status': [t.status for t in {which}.session.turns][-1:]}}))"))
    delays = [res["seen"][m] - t for m, t in k["arrivals"].items() if m in res["seen"]]
    missing = len(k["arrivals"]) - len(delays)
    delays.sort()
    return {
        "widget": which, "tps": tps or "full", "tokens": n_tokens, "status": k["status"],
        "wall_s": round(wall, 1),
        "comm_bytes": k["comm"]["bytes"], "comm_msgs": k["comm"]["msgs"],
        "dom_update_batches": res["batches"],
        "delay_ms_median": round(statistics.median(delays), 1) if delays else None,
        "delay_ms_p95": round(delays[int(len(delays) * 0.95) - 1], 1) if delays else None,
        "delay_ms_max": round(delays[-1], 1) if delays else None,
        "markers_missing": missing,
        "longest_task_ms": round(res["longest"], 1), "long_tasks": res["nlong"],
        "long_task_total_ms": round(res["longsum"], 1),
        "long_tasks_at_s_ms": res["when"][:40],  # [seconds into the stream, duration ms]
    }


def drop_before_widget(page) -> None:
    """Before the slow answer: close the "before" widget (its 100,000-token DOM leaves the page)
    and collect the page's garbage, so the slow answer runs in a page like a user's, with one
    chat. Without this the page's garbage collections during the answer (up to 166 ms, traced)
    walked the before widget's DOM too, which no user page holds."""
    kernel_exec(page, "old.close()")
    page.wait_for_function("() => document.querySelectorAll('.upstage-chat').length === 1", timeout=30_000)
    cdp = page.context.new_cdp_session(page)
    cdp.send("HeapProfiler.collectGarbage")
    page.wait_for_timeout(1000)
    cdp.detach()


def git_show(path: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2_000, help="answer length of the full-speed fill turns")
    ap.add_argument("--slow-tokens", type=int, default=20_000, help="answer length at --tps")
    ap.add_argument("--tps", type=float, default=50.0)
    ap.add_argument("--old-slow", action="store_true", help="also run the before widget at --tps")
    ap.add_argument("--chat-tokens", type=int, default=100_000, help="chat length before the last probe")
    ap.add_argument("--probe-tokens", type=int, default=1_000, help="the probe turn's length")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--trace", help="record Chrome traces of the probe-long and slow steps to PREFIX-*.json.gz")
    ap.add_argument("--trace-invalidations", action="store_true",
                    help="with --trace: also record what invalidated style and layout (bigger traces)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        old_path = tmp_path / "before" / "widget.py"
        (old_path.parent / "static").mkdir(parents=True)
        for rel in ("widget.py", "static/chat.js", "static/chat.css"):
            (old_path.parent / rel).write_text(git_show(f"upstage_magic/notebook/{rel}"))
        root = tmp_path / "root"
        root.mkdir()
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(SETUP.format(old_path=str(old_path))),
                    nbformat.v4.new_code_cell(NEW_CELL), nbformat.v4.new_code_cell(OLD_CELL)]
        nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
        nbformat.write(nb, root / "bench.ipynb")
        emu = EmulatorProcess(tmp_path)
        results = []
        try:
            with browser_page(BenchLab, tmp_path, root, emu, ROOT / "artifacts", "bench_widget",
                              timeout_ms=120_000) as (lab, page):
                page.add_init_script(INIT_JS)
                page.set_viewport_size({"width": 1280, "height": 1000})
                open_notebook(page, lab, "bench.ipynb")
                run_all_cells(page)
                wait_all_cells_ran(page)
                page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()
                # 1. A small probe turn in a fresh chat (bytes per turn, chat empty).
                # 2. Fill each chat to --chat-tokens with answers of --tokens at full speed.
                # 3. The same probe after that chat (bytes per turn, longest task).
                # 4. A --slow-tokens answer at --tps on the long chat (longest task while streaming).
                plan = [("probe", "new", None, args.probe_tokens), ("probe", "old", None, args.probe_tokens)]
                fills = max(1, args.chat_tokens // args.tokens)
                for i in range(fills):
                    plan += [(f"fill{i + 1}", "new", None, args.tokens), (f"fill{i + 1}", "old", None, args.tokens)]
                plan += [("probe-long", "new", None, args.probe_tokens), ("probe-long", "old", None, args.probe_tokens),
                         ("slow", "new", args.tps, args.slow_tokens)]
                if args.old_slow:
                    plan.append(("slow", "old", args.tps, args.slow_tokens))
                recorder = TraceRecorder(page, args.trace_invalidations) if args.trace else None
                for step, which, tps, n in plan:
                    if step == "slow" and which == "new" and not args.old_slow:
                        drop_before_widget(page)
                    traced = recorder is not None and step in ("probe-long", "slow")
                    if traced:
                        recorder.start()
                    r = {"step": step, **run(page, which, tps, n)}
                    if traced:
                        path = Path(f"{args.trace}-{step}-{which}.json.gz")
                        r["trace"] = {"file": str(path), **recorder.stop(path)}
                        r["trace"].update(long_tasks(path, 50.0, limit=6))
                    results.append(r)
                    print(json.dumps(r), flush=True)
                    if step.startswith("probe"):
                        page.screenshot(path=str(ROOT / "artifacts" / f"bench_widget_{step}.png"))
        finally:
            emu.close()
    report(results, args)


def report(results: list[dict], args: argparse.Namespace) -> None:
    print()
    print(f"{'step':11} {'widget':7} {'speed':>6} {'tokens':>7} {'comm KB':>9} {'msgs':>6} {'DOM upd':>8} "
          f"{'delay med/p95/max ms':>22} {'longest task ms':>16}")
    for r in results:
        d = f"{r['delay_ms_median']}/{r['delay_ms_p95']}/{r['delay_ms_max']}"
        print(f"{r['step']:11} {'before' if r['widget'] == 'old' else 'new':7} {r['tps']!s:>6} {r['tokens']:>7} "
              f"{r['comm_bytes'] / 1024:>9.1f} {r['comm_msgs']:>6} "
              f"{r['dom_update_batches']:>8} {d:>22} {r['longest_task_ms']:>16}")

    def get(step: str, which: str) -> dict:
        return next(r for r in results if r["step"] == step and r["widget"] == which)

    print()
    for which, name in (("new", "new"), ("old", "before")):
        short, long_ = get("probe", which), get("probe-long", which)
        ratio = long_["comm_bytes"] / max(1, short["comm_bytes"])
        print(f"{name:7} probe turn bytes: empty chat {short['comm_bytes']:,} B, after "
              f"{args.chat_tokens:,} tokens {long_['comm_bytes']:,} B  (x{ratio:.2f}); "
              f"longest task after the long chat {long_['longest_task_ms']} ms")
    nl, ol = get("probe-long", "new"), get("probe-long", "old")
    print(f"bytes per turn after the long chat, before/new: x{ol['comm_bytes'] / max(1, nl['comm_bytes']):.1f}")
    slow = get("slow", "new")
    fill_new = [r["longest_task_ms"] for r in results if r["step"].startswith("fill") and r["widget"] == "new"]
    goals = {
        f"longest task < 50 ms during a {args.slow_tokens:,}-token answer at {args.tps:g} tok/s (new)":
            slow["longest_task_ms"] < 50,
        f"longest task < 50 ms on a turn after {args.chat_tokens:,} tokens of chat (new)": nl["longest_task_ms"] < 50,
        "bytes per turn independent of the chat's length (new, within 10%)":
            get("probe-long", "new")["comm_bytes"] <= 1.1 * get("probe", "new")["comm_bytes"],
        f"delay p95 < 150 ms at {args.tps:g} tok/s": (slow["delay_ms_p95"] or 1e9) < 150,
    }
    print(f"longest task per full-speed fill answer (new): {fill_new} ms")
    for r in results:
        if "trace" in r:  # the trace's tasks over 50 ms by what they were (trace_tasks.kind)
            tr = r["trace"]
            print(f"trace {r['step']} {r['widget']}: {tr['n_long']} tasks > 50 ms; longest by kind (ms): "
                  f"{tr['longest_by_kind_ms']}; their CPU time (ms): {tr['longest_cpu_by_kind_ms']}; "
                  f"data loss: {tr['data_loss']}; {tr['file']}")
            for t in tr["tasks"]:
                if t.get("invalidations"):
                    print(f"  {t['ms']} ms task at {t['at_s']} s, marked dirty before it: {t['invalidations'][:3]}")
    for goal, ok in goals.items():
        print(("PASS " if ok else "MISS ") + goal)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "goals": goals}, indent=1))


if __name__ == "__main__":
    main()
