"""Chrome tracing for the browser benchmarks: record a trace over CDP, then say what the long
main-thread tasks were made of.

``TraceRecorder(page)`` starts ``Tracing`` on the page's CDP session (timeline, V8 execution,
GC and the JS sampling profiler); ``stop(path)`` streams the trace to ``path`` (gzip JSON).
``long_tasks(path, threshold_ms)`` finds every task of the renderer's main thread
(``CrRendererMain``) longer than the threshold and breaks it down:

- ``self_ms``: self time by event (``FunctionCall url:function``, ``UpdateLayoutTree``,
  ``Layout``, ``Paint``, ``ParseHTML``, ``MinorGC``/``MajorGC``, ...), largest first;
- ``top``: the task's direct children, largest first;
- ``js``: the sampling profiler's leaf functions inside the task (``function url:line``);
- ``kind``: what most of its self time was: ``widget script`` (the anywidget module, loaded
  from a blob: URL), ``JupyterLab script``, ``rendering`` (style, layout, paint, hit testing,
  visibility checks of the page), ``GC`` or ``other``; ``widget_on_stack``: a sampled stack
  or function call inside it is the widget's. ``cpu_ms`` is the thread's own time (less than
  ``ms`` when the thread was descheduled: 2 CPUs shared with the kernel and the server).
- ``invalidations`` (traces recorded with ``TraceRecorder(page, invalidations=True)``): what
  marked style or layout dirty in the 250 ms before the task and during it, counted by reason
  and node (``Layout: Removed from layout TD``), the way to tell *why* a rendering frame was long.

    .venv/bin/python benchmarks/trace_tasks.py TRACE.json.gz [--threshold 50]
"""
from __future__ import annotations

import argparse
import base64
import gzip
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

CATEGORIES = [
    "toplevel", "devtools.timeline", "disabled-by-default-devtools.timeline", "v8.execute", "v8",
    "disabled-by-default-v8.cpu_profiler", "blink.user_timing", "loading",
]
#: Invalidation tracking: one event per node whose style or layout was marked dirty (and why).
INVALIDATION_CATEGORIES = ["disabled-by-default-devtools.timeline.invalidationTracking"]
INVALIDATION_WINDOW_US = 250_000
#: A stack frame is the widget's own when its script looks like chat.js (anywidget loads the
#: module from a blob: or data: URL, so the function names of chat.js count too).
OUR_FUNCTIONS = {"applyLive", "applyTurns", "renderTranscript", "renderLive", "adoptLive", "decorateCode",
                 "placeCaret", "turnElement", "followed", "toBottom", "renderBusy", "renderStatus", "onMsg",
                 "renderQueue", "nearBottom", "answerShell", "renderHeader", "renderSettings"}


class TraceRecorder:
    """Chrome tracing of one Playwright page over CDP."""

    def __init__(self, page: Any, invalidations: bool = False) -> None:
        self.page = page
        self.categories = CATEGORIES + (INVALIDATION_CATEGORIES if invalidations else [])
        self.cdp = page.context.new_cdp_session(page)
        self._done: dict[str, Any] = {}
        self.cdp.on("Tracing.tracingComplete", lambda params: self._done.update(params))

    def start(self) -> None:
        self._done.clear()
        self.cdp.send("Tracing.start", {
            "transferMode": "ReturnAsStream", "streamCompression": "gzip",
            "traceConfig": {"recordMode": "recordAsMuchAsPossible", "includedCategories": self.categories},
        })

    def stop(self, path: Path) -> dict[str, Any]:
        """End tracing and write the trace (gzip JSON) to ``path``; returns size and data loss."""
        self.cdp.send("Tracing.end")
        deadline = time.monotonic() + 300
        while not self._done and time.monotonic() < deadline:
            self.page.wait_for_timeout(200)  # CDP events arrive only inside Playwright calls
        if not self._done:
            raise RuntimeError("Tracing.tracingComplete never came")
        handle = self._done["stream"]
        size = 0
        with open(path, "wb") as f:
            while True:
                chunk = self.cdp.send("IO.read", {"handle": handle, "size": 4 << 20})
                data = chunk.get("data", "")
                raw = base64.b64decode(data) if chunk.get("base64Encoded") else data.encode()
                f.write(raw)
                size += len(raw)
                if chunk.get("eof"):
                    break
        self.cdp.send("IO.close", {"handle": handle})
        return {"bytes": size, "data_loss": bool(self._done.get("dataLossOccurred"))}


def load_events(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    data = json.loads(raw)
    return data["traceEvents"] if isinstance(data, dict) else data


def label(e: dict[str, Any]) -> str:
    """The event's name, with what it ran (script, event type) where the trace says."""
    name = e["name"]
    d = (e.get("args") or {}).get("data") or {}
    if name in ("FunctionCall", "EvaluateScript", "v8.compile", "v8.compileModule"):
        url = d.get("url") or ""
        url = "blob:" + url.rsplit("/", 1)[-1][:8] if url.startswith("blob:") else url.rsplit("/", 1)[-1][:60]
        return f"{name} {url}:{d.get('functionName', '')}".rstrip(":")
    if name == "EventDispatch":
        return f"EventDispatch {d.get('type', '')}"
    if name in ("TimerFire", "FireAnimationFrame", "FireIdleCallback"):
        return name
    return name


RENDERING = {"UpdateLayoutTree", "Layout", "PrePaint", "Paint", "Layerize", "Commit", "HitTest",
             "IntersectionObserverController::computeIntersections", "UpdateLayer", "ScrollLayer"}


def kind(self_ms: dict[str, float], ours_share: float, driver: bool) -> str:
    """What a task mostly was: the widget's script, other script (JupyterLab), rendering
    (style, layout, paint of the page), GC, the benchmark's own driver (CDP), or other.
    Script time goes to the widget when most JS samples inside the task have a widget frame
    on their stack (message handlers run as microtasks, whose events name no script)."""
    groups: Counter[str] = Counter()
    for name, ms in self_ms.items():
        if name.startswith(("FunctionCall", "EvaluateScript", "v8.", "RunMicrotasks")):
            groups["widget script" if ours_share >= 0.5 else "JupyterLab script"] += ms
        elif name == "Receive mojo message" and driver:
            groups["benchmark driver (CDP)"] += ms
        elif name in RENDERING:
            groups["rendering"] += ms
        elif "CpuProfiler" in name:
            groups["tracing itself"] += ms
        elif "GC" in name:
            groups["GC"] += ms
        else:
            groups["other"] += ms
    return groups.most_common(1)[0][0] if groups else "other"


def main_threads(events: list[dict[str, Any]]) -> set[tuple[int, int]]:
    return {(e["pid"], e["tid"]) for e in events
            if e.get("ph") == "M" and e.get("name") == "thread_name" and e["args"].get("name") == "CrRendererMain"}


def is_ours(frame: dict[str, Any]) -> bool:
    url = frame.get("url") or ""
    return url.startswith("blob:") or "chat.js" in url or frame.get("functionName") in OUR_FUNCTIONS


def profiles(events: list[dict[str, Any]], threads: set[tuple[int, int]]) -> list[tuple[float, list[dict]]]:
    """JS samples as (time in trace microseconds, stack leaf-first) on the main threads."""
    starts: dict[tuple[int, str], float] = {}
    nodes: dict[tuple[int, str], dict[int, dict]] = defaultdict(dict)
    chunks: list[dict[str, Any]] = []
    tid_of: dict[tuple[int, str], int] = {}
    for e in events:
        if e.get("name") == "Profile":
            key = (e["pid"], e.get("id", ""))
            starts[key] = e["args"]["data"]["startTime"]
            tid_of[key] = e["tid"]
        elif e.get("name") == "ProfileChunk":
            chunks.append(e)
    samples: list[tuple[float, list[dict]]] = []
    last: dict[tuple[int, str], float] = {}
    for c in chunks:
        key = (c["pid"], c.get("id", ""))
        if key not in starts or (c["pid"], tid_of[key]) not in threads:
            continue
        prof = c["args"]["data"].get("cpuProfile") or {}
        for n in prof.get("nodes", []):
            nodes[key][n["id"]] = n
        t = last.get(key, starts[key])
        for sid, dt in zip(prof.get("samples", []), c["args"]["data"].get("timeDeltas", []), strict=False):
            t += dt
            stack, nid = [], sid
            while nid in nodes[key]:
                n = nodes[key][nid]
                stack.append(n["callFrame"])
                nid = n.get("parent", -1)
            samples.append((t, stack))
        last[key] = t
    samples.sort(key=lambda s: s[0])
    return samples


def long_tasks(path: Path, threshold_ms: float = 50.0, limit: int = 12) -> dict[str, Any]:
    """The main thread's tasks over ``threshold_ms`` in the trace at ``path``, broken down."""
    events = load_events(path)
    threads = main_threads(events)
    by_thread: dict[tuple[int, int], list[dict]] = defaultdict(list)
    marks: list[dict] = []  # invalidation tracking (instant events), when recorded
    for e in events:
        if e.get("ph") == "X" and (e["pid"], e["tid"]) in threads and "dur" in e:
            by_thread[(e["pid"], e["tid"])].append(e)
        elif e.get("name", "").endswith("InvalidationTracking") and (e["pid"], e.get("tid")) in threads:
            marks.append(e)
    marks.sort(key=lambda e: e["ts"])
    samples = profiles(events, threads)
    sample_t = [s[0] for s in samples]
    out = []
    all_tasks: list[float] = []
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        tasks = [e for e in evs if e["name"] == "RunTask"]
        all_tasks += [t["dur"] / 1000 for t in tasks]
        t0 = evs[0]["ts"] if evs else 0
        for task in (t for t in tasks if t["dur"] >= threshold_ms * 1000):
            out.append(breakdown(task, evs, samples, sample_t, t0))
            if marks:
                out[-1]["invalidations"] = invalidations(marks, task)
    out.sort(key=lambda r: -r["ms"])
    all_tasks.sort(reverse=True)
    return {"threshold_ms": threshold_ms, "n_long": len(out), "longest_ms": all_tasks[:5],
            "longest_by_kind_ms": {k: max(r["ms"] for r in out if r["kind"] == k)
                                   for k in sorted({r["kind"] for r in out})},
            # The main thread's own CPU time: what the task costs without the other processes
            # on the machine taking the CPU from it (wall time includes that wait).
            "longest_cpu_by_kind_ms": {k: max(r["cpu_ms"] for r in out if r["kind"] == k)
                                       for k in sorted({r["kind"] for r in out})},
            "tasks": out[:limit]}


def breakdown(task: dict, evs: list[dict], samples: list, sample_t: list[float], t0: float) -> dict[str, Any]:
    import bisect  # noqa: PLC0415

    end = task["ts"] + task["dur"]
    lo = bisect.bisect_left(evs, (task["ts"], -task["dur"]), key=lambda e: (e["ts"], -e["dur"]))
    inside = []
    for e in evs[lo:]:
        if e["ts"] >= end:
            break
        if e is not task and e["ts"] + e["dur"] <= end + 1:
            inside.append(e)
    # Self time: each event's duration less its direct children's.
    self_us: Counter[str] = Counter()
    top: list[tuple[float, str]] = []
    stack: list[tuple[dict, list[float]]] = [(task, [0.0])]
    for e in inside:
        while stack and e["ts"] >= stack[-1][0]["ts"] + stack[-1][0]["dur"] and len(stack) > 1:
            done, kids = stack.pop()
            self_us[label(done)] += done["dur"] - kids[0]
        stack[-1][1][0] += e["dur"]
        if len(stack) == 1:
            top.append((e["dur"] / 1000, label(e)))
        stack.append((e, [0.0]))
    while len(stack) > 1:
        done, kids = stack.pop()
        self_us[label(done)] += done["dur"] - kids[0]
    self_us["(task itself)"] += task["dur"] - stack[0][1][0]
    i, j = bisect.bisect_left(sample_t, task["ts"]), bisect.bisect_right(sample_t, end)
    leaf: Counter[str] = Counter()
    ours = any("blob:" in label(e) for e in inside)
    n_js = n_ours = 0
    for _, st in samples[i:j]:
        if not st or st[0].get("functionName") in ("(program)", "(idle)", "(garbage collector)", "(root)"):
            continue
        f = st[0]
        leaf[f"{f.get('functionName') or '(anon)'} {(f.get('url') or '').rsplit('/', 1)[-1][:50]}:{f.get('lineNumber', '')}"] += 1
        n_js += 1
        if any(is_ours(f) for f in st):
            n_ours += 1
            ours = True
    driver = any(e["name"] == "Receive mojo message" and "DevTools" in json.dumps(e.get("args", {})) for e in inside)
    return {
        "at_s": round((task["ts"] - t0) / 1e6, 1), "ms": round(task["dur"] / 1000, 1),
        "cpu_ms": round(task.get("tdur", 0) / 1000, 1), "kind": kind({k: v / 1000 for k, v in self_us.items()}, n_ours / max(1, n_js), driver),
        "widget_on_stack": ours,
        "self_ms": [(k, round(v / 1000, 1)) for k, v in self_us.most_common(10)],
        "top": [(lab, round(ms, 1)) for ms, lab in sorted(top, reverse=True)[:8]],
        "js_samples": j - i, "js": leaf.most_common(10),
    }


def invalidations(marks: list[dict], task: dict) -> list[tuple[str, int]]:
    """What was marked dirty from INVALIDATION_WINDOW_US before ``task`` to its end, counted."""
    import bisect  # noqa: PLC0415

    lo = bisect.bisect_left(marks, task["ts"] - INVALIDATION_WINDOW_US, key=lambda e: e["ts"])
    seen: Counter[str] = Counter()
    for e in marks[lo:]:
        if e["ts"] > task["ts"] + task["dur"]:
            break
        d = e.get("args", {}).get("data", {})
        what = e["name"].removesuffix("InvalidationTracking")
        seen[f"{what}: {d.get('reason') or d.get('changedClass') or ''} {d.get('nodeName', '')[:50]}".strip()] += 1
    return seen.most_common(8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", type=Path)
    ap.add_argument("--threshold", type=float, default=50.0)
    args = ap.parse_args()
    print(json.dumps(long_tasks(args.trace, args.threshold), indent=1))


if __name__ == "__main__":
    main()
