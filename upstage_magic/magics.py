"""The ``%%upstage`` cell magic and the ``%upstage`` line magic.

A thin front end: it parses options, fills ``{placeholders}`` from the user namespace,
and wires the provider's stream (run by :mod:`runner`) into a :mod:`session` exchange and
a :mod:`display` view. No HTTP here; the provider (aiohttp) is imported on first use.
"""
from __future__ import annotations

import json
import keyword
import os
import re
import sys
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Any as AnyTrait
from traitlets import Bool, Enum, Float, Int, Unicode, observe

from . import settings
from .display import PlainView, RichView, extract_code, fence, footer_text, strip_json_fence
from .errors import UpstageError, redact
from .session import ChatSession, default_session, plural

__all__ = ["UpstageMagics", "interpolate", "load_ipython_extension", "unload_ipython_extension"]

FORMATS = ("markdown", "text", "code", "json")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")

# ---------------------------------------------------------------------------------------
# {placeholder} interpolation
# ---------------------------------------------------------------------------------------
# Braces are special only around a placeholder: ``{name}``, ``{name.attr}``,
# ``{name[0]}``, ``{name[key]}`` (chains of these), optionally with ``!r``/``!s``/``!a``
# and a ``:spec`` without spaces. ``{{placeholder}}`` gives the literal ``{placeholder}``.
# Every other brace is kept as written, so code and JSON in prompts (``{}``,
# ``{"a": {"b": 1}}``, ``{x: 1}``, ``{ x }``) pass through unchanged.
_NAME = r"[A-Za-z_]\w*"
_FIELD = rf"{_NAME}(?:\.{_NAME}|\[[^\[\]{{}}\s]+\])*"
_PLACEHOLDER = rf"(?P<field>{_FIELD})(?:!(?P<conv>[rsa]))?(?::(?P<spec>[^{{}}\s]*))?"
_ESCAPED = rf"(?P<esc>{_FIELD}(?:![rsa])?(?::[^{{}}\s]*)?)"
_TOKEN_RE = re.compile(rf"\{{\{{{_ESCAPED}\}}\}}|\{{{_PLACEHOLDER}\}}")
_PART_RE = re.compile(rf"\.(?P<attr>{_NAME})|\[(?P<index>[^\]]+)\]")
_MISSING = object()


def _resolve(field: str, namespace: dict[str, Any], placeholder: str) -> Any:
    """Value of ``name(.attr|[index])*`` from ``namespace``; no calls, no private names."""
    m = re.match(_NAME, field)
    assert m is not None
    name = m.group(0)
    value = namespace.get(name, _MISSING)
    if value is _MISSING:
        raise UsageError(
            f"{placeholder} in the prompt: no variable named {name!r} in the notebook. "
            f"Define it first, write {{{placeholder}}} for literal braces, or use --raw."
        )
    if name.startswith("_"):
        raise UsageError(f"{placeholder}: names starting with '_' are not filled in.")
    rest = field[m.end():]
    for part in _PART_RE.finditer(rest):
        attr, index = part.group("attr"), part.group("index")
        if attr is not None:
            if attr.startswith("_"):
                raise UsageError(f"{placeholder}: attributes starting with '_' are not filled in.")
            try:
                value = getattr(value, attr)
            except AttributeError:
                raise UsageError(f"{placeholder}: {type(value).__name__} object has no attribute {attr!r}.") from None
        else:
            key: Any = int(index) if re.fullmatch(r"-?\d+", index) else index
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError) as exc:
                msg = f"{placeholder}: cannot look up [{index}] ({type(exc).__name__}: {exc})."
                if len(index) >= 2 and index[0] == index[-1] and index[0] in "'\"":
                    msg += (f" Write the key without quotes, as in str.format: "
                            f"{{{field[:part.start() + m.end()]}[{index[1:-1]}]}}.")
                raise UsageError(msg) from None
    return value


def interpolate(text: str, namespace: dict[str, Any]) -> str:
    """Fill ``{placeholders}`` in ``text`` from ``namespace`` (rules above).

    Raises ``UsageError`` for an unknown name, a private name, a failed lookup or a bad
    format spec.
    """

    def sub(m: re.Match[str]) -> str:
        if m.group("esc") is not None:
            return "{" + m.group("esc") + "}"
        placeholder = m.group(0)
        value = _resolve(m.group("field"), namespace, placeholder)
        conv = m.group("conv")
        if conv == "r":
            value = repr(value)
        elif conv == "s":
            value = str(value)
        elif conv == "a":
            value = ascii(value)
        try:
            return format(value, m.group("spec") or "")
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{placeholder}: {exc}") from None

    return _TOKEN_RE.sub(sub, text)


# ---------------------------------------------------------------------------------------
# The magics
# ---------------------------------------------------------------------------------------
_JSON_INSTRUCTION = "Respond with a single valid JSON object."
_LIST_MODELS_TIMEOUT = 60.0  # seconds; the provider's default for list_models
_CODE_INSTRUCTION = "Reply with only the code, in one fenced code block with its language."


@magics_class
class UpstageMagics(Magics):
    """``%%upstage`` / ``%upstage``: stream Upstage Solar answers into the notebook.

    Configure with ``%config UpstageMagics.model = "solar-mini"`` or in ipython_config.py
    (``c.UpstageMagics.model = ...``). The API key is never a setting here: use the
    ``UPSTAGE_API_KEY`` environment variable or ``%upstage key``.
    """

    model = Unicode("", help="Model id or alias; empty = env UPSTAGE_MODEL or the provider's default.").tag(config=True)
    base_url = Unicode("", help="API base URL; empty = env UPSTAGE_BASE_URL or https://api.upstage.ai/v1.").tag(config=True)
    timeout = Float(None, allow_none=True,
                    help="Seconds to wait for the server between reads (None: provider default: "
                         "60 s idle while streaming, 300 s without streaming).").tag(config=True)
    system_prompt = Unicode("", help="System prompt of the conversation (empty: none).").tag(config=True)
    temperature = Float(None, allow_none=True, help="Sampling temperature (None: server default).").tag(config=True)
    top_p = Float(None, allow_none=True, help="Nucleus sampling (None: server default).").tag(config=True)
    max_tokens = Int(None, allow_none=True, help="Maximum answer tokens (None: server default).").tag(config=True)
    reasoning_effort = Unicode(None, allow_none=True, help="Reasoning effort: none, minimal, low, medium, high, xhigh or max (None: model default).").tag(config=True)
    max_history = Int(20, help="Previous turns kept and sent with each prompt.").tag(config=True)
    update_interval = Float(0.1, help="Seconds between display updates while streaming.").tag(config=True)
    format = Enum(list(FORMATS), default_value="markdown", help="Default output format.").tag(config=True)
    stream = Bool(True, help="Stream answers (False: show the whole answer at once).").tag(config=True)
    footer = Bool(True, help="Show the one-line footer (model, tokens, speed) under answers.").tag(config=True)
    display_mode = Enum(["auto", "rich", "plain"], default_value="auto",
                        help="rich = notebook outputs updated in place; plain = text to stdout; "
                             "auto = rich in a Jupyter kernel, plain otherwise.").tag(config=True)
    provider = AnyTrait(None, help="Provider class (default: upstage_magic.providers.Upstage).")
    session = AnyTrait(None, help="The ChatSession (default: the kernel's shared session).")

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        if self.session is None:
            self.session = default_session()
        self._sync_session()

    # -- settings ----------------------------------------------------------------------
    @observe("max_history", "system_prompt", "session")
    def _on_session_settings(self, change: Any) -> None:
        self._sync_session()

    def _sync_session(self) -> None:
        """Copy max_history and system_prompt into the session ("" clears the prompt)."""
        s = self.session
        if isinstance(s, ChatSession):
            s.max_history = self.max_history
            s.system_prompt = self.system_prompt or None

    def _provider(self) -> Any:
        if self.provider is None:
            from .providers import Upstage  # noqa: PLC0415 - aiohttp loads on first use

            self.provider = Upstage
            aclose = getattr(Upstage, "aclose", None)
            if aclose is not None:
                from .runner import close_on_exit  # noqa: PLC0415

                close_on_exit(aclose)
        return self.provider

    def _model(self, name: str | None) -> str:
        provider = self._provider()
        chosen = name or self.model or (self.session.model if self.session else None)
        get_model = getattr(provider, "get_model", None)
        if get_model is not None:
            return str(get_model(chosen or None))
        if chosen:
            return chosen
        return str(getattr(provider, "default_model", "") or settings.get_default_model())

    def _rich(self) -> bool:
        if self.display_mode != "auto":
            return self.display_mode == "rich"
        return getattr(self.shell, "kernel", None) is not None

    # -- %%upstage -----------------------------------------------------------------------
    @magic_arguments()
    @argument("-m", "--model", default=None, help="Model id or alias (default: UpstageMagics.model).")
    @argument("-s", "--system", default=None, help="System prompt for this cell ({placeholders} are filled).")
    @argument("-t", "--temperature", type=float, default=None, help="Sampling temperature.")
    @argument("--max-tokens", type=int, default=None, help="Maximum answer tokens.")
    @argument("--top-p", type=float, default=None, help="Nucleus sampling.")
    @argument("--reasoning-effort", default=None, choices=REASONING_EFFORTS,
              help="How hard a reasoning model thinks (solar-pro4: none..max; older models: low/high).")
    @argument("-f", "--format", default=None, choices=FORMATS,
              help="markdown (default): rendered with raw HTML neutralised; text: plain; "
                   "code: the first code block, highlighted; json: a JSON object, parsed.")
    @argument("-n", "--next-cell", action="store_true",
              help="With -f code: also put the code into a new cell below.")
    @argument("-o", "--out", default=None, metavar="NAME",
              help="Store the answer in NAME (text; the code for -f code; the parsed object for -f json).")
    @argument("--new", action="store_true", help="Start a fresh conversation with this cell.")
    @argument("--no-history", action="store_true", help="One-off: neither send nor record history.")
    @argument("--no-stream", action="store_true", help="Wait for the whole answer, then show it.")
    @argument("--raw", action="store_true", help="Send the cell as written (no {placeholder} filling).")
    @argument("--base-url", default=None, help="API base URL for this cell.")
    @cell_magic
    def upstage(self, line: str, cell: str) -> None:
        """Ask an Upstage Solar model; the cell body is the prompt.

        The answer streams into the cell output. The conversation continues from cell to
        cell (``--new`` starts afresh, ``--no-history`` asks a one-off question).

        Placeholders: ``{name}``, ``{obj.attr}``, ``{seq[0]}``, ``{d[key]}``, with optional
        ``!r`` and ``:spec`` (no spaces), are filled from the notebook's variables. No
        calls and no names starting with ``_``. Braces are special only around such a
        placeholder: ``{{name}}`` gives a literal ``{name}``; anything else in braces (code,
        JSON, ``{}``) is sent as written. An unknown name is an error; ``--raw`` turns
        filling off.

        Formats: markdown renders the answer (raw HTML in it is shown as text, unsafe
        links dropped); text shows it plain; code shows the first fenced code block
        (``-n`` puts it into a new cell below; ``-o`` gets the code); json asks the API for
        a JSON object, shows it pretty and ``-o`` gets the parsed value.

        Interrupt (kernel stop button / Ctrl-C) stops the answer; the partial text stays,
        marked "stopped", and is kept in the history as a partial turn.

        Examples::

            %%upstage -m solar-mini -t 0.2
            Summarise {article} in three bullet points.

            %%upstage -f json -o data
            List three planets with their diameters in km.
        """
        __tracebackhide__ = True
        args = parse_argstring(self.upstage, line)
        for name in ("model", "system", "out", "base_url"):  # IPython keeps quotes: -s 'a b'
            setattr(args, name, _unquote(getattr(args, name)))
        prompt = cell.strip("\n")
        if not prompt.strip():
            raise UsageError("The cell is empty: write the prompt below %%upstage.")
        fmt = args.format or self.format
        if args.out is not None and (not args.out.isidentifier() or keyword.iskeyword(args.out)):
            raise UsageError(f"-o {args.out!r}: not a valid Python variable name.")
        if args.next_cell and fmt != "code":
            raise UsageError("-n/--next-cell works with -f code.")
        ns = self.shell.user_ns if self.shell is not None else {}
        system = args.system
        if not args.raw:
            prompt = interpolate(prompt, ns)
            if system is not None:
                system = interpolate(system, ns)
        if args.new:
            self.session.reset()
        self.ask(prompt, args=args, fmt=fmt, system=system)

    def ask(self, prompt: str, *, args: Any, fmt: str, system: str | None) -> None:
        """Run one exchange: stream, show, record; raise UsageError on failure."""
        __tracebackhide__ = True
        provider = self._provider()
        model = self._model(args.model)
        session: ChatSession = self.session
        history = not args.no_history
        extra_system: list[str] = []
        if fmt == "code":
            extra_system.append(_CODE_INSTRUCTION)
        exchange = session.start(prompt, model=model, system=system, history=history, record=history)
        if fmt == "json" and not any("json" in str(m.get("content", "")).lower() for m in exchange.messages):
            extra_system.append(_JSON_INSTRUCTION)
        if extra_system:
            _add_system(exchange.messages, " ".join(extra_system))

        kwargs: dict[str, Any] = {}
        for key, value in (
            ("temperature", args.temperature if args.temperature is not None else self.temperature),
            ("top_p", args.top_p if args.top_p is not None else self.top_p),
            ("max_tokens", args.max_tokens if args.max_tokens is not None else self.max_tokens),
            ("reasoning_effort", args.reasoning_effort or self.reasoning_effort),
            ("base_url", args.base_url or self.base_url or None),
            ("timeout", self.timeout),
        ):
            if value is not None:
                kwargs[key] = value
        if fmt == "json":
            kwargs["response_format"] = {"type": "json_object"}
        if args.no_stream or not self.stream:
            kwargs["stream"] = False

        rich = self._rich()
        view: RichView | PlainView
        if rich:
            view = RichView(fmt, interval=self.update_interval)
        else:
            view = PlainView(fmt)
        self.last_exchange = exchange

        def on_batch(items: list[Any]) -> None:
            delta = exchange.extend(items)
            if delta:
                view.push(delta)

        def make_stream() -> Any:
            return provider.create_async_generator(model, exchange.messages, **kwargs)

        from .runner import run_stream  # noqa: PLC0415

        try:
            run_stream(make_stream, on_batch=on_batch, tick=view.tick, tick_interval=min(0.05, self.update_interval),
                       due=getattr(view, "due", None))
        except KeyboardInterrupt:
            exchange.finish("stopped")
            view.finish(None, footer_text(exchange, "stopped"))  # always: it carries the marker
            # Re-raise (so queued cells stop) from this hidden frame: no traceback through
            # the runner's thread-wait internals.
            raise KeyboardInterrupt("stopped: the partial answer was kept") from None
        except UpstageError as exc:
            exchange.finish(error=exc)
            view.finish(None, footer_text(exchange, "error") if exchange.text else None)
            raise UsageError(f"Upstage: {redact(exc)}") from None
        except Exception as exc:  # unexpected: still one clear line, partial kept
            exchange.finish(error=exc)
            view.finish(None, footer_text(exchange, "error") if exchange.text else None)
            raise UsageError(f"Upstage: unexpected {type(exc).__name__}: {redact(exc)}") from None

        final, value, problem = self._final(fmt, exchange.text, rich)
        turn = exchange.finish()
        view.finish(final, footer_text(exchange, turn.status) if self.footer else None)
        if not exchange.text:
            print("(The model returned an empty answer.)", file=sys.stderr)
        if problem:
            raise UsageError(problem + (f" {args.out} was not set." if args.out else ""))
        if fmt == "code" and args.next_cell and value:
            self.shell.set_next_input(value.rstrip("\n"), replace=False)
        if args.out:
            self.shell.user_ns[args.out] = value

    def _final(self, fmt: str, text: str, rich: bool) -> tuple[dict[str, Any] | None, Any, str | None]:
        """(final display bundle or None for the streamed one, -o value, error message)."""
        if fmt == "code":
            code, lang = extract_code(text)
            return ({"text/markdown": fence(code, lang), "text/plain": code} if rich else None), code, None
        if fmt == "json":
            raw = strip_json_fence(text)
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                return None, None, (
                    f"The answer is not valid JSON ({exc}); its text is shown above."
                )
            pretty = json.dumps(obj, indent=2, ensure_ascii=False)
            return ({"text/markdown": fence(pretty, "json"), "text/plain": pretty} if rich else None), obj, None
        return None, text, None

    # -- %upstage ------------------------------------------------------------------------
    @line_magic("upstage")
    def upstage_line(self, line: str) -> None:
        """Manage the Upstage conversation and settings.

        Usage::

            %upstage models        models your key can use (falls back to the known list)
            %upstage config        the effective settings (the key only as set/not set)
            %upstage history       the conversation so far
            %upstage reset         forget the conversation
            %upstage export PATH   save it as Markdown (.md) or JSON (.json)
            %upstage key           enter the API key (kept in memory only)
            %upstage key clear     forget the key entered with %upstage key
            %upstage chat          open the chat widget
        """
        __tracebackhide__ = True
        import shlex  # noqa: PLC0415

        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%upstage: {exc}") from None
        if not words or words[0] in ("help", "-h", "--help"):
            print(self.upstage_line.__doc__.split("Usage::", 1)[1].rstrip())  # type: ignore[union-attr]
            return
        cmd, rest = words[0], words[1:]
        handler: Callable[[list[str]], Any] | None = getattr(self, f"_cmd_{cmd}", None)
        if handler is None:
            raise UsageError(f"%upstage {cmd}: unknown command; try one of models, config, history, "
                             "reset, export PATH, key, chat.")
        return handler(rest)

    def _cmd_models(self, rest: list[str]) -> None:
        provider = self._provider()
        current = self._model(None)
        source = "from the API"
        try:
            from .runner import run_coroutine  # noqa: PLC0415

            kwargs: dict[str, Any] = {}
            if self.timeout is not None:
                kwargs["timeout"] = self.timeout
            if self.base_url:
                kwargs["base_url"] = self.base_url
            wait = (self.timeout if self.timeout is not None else _LIST_MODELS_TIMEOUT) + 5
            names = run_coroutine(lambda: provider.list_models(**kwargs), timeout=wait)
        except (UpstageError, TimeoutError, AttributeError) as exc:
            names = list(getattr(provider, "models", []))
            source = f"known list (the API could not be asked: {redact(exc)})"
        print(f"Models ({source}):")
        for name in names:
            print(f"  {name}{'   <- current' if name == current else ''}")

    def _cmd_config(self, rest: list[str]) -> None:
        key_state = _key_state()
        base = self.base_url or settings.get_base_url()
        rows = [
            ("model", self._model(None)),
            ("base_url", base),
            ("api key", key_state),
            ("format", self.format),
            ("timeout", self.timeout if self.timeout is not None
             else "provider default (60 s idle while streaming, 300 s without)"),
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("max_tokens", self.max_tokens),
            ("reasoning_effort", self.reasoning_effort),
            ("system_prompt", self.session.system_prompt or ""),
            ("max_history", self.max_history),
            ("update_interval", self.update_interval),
            ("stream", self.stream),
            ("display", "rich" if self._rich() else "plain"),
            ("turns in history", len(self.session.turns)),
        ]
        width = max(len(k) for k, _ in rows)
        print(redact("\n".join(f"{k:<{width}}  {v}" for k, v in rows)))

    def _cmd_history(self, rest: list[str]) -> None:
        s = self.session
        if not s.turns:
            print("No conversation yet.")
            return
        if self._rich():
            from IPython.display import display  # noqa: PLC0415

            from .render import safe_markdown  # noqa: PLC0415

            md = s.export_markdown()
            display({"text/markdown": safe_markdown(md), "text/plain": md}, raw=True)
        else:
            print(s.export_markdown())

    def _cmd_reset(self, rest: list[str]) -> None:
        n = len(self.session.turns)
        self.session.reset()
        print(f"Conversation cleared ({plural(n, 'turn')} forgotten).")

    def _cmd_export(self, rest: list[str]) -> None:
        if len(rest) != 1:
            raise UsageError("Usage: %upstage export PATH  (PATH ends in .md or .json)")
        try:
            path = self.session.export(rest[0])
        except (ValueError, OSError) as exc:
            raise UsageError(f"%upstage export: {exc}") from None
        print(self.session.describe_export(path))

    def _cmd_key(self, rest: list[str]) -> None:
        if rest[:1] == ["clear"]:
            settings.set_api_key(None)
            print("In-memory key cleared." + (" UPSTAGE_API_KEY is still set." if os.environ.get("UPSTAGE_API_KEY") else ""))
            return
        if rest:
            raise UsageError("Usage: %upstage key   (asks for the key; never type it into a cell)")
        import getpass  # noqa: PLC0415

        try:
            key = getpass.getpass("Upstage API key (kept in memory only): ")
        except (EOFError, KeyboardInterrupt):
            key = ""
        if not key.strip():
            print("No key entered; nothing changed.")
            return
        settings.set_api_key(key.strip())
        print("Key set for this session (in memory only; not saved).")

    def _cmd_chat(self, rest: list[str]) -> None:
        try:
            from .widget import ChatWidget  # noqa: PLC0415
        except ImportError as exc:
            raise UsageError(f"The chat widget is not available ({exc}). Use %%upstage cells meanwhile.") from None
        from IPython.display import display  # noqa: PLC0415

        display(ChatWidget(session=self.session, provider=self.provider))


# magic_arguments names the parser after the function ("%upstage"); this is a cell magic.
UpstageMagics.upstage.parser.prog = "%%upstage"  # type: ignore[attr-defined]
UpstageMagics.upstage.__doc__ = (UpstageMagics.upstage.__doc__ or "").replace("%upstage [", "%%upstage [", 1)


def _unquote(value: str | None) -> str | None:
    """Strip one pair of matching quotes (IPython's arg_split keeps them)."""
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _add_system(messages: list[dict[str, Any]], text: str) -> None:
    """Append ``text`` to the system message (creating one first if needed)."""
    if messages and messages[0].get("role") == "system":
        messages[0] = {**messages[0], "content": f"{messages[0].get('content', '')}\n\n{text}".strip()}
    else:
        messages.insert(0, {"role": "system", "content": text})


def _key_state() -> str:
    """Where the key comes from, never the key itself."""
    key = settings.get_api_key()
    env = os.environ.get("UPSTAGE_API_KEY", "").strip()
    if not key:
        return "not set (set UPSTAGE_API_KEY or run %upstage key)"
    if env and key == env:
        return "set (from UPSTAGE_API_KEY)"
    return "set (in memory, via %upstage key)"


# ---------------------------------------------------------------------------------------
# Extension entry points
# ---------------------------------------------------------------------------------------
_LOADED: dict[int, UpstageMagics] = {}


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (replacing an earlier registration in this shell)."""
    if id(ipython) in _LOADED:
        unload_ipython_extension(ipython)
    magics = UpstageMagics(shell=ipython)  # Magics.__init__ adds it to shell.configurables
    ipython.register_magics(magics)
    _LOADED[id(ipython)] = magics


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and their configurable (so %reload_ext leaves no duplicates)."""
    magics = _LOADED.pop(id(ipython), None)
    if magics is None:
        return
    mm = ipython.magics_manager
    for kind, name in (("cell", "upstage"), ("line", "upstage")):
        table = mm.magics.get(kind, {})
        func = table.get(name)
        if func is not None and getattr(func, "__self__", None) is magics:
            del table[name]
    if mm.registry.get(type(magics).__name__) is magics:
        del mm.registry[type(magics).__name__]
    configurables = getattr(ipython, "configurables", None)
    if configurables is not None:
        configurables[:] = [c for c in configurables if c is not magics]
