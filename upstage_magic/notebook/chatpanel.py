"""The chat widget as a panel people keep open: a queue for questions sent while an answer
streams, an undo for New chat, and the JupyterLab side panel (``sidecar``).

:class:`PanelMixin` is mixed into :class:`~upstage_magic.notebook.widget.ChatWidget` (which
declares the synced traits ``queued``, ``undo_turns``, ``side_open``, ``want_side``).

Busy sends are **queued**, not refused: a question sent while an answer streams (in this
widget or, for a shared conversation, in a ``%%upstage`` cell) is shown as queued with a
cancel button and sent when the answer ends; nothing red for normal use.

The side panel uses ``sidecar.Sidecar`` (jupyter-widgets' package for exactly this): the
widget is shown in it as a second view of the same model. Only JupyterLab has the side
area; the front end tells which host it runs in (``chat.js``: a ``.jp-LabShell`` in the page
is JupyterLab; Notebook 7's ``.jp-NotebookShell``, VS Code's webview and the classic page
are not), and elsewhere the chat stays inline with one quiet line saying why.
"""
from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from ..session import plural

__all__ = ["MAX_QUEUED", "PanelMixin", "sidecar_available"]

#: Questions waiting at most (a longer queue is a stuck key, not a plan).
MAX_QUEUED = 10


def sidecar_available() -> bool:
    """True when the ``sidecar`` package is installed (its JupyterLab extension comes with it)."""
    return importlib.util.find_spec("sidecar") is not None


class PanelMixin:
    """Queue, undo and side panel for :class:`ChatWidget` (see the module docstring)."""

    queued: list[dict[str, Any]]
    undo_turns: int
    side_open: bool
    want_side: bool
    session: Any
    status: str
    _undo: list[Any] | None = None
    _sidecar: Any = None
    _next_queue_id: int = 0

    # ------------------------------------------------------------------ queue
    def session_busy(self) -> bool:
        """An answer streams in this widget or (shared conversation) elsewhere."""
        active = self.session.active
        return bool(getattr(self, "streaming", False)) or (active is not None and active.turn is None)

    def enqueue(self, text: str) -> dict[str, Any]:
        """Keep ``text`` to send when the answer in progress ends; returns the queued entry."""
        if not text.strip():
            raise ValueError("Type a question first.")
        if len(self.queued) >= MAX_QUEUED:
            raise ValueError(f"{MAX_QUEUED} questions are already waiting: cancel one, or wait.")
        self._next_queue_id += 1
        entry = {"id": self._next_queue_id, "text": text}
        self.queued = [*self.queued, entry]
        self.status = f"streaming… · {plural(len(self.queued), 'question')} queued"
        return entry

    def unqueue(self, qid: Any) -> None:
        self.queued = [q for q in self.queued if q["id"] != qid]
        if self.session_busy():
            self.status = "streaming…" + (f" · {plural(len(self.queued), 'question')} queued" if self.queued else "")

    def send_queued_soon(self) -> None:
        """After an answer ends: send the next queued question (once the task is done)."""
        if not self.queued:
            return
        try:
            asyncio.get_running_loop().call_soon(self._send_next)
        except RuntimeError:
            pass  # no loop: the queue waits for the next send

    def _send_next(self) -> None:
        if not self.queued or self.session_busy():
            return
        first, rest = self.queued[0], self.queued[1:]
        self.queued = rest
        self.send(first["text"])  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ undo
    def remember_for_undo(self) -> None:
        """Before New chat: keep the turns so the chat can be brought back."""
        turns = list(self.session.turns)
        self._undo = turns or None
        self.undo_turns = len(turns)
        self.queued = []

    def undo_new_chat(self) -> None:
        """Bring back the chat New chat cleared (while nothing was asked since)."""
        saved, self._undo = self._undo, None
        self.undo_turns = 0
        if saved and not self.session.turns and not self.session_busy():
            self.session.load_turns(saved)
            self.status = f"chat restored · {plural(len(saved), 'turn')}"

    def forget_undo(self) -> None:
        if self._undo is not None or self.undo_turns:
            self._undo = None
            self.undo_turns = 0

    # ------------------------------------------------------------------ side panel
    def open_side(self, *, title: str = "Solar chat") -> str:
        """Show this chat in JupyterLab's side area (a ``sidecar.Sidecar``); returns what happened."""
        if not sidecar_available():
            return "the side panel needs the sidecar package: pip install sidecar, then reload JupyterLab"
        from sidecar import Sidecar  # noqa: PLC0415

        if self._sidecar is not None:  # open again (the user may have closed the panel)
            self._sidecar.close()
        self._sidecar = Sidecar(title=title)
        self._sidecar.append_display_data(self)
        return "opened"

    def dispatch_panel(self, kind: Any, msg: dict[str, Any]) -> bool:
        """The panel's front-end messages; False when ``kind`` is not one of them."""
        if kind == "unqueue":
            self.unqueue(msg.get("qid"))
        elif kind == "undo":
            self.undo_new_chat()
        elif kind == "side":
            result = self.open_side()
            self._reply({"type": "side", "ok": result == "opened", "why": result})  # type: ignore[attr-defined]
        elif kind == "where":
            if msg.get("side"):
                self.side_open = True
        else:
            return False
        return True
