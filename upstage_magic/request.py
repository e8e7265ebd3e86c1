"""What is sent for one answer: the one request plan of the package. Pure.

Every front end says what was asked as an :class:`Ask` (a cell's arguments, a widget
send, a batch template, a fix) and :func:`plan` turns it, with the settings and the
conversation, into a :class:`Request`: the model id, the role messages exactly as sent, the
provider's options, the format and schema, and the notices to show. The policy lives here
and nowhere else: placeholders, the model and its retired-name notice, ``--think`` and the
effort check, ``max_tokens``, the format's instruction and ``response_format``, the context
block, history. ``--dry-run`` prints :meth:`Request.describe`, which is that request::

    request = plan(settings, Ask("Explain {df}", format="json", namespace=user_ns),
                   session=session, provider=Upstage)
    exchange = session.start(request)       # or Exchange(request) for a one-off

A request that cannot be sent raises :class:`RequestError` before anything is sent.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import formats, models, placeholders, replay
from .context import estimate_tokens
from .conversation import DEFAULT_HISTORY_TOKENS, history_for
from .errors import UpstageError
from .secrets import mask_secrets

__all__ = ["Ask", "Request", "RequestError", "answer_options", "estimate_request_tokens", "plan", "public_options",
           "resolve_model"]

#: Tokens a chat template adds per message (role markers); an estimate.
MESSAGE_OVERHEAD_TOKENS = 4
_SECRET_WORDS = ("key", "secret", "password", "authorization", "headers", "cookie", "auth")
#: Options that never change an answer (or are secrets): not part of a request's identity.
_ANSWER_NEUTRAL = frozenset({"api_key", "proxy", "timeout", "max_retries", "stream", "stream_options",
                             "base_url"})
_SAMPLING = ("temperature", "top_p", "max_tokens", "reasoning_effort", "timeout")


class RequestError(UpstageError, ValueError):
    """What was asked cannot be sent as it is (the message says why and what to do)."""


@dataclass(frozen=True)
class Ask:
    """What was asked, before any policy. ``None`` means "the settings decide".

    ``namespace`` fills ``{placeholders}`` in ``prompt`` and ``system`` (``raw`` turns that
    off; ``errors`` serves ``{Err[N]}``); ``context`` is a :class:`~upstage_magic.context.ContextBlock`
    sent before the prompt in this request only; ``history=False`` is a one-off (history
    neither sent nor recorded); ``extra`` holds more provider options (``stop``, ``api_key``...).
    """

    prompt: str
    model: str | None = None
    system: str | None = None
    format: str | None = None
    schema: Any = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    reasoning_effort: str | None = None
    think: bool | None = None
    stream: bool | None = None
    base_url: str | None = None
    context: Any = None
    history: bool = True
    namespace: Mapping[str, Any] | None = None
    raw: bool = False
    errors: Mapping[int, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Functions (or :class:`~upstage_magic.tools.Tool`\ s) the model may call; ``tool_choice`` as the API takes it.
    tools: Sequence[Any] | None = None
    tool_choice: Any = None
    #: Replay a recorded answer (None: the settings/env decide); ``fresh`` asks again and records.
    replay: bool | None = None
    fresh: bool = False
    #: An :class:`~upstage_magic.attach.AttachmentBlock` (files, cells): sent before the
    #: context and the prompt, never placeholder-filled.
    attachments: Any = None
    #: The notebook cell that asks (a re-run replaces that cell's turn; see :mod:`conversation`).
    cell: str | None = None


@dataclass(frozen=True)
class Request:
    """One answer's request, exactly as it will be sent (see the module docstring).

    ``prompt`` and ``system`` are what the conversation records (the user's own text);
    ``messages`` adds history, the format's instruction and the context. ``notices`` are
    shown before the answer (a retired model on Upstage's API; once per session per model),
    ``notes`` under it (placeholders filled), ``once`` under it the first time only.
    """

    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    prompt: str
    system: str | None = None
    format: str = "markdown"
    schema: Any = None
    record: bool = True
    notices: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: Quiet lines a front end says once per session (the model a server offers, used as the default).
    once: tuple[str, ...] = ()
    context: Any = None
    history: tuple[dict[str, Any], ...] = ()
    #: The :class:`~upstage_magic.tools.Tool`\ s offered (their specs are ``options["tools"]``).
    tools: tuple[Any, ...] = ()
    #: "off" | "record" | "replay" (see :mod:`upstage_magic.replay`); a request not made by plan: off.
    replay: str = "off"
    attachments: Any = None
    cell: str | None = None
    #: How much history went (a :class:`~upstage_magic.conversation.HistoryInfo`), None without history.
    history_info: Any = None

    @property
    def streamed(self) -> bool:
        return self.options.get("stream", True) is not False

    def public_options(self) -> dict[str, Any]:
        """The options that may be shown or stored (no key, no headers, no ``None``)."""
        return public_options(self.options)

    def cache_key(self) -> str:
        """A digest of what decides the answer: server, model, messages, answer options (never the key)."""
        return self.cache_keys()(self.messages)

    def cache_keys(self) -> Callable[[list[dict[str, Any]]], str]:
        """:meth:`cache_key` for other messages with this request's server, model and options (batch rows)."""
        from .cache import key_for  # noqa: PLC0415
        from .settings import get_base_url  # noqa: PLC0415

        return key_for(self.model, self.options, base_url=self.options.get("base_url") or get_base_url())

    def for_item(self, item: Any, index: Any) -> Request:
        """This request with ``{item}``, ``{item.field}`` and ``{index}`` filled (a batch row).

        Raises ``KeyError`` (naming the field and the row) when the item lacks a field.
        """
        prompt = placeholders.fill_item(self.prompt, item, index)
        system = placeholders.fill_item(self.system, item, index) if self.system else self.system
        return dataclasses.replace(self, prompt=prompt, system=system,
                                   messages=_messages(prompt, system, self.format, self.context, self.history,
                                                     attachments=self.attachments))

    def describe(self) -> str:
        """The ``--dry-run`` report: model, estimated tokens, options, every message (secrets masked)."""
        n = len(self.messages)
        lines = [
            "Dry run: nothing was sent.",
            f"model: {self.model} · {n} message{'s' if n != 1 else ''} · "
            f"~{estimate_request_tokens(self.messages):,} prompt tokens (estimate)",
            "options: " + json.dumps(self.public_options(), ensure_ascii=False, default=str, sort_keys=True),
        ]
        for m in self.messages:
            lines += ["", f"── {m.get('role', '?')} ──", _content_text(m.get("content", ""))]
        lines += list(self.notices) + list(self.notes) + list(self.once)
        return mask_secrets("\n".join(lines))


def public_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` without ``None`` values and without key-like entries (``api_key``, ``headers``)."""
    out = {str(k): v for k, v in (options or {}).items()
           if v is not None and not any(word in str(k).lower() for word in _SECRET_WORDS)}
    if isinstance(out.get("tools"), list):  # the names, not every schema (stored with each turn)
        out["tools"] = [t.get("function", {}).get("name") if isinstance(t, dict) else str(t) for t in out["tools"]]
    return out


def answer_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options that change an answer (for cache keys): no key, transport or stream settings."""
    return {k: v for k, v in public_options(options).items() if k not in _ANSWER_NEUTRAL}


def estimate_request_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Estimated prompt tokens: each message's content plus a chat template's overhead."""
    return sum(estimate_tokens(_content_text(m.get("content", ""))) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def _content_text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str, indent=1)


# --------------------------------------------------------------------------------- plan


def plan(settings: Any, ask: Ask, *, session: Any = None, provider: Any = None) -> Request:
    """The request for ``ask`` under ``settings`` (a :class:`~upstage_magic.settings.Settings`).

    ``session`` (a ChatSession) gives the history and the conversation's system prompt;
    ``provider`` resolves model aliases and its default model. Raises :class:`RequestError`.
    """
    prompt, system, notes = _filled(ask)
    if system is None:
        system = settings.system_prompt or (getattr(session, "system_prompt", None) or None)
    base = ask.base_url or settings.base_url or None
    model = resolve_model(ask.model or settings.model or None, provider, base_url=base)
    fmt = ask.format or settings.format
    if fmt not in formats.FORMATS:
        raise RequestError(f"Unknown format {fmt!r}; use one of {', '.join(formats.FORMATS)}.")
    schema = _schema(ask.schema, fmt)
    tools = _tools(ask)
    options = _options(settings, ask, model, fmt, schema)
    if tools:
        options["tools"] = [t.spec() for t in tools]
        if ask.tool_choice is not None:
            options["tool_choice"] = ask.tool_choice
    history, history_info = _history(settings, ask, session)
    notice = models.retired_on(model, base)  # Upstage's API only; never a model the server lists
    listed = () if ask.model or settings.model or model != models.server_default(base) else (
        f"No model set: using {model}, the one the server lists (choose one with -m or "
        "%config UpstageMagics.model).",)
    return Request(
        model=model, messages=_messages(prompt, system, fmt, ask.context, history, attachments=ask.attachments),
        options=options,
        prompt=prompt, system=system, format=fmt, schema=schema, record=ask.history,
        notices=(f"Note: {notice} Sending it anyway; the server decides.",) if notice else (),
        notes=tuple(notes), once=listed, context=ask.context, history=history, tools=tools,
        replay=replay.mode_for(settings, ask), attachments=ask.attachments, cell=ask.cell,
        history_info=history_info,
    )


def _history(settings: Any, ask: Ask, session: Any) -> tuple[tuple[dict[str, Any], ...], Any]:
    """The history sent (re-run rule, token budget: :func:`conversation.history_for`) and what was decided."""
    if session is None or not ask.history:
        return (), None
    if not hasattr(session, "sent_turns"):  # a duck-typed session that only lists messages
        return tuple(session.history_messages()), None
    budget = getattr(settings, "history_tokens", DEFAULT_HISTORY_TOKENS)
    return history_for(session, cell=ask.cell, budget=budget)


def resolve_model(name: str | None, provider: Any = None, *, base_url: str | None = None) -> str:
    """The model id sent: an alias resolved by the provider; ``None`` -> the provider's default, or
    on a server that is not Upstage's (``base_url``; ``None``: the env's), the model its list offers
    when it was asked (:func:`models.server_default`)."""
    if not name and (listed := models.server_default(base_url)):
        return listed
    get_model = getattr(provider, "get_model", None)
    if get_model is not None:
        return str(get_model(name))
    return name or str(getattr(provider, "default_model", "") or models.DEFAULT_MODEL)


def _filled(ask: Ask) -> tuple[str, str | None, list[str]]:
    """The prompt and system prompt with placeholders filled, and the quiet note saying what was."""
    prompt, system = ask.prompt, ask.system
    if ask.namespace is None or ask.raw:
        return prompt, system, []
    filled = placeholders.fill(prompt, ask.namespace, errors=ask.errors)
    if system is not None:
        filled_system = placeholders.fill(system, ask.namespace, errors=ask.errors)
        system, filled = filled_system.text, filled.merge(filled_system)
    note = filled.summary()
    return filled.text, system, [note] if note else []


def _schema(schema: Any, fmt: str) -> Any:
    if schema is None:
        return None
    if fmt != "json":
        raise RequestError("A schema works with the json format (-f json).")
    from .schema import Schema  # noqa: PLC0415 - pydantic only when a class is given

    try:
        return Schema.of(schema)
    except TypeError as exc:
        raise RequestError(str(exc)) from None


def _tools(ask: Ask) -> tuple[Any, ...]:
    """The tools offered (RequestError when one cannot be described, or with no tools but a tool_choice)."""
    if not ask.tools:
        if ask.tool_choice not in (None, "none"):
            raise RequestError("tool_choice needs tools to choose from (--tools).")
        return ()
    from .tools import ToolError, as_tools  # noqa: PLC0415 - pydantic only when tools are offered

    try:
        return as_tools(ask.tools)
    except ToolError as exc:
        raise RequestError(f"--tools: {exc}") from None


def _effort(ask: Ask, settings: Any, model: str) -> str | None:
    """The reasoning effort to send (``--think``/``--no-think`` mapped per model), checked."""
    effort = ask.reasoning_effort
    if ask.think is not None:
        if effort:
            raise RequestError("--think/--no-think choose the reasoning effort; drop --reasoning-effort.")
        effort = models.effort_for_think(model, ask.think)
        if effort is None:
            raise RequestError(f"--no-think: how to turn reasoning off for {model} is not known; "
                               "use --reasoning-effort with a value the model accepts.")
    effort = effort or settings.reasoning_effort
    try:
        models.check_effort(model, effort)
    except ValueError as exc:
        raise RequestError(f"{exc} Nothing was sent.") from None
    return effort


def _options(settings: Any, ask: Ask, model: str, fmt: str, schema: Any) -> dict[str, Any]:
    """Provider options: the settings, what was asked on top, the format's needs; ``None`` left out."""
    options: dict[str, Any] = {name: getattr(settings, name) for name in _SAMPLING}
    options.update({name: getattr(ask, name, None) for name in _SAMPLING if getattr(ask, name, None) is not None})
    options["reasoning_effort"] = _effort(ask, settings, model)
    max_tokens = options.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise RequestError(f"max_tokens must be a whole number >= 1, not {max_tokens!r} "
                           "(leave it unset for the server's default).")
    options["base_url"] = ask.base_url or settings.base_url or None
    stream = settings.stream if ask.stream is None else ask.stream
    options["stream"] = None if stream else False
    options.update(ask.extra)
    options.update(formats.request_options_for(fmt, schema))
    return {k: v for k, v in options.items() if v is not None}


def _messages(prompt: str, system: str | None, fmt: str, context: Any,
              history: Sequence[dict[str, Any]], *, attachments: Any = None) -> list[dict[str, Any]]:
    """System (with the format's instruction), history, then the user message (context first)."""
    said = " ".join([prompt, system or "", *(str(m.get("content", "")) for m in history)])
    instruction = formats.instruction_for(fmt, said)
    sys_text = "\n\n".join(p for p in (system, instruction) if p)
    messages = [{"role": "system", "content": sys_text}] if sys_text else []
    messages.extend(history)
    user = f"{context.text}\n\n{prompt}" if context is not None else prompt
    if attachments is not None:
        user = f"{attachments.text}\n\n{user}"
    messages.append({"role": "user", "content": user})
    return messages
