"""Secrets: the one registry of keys and the one set of masks. Pure (stdlib only).

Every key the package sees is registered here (``register_secret``); every string that
came from a server, a stored turn or the notebook passes :func:`mask_secrets` (or
:func:`scrub` for nested values) before it is cut, shown, stored or returned. A text that
may end inside a key (a streamed prefix, a text cut to a length) also loses that key's
beginning: :func:`mask_partial`, and :func:`cut`, which masks *before* cutting.

- ``mask_secrets``: registered secrets only (conversation content: ordinary text such as
  ``group_by_category`` is left alone).
- ``redact``: that plus key-shaped tokens (``up_<20+ alnum>``, ``Bearer <token>``), for
  error and server texts.
- ``display_url``: a URL as it may be shown (no user:password, query or fragment).
- ``defang``: plain text we print, with non-http(s) ``scheme://`` broken visibly, so a
  front end's autolinker cannot turn server text into a live link.
- ``Secret`` / ``SecretURL``: ``str`` subclasses whose repr hides them (verbose
  tracebacks print frame locals by repr).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any

__all__ = [
    "Secret",
    "SecretURL",
    "cut",
    "defang",
    "display_url",
    "fingerprint",
    "mask_partial",
    "mask_secrets",
    "redact",
    "register_secret",
    "scrub",
    "secret_tail",
]

_SECRETS: set[str] = set()
# Upstage keys look like ``up_`` + ~30 alphanumerics, standing alone (not inside a word such
# as ``set_up_database``); also any "Bearer <token>" in error texts.
_KEY_PATTERNS = (
    re.compile(r"(?<![\w-])up_[A-Za-z0-9]{20,}(?![\w-])"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9_\-\.=]{4,}"),
)
#: A key's beginning shorter than this at the end of a text is dropped, longer is masked.
_MIN_SHOWN_PREFIX = 4


class Secret(str):
    """An API key: a normal ``str`` (headers are built from it) whose repr is masked."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class SecretURL(str):
    """A URL that may hold credentials: a normal ``str`` whose repr hides them."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(display_url(str(self)))


def register_secret(secret: str | None) -> None:
    """Remember a secret so every later mask removes it."""
    if secret and len(secret) >= 4:
        _SECRETS.add(str(secret))


def fingerprint(secret: str | None) -> str:
    """A short one-way digest of ``secret`` (to key caches by it without storing it)."""
    return hashlib.sha256((secret or "").encode()).hexdigest()[:16] if secret else ""


def _register_env_key() -> None:
    """The key in ``UPSTAGE_API_KEY`` is a secret even before any request used it."""
    key = os.environ.get("UPSTAGE_API_KEY", "").strip()
    if key and key not in _SECRETS:
        register_secret(key)


def mask_secrets(text: Any) -> str:
    """``str(text)`` with every registered secret (exact match) masked as ``***``."""
    s = str(text)
    _register_env_key()
    if not _SECRETS:
        return s
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in s:
            s = s.replace(secret, "***")
    return s


def redact(text: Any) -> str:
    """``mask_secrets(text)`` plus key-shaped tokens masked (for error and server texts)."""
    s = mask_secrets(text)
    s = _KEY_PATTERNS[0].sub("up_***", s)
    return _KEY_PATTERNS[1].sub(lambda m: m.group(1) + "***", s)


def secret_tail(text: str) -> int:
    """Length of the longest end of ``text`` that begins a registered secret (0 if none)."""
    best = 0
    _register_env_key()
    for secret in _SECRETS:
        for k in range(min(len(secret) - 1, len(text)), best, -1):
            if text.endswith(secret[:k]):
                best = k
                break
    return best


def mask_partial(text: Any, *, final: bool = False) -> str:
    """:func:`mask_secrets`, and a secret's beginning at the very end masked too.

    For text that may stop inside a key. While it streams (``final=False``) a beginning
    shorter than 4 characters is held back (the next delta tells); in a text that ended
    cut (``final=True``) only a beginning of 4 or more is masked: the rest is kept as is.
    """
    s = mask_secrets(text)
    k = secret_tail(s) if _SECRETS and s else 0
    if not k or (final and k < _MIN_SHOWN_PREFIX):
        return s
    return s[: len(s) - k] + ("***" if k >= _MIN_SHOWN_PREFIX else "")


def cut(text: Any, limit: int, *, more: str = "...", redacting: bool = True) -> str:
    """``text`` masked (``redact``, or ``mask_secrets``), then cut to ``limit`` characters.

    Masking comes first, so a key is never cut into a visible beginning; what is cut off
    is marked with ``more`` and a key's beginning left at the cut is masked as well.
    """
    s = redact(text) if redacting else mask_secrets(text)
    if len(s) <= limit:
        return s
    return mask_partial(s[:limit], final=True) + more


def scrub(value: Any, *, redacting: bool = False) -> Any:
    """A copy of ``value`` with every string inside masked (str, dict, list, tuple, dataclass).

    Frozen dataclasses (the stream events) are copied with their fields masked (nested
    values too); other values come back unchanged.
    """
    fn = redact if redacting else mask_secrets
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {scrub(k, redacting=redacting): scrub(v, redacting=redacting) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [scrub(v, redacting=redacting) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Every field, nested ones too (``Usage.raw`` is the server's own dict).
        changes = {f.name: new for f in dataclasses.fields(value) if f.init
                   and (new := scrub(old := getattr(value, f.name), redacting=redacting)) is not old}
        return dataclasses.replace(value, **changes) if changes else value
    return value


def display_url(url: str | None) -> str | None:
    """``url`` as it may be shown: no query string, fragment or user:password part.

    Conservative on odd input: everything up to the last ``@`` is dropped, so a password
    holding ``/``, ``?`` or ``#`` is never shown in part. ``None`` for an empty URL.
    """
    if not url:
        return None
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        scheme, rest = "", str(url)
    rest = rest.rpartition("@")[2]
    for mark in ("?", "#"):
        rest = rest.split(mark, 1)[0]
    return (scheme + sep + rest) or None


_LINKABLE = re.compile(r"(?i)(?<![a-z0-9+.\-])(?!https?:)([a-z][a-z0-9+.\-]*):(?=//)")


def defang(text: Any) -> str:
    """Plain text whose non-http(s) ``scheme:`` cannot become a link: ``javascript[:]...``.

    Front ends autolink URLs in text outputs (JupyterLab: any ``scheme://``). We print
    server text (errors, model ids) as plain text, so its schemes are broken visibly.
    ``http``/``https`` URLs and words followed by a colon (``Note: ...``) are left alone.
    """
    return _LINKABLE.sub(r"\1[:]", str(text))
