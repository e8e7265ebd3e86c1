"""The ``%%upstage`` cell magic and the ``%upstage`` line magic.

A thin front end: it parses options, fills ``{placeholders}`` from the user namespace,
and wires the provider's stream (run by :mod:`runner`) into a :mod:`session` exchange and
a :mod:`display` view. No HTTP here; the provider (aiohttp) is imported on first use.
"""
from __future__ import annotations

import keyword
import os
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Any as AnyTrait
from traitlets import link, observe

from . import formats, models, placeholders, settings
from .config import FORMATS, REASONING_EFFORTS, Settings, SettingsTraits, default_settings
from .display import PlainView, RichView, footer_text
from .errors import UpstageError, display_url, mask_secrets, redact
from .session import ChatSession, Exchange, SessionBusyError, default_session, plural

__all__ = ["UpstageMagics", "load_ipython_extension", "unload_ipython_extension"]


# ---------------------------------------------------------------------------------------
# The magics
# ---------------------------------------------------------------------------------------
_LIST_MODELS_TIMEOUT = 60.0  # seconds; the provider's default for list_models


@magics_class
class UpstageMagics(Magics, SettingsTraits):
    """``%%upstage`` / ``%upstage``: stream Upstage Solar answers into the notebook.

    Configure with ``%config UpstageMagics.model = "solar-mini4"`` or in ipython_config.py
    (``c.UpstageMagics.model = ...``). These settings are the kernel's one
    :class:`~upstage_magic.config.Settings` object, shared with the chat widget. The API key
    is never a setting here: use the ``UPSTAGE_API_KEY`` environment variable or
    ``%upstage key``.
    """

    provider = AnyTrait(None, help="Provider class (default: upstage_magic.providers.Upstage).")
    session = AnyTrait(None, help="The ChatSession (default: the kernel's shared session).")

    def __init__(self, shell: Any = None, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        if self.session is None:
            self.session = default_session()
        self.settings = settings if settings is not None else default_settings()
        self._link_settings()
        self._sync_session()
        self.last_exchange: Exchange | None = None
        #: Errors of the user's cells, for {Err[N]} and %upstage fix (installed on load).
        self.error_log: Any = None
        self._log: Any = None  # the ConversationLog, opened on the first answer
        self._log_failed = False
        self._conv: int | None = None  # this kernel's conversation id in the log
        self.session.on_end(self._log_turn)

    # -- settings ----------------------------------------------------------------------
    def _link_settings(self) -> None:
        """Tie each setting trait to the shared Settings object (both ways).

        Values given in the IPython config (``c.UpstageMagics.x``) win at load time; after
        that, a change on either side (``%config``, the widget) is seen by both.
        """
        configured = set(self.config.get("UpstageMagics", {}))
        self._links = []
        for name in SettingsTraits.class_trait_names(config=True):
            if name in configured:
                setattr(self.settings, name, getattr(self, name))
            self._links.append(link((self.settings, name), (self, name)))

    def _unlink_settings(self) -> None:
        for lk in getattr(self, "_links", []):
            lk.unlink()
        self._links = []

    @observe("max_history", "system_prompt", "session")
    def _on_session_settings(self, change: Any) -> None:
        if change["name"] == "session":
            if isinstance(change["old"], ChatSession):
                change["old"].remove_end_callback(self._log_turn)
            if isinstance(change["new"], ChatSession):
                change["new"].on_end(self._log_turn)
            self._conv = None
        self._sync_session()

    # -- the conversation log ------------------------------------------------------------
    def _conversation_log(self) -> Any:
        """The ConversationLog (None when turned off); opened once per kernel."""
        from . import log  # noqa: PLC0415

        path = log.resolve_log_path(self.log_path)
        if path is None:
            return None
        if self._log is None or getattr(self._log, "path", None) != path:
            self._log = log.ConversationLog(path)
        return self._log

    def _log_turn(self, exchange: Exchange) -> None:
        """Append a finished answer to the conversation log (recorded turns only)."""
        if not exchange.record or self._log_failed:
            return
        from . import log  # noqa: PLC0415

        try:
            clog = self._conversation_log()
            if clog is None:
                return
            if self._conv is None:
                self._conv = clog.new_conversation(log.current_notebook(self.shell.user_ns if self.shell else None))
            options = {k: v for k, v in exchange.options.items() if k not in ("api_key", "base_url", "proxy")}
            clog.append(self._conv, log.turn_record(exchange, options=options))
        except (log.LogError, OSError) as exc:
            self._log_failed = True
            print(f"Note: the conversation log is off for this kernel ({redact(exc)}). "
                  "Set UpstageMagics.log_path to a writable file, or '' to turn it off.", file=sys.stderr)

    def _new_conversation(self) -> None:
        """Forget the conversation; the next answer starts a new one in the log."""
        self.session.reset()
        self._conv = None

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
        return self.settings.model_for(self._provider(), name or (self.session.model if self.session else None))

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
              help="How hard a reasoning model thinks (solar-pro4: none..max; solar-pro3: low/medium/high).")
    @argument("--think", action="store_true",
              help="Turn reasoning on (the effort this model uses for it; shown as a Thinking block).")
    @argument("--no-think", action="store_true", help="Turn reasoning off (solar-pro3 reasons by default).")
    @argument("-f", "--format", default=None, choices=FORMATS,
              help="markdown (default): rendered safely; text: plain; "
                   "code: the first code block, highlighted; json: a JSON object, parsed.")
    @argument("--schema", default=None, metavar="NAME",
              help="With -f json: a JSON-schema dict or a Pydantic model class in the notebook; the API "
                   "answers in that shape and -o gets the validated object.")
    @argument("-n", "--next-cell", action="store_true",
              help="With -f code: also put the code into a new cell below.")
    @argument("-o", "--out", default=None, metavar="NAME",
              help="Store the answer in NAME (text; the code for -f code; the parsed object for -f json).")
    @argument("--new", action="store_true", help="Start a fresh conversation with this cell.")
    @argument("--no-history", action="store_true", help="One-off: neither send nor record history.")
    @argument("--no-stream", action="store_true", help="Wait for the whole answer, then show it.")
    @argument("--raw", action="store_true", help="Send the cell as written (no {placeholder} filling).")
    @argument("--base-url", default=None, help="API base URL for this cell.")
    @argument("--context", default=None, metavar="NAME[,NAME...]",
              help="Send bounded summaries of these notebook variables (DataFrames: shape, columns, "
                   "a few rows, nulls; arrays: shape, dtype, range; others: a cut repr).")
    @argument("--context-budget", type=int, default=2000, metavar="TOKENS",
              help="Most tokens the --context block may take (default 2000); what is cut is said.")
    @argument("--dry-run", action="store_true",
              help="Show exactly what would be sent (messages, options, estimated tokens) and send nothing.")
    @argument("--map", default=None, metavar="NAME",
              help="Batch: run the cell as a template once per item of NAME (a list, dict, Series or "
                   "DataFrame; {item}, {item.col}, {index}); -o gets the answers in order.")
    @argument("--no-cache", action="store_true", help="With --map: do not use or fill the answer cache.")
    @argument("--fail-fast", action="store_true", help="With --map: stop at the first failed item.")
    @argument("--concurrency", type=int, default=None, help="With --map: requests in flight at most.")
    @cell_magic
    def upstage(self, line: str, cell: str) -> None:
        """Ask an Upstage Solar model; the cell body is the prompt.

        The answer streams into the cell output. The conversation continues from cell to
        cell (``--new`` starts afresh, ``--no-history`` asks a one-off question).

        Placeholders: ``{name}``, ``{obj.attr}``, ``{seq[0]}``, ``{d[key]}``, with optional
        ``!r`` and ``:spec`` (no spaces), are filled from the notebook's variables, only
        outside fenced code blocks and inline code (pasted code is sent as written). No
        calls and no names starting with ``_``; an unknown name is left as written. A quiet
        line under the answer says what was filled and what was left. ``{{name}}`` gives a
        literal ``{name}``; ``{In[3]}``, ``{Out[3]}`` and ``{Err[3]}`` (the error of cell 3)
        work too; ``--raw`` turns filling off.

        Notebook context: ``--context df,arr`` sends bounded summaries of variables (shown
        collapsed above the answer); ``%upstage fix`` explains the last error and proposes
        a corrected cell; ``--dry-run`` shows the request and sends nothing.

        Batch: ``%%upstage --map items -o answers`` runs the cell once per item (``{item}``,
        ``{item.col}``, ``{index}``) at the API's rate limit, with a progress bar, a cache
        (a re-run sends only what is missing) and ``-f json --schema S`` for typed columns.

        Formats: markdown renders the answer (raw HTML in it is shown as text, unsafe
        links dropped, remote images shown as links); text shows it plain; code shows the
        first fenced code block (``-n`` puts it into a new cell below; ``-o`` gets the
        code); json asks the API for a JSON object, shows it pretty and ``-o`` gets the
        parsed value.

        Interrupt (kernel stop button / Ctrl-C) stops the answer; the partial text stays,
        marked "stopped", and is kept in the history as a partial turn.

        Examples::

            %%upstage -m solar-mini4 -t 0.2
            Summarise {article} in three bullet points.

            %%upstage -f json -o data
            List three planets with their diameters in km.

        Line magic: ``%upstage models | config | history | reset | export PATH | key | chat |
        fix [N] | log | resume [ID] | import FILE | cache clear`` (``%upstage help`` says more).
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
        if args.schema is not None and fmt != "json":
            raise UsageError("--schema works with -f json.")
        ns = self.shell.user_ns if self.shell is not None else {}
        if args.map is not None:
            return self._map(cell, args, fmt)
        if args.no_cache or args.fail_fast or args.concurrency is not None:
            raise UsageError("--no-cache, --fail-fast and --concurrency work with --map.")
        filled = placeholders.fill(prompt, ns, raw=args.raw, errors=self.error_log)
        system = args.system
        if system is not None:
            filled_system = placeholders.fill(system, ns, raw=args.raw, errors=self.error_log)
            system = filled_system.text
            filled = filled.merge(filled_system)
        block = None
        if args.context:
            from . import context  # noqa: PLC0415

            try:
                block = context.summarize(args.context, ns, budget_tokens=args.context_budget)
            except (ValueError, TypeError) as exc:
                raise UsageError(f"--context: {exc}") from None
        if args.new and not args.dry_run:
            self._new_conversation()
        self.ask(filled.text, args=args, fmt=fmt, system=system, context=block, note=filled.summary())

    def _schema(self, args: Any) -> Any:
        """The --schema NAME object from the notebook, as a Schema (None without --schema)."""
        if args.schema is None:
            return None
        ns = self.shell.user_ns if self.shell is not None else {}
        name = _unquote(args.schema) or ""
        if name not in ns:
            raise UsageError(f"--schema {name}: no variable named {name!r} in the notebook. Define a "
                             "JSON-schema dict or a Pydantic model class with that name first.")
        from .schema import Schema  # noqa: PLC0415

        try:
            return Schema.of(ns[name])
        except TypeError as exc:
            raise UsageError(f"--schema {name}: {exc}") from None

    def _request_options(self, args: Any, fmt: str, model: str, schema: Any = None) -> dict[str, Any]:
        """The provider's options for this cell: the settings, the cell's options on top.

        The reasoning effort is checked against what ``model`` accepts before anything is
        sent (unknown models pass unchecked); ``--think``/``--no-think`` map per model.
        """
        effort = args.reasoning_effort
        if args.think and args.no_think:
            raise UsageError("--think and --no-think: choose one.")
        if (args.think or args.no_think) and effort:
            raise UsageError("--think/--no-think choose the reasoning effort; drop --reasoning-effort.")
        if args.think or args.no_think:
            effort = models.effort_for_think(model, bool(args.think))
            if effort is None:
                raise UsageError(f"--no-think: how to turn reasoning off for {model} is not known; "
                                 "use --reasoning-effort with a value the model accepts.")
        options = self.settings.request_options(
            temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
            reasoning_effort=effort, base_url=args.base_url or None,
        )
        try:
            models.check_effort(model, options.get("reasoning_effort"))
        except ValueError as exc:
            raise UsageError(f"{exc} Nothing was sent.") from None
        options.update(formats.request_options_for(
            fmt, response_format=schema.response_format if schema is not None else None))
        if args.no_stream:
            options["stream"] = False
        return options

    def ask(self, prompt: str, *, args: Any, fmt: str, system: str | None, context: Any = None,
            note: str | None = None) -> None:
        """Run one exchange through the session's stream path; show it; raise on failure.

        ``context`` (a :class:`~upstage_magic.context.ContextBlock`) goes before the prompt in
        this request only (the recorded question stays the user's text); ``note`` is a
        quiet line shown under the answer (what the placeholders filled).
        """
        __tracebackhide__ = True
        provider = self._provider()
        model = self._model(args.model)
        session: ChatSession = self.session
        history = not args.no_history
        schema = self._schema(args)  # looked up once: the request and the -o value use it
        options = self._request_options(args, fmt, model, schema)  # checked before anything starts
        sent = [prompt, system or session.system_prompt or ""]
        if history:
            sent += [str(m.get("content", "")) for m in session.history_messages()]
        sent_text = " ".join(sent)
        instructions = formats.instruction_for(fmt, sent_text)
        if args.dry_run:
            return self._dry_run(prompt, model=model, system=system, history=history, options=options,
                                 instructions=instructions, context=context, note=note)
        if context is not None:
            self._show_context(context)
        try:
            exchange = session.start(prompt, model=model, system=system, history=history, record=history,
                                     instructions=instructions)
        except SessionBusyError as exc:
            raise UsageError(str(exc)) from None
        if context is not None:
            last = exchange.messages[-1]
            exchange.messages[-1] = {**last, "content": f"{context.text}\n\n{last['content']}"}
        notice = models.retired_notice(model)
        if notice:
            print(f"Note: {notice} Sending it anyway; the server decides.", file=sys.stderr)
        view: RichView | PlainView
        try:
            if self._rich():
                view = RichView(exchange, fmt, interval=self.update_interval, load_images=self.load_images)
            else:
                view = PlainView(exchange, fmt)
        except BaseException as exc:
            exchange.finish(error=exc)  # never leave the session busy
            raise
        self.last_exchange = exchange

        from .runner import run_stream  # noqa: PLC0415

        try:
            run_stream(lambda: exchange.stream(provider, options), lambda _items: view.changed(),
                       tick=view.tick, interval=min(0.05, self.update_interval))
        except KeyboardInterrupt:
            exchange.finish("stopped")  # the stream task has ended it already, unless it hung
            view.finish(None, footer_text(exchange, "stopped"))  # always: it carries the marker
            # Re-raise (so queued cells stop) from this hidden frame: no traceback through
            # the runner's thread-wait internals.
            raise _short(KeyboardInterrupt("stopped: the partial answer was kept")) from None
        except UpstageError as exc:
            exchange.finish(error=exc)
            view.finish(None, footer_text(exchange, "error") if exchange.text else None)
            if notice:
                exc.hint = f"{exc.hint} {notice}".strip()
            raise _short(exc) from None
        except Exception as exc:  # unexpected: still one clear line, partial kept
            exchange.finish(error=exc)
            view.finish(None, footer_text(exchange, "error") if exchange.text else None)
            raise _short(exc, f"unexpected {type(exc).__name__}: {redact(exc)}") from None

        turn = exchange.finish()
        final = formats.final_for(fmt, exchange.text, load_images=self.load_images,
                                  schema=schema)
        show = final if exchange.text else None
        view.finish(show.bundle if show is not None and not exchange.reasoning and not exchange.tool_calls else None,
                    footer_text(exchange, turn.status) if self.footer else None,
                    notes=[note] if note else None,
                    metadata={"upstage": _output_metadata(exchange)})
        if not exchange.text and not exchange.tool_calls:
            print("(The model returned an empty answer.)", file=sys.stderr)
        if final.problem and exchange.text:
            raise UsageError(final.problem + (f" {args.out} was not set." if args.out else ""))
        value = final.value
        if exchange.tool_calls and not exchange.text:
            value = list(exchange.tool_calls)
        if self.shell is None:
            return
        if fmt == "code" and args.next_cell and value:
            self.shell.set_next_input(value.rstrip("\n"), replace=False)
        if args.out:
            self.shell.user_ns[args.out] = value

    def _map(self, cell: str, args: Any, fmt: str) -> Any:
        """``%%upstage --map NAME``: one answer per item, with a progress display."""
        from . import batch  # noqa: PLC0415

        if args.dry_run or args.context or args.next_cell or args.new:
            raise UsageError("--map does not combine with --dry-run, --context, -n or --new.")
        if fmt not in ("text", "markdown", "json"):
            raise UsageError("--map gives text answers (-f text/markdown) or parsed ones (-f json).")
        model = self._model(args.model)
        options = self._request_options(args, "text", model)  # -f json is batch's own business
        options.pop("stream", None)
        # Notebook placeholders are filled once; {item...} and {index} are left for each row.
        ns = self.shell.user_ns if self.shell is not None else {}
        outer = {k: v for k, v in ns.items() if k not in ("item", "index")}
        template = placeholders.fill(cell.strip("\n"), outer, raw=args.raw, errors=self.error_log).text
        try:
            return batch.map_cell(
                template, args.map, self.shell.user_ns if self.shell is not None else {},
                out=args.out, schema=args.schema,
                model=model, system=args.system or self.session.system_prompt,
                format="json" if fmt == "json" else "text", cache=not args.no_cache,
                fail_fast=args.fail_fast, concurrency=args.concurrency, provider=self._provider(),
                progress=True, **options)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--map: {exc}") from None
        except UpstageError as exc:
            raise _short(exc) from None

    def _dry_run(self, prompt: str, *, model: str, system: str | None, history: bool, options: dict[str, Any],
                 instructions: str | None, context: Any, note: str | None) -> None:
        """Show the request that would be sent; send nothing, record nothing."""
        from .dryrun import describe_request  # noqa: PLC0415
        from .session import _add_system  # noqa: PLC0415

        messages = self.session.build_messages(prompt, system=system, history=history)
        if instructions:
            _add_system(messages, instructions)
        if context is not None:
            messages[-1] = {**messages[-1], "content": f"{context.text}\n\n{messages[-1]['content']}"}
        report = describe_request(messages, options, model=model)
        if note:
            report += "\n" + note
        self._print(report)

    def _print(self, text: str) -> None:
        """Plain text to the cell: as escaped preformatted HTML in a notebook, else stdout."""
        if self._rich():
            from IPython.display import display  # noqa: PLC0415

            display(formats.text_bundle(text), raw=True)
        else:
            print(text)

    def _show_context(self, block: Any) -> None:
        """The context sent with a question, as a collapsed block above the answer."""
        if not self._rich():
            print(f"[{block.label}]")
            return
        import html as html_mod  # noqa: PLC0415

        from IPython.display import display  # noqa: PLC0415

        from .render import render_html  # noqa: PLC0415

        body = render_html(mask_secrets(block.text))
        page = (f'<details class="um-context"><summary>{html_mod.escape(block.label)}</summary>'
                f'<div class="um-context-body">{body}</div></details>')
        display(formats.html_bundle(page, f"[{block.label}]"), raw=True)

    # -- %upstage ------------------------------------------------------------------------
    @line_magic("upstage")  # type: ignore[arg-type]
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
            %upstage fix [N] [-n]  explain the last error (or cell N's) and propose a fix;
                                   -n puts the corrected code into a new cell
            %upstage log [--search TEXT]   recent conversations in the log (it outlives the kernel)
            %upstage resume [ID]   continue a logged conversation (default: this notebook's latest)
            %upstage import FILE   read a .json export back into the log and resume it
            %upstage cache clear   empty the batch answer cache (%%upstage --map)
        """
        __tracebackhide__ = True
        import shlex  # noqa: PLC0415

        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%upstage: {exc}") from None
        if not words or words[0] in ("help", "-h", "--help"):
            usage: str = (self.upstage_line.__doc__ or "").split("Usage::", 1)[1]
            print(textwrap.dedent(usage).strip("\n"))
            return
        cmd, rest = words[0], words[1:]
        handler: Callable[[list[str]], Any] | None = getattr(self, f"_cmd_{cmd}", None)
        if handler is None:
            raise UsageError(f"%upstage {cmd}: unknown command; try one of models, config, history, "
                             "reset, export PATH, key, chat, fix, log, resume, import, cache clear.")
        return handler(rest)

    def _cmd_models(self, rest: list[str]) -> None:
        """Models grouped: aliases first, dated ids folded under them (``--all``: every id)."""
        if rest not in ([], ["--all"], ["--refresh"], ["--all", "--refresh"], ["--refresh", "--all"]):
            raise UsageError("Usage: %upstage models [--all] [--refresh]")
        provider = self._provider()
        current = self._model(None)
        options: dict[str, Any] = {}
        if self.timeout is not None:
            options["timeout"] = self.timeout
        wait = (self.timeout if self.timeout is not None else _LIST_MODELS_TIMEOUT) + 5
        from .runner import run_coroutine  # noqa: PLC0415

        try:
            ids, note = run_coroutine(lambda: models.fetch_models(
                provider, base_url=self.base_url or None, refresh="--refresh" in rest, **options), timeout=wait)
        except TimeoutError:
            ids, note = models.listed_model_ids(), f"known list; the API did not answer within {wait:.0f} s"
        print(f"Models ({redact(note) if note else 'from the API'}):")
        for alias, dated in models.group_models(ids):
            mark = "   <- current" if current in (alias, *dated) else ""
            retired = models.retired_notice(alias)
            if "--all" in rest or not dated:
                extra = f"  ({', '.join(dated)})" if dated else ""
            else:
                extra = f"  ({dated[0]}{' +' + str(len(dated) - 1) if len(dated) > 1 else ''})"
            print(f"  {alias}{extra}{'  [retired]' if retired else ''}{mark}")

    def _cmd_config(self, rest: list[str]) -> None:
        key_state = _key_state()
        base = display_url(self.base_url or settings.get_base_url())
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

            from .render import render_html  # noqa: PLC0415

            md = s.export_markdown()
            display(formats.html_bundle(render_html(md, load_images=self.load_images), md), raw=True)
        else:
            print(s.export_markdown())

    def _cmd_reset(self, rest: list[str]) -> None:
        n = len(self.session.turns)
        self._new_conversation()
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

    def _cmd_fix(self, rest: list[str]) -> None:
        """Explain an error and propose a corrected cell (streams like %%upstage)."""
        from . import fix  # noqa: PLC0415

        next_cell = "-n" in rest
        words = [w for w in rest if w != "-n"]
        if len(words) > 1 or (words and not words[0].isdigit()):
            raise UsageError("Usage: %upstage fix [N] [-n]   (N: the cell's number; default: the last error)")
        errors_seen = self.error_log or {}
        if words:
            try:
                record = errors_seen[int(words[0])]
            except KeyError:
                raise UsageError(f"%upstage fix {words[0]}: cell {words[0]} raised no error that was recorded "
                                 f"(the last {len(errors_seen)} errors are kept).") from None
        else:
            record = (self.error_log.last() if self.error_log is not None else None) \
                or fix.record_last_exception(self.shell)
            if record is None:
                raise UsageError("%upstage fix: no error yet. Run the failing cell first.")
        args = parse_argstring(self.upstage, "--no-history" + (" -f code -n" if next_cell else ""))
        self.ask(fix.build_fix_prompt(record), args=args, fmt="code" if next_cell else "markdown", system=None)

    def _cmd_log(self, rest: list[str]) -> None:
        from . import log  # noqa: PLC0415

        search = None
        if rest[:1] == ["--search"] and len(rest) >= 2:
            search = " ".join(rest[1:])
        elif rest:
            raise UsageError("Usage: %upstage log [--search TEXT]")
        clog = self._conversation_log()
        if clog is None:
            print("The conversation log is off (UpstageMagics.log_path is '').")
            return
        print(log.format_conversations(clog.recent(20, search=search)))
        print(f"(log: {clog.path}; %upstage resume ID continues one)")

    def _cmd_resume(self, rest: list[str]) -> None:
        from . import log  # noqa: PLC0415

        if len(rest) > 1 or (rest and not rest[0].isdigit()):
            raise UsageError("Usage: %upstage resume [ID]   (ID from %upstage log)")
        clog = self._conversation_log()
        if clog is None:
            raise UsageError("%upstage resume: the conversation log is off (UpstageMagics.log_path is '').")
        notebook = log.current_notebook(self.shell.user_ns if self.shell else None)
        cid = int(rest[0]) if rest else (clog.latest(notebook) or clog.latest())
        rows = clog.load(cid) if cid is not None else []
        if not rows:
            raise UsageError("%upstage resume: " + (f"no conversation {cid} in the log." if rest
                                                     else "the log has no conversation yet."))
        if self.session.active is not None:
            raise UsageError("%upstage resume: an answer is streaming; wait for it or stop it first.")
        self.session.load_turns(log.session_turns(rows))
        self._conv = cid
        print(f"Resumed conversation {cid}: {plural(len(rows), 'turn')}. "
              "The next %%upstage cell (and the chat widget) continues it.")

    def _cmd_import(self, rest: list[str]) -> None:
        if len(rest) != 1:
            raise UsageError("Usage: %upstage import FILE.json   (a file %upstage export wrote)")
        from . import log  # noqa: PLC0415

        clog = self._conversation_log()
        if clog is None:
            raise UsageError("%upstage import: the conversation log is off (UpstageMagics.log_path is '').")
        try:
            cid = clog.import_json(rest[0], notebook=log.current_notebook(self.shell.user_ns if self.shell else None))
        except (OSError, ValueError, log.LogError) as exc:
            raise UsageError(f"%upstage import: {exc}") from None
        print(f"Imported as conversation {cid}.")
        self._cmd_resume([str(cid)])

    def _cmd_cache(self, rest: list[str]) -> None:
        if rest != ["clear"]:
            raise UsageError("Usage: %upstage cache clear   (empties the batch answer cache)")
        from .cache import clear_cache  # noqa: PLC0415

        print(f"Answer cache cleared ({plural(clear_cache(), 'answer')} removed).")

    def _cmd_chat(self, rest: list[str]) -> None:
        try:
            from .widget import ChatWidget  # noqa: PLC0415
        except ImportError as exc:
            raise UsageError(f"The chat widget is not available ({exc}). Use %%upstage cells meanwhile.") from None
        from IPython.display import display  # noqa: PLC0415

        display(ChatWidget(session=self.session, provider=self.provider))


# magic_arguments names the parser after the function ("%upstage"); this is a cell magic.
UpstageMagics.upstage.parser.prog = "%%upstage"
UpstageMagics.upstage.__doc__ = (UpstageMagics.upstage.__doc__ or "").replace("%upstage [", "%%upstage [", 1)


def _output_metadata(exchange: Exchange) -> dict[str, Any]:
    """What produced an answer, saved with its output in the .ipynb (no key, no prompt)."""
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    u = exchange.usage
    return {
        "model": exchange.model,
        "status": exchange.status,
        "finish_reason": exchange.finish_reason,
        "usage": None if u is None else {
            "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "reasoning_tokens": u.reasoning_tokens, "cached_tokens": u.cached_tokens,
        },
        "timings": {"first_byte": rounded(exchange.ttfb), "first_answer_token": rounded(exchange.ttft),
                    "reasoning": rounded(exchange.reasoning_seconds), "total": rounded(exchange.elapsed)},
        "streamed": exchange.streamed,
    }


def _short(exc: BaseException, text: str | None = None) -> BaseException:
    """``exc`` shown as one line (IPython's ``_render_traceback_`` hook): no traceback.

    The exception keeps its type, so "Run all" still stops after it and an interrupt is
    still a ``KeyboardInterrupt``; only its display is short.
    """
    line = f"{type(exc).__name__}: {text if text is not None else redact(exc)}"
    exc._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
    return exc


def _unquote(value: str | None) -> str | None:
    """Strip one pair of matching quotes (IPython's arg_split keeps them)."""
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _key_state() -> str:
    """Where the key comes from, never the key itself."""
    try:
        key = settings.get_api_key()
    except UpstageError as exc:  # e.g. a key with a line break in UPSTAGE_API_KEY
        return f"not usable: {exc}"
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
    from .fix import install_error_recorder  # noqa: PLC0415

    magics.error_log = install_error_recorder(ipython)
    _LOADED[id(ipython)] = magics


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and their configurable (so %reload_ext leaves no duplicates)."""
    magics = _LOADED.pop(id(ipython), None)
    if magics is None:
        return
    magics._unlink_settings()
    magics.session.remove_end_callback(magics._log_turn)
    from .fix import uninstall_error_recorder  # noqa: PLC0415

    uninstall_error_recorder(ipython)
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
