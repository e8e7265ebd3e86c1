"""Which earlier turns go with a question: the conversation follows the notebook. Pure.

:func:`history_for` is what :func:`~upstage_magic.request.plan` calls (the one place that
decides history). Its rules:

- **Re-runs replace.** A turn remembers the cell that asked it (``Turn.cell``; the magic
  reads the ``cellId`` JupyterLab 4 and Notebook 7 put into the execute request's metadata,
  else the run number). Re-running a cell sends the sendable turns recorded *before* that
  cell's earlier turn, and the new answer replaces the earlier one in place
  (``ChatSession``), so "Run all" twice gives the same conversation as once.
- **A token budget.** The newest turns are sent first while their estimated tokens fit in
  ``history_tokens`` (default 4000; ``max_history`` still caps the number of turns); older
  ones are left out, and :class:`HistoryInfo` says how many went and how many did not.
- **Stopped answers stay home.** A stopped (interrupted) partial answer is kept, shown and
  exported, but not sent back: the next, unrelated question must not continue it. Errors
  are not sent either.

:func:`context_full_hint` turns a streamed empty body after a large prompt into advice.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_HISTORY_TOKENS", "HistoryInfo", "context_full_hint", "history_for"]

DEFAULT_HISTORY_TOKENS = 4000
#: Above this many estimated prompt tokens an empty streamed body is blamed on the context.
_LARGE_PROMPT_TOKENS = 2000


@dataclass(frozen=True)
class HistoryInfo:
    """How much history went with one question (shown by the footer and ``%upstage history``)."""

    sent: int = 0
    """Earlier turns sent."""
    left_out: int = 0
    """Sendable earlier turns left out by the token budget."""
    tokens: int = 0
    """Estimated tokens of the history sent."""
    budget: int | None = None
    """The ``history_tokens`` budget in force (None: no budget)."""
    replaces: bool = False
    """This question re-runs a cell whose earlier turn it replaces."""

    def describe(self) -> str:
        """``"history: 3 turns (~900 tokens), 2 older left out (history_tokens 4000)"``."""
        text = f"history: {self.sent} turn{'s' if self.sent != 1 else ''} (~{self.tokens:,} tokens)"
        if self.left_out:
            text += f", {self.left_out} older left out (history_tokens {self.budget})"
        if self.replaces:
            text += "; re-run: replaces this cell's earlier turn"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "left_out": self.left_out, "tokens": self.tokens, "budget": self.budget,
                "replaces": self.replaces}


def _turn_messages(turn: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": turn.prompt}, {"role": "assistant", "content": turn.answer}]


def history_for(session: Any, *, cell: str | None = None,
                budget: int | None = DEFAULT_HISTORY_TOKENS) -> tuple[tuple[dict[str, Any], ...], HistoryInfo]:
    """The history messages to send for a question from ``cell``, and what was decided."""
    from .request import estimate_request_tokens  # noqa: PLC0415 - request imports this module

    turns: Sequence[Any] = session.sent_turns(before_cell=cell) if cell else session.sent_turns()
    replaces = bool(cell) and not str(cell).startswith("run:") and any(getattr(t, "cell", None) == cell for t in list(session.turns))
    chosen: list[Any] = []
    tokens = 0
    for turn in reversed(turns):
        cost = estimate_request_tokens(_turn_messages(turn))
        if budget is not None and tokens + cost > budget:
            break
        chosen.append(turn)
        tokens += cost
    chosen.reverse()
    messages: list[dict[str, Any]] = []
    for turn in chosen:
        messages += _turn_messages(turn)
    info = HistoryInfo(sent=len(chosen), left_out=len(turns) - len(chosen), tokens=tokens, budget=budget,
                       replaces=replaces)
    return tuple(messages), info


def context_full_hint(exc: BaseException, request: Any) -> str | None:
    """Advice for a streamed request that came back empty while its prompt was large (else None)."""
    from .errors import IncompleteStreamError  # noqa: PLC0415
    from .request import estimate_request_tokens  # noqa: PLC0415

    if not isinstance(exc, IncompleteStreamError) or "empty response" not in str(getattr(exc, "message", "")):
        return None
    messages = list(getattr(request, "messages", ()) or ())
    tokens = estimate_request_tokens(messages)
    if tokens < _LARGE_PROMPT_TOKENS and not getattr(request, "history", ()):
        return None
    return (f"The prompt was large (~{tokens:,} tokens, {len(messages)} messages): the context may be full. "
            "Try --no-history, --new, or a smaller history budget "
            "(%config UpstageMagics.history_tokens = 1000).")
