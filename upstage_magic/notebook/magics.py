"""The ``%%upstage`` cell magic and the ``%upstage`` line magic: glue only.

A cell becomes an :class:`~upstage_magic.request.Ask`; :func:`~upstage_magic.request.plan`
decides the request; its :class:`~upstage_magic.session.Exchange` drives the stream (the
runner's worker moves the raw items, this thread applies them) while a :mod:`display` view
shows it. The line magic's subcommands live in :mod:`commands`. No HTTP here: the provider
(aiohttp) is imported on first use.
"""
from __future__ import annotations

import keyword
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Any as AnyTrait
from traitlets import link, observe

from ..errors import UpstageError
from ..formats import FORMATS, final_for
from ..models import ALL_EFFORTS
from ..request import Ask, RequestError, plan
from ..secrets import defang, redact
from ..session import ChatSession, Exchange, SessionBusyError, default_session
from ..settings import Settings, SettingsTraits, default_settings
from .display import PlainView, RichView, footer_text

__all__ = ["UpstageMagics", "load_ipython_extension", "unload_ipython_extension"]


@magics_class
class UpstageMagics(Magics, SettingsTraits):
    """``%%upstage`` / ``%upstage``: stream Upstage Solar answers into the notebook.

    Configure with ``%config UpstageMagics.model = "solar-mini4"`` or in ipython_config.py
    (``c.UpstageMagics.model = ...``). These settings are the kernel's one
    :class:`~upstage_magic.settings.Settings` object, shared with the chat widget. The API
    key is never a setting here: use the ``UPSTAGE_API_KEY`` environment variable or
    ``%upstage key``.
    """

    provider = AnyTrait(None, help="Provider class (default: upstage_magic.providers.Upstage).")
    session = AnyTrait(None, help="The ChatSession (default: the kernel's shared session).")
    tools = AnyTrait(None, help="Tools offered in every cell: a list of functions or names, or 'f,g' "
                                "('notebook': the built-in notebook tools); --tools in a cell adds to them.").tag(config=True)

    def __init__(self, shell: Any = None, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        from ..log import SessionLog  # noqa: PLC0415

        if self.session is None:
            self.session = default_session()
        self.settings = settings if settings is not None else default_settings()
        self._link_settings()
        self._sync_session()
        self.last_exchange: Exchange | None = None
        #: Errors of the user's cells, for {Err[N]} and %upstage fix (installed on load).
        self.error_log: Any = None
        #: Keeps the conversation in the log (it outlives the kernel).
        self.log = SessionLog(lambda: self.log_path, self.user_namespace, warn=lambda m: print(m, file=sys.stderr))
        self.log.attach(self.session)

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
        if change["name"] == "session" and hasattr(self, "log"):
            if isinstance(change["old"], ChatSession):
                self.log.detach(change["old"])
            if isinstance(change["new"], ChatSession):
                self.log.attach(change["new"])
        self._sync_session()

    def _sync_session(self) -> None:
        """Copy max_history and system_prompt into the session ("" clears the prompt)."""
        s = self.session
        if isinstance(s, ChatSession):
            s.max_history = self.max_history
            s.system_prompt = self.system_prompt or None

    def user_namespace(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    def new_conversation(self) -> None:
        """Forget the conversation; the next answer starts a new one in the log."""
        self.session.reset()
        self.log.new_conversation()

    def current_provider(self) -> Any:
        if self.provider is None:
            from ..providers import Upstage  # noqa: PLC0415 - aiohttp loads on first use
            from .runner import close_on_exit  # noqa: PLC0415

            self.provider = Upstage
            close_on_exit(Upstage.aclose)
        return self.provider

    def rich(self) -> bool:
        """Whether outputs are rich notebook displays (else plain text to stdout)."""
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
    @argument("--reasoning-effort", default=None, choices=ALL_EFFORTS,
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
    @argument("--tools", default=None, metavar="NAME[,NAME...]",
              help="Let the model call these notebook functions ('notebook': the built-in notebook tools); "
                   "each call asks first (yes / no / always).")
    @argument("--approve", default=None, metavar="NAME[,NAME...]",
              help="With --tools: these tools run without asking.")
    @argument("--max-steps", type=int, default=None, metavar="N",
              help="With --tools: at most N requests to the model in one cell (default 10).")
    @argument("--replay", action="store_true",
              help="Show the recorded answer of the same request at once (nothing sent), if there is one.")
    @argument("--fresh", action="store_true", help="Ask again even with replay on, and record the new answer.")
    @argument("--file", default=None, metavar="PATH[,PATH...]",
              help="Attach files: text and code read here, .csv/.parquet summarised, PDFs, images and Office "
                   "files through Upstage Document Parse (its Markdown); within --context-budget.")
    @argument("--cells", default=None, metavar="N-M",
              help="Attach the notebook's cells N..M (sources and text outputs, most recent first).")
    @argument("--notebook", action="store_true", help="Attach the notebook's earlier cells (within the budget).")
    @argument("--with-answers", action="store_true",
              help="With --cells/--notebook: include our own answers to %%%%upstage cells too.")
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
        if {"-h", "--help"} & set(line.split()):
            print(self.upstage.parser.format_help())
            return None
        args = self._args(line, cell)
        if args.map is not None:
            return self._map(cell, args)
        if args.new and not args.dry_run:
            self.new_conversation()
        self.ask(self._ask_of(args, cell), out=args.out, next_cell=args.next_cell, dry_run=args.dry_run,
                 max_steps=args.max_steps)

    def _args(self, line: str, cell: str) -> Any:
        """The cell's options, checked against each other (UsageError says what to change)."""
        args = parse_argstring(self.upstage, line)
        for name in ("model", "system", "out", "base_url", "schema"):  # IPython keeps quotes: -s 'a b'
            setattr(args, name, _unquote(getattr(args, name)))
        fmt = args.format or self.format
        if not cell.strip():
            raise UsageError("The cell is empty: write the prompt below %%upstage.")
        if args.out is not None and (not args.out.isidentifier() or keyword.iskeyword(args.out)):
            raise UsageError(f"-o {args.out!r}: not a valid Python variable name.")
        if args.next_cell and fmt != "code":
            raise UsageError("-n/--next-cell works with -f code.")
        if args.schema is not None and fmt != "json":
            raise UsageError("--schema works with -f json.")
        if args.think and args.no_think:
            raise UsageError("--think and --no-think: choose one.")
        if args.replay and args.fresh:
            raise UsageError("--replay and --fresh: choose one.")
        if args.map is None and (args.no_cache or args.fail_fast or args.concurrency is not None):
            raise UsageError("--no-cache, --fail-fast and --concurrency work with --map.")
        if (args.approve or args.max_steps is not None) and not (args.tools or self.tools):
            raise UsageError("--approve and --max-steps work with --tools.")
        if args.max_steps is not None and args.max_steps < 1:
            raise UsageError("--max-steps must be 1 or more.")
        return args

    def _ask_of(self, args: Any, cell: str) -> Ask:
        """The cell as an Ask: options, placeholders, the --context block, the --schema object."""
        ns = self.user_namespace()
        block = None
        if args.context:
            from ..context import summarize  # noqa: PLC0415

            try:
                block = summarize(args.context, ns, budget_tokens=args.context_budget)
            except (ValueError, TypeError) as exc:
                raise UsageError(f"--context: {exc}") from None
        return Ask(
            prompt=cell.strip("\n"), model=args.model, system=args.system, format=args.format,
            schema=self._schema(args.schema), temperature=args.temperature, top_p=args.top_p,
            max_tokens=args.max_tokens, reasoning_effort=args.reasoning_effort,
            think=True if args.think else False if args.no_think else None,
            stream=False if args.no_stream else None, base_url=args.base_url or None, context=block,
            history=not args.no_history, namespace=ns, raw=args.raw, errors=self.error_log,
            tools=self._tools(args) or None,
            replay=True if args.replay else None, fresh=args.fresh,
            attachments=self._attachments(args, block),
            cell=self.cell_id(),
        )

    def _tools(self, args: Any) -> list[Any]:
        """The tools offered: ``UpstageMagics.tools`` and the cell's ``--tools`` (``--approve`` applied)."""
        from .toolrun import resolve_tools  # noqa: PLC0415

        configured = self.tools
        spec = list(configured.split(",") if isinstance(configured, str) else configured or [])
        spec += [n.strip() for n in (args.tools or "").split(",") if n.strip() and n.strip() not in spec]
        if not spec:
            return []
        try:
            return resolve_tools(spec, self.user_namespace(), approve=args.approve, shell=self.shell)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def _attachments(self, args: Any, context: Any) -> Any:
        """--file/--cells/--notebook as one block (notebook/documents.py), or None."""
        from .documents import attachments_for  # noqa: PLC0415

        return attachments_for(self, args, used_tokens=context.tokens if context is not None else 0)

    def cell_id(self) -> str | None:
        """The running cell's identity: ``cell:<cellId>`` from the front end, else ``run:<n>``.

        JupyterLab 4 and Notebook 7 (and VS Code) send ``cellId`` in the execute request's
        metadata; without one (a console, nbclient, terminal IPython) the execution count is
        used, so a re-run adds a turn instead of replacing one (``%upstage history`` says so).
        """
        from .cells import cell_id  # noqa: PLC0415

        return cell_id(self.shell)

    def _schema(self, name: str | None) -> Any:
        """The --schema NAME object from the notebook (None without --schema)."""
        if name is None:
            return None
        ns = self.user_namespace()
        if name not in ns:
            raise UsageError(f"--schema {name}: no variable named {name!r} in the notebook. Define a "
                             "JSON-schema dict or a Pydantic model class with that name first.")
        return ns[name]

    def ask(self, ask: Ask, *, out: str | None = None, next_cell: bool = False, dry_run: bool = False,
            max_steps: int | None = None) -> None:
        """Plan ``ask``, stream its answer into the cell, store ``-o``; raise on failure."""
        __tracebackhide__ = True
        provider = self.current_provider()
        self._ask_server_models(ask, provider)
        try:
            request = plan(self.settings, ask, session=self.session, provider=provider)
        except RequestError as exc:
            raise UsageError(str(exc)) from None
        if dry_run:
            return self.print_text(request.describe())
        for notice in self._first_time(request.notices):  # once per session each (issue 21)
            print(notice, file=sys.stderr)
        once = self._first_time(request.once)
        if request.context is not None:
            self._show_context(request.context)
        if request.attachments is not None:
            self._show_context(request.attachments)
        if request.tools:
            from .toolrun import DEFAULT_MAX_STEPS, run_tools, shower  # noqa: PLC0415

            exchange = run_tools(self, request, provider, max_steps=max_steps or DEFAULT_MAX_STEPS,
                                 show=shower(self.rich()))
        else:
            exchange = Exchange(request, self.session)
            self.last_exchange = exchange
            self._stream(exchange, provider)
        final = final_for(request.format, exchange.text, schema=request.schema)
        self._view.finish(final, footer_text(exchange, exchange.status) if self.footer else None,
                          notes=[*request.notes, *once] or None, metadata={"upstage": output_metadata(exchange)})
        if not exchange.text and not exchange.tool_calls:
            print("(The model returned an empty answer.)", file=sys.stderr)
        if final.problem and exchange.text:
            raise UsageError(final.problem + (f" {out} was not set." if out else ""))
        value = list(exchange.tool_calls) if exchange.tool_calls and not exchange.text else final.value
        if self.shell is not None and next_cell and isinstance(value, str) and value:
            self.shell.set_next_input(value.rstrip("\n"), replace=False)
        if self.shell is not None and out:
            self.shell.user_ns[out] = value

    def _first_time(self, lines: tuple[str, ...]) -> list[str]:
        """Those of ``lines`` not said before in this session (then remembered as said)."""
        said = getattr(self.session, "said", None)
        if said is None:  # a duck-typed session: say them every time
            return list(lines)
        fresh = [line for line in lines if line not in said]
        said.update(fresh)
        return fresh

    def _ask_server_models(self, ask: Ask, provider: Any) -> None:
        """No model chosen and a server that is not Upstage's: ask its model list once, so the plan
        uses the model it offers instead of sending solar-pro4 to a server that never heard of it."""
        from .. import models  # noqa: PLC0415

        base = ask.base_url or self.settings.base_url or None
        if ask.model or self.settings.model or not models.wants_server_list(base):
            return
        from .runner import run_coroutine  # noqa: PLC0415

        try:
            run_coroutine(lambda: models.fetch_models(provider, base_url=base, timeout=10.0, max_retries=0),
                          timeout=15.0)
        except TimeoutError:
            pass  # not asked again (models remembers it); the default is sent

    def stream_answer(self, exchange: Exchange, provider: Any) -> None:
        """Stream one answer (a tool loop's step) into a new view, as a cell's answer streams."""
        __tracebackhide__ = True
        self._stream(exchange, provider)

    def finish_step(self) -> None:
        """End the view of a tool loop's step that asked for tools (no footer)."""
        self._view.finish(None, None)

    def _stream(self, exchange: Exchange, provider: Any) -> None:
        """Drive the exchange into a view; on failure keep what was shown and raise one clear line."""
        __tracebackhide__ = True
        from .runner import run_stream  # noqa: PLC0415

        rich = self.rich()
        view = RichView(exchange, exchange.request.format, interval=self.update_interval,
                        load_images=self.load_images) if rich else PlainView(exchange, exchange.request.format)
        self._view: RichView | PlainView = view
        from .retryline import RetryLine  # noqa: PLC0415

        retry = self.retry_line = RetryLine(rich)

        def changed() -> None:
            retry.clear()
            view.changed()

        def tick() -> None:
            view.tick()
            retry.tick()

        try:
            exchange.run(provider, pump=retry.pump(run_stream), on_change=changed, tick=tick,
                         interval=min(0.05, self.update_interval))
        except KeyboardInterrupt:
            retry.clear()
            view.finish(None, footer_text(exchange, "stopped"))  # always: it carries the marker
            # Re-raise (so queued cells stop) from this hidden frame: no runner internals shown.
            raise _short(KeyboardInterrupt("stopped: the partial answer was kept")) from None
        except (UpstageError, SessionBusyError) as exc:
            retry.clear()
            view.finish(None, footer_text(exchange, "error") if exchange.text else None)
            if isinstance(exc, SessionBusyError):
                raise UsageError(str(exc)) from None
            from ..conversation import context_full_hint  # noqa: PLC0415

            full = context_full_hint(exc, exchange.request)
            if full:
                exc.hint = full
            notices = " ".join(n.removeprefix("Note: ") for n in exchange.request.notices)
            if notices:
                exc.hint = f"{exc.hint} {notices}".strip()
            if rich:
                from IPython.display import display  # noqa: PLC0415

                from .errorview import error_bundle, first_line  # noqa: PLC0415

                display(error_bundle(exc), raw=True)
                raise _short(exc, first_line(exc)) from None
            raise _short(exc) from None
        except Exception:
            view.finish(None, footer_text(exchange, "error") if exchange.text else None)
            raise  # a bug of ours or a provider's: keep its traceback so it can be reported

    def _map(self, cell: str, args: Any) -> Any:
        """``%%upstage --map NAME``: one answer per item, with a progress display."""
        from .batch import map_cell  # noqa: PLC0415

        fmt = args.format or self.format
        if args.dry_run or args.context or args.next_cell or args.new:
            raise UsageError("--map does not combine with --dry-run, --context, -n or --new.")
        if args.file or args.cells or args.notebook:
            raise UsageError("--map does not combine with --file, --cells or --notebook.")
        if fmt not in ("text", "markdown", "json"):
            raise UsageError("--map gives text answers (-f text/markdown) or parsed ones (-f json).")
        ns = self.user_namespace()
        outer = {k: v for k, v in ns.items() if k not in ("item", "index")}  # {item...} is per row
        ask = Ask(prompt=cell.strip("\n"), model=args.model, system=args.system,
                  format="json" if fmt == "json" else "text", schema=self._schema(args.schema),
                  temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                  reasoning_effort=args.reasoning_effort, think=True if args.think else False if args.no_think else None,
                  base_url=args.base_url or None, history=False, namespace=outer, raw=args.raw, errors=self.error_log)
        try:
            return map_cell(ask, args.map, ns, out=args.out, settings=self.settings, cache=not args.no_cache,
                            fail_fast=args.fail_fast, concurrency=args.concurrency, provider=self.current_provider(),
                            progress=True, show=args.out is None, fresh=args.fresh)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--map: {exc}") from None
        except UpstageError as exc:
            raise _short(exc) from None

    def print_text(self, text: str) -> None:
        """Plain text to the cell: escaped preformatted HTML in a notebook (defanged), else stdout."""
        if self.rich():
            from IPython.display import display  # noqa: PLC0415

            from .display import text_bundle  # noqa: PLC0415

            display(text_bundle(defang(text)), raw=True)
        else:
            print(text)

    def _show_context(self, block: Any) -> None:
        """The context sent with a question, as a collapsed block above the answer."""
        if not self.rich():
            print(f"[{block.label}]")
            return
        import html as html_mod  # noqa: PLC0415

        from IPython.display import display  # noqa: PLC0415

        from ..render import render_html  # noqa: PLC0415
        from .display import html_bundle  # noqa: PLC0415

        page = (f'<details class="um-context"><summary>{html_mod.escape(block.label)}</summary>'
                f'<div class="um-context-body">{render_html(block.text)}</div></details>')
        display(html_bundle(page, f"[{block.label}]"), raw=True)

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
            %upstage chat [--side] open the chat widget (--side: in JupyterLab's side panel)
            %upstage fix [N] [-n]  explain the last error (or cell N's) and propose a fix;
                                   -n puts the corrected code into a new cell
            %upstage log [--search TEXT]   recent conversations in the log (it outlives the kernel)
            %upstage resume [ID]   continue a logged conversation (default: this notebook's latest)
            %upstage import FILE   read a .json export back into the log and resume it
            %upstage cache clear   empty the batch answer cache (%%upstage --map) and parsed documents
            %upstage parse FILE [-o NAME] [--coordinates] [--async] [--no-cache]
                                   parse a PDF, image or Office file with Document Parse
        """
        __tracebackhide__ = True
        from .commands import run_command  # noqa: PLC0415

        return run_command(self, line)


# magic_arguments names the parser after the function ("%upstage"); this is a cell magic.
UpstageMagics.upstage.parser.prog = "%%upstage"
UpstageMagics.upstage.__doc__ = (UpstageMagics.upstage.__doc__ or "").replace("%upstage [", "%%upstage [", 1)


def output_metadata(exchange: Exchange) -> dict[str, Any]:
    """What produced an answer, saved with its output in the .ipynb (no key, no prompt)."""
    u = exchange.usage
    return {"model": exchange.model, "status": exchange.status, "finish_reason": exchange.finish_reason,
            "usage": u.to_dict() if u is not None else None, "timings": exchange.timings(),
            "streamed": exchange.streamed, "replayed": replayed_at(exchange)}


def replayed_at(exchange: Exchange) -> str | None:
    """When a replayed answer was recorded (ISO 8601, UTC), else None."""
    from datetime import datetime, timezone  # noqa: PLC0415

    when = getattr(exchange, "replayed", None)
    return datetime.fromtimestamp(when, timezone.utc).isoformat() if when is not None else None


def _short(exc: BaseException, text: str | None = None) -> BaseException:
    """``exc`` shown as one line (IPython's ``_render_traceback_`` hook): no traceback.

    For expected errors only. The exception keeps its type, so "Run all" still stops after
    it and an interrupt is still a ``KeyboardInterrupt``; only its display is short.
    """
    line = defang(f"{type(exc).__name__}: {text if text is not None else redact(exc)}")
    exc._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
    _defang_value(exc)
    return exc


def _defang_value(exc: BaseException) -> None:
    """``str(exc)`` (the error output's ``evalue``, saved in the .ipynb) masked and defanged too."""
    if isinstance(exc, UpstageError):
        exc.message, exc.hint = defang(exc.message), defang(exc.hint)
    if not isinstance(exc, KeyboardInterrupt):
        exc.args = tuple(defang(redact(a)) if isinstance(a, str) else a for a in exc.args)


def _unquote(value: str | None) -> str | None:
    """Strip one pair of matching quotes (IPython's arg_split keeps them)."""
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


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
    from .kernelfix import install_idle_race_fix  # noqa: PLC0415

    install_idle_race_fix(getattr(ipython, "kernel", None))
    _LOADED[id(ipython)] = magics


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and their configurable (so %reload_ext leaves no duplicates)."""
    magics = _LOADED.pop(id(ipython), None)
    if magics is None:
        return
    magics._unlink_settings()
    magics.log.detach(magics.session)
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
