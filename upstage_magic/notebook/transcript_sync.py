"""The chat widget's transcript, sent by the turn instead of as a whole.

ipywidgets re-sends a trait's whole value whenever it changes, so a ``transcript`` trait
synced the usual way costs the size of the chat at the end of every turn (up to
``MAX_SHOWN_CHARS`` of HTML, parsed again by every view). Instead the kernel sends one
``turns`` message per change: the entries that are new, and the ids in order (at most
``MAX_SHOWN`` small ints). The front end (``initialize`` in ``chat.js``) applies it to the
model's own ``transcript`` attribute, locally (no ``save_changes``), so every view updates
only what changed and JupyterLab's "save widget state" still writes the whole transcript.
The full list still goes out with ``send_state()`` (comm open, ``request_state`` after a page
reload, a view's ``resync`` when it misses an entry, nbclient's saved state).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["send_turn_delta", "turn_delta"]


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
