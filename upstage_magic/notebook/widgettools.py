"""The chat widget's tool loop: ``ChatWidget(tools=[f, g])``, with Approve / Deny / Always buttons.

The same loop as the cells' (:mod:`toolrun`), driven on the kernel's event loop by the
widget's task: each step streams into the live answer; each call that needs approval is
shown in the live answer as a card (the exact call, our rendered HTML) with Approve, Deny
and Always buttons, and the task waits for the kernel to receive the click (an ``approval``
message naming the card's id, which only the kernel hands out; nothing in an answer or a
result can approve). Then the function runs here, on the kernel's main thread (``async
def`` tools awaited), and the card becomes the call's block. Stop cancels the task at any
point; the loop records one turn (its calls on ``Turn.tool_calls``), shown in the
transcript with its blocks above the answer.
"""
from __future__ import annotations

import asyncio
import dataclasses
import html
import inspect
import time
from collections.abc import Callable
from typing import Any

from ..secrets import mask_secrets
from ..session import ChatSession, Exchange, Turn
from .chatview import LiveAnswer
from .toolrun import (
    DEFAULT_MAX_STEPS,
    CallRecord,
    Loop,
    always_approved,
    call_html,
    call_signature,
    calls_html,
    finished,
    prepare,
    refused,
    step_messages,
)

__all__ = ["ToolsMixin", "ask_html"]


def ask_html(name: str, arguments: dict[str, Any], *, runs_code: bool) -> str:
    """The approval card's text: the exact call (or the code to run), escaped."""
    from ..render import render_html, render_text_html  # noqa: PLC0415

    if runs_code and isinstance(arguments.get("code"), str):
        from ..formats import fence  # noqa: PLC0415

        body = render_html(fence(mask_secrets(arguments["code"]), "python"))
        head = f"The model wants to run this Python code ({name}):"
    else:
        body = render_text_html(call_signature(name, arguments))
        head = "The model wants to run:"
    return f'<div class="um-tool-ask"><div class="um-tool-ask-head">{html.escape(head)}</div>{body}</div>'


class ToolsMixin:
    """The tool part of :class:`~upstage_magic.notebook.widget.ChatWidget` (its own methods)."""

    session: ChatSession
    _exchange: Exchange | None
    _live_render: LiveAnswer | None
    _run: Callable[..., Any]
    _finish: Callable[[Exchange], None]
    _reply: Callable[[dict[str, Any]], None]
    _new_id: Callable[[], int]
    config: Any
    status: str

    def __init__(self, *args: Any, tools: Any = None, **kwargs: Any) -> None:
        """``tools``: the functions the model may call (``ChatWidget(tools=[f, g])``)."""
        self._init_tools(tools)
        super().__init__(*args, **kwargs)

    def ask_for(self, text: str) -> Any:
        """The Ask of a send: the text, the attachments taken, the tools offered."""
        from ..request import Ask  # noqa: PLC0415

        return Ask(text, attachments=self.take_attachments(), tools=self.tools or None)  # type: ignore[attr-defined]

    def _init_tools(self, tools: Any) -> None:
        self.tools: list[Any] = list(tools or [])
        #: At most this many requests per question (the step limit).
        self.max_tool_steps = DEFAULT_MAX_STEPS
        self._approvals: dict[int, asyncio.Future[str]] = {}

    def _first_step(self, request: Any) -> Exchange:
        """The exchange a send starts: recorded, or with tools a one-off step (the loop records the turn)."""
        if request.tools:
            return Exchange(dataclasses.replace(request, record=False), self.session)
        return self.session.start(request)

    def _approval(self, msg: dict[str, Any]) -> None:
        """A click on Approve / Deny / Always (only for a card the kernel is waiting on)."""
        waiter = self._approvals.pop(msg.get("id"), None)  # type: ignore[arg-type]
        if waiter is None:
            return
        answer = str(msg.get("answer") or "no")

        def resolve() -> None:
            if not waiter.done():
                waiter.set_result(answer)

        # ipykernel may hand comm messages over on another thread than the widget's loop.
        waiter.get_loop().call_soon_threadsafe(resolve)

    def dispatch_panel(self, kind: Any, msg: dict[str, Any]) -> bool:
        """Tool approvals; every other message goes on to the panel's dispatch."""
        if kind == "approval":
            self._approval(msg)
            return True
        return bool(super().dispatch_panel(kind, msg))  # type: ignore[misc]

    def _tools_html(self, turn: Turn) -> str:
        return calls_html(turn.tool_calls) if turn.tool_calls else ""

    async def _drive(self, request: Any, exchange: Exchange) -> None:
        """The answer's task: one stream, or the tool loop; the turn is recorded on every path."""
        if not request.tools:
            await self._run(exchange)
            return
        loop = Loop(request, self.session, {t.name: t for t in request.tools}, max(1, int(self.max_tool_steps)))
        messages = list(request.messages)
        status: str | None = None
        try:
            for step in range(1, loop.max_steps + 1):
                if step > 1:
                    exchange = Exchange(dataclasses.replace(request, messages=list(messages), record=False),
                                        self.session)
                    self._exchange = exchange
                    self._live_render = LiveAnswer(load_images=bool(self.config.load_images))
                loop.steps.append(exchange)
                await self._run(exchange, finish=False)
                if not exchange.tool_calls or exchange.status != "done":
                    break
                if step == loop.max_steps:
                    self.status = f"stopped at the step limit ({loop.max_steps} steps)"
                    break
                records = [await self._call(call, loop, step) for call in exchange.tool_calls]
                loop.records += records
                messages += step_messages(exchange, records, step)
        except asyncio.CancelledError:
            status = "stopped"
        finally:
            for waiter in self._approvals.values():
                waiter.cancel()
            self._approvals.clear()
            turn = loop.turn(status)
            if turn is not None and request.record:
                self.session.record(turn)
            self._finish(exchange)

    async def _call(self, call: Any, loop: Loop, step: int) -> CallRecord:
        """Approve (buttons) and run one call; its card shows each state."""
        record, tool, arguments = prepare(call, loop.tools, step=step)
        card = self._new_id()
        if tool is not None:
            runs_code = bool(getattr(tool.function, "__upstage_always_ask__", False))
            always = always_approved(self.session)
            if not tool.approve:
                record.approval = "auto"
            elif tool.name in always and not runs_code:
                record.approval = "always"
            else:
                waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                self._approvals[card] = waiter
                self._reply({"type": "tool", "id": card, "ask": True, "always": not runs_code,
                             "html": ask_html(tool.name, arguments, runs_code=runs_code)})
                try:
                    answer = await waiter
                except asyncio.CancelledError:
                    record.approval, record.result = "interrupted", "Not run: the user stopped the answer."
                    loop.records.append(record)
                    self._reply({"type": "tool", "id": card, "ask": False, "html": call_html(record)})
                    raise
                record.approval = answer if answer in ("yes", "always") and not (runs_code and answer == "always") \
                    else "yes" if answer == "always" else "no"
                if record.approval == "always":
                    always.add(tool.name)
            if record.approval == "no":
                refused(record)
            else:
                await self._execute(record, tool, arguments)
        self._reply({"type": "tool", "id": card, "ask": False, "html": call_html(record)})
        return record

    async def _execute(self, record: CallRecord, tool: Any, arguments: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            value = tool.call(arguments)
            if inspect.isawaitable(value):
                value = await value
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the model gets the error
            finished(record, started, error=exc)
            return
        finished(record, started, value)
