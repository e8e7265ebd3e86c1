"""%%upstage --tools in a real ipykernel: approval answered through the stdin channel (jupyter_client).

The questions arrive as ``input_request`` messages on the stdin channel, as JupyterLab,
Notebook 7 and VS Code get them; the test answers with ``input_reply`` like they do.
nbclient runs without stdin: the call is refused and the model told so.
"""
from __future__ import annotations

import json
import queue
import time
from typing import Any

import pytest

from tests.support.harness import DISPLAY_TYPES, ROOT, TEST_KEY, KernelSession, magic_kernel

pytestmark = pytest.mark.kernel

TOOLS = '''
import asyncio, json, threading, time
import pandas as pd
calls = []
main_thread = threading.get_ident()

def area(radius: float) -> float:
    """Area of a square of this side.

    Args:
        radius: the side.
    """
    calls.append(("area", radius))
    return radius * radius

def boom(x: int) -> int:
    """Always fails."""
    raise ZeroDivisionError("no way")

async def later(x: int) -> str:
    """Waits a moment."""
    await asyncio.sleep(0.01)
    calls.append(("later", threading.get_ident() == main_thread))
    return f"later {x}"

def frame() -> pd.DataFrame:
    """A small table."""
    return pd.DataFrame({"city": ["Seoul", "Busan"], "people": [9400000, 3300000]})

def slow(x: int) -> int:
    """Takes long."""
    print("slow started", flush=True)
    time.sleep(60)
    return x
'''


@pytest.fixture(scope="module")
def emu():
    from upstage_magic.emulator import serve_in_thread

    with serve_in_thread(api_key=TEST_KEY) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def kernel(emu):
    with magic_kernel(emu.base_url) as k:
        k.run(TOOLS)
        yield k


@pytest.fixture
def fresh(kernel, emu) -> KernelSession:
    emu.reset()
    kernel.run("%upstage reset\ncalls.clear()")
    return kernel


def run_answering(k: KernelSession, code: str, replies: list[str], *, timeout: float = 90,
                  interrupt_on: str | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Run a cell, answering each ``input_request`` with the next reply; (prompts, iopub msgs)."""
    msg_id = k.kc.execute(code, allow_stdin=True)
    prompts: list[str] = []
    msgs: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    interrupted = False
    while time.monotonic() < deadline:
        try:
            sm = k.kc.get_stdin_msg(timeout=0.02)
        except queue.Empty:
            pass
        else:
            if sm["msg_type"] == "input_request":
                prompts.append(sm["content"]["prompt"])
                k.kc.input(replies.pop(0) if replies else "n")
        try:
            m = k.kc.get_iopub_msg(timeout=0.02)
        except queue.Empty:
            continue
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        msgs.append(m)
        if (interrupt_on and not interrupted and m["msg_type"] == "stream"
                and interrupt_on in m["content"]["text"]):
            time.sleep(0.2)
            k.interrupt()
            interrupted = True
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return prompts, msgs
    raise TimeoutError(f"cell did not finish: {code[:60]!r}")


def stream(msgs, name: str = "stdout") -> str:
    return "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream" and m["content"]["name"] == name)


def plain(msgs) -> str:
    return "\n".join(m["content"]["data"].get("text/plain", "") for m in msgs if m["msg_type"] in DISPLAY_TYPES)


def html(msgs) -> str:
    return "\n".join(m["content"]["data"].get("text/html", "") for m in msgs if m["msg_type"] in DISPLAY_TYPES)


def errors(msgs) -> list[dict[str, Any]]:
    return [m["content"] for m in msgs if m["msg_type"] == "error"]


def tool_results(emu) -> list[str]:
    return [m["content"] for m in emu.requests[-1]["messages"] if m["role"] == "tool"]


def test_approve_through_stdin_runs_the_tool_and_shows_its_block(fresh, emu):
    prompts, msgs = run_answering(fresh, "%%upstage --tools area -o res\nPlease use area", ["y"])
    assert not errors(msgs)
    assert len(prompts) == 1 and "area(radius=1.5)" in prompts[0] and "[a]lways" in prompts[0]
    assert tool_results(emu) == ["2.25"]
    page = html(msgs)
    assert 'class="um-tool"' in page and "Tool area · approved" in page
    assert "The tool area returned: 2.25" in plain(msgs)
    state = fresh.json("t = get_ipython().magics_manager.registry['UpstageMagics']"
                       ".session.turns[-1]; print(json.dumps([res, t.tool_calls, calls]))")
    assert "The tool area returned: 2.25" in state[0]
    assert state[1][0]["approval"] == "yes" and state[1][0]["result"] == "2.25" and state[2] == [["area", 1.5]]


def test_deny_then_always(fresh, emu):
    prompts, msgs = run_answering(fresh, "%%upstage --tools area\nPlease use area", ["n"])
    assert not errors(msgs) and len(prompts) == 1
    assert tool_results(emu) == ["Not run: the user did not approve this call."]
    assert fresh.json("print(json.dumps(calls))") == []
    prompts, _ = run_answering(fresh, "%%upstage --tools area\nPlease use area", ["a"])
    prompts2, msgs = run_answering(fresh, "%%upstage --tools area\nPlease use area again", [])
    assert len(prompts) == 1 and prompts2 == [] and not errors(msgs)
    assert fresh.json("print(json.dumps(calls))") == [["area", 1.5], ["area", 1.5]]


def test_step_limit_is_said_in_the_cell(fresh, emu):
    emu.configure(reply="tool_call")
    prompts, msgs = run_answering(fresh, "%%upstage --tools area --approve area --max-steps 2\ngo", [])
    assert prompts == [] and not errors(msgs)
    assert "step limit (2 steps" in stream(msgs, "stderr")
    assert len(emu.requests) == 2 and fresh.json("print(json.dumps(len(calls)))") == 1


def test_a_raising_tool_an_async_tool_and_a_dataframe(fresh, emu):
    prompts, msgs = run_answering(fresh, "%%upstage --tools boom,later,frame\nUse boom, later and frame",
                                  ["y", "y", "y"])
    assert len(prompts) == 3 and not errors(msgs)  # the exception did not end the cell
    boom, later, frame = tool_results(emu)
    assert boom == "Error: ZeroDivisionError: no way"
    assert later == "later 1" and fresh.json("print(json.dumps(calls))") == [["later", True]]
    assert "Seoul" in frame and "9400000" in frame
    assert "Tool boom · approved" in html(msgs) and "error" in html(msgs)


def test_interrupt_in_the_middle_of_the_loop(fresh, emu):
    prompts, msgs = run_answering(fresh, "%%upstage --tools slow --approve slow\nPlease use slow", [],
                                  interrupt_on="slow started")
    errs = errors(msgs)
    assert errs and errs[0]["ename"] == "KeyboardInterrupt"
    assert len(emu.requests) == 1  # the loop stopped: nothing more was sent
    assert "The model asked to call slow" in plain(msgs)  # what was shown stays
    turn = fresh.json("t = get_ipython().magics_manager.registry['UpstageMagics'].session.turns[-1]; "
                      "print(json.dumps([t.status, t.tool_calls]))")
    assert turn[0] == "stopped" and turn[1][0]["approval"] == "interrupted"
    assert fresh.run("print('alive')").strip() == "alive"


def test_no_stdin_refuses_and_tells_the_model(tmp_path, emu, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    emu.reset()
    monkeypatch.setenv("UPSTAGE_BASE_URL", emu.base_url)
    monkeypatch.setenv("UPSTAGE_API_KEY", TEST_KEY)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%load_ext upstage_magic\n%config UpstageMagics.log_path = ''"),
        nbformat.v4.new_code_cell(TOOLS),
        nbformat.v4.new_code_cell("%%upstage --tools area\nPlease use area"),
        nbformat.v4.new_code_cell("print(calls)"),
    ])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outs = json.dumps(nb.cells[2].outputs)
    assert "refused: no one could be asked" in outs
    assert "The tool area returned: Not run: this call needs the user's approval" in outs
    assert nb.cells[3].outputs[0]["text"].strip() == "[]"
    assert TEST_KEY not in json.dumps(nb)


def test_tools_notebook_runs_offline(tmp_path, monkeypatch):
    """notebooks/tools.ipynb under nbclient: the asking call is refused, --approve runs, the turn keeps the calls."""
    import nbformat
    from nbclient import NotebookClient

    for name in ("UPSTAGE_API_KEY", "UPSTAGE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("UPSTAGE_MAGIC_HOME", str(tmp_path))
    nb = nbformat.read(ROOT / "notebooks" / "tools.ipynb", as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    blob = [json.dumps(c.outputs, ensure_ascii=False) for c in code]
    assert "Running on the offline Upstage emulator" in blob[0]
    assert '"description": "The area of a circle."' in blob[1] or "The area of a circle." in blob[1]
    assert "refused: no one could be asked" in blob[2] and "ran without asking" in blob[2]  # cities: approve=False
    assert "Tool area · ran without asking" in blob[3]
    assert "('area', 'auto', '7.07 cm²')" in blob[4]
    assert "Tool list_variables · ran without asking" in blob[5]
