"""The chat widget's own thread: front-end messages are handled there, whatever thread gets them.

ipykernel 7 has kernel subshells, and JupyterLab 4.4+ sends widget comm messages on one
(``commsOverSubshells``). ipykernel then runs the comm handler in that subshell's thread,
with that thread's event loop running (7.3), or on the main shell unless the comm last
published in answer to a subshell message, in which case the next message goes to that
subshell (7.4). So ``ChatWidget._on_msg`` may run on another thread than the one that made the
widget and streams its answers: a "send" would start the answer on the subshell's loop, and a
"hello" would render the live answer while the main thread is changing it.

``HomeThread`` remembers the thread and the running loop the widget was made on and hands a
call that arrives on another thread to that loop (``call_soon_threadsafe``, in order). With no
loop (a plain script) everything runs where it is called, as before.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from .kernelfix import install_idle_race_fix


class HomeThread:
    _home_thread: int
    _home_loop: asyncio.AbstractEventLoop | None

    def remember_home(self) -> None:
        """Call from ``__init__``: the thread (and its running loop, if any) the widget lives on.
        The kernel gets the mend for ipykernel 7.4.0's idle race too (kernelfix.py)."""
        install_idle_race_fix()
        self._home_thread = threading.get_ident()
        try:
            self._home_loop = asyncio.get_running_loop()
        except RuntimeError:
            self._home_loop = None

    def adopt_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Made with no loop running: the first loop that streams an answer becomes home."""
        if getattr(self, "_home_loop", None) is None:
            self._home_loop, self._home_thread = loop, threading.get_ident()

    def away_from_home(self, fn: Callable[..., Any], *args: Any) -> bool:
        """On another thread with a home loop: schedule ``fn(*args)`` there and return True."""
        loop = getattr(self, "_home_loop", None)
        if loop is None or threading.get_ident() == self._home_thread or loop.is_closed():
            return False
        loop.call_soon_threadsafe(fn, *args)
        return True
