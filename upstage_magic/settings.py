"""Process-wide settings: API key, base URL, default model. Pure and tiny.

The key set here lives in memory only (never written to disk, never echoed); it wins over
the ``UPSTAGE_API_KEY`` environment variable. Environment variables are read on every call,
so changing ``os.environ`` in a running kernel takes effect at once.
"""
from __future__ import annotations

import os

from .errors import register_secret

__all__ = [
    "Secret",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "set_api_key",
    "get_api_key",
    "get_base_url",
    "get_default_model",
]

DEFAULT_BASE_URL = "https://api.upstage.ai/v1"
# A current, generally available model (128K context). solar-pro4 is newer but may not be
# enabled for every key yet; set UPSTAGE_MODEL=solar-pro4 to make it the default.
DEFAULT_MODEL = "solar-pro3"


class Secret(str):
    """An API key: a normal ``str`` (headers are built from it) whose repr is masked.

    Verbose tracebacks (IPython ``%xmode Verbose``, pytest ``-l``) show frame locals by
    repr, so every frame holding a key shows ``'***'`` instead.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


_api_key: Secret | None = None


def set_api_key(key: str | None) -> None:
    """Set (or with ``None``/"" clear) the in-memory API key; it is registered for redaction."""
    global _api_key
    key = key.strip() if key else None
    register_secret(key)
    _api_key = Secret(key) if key else None


def get_api_key() -> Secret | None:
    """The in-memory key, else env ``UPSTAGE_API_KEY``, else ``None``."""
    if _api_key:
        return _api_key
    env = os.environ.get("UPSTAGE_API_KEY", "").strip()
    if env:
        register_secret(env)
        return Secret(env)
    return None


def get_base_url() -> str:
    """Env ``UPSTAGE_BASE_URL`` (without a trailing slash), else the Upstage default."""
    url = os.environ.get("UPSTAGE_BASE_URL", "").strip()
    return (url or DEFAULT_BASE_URL).rstrip("/")


def get_default_model() -> str:
    """Env ``UPSTAGE_MODEL``, else the built-in default (``DEFAULT_MODEL``)."""
    return os.environ.get("UPSTAGE_MODEL", "").strip() or DEFAULT_MODEL
