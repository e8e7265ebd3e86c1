"""The chat widget's transcript, sent by the turn instead of as a whole.

ipywidgets re-sends a trait's whole value whenever it changes, so a ``transcript`` trait
synced the usual way costs the size of the chat at the end of every turn (up to
``MAX_SHOWN_CHARS`` of HTML, parsed again by every view). Instead the kernel sends one
``turns`` message per change: the entries that are new, and the ids in order (at most
``MAX_SHOWN`` small ints). The front end (``initialize`` in ``chat.js``) applies it to the
model's own ``transcript`` attribute, locally (no ``save_changes``), so every view updates
only what changed and JupyterLab's "save widget state" still writes the whole transcript.
The full list still goes out with ``send_state()`` (comm open, ``request_state`` after a page
reload, a view's ``resync`` when it misses an entry). While no view has said hello (nbclient,
papermill: no front end runs; or a view whose hello waits behind the running cell) the whole list
also goes once when the cell ends (:func:`send_whole_when_cell_ends`), so an executed notebook's
saved widget state holds the chat: one message per cell, never one per turn.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["send_turn_delta", "send_whole_when_cell_ends", "turn_delta"]

_pending: weakref.WeakSet[Any] = weakref.WeakSet()


def turn_delta(old_ids: list[int], entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``turns`` message taking a view from ``old_ids`` to ``entries`` (None: no change)."""
    ids = [e["id"] for e in entries]
    if ids == old_ids:
        return None
    known = set(old_ids)
    return {"type": "turns", "ids": ids, "add": [e for e in entries if e["id"] not in known]}


def send_turn_delta(send: Callable[[dict[str, Any]], None], old_ids: list[int],
                    entries: list[dict[str, Any]]) -> None:
    """Send the delta with ``send`` (the widget's custom messages), if anything changed."""
    msg = turn_delta(old_ids, entries)
    if msg is not None:
        send(msg)


def send_whole_when_cell_ends(widget: Any, still_needed: Callable[[], bool]) -> None:
    """Send ``widget``'s whole transcript once when the running cell ends, if ``still_needed()``
    then (no view said hello). Outside IPython (no cells) it is sent now."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        get_ipython = None
    ip = get_ipython() if get_ipython is not None else None
    if ip is None:
        if still_needed():
            widget.send_state("transcript")
        return
    if widget in _pending:
        return
    _pending.add(widget)

    def flush(*_args: Any) -> None:
        ip.events.unregister("post_execute", flush)
        _pending.discard(widget)
        if still_needed():
            widget.send_state("transcript")

    ip.events.register("post_execute", flush)
