"""An offline chat completions server that behaves like Upstage's API (aiohttp.web).

Run it for an offline demo::

    python -m upstage_magic.emulator --port 8765
    export UPSTAGE_BASE_URL=http://127.0.0.1:8765/v1
    export UPSTAGE_API_KEY=anything

or in-process (tests)::

    async with Emulator(reply="echo") as base_url:
        ...   # POST {base_url}/chat/completions

It follows the real API (``UPSTAGE_API.md``) so that code tested against it works for real, and
imports only the standard library and aiohttp, never the rest of the package. Modules: ``api``
(the API's facts and request checks), ``replies`` (what it answers), ``faults`` (settings, faults,
rate limits), ``server`` (the ``Emulator``); running it (thread, notebook, command line) is here.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .api import CREATED, MODELS, resolve_model
from .faults import REASONING_FIELDS, rate_limit_headers
from .replies import (
    CODE_REPLY,
    HOSTILE_FLAGS,
    HOSTILE_REPLY,
    MARKDOWN_REPLY_TEMPLATE,
    REASONING_TEXT,
    canned_reply,
    filler_text,
    reasoning_text,
    tokenize,
)
from .server import MAX_RECORDED_REQUESTS, MAX_RECORDED_SLEEPS, Emulator  # noqa: F401 - the bounds, importable as before

__all__ = [
    "CODE_REPLY", "CREATED", "HOSTILE_FLAGS", "HOSTILE_REPLY", "MARKDOWN_REPLY_TEMPLATE", "MODELS", "REASONING_TEXT",
    "Emulator", "canned_reply", "filler_text", "main", "rate_limit_headers", "reasoning_text", "resolve_model",
    "serve_in_thread", "start_offline", "tokenize",
]


@contextmanager
def serve_in_thread(**cfg: Any) -> Iterator[Emulator]:
    """Run an Emulator on its own event loop in a daemon thread (for sync callers)."""
    emu = Emulator(**cfg)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    error: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(emu.start())
        except BaseException as exc:  # reported to the caller below
            error.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(emu.stop())

    thread = threading.Thread(target=run, name="upstage-emulator", daemon=True)
    thread.start()
    started.wait()
    try:
        if error:
            raise error[0]
        yield emu
    finally:
        if not error:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def start_offline(**cfg: Any) -> str | None:
    """For notebooks: with no ``UPSTAGE_API_KEY`` and no ``UPSTAGE_BASE_URL``, serve the emulator.

    Starts it in a background thread for the rest of the process, points the package at it
    through those two variables (the key a placeholder: the emulator takes any) and returns its
    base URL. Returns ``None``, changing nothing, when either is set. The environment is its only
    link to the client, whose modules it never imports: a key set in memory only is not seen.
    """
    import atexit
    import os

    if os.environ.get("UPSTAGE_API_KEY", "").strip() or os.environ.get("UPSTAGE_BASE_URL"):
        return None
    server = serve_in_thread(**cfg)
    emu = server.__enter__()
    atexit.register(server.__exit__, None, None, None)
    os.environ["UPSTAGE_BASE_URL"] = emu.base_url
    os.environ["UPSTAGE_API_KEY"] = "offline-demo"
    return emu.base_url


async def _serve(emu: Emulator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt instead
            pass
    base_url = await emu.start()
    key = "<the --api-key value>" if emu.api_key else "anything"
    print(f"Upstage emulator running at {base_url}\nPoint upstage-magic at it with:\n  export UPSTAGE_BASE_URL="
          f"{base_url}\n  export UPSTAGE_API_KEY={key}\nPress Ctrl+C to stop.", flush=True)
    try:
        await stop.wait()
    finally:
        await emu.stop()
        print("Upstage emulator stopped.", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m upstage_magic.emulator --port 8765``."""
    parser = argparse.ArgumentParser(prog="python -m upstage_magic.emulator",
                                     description="Run an offline, Upstage-compatible chat server for demos and tests.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 = any free port; default 8765)")
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any Bearer key)")
    parser.add_argument("--tokens-per-second", type=float, default=None, help="pace the stream (default: full speed)")
    parser.add_argument("--reply", default="markdown", help="markdown, echo, hostile, code, tool_call, tool_calls, or literal text")
    parser.add_argument("--answer-tokens", type=int, default=None, help="answer with N filler tokens")
    parser.add_argument("--reasoning", action="store_const", const=True, default=None,
                        help="always reason first (default: by model and reasoning_effort, like the API)")
    parser.add_argument("--no-reasoning", dest="reasoning", action="store_const", const=False, help="never reason")
    parser.add_argument("--reasoning-tokens", type=int, default=None, help="reason with exactly N tokens")
    parser.add_argument("--reasoning-field", default="reasoning", choices=REASONING_FIELDS,
                        help="send reasoning as delta.reasoning (default), reasoning_content or <think> in content")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(Emulator(**vars(args))))  # the options are the Emulator's settings
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: could not listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None

