"""Which notebook cell is running: the identity a re-run is recognised by.

JupyterLab 4 and Notebook 7 put the cell's id into the execute request's metadata
(``{"cellId": "<uuid>", ...}``); so does VS Code. ipykernel keeps that request as the shell
channel's parent (``kernel.get_parent("shell")``). Without one, the execution count names
the run: a re-run then adds a turn instead of replacing one.
"""
from __future__ import annotations

from typing import Any

__all__ = ["cell_id", "identity_note"]


def cell_id(shell: Any) -> str | None:
    """``"cell:<cellId>"`` of the running cell, else ``"run:<execution count>"``, else None."""
    kernel = getattr(shell, "kernel", None)
    parent: Any = None
    if kernel is not None and hasattr(kernel, "get_parent"):
        try:
            parent = kernel.get_parent("shell")
        except TypeError:  # ipykernel < 6 takes no channel
            parent = kernel.get_parent()
    metadata = (parent or {}).get("metadata") or {}
    cid = metadata.get("cellId") if isinstance(metadata, dict) else None
    if isinstance(cid, str) and cid.strip():
        return "cell:" + cid.strip()[:200]
    count = getattr(shell, "execution_count", None)
    return f"run:{count}" if isinstance(count, int) else None


def identity_note(turns: list[Any]) -> str:
    """What ``%upstage history`` says about how re-runs were recognised."""
    cells = [getattr(t, "cell", None) or "" for t in turns]
    if any(c.startswith("run:") for c in cells):
        return ("Some cells were identified by their run number (the front end sent no cell id): "
                "re-running those adds a turn instead of replacing one.")
    if any(c.startswith("cell:") for c in cells):
        return "Re-running a cell replaces its earlier turn (cells identified by the notebook's cell id)."
    return ""
