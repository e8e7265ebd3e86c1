"""%%upstage in a real ipykernel against the emulator (iopub messages inspected)."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.support.harness import DISPLAY_TYPES, ROOT, TEST_KEY, KernelSession, magic_kernel

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def emu():
    from upstage_magic.emulator import serve_in_thread

    with serve_in_thread(api_key=TEST_KEY) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def kernel(emu):
    with magic_kernel(emu.base_url, setup="") as k:
        yield k


@pytest.fixture
def fresh(kernel, emu) -> KernelSession:
    """Reset the conversation and the emulator's settings before each test."""
    emu.configure(reply="markdown", answer_tokens=None, tokens_per_second=None, reasoning=False)
    emu.set_fault(None)
    kernel.run("%upstage reset")
    return kernel


def run(k: KernelSession, code: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Execute ``code``; return its iopub messages up to idle (raises on timeout)."""
    return k.execute(code, timeout).msgs


def displays(msgs) -> list[dict[str, Any]]:
    return [m for m in msgs if m["msg_type"] in DISPLAY_TYPES]


def markdowns(msgs) -> list[str]:
    """The raw text (text/plain) of every display; the page itself gets only our HTML."""
    assert not any("text/markdown" in m["content"]["data"] for m in displays(msgs))
    return [m["content"]["data"]["text/plain"] for m in displays(msgs) if "text/plain" in m["content"]["data"]]


def htmls(msgs) -> list[str]:
    return [m["content"]["data"]["text/html"] for m in displays(msgs) if "text/html" in m["content"]["data"]]


def stream_text(msgs, name: str | None = None) -> str:
    return "".join(m["content"]["text"] for m in msgs
                   if m["msg_type"] == "stream" and (name is None or m["content"]["name"] == name))


def errors(msgs) -> list[dict[str, Any]]:
    return [m["content"] for m in msgs if m["msg_type"] == "error"]


def answer_markdown(msgs) -> str:
    """The final raw answer (text/plain of the last update of the first display id)."""
    return answer_data(msgs)["text/plain"]


def answer_data(msgs) -> dict[str, Any]:
    """The final bundle of the answer output (the last update of the first display id)."""
    ds = displays(msgs)
    did = ds[0]["content"]["transient"]["display_id"]
    return [m for m in ds if m["content"].get("transient", {}).get("display_id") == did][-1]["content"]["data"]


# ------------------------------------------------------------------------------------------


def test_answer_streams_with_history(fresh):
    k = fresh
    first = run(k, "%%upstage\nHello there")
    assert not errors(first)
    md = answer_markdown(first)
    assert "You asked: Hello there" in md and "Turn 1" in md
    assert "```python\ndef greet(name: str) -> str:" in md
    assert " in / " in markdowns(first)[-1] and " out" in markdowns(first)[-1]  # footer
    second = run(k, "%%upstage\nAnd again")
    assert "Turn 2" in answer_markdown(second)
    meta = [m["content"].get("metadata", {}) for m in displays(second)]
    saved = [m["upstage"] for m in meta if "upstage" in m]
    assert len(saved) == 1, meta  # the final answer output records what produced it
    assert saved[0]["status"] == "done" and saved[0]["finish_reason"] == "stop"
    assert saved[0]["model"].startswith("solar") and saved[0]["timings"]["total"] > 0


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    """The demo path: emulator + nbclient; answers in the outputs; no key saved."""
    monkeypatch.setenv("UPSTAGE_API_KEY", TEST_KEY)  # present in the parent, must not leak
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    from upstage_magic.__main__ import run_demo

    nb_path, html_path = run_demo(ROOT / "notebooks" / "quickstart.ipynb", offline=True,
                                  tokens_per_second=None, timeout=180, out_dir=tmp_path)
    text = nb_path.read_text()
    assert TEST_KEY not in text and TEST_KEY not in html_path.read_text()
    nb = json.loads(text)
    outs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    blob = json.dumps(outs)
    assert "Running on the offline Upstage emulator" in blob
    assert "You asked: What is Upstage Solar?" in blob
    assert "Turn 2" in blob  # the follow-up saw the history
    assert "You asked: Explain Python list comprehensions to a beginner" in blob  # {topic}
    assert "def area(radius: float)" in blob or "def greet" in blob  # -f code + print(snippet)
    assert "('dict', ['answer', 'turn'])" in blob  # -f json -o planets
    assert "## 1. You" in blob  # %upstage history
    expected_error = [c for c in nb["cells"] if "raises-exception" in c.get("metadata", {}).get("tags", [])]
    assert len(expected_error) == 1  # the ZeroDivisionError that %upstage fix explains
    for c in nb["cells"]:
        if c["cell_type"] == "code" and c not in expected_error:
            assert not any(o.get("output_type") == "error" for o in c["outputs"]), c["source"]
    assert "Dry run: nothing was sent." in blob  # --dry-run
    assert "Error: ZeroDivisionError: division by zero" in blob  # %upstage fix sent the error
    assert "'diameter_km': 1.5" in blob  # -f json --schema: the validated object
    assert "um-thinking" in blob  # --think: the reasoning block
    assert "Resumed conversation" in blob and "Turn 5" in blob  # the log brought the history back
    metas = [o.get("metadata", {}).get("upstage") for o in outs if o.get("metadata", {}).get("upstage")]
    assert metas and all(m["model"] == "solar-pro4-260806" or m["model"].startswith("solar") for m in metas)
    assert "application/vnd.jupyter.widget-view+json" not in blob
    assert html_path.stat().st_size > 1000


def test_long_answer_bounded_display_messages(fresh, emu):
    k = fresh
    emu.configure(answer_tokens=2000)
    t0 = time.monotonic()
    msgs = run(k, "%%upstage --no-history\nlong please")
    elapsed = time.monotonic() - t0
    assert not errors(msgs)
    n = len(displays(msgs))
    assert n <= 12 * elapsed + 3, (n, elapsed)
    final = answer_markdown(msgs)
    assert len(final.split()) == 2000


def test_paced_answer_bounded_display_messages(fresh, emu):
    k = fresh
    emu.configure(answer_tokens=120, tokens_per_second=60)
    t0 = time.monotonic()
    msgs = run(k, "%%upstage --no-history\npaced please")
    elapsed = time.monotonic() - t0
    n = len(displays(msgs))
    assert 3 <= n <= 12 * elapsed + 3, (n, elapsed)  # it did stream (several updates)
    assert len(answer_markdown(msgs).split()) == 120


def test_interrupt_keeps_partial_and_kernel_lives(fresh, emu):
    k = fresh
    emu.configure(answer_tokens=2000, tokens_per_second=20)  # would take 100 s
    msg_id = k.submit("%%upstage\nstream slowly")
    seen = k.collect(msg_id, 60, until=lambda m: m["msg_type"] in DISPLAY_TYPES)  # the first text
    seen += k.collect(msg_id, 60, until=lambda m: m["msg_type"] in DISPLAY_TYPES)  # an update: mid-stream
    k.interrupt()
    rest = k.collect(msg_id, 60)
    msgs = seen + rest
    errs = errors(msgs)
    assert errs and errs[-1]["ename"] == "KeyboardInterrupt"
    assert len(errs[-1]["traceback"]) <= 3, errs[-1]["traceback"]  # no 20-line traceback
    partial = answer_markdown(msgs)
    assert 0 < len(partial.split()) < 2000
    assert any("stopped" in md for md in markdowns(msgs))
    emu.configure(answer_tokens=None, tokens_per_second=None)
    after = run(k, "%%upstage\nare you still there?")
    assert not errors(after) and "You asked: are you still there?" in answer_markdown(after)
    status = run(k, "from upstage_magic.session import default_session\n"
                     "print([t.status for t in default_session().turns])")
    assert "['stopped', 'done']" in stream_text(status)


def test_hostile_answer_neutralised_code_exact(fresh, emu):
    from upstage_magic.emulator import HOSTILE_REPLY

    k = fresh
    emu.configure(reply="hostile")
    msgs = run(k, "%%upstage\nbe hostile")
    assert answer_markdown(msgs) == HOSTILE_REPLY  # the raw answer, as text/plain
    final = answer_data(msgs)["text/html"]
    assert "&lt;script" in final  # shown as text
    for page in htmls(msgs):  # every streamed update too
        tags = parsed_tags(page)
        assert not {t for t, _ in tags} & {"script", "img", "iframe", "svg", "object", "embed"}, tags
        for _tag, attrs in tags:
            for name, value in attrs:
                assert not name.startswith("on"), (name, value)
                assert not (value or "").strip().lower().startswith(("javascript", "data", "vbscript")), value


def parsed_tags(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every start tag of ``page`` with its attributes, as a browser's tokenizer sees them."""
    from html.parser import HTMLParser

    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Audit(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Audit().feed(page)
    return found


def usage_error(msgs) -> str:
    """The one error of a failed cell: its class and message on one line, no traceback."""
    errs = errors(msgs)
    assert len(errs) == 1, errs
    lines = errs[0]["traceback"]
    assert len(lines) == 1 and lines[0].startswith(errs[0]["ename"] + ": "), lines
    assert "Upstage: Upstage" not in lines[0] and errs[0]["ename"] != "UsageError"
    return lines[0]


def test_errors_are_one_line_and_kernel_stays_healthy(fresh, emu):
    k = fresh
    emu.set_fault({"kind": "status", "status": 401, "message": "Invalid API key", "times": 1})
    err = usage_error(run(k, "%%upstage\nhi"))
    assert "401" in err and "UPSTAGE_API_KEY" in err
    assert "no-such-model" in usage_error(run(k, "%%upstage -m no-such-model\nhi"))
    emu.set_fault({"kind": "cut", "after": 5})
    partial = run(k, "%%upstage\nhi")
    usage_error(partial)
    assert len(answer_markdown(partial)) > 0  # the partial answer stays
    ok = run(k, "%%upstage\nall good?")
    assert not errors(ok) and not stream_text(ok, "stderr")
    status = run(k, "from upstage_magic.session import default_session\n"
                     "print([t.status for t in default_session().turns])")
    assert "'error', 'done']" in stream_text(status)


def test_no_key_in_any_output(fresh, emu, tmp_path):
    k = fresh
    emu.set_fault({"kind": "status", "status": 401, "message": f"bad key {TEST_KEY}", "times": 1})
    msgs = []
    for code in ("%%upstage\nhi", "%upstage config", "%upstage history", "%upstage models",
                 "%%upstage -f json -o x\nhi", "x", f"%upstage export {tmp_path / 'chat.json'}"):
        msgs += run(k, code)
    blob = json.dumps([m["content"] for m in msgs])
    assert "set (from UPSTAGE_API_KEY)" in blob
    assert TEST_KEY not in blob and "SECRET123" not in blob
    assert "SECRET123" not in (tmp_path / "chat.json").read_text()


def test_reasoning_shows_first_in_its_own_block_and_o_gets_the_answer_only(fresh, emu):
    from upstage_magic.emulator import REASONING_TEXT, filler_text

    k = fresh
    emu.configure(answer_tokens=12, tokens_per_second=40, reasoning=True, reasoning_tokens=24)
    try:
        msgs = run(k, "%%upstage -o ans\nthink first")
    finally:
        emu.configure(reasoning=None, reasoning_tokens=None)
    assert not errors(msgs)
    first = displays(msgs)[0]["content"]["data"]
    assert "um-thinking" in first["text/html"] and " open" in first["text/html"]  # open while thinking
    assert "alpha" not in first["text/plain"]  # no answer text yet
    final = answer_data(msgs)
    assert "um-thinking" in final["text/html"] and "<details class=\"um-thinking\" open" not in final["text/html"]
    ans = json.loads(k.run("import json; print(json.dumps(ans))"))
    assert ans == filler_text(12) and REASONING_TEXT.split()[0] not in ans
    footer = markdowns(msgs)[-1]
    assert "reasoning)" in footer and "first answer token" not in footer  # one short line
    assert "first_answer_token" in json.dumps([m["content"].get("metadata", {}) for m in displays(msgs)])
