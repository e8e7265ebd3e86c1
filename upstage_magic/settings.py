"""Process-wide settings: API key, base URL, default model. Pure and tiny.

The key set here lives in memory only (never written to disk, never echoed); it wins over
the ``UPSTAGE_API_KEY`` environment variable. Environment variables are read on every call,
so changing ``os.environ`` in a running kernel takes effect at once.
"""
from __future__ import annotations

import os

from .errors import InvalidAPIKeyError, UpstageError, display_url, register_secret

__all__ = [
    "Secret",
    "SecretURL",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "set_api_key",
    "get_api_key",
    "get_base_url",
    "resolve_base_url",
    "check_api_key",
    "get_default_model",
]

DEFAULT_BASE_URL = "https://api.upstage.ai/v1"
# Upstage's current flagship (2026-08), what Upstage's own docs use (see UPSTAGE_API.md);
# env UPSTAGE_MODEL overrides it.
DEFAULT_MODEL = "solar-pro4"


class Secret(str):
    """An API key: a normal ``str`` (headers are built from it) whose repr is masked.

    Verbose tracebacks (IPython ``%xmode Verbose``, pytest ``-l``) show frame locals by
    repr, so every frame holding a key shows ``'***'`` instead.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


_api_key: Secret | None = None


def check_api_key(key: str, *, source: str = "The API key") -> Secret:
    """``key`` without surrounding whitespace, as a ``Secret``; refuse one that cannot be a key.

    A key with whitespace or a control character inside (a line break picked up while
    copying, two keys pasted together) raises ``InvalidAPIKeyError``, whose message
    never shows the key. ``source`` names where the key came from, for that message.
    """
    key = Secret(key.strip())  # masked in this frame's locals (verbose tracebacks)
    register_secret(key)
    bad = next((i for i, ch in enumerate(key) if ch.isspace() or not ch.isprintable()), None)
    if bad is not None:
        what = "a line break" if key[bad] in "\r\n\u2028\u2029\x85" else (
            "a space" if key[bad].isspace() else "a control character")
        raise InvalidAPIKeyError(
            f"{source} contains {what} (character {bad + 1} of {len(key)}), so it cannot be "
            "a valid key; it was not used."
        )
    return key


def set_api_key(key: str | None) -> None:
    """Set (or with ``None``/"" clear) the in-memory API key; it is registered for redaction.

    Raises ``InvalidAPIKeyError`` (nothing changes) for a key with whitespace or control
    characters inside.
    """
    global _api_key
    key = Secret(key) if key else None  # masked in this frame's locals
    _api_key = check_api_key(key, source="The key given") if key and key.strip() else None


def get_api_key() -> Secret | None:
    """The in-memory key, else env ``UPSTAGE_API_KEY``, else ``None``.

    Raises ``InvalidAPIKeyError`` if the environment's key has whitespace or control
    characters inside.
    """
    if _api_key:
        return _api_key
    env = Secret(os.environ.get("UPSTAGE_API_KEY", ""))  # masked in this frame's locals
    if env.strip():
        return check_api_key(env, source="UPSTAGE_API_KEY")
    return None


def get_base_url() -> str:
    """Env ``UPSTAGE_BASE_URL`` (else ``UPSTAGE_API_BASE``, the name langchain-upstage and
    llama-index read), without a trailing slash, else the Upstage default.

    A URL with a user name or password raises ``UpstageError`` here already, so it is
    never returned (printed, shown in a config listing) nor sent.
    """
    url = os.environ.get("UPSTAGE_BASE_URL", "").strip() or os.environ.get("UPSTAGE_API_BASE", "").strip()
    url = (url or DEFAULT_BASE_URL).rstrip("/")
    if _has_credentials(url):
        url = SecretURL(url)  # verbose tracebacks show frame locals: only a masked repr stays
        _refuse_credentials(url)
    return url


def _refuse_credentials(url: str) -> None:
    """Raise the error for a base URL with credentials (only the cleaned URL is kept)."""
    shown = display_url(url)
    del url  # verbose tracebacks show frame locals
    raise UpstageError(
        f"The base URL contains a user name or password ({shown}); "
        "credentials in the URL are not supported, and were not sent.",
        hint="Remove the 'user:password@' part from UPSTAGE_BASE_URL / base_url=...; "
        "the API key goes in UPSTAGE_API_KEY (for a proxy that needs a login, use "
        "HTTPS_PROXY or proxy=...).",
    )


def resolve_base_url(base_url: str | None = None) -> str:
    """The base URL requests go to: ``base_url`` if given, else :func:`get_base_url`.

    A trailing slash and a trailing ``/chat/completions`` (a whole endpoint given as the
    base) are removed; ``https://api.upstage.ai/v1/solar`` (the older base) is kept as is.
    A URL with a user name or password raises ``UpstageError`` (credentials in a URL are
    never sent nor shown; the key goes in UPSTAGE_API_KEY).
    """
    url = (base_url.strip() if base_url else "") or get_base_url()
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    if _has_credentials(url):
        # Only the cleaned URL may stay in a frame: verbose tracebacks show frame locals.
        del base_url
        url = SecretURL(url)
        _refuse_credentials(url)
    return url


class SecretURL(str):
    """A URL that may hold credentials: a normal ``str`` whose repr hides them."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(display_url(str(self)))


def _has_credentials(url: str) -> bool:
    """Whether ``url`` has a user:password part (any ``@``); if so its parts become secrets."""
    if "@" not in url:
        return False
    userinfo = url.partition("://")[2].rpartition("@")[0] or url.rpartition("@")[0]
    register_secret(userinfo)
    register_secret(userinfo.partition(":")[2])
    return True


def get_default_model() -> str:
    """Env ``UPSTAGE_MODEL``, else the built-in default (``DEFAULT_MODEL``)."""
    return os.environ.get("UPSTAGE_MODEL", "").strip() or DEFAULT_MODEL
