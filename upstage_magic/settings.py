"""One settings object for the magic, the chat widget and batch runs, and the API key. Pure.

:class:`Settings` holds what shapes a request and its display: model, base URL, timeout,
system prompt, sampling options, reasoning effort, format, history and display options.
There is one per kernel (:func:`default_settings`): ``%config UpstageMagics.*`` writes it
(the magic's traits are linked to it), the chat widget reads it at every send and writes
it from its settings panel. Values are validated when set (traitlets ``@validate``), so a
bad ``%config`` fails at once saying what is allowed. Environment variables
(``UPSTAGE_MODEL``, ``UPSTAGE_BASE_URL``/``UPSTAGE_API_BASE``) fill what is left empty, at
request time (:mod:`request` decides).

The API key is never a setting: :func:`set_api_key` keeps one in memory only (never on
disk, never echoed); it wins over ``UPSTAGE_API_KEY``. Environment variables are read on
every call, so changing ``os.environ`` in a running kernel takes effect at once.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

from traitlets import Bool, Enum, Float, HasTraits, Int, TraitError, Unicode, validate

from .errors import InvalidAPIKeyError, UpstageError
from .formats import FORMATS
from .models import ALL_EFFORTS, DEFAULT_MODEL
from .secrets import Secret, SecretURL, display_url, register_secret

__all__ = [
    "DEFAULT_BASE_URL",
    "MIN_UPDATE_INTERVAL",
    "Settings",
    "SettingsTraits",
    "check_api_key",
    "default_settings",
    "data_dir",
    "env_model",
    "get_api_key",
    "get_base_url",
    "resolve_base_url",
    "set_api_key",
]

DEFAULT_BASE_URL = "https://api.upstage.ai/v1"
#: Floor for ``update_interval``: below it the display would re-render for nothing.
MIN_UPDATE_INTERVAL = 0.02


class SettingsTraits(HasTraits):
    """The trait declarations shared by :class:`Settings` and ``UpstageMagics``."""

    model = Unicode("", help=f"Model id or alias; empty = env UPSTAGE_MODEL or the default ({DEFAULT_MODEL})."
                    ).tag(config=True)
    base_url = Unicode("", help="API base URL; empty = env UPSTAGE_BASE_URL / UPSTAGE_API_BASE or "
                                f"{DEFAULT_BASE_URL}.").tag(config=True)
    timeout = Float(None, allow_none=True,
                    help="Seconds to wait for the server between reads (None: provider default: "
                         "60 s idle while streaming, 300 s without streaming).").tag(config=True)
    system_prompt = Unicode("", help="System prompt of the conversation (empty: none).").tag(config=True)
    temperature = Float(None, allow_none=True, help="Sampling temperature, 0-2 (None: server default).").tag(config=True)
    top_p = Float(None, allow_none=True, help="Nucleus sampling, 0-1 (None: server default).").tag(config=True)
    max_tokens = Int(None, allow_none=True, help="Maximum answer tokens, at least 1 (None: server default)."
                     ).tag(config=True)
    reasoning_effort = Unicode(None, allow_none=True,
                               help="Reasoning effort: " + ", ".join(ALL_EFFORTS)
                                    + " (None: the model's default).").tag(config=True)
    max_history = Int(20, help="Previous turns sent with each prompt.").tag(config=True)
    update_interval = Float(0.1, help=f"Seconds between display updates while streaming "
                                      f"(at least {MIN_UPDATE_INTERVAL}).").tag(config=True)
    format = Enum(list(FORMATS), default_value="markdown", help="Default output format.").tag(config=True)
    stream = Bool(True, help="Stream answers (False: show the whole answer at once).").tag(config=True)
    footer = Bool(True, help="Show the one-line footer (model, tokens, speed) under answers.").tag(config=True)
    load_images = Bool(False, help="Show remote images in answers (off: they show as links, so an "
                                   "answer cannot make the browser fetch a URL).").tag(config=True)
    log_path = Unicode(None, allow_none=True,
                       help="The conversation log (SQLite): None = logs.db in the data directory "
                            "($UPSTAGE_MAGIC_HOME, else ~/.local/share/upstage-magic); '' turns the log off."
                       ).tag(config=True)
    display_mode = Enum(["auto", "rich", "plain"], default_value="auto",
                        help="rich = notebook outputs updated in place; plain = text to stdout; "
                             "auto = rich in a Jupyter kernel, plain otherwise.").tag(config=True)
    replay = Bool(False, help="Answer a request that was answered before from its record (no request sent; "
                              "marked replayed). Also UPSTAGE_MAGIC_REPLAY=1; --fresh asks again.").tag(config=True)
    history_tokens = Int(4000, allow_none=True,
                         help="Most estimated tokens of earlier turns sent with a question (newest first; "
                              "None: no budget, 0: none). max_history still caps the turns.").tag(config=True)

    @validate("history_tokens")
    def _check_history_tokens(self, proposal: Any) -> int | None:
        value = proposal["value"]
        if value is not None and value < 0:
            raise TraitError(f"history_tokens must be a number of tokens >= 0 (or None), not {value!r}.")
        return value

    @validate("update_interval")
    def _check_interval(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value != value or value < 0:  # NaN or negative
            raise TraitError(f"update_interval must be a number of seconds >= 0, not {value!r}.")
        return max(value, MIN_UPDATE_INTERVAL)

    @validate("reasoning_effort")
    def _check_effort(self, proposal: Any) -> str | None:
        value = proposal["value"]
        if value in (None, ""):
            return None
        value = str(value).strip().lower()
        if value not in ALL_EFFORTS:
            raise TraitError(f"reasoning_effort {value!r} is not known; use one of "
                             f"{', '.join(ALL_EFFORTS)} (or None for the model's default).")
        return value

    @validate("base_url")
    def _check_base_url(self, proposal: Any) -> str:
        value = str(proposal["value"] or "").strip()
        if _has_credentials(value):
            del value, proposal  # verbose tracebacks show frame locals
            raise TraitError("base_url contains a user name or password; credentials in the URL are not "
                             "supported. Remove the 'user:password@' part (the API key goes in "
                             "UPSTAGE_API_KEY; a proxy login goes in HTTPS_PROXY).")
        return value

    @validate("temperature", "top_p", "max_tokens", "max_history", "timeout")
    def _check_range(self, proposal: Any) -> Any:
        name, value = proposal["trait"].name, proposal["value"]
        if value is None and name != "max_history":
            return None
        low, high, what = _RANGES[name]
        if not (low <= value <= high) or (name == "timeout" and value == 0):
            raise TraitError(f"{name} must be {what}, not {value!r}.")
        return value


_RANGES: dict[str, tuple[float, float, str]] = {
    "temperature": (0.0, 2.0, "between 0 and 2"),
    "top_p": (0.0, 1.0, "between 0 and 1"),
    "max_tokens": (1, float("inf"), "a whole number of tokens >= 1 (or None for the server's default)"),
    "max_history": (0, float("inf"), ">= 0"),
    "timeout": (0.0, float("inf"), "a number of seconds > 0 (or None)"),
}


class Settings(SettingsTraits):
    """The kernel's settings (see the module docstring)."""

    def __repr__(self) -> str:
        return f"<Settings model={self.model or '(default)'!r} format={self.format!r}>"


_DEFAULT: Settings | None = None
_LOCK = threading.Lock()


def default_settings() -> Settings:
    """The process's (= kernel's) settings, created on first use."""
    global _DEFAULT
    with _LOCK:
        if _DEFAULT is None:
            _DEFAULT = Settings()
        return _DEFAULT


# ----------------------------------------------------------------------- environment


def env_model(default: str = DEFAULT_MODEL) -> str:
    """Env ``UPSTAGE_MODEL`` (read on every call), else ``default`` (:data:`models.DEFAULT_MODEL`)."""
    return os.environ.get("UPSTAGE_MODEL", "").strip() or default


def data_dir() -> Path:
    """Where the conversation log and the answer cache live: ``$UPSTAGE_MAGIC_HOME``, else
    ``$XDG_DATA_HOME/upstage-magic``, else ``%LOCALAPPDATA%\\upstage-magic`` on Windows,
    else ``~/.local/share/upstage-magic``."""
    home = os.environ.get("UPSTAGE_MAGIC_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    if xdg:
        return Path(xdg).expanduser() / "upstage-magic"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "upstage-magic"
    return Path.home() / ".local" / "share" / "upstage-magic"


_api_key: Secret | None = None


def check_api_key(key: str, *, source: str = "The API key") -> Secret:
    """``key`` without surrounding whitespace, as a ``Secret``; refuse one that cannot be a key.

    A key with whitespace or a control character inside (a line break picked up while
    copying, two keys pasted together) raises ``InvalidAPIKeyError``, whose message never
    shows the key. ``source`` names where the key came from, for that message.
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
    """Set (or with ``None``/"" clear) the in-memory API key; it is registered for masking."""
    global _api_key
    key = Secret(key) if key else None  # masked in this frame's locals
    _api_key = check_api_key(key, source="The key given") if key and key.strip() else None


def get_api_key() -> Secret | None:
    """The in-memory key, else env ``UPSTAGE_API_KEY``, else ``None`` (InvalidAPIKeyError if malformed)."""
    if _api_key:
        return _api_key
    env = Secret(os.environ.get("UPSTAGE_API_KEY", ""))  # masked in this frame's locals
    if env.strip():
        return check_api_key(env, source="UPSTAGE_API_KEY")
    return None


def get_base_url() -> str:
    """Env ``UPSTAGE_BASE_URL`` (else ``UPSTAGE_API_BASE``) without a trailing slash, else the default.

    A URL with a user name or password raises ``UpstageError`` here already, so it is never
    returned (printed, shown in a config listing) nor sent.
    """
    url = os.environ.get("UPSTAGE_BASE_URL", "").strip() or os.environ.get("UPSTAGE_API_BASE", "").strip()
    url = (url or DEFAULT_BASE_URL).rstrip("/")
    if _has_credentials(url):
        url = SecretURL(url)  # verbose tracebacks show frame locals: only a masked repr stays
        _refuse_credentials(url)
    return url


def resolve_base_url(base_url: str | None = None) -> str:
    """The base URL requests go to: ``base_url`` if given, else :func:`get_base_url`.

    A trailing slash and a trailing ``/chat/completions`` (a whole endpoint given as the
    base) are removed; ``https://api.upstage.ai/v1/solar`` (the older base) is kept as is.
    A URL with a user name or password raises ``UpstageError`` (never sent nor shown).
    """
    url = (base_url.strip() if base_url else "") or get_base_url()
    url = url.rstrip("/").removesuffix("/chat/completions")
    if _has_credentials(url):
        del base_url  # only the masked URL may stay in a frame: verbose tracebacks show locals
        url = SecretURL(url)
        _refuse_credentials(url)
    return url


def _refuse_credentials(url: str) -> None:
    """Raise the error for a base URL with credentials (only the cleaned URL is shown)."""
    shown = display_url(url)
    del url  # verbose tracebacks show frame locals
    raise UpstageError(
        f"The base URL contains a user name or password ({shown}); "
        "credentials in the URL are not supported, and were not sent.",
        hint="Remove the 'user:password@' part from UPSTAGE_BASE_URL / base_url=...; "
        "the API key goes in UPSTAGE_API_KEY (for a proxy that needs a login, use "
        "HTTPS_PROXY or proxy=...).",
    )


def _has_credentials(url: str) -> bool:
    """Whether ``url`` has a user:password part (any ``@``); if so its parts become secrets."""
    if "@" not in url:
        return False
    userinfo = url.partition("://")[2].rpartition("@")[0] or url.rpartition("@")[0]
    register_secret(userinfo)
    register_secret(userinfo.partition(":")[2])
    return True
