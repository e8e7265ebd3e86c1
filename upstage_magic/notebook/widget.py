"""The chat widget: one anywidget with its own small front end (``static/chat.js``, ``chat.css``).

``ChatWidget`` is glue. The conversation lives in a :class:`~upstage_magic.session.ChatSession`
(by default the kernel's, shared with ``%%upstage``); each answer is an
:class:`~upstage_magic.session.Exchange` that drives the provider and records its turn;
the settings are the kernel's :class:`~upstage_magic.settings.Settings`, read at every send.
The front end is a plain ES module shipped in the package (no build step, no CDN), so the
widget works wherever anywidget does (JupyterLab 4, Notebook 7, VS Code).

Design notes
------------
* Python keeps the conversation, the settings and the sanitising: every piece of HTML the
  browser shows for model text comes from :func:`render_html` here; the front end inserts it
  and never parses Markdown. Prompts, errors and status are plain text (``textContent``).
* Synced state is small and holds no secrets or server paths: ``transcript`` (the last
  finished turns, at most ``MAX_SHOWN`` of them and ``MAX_SHOWN_CHARS`` of HTML, as ``{id,
  prompt, html, reasoning_html, status, model, stats, error}``; older turns are counted in
  ``hidden_turns`` and kept in the session and its export), ``live`` (the streaming answer's
  prompt/model/status/stats only), ``models``, ``settings`` (model, system prompt,
  temperature, max tokens), ``status``, ``busy``, ``shared``, ``notice``, ``queued``,
  ``undo_turns``, ``want_side``/``side_open`` (see :mod:`.chatpanel`). The transcript goes by
  the turn (:mod:`.transcript_sync`); with no view yet (nbclient) whole once per cell.
* Streaming sends only the live answer, as ``live`` custom messages (never the transcript):
  ``AnswerRenderer.split`` cuts its HTML into *frozen* top-level blocks (sent once, appended;
  a ``reset`` replaces them) and a *tail* (re-sent per update), so an update costs the size
  of the tail, not of the answer. When the answer ends it is rendered whole into the
  transcript (exactly what a cell shows); if the frozen blocks plus the final tail give that
  same HTML, an ``adopt`` message first tells the browser to keep the live DOM as the
  finished turn instead of parsing the answer again.
* The front end sends the question text in the ``send`` message (no synced input value, no
  debounce race) and clears its box only when the kernel acknowledges it; a refused send
  (busy session, empty text) is acknowledged with the error and the text stays in the box.
  A ``hello`` from each new view gets a ``hello`` reply; a view that hears nothing back says
  the kernel is gone ("kernel restarted: run the cell again") and shows the saved transcript
  read-only.
* Streaming never blocks the kernel: a send starts a task on the running loop and returns.
* Settings: by default the widget reads and writes :func:`~upstage_magic.settings.default_settings`
  (shared with ``%config UpstageMagics.*`` and ``%%upstage``). ``ChatWidget(settings=Settings(...))``
  gives it a private copy; the ``model=``/``system_prompt=``/``temperature=``/``max_tokens=``
  arguments set initial values on that private copy and are refused without one (they would
  otherwise silently change every cell's settings).
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from pathlib import Path
from typing import Any

import anywidget
from traitlets import Bool, Dict, Int, List, TraitError, Unicode

from ..events import Reasoning
from ..render import render_html
from ..request import Request, plan, resolve_model
from ..secrets import cut, mask_partial, mask_secrets
from ..session import ChatSession, Exchange, SessionBusyError, Turn, default_session, plural
from ..settings import Settings, default_settings
from .chatpanel import PanelMixin
from .chatview import LiveAnswer, answer_html, error_parts, fmt_stats, widget_css
from .display import Coalescer
from .homethread import HomeThread
from .transcript_sync import send_turn_delta, send_whole_when_cell_ends
from .widget_attach import AttachMixin
from .widgettools import ToolsMixin

__all__ = ["MAX_SHOWN", "MAX_SHOWN_CHARS", "ChatWidget", "answer_html", "render_html"]

log = logging.getLogger(__name__)

_STATIC = Path(__file__).parent / "static"
#: Finished turns kept in the widget's synced state (older ones: a count, and the export),
#: at most MAX_SHOWN turns and MAX_SHOWN_CHARS of HTML (always the last turn).
MAX_SHOWN = 30
MAX_SHOWN_CHARS = 400_000


class ChatWidget(ToolsMixin, PanelMixin, AttachMixin, HomeThread, anywidget.AnyWidget):
    """A chat with an Upstage Solar model inside the notebook.

    ``ChatWidget()`` shares the kernel's conversation with ``%%upstage`` cells and the
    kernel's settings with ``%config UpstageMagics.*`` (read at every send; the settings
    panel writes them). ``ChatWidget(session=ChatSession())`` keeps an independent
    conversation, ``ChatWidget(settings=Settings(model=...))`` independent settings (then
    ``model=``, ``system_prompt=``, ``temperature=``, ``max_tokens=`` set its initial values).

    Other options: ``provider`` (anything with ``create_async_generator``; default
    ``Upstage``), ``models`` (initial model list; the live list is fetched in the
    background unless ``fetch_models=False``), ``export_dir`` (for :meth:`export`).

    Keyboard: Enter sends, Shift+Enter is a newline, Escape stops, Up in an empty box
    recalls the last question. :meth:`send` does the same from code.
    """

    _esm = _STATIC / "chat.js"
    _css = widget_css()

    transcript = List(Dict(), help="Finished turns shown (the last MAX_SHOWN).").tag(sync=True)
    hidden_turns = List(Int(), help="[count of earlier turns not in transcript]").tag(sync=True)
    live = Dict(help="The streaming answer: prompt, model, status, stats (content comes as messages).").tag(sync=True)
    models = List(Unicode()).tag(sync=True)
    settings = Dict(help="model, system_prompt, temperature, max_tokens (the settings panel).").tag(sync=True)
    status = Unicode("").tag(sync=True)
    busy = Bool(False).tag(sync=True)
    shared = Bool(True, help="The conversation is the kernel's, shared with %%upstage.").tag(sync=True)
    notice = Dict(help="An error not tied to an answer: kind, message, hint.").tag(sync=True)
    last_error = Unicode("", help="The notebook's last recorded error, one line ('' if none): "
                                  "the Fix last error button shows when set.").tag(sync=True)
    queued = List(Dict(), help="Questions sent while an answer streams: [{id, text}], sent in order.").tag(sync=True)
    undo_turns = Int(0, help="Turns New chat cleared that Undo brings back (0: nothing to undo).").tag(sync=True)
    want_side = Bool(False, help="Open in JupyterLab's side panel when shown (%upstage chat --side).").tag(sync=True)
    side_open = Bool(False, help="A view of this chat is in JupyterLab's side panel.").tag(sync=True)

    def __init__(
        self,
        *,
        session: ChatSession | None = None,
        provider: Any = None,
        settings: Settings | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        models: list[str] | None = None, export_dir: str | Path | None = None,
        fetch_models: bool = True,
        **kwargs: Any,
    ) -> None:
        initial = {k: v for k, v in (("model", model), ("system_prompt", system_prompt),
                                     ("temperature", temperature), ("max_tokens", max_tokens)) if v is not None}
        if initial and settings is None:
            names = ", ".join(f"{k}=" for k in initial)
            raise TypeError(
                f"ChatWidget({names}...) would change the kernel's settings for every cell. "
                "Either set them for all (%config UpstageMagics.model = '...', or the widget's "
                "Settings panel), or give this widget its own: "
                "ChatWidget(settings=Settings(), model=...) with "
                "'from upstage_magic import Settings'.")
        if provider is None:
            from ..providers import Upstage  # noqa: PLC0415

            provider = Upstage
        self.session = session if session is not None else default_session()
        self.provider = provider
        self.config: Settings = settings if settings is not None else default_settings()
        for name, value in initial.items():
            setattr(self.config, name, value)
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self._task: asyncio.Task | None = None
        self._models_task: asyncio.Task | None = None
        self._exchange: Exchange | None = None
        self._live_render: LiveAnswer | None = None
        self._errors: dict[int, dict[str, str]] = {}  # id(turn) -> error parts of our own turns
        self._turn_ids: dict[int, int] = {}
        self._stats_by_turn: dict[int, str] = {}  # id(turn) -> final stats of our own answers
        self._finish_hint: tuple[int, str, str, int] | None = None
        self._next_id = 0
        self.remember_home()  # front-end messages are handled on this thread (homethread.py)
        self.sent_messages = 0  # custom messages sent (benchmarks)
        super().__init__(**kwargs)
        self.shared = self.session is default_session()
        fallback = list(models) if models else list(getattr(provider, "models", []) or [])
        self.models = self._model_options(fallback)
        self._sync_settings()
        self.on_msg(self._on_msg)

        ref = weakref.ref(self)

        def listener(session: ChatSession) -> None:
            me = ref()
            if me is None:
                session.remove_callback(listener)
            else:
                me._on_session_change()

        def settings_listener(change: Any) -> None:
            me = ref()
            if me is None:
                change["owner"].unobserve(settings_listener)
            else:
                me._sync_settings()

        self._listener = listener
        self._settings_listener = settings_listener
        self.session.on_change(listener)
        self.config.observe(settings_listener, names=["model", "system_prompt", "temperature", "max_tokens"])
        self._rebuild()
        self.status = (f"ready · {plural(len(self.session.turns), 'turn')} in the conversation"
                       if self.session.turns else "ready")
        if fetch_models:
            self._start_model_fetch()
        self._watch_errors()

    # ------------------------------------------------------------------ public API
    def send(self, prompt: str | None = None) -> asyncio.Task | None:
        """Send ``prompt``; return the streaming task (None if nothing was sent).

        Needs a running event loop (a Jupyter kernel, or ``await`` code). Refused, with
        the reason shown in the widget, when the text is empty or an answer is still
        streaming in this conversation.
        """
        try:
            return self._start(prompt or "")
        except (ValueError, SessionBusyError) as exc:
            self._notice(exc)
            return None

    def stop(self) -> None:
        """Stop the answer that is streaming (its partial text is kept, marked stopped)."""
        if self._task is not None and not self._task.done():
            self.status = "stopping…"
            self._task.cancel()

    def _error_log(self) -> Any:
        """The kernel's error log (kept by ``%load_ext upstage_magic``), or None."""
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:  # pragma: no cover - IPython is a dependency
            return None
        magics = getattr(shell, "magics_manager", None)
        m = magics.registry.get("UpstageMagics") if magics is not None else None
        return getattr(m, "error_log", None)

    def _watch_errors(self) -> None:
        """Keep ``last_error`` current: after each cell, the last recorded error (masked)."""
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:  # pragma: no cover
            return
        if shell is None or not hasattr(shell, "events"):
            return
        ref = weakref.ref(self)

        def after_cell(_result: Any = None) -> None:
            me = ref()
            if me is None:
                try:
                    shell.events.unregister("post_run_cell", after_cell)
                except ValueError:
                    pass
                return
            log = me._error_log()
            record = log.last() if log is not None else None
            me.last_error = cut(f"In[{record.execution_count}]: {record.summary or record.type}", 200) \
                if record is not None else ""

        self._after_cell = after_cell
        shell.events.register("post_run_cell", after_cell)
        after_cell()

    def fix_last_error(self) -> asyncio.Task | None:
        """Ask the model to explain the notebook's last error and propose a corrected cell.

        The same request as ``%upstage fix`` (error, traceback trimmed to your frames, the
        cell), sent as a question in this chat. Needs ``%load_ext upstage_magic`` (which
        records the errors of cells).
        """
        from .fix import build_fix_prompt  # noqa: PLC0415

        log = self._error_log()
        record = log.last() if log is not None else None
        if record is None:
            self._notice(RuntimeError("No error recorded yet: run the failing cell (with %load_ext upstage_magic "
                                      "loaded), then press Fix last error."))
            return None
        return self.send(build_fix_prompt(record))

    def retry(self) -> asyncio.Task | None:
        """Ask the last question again (its answer is replaced); returns the task."""
        if self.streaming:
            self._notice(SessionBusyError())
            return None
        turns = self.session.turns
        if not turns:
            self._notice(ValueError("There is no question to retry yet."), hint="Type a question first.")
            return None
        last = self.session.pop_last()
        return self.send(last.prompt) if last is not None else None

    def new_chat(self) -> None:
        """Forget the conversation (also for ``%%upstage`` when it is shared)."""
        if self._exchange is not None and self._task is not None and not self._task.done():
            self._exchange.forget()  # the stopped answer must not land in the new chat
            self._task.cancel()
        self.notice = {}
        self.remember_for_undo()
        self.session.reset()
        self.status = "new chat"

    @property
    def streaming(self) -> bool:
        """True while an answer streams."""
        return self._task is not None and not self._task.done()

    @property
    def exchange(self) -> Exchange | None:
        """The exchange in progress (or None)."""
        return self._exchange if self.streaming else None

    def request_for(self, text: str) -> Request:
        """The request a send of ``text`` makes (the one plan: effort checks, notices, history)."""
        return plan(self.config, self.ask_for(text), session=self.session, provider=self.provider)

    def export(self, path: str | Path | None = None) -> Path:
        """Save the conversation (Markdown for .md, JSON for .json); returns the path.

        The widget's Export button downloads the same text in the browser instead (no
        file on the server, no path in the widget's state).
        """
        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = (self.export_dir or Path.cwd()) / f"upstage-chat-{stamp}.md"
        out = self.session.export(path)
        self.status = f"saved {plural(len(self.session.turns), 'turn')} to {out.name}"
        return out

    def close(self) -> None:
        """Stop streaming and detach from the session and the settings."""
        after = getattr(self, "_after_cell", None)
        if after is not None:
            try:
                from IPython import get_ipython

                shell = get_ipython()
                if shell is not None:
                    shell.events.unregister("post_run_cell", after)
            except (ImportError, ValueError):
                pass
        try:
            for task in (getattr(self, "_task", None), getattr(self, "_models_task", None)):
                if task is not None and not task.done():
                    task.cancel()
            if hasattr(self, "_listener"):
                self.session.remove_callback(self._listener)
                try:
                    self.config.unobserve(self._settings_listener,
                                          names=["model", "system_prompt", "temperature", "max_tokens"])
                except ValueError:
                    pass
        finally:
            super().close()

    def __repr__(self) -> str:
        state = "streaming" if self.streaming else "idle"
        return (f"<ChatWidget {state}, {plural(len(self.session.turns), 'turn')}, "
                f"model={self.config.model or '(default)'!r}>")

    # ------------------------------------------------------------------ messages
    _viewed = False  # a view said hello (until then the whole list also goes once per cell)

    def _should_send_property(self, key: str, value: Any) -> bool:
        # The transcript goes out by the turn ("turns" messages, see transcript_sync).
        return key != "transcript" and bool(super()._should_send_property(key, value))

    def set_state(self, sync_data: dict[str, Any]) -> None:
        # The page keeps its own copy of the transcript; the kernel's is never written from it.
        super().set_state({k: v for k, v in sync_data.items() if k != "transcript"})

    def _reply(self, content: dict[str, Any]) -> None:
        self.sent_messages += 1
        self.send_msg(content)

    def send_msg(self, content: dict[str, Any]) -> None:
        """Send a custom message to the front end (a no-op without a comm)."""
        if self.comm is not None:
            super().send(content)

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Front-end messages; any error is shown in the widget (ipywidgets would swallow it)."""
        if self.away_from_home(self._on_msg, _widget, content, _buffers):
            return  # a kernel subshell's thread: handled on the widget's own loop
        try:
            self._dispatch(content if isinstance(content, dict) else {})
        except Exception as exc:  # noqa: BLE001
            self._notice(exc)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "send":
            mid = msg.get("id")
            try:
                if self.session_busy() and str(msg.get("text") or "").strip():
                    entry = self.enqueue(str(msg.get("text")))
                    self._reply({"type": "ack", "id": mid, "ok": True, "queued": entry["id"]})
                    return
                self._start(str(msg.get("text") or ""))
            except (ValueError, SessionBusyError, RuntimeError) as exc:
                self._reply({"type": "ack", "id": mid, "ok": False, "error": error_parts(exc)})
                return
            self._reply({"type": "ack", "id": mid, "ok": True})
        elif kind == "hello":
            self._viewed = True
            self._reply({"type": "hello", "id": msg.get("id")})
            if self.streaming and self._live_render is not None and self._exchange is not None:
                self._send_live(full=True)
        elif kind == "stop":
            self.stop()
        elif kind == "retry":
            self.retry()
        elif kind == "new":
            self.new_chat()
        elif kind == "export":
            fmt = "json" if msg.get("format") == "json" else "md"
            text = self.session.export_json() if fmt == "json" else self.session.export_markdown()
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self._reply({"type": "export", "name": f"upstage-chat-{stamp}.{fmt}", "text": text,
                         "mime": "application/json" if fmt == "json" else "text/markdown"})
        elif kind == "copy":
            self._reply({"type": "copy", "id": msg.get("id"), "text": self._answer_text(msg.get("turn"))})
        elif kind == "settings":
            self._apply_settings(msg.get("values") or {})
        elif kind == "dismiss":
            self.notice = {}
        elif kind == "fix":
            self.fix_last_error()
        elif kind == "resync":
            self.send_state("transcript")
        else:
            self.dispatch_panel(kind, msg)  # the panel's messages, and tool approvals (widgettools)

    def _answer_text(self, turn_id: Any) -> str:
        for turn in self.session.turns:
            if self._turn_ids.get(id(turn)) == turn_id:
                return mask_secrets(turn.answer)
        return ""

    def _apply_settings(self, values: dict[str, Any]) -> None:
        """Write the settings panel's values into the Settings (validated there)."""
        try:
            with self.config.hold_trait_notifications():
                if "model" in values:
                    self.config.model = str(values["model"] or "").strip()
                if "system_prompt" in values:
                    self.config.system_prompt = str(values["system_prompt"] or "")
                if "temperature" in values:
                    t = values["temperature"]
                    self.config.temperature = None if t in (None, "") else float(t)
                if "max_tokens" in values:
                    m = values["max_tokens"]
                    self.config.max_tokens = None if m in (None, "", 0) else int(m)
        except (TraitError, ValueError, TypeError) as exc:
            self._sync_settings()  # the panel shows the values in force again
            self._notice(ValueError(str(exc)), hint="Fix the value in Settings.")
            return
        self._sync_settings()
        self.status = "settings saved (shared with %%upstage)" if self.config is default_settings() \
            else "settings saved (this widget only)"

    def _sync_settings(self) -> None:
        c = self.config
        self.settings = {"model": c.model, "system_prompt": c.system_prompt, "temperature": c.temperature,
                         "max_tokens": c.max_tokens, "default_model": self._default_model()}

    # ------------------------------------------------------------------ streaming
    def _start(self, text: str) -> asyncio.Task:
        """Start an answer to ``text`` (raises ValueError / SessionBusyError / RuntimeError)."""
        if not text.strip():
            raise ValueError("Type a question first.")
        if self.streaming:
            raise SessionBusyError()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("The chat widget needs a running event loop: use it in a Jupyter kernel "
                               "(or call send() from async code).") from None
        self.adopt_loop(loop)
        request = self.request_for(text)
        exchange = self._first_step(request)
        model = request.model
        self._exchange = exchange
        self._live_render = LiveAnswer(load_images=bool(self.config.load_images))
        self.notice = {}
        self.forget_undo()
        with self.hold_sync():
            self.live = {"prompt": mask_secrets(text), "model": model, "status": "streaming",
                         "stats": fmt_stats("streaming", None)}
            self.busy = True
            self.status = "streaming…"
        self._task = loop.create_task(self._drive(request, exchange))
        return self._task

    async def _run(self, exchange: Exchange, finish: bool = True) -> None:
        """Consume ``exchange.stream`` and throttle renders; the exchange records the turn."""
        loop = asyncio.get_running_loop()
        handle: asyncio.Handle | None = None

        def render() -> None:
            self._send_live()

        # Each update re-renders and sends only the unfinished tail (and the reasoning), so the
        # interval stretches with that size only: a 5 MB answer with no paragraph breaks
        # (all tail) is re-rendered at most ~200 KB per second, not quadratically.
        coalescer = Coalescer(render, interval=self.config.update_interval)
        size = 0

        def poll() -> None:
            nonlocal handle
            handle = None
            if coalescer.pending and not coalescer.poll():
                handle = loop.call_later(coalescer.current_interval() / 2, poll)

        try:
            async for item in exchange.stream(self.provider):
                if isinstance(item, str):
                    size += len(item)
                elif isinstance(item, Reasoning) and item.text:
                    size += len(item.text)
                else:
                    continue
                lr = self._live_render
                coalescer.changed(size - (lr.frozen if lr is not None else 0))
                if coalescer.pending and handle is None:
                    handle = loop.call_later(coalescer.current_interval(), poll)
        except asyncio.CancelledError:
            pass  # the exchange recorded "stopped" with the partial answer
        except Exception:  # noqa: BLE001,S110 - recorded on the exchange, shown from there
            pass
        finally:
            if handle is not None:
                handle.cancel()
            try:
                self._finish(exchange) if finish else None  # a tool loop finishes after its last step
            except Exception as exc:  # noqa: BLE001
                self._notice(exc)

    def _send_live(self, *, full: bool = False) -> None:
        """Send the live answer's new frozen HTML and its tail (``full``: everything)."""
        ex, lr = self._exchange, self._live_render
        if ex is None or lr is None:
            return
        append, tail, reset = lr.update(ex.text)
        msg: dict[str, Any] = {"type": "live", "tail": tail}
        if full or reset:
            msg["reset"] = True
            msg["append"] = "".join(lr.frozen_html)
        elif append:
            msg["append"] = append
        if ex.reasoning and (full or len(ex.reasoning) != lr.reasoning_len):
            lr.reasoning_len = len(ex.reasoning)
            msg["reasoning"] = answer_html(mask_partial(ex.reasoning))
        msg["stats"] = fmt_stats("streaming", ex)
        self._reply(msg)

    def _finish(self, exchange: Exchange) -> None:
        """The answer ended (its turn is recorded): move it from live to the transcript."""
        turn = exchange.turn
        if exchange.error is not None and turn is not None:
            self._errors[id(turn)] = error_parts(exchange.error)
        lr = self._live_render
        if lr is not None and turn is not None and self.comm is not None and lr.frozen * 2 > len(exchange.text):
            # The browser already holds the frozen blocks (most of the answer): the finished
            # turn reuses them instead of re-sending (worth a last render of the tail only).
            held = "".join(lr.frozen_html)
            append, tail, reset = lr.update(exchange.text)
            if not reset:
                self._finish_hint = (id(turn), held, append + tail, len(lr.frozen_html))
        self._exchange = None
        self._live_render = None
        stats = fmt_stats(exchange.status, exchange, elapsed=True)
        if turn is not None and turn in self.session.turns:
            self._turn_ids.setdefault(id(turn), self._new_id())
            self._stats_by_turn[id(turn)] = stats
        with self.hold_sync():
            self.live = {}
            self.busy = False
            self._rebuild()
            self.status = stats
        self.send_queued_soon()

    # ------------------------------------------------------------------ transcript
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _turn_entry(self, turn: Turn) -> dict[str, Any]:
        if id(turn) not in self._turn_ids:
            self._turn_ids[id(turn)] = self._new_id()
        load_images = bool(self.config.load_images)
        error = self._errors.get(id(turn))
        if turn.status == "error" and error is None:
            error = error_parts(turn.error)
        stats = self._stats_by_turn.get(id(turn)) or fmt_stats(turn.status, turn)
        return {
            "id": self._turn_ids[id(turn)],
            "prompt": mask_secrets(turn.prompt),
            "html": answer_html(turn.answer, load_images=load_images) if turn.answer else "",
            "reasoning_html": answer_html(turn.reasoning) if turn.reasoning else "",
            "status": turn.status,
            "model": mask_secrets(turn.model or ""),
            "stats": stats,
            "error": error, "tools_html": self._tools_html(turn),
        }

    def _rebuild(self) -> None:
        """Sync ``transcript`` with the session's turns (the last MAX_SHOWN, MAX_SHOWN_CHARS)."""
        turns = list(self.session.turns)
        cache = {e["id"]: e for e in self.transcript}
        entries: list[dict[str, Any]] = []
        size = 0
        for t in reversed(turns[-MAX_SHOWN:]):
            tid = self._turn_ids.get(id(t))
            entry = cache.get(tid) if tid is not None else None
            if entry is None:
                entry = self._turn_entry(t)
            size += len(entry["html"]) + len(entry["reasoning_html"])
            if entries and size > MAX_SHOWN_CHARS:
                break
            entries.append(entry)
        entries.reverse()
        live_ids = {id(t) for t in turns}
        for mapping in (self._turn_ids, self._errors, self._stats_by_turn):
            for key in [k for k in mapping if k not in live_ids]:
                del mapping[key]
        hidden = [len(turns) - len(entries)] if len(turns) > len(entries) else []
        old_ids = [e["id"] for e in self.transcript]
        with self.hold_sync():
            self._send_adopt(entries)
            self.transcript = entries  # not synced as a whole (see _should_send_property)
            self.hidden_turns = hidden
            send_turn_delta(self._reply, old_ids, entries)
        if not self._viewed:
            send_whole_when_cell_ends(self, lambda: self.comm is not None and not self._viewed)

    def _send_adopt(self, entries: list[dict[str, Any]]) -> None:
        """Tell the browser that the live answer it shows *is* the finished turn (the frozen
        blocks it has + the final tail give the turn's HTML), so it keeps that DOM instead of
        parsing the answer again. Sent before the state update that adds the turn."""
        hint, self._finish_hint = self._finish_hint, None
        if hint is None or not entries:
            return
        key, frozen, tail, _pieces = hint
        e = entries[-1]
        if self._turn_ids.get(key) == e["id"] and frozen and e["html"] == frozen + tail:
            self._reply({"type": "adopt", "live_tail": tail,
                         "entry": {k: v for k, v in e.items() if k != "html"}})

    def _on_session_change(self) -> None:
        if not self.away_from_home(self._safe_rebuild):
            self._safe_rebuild()

    def _safe_rebuild(self) -> None:
        if self._exchange is not None and self._exchange.turn is not None:
            return  # our own answer just ended: _finish rebuilds (with its stats) right after
        try:
            self._rebuild()
            if self.notice.get("kind") == "Busy" and not self.session_busy():
                self.notice = {}  # its cause is gone
            self.send_queued_soon()
        except Exception as exc:  # noqa: BLE001
            self._notice(exc)

    def _notice(self, exc: BaseException, *, hint: str | None = None) -> None:
        """Show an error that is not an answer's (a refused send, settings, export)."""
        try:
            parts = error_parts(exc)
            if hint is not None:
                parts["hint"] = hint
            self.notice = parts
            self.status = f"error: {parts['kind']}"
        except Exception:
            log.exception("upstage-magic: could not show an error in the chat widget")

    # ------------------------------------------------------------------ models
    def _default_model(self) -> str:
        """The model used while the setting is empty (the provider's default)."""
        return resolve_model(None, self.provider, base_url=self.config.base_url or None)

    def _model_options(self, names: list[str]) -> list[str]:
        out: list[str] = []
        for m in [self.config.model, *names]:
            if m and m not in out:
                out.append(m)
        return out

    def _start_model_fetch(self) -> None:
        lister = getattr(self.provider, "list_models", None)
        if lister is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (plain script): keep the known list

        async def fetch() -> None:
            from ..models import fetch_models  # noqa: PLC0415

            timeout: dict[str, Any] = {"timeout": self.config.timeout} if self.config.timeout else {}
            names, note = await fetch_models(self.provider, base_url=self.config.base_url or None, **timeout)
            if names and note is None:
                self.models = self._model_options(list(names))

        self._models_task = loop.create_task(fetch())
