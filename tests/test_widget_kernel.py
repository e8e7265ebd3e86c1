"""The chat widget in a real kernel: a send from a widget callback streams in the background.

The "front end" here is jupyter_client sending the same comm messages JupyterLab sends when
a user types into the Textarea and clicks Send. The emulator runs on loopback with slow
pacing, so the answer is still streaming when the next cell has already returned.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.harness import TEST_KEY, EmulatorProcess, KernelSession

pytestmark = pytest.mark.kernel


@pytest.fixture
def emulator(tmp_path: Path):
    emu = EmulatorProcess(tmp_path, tokens_per_second=25, answer_tokens=60)
    yield emu
    emu.close()


@pytest.fixture
def kernel(emulator: EmulatorProcess, tmp_path: Path):
    k = KernelSession({"UPSTAGE_BASE_URL": emulator.base_url, "UPSTAGE_API_KEY": TEST_KEY,
                       "IPYTHONDIR": str(tmp_path / "ipython")})
    yield k
    k.close()


def wait_for(kernel: KernelSession, expr: str, expected: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = kernel.run(f"print({expr})").strip()
        if last == expected:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{expr} = {last!r}, expected {expected!r}")


def test_send_from_widget_callback_streams_while_other_cells_run(kernel: KernelSession) -> None:
    ids = json.loads(kernel.run(
        "import json\n"
        "from upstage_magic import ChatWidget\n"
        "w = ChatWidget()\n"
        "w2 = ChatWidget(session=__import__('upstage_magic').ChatSession())\n"
        "print(json.dumps({'input': w.input.model_id, 'send': w.send_button.model_id,"
        " 'input2': w2.input.model_id, 'send2': w2.send_button.model_id}))"
    ))
    # The user types a question and clicks Send, in two chat widgets.
    for suffix in ("", "2"):
        kernel.comm_msg(ids["input" + suffix], {"method": "update", "state": {"value": f"Question{suffix}?"},
                                                "buffer_paths": []})
        kernel.comm_msg(ids["send" + suffix], {"method": "custom", "content": {"event": "click"}})

    wait_for(kernel, "w.exchange is not None and len(w.exchange.text) > 0", "True")
    # Another cell executes and returns while both answers still stream.
    t0 = time.monotonic()
    state = json.loads(kernel.run(
        "import json, time\n"
        "time.sleep(0.2)\n"
        "print(json.dumps([w.exchange.status, len(w.exchange.text), w.input.disabled, w.input.value,"
        " w2.exchange.status if w2.exchange else None]))"
    ))
    assert time.monotonic() - t0 < 5
    assert state[0] == "streaming" and state[1] > 0
    assert state[2] is True and state[3] == ""  # input cleared and disabled while streaming
    assert state[4] == "streaming"  # the second widget streams at the same time
    # The stream keeps going between cells...
    n1 = state[1]
    time.sleep(0.5)
    n2 = json.loads(kernel.run("print(len(w.exchange.text) if w.exchange else -1)"))
    assert n2 == -1 or n2 > n1
    # ...and completes on its own.
    wait_for(kernel, "[t.status for t in w.session.turns]", "['done']", timeout=30)
    wait_for(kernel, "[t.status for t in w2.session.turns]", "['done']", timeout=30)
    out = json.loads(kernel.run(
        "print(json.dumps([w.session.turns[0].prompt, w.input.disabled, w.stop_button.disabled,"
        " 'done' in w.status.value, len(w.session.turns[0].answer)]))"
    ))
    assert out[:4] == ["Question?", False, True, True]
    assert out[4] > n1


def test_stop_from_widget_callback_then_magic_shares_the_conversation(
        kernel: KernelSession, emulator: EmulatorProcess) -> None:
    ids = json.loads(kernel.run(
        "import json\nfrom upstage_magic import ChatWidget\nw = ChatWidget()\n"
        "print(json.dumps({'input': w.input.model_id, 'send': w.send_button.model_id,"
        " 'stop': w.stop_button.model_id}))"
    ))
    kernel.comm_msg(ids["input"], {"method": "update", "state": {"value": "Stop me"}, "buffer_paths": []})
    kernel.comm_msg(ids["send"], {"method": "custom", "content": {"event": "click"}})
    wait_for(kernel, "w.exchange is not None and len(w.exchange.text) > 0", "True")
    kernel.comm_msg(ids["stop"], {"method": "custom", "content": {"event": "click"}})
    wait_for(kernel, "[t.status for t in w.session.turns]", "['stopped']", timeout=10)
    out = json.loads(kernel.run(
        "print(json.dumps([len(w.session.turns[0].answer), w.input.disabled, 'stopped' in w.status.value]))"))
    assert out[0] > 0 and out[1] is False and out[2] is True

    # The kernel is healthy, and a %%upstage cell continues the same conversation: the
    # emulator's markdown reply says "Turn 2" (two user messages arrived), and the chat
    # transcript shows the cell's question.
    emulator.config(tokens_per_second=None, answer_tokens=None, reply="markdown")
    kernel.run("%load_ext upstage_magic")
    kernel.run("%%upstage\nAnd now from a cell?")
    out = json.loads(kernel.run(
        "print(json.dumps([w.session.turns[-1].status, 'Turn 2' in w.session.turns[-1].answer,"
        " any('And now from a cell?' in c.value for b in w._turns_box.children for c in getattr(b, 'children', [b])"
        " if hasattr(c, 'value'))]))"))
    assert out == ["done", True, True]
