"""``--dry-run``: show exactly what would be sent, never the key, with a token estimate.

Pure module. :func:`describe_request` turns the role messages and request options into a
plain-text report; :func:`public_options` drops key-like entries from options (also used
by the conversation log).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from . import settings
from .context import estimate_tokens
from .errors import mask_secrets

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "describe_request", "estimate_request_tokens", "public_options"]

#: Tokens a chat template adds per message (role markers); an estimate.
MESSAGE_OVERHEAD_TOKENS = 4
_SECRET_WORDS = ("key", "secret", "password", "authorization", "headers", "cookie", "auth")


def public_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` without None values and without key-like entries (``api_key``, ``headers``)."""
    out: dict[str, Any] = {}
    for k, v in (options or {}).items():
        low = str(k).lower()
        if v is None or any(word in low for word in _SECRET_WORDS):
            continue
        out[str(k)] = v
    return out


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False, default=str, indent=1)


def estimate_request_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Estimated prompt tokens: each message's content (``context.estimate_tokens``) + overhead."""
    return sum(estimate_tokens(_content_text(m.get("content", ""))) + MESSAGE_OVERHEAD_TOKENS
               for m in messages)


def describe_request(
    messages: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any] | None = None,
    *,
    model: str | None = None,
) -> str:
    """A plain-text report of a request that was not sent.

    Args:
        messages: the role messages exactly as they would be sent.
        options: request options (temperature, max_tokens, stream, ...); key-like entries
            are left out.
        model: the model id (shown first; else ``options["model"]``).

    Returns:
        ``Dry run: nothing was sent.``, the model, the estimated prompt tokens, the options
        as JSON, then every message under a ``── role ──`` rule. Registered secrets (and the
        ``UPSTAGE_API_KEY`` value) are masked.
    """
    settings.get_api_key()  # registers an env-var key so mask_secrets catches it
    opts = public_options(options)
    model = model or opts.pop("model", None)
    opts.pop("messages", None)
    tokens = estimate_request_tokens(messages)
    lines = [
        "Dry run: nothing was sent.",
        (f"model: {model or '(default)'} · {len(messages)} message{'s' if len(messages) != 1 else ''}"
         f" · ~{tokens:,} prompt tokens (estimate)"),
        "options: " + json.dumps(opts, ensure_ascii=False, default=str, sort_keys=True),
    ]
    for m in messages:
        lines += ["", f"── {m.get('role', '?')} ──", _content_text(m.get("content", ""))]
    return mask_secrets("\n".join(lines))
