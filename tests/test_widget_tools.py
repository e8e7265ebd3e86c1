"""ChatWidget(tools=[...]): the loop on the kernel's event loop, approval cards answered like a browser."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests.support.fake import FakeProvider
from upstage_magic.events import FinishReason, ToolCall
from upstage_magic.notebook.widget import ChatWidget
from upstage_magic.session import ChatSession
from upstage_magic.settings import default_settings
from upstage_magic.tools import tool

ran: list[Any] = []


def area(radius: float) -> float:
    """Area of a square of this side."""
    ran.append(("area", radius, threading.get_ident()))
    return radius * radius


async def later(x: int) -> str:
    """Async."""
    await asyncio.sleep(0)
    ran.append(("later", x))
    return f"later {x}"


@pytest.fixture(autouse=True)
def clean():
    ran.clear()
    default_settings().update_interval = 0.02
    yield


def make(fake: FakeProvider, **kw: Any) -> tuple[ChatWidget, list[dict[str, Any]]]:
    w = ChatWidget(provider=fake, fetch_models=False, session=ChatSession(), **kw)
    out: list[dict[str, Any]] = []
    w.send_msg = out.append  # type: ignore[method-assign]
    return w, out


async def card(out: list[dict[str, Any]], n: int = 1) -> dict[str, Any]:
    """The n-th approval card the browser was sent (waits for it)."""
    for _ in range(200):
        asks = [m for m in out if m["type"] == "tool" and m["ask"]]
        if len(asks) >= n:
            return asks[n - 1]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no approval card: {[m['type'] for m in out]}")


def click(w: ChatWidget, card_id: int, answer: str) -> None:
    w._handle_custom_msg({"type": "approval", "id": card_id, "answer": answer}, [])


def calls_fake(*calls: ToolCall) -> FakeProvider:
    fake = FakeProvider()
    fake.enqueue(*calls, FinishReason("tool_calls"))
    fake.enqueue("All done.")
    return fake


async def test_approve_runs_on_this_thread_and_the_answer_lands_with_its_blocks():
    fake = calls_fake(ToolCall(name="area", arguments='{"radius": 2}', id="c1"))
    w, out = make(fake, tools=[area])
    w.send("Use area")
    c = await card(out)
    assert "area(radius=2.0)" in c["html"] and c["always"] is True and ran == []
    click(w, c["id"], "yes")
    await asyncio.wait_for(w._task, 10)
    assert ran == [("area", 2.0, threading.get_ident())]
    assert [m["content"] for m in fake.calls[1]["messages"] if m["role"] == "tool"] == ["4.0"]
    (entry,) = w.transcript
    assert "All done." in entry["html"] and "Tool area · approved" in entry["tools_html"]
    assert w.session.turns[-1].tool_calls[0]["result"] == "4.0" and not w.busy
    done = [m for m in out if m["type"] == "tool" and not m["ask"]]
    assert done and done[-1]["id"] == c["id"]  # the card became the call's block


async def test_deny_and_always_and_an_async_tool():
    fake = FakeProvider()
    fake.enqueue(ToolCall(name="area", arguments='{"radius": 1}', id="a"),
                 ToolCall(name="later", arguments='{"x": 5}', id="b"), FinishReason("tool_calls"))
    fake.enqueue("ok")
    w, out = make(fake, tools=[area, later])
    w.send("go")
    click(w, (await card(out, 1))["id"], "no")
    click(w, (await card(out, 2))["id"], "always")
    await asyncio.wait_for(w._task, 10)
    assert ran == [("later", 5)]
    results = [m["content"] for m in fake.calls[1]["messages"] if m["role"] == "tool"]
    assert results[0].startswith("Not run: the user did not approve") and results[1] == "later 5"
    fake.enqueue(ToolCall(name="later", arguments='{"x": 6}', id="c"), FinishReason("tool_calls"))
    fake.enqueue("ok again")
    asks = len([m for m in out if m["type"] == "tool" and m["ask"]])
    w.send("again")
    await asyncio.wait_for(w._task, 10)
    assert ran[-1] == ("later", 6) and len([m for m in out if m["type"] == "tool" and m["ask"]]) == asks


async def test_a_made_up_approval_id_approves_nothing_and_stop_ends_the_wait():
    fake = calls_fake(ToolCall(name="area", arguments='{"radius": 3}', id="c1"))
    w, out = make(fake, tools=[area])
    w.send("Use area")
    c = await card(out)
    click(w, c["id"] + 1000, "yes")
    await asyncio.sleep(0.05)
    assert ran == [] and w.streaming
    w.stop()
    await asyncio.wait_for(asyncio.gather(w._task, return_exceptions=True), 10)
    assert ran == [] and not w.busy
    turn = w.session.turns[-1]
    assert turn.status == "stopped" and turn.tool_calls[0]["approval"] == "interrupted"
    assert len(fake.calls) == 1


async def test_approve_false_runs_without_a_card():
    @tool(approve=False)
    def quick(radius: float) -> float:
        return area(radius)

    fake = calls_fake(ToolCall(name="quick", arguments='{"radius": 1}', id="c1"))
    w, out = make(fake, tools=[quick])
    w.send("Use area")
    await asyncio.wait_for(w._task, 10)
    assert ran and not [m for m in out if m["type"] == "tool" and m["ask"]]
