"""Chat providers. ``Upstage`` streams Upstage Solar models (imports aiohttp)."""
from __future__ import annotations

from .base import AsyncGeneratorProvider, AsyncResult, Messages, ProviderModelMixin, format_prompt
from .upstage import Upstage

__all__ = [
    "Upstage",
    "AsyncGeneratorProvider",
    "ProviderModelMixin",
    "format_prompt",
    "Messages",
    "AsyncResult",
]
