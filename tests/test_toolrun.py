"""The tool loop of %%upstage --tools in an InteractiveShell against the real emulator (loopback).

The user's answers to the approval question are typed through ``input`` (what the stdin
channel feeds in a kernel; tests/test_tools_kernel.py does it through the real channel).
"""
from __future__ import annotations

import builtins
import threading

import pytest
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.interactiveshell import InteractiveShell

from tests.support.fake import FakeProvider
from upstage_magic.events import FinishReason, ToolCall
from upstage_magic.notebook.toolrun import NO_STDIN, NOT_APPROVED, CallRecord, call_html
from upstage_magic.session import ChatSession

KEY = "test-key-toolrun"


@pytest.fixture(scope="module")
def emu():
    from upstage_magic.emulator import serve_in_thread

    with serve_in_thread(api_key=KEY) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "upstage_magic")
    yield ip


@pytest.fixture
def magics(shell, emu, monkeypatch):
    monkeypatch.setenv("UPSTAGE_BASE_URL", emu.base_url)
    monkeypatch.setenv("UPSTAGE_API_KEY", KEY)
    emu.reset()
    m = shell.magics_manager.registry["UpstageMagics"]
    m.provider, m.session, m.display_mode, m.format, m.model, m.log_path = None, ChatSession(), "plain", "markdown", "", ""
    m.tools = None
    ran: list[tuple[str, object]] = []
    shell.user_ns["ran"] = ran

    def area(radius: float) -> float:
        """Area of a circle.

        Args:
            radius: the radius.
        """
        ran.append(("area", radius))
        return 3.0 * radius * radius

    def boom(x: int) -> int:
        """Fails."""
        raise ValueError("kaput up_secret")

    async def later(x: int) -> str:
        """Async."""
        import asyncio

        await asyncio.sleep(0)
        ran.append(("later", threading.get_ident()))
        return f"later {x}"

    def frame() -> object:
        """A DataFrame."""
        import pandas as pd

        return pd.DataFrame({"city": ["Seoul", "Busan"], "people": [9_400_000, 3_300_000]})

    shell.user_ns.update(area=area, boom=boom, later=later, frame=frame)
    return m


def answers(monkeypatch, *replies: str) -> list[str]:
    """Type ``replies`` at the approval questions; the questions asked are returned."""
    asked: list[str] = []
    it = iter(replies)

    def fake_input(prompt: str = "") -> str:
        asked.append(prompt)
        return next(it)

    monkeypatch.setattr(builtins, "input", fake_input)
    return asked


def tool_messages(emu) -> list[dict]:
    return [m for m in emu.requests[-1]["messages"] if m["role"] == "tool"]


def test_approved_call_runs_and_its_result_answers(shell, magics, emu, monkeypatch, capsys):
    asked = answers(monkeypatch, "y")
    shell.run_cell_magic("upstage", "--tools area -o res", "Please use area")
    assert shell.user_ns["ran"] == [("area", 1.5)]
    assert "area(radius=1.5)" in asked[0] and "[y]es / [n]o / [a]lways" in asked[0]
    assert tool_messages(emu)[0]["content"] == "6.75"
    assert len(emu.requests) == 2 and emu.requests[0]["tools"][0]["function"]["name"] == "area"
    assert "The tool area returned: 6.75" in shell.user_ns["res"]
    turn = magics.session.turns[-1]
    assert len(magics.session.turns) == 1 and turn.answer == shell.user_ns["res"]
    assert turn.tool_calls[0]["approval"] == "yes" and turn.tool_calls[0]["result"] == "6.75"
    assert turn.usage is not None and turn.usage.completion_tokens > 0
    assert magics.session.usage.prompt_tokens == turn.usage.prompt_tokens  # counted once
    assert "Tool area · approved" in capsys.readouterr().out


def test_denied_call_does_not_run_and_the_model_is_told(shell, magics, emu, monkeypatch):
    answers(monkeypatch, "n")
    shell.run_cell_magic("upstage", "--tools area", "Please use area")
    assert shell.user_ns["ran"] == []
    assert tool_messages(emu)[0]["content"] == NOT_APPROVED


def test_always_asks_once_per_tool_for_the_session(shell, magics, emu, monkeypatch):
    asked = answers(monkeypatch, "always")
    shell.run_cell_magic("upstage", "--tools area", "Please use area")
    shell.run_cell_magic("upstage", "--tools area", "Use area again")
    assert len(asked) == 1 and len(shell.user_ns["ran"]) == 2
    assert [t.tool_calls[0]["approval"] for t in magics.session.turns] == ["always", "always"]


def test_approve_flag_and_decorator_run_without_asking(shell, magics, emu, monkeypatch):
    asked = answers(monkeypatch)  # any question would fail: nothing to answer
    shell.run_cell_magic("upstage", "--tools area --approve area", "Please use area")
    assert asked == [] and shell.user_ns["ran"] == [("area", 1.5)]
    from upstage_magic.tools import tool

    shell.user_ns["quick"] = tool(approve=False)(quick)
    shell.run_cell_magic("upstage", "--tools quick", "Please use quick")
    assert asked == [] and tool_messages(emu)[0]["content"] == 'quick ok'


def quick() -> str:
    """Quick."""
    return "quick ok"


def test_no_stdin_refuses_and_tells_the_model(shell, magics, emu, monkeypatch):
    def no_stdin(prompt: str = "") -> str:
        raise StdinNotImplementedError("raw_input was called, but this frontend does not support input requests.")

    monkeypatch.setattr(builtins, "input", no_stdin)
    shell.run_cell_magic("upstage", "--tools area", "Please use area")
    assert shell.user_ns["ran"] == [] and tool_messages(emu)[0]["content"] == NO_STDIN
    assert magics.session.turns[-1].tool_calls[0]["approval"] == "no input"


def test_a_tool_that_raises_goes_back_as_an_error_result(shell, magics, emu, monkeypatch, capsys):
    from upstage_magic.secrets import register_secret

    register_secret("up_secret")
    answers(monkeypatch, "y")
    shell.run_cell_magic("upstage", "--tools boom", "Please use boom")  # no exception ends the cell
    sent = tool_messages(emu)[0]["content"]
    assert sent.startswith("Error: ValueError: kaput") and "up_secret" not in sent
    out = capsys.readouterr().out
    assert "Tool boom · approved" in out and "error" in out and "up_secret" not in out
    assert magics.session.turns[-1].tool_calls[0]["error"] is True


def test_async_tool_is_awaited_on_the_cells_thread(shell, magics, emu, monkeypatch):
    answers(monkeypatch, "y")
    shell.run_cell_magic("upstage", "--tools later", "Please use later")
    assert shell.user_ns["ran"] == [("later", threading.get_ident())]
    assert tool_messages(emu)[0]["content"] == 'later 1'


def test_a_dataframe_result_is_sent_as_bounded_text(shell, magics, emu, monkeypatch):
    answers(monkeypatch, "y")
    shell.run_cell_magic("upstage", "--tools frame", "Please use frame")
    sent = tool_messages(emu)[0]["content"]
    assert "Seoul" in sent and "9400000" in sent


def test_several_calls_in_one_step(shell, magics, emu, monkeypatch):
    answers(monkeypatch, "y", "y")
    shell.run_cell_magic("upstage", "--tools area,frame", "Use area and frame")
    assert len(emu.requests) == 2 and len(tool_messages(emu)) == 2
    assert [c["step"] for c in magics.session.turns[-1].tool_calls] == [1, 1]


def test_step_limit_is_said(shell, magics, emu, monkeypatch, capsys):
    emu.configure(reply="tool_call")  # the emulator calls a tool every time
    answers(monkeypatch, "a")
    shell.run_cell_magic("upstage", "--tools area --max-steps 3", "go")
    assert len(emu.requests) == 3 and len(shell.user_ns["ran"]) == 2
    assert "step limit (3 steps" in capsys.readouterr().err


def test_unknown_tool_and_bad_arguments_go_back_as_errors(shell, magics, monkeypatch):
    fake = FakeProvider()
    fake.enqueue(ToolCall(name="<img src=x onerror=alert(1)>", arguments="{}", id="c1"),
                 ToolCall(name="area", arguments='{"radius": "wide"}', id="c2"), FinishReason("tool_calls"))
    fake.enqueue("done")
    magics.provider = fake
    answers(monkeypatch)
    shell.run_cell_magic("upstage", "--tools area", "go")
    results = [m["content"] for m in fake.calls[1]["messages"] if m["role"] == "tool"]
    assert results[0].startswith("Error: there is no tool named") and "area" in results[0]
    assert results[1].startswith("Error: the arguments do not fit area's parameters: radius")
    assert shell.user_ns["ran"] == []


def test_interrupt_in_a_tool_stops_the_loop_and_keeps_the_turn(shell, magics, emu, monkeypatch):
    def stop(x: int) -> int:
        """Stops."""
        raise KeyboardInterrupt

    shell.user_ns["stop"] = stop
    answers(monkeypatch, "y")
    with pytest.raises(KeyboardInterrupt) as info:
        shell.run_cell_magic("upstage", "--tools stop", "Please use stop")
    assert "stopped during a tool call" in info.value._render_traceback_()[0]
    assert len(emu.requests) == 1
    turn = magics.session.turns[-1]
    assert turn.status == "stopped" and turn.tool_calls[0]["approval"] == "interrupted"


def test_options_are_checked(shell, magics):
    with pytest.raises(UsageError, match="no function named 'nope'"):
        shell.run_cell_magic("upstage", "--tools nope", "x")
    with pytest.raises(UsageError, match="--approve"):
        shell.run_cell_magic("upstage", "--approve area", "x")
    with pytest.raises(UsageError, match="not among the tools"):
        shell.run_cell_magic("upstage", "--tools area --approve boom", "x")


def test_configured_tools_are_offered(shell, magics, emu, monkeypatch):
    answers(monkeypatch, "y")
    shell.run_line_magic("config", "UpstageMagics.tools = ['area']")
    shell.run_cell_magic("upstage", "", "Please use area")
    assert shell.user_ns["ran"] == [("area", 1.5)]


def test_hostile_names_arguments_and_results_stay_text():
    hostile = '<script>window.__pwned_script=1</script><img src=x onerror="window.__pwned_img=1">'
    record = CallRecord(id="c1", name=hostile, arguments='{"q": "' + hostile.replace('"', '\\"') + '"}', step=1,
                        approval="yes", seconds=0.01, result=hostile, preview=hostile)
    page = call_html(record)
    from html.parser import HTMLParser

    seen: list[tuple[str, list]] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            seen.append((tag, attrs))

    Tags().feed(page)
    assert {t for t, _ in seen} <= {"details", "summary", "div", "pre", "code", "span"}
    assert all(name == "class" for _, attrs in seen for name, _value in attrs)
    assert page.count("&lt;script&gt;") == 3  # name, arguments and result, each shown as text
