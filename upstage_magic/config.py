"""One settings object for the magic, the chat widget and batch runs.

:class:`Settings` holds what shapes a request and its display: model, base URL, timeout,
system prompt, sampling options, reasoning effort, format, history length and display
options. There is one per kernel (:func:`default_settings`). ``%config UpstageMagics.*``
writes it (the magic's traits are linked to it), the chat widget reads it at every send
and writes it from its settings panel, so a ``ChatWidget()`` made after ``%config`` uses
that config and later changes are seen by both. Environment variables (``UPSTAGE_MODEL``,
``UPSTAGE_BASE_URL``/``UPSTAGE_API_BASE``) fill what is left empty, at request time.

Values are validated when set (traitlets ``@validate``), so a bad ``%config`` fails at
once with a message that says what is allowed. The API key is never a setting (see
:mod:`settings`). Pure: traitlets only, no IPython, no aiohttp.
"""
from __future__ import annotations

import threading
from typing import Any

from traitlets import Bool, Enum, Float, HasTraits, Int, TraitError, Unicode, validate

__all__ = ["Settings", "SettingsTraits", "default_settings", "FORMATS", "REASONING_EFFORTS", "MIN_UPDATE_INTERVAL"]

FORMATS = ("markdown", "text", "code", "json")
#: Every effort any known model accepts; which model takes which is checked per model.
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
#: Floor for ``update_interval``: below it the display would re-render for nothing.
MIN_UPDATE_INTERVAL = 0.02


class SettingsTraits(HasTraits):
    """The trait declarations shared by :class:`Settings` and ``UpstageMagics``."""

    model = Unicode("", help="Model id or alias; empty = env UPSTAGE_MODEL or the default (solar-pro4).").tag(config=True)
    base_url = Unicode("", help="API base URL; empty = env UPSTAGE_BASE_URL / UPSTAGE_API_BASE or "
                                "https://api.upstage.ai/v1.").tag(config=True)
    timeout = Float(None, allow_none=True,
                    help="Seconds to wait for the server between reads (None: provider default: "
                         "60 s idle while streaming, 300 s without streaming).").tag(config=True)
    system_prompt = Unicode("", help="System prompt of the conversation (empty: none).").tag(config=True)
    temperature = Float(None, allow_none=True, help="Sampling temperature, 0-2 (None: server default).").tag(config=True)
    top_p = Float(None, allow_none=True, help="Nucleus sampling, 0-1 (None: server default).").tag(config=True)
    max_tokens = Int(None, allow_none=True, help="Maximum answer tokens (None: server default).").tag(config=True)
    reasoning_effort = Unicode(None, allow_none=True,
                               help="Reasoning effort: " + ", ".join(REASONING_EFFORTS)
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
                       help="The conversation log (SQLite): None = the default file under the user's data "
                            "directory ($UPSTAGE_MAGIC_HOME, else ~/.local/share/upstage-magic/logs.db); "
                            "'' turns the log off.").tag(config=True)
    display_mode = Enum(["auto", "rich", "plain"], default_value="auto",
                        help="rich = notebook outputs updated in place; plain = text to stdout; "
                             "auto = rich in a Jupyter kernel, plain otherwise.").tag(config=True)

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
        if value not in REASONING_EFFORTS:
            raise TraitError(f"reasoning_effort {value!r} is not known; use one of "
                             f"{', '.join(REASONING_EFFORTS)} (or None for the model's default).")
        return value

    @validate("base_url")
    def _check_base_url(self, proposal: Any) -> str:
        value = str(proposal["value"] or "").strip()
        if "@" in value.partition("://")[2].partition("/")[0]:
            from .errors import register_secret  # noqa: PLC0415

            userinfo = value.partition("://")[2].partition("/")[0].rpartition("@")[0]
            register_secret(userinfo)
            register_secret(userinfo.partition(":")[2])
            del value, proposal  # verbose tracebacks show frame locals
            raise TraitError("base_url contains a user name or password; credentials in the URL are not "
                             "supported. Remove the 'user:password@' part (the API key goes in "
                             "UPSTAGE_API_KEY; a proxy login goes in HTTPS_PROXY).")
        return value

    @validate("temperature")
    def _check_temperature(self, proposal: Any) -> float | None:
        value = proposal["value"]
        if value is not None and not 0.0 <= value <= 2.0:
            raise TraitError(f"temperature must be between 0 and 2, not {value!r}.")
        return value

    @validate("top_p")
    def _check_top_p(self, proposal: Any) -> float | None:
        value = proposal["value"]
        if value is not None and not 0.0 <= value <= 1.0:
            raise TraitError(f"top_p must be between 0 and 1, not {value!r}.")
        return value

    @validate("max_tokens")
    def _check_max_tokens(self, proposal: Any) -> int | None:
        value = proposal["value"]
        if value is not None and value < 1:
            return None  # 0 or less: the server's default (the widget's "0 = default")
        return value

    @validate("max_history")
    def _check_history(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 0:
            raise TraitError(f"max_history must be >= 0, not {value}.")
        return value

    @validate("timeout")
    def _check_timeout(self, proposal: Any) -> float | None:
        value = proposal["value"]
        if value is not None and not value > 0:
            raise TraitError(f"timeout must be a number of seconds > 0 (or None), not {value!r}.")
        return value


class Settings(SettingsTraits):
    """The kernel's settings (see the module docstring)."""

    def request_options(self, **overrides: Any) -> dict[str, Any]:
        """Keyword options for the provider: the set values, with ``overrides`` on top.

        ``None`` means "not set" (server or provider default) and is left out, so the
        request carries only what the user chose.
        """
        opts: dict[str, Any] = {}
        for name in ("temperature", "top_p", "max_tokens", "reasoning_effort", "timeout"):
            value = getattr(self, name)
            if value is not None:
                opts[name] = value
        if self.base_url:
            opts["base_url"] = self.base_url
        if not self.stream:
            opts["stream"] = False
        for name, value in overrides.items():
            if value is not None:
                opts[name] = value
        return opts

    def model_for(self, provider: Any, override: str | None = None) -> str:
        """The model id a request uses: ``override``, else ``model``, else the provider's default.

        Aliases resolve through the provider's ``get_model`` (an unknown name passes as given).
        """
        chosen = override or self.model or None
        get_model = getattr(provider, "get_model", None)
        if get_model is not None:
            return str(get_model(chosen))
        return chosen or str(getattr(provider, "default_model", ""))

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
