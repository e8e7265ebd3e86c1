"""Chat providers. ``Upstage`` streams Upstage Solar models.

aiohttp loads with ``Upstage`` (on first access), not with the base classes, so a
provider of your own built on ``providers.base`` does not pay for it.
"""
from __future__ import annotations

from typing import Any

from .base import (
    AsyncGeneratorProvider,
    AsyncResult,
    Messages,
    ProviderModelMixin,
    format_prompt,
)

__all__ = [
    "Upstage",
    "AsyncGeneratorProvider",
    "ProviderModelMixin",
    "format_prompt",
    "Messages",
    "AsyncResult",
]


def __getattr__(name: str) -> Any:
    if name == "Upstage":
        from .upstage import Upstage

        return Upstage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
