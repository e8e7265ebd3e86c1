"""The first sentence of an error, without transport internals (shared by retries and the error block). Pure."""
from __future__ import annotations

import re
from typing import Any

from .secrets import redact

__all__ = ["short_reason", "split_detail"]

_DETAIL = re.compile(r"\s*\(([^()]*(?:\[[^\]]*\][^()]*)?)\)\.?$")


def split_detail(message: str) -> tuple[str, str]:
    """``"Could not connect ... (host: [Errno 111] ...)."`` -> (the sentence, the parenthetical)."""
    m = _DETAIL.search(message)
    if m is None or len(m.group(1)) < 12:
        return message, ""
    return message[: m.start()].rstrip() + ".", m.group(1)


def short_reason(error: Any) -> str:
    """An error's message (masked) without its parenthetical transport detail."""
    return split_detail(redact(getattr(error, "message", error) or ""))[0]
