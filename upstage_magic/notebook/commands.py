"""``%upstage SUBCOMMAND ...``: each subcommand parsed into a typed object, then run.

Like jupysql's ``command.py``: one small argparse parser per subcommand (its flags in any
order, a bad one is a :class:`UsageError` with the usage line), and one function per
subcommand that runs it against the :class:`~upstage_magic.notebook.magics.UpstageMagics`.
"""
from __future__ import annotations

import argparse
import os
import shlex
import textwrap
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError

from ..errors import UpstageError
from ..log import LogError
from ..request import Ask
from ..secrets import defang, display_url, redact
from ..session import plural
from ..settings import get_api_key, get_base_url, set_api_key

__all__ = ["run_command"]

_LIST_MODELS_TIMEOUT = 60.0  # seconds; the provider's default for list_models


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (with the usage line) instead of exiting."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message}. Usage: {self.format_usage().strip().removeprefix('usage: ')}")


def _parser(name: str, *arguments: tuple[tuple[str, ...], dict[str, Any]]) -> _Parser:
    parser = _Parser(prog=f"%upstage {name}", add_help=False)
    for flags, options in arguments:
        parser.add_argument(*flags, **options)
    return parser


_FLAG = {"action": "store_true"}
PARSERS: dict[str, _Parser] = {
    "models": _parser("models", (("--all",), _FLAG), (("--refresh",), _FLAG)),
    "config": _parser("config"),
    "history": _parser("history"),
    "reset": _parser("reset"),
    "export": _parser("export", (("path",), {"help": "a .md or .json file"})),
    "key": _parser("key", (("action",), {"nargs": "?", "choices": ["clear"]})),
    "chat": _parser("chat", (("--side",), {"action": "store_true",
                                           "help": "open it in JupyterLab's side panel (sidecar)"})),
    "fix": _parser("fix", (("cell",), {"nargs": "?", "type": int}), (("-n",), _FLAG)),
    "log": _parser("log", (("--search",), {"nargs": "+", "default": None})),
    "resume": _parser("resume", (("id",), {"nargs": "?", "type": int})),
    "import": _parser("import", (("file",), {})),
    "cache": _parser("cache", (("action",), {"choices": ["clear"]})),
    "parse": _parser("parse", (("file",), {}), (("-o", "--out"), {"default": None}), (("--coordinates",), _FLAG),
                     (("--async",), {"action": "store_true", "dest": "use_async"}), (("--no-cache",), _FLAG)),
}


def run_command(magics: Any, line: str) -> Any:
    """Parse ``line`` (``models --all``, ``fix 3 -n``...) and run it; usage on ``help``."""
    __tracebackhide__ = True
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%upstage: {exc}") from None
    if not words or words[0] in ("help", "-h", "--help"):
        usage: str = (type(magics).upstage_line.__doc__ or "").split("Usage::", 1)[1]
        print(textwrap.dedent(usage).strip("\n"))
        return None
    name, rest = words[0], words[1:]
    handler: Callable[[Any, argparse.Namespace], Any] | None = COMMANDS.get(name)
    if handler is None:
        raise UsageError(f"%upstage {name}: unknown command; try one of {', '.join(PARSERS)} (or help).")
    args = PARSERS[name].parse_args(rest)
    try:
        return handler(magics, args)
    except LogError as exc:  # the log file cannot be used: one line, not a traceback
        raise UsageError(f"%upstage {name}: {exc}") from None


# ------------------------------------------------------------------------ models, config


def _models(magics: Any, args: argparse.Namespace) -> None:
    """Models grouped: aliases first, dated ids folded under them (``--all``: every id)."""
    from .. import models  # noqa: PLC0415
    from ..request import resolve_model  # noqa: PLC0415
    from .runner import run_coroutine  # noqa: PLC0415

    provider = magics.current_provider()
    options: dict[str, Any] = {} if magics.timeout is None else {"timeout": magics.timeout}
    wait = (magics.timeout if magics.timeout is not None else _LIST_MODELS_TIMEOUT) + 5
    try:
        ids, note = run_coroutine(lambda: models.fetch_models(
            provider, base_url=magics.base_url or None, refresh=args.refresh, **options), timeout=wait)
    except TimeoutError:
        ids, note = models.listed_model_ids(), f"known list; the API did not answer within {wait:.0f} s"
    base = magics.base_url or None
    current = resolve_model(magics.model or None, provider, base_url=base)  # the server's own, if it lists one
    lines = [f"Models ({note or 'from the API'}):"]
    for alias, dated in models.group_models(ids):
        mark = "   <- current" if current in (alias, *dated) else ""
        retired = "  [retired]" if models.retired_on(alias, base) else ""  # never one the server lists
        if args.all or not dated:
            extra = f"  ({', '.join(dated)})" if dated else ""
        else:
            extra = f"  ({dated[0]}{' +' + str(len(dated) - 1) if len(dated) > 1 else ''})"
        lines.append(f"  {alias}{extra}{retired}{mark}")
    print(defang(redact("\n".join(lines))))


def _key_state() -> str:
    """Where the key comes from, never the key itself."""
    try:
        key = get_api_key()
    except UpstageError as exc:  # e.g. a key with a line break in UPSTAGE_API_KEY
        return f"not usable: {exc}"
    env = os.environ.get("UPSTAGE_API_KEY", "").strip()
    if not key:
        return "not set (set UPSTAGE_API_KEY or run %upstage key)"
    return "set (from UPSTAGE_API_KEY)" if env and key == env else "set (in memory, via %upstage key)"


def _config(magics: Any, args: argparse.Namespace) -> None:
    from ..request import resolve_model  # noqa: PLC0415

    timeout = magics.timeout if magics.timeout is not None else \
        "provider default (60 s idle while streaming, 300 s without)"
    rows = [
        ("model", resolve_model(magics.model or None, magics.current_provider(), base_url=magics.base_url or None)),
        ("base_url", display_url(magics.base_url or get_base_url())), ("api key", _key_state()),
        ("format", magics.format), ("timeout", timeout), ("temperature", magics.temperature),
        ("top_p", magics.top_p), ("max_tokens", magics.max_tokens), ("reasoning_effort", magics.reasoning_effort),
        ("system_prompt", magics.session.system_prompt or ""), ("max_history", magics.max_history),
        ("update_interval", magics.update_interval), ("stream", magics.stream),
        ("display", "rich" if magics.rich() else "plain"), ("turns in history", len(magics.session.turns)),
    ]
    width = max(len(k) for k, _ in rows)
    print(defang(redact("\n".join(f"{k:<{width}}  {v}" for k, v in rows))))


# ------------------------------------------------------------------- the conversation


def _history(magics: Any, args: argparse.Namespace) -> None:
    s = magics.session
    if not s.turns:
        print("No conversation yet.")
    elif magics.rich():
        from IPython.display import display  # noqa: PLC0415

        from ..render import render_html  # noqa: PLC0415
        from .display import html_bundle  # noqa: PLC0415

        md = s.export_markdown() + _history_notes(magics)
        display(html_bundle(render_html(md, load_images=magics.load_images), md), raw=True)
    else:
        print(s.export_markdown() + _history_notes(magics))


def _history_notes(magics: Any) -> str:
    """How much history the last question took, and how re-runs are recognised."""
    from .cells import identity_note  # noqa: PLC0415

    lines = []
    last = getattr(magics, "last_exchange", None)
    info = getattr(getattr(last, "request", None), "history_info", None)
    if info is not None:
        lines.append(f"_Last question: {info.describe()}._")
    note = identity_note(magics.session.turns)
    if note:
        lines.append(f"_{note}_")
    return "\n" + "\n\n".join(lines) + "\n" if lines else ""


def _reset(magics: Any, args: argparse.Namespace) -> None:
    n = len(magics.session.turns)
    magics.new_conversation()
    print(f"Conversation cleared ({plural(n, 'turn')} forgotten).")


def _export(magics: Any, args: argparse.Namespace) -> None:
    try:
        path = magics.session.export(args.path)
    except (ValueError, OSError) as exc:
        raise UsageError(f"%upstage export: {exc}") from None
    print(magics.session.describe_export(path))


def _key(magics: Any, args: argparse.Namespace) -> None:
    if args.action == "clear":
        set_api_key(None)
        print("In-memory key cleared." + (" UPSTAGE_API_KEY is still set." if os.environ.get("UPSTAGE_API_KEY") else ""))
        return
    import getpass  # noqa: PLC0415

    try:
        key = getpass.getpass("Upstage API key (kept in memory only): ")
    except (EOFError, KeyboardInterrupt):
        key = ""
    if not key.strip():
        print("No key entered; nothing changed.")
        return
    set_api_key(key.strip())
    print("Key set for this session (in memory only; not saved).")


def _chat(magics: Any, args: argparse.Namespace) -> None:
    try:
        from .widget import ChatWidget  # noqa: PLC0415
    except ImportError as exc:
        raise UsageError(f"The chat widget is not available ({exc}). Use %%upstage cells meanwhile.") from None
    from IPython.display import display  # noqa: PLC0415

    widget = ChatWidget(session=magics.session, provider=magics.provider)
    widget.want_side = bool(getattr(args, "side", False))  # the view opens the side panel (JupyterLab only)
    display(widget)


def _fix(magics: Any, args: argparse.Namespace) -> None:
    """Explain an error and propose a corrected cell (streams like %%upstage)."""
    from .fix import build_fix_prompt, record_last_exception  # noqa: PLC0415

    errors_seen = magics.error_log or {}
    if args.cell is not None:
        if args.cell not in errors_seen:
            raise UsageError(f"%upstage fix {args.cell}: cell {args.cell} raised no error that was recorded "
                             f"(the last {len(errors_seen)} errors are kept).")
        record = errors_seen[args.cell]
    else:
        record = (magics.error_log.last() if magics.error_log is not None else None) \
            or record_last_exception(magics.shell)
        if record is None:
            raise UsageError("%upstage fix: no error yet. Run the failing cell first.")
    magics.ask(Ask(build_fix_prompt(record), format="code" if args.n else "markdown", history=False),
               next_cell=args.n)


# --------------------------------------------------------------------- the log, cache


def _open_log(magics: Any, name: str) -> Any:
    clog = magics.log.open()
    if clog is None:
        raise UsageError(f"%upstage {name}: the conversation log is off (UpstageMagics.log_path is '').")
    return clog


def _log(magics: Any, args: argparse.Namespace) -> None:
    from ..log import format_conversations  # noqa: PLC0415

    clog = _open_log(magics, "log")
    print(format_conversations(clog.recent(20, search=" ".join(args.search) if args.search else None)))
    print(f"(log: {clog.path}; %upstage resume ID continues one)")


def _resume(magics: Any, args: argparse.Namespace) -> None:
    from ..log import current_notebook, session_turns  # noqa: PLC0415

    clog = _open_log(magics, "resume")
    cid = args.id if args.id is not None else (clog.latest(current_notebook(magics.user_namespace())) or clog.latest())
    if cid is None:
        raise UsageError("%upstage resume: the log has no conversation yet.")
    try:
        rows = clog.load(cid)
    except LogError:
        raise UsageError(f"%upstage resume: no conversation {cid} in the log; %upstage log lists them.") from None
    if magics.session.active is not None:
        raise UsageError("%upstage resume: an answer is streaming; wait for it or stop it first.")
    turns = session_turns(rows)
    magics.session.load_turns(turns)
    magics.log.resumed(cid, turns, rows)
    print(f"Resumed conversation {cid}: {plural(len(rows), 'turn')}. "
          "The next %%upstage cell (and the chat widget) continues it.")


def _import(magics: Any, args: argparse.Namespace) -> None:
    from ..log import current_notebook  # noqa: PLC0415

    clog = _open_log(magics, "import")
    try:
        cid = clog.import_json(args.file, notebook=current_notebook(magics.user_namespace()))
    except (OSError, ValueError, LogError) as exc:
        raise UsageError(f"%upstage import: {exc}") from None
    print(f"Imported as conversation {cid}.")
    _resume(magics, argparse.Namespace(id=cid))


def _cache(magics: Any, args: argparse.Namespace) -> None:
    from ..cache import clear_cache  # noqa: PLC0415
    from ..doccache import clear_documents  # noqa: PLC0415

    print(f"Answer cache cleared ({plural(clear_cache(), 'answer')} removed; "
          f"{plural(clear_documents(), 'parsed document')} removed).")


def _parse(magics: Any, args: argparse.Namespace) -> Any:
    from .documents import parse_command  # noqa: PLC0415

    return parse_command(magics, args)


COMMANDS: dict[str, Callable[[Any, argparse.Namespace], Any]] = {
    "models": _models, "config": _config, "history": _history, "reset": _reset, "export": _export,
    "key": _key, "chat": _chat, "fix": _fix, "log": _log, "resume": _resume, "import": _import, "cache": _cache,
    "parse": _parse,
}
assert set(COMMANDS) == set(PARSERS)
