"""``python -m upstage_magic demo``: run the quickstart notebook in a real kernel.

Without ``UPSTAGE_API_KEY`` (or with ``--offline``) it starts the emulator on a free
loopback port and points the kernel at it (dummy key); with a key it talks to Upstage.
Writes ``<name>.executed.ipynb`` and ``<name>.executed.html`` next to the notebook.

Replay (on by default here, ``--fresh`` turns it off): the kernel runs with
``UPSTAGE_MAGIC_REPLAY=1``, so every answer is recorded in the answer cache and a second run
shows the recorded answers at once (marked replayed), sending nothing: twice as fast or
better offline, and free with a real key. The offline emulator listens on a fixed loopback
port (:data:`DEMO_PORT`, a free one if it is taken) because the base URL is part of a
recorded answer's key.
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

DEMO_KEY = "emulator-demo-key"
#: The offline emulator's loopback port, the same on every run so recorded answers match.
DEMO_PORT = 48721


def _default_notebook() -> tuple[Path, Path | None]:
    """The quickstart and where to write results: beside it in a checkout, else the cwd.

    A checkout (editable install) has ``notebooks/`` next to the package; a wheel carries
    a copy inside the package (see pyproject's force-include), which must not be written to.
    """
    here = Path(__file__).resolve().parent
    checkout = here.parent / "notebooks" / "quickstart.ipynb"
    if checkout.exists():
        return checkout, None
    return here / "notebooks" / "quickstart.ipynb", Path.cwd()


def run_demo(
    notebook: Path,
    *,
    offline: bool | None = None,
    tokens_per_second: float | None = 200.0,
    timeout: int = 300,
    out_dir: Path | None = None,
    replay: bool = False,
    port: int | None = None,
) -> tuple[Path, Path]:
    """Execute ``notebook``; return the paths of the executed notebook and its HTML copy."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    from .secrets import redact, register_secret

    key = os.environ.get("UPSTAGE_API_KEY", "").strip()
    if offline is None:
        offline = not key
    register_secret(key or None)
    out_dir = out_dir or notebook.parent
    stem = notebook.name[: -len(".ipynb")] if notebook.name.endswith(".ipynb") else notebook.stem
    nb_out = out_dir / f"{stem}.executed.ipynb"
    html_out = out_dir / f"{stem}.executed.html"

    saved_env = {k: os.environ.get(k) for k in ("UPSTAGE_BASE_URL", "UPSTAGE_API_KEY", "UPSTAGE_MAGIC_EMULATOR",
                                                "UPSTAGE_MAGIC_REPLAY")}
    with ExitStack() as stack:
        os.environ["UPSTAGE_MAGIC_REPLAY"] = "1" if replay else "0"
        if offline:
            emu = _demo_emulator(stack, tokens_per_second, DEMO_PORT if port is None else port)
            os.environ["UPSTAGE_BASE_URL"] = emu.base_url
            os.environ["UPSTAGE_API_KEY"] = DEMO_KEY
            os.environ["UPSTAGE_MAGIC_EMULATOR"] = "1"
            print(f"No UPSTAGE_API_KEY: using the offline emulator at {emu.base_url}")
        else:
            os.environ.pop("UPSTAGE_MAGIC_EMULATOR", None)
            from .errors import api_name
            from .settings import get_base_url

            print(f"Using {api_name(get_base_url())} (UPSTAGE_API_KEY is set).")
        try:
            nb = nbformat.read(notebook, as_version=4)
            client = NotebookClient(
                nb,
                timeout=timeout,
                kernel_name="python3",
                # The kernel's own start-up chatter (e.g. "running over TCP without
                # encryption" on loopback) is not the demo's business; cell errors still show.
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
                resources={"metadata": {"path": str(notebook.parent)}},
                # Every answer, replay record and log entry is committed when it is made
                # (SQLite, WAL), so nothing waits for the kernel's exit: a graceful shutdown
                # cost 0.4-0.5 s of a 3 s replayed run (bench_replay).
                shutdown_kernel="immediate",
            )
            print(f"Executing {notebook} ...", flush=True)
            client.execute()
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    text = redact(nbformat.writes(nb))  # belt and braces: no key in saved files
    nb_out.write_text(text, encoding="utf-8")
    html, _ = HTMLExporter().from_notebook_node(nbformat.reads(text, as_version=4))
    html_out.write_text(redact(html), encoding="utf-8")
    return nb_out, html_out


def _demo_emulator(stack: ExitStack, tokens_per_second: float | None, port: int) -> Any:
    """The offline emulator on ``port`` (a free port when that one is taken: nothing replays then)."""
    from .emulator import serve_in_thread

    try:
        return stack.enter_context(serve_in_thread(tokens_per_second=tokens_per_second, port=port))
    except OSError:
        print(f"Port {port} is taken: the emulator uses a free one (recorded answers will not match).")
        return stack.enter_context(serve_in_thread(tokens_per_second=tokens_per_second))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m upstage_magic")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="execute the quickstart notebook (offline without a key)")
    demo.add_argument("--notebook", type=Path, default=None, help="notebook to run (default: notebooks/quickstart.ipynb)")
    demo.add_argument("--out-dir", type=Path, default=None, help="where to write the results (default: next to it)")
    demo.add_argument("--offline", action="store_true", help="use the emulator even if UPSTAGE_API_KEY is set")
    demo.add_argument("--tokens-per-second", type=float, default=200.0, help="emulator pacing (default 200)")
    demo.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    demo.add_argument("--fresh", action="store_true",
                      help="ask every question again (default: replay the answers recorded by an earlier run)")
    emu = sub.add_parser("emulator", help="run the offline emulator (same as python -m upstage_magic.emulator)")
    emu.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.command == "emulator":
        from .emulator import main as emulator_main

        emulator_main(args.args)
        return 0

    if args.notebook:
        notebook, out_dir = args.notebook, args.out_dir
    else:
        notebook, default_out = _default_notebook()
        out_dir = args.out_dir or default_out
    try:
        import nbclient  # noqa: F401, PLC0415
        import nbconvert  # noqa: F401, PLC0415
        import nbformat  # noqa: F401, PLC0415
    except ImportError as exc:
        print(f"error: the demo needs {exc.name}, which is not installed: "
              "pip install 'upstage-magic[demo]'", file=sys.stderr)
        return 2
    if not notebook.exists():
        print(f"error: {notebook} not found; pass --notebook PATH", file=sys.stderr)
        return 2
    try:
        nb_out, html_out = run_demo(
            notebook,
            offline=True if args.offline else None,
            tokens_per_second=args.tokens_per_second,
            timeout=args.timeout,
            out_dir=out_dir,
            replay=not args.fresh,
        )
    except Exception as exc:  # nbclient's CellExecutionError carries the cell's error
        from .secrets import redact

        print(f"error: the notebook failed: {redact(exc)}", file=sys.stderr)
        return 1
    print(f"Executed notebook: {nb_out}")
    print(f"HTML copy:         {html_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
