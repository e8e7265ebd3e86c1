"""The tool loop of ``%%upstage --tools``: the model calls notebook functions, with approval.

Model -> tool calls (several in one step) -> approval -> the function runs here, on the
cell's (the kernel's main) thread, an ``async def`` awaited -> its result goes back as a
``tool`` message -> the next request streams like any answer; until a text answer or the
step limit (``--max-steps``, default 10; said when reached). Each step is an
:class:`~upstage_magic.session.Exchange` of its own (a one-off, so its usage counts once);
the loop records one turn for the cell: the final answer, every call with its approval,
duration and result (``Turn.tool_calls``), the steps' usage summed.

- **Approval**, for every call of a tool that asks (the default): a prompt on the stdin
  channel (``input()``: ipykernel sends it to JupyterLab, Notebook 7, VS Code; terminal
  IPython reads the terminal) showing the exact function and checked arguments: yes / no /
  always (this tool, for the rest of the kernel session). Where no one can be asked
  (nbclient, papermill: ``StdinNotImplementedError``; no terminal: ``EOFError``) the call
  is refused and the model told so. Only the user, ``@tool(approve=False)`` or
  ``--approve NAME`` approve: nothing the model or a result says is read as an answer.
- **Failures**: arguments that do not fit, an unknown tool, or an exception inside the
  tool go back to the model as an error result (and are shown), never as a traceback that
  ends the cell. An interrupt stops the loop at once: what was shown stays, the turn is
  recorded "stopped".
- **Display**: each call is a collapsed block (name, arguments, approval, duration, a
  bounded result preview), our escaped HTML around renderer output; every string masked.
"""
from __future__ import annotations

import dataclasses
import html
import inspect
import json
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..secrets import cut, defang, mask_secrets
from ..session import Exchange, Turn
from ..tools import RESULT_CHARS, Tool, ToolArgumentError, error_text, result_text

__all__ = ["DEFAULT_MAX_STEPS", "PREVIEW_CHARS", "CallRecord", "Loop", "always_approved", "approve_call", "call_html",
           "call_signature", "calls_html", "finished", "prepare", "refused", "run_call", "run_tools", "step_messages"]

DEFAULT_MAX_STEPS = 10
#: Characters of a result shown in a call's block (the model gets up to RESULT_CHARS).
PREVIEW_CHARS = 2000
_PROMPT_CHARS = 4000
#: Tools the user answered "always" for, per conversation (ChatSession) in this kernel.
_ALWAYS: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

NOT_APPROVED = "Not run: the user did not approve this call."
NO_STDIN = ("Not run: this call needs the user's approval and no one can be asked here (this notebook "
            "runs without an input channel). Answer without it.")


@dataclass
class CallRecord:
    """One tool call of the loop, as shown and recorded (every string masked)."""

    id: str
    name: str
    arguments: str
    step: int
    approval: str = ""  # auto | yes | always | no | no input | invalid | unknown | interrupted
    seconds: float | None = None
    result: str = ""  # the text sent back to the model
    error: bool = False
    preview: str = ""

    def to_dict(self) -> dict[str, Any]:
        """What the turn keeps (``Turn.tool_calls``): the log, exports and resume read it."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments, "step": self.step,
                "approval": self.approval, "seconds": None if self.seconds is None else round(self.seconds, 4),
                "result": self.result, "error": self.error}


def always_approved(session: Any) -> set[str]:
    """The tools answered "always" in this conversation (kernel session)."""
    try:
        return _ALWAYS.setdefault(session, set())
    except TypeError:  # not weak-referenceable: no memory
        return set()


# ----------------------------------------------------------------------------- approval


def call_signature(name: str, arguments: Mapping[str, Any]) -> str:
    """``name(a=1, b='x')``: the exact call, values by repr (control characters escaped), masked."""
    text = f"{name}(" + ", ".join(f"{k}={_safe_repr(v)}" for k, v in arguments.items()) + ")"
    return defang(cut(text, _PROMPT_CHARS, redacting=False))


def _printable(text: str) -> str:
    """Code as shown in the question: masked, cut, control characters (but newline and tab) escaped."""
    shown = cut(text, _PROMPT_CHARS, redacting=False)
    return defang("".join(ch if ch in "\n\t" or ch.isprintable() else repr(ch)[1:-1] for ch in shown))


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ still gets asked about
        return f"<{type(value).__name__}>"


def approve_call(tool: Tool, arguments: Mapping[str, Any], *, always: set[str],
                 ask: Callable[[str], str] | None = None) -> str:
    """How a call is approved: "auto", "always", "yes", "no" or "no input" (never from model text)."""
    if not tool.approve:
        return "auto"
    if tool.name in always and not getattr(tool.function, "__upstage_always_ask__", False):
        return "always"  # answered "always" earlier in this conversation
    runs_code = bool(getattr(tool.function, "__upstage_always_ask__", False))
    if runs_code and isinstance(arguments.get("code"), str):
        prompt = (f"The model wants to run this Python code ({tool.name}):\n{_printable(arguments['code'])}\n"
                  "Run it? [y]es / [n]o: ")
    else:
        prompt = (f"The model wants to run {call_signature(tool.name, arguments)}\n"
                  f"Run it? [y]es / [n]o / [a]lways for {tool.name}: ")
    from IPython.core.error import StdinNotImplementedError  # noqa: PLC0415

    ask = ask or input
    try:
        reply = ask(prompt)
    except (StdinNotImplementedError, EOFError, OSError):
        return "no input"
    word = str(reply).strip().lower()
    if word in ("a", "always") and not runs_code:
        always.add(tool.name)
        return "always"
    return "yes" if word in ("y", "yes") else "no"


# ----------------------------------------------------------------------------- running


def await_here(awaitable: Any) -> Any:
    """Run an ``async def`` tool's coroutine to its end on this (the kernel's main) thread.

    ipykernel runs a cell while its own loop is marked running on this thread; a private
    loop is run here for the call and the kernel's is put back after.
    """
    import asyncio  # noqa: PLC0415

    running = asyncio.events._get_running_loop()
    loop = asyncio.new_event_loop()
    asyncio.events._set_running_loop(None)
    try:
        return loop.run_until_complete(awaitable)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            asyncio.events._set_running_loop(running)


def prepare(call: Any, tools: Mapping[str, Tool], *, step: int) -> tuple[CallRecord, Tool | None, dict[str, Any]]:
    """The call's record, its tool and checked arguments; tool None: the record is final (an error)."""
    name = mask_secrets(getattr(call, "name", "") or "")
    record = CallRecord(id=mask_secrets(getattr(call, "id", "") or ""), name=name,
                        arguments=mask_secrets(getattr(call, "arguments", "") or ""), step=step)
    tool = tools.get(getattr(call, "name", "") or "")
    if tool is None:
        record.approval, record.error = "unknown", True
        record.result = f"Error: there is no tool named {cut(name, 80, redacting=False)!r}; the tools are " \
                        f"{', '.join(tools) or 'none'}."
        return _preview(record), None, {}
    try:
        arguments = tool.arguments(getattr(call, "arguments", "") or "")
    except ToolArgumentError as exc:
        record.approval, record.error, record.result = "invalid", True, cut(f"Error: {exc}", 1000, redacting=False)
        return _preview(record), None, {}
    return record, tool, arguments


def refused(record: CallRecord) -> CallRecord:
    """A call that was not approved ("no", "no input"): what the model is told."""
    record.result = NOT_APPROVED if record.approval == "no" else NO_STDIN
    return _preview(record)


def finished(record: CallRecord, started: float, value: Any = None, error: BaseException | None = None) -> CallRecord:
    """A call that ran: its duration and its result (or error) as the text sent back."""
    record.seconds = time.perf_counter() - started
    if error is not None:
        record.error, record.result = True, error_text(error)
    else:
        record.result = result_text(value, RESULT_CHARS)
    return _preview(record)


def run_call(call: Any, tools: Mapping[str, Tool], *, step: int, always: set[str],
             ask: Callable[[str], str] | None = None, into: list[CallRecord] | None = None) -> CallRecord:
    """Check, approve (``ask``: the question on stdin) and run one tool call here; the record says what happened.

    ``into`` gets the record at once (so an interrupt, which passes through, still leaves it).
    """
    record, tool, arguments = prepare(call, tools, step=step)
    if into is not None:
        into.append(record)
    if tool is None:
        return record
    try:
        record.approval = approve_call(tool, arguments, always=always, ask=ask)
    except KeyboardInterrupt:
        record.approval, record.result = "interrupted", "Not run: the user interrupted the question."
        raise
    if record.approval in ("no", "no input"):
        return refused(record)
    started = time.perf_counter()
    try:
        value = tool.call(arguments)
        if inspect.isawaitable(value):
            value = await_here(value)
    except KeyboardInterrupt:
        record.approval, record.seconds = "interrupted", time.perf_counter() - started
        record.result = "Not finished: the user interrupted it."
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the model gets the error, the cell goes on
        return finished(record, started, error=exc)
    return finished(record, started, value)


def _preview(record: CallRecord) -> CallRecord:
    record.preview = cut(record.result, PREVIEW_CHARS, redacting=False)
    return record


def step_messages(exchange: Exchange, records: Iterable[CallRecord], step: int) -> list[dict[str, Any]]:
    """The assistant message that asked for the calls and one ``tool`` message per call."""
    records = list(records)
    calls: list[dict[str, Any]] = [{"id": r.id or f"call_{step}_{i}", "type": "function",
                                    "function": {"name": r.name, "arguments": r.arguments}}
                                   for i, r in enumerate(records)]
    for r, c in zip(records, calls, strict=True):
        r.id = c["id"]
    out: list[dict[str, Any]] = [{"role": "assistant", "content": exchange.text or None, "tool_calls": calls}]
    out += [{"role": "tool", "tool_call_id": c["id"], "content": r.result} for r, c in zip(records, calls, strict=True)]
    return out


# ----------------------------------------------------------------------------- display

_APPROVAL_WORDS = {"auto": "ran without asking", "yes": "approved", "always": "approved (always)",
                   "no": "not approved", "no input": "refused: no one could be asked",
                   "invalid": "not run: arguments did not fit", "unknown": "not run: unknown tool",
                   "interrupted": "interrupted"}


def call_summary(record: CallRecord) -> str:
    """One line: name, approval, duration, ok/error."""
    took = f" · {record.seconds * 1000:.0f} ms" if record.seconds is not None else ""
    state = " · error" if record.error else ""
    approval = _APPROVAL_WORDS.get(record.approval, record.approval)
    return f"Tool {record.name} · {approval}{took}{state}"


def call_html(record: CallRecord) -> str:
    """A call as a collapsed block: our escaped HTML around the renderer's output."""
    from ..formats import fence  # noqa: PLC0415
    from ..render import render_html, render_text_html  # noqa: PLC0415

    try:
        args = json.dumps(json.loads(record.arguments), indent=2, ensure_ascii=False) if record.arguments.strip() else "{}"
    except ValueError:
        args = record.arguments
    return (f'<details class="um-tool"><summary>{html.escape(call_summary(record))}</summary>'
            f'<div class="um-tool-body">{render_html(fence(mask_secrets(args), "json"))}'
            f'{render_text_html(record.preview or "(no result)")}</div></details>')


def calls_html(calls: Iterable[Any]) -> str:
    """The blocks of a recorded turn's calls (``Turn.tool_calls`` dicts: from the log too)."""
    out = []
    for c in calls:
        if isinstance(c, dict):
            seconds = c.get("seconds")
            record = CallRecord(id=mask_secrets(c.get("id") or ""), name=mask_secrets(c.get("name") or "?"),
                                arguments=mask_secrets(c.get("arguments") or ""), step=int(c.get("step") or 1),
                                approval=mask_secrets(c.get("approval") or ""), error=bool(c.get("error")),
                                seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
                                result=mask_secrets(c.get("result") or ""))
            out.append(call_html(_preview(record)))
    return "".join(out)


def call_plain(record: CallRecord) -> str:
    return defang(f"[{call_summary(record)}] {record.name}({record.arguments})\n-> {record.preview}")


def shower(rich: bool) -> Callable[[CallRecord], None]:
    """Show a call's block in the cell: rich HTML (collapsed) or a plain line."""
    def show(record: CallRecord) -> None:
        if rich:
            from IPython.display import display  # noqa: PLC0415

            from .display import html_bundle  # noqa: PLC0415

            display(html_bundle(call_html(record), call_plain(record)), raw=True)
        else:
            print(call_plain(record))
    return show


# ----------------------------------------------------------------------------- offering tools


def resolve_tools(spec: Any, namespace: Mapping[str, Any], *, approve: Any = None, shell: Any = None) -> list[Tool]:
    """The tools ``--tools f,g`` (or a list of names/functions, ``notebook`` for the built-in set) names.

    ``approve`` (``--approve f,g``) names tools that run without asking. ValueError says what is wrong.
    """
    from ..tools import ToolError, as_tool  # noqa: PLC0415

    items = _names(spec) if isinstance(spec, str) else list(spec or [])
    tools: list[Tool] = []
    for item in items:
        if item == "notebook":
            from .nbtools import notebook_tools  # noqa: PLC0415

            tools += notebook_tools(shell)
            continue
        obj = item
        if isinstance(item, str):
            if item not in namespace:
                raise ValueError(f"--tools {item}: no function named {item!r} in the notebook (define it first).")
            obj = namespace[item]
        try:
            tools.append(as_tool(obj))
        except ToolError as exc:
            raise ValueError(f"--tools: {exc}") from None
    quick = set(_names(approve)) if isinstance(approve, str) else set(approve or ())
    unknown = quick - {t.name for t in tools}
    if unknown:
        raise ValueError(f"--approve {', '.join(sorted(unknown))}: not among the tools offered (--tools).")
    out = []
    for t in tools:
        if t.name in quick:
            if getattr(t.function, "__upstage_always_ask__", False):
                raise ValueError(f"--approve {t.name}: this tool always asks (it runs code).")
            t = as_tool(t, approve=False)
        out.append(t)
    return out


def _names(spec: str | None) -> list[str]:
    return [n.strip() for n in (spec or "").split(",") if n.strip()]


# ----------------------------------------------------------------------------- the loop


@dataclass
class Loop:
    """One cell's tool loop: its steps, its calls; :meth:`turn` is what is recorded."""

    request: Any
    session: Any
    tools: dict[str, Tool]
    max_steps: int = DEFAULT_MAX_STEPS
    steps: list[Exchange] = dataclasses.field(default_factory=list)
    records: list[CallRecord] = dataclasses.field(default_factory=list)

    def turn(self, status: str | None = None) -> Turn | None:
        """The one turn of the loop: the last step's answer, every call, the steps' usage summed."""
        ended = [s.turn for s in self.steps if s.turn is not None]
        if not ended:
            return None
        last = ended[-1]
        usages = [t.usage for t in ended if t.usage is not None]
        usage = None
        for u in usages:
            usage = u if usage is None else usage + u
        timings = dict(last.timings)
        timings["total"] = round(sum(t.timings.get("total", 0.0) for t in ended), 3)
        return dataclasses.replace(last, status=status or last.status, usage=usage,
                                   tool_calls=[r.to_dict() for r in self.records],
                                   estimated_tokens=sum(t.estimated_tokens for t in ended), timings=timings)


def run_tools(magics: Any, request: Any, provider: Any, *, max_steps: int = DEFAULT_MAX_STEPS,
              show: Callable[[CallRecord], Any] | None = None, ask: Callable[[str], str] | None = None) -> Exchange:
    """Run the loop for ``request`` (it offers tools) in ``magics``' cell; return the last step.

    ``magics.stream_answer(exchange, provider)`` streams one step into its view (raising a
    short KeyboardInterrupt / UpstageError as the magic does), ``magics.finish_step()``
    ends a step that asked for tools. The turn is recorded on every path.
    """
    __tracebackhide__ = True
    loop = Loop(request, magics.session, {t.name: t for t in request.tools}, max(1, int(max_steps)))
    always = always_approved(magics.session)
    messages = list(request.messages)
    records: list[CallRecord] = []
    status: str | None = None
    try:
        for step in range(1, loop.max_steps + 1):
            exchange = Exchange(dataclasses.replace(request, messages=list(messages), record=False), magics.session)
            loop.steps.append(exchange)
            magics.last_exchange = exchange
            magics.stream_answer(exchange, provider)
            if not exchange.tool_calls or exchange.status != "done":
                break
            if step == loop.max_steps:  # its view is finished by the magic, with the footer
                print(f"Stopped at the step limit ({loop.max_steps} steps, --max-steps): the model still asked "
                      f"for {', '.join(mask_secrets(c.name) for c in exchange.tool_calls)}; those calls were not run.",
                      file=sys.stderr)
                break
            magics.finish_step()
            records = []
            for call in exchange.tool_calls:
                try:
                    run_call(call, loop.tools, step=step, always=always, ask=ask, into=records)
                finally:
                    if records and show is not None:
                        show(records[-1])
            loop.records += records
            messages += step_messages(exchange, records, step)
        return loop.steps[-1]
    except KeyboardInterrupt as exc:
        status = "stopped"
        if records and records[-1] not in loop.records:
            loop.records += records
        if getattr(exc, "_render_traceback_", None) is None:  # in a tool or its question, not a stream
            line = "KeyboardInterrupt: stopped during a tool call; what was shown was kept"
            short = KeyboardInterrupt(line.partition(": ")[2])
            short._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
            raise short from None
        raise
    except BaseException:
        status = "error"
        raise
    finally:
        turn = loop.turn(status)
        if turn is not None and request.record and magics.session is not None:
            magics.session.record(turn)
