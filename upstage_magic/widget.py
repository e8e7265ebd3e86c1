"""The chat widget: a streaming conversation inside the notebook (plain ipywidgets 8).

``ChatWidget`` is a VBox of stock widgets, so it works wherever ipywidgets works
(JupyterLab, Notebook 7, VS Code, Voila) without a front-end build. It is glue only: the
conversation lives in a :class:`~upstage_magic.session.ChatSession` (by default the
kernel's, shared with ``%%upstage``), the text comes from the provider's async generator,
and :class:`~upstage_magic.display.Coalescer` throttles re-renders.

Design notes
------------
* Streaming never blocks the kernel: a send starts a task on the running loop (in ipykernel,
  widget callbacks run on the kernel's loop thread) and returns at once. Several widgets
  can stream at the same time, each with its own task.
* Answers are rendered with ``render.safe_html`` (raw HTML from the model becomes text,
  unsafe link schemes are dropped) before they reach a ``widgets.HTML``: JupyterLab does
  not sanitise live widget HTML. Everything else we put into HTML is escaped.
* Keyboard send: the stock ``Textarea`` sends no key events to the kernel (its view stops
  them and only syncs ``value``), so Ctrl+Enter / Enter-to-send would need a custom front
  end. The Send button follows the input in tab order: type, press Tab, then Enter (or
  Space) to send. This works in every front end.
* ipywidgets swallows exceptions raised in callbacks; every callback here catches
  exceptions and shows them in the transcript, and the widget stays usable.
* Nothing secret goes into widget state (it is saved into notebooks): the key is read by
  the provider; error texts pass through ``errors.redact``, prompts and answers through
  ``errors.mask_secrets`` (registered keys only, so ordinary text is shown as written).
"""
from __future__ import annotations

import asyncio
import base64
import html
import inspect
import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import ipywidgets as widgets

from .display import Coalescer, stats_parts
from .errors import UpstageError, mask_secrets, redact
from .session import ChatSession, Exchange, Turn, default_session, plural

__all__ = ["ChatWidget"]

log = logging.getLogger(__name__)

_MUTED = "var(--jp-ui-font-color2, #666)"
# Scoped to .upstage-chat (our own constant CSS, never model output): readable line height
# inside widgets.HTML (ipywidgets sets it to the input height) and tidy code blocks.
_STYLE = """<style>
.upstage-chat .widget-html-content { line-height: 1.45; overflow-wrap: anywhere; }
.upstage-chat .upstage-answer pre { background: var(--jp-cell-editor-background, #f7f7f7);
  border: 1px solid var(--jp-border-color2, #e0e0e0); border-radius: 4px; padding: 6px 8px;
  overflow-x: auto; white-space: pre; line-height: 1.3; }
.upstage-chat .upstage-answer code { font-family: var(--jp-code-font-family, monospace); font-size: 90%; }
.upstage-chat .upstage-answer p { margin: 0.3em 0; }
.upstage-chat .upstage-answer h1, .upstage-chat .upstage-answer h2,
.upstage-chat .upstage-answer h3 { margin: 0.4em 0 0.2em; line-height: 1.25; }
.upstage-chat .upstage-answer blockquote { margin: 0.3em 0 0.3em 0.2em; padding-left: 0.6em;
  border-left: 3px solid var(--jp-border-color2, #ccc); }
.upstage-chat .upstage-answer ul, .upstage-chat .upstage-answer ol { padding-left: 1.3em; }
.upstage-chat .upstage-answer a { color: var(--jp-content-link-color, #1976d2); text-decoration: underline; }
</style>"""
_USER_STYLE = (
    "margin:8px 0 2px 18%;padding:6px 10px;border-radius:10px;white-space:pre-wrap;"
    "background:var(--jp-brand-color3, #bbdefb);color:var(--jp-ui-font-color0, #111)"
)
_ANSWER_STYLE = (
    "margin:2px 18% 4px 0;padding:4px 10px;border-radius:6px;"
    "background:var(--jp-layout-color2, #f3f3f3);"
    "border-left:3px solid var(--jp-brand-color1, #1976d2);color:var(--jp-ui-font-color0, #111)"
)
_ERROR_STYLE = (
    "margin:2px 18% 6px 0;padding:6px 10px;border-radius:6px;"
    "background:var(--jp-error-color3, #ffebee);border-left:3px solid var(--jp-error-color1, #d32f2f);"
    "color:var(--jp-ui-font-color0, #111)"
)
_STATUS_LABELS = {
    "streaming": "streaming…",
    "done": "done",
    "stopped": "stopped",
    "length": "cut at max tokens",
    "error": "error",
}
_GENERIC_HINT = "This looks like a bug in upstage-magic; the chat is still usable, try again."


def _esc(text: Any) -> str:
    """Redact secrets, then HTML-escape (error texts, labels, paths)."""
    return html.escape(redact(text), quote=True)


def _esc_content(text: str) -> str:
    """Conversation text (a prompt): registered secrets masked, HTML-escaped, else as typed."""
    return html.escape(mask_secrets(text), quote=True)


def _error_parts(exc: BaseException) -> tuple[str, str, str]:
    """(kind, message, what to do) for an exception, secrets redacted."""
    if isinstance(exc, UpstageError):
        return type(exc).__name__, exc.message, exc.hint or ""
    return type(exc).__name__, redact(exc) or type(exc).__name__, _GENERIC_HINT


def _error_html(kind: str, message: str, hint: str) -> str:
    parts = [f"<div class='upstage-error' style=\"{_ERROR_STYLE}\">",
             f"<b>⚠ {_esc(kind)}</b>: {_esc(message)}"]
    if hint:
        parts.append(f"<br><span style=\"color:{_MUTED}\"><b>What to do:</b> {_esc(hint)}</span>")
    parts.append("</div>")
    return "".join(parts)


def _fmt_stats(status: str, answer: Exchange | Turn | None) -> str:
    """Status text: state, then :func:`display.stats_parts` (+ total time for an exchange)."""
    bits = [_STATUS_LABELS.get(status, status)]
    if answer is not None:
        bits += stats_parts(answer, elapsed=isinstance(answer, Exchange))
    return " · ".join(bits)


class _TurnView:
    """The widgets of one question/answer pair in the transcript."""

    def __init__(self, prompt: str, *, exchange: Exchange | None = None, turn: Turn | None = None) -> None:
        self.exchange = exchange
        self.turn = turn
        self.error: BaseException | None = None
        self.user = widgets.HTML(
            f"<div class='upstage-turn-user' style=\"{_USER_STYLE}\">"
            f"<div style=\"font-size:85%;color:{_MUTED}\">You</div>{_esc_content(prompt)}</div>"
        )
        self.answer = widgets.HTML("")
        self.answer.add_class("upstage-answer-widget")
        self.box = widgets.VBox([self.user, self.answer])
        self.box.add_class("upstage-turn")

    def render(self, text: str, status: str, *, model: str | None, error: BaseException | str | None = None,
               stats: str = "") -> None:
        """Set the answer HTML (answer text through safe_html, all else escaped)."""
        from .render import safe_html  # noqa: PLC0415 - markdown-it loads on first answer

        label = _STATUS_LABELS.get(status, status)
        head = f"{_esc(model or 'assistant')} · {_esc(label)}"
        if stats and status != "streaming":
            head = f"{_esc(model or 'assistant')} · {_esc(stats)}"
        body = safe_html(mask_secrets(text)) if text else ""
        if status == "streaming":
            body += f"<span style=\"color:{_MUTED}\">▍</span>"
        out = [
            f"<div class='upstage-answer upstage-status-{_esc(status)}' style=\"{_ANSWER_STYLE}\">",
            f"<div class='upstage-answer-head' style=\"font-size:85%;color:{_MUTED}\">{head}</div>",
            body,
        ]
        if status == "stopped":
            out.append(f"<div class='upstage-stopped' style=\"color:{_MUTED};font-style:italic\">"
                       "⏹ stopped: partial answer (kept in the conversation)</div>")
        elif status == "length":
            out.append(f"<div style=\"color:{_MUTED};font-style:italic\">✂ cut at max tokens "
                       "(raise Max tokens in Settings for longer answers)</div>")
        out.append("</div>")
        if status == "error":
            if isinstance(error, BaseException):
                out.append(_error_html(*_error_parts(error)))
            else:
                out.append(_error_html("Error", str(error or "the answer failed"), ""))
        value = "".join(out)
        if self.answer.value != value:
            self.answer.value = value

    def render_turn(self, turn: Turn) -> None:
        """Render a recorded turn (from the session)."""
        self.turn = turn
        stats = _fmt_stats(turn.status, turn) if turn.usage is not None and turn.usage.completion_tokens else ""
        self.render(turn.answer, turn.status, model=turn.model, error=self.error or turn.error, stats=stats)

    def close(self) -> None:
        for w in (self.user, self.answer, self.box):
            w.close()


class ChatWidget(widgets.VBox):
    """A chat with an Upstage Solar model inside the notebook.

    ``ChatWidget()`` shares the kernel's conversation with ``%%upstage`` cells;
    ``ChatWidget(session=ChatSession(...))`` keeps an independent one. Options:
    ``model``, ``system_prompt``, ``temperature``, ``max_tokens`` (initial settings),
    ``provider`` (anything with ``create_async_generator``; default ``Upstage``),
    ``models`` (initial model list; the live list is fetched in the background),
    ``interval`` (seconds between display updates while streaming), ``export_dir``.

    Type a question, then click Send (or press Tab, then Enter). :meth:`send` does the same
    from code and returns the streaming task.
    """

    def __init__(
        self,
        *,
        session: ChatSession | None = None,
        provider: Any = None,
        model: str | None = None,
        system_prompt: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        models: list[str] | None = None,
        interval: float | None = None,
        export_dir: str | Path | None = None,
        fetch_models: bool = True,
        magics: Any = None,
        **kwargs: Any,
    ) -> None:
        if provider is None:
            from .providers import Upstage  # noqa: PLC0415 - aiohttp only when a widget is made

            provider = Upstage
        self.session = session if session is not None else default_session()
        self.provider = provider
        self._magics = magics
        self._request_options: dict[str, Any] = {}
        if magics is not None:  # the %upstage chat caller: start from the magic's settings
            model = model or getattr(magics, "model", None) or None
            system_prompt = system_prompt if system_prompt is not None else (getattr(magics, "system_prompt", None) or None)
            temperature = temperature if temperature is not None else getattr(magics, "temperature", None)
            max_tokens = max_tokens if max_tokens is not None else getattr(magics, "max_tokens", None)
            interval = interval if interval is not None else getattr(magics, "update_interval", None)
            for name in ("base_url", "timeout"):
                value = getattr(magics, name, None)
                if value:
                    self._request_options[name] = value
        self.interval = 0.1 if interval is None else float(interval)
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self._task: asyncio.Task | None = None
        self._models_task: asyncio.Task | None = None
        self._live: _TurnView | None = None
        self._views: dict[int, _TurnView] = {}
        self._notices: list[tuple[Turn | None, widgets.HTML]] = []
        self._poll_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.get_ident()

        # -- transcript: column-reverse keeps the scroll position at the newest message
        self._intro = widgets.HTML(
            f"<div style=\"color:{_MUTED};padding:8px\">Ask Solar something below. "
            "Answers stream in here; <b>Stop</b> keeps what arrived. The conversation is "
            + ("shared with <code>%%upstage</code> cells." if self.session is default_session()
               else "private to this widget.") + "</div>"
        )
        self._turns_box = widgets.VBox([self._intro], layout=widgets.Layout(flex="0 0 auto"))
        self.transcript = widgets.Box(
            [self._turns_box],
            layout=widgets.Layout(flex_flow="column-reverse", max_height="460px", overflow="auto",
                                  border="1px solid var(--jp-border-color2, #ddd)", padding="4px 8px"),
        )
        self.transcript.add_class("upstage-chat-transcript")

        # -- input row
        self.input = widgets.Textarea(
            placeholder="Ask Solar… (then Tab, Enter to send)", rows=3,
            layout=widgets.Layout(width="100%"),
        )
        self.input.add_class("upstage-chat-input")
        self.send_button = widgets.Button(description="Send", button_style="primary", icon="paper-plane",
                                          tooltip="Send the question (keyboard: Tab to here, then Enter)")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True,
                                          tooltip="Stop the answer; what arrived is kept")
        self.new_button = widgets.Button(description="New chat", icon="plus",
                                         tooltip="Forget the conversation (also for %%upstage if shared)")
        self.export_button = widgets.Button(description="Export", icon="download",
                                            tooltip="Save the conversation as Markdown")
        for b, cls in ((self.send_button, "send"), (self.stop_button, "stop"),
                       (self.new_button, "new"), (self.export_button, "export")):
            b.add_class(f"upstage-chat-{cls}")
            b.layout.width = "auto"
        self.status = widgets.HTML("")
        self.status.add_class("upstage-chat-status")
        self.export_area = widgets.HTML("")
        self.export_area.add_class("upstage-chat-export")

        # -- settings (collapsed)
        self._fallback_models = list(models) if models else list(getattr(provider, "models", []) or [])
        chosen = model or self.session.model or self._default_model()
        self.model_dropdown = widgets.Dropdown(
            options=self._model_options(self._fallback_models, chosen), value=chosen, description="Model",
        )
        self.system_input = widgets.Textarea(
            value=system_prompt if system_prompt is not None else (self.session.system_prompt or ""),
            placeholder="(none) e.g. You are a concise assistant.", description="System", rows=2,
            layout=widgets.Layout(width="95%"),
        )
        # Temperature is sent only when "custom" is ticked (else the server's default, as
        # in %%upstage); setting the slider from code ticks it.
        self.custom_temperature = widgets.Checkbox(
            value=temperature is not None, description="Custom temperature (else server default)",
            indent=False,
        )
        self.temperature = widgets.FloatSlider(
            value=0.7 if temperature is None else float(temperature), min=0.0, max=2.0, step=0.05,
            description="Temperature", readout_format=".2f", disabled=temperature is None,
        )
        self.custom_temperature.observe(self._on_custom_temperature, names="value")
        self.temperature.observe(self._on_temperature, names="value")
        self.max_tokens = widgets.BoundedIntText(
            value=int(max_tokens or 0), min=0, max=1_000_000, step=256, description="Max tokens",
            tooltip="0 = server default",
        )
        self._models_note = widgets.HTML(f"<span style=\"color:{_MUTED};font-size:85%\">"
                                         "Max tokens 0 = server default.</span>")
        self.settings = widgets.Accordion(
            [widgets.VBox([self.model_dropdown, self.system_input, self.custom_temperature, self.temperature,
                           self.max_tokens,
                           self._models_note])],
            titles=("Settings",), selected_index=None,
        )
        self.settings.add_class("upstage-chat-settings")
        for w in (self.model_dropdown, self.temperature, self.max_tokens):
            w.style.description_width = "90px"
        self.system_input.style.description_width = "90px"

        buttons = widgets.HBox([self.send_button, self.stop_button, self.new_button, self.export_button],
                               layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__(
            [widgets.HTML(_STYLE), self.transcript, self.input, buttons, self.status, self.export_area,
             self.settings],
            **kwargs,
        )
        self.add_class("upstage-chat")

        self.send_button.on_click(self._guard(self._on_send_clicked))
        self.stop_button.on_click(self._guard(self._on_stop_clicked))
        self.new_button.on_click(self._guard(self._on_new_clicked))
        self.export_button.on_click(self._guard(self._on_export_clicked))

        # Weak listener: the shared session lives as long as the kernel; the widget may not.
        ref = weakref.ref(self)

        def listener(session: ChatSession) -> None:
            me = ref()
            if me is None:
                session.remove_callback(listener)
            else:
                me._on_session_change(session)

        self._listener = listener
        self.session.on_change(listener)
        self._rebuild()
        self._set_status(f"ready · {plural(len(self.session.turns), 'turn')} in the conversation"
                         if self.session.turns else "ready")
        if fetch_models:
            self._start_model_fetch()

    # ------------------------------------------------------------------ public API
    def send(self, prompt: str | None = None) -> asyncio.Task | None:
        """Send ``prompt`` (default: the input's text); returns the streaming task.

        Needs a running event loop (a Jupyter kernel, or ``await`` code). While an answer
        streams, another send is refused with a message in the transcript.
        """
        text = self.input.value if prompt is None else prompt
        if not text or not text.strip():
            self._set_status("type a question first")
            return None
        if self.streaming:
            self._notice(RuntimeError("An answer is still streaming."),
                         hint="Wait for it, or press Stop first.")
            return None
        loop = self._running_loop()
        options = self.request_options()
        model = options.pop("model")
        system = options.pop("system")
        exchange = self.session.start(text, model=model, system=system)
        view = _TurnView(text, exchange=exchange)
        view.render("", "streaming", model=model)
        self._live = view
        self._set_busy(True, clear_input=prompt is None)
        try:
            self.export_area.value = ""
            self._rebuild()
            self._set_status(_fmt_stats("streaming", exchange))
            self._task = loop.create_task(self._stream(exchange, view, options))
        except BaseException:
            self._live = None
            view.close()
            self._set_busy(False)
            raise
        return self._task

    def stop(self) -> None:
        """Stop the answer that is streaming (its partial text is kept, marked stopped)."""
        if self._task is not None and not self._task.done():
            self.stop_button.disabled = True
            self._set_status("stopping…")
            self._task.cancel()

    @property
    def streaming(self) -> bool:
        """True while an answer streams."""
        return self._task is not None and not self._task.done()

    @property
    def exchange(self) -> Exchange | None:
        """The exchange in progress (or None)."""
        return self._live.exchange if self._live is not None else None

    def request_options(self) -> dict[str, Any]:
        """What the next send passes: model, system ("" = none), provider kwargs."""
        options: dict[str, Any] = dict(self._request_options)
        options["model"] = self.model_dropdown.value or self._default_model()
        system = self.system_input.value
        options["system"] = system if system.strip() else ""  # empty box: no system prompt
        if self.custom_temperature.value:
            options["temperature"] = float(self.temperature.value)
        if self.max_tokens.value:
            options["max_tokens"] = int(self.max_tokens.value)
        return options

    def export(self, path: str | Path | None = None) -> Path:
        """Save the conversation (Markdown for .md, JSON for .json) and show a download link.

        The file and the link carry the same text. Returns the path.
        """
        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = (self.export_dir or Path.cwd()) / f"upstage-chat-{stamp}.md"
        out = Path(path).expanduser()
        suffix = out.suffix.lower()
        if suffix in (".md", ".markdown"):
            text, mime = self.session.export_markdown(), "text/markdown"
        elif suffix == ".json":
            text, mime = self.session.export_json(), "application/json"
        else:
            raise ValueError(f"Cannot export to {out.name!r}: use a .md or .json file name.")
        out.write_text(text, encoding="utf-8")
        data = base64.b64encode(text.encode("utf-8")).decode("ascii")
        name = html.escape(out.name, quote=True)
        self.export_area.value = (
            f"<span style=\"color:{_MUTED}\">Saved {plural(len(self.session.turns), 'turn')} to "
            f"<code>{_esc(out)}</code> · </span>"
            f"<a class='upstage-export-link' download=\"{name}\" "
            f"href=\"data:{mime};charset=utf-8;base64,{data}\">download {name}</a>"
        )
        return out

    def close(self) -> None:
        """Stop streaming, detach from the session and close all child widgets."""
        try:
            if self._task is not None and not self._task.done():
                self._task.cancel()
            if self._models_task is not None:
                self._models_task.cancel()
            self.session.remove_callback(self._listener)
            for view in list(self._views.values()):
                view.close()
            self._views.clear()
            for _, w in self._notices:
                w.close()
            self._notices.clear()
            for w in _walk(self):
                if w is not self:
                    w.close()
        finally:
            super().close()

    def __repr__(self) -> str:
        # Short: this is the text/plain fallback saved into notebooks (ipywidgets' default
        # repr would dump every child's HTML).
        state = "streaming" if self.streaming else "idle"
        return f"<ChatWidget {state}, {plural(len(self.session.turns), 'turn')}, model={self.model_dropdown.value!r}>"

    # ------------------------------------------------------------------ callbacks
    def _guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a callback so that any exception shows in the transcript."""

        def wrapper(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - ipywidgets would swallow it
                self._notice(exc)

        wrapper.__name__ = getattr(fn, "__name__", "callback")
        return wrapper

    def _on_send_clicked(self, _button: Any = None) -> None:
        self.send()

    def _on_stop_clicked(self, _button: Any = None) -> None:
        self.stop()

    def _on_new_clicked(self, _button: Any = None) -> None:
        if self.streaming and self._live is not None and self._live.exchange is not None:
            self._live.exchange.record = False  # the stopped answer must not land in the new chat
            self._task.cancel()  # type: ignore[union-attr]
        self.export_area.value = ""
        for _, w in self._notices:
            w.close()
        self._notices.clear()
        self.session.reset()  # -> on_change -> transcript rebuilt
        self._rebuild()
        self._set_status("new chat")

    def _on_export_clicked(self, _button: Any = None) -> None:
        self.export()

    def _on_custom_temperature(self, change: dict[str, Any]) -> None:
        self.temperature.disabled = not change["new"]

    def _on_temperature(self, change: dict[str, Any]) -> None:
        self.custom_temperature.value = True  # a chosen value is meant to be sent

    def _on_session_change(self, _session: ChatSession) -> None:
        if threading.get_ident() != self._thread and self._loop is not None:
            self._loop.call_soon_threadsafe(self._safe_rebuild)  # widgets only from the kernel thread
        else:
            self._safe_rebuild()

    def _safe_rebuild(self) -> None:
        try:
            self._rebuild()
        except Exception as exc:  # noqa: BLE001
            self._notice(exc)

    # ------------------------------------------------------------------ streaming
    def _running_loop(self) -> asyncio.AbstractEventLoop:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "The chat widget needs a running event loop: use it in a Jupyter kernel "
                "(or call send() from async code)."
            ) from None
        self._loop = loop
        return loop

    async def _stream(self, exchange: Exchange, view: _TurnView, options: dict[str, Any]) -> None:
        """Drive the provider's generator into the live view; always finishes the exchange."""
        loop = asyncio.get_running_loop()
        model = exchange.model

        def render(text: str) -> None:
            view.render(text, "streaming", model=model)
            self._set_status(_fmt_stats("streaming", exchange))

        coalescer = Coalescer(render, interval=self.interval)

        def poll() -> None:
            self._poll_handle = None
            if coalescer.pending and not coalescer.poll():
                self._poll_handle = loop.call_later(coalescer.current_interval() / 2, poll)

        status: str | None = None
        error: BaseException | None = None
        agen: Any = None
        try:
            agen = self.provider.create_async_generator(model, exchange.messages, **options)
            if inspect.isawaitable(agen) and not hasattr(agen, "__anext__"):
                agen = await agen
            async for chunk in agen:
                delta = exchange.add(chunk)
                if delta:
                    coalescer.push(delta)
                    if coalescer.pending and self._poll_handle is None:
                        self._poll_handle = loop.call_later(coalescer.current_interval(), poll)
        except asyncio.CancelledError:
            status = "stopped"
        except Exception as exc:  # noqa: BLE001 - shown in the transcript
            error = exc
        finally:
            if self._poll_handle is not None:
                self._poll_handle.cancel()
                self._poll_handle = None
            if agen is not None and hasattr(agen, "aclose"):
                try:
                    await agen.aclose()
                except BaseException:  # noqa: BLE001 - closing must not mask the result
                    pass
            try:
                self._finish(exchange, view, status, error)
            except Exception as exc:  # noqa: BLE001
                self._notice(exc)
            finally:
                self._live = None
                self._set_busy(False)

    def _finish(self, exchange: Exchange, view: _TurnView, status: str | None,
                error: BaseException | None) -> None:
        view.error = error
        turn = exchange.finish(status, error)  # records -> on_change -> _rebuild adopts the view
        stats = _fmt_stats(turn.status, exchange)
        view.render(exchange.text, turn.status, model=exchange.model, error=error, stats=stats)  # all text
        self._live = None
        self._rebuild()
        if not any(v is view for v in self._views.values()):
            view.close()  # not recorded (New chat while it streamed): nothing shows it any more
        self._set_status(stats)

    def _set_busy(self, busy: bool, *, clear_input: bool = False) -> None:
        """Input and Send off, Stop on while an answer streams (and back)."""
        with self.input.hold_sync():
            if clear_input:
                self.input.value = ""
            self.input.disabled = busy
        self.send_button.disabled = busy
        self.stop_button.disabled = not busy

    # ------------------------------------------------------------------ view
    def _rebuild(self) -> None:
        """Sync the transcript with the session's turns (+ the live answer, + notices)."""
        live = self._live
        views: dict[int, _TurnView] = {}
        children: list[widgets.Widget] = []
        by_anchor: dict[int, list[widgets.HTML]] = {}
        for anchor, w in self._notices:
            by_anchor.setdefault(id(anchor), []).append(w)
        children.extend(by_anchor.pop(id(None), []))
        for turn in list(self.session.turns):
            view = self._views.get(id(turn))
            if view is None or view.turn is not turn:
                if live is not None and live.exchange is not None and live.exchange.turn is turn:
                    view = live
                    view.turn = turn
                else:
                    view = _TurnView(turn.prompt, turn=turn)
                    view.render_turn(turn)
            views[id(turn)] = view
            children.append(view.box)
            children.extend(by_anchor.pop(id(turn), []))
        for key, old in self._views.items():
            if views.get(key) is not old and old is not live:
                old.close()
        self._views = views
        adopted = any(v is live for v in views.values())
        if live is not None and not adopted:
            children.append(live.box)
        # Notices whose turn is gone (reset, trimmed history) are dropped.
        if by_anchor:
            gone = {id(w) for ws in by_anchor.values() for w in ws}
            for _, w in [n for n in self._notices if id(n[1]) in gone]:
                w.close()
            self._notices = [n for n in self._notices if id(n[1]) not in gone]
        if not children:
            children = [self._intro]
        new = tuple(children)
        if new != self._turns_box.children:
            self._turns_box.children = new

    def _notice(self, exc: BaseException, *, hint: str | None = None) -> None:
        """Show an error that is not an answer's (export, settings, a refused send)."""
        try:
            kind, message, default_hint = _error_parts(exc)
            w = widgets.HTML(_error_html(kind, message, default_hint if hint is None else hint))
            w.add_class("upstage-notice")
            anchor = self.session.turns[-1] if self.session.turns else None
            self._notices.append((anchor, w))
            self._rebuild()
            self._set_status(f"error: {kind}")
        except Exception:  # noqa: BLE001 - last resort: never raise from a callback
            log.exception("upstage-magic: could not show an error in the chat widget")

    def _set_status(self, text: str) -> None:
        dot = "●" if text.startswith("streaming") else "○"
        value = f"<span style=\"color:{_MUTED};font-size:90%\">{dot} {_esc(text)}</span>"
        if self.status.value != value:
            self.status.value = value

    # ------------------------------------------------------------------ models
    def _default_model(self) -> str:
        getter = getattr(self.provider, "get_default_model", None)
        if callable(getter):
            try:
                return str(getter())
            except Exception:  # noqa: BLE001
                pass
        from .settings import get_default_model  # noqa: PLC0415

        return get_default_model()

    @staticmethod
    def _model_options(models: list[str], current: str | None) -> list[str]:
        out: list[str] = []
        for m in ([current] if current else []) + list(models):
            if m and m not in out:
                out.append(m)
        return sorted(out, key=lambda m: (m != current, m)) if current else out

    def _start_model_fetch(self) -> None:
        lister = getattr(self.provider, "list_models", None)
        if lister is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (plain script): keep the known list
        self._loop = loop

        async def fetch() -> None:
            try:
                kwargs = {k: v for k, v in self._request_options.items() if k in ("base_url", "timeout")}
                names = await lister(**kwargs)
            except Exception as exc:  # noqa: BLE001 - offline, no key yet...: keep the known list
                self._models_note.value = (
                    f"<span style=\"color:{_MUTED};font-size:85%\">Max tokens 0 = server default. "
                    f"Model list: built-in (could not fetch: {_esc(type(exc).__name__)}).</span>")
                return
            if names:
                current = self.model_dropdown.value
                with self.model_dropdown.hold_sync():
                    self.model_dropdown.options = self._model_options(list(names), current)
                    self.model_dropdown.value = current

        self._models_task = loop.create_task(fetch())


def _walk(widget: widgets.Widget) -> list[widgets.Widget]:
    """All widgets reachable from ``widget`` through children."""
    seen: list[widgets.Widget] = []
    stack = [widget]
    while stack:
        w = stack.pop()
        if any(w is s for s in seen):
            continue
        seen.append(w)
        stack.extend(getattr(w, "children", ()) or ())
    return seen
