"""upstage-magic: stream Upstage Solar chat models into Jupyter.

``%load_ext upstage_magic`` registers ``%%upstage`` / ``%upstage``. The public names below
load their modules (aiohttp, ipywidgets, markdown-it-py) only when first used.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["ChatSession", "ChatWidget", "Settings", "Upstage", "abatch", "batch", "load_ipython_extension",
           "set_api_key", "unload_ipython_extension"]

_LAZY = {
    "Upstage": ("upstage_magic.providers", "Upstage"),
    "ChatSession": ("upstage_magic.session", "ChatSession"),
    "ChatWidget": ("upstage_magic.notebook.widget", "ChatWidget"),
    "Settings": ("upstage_magic.settings", "Settings"),
    "set_api_key": ("upstage_magic.settings", "set_api_key"),
    "batch": ("upstage_magic.notebook.batch", "batch"),
    "abatch": ("upstage_magic.notebook.batch", "abatch"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'upstage_magic' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext upstage_magic``."""
    from .notebook.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext`` / ``%reload_ext``."""
    from .notebook.magics import unload_ipython_extension as _unload

    _unload(ipython)
