"""What we know about Upstage's chat models: names, status and reasoning controls. Pure.

The data comes from ``UPSTAGE_API.md`` (checked 2026-12). It is a fallback and a guide, never
a gate: the live ``GET /models`` list is the truth, and names this table does not know
(new models appear several times a year) pass through unchanged and unchecked.

Public API:

- ``DEFAULT_MODEL``: the model used when none is chosen (``"solar-pro4"``); ``ALIASES``:
  the only names resolved to another (``"solar"`` -> the default). Retired and legacy names
  are sent as written, with a notice; the server decides.
- ``KNOWN_MODELS``: every :class:`ModelInfo`, current first, then older, then retired.
- ``model_info(name)``: alias or dated id -> :class:`ModelInfo`, ``None`` when unknown.
- ``dated_id(name)``: the dated id the API answers with (``"solar-pro4-260806"``).
- ``check_effort(model, effort)``: raises :class:`ReasoningEffortError` (a ``ValueError``)
  naming the accepted values when the model does not take that ``reasoning_effort``.
- ``reasons(model, effort)``: whether the model reasons with that effort (``None``: unknown).
- ``effort_for_think(model, think)``: the ``reasoning_effort`` that ``--think`` /
  ``--no-think`` send for that model.
- ``retired_notice(model)``: a one-line notice naming the replacement, or ``None`` (the table).
- ``retired_on(model, base_url)``: that notice only where it is true: on Upstage's API, for a
  model its own live list (when asked) does not offer. Another server's models are its own.
- ``server_default(base_url)``: with no model chosen, the model a server that is not Upstage's
  offers in its own list (when it was asked), else ``None``; ``wants_server_list(base_url)``:
  whether that list is worth asking for (not Upstage's, not asked yet, no ``UPSTAGE_MODEL``).
- ``listed_model_ids()``: the ids a live ``GET /models`` returns today (the offline fallback).
- ``group_models(ids)``: a short grouped listing: aliases first, dated ids folded under them.
- ``fetch_models(provider, ...)``: the live list, cached per provider, server and key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALIASES",
    "ALL_EFFORTS",
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "ModelInfo",
    "ReasoningEffortError",
    "check_effort",
    "dated_id",
    "effort_for_think",
    "fetch_models",
    "group_models",
    "listed_model_ids",
    "model_info",
    "reasons",
    "retired_notice",
    "retired_on",
    "server_default",
    "wants_server_list",
]

#: The model used when none is chosen: Upstage's current flagship, used by its own docs.
DEFAULT_MODEL = "solar-pro4"

#: Every ``reasoning_effort`` value any current Upstage model accepts, weakest first.
ALL_EFFORTS: tuple[str, ...] = ("none", "minimal", "low", "medium", "high", "xhigh", "max")

Status = Literal["current", "older", "retired"]


@dataclass(frozen=True)
class ModelInfo:
    """One known model.

    ``efforts`` is ``None`` when the accepted ``reasoning_effort`` values are unknown (then
    nothing is checked); ``efforts_off`` are the accepted values that turn reasoning off.
    ``default_effort`` is what the server uses when no effort is sent (``None``: reasoning
    off, or unknown when ``reasons_by_default`` is ``None``). ``think`` / ``no_think`` are
    the efforts ``--think`` / ``--no-think`` send. Retired models have a ``replacement``.
    """

    id: str
    dated_id: str | None
    status: Status
    reasons_by_default: bool | None
    efforts: tuple[str, ...] | None
    efforts_off: tuple[str, ...] = ()
    default_effort: str | None = None
    think: str | None = None
    no_think: str | None = None
    replacement: str | None = None
    retired_on: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The alias and, when known, the dated id."""
        return (self.id, self.dated_id) if self.dated_id else (self.id,)


_CURRENT_EFFORTS = ALL_EFFORTS

KNOWN_MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("solar-pro4", "solar-pro4-260806", "current", False, _CURRENT_EFFORTS,
              efforts_off=("none", "minimal"), think="medium", no_think="none"),
    ModelInfo("solar-mini4", "solar-mini4-260922", "current", False, _CURRENT_EFFORTS,
              efforts_off=("none", "minimal"), think="medium", no_think="none"),
    ModelInfo("syn-pro", "syn-pro-251021", "current", None, None),
    ModelInfo("solar-pro3", "solar-pro3-260323", "older", True, ("low", "medium", "high"),
              efforts_off=("low",), default_effort="medium", think="medium", no_think="low"),
    ModelInfo("solar-pro2", "solar-pro2-251215", "retired", False, None,
              replacement="solar-pro4", retired_on="2026-10-30"),
    ModelInfo("solar-mini", None, "retired", False, None, replacement="solar-mini4"),
    ModelInfo("solar-pro", None, "retired", False, None, replacement="solar-pro4"),
    ModelInfo("solar-1-mini-chat", None, "retired", False, None, replacement="solar-mini4"),
    ModelInfo("solar-1-mini-chat-ja", None, "retired", False, None, replacement="solar-mini4"),
)

#: Names the client resolves to another id before sending (the provider's ``model_aliases``).
ALIASES: dict[str, str] = {"solar": DEFAULT_MODEL}

_BY_NAME: dict[str, ModelInfo] = {name: m for m in KNOWN_MODELS for name in m.names}
_DATED_RE = re.compile(r"^(?P<base>.+)-(?P<date>\d{6}|\d{8})$")


class ReasoningEffortError(ValueError):
    """A ``reasoning_effort`` value the chosen model does not accept."""


def model_info(name: object) -> ModelInfo | None:
    """The known model an alias or dated id names; ``None`` for unknown names (pass them through)."""
    if not isinstance(name, str):
        return None
    return _BY_NAME.get(name)


def dated_id(name: str) -> str:
    """The dated id the API answers with for ``name`` (unknown names come back unchanged)."""
    info = model_info(name)
    return info.dated_id if info is not None and info.dated_id else name


def _or_list(values: tuple[str, ...]) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def check_effort(model: str, effort: str | None) -> None:
    """Raise :class:`ReasoningEffortError` if ``model`` does not accept ``effort``.

    ``None`` (send no effort) is always fine; models whose accepted values are unknown
    (``syn-pro``, names this table does not know) are not checked.
    """
    if effort is None:
        return
    info = model_info(model)
    if info is None or info.efforts is None:
        return
    if effort in info.efforts:
        return
    off = f" ({_or_list(info.efforts_off)} turns reasoning off)" if info.efforts_off else ""
    raise ReasoningEffortError(
        f"{info.id} does not accept reasoning_effort {effort!r}; use {_or_list(info.efforts)}{off}."
    )


def reasons(model: str, effort: str | None = None) -> bool | None:
    """Whether ``model`` reasons when sent ``effort`` (``None``: no effort sent); ``None`` if unknown."""
    info = model_info(model)
    if info is None or info.efforts is None:
        return None if info is None or info.status != "retired" else False
    if effort is None:
        return info.reasons_by_default
    return effort in info.efforts and effort not in info.efforts_off


def effort_for_think(model: str, think: bool) -> str | None:
    """The ``reasoning_effort`` for ``--think`` (``think=True``) or ``--no-think`` on ``model``.

    solar-pro4 / solar-mini4: ``"medium"`` / ``"none"``; solar-pro3: ``"medium"`` / ``"low"``.
    For models whose controls are unknown, ``--think`` sends the widely accepted ``"medium"``
    and ``--no-think`` returns ``None``: there is no known way to turn reasoning off, so the
    caller should send no effort and say so.
    """
    info = model_info(model)
    if info is None or info.efforts is None:
        return "medium" if think else None
    return info.think if think else info.no_think


def retired_notice(model: str) -> str | None:
    """A one-line notice when ``model`` is retired, naming its replacement; else ``None``."""
    info = model_info(model)
    if info is None or info.status != "retired":
        return None
    when = f"was retired on {info.retired_on}" if info.retired_on else "is a legacy name Upstage no longer serves"
    return f"{model} {when}; use {info.replacement}."


def listed_model_ids() -> list[str]:
    """The ids ``GET /models`` returns today (current and older models; aliases, then dated ids)."""
    listed = [m for m in KNOWN_MODELS if m.status != "retired"]
    return [m.id for m in listed] + [m.dated_id for m in listed if m.dated_id]


def group_models(ids: list[str]) -> list[tuple[str, list[str]]]:
    """Group a model list for a short display: ``[(alias, [dated ids...]), ...]``.

    A dated id is folded under its alias when that alias is in ``ids`` too (known dated ids,
    and unknown ones shaped ``<alias>-YYMMDD``); otherwise it is an entry of its own. Known
    models come first in table order (current, older, retired), then the rest in the order
    given. Duplicates are dropped.
    """
    unique = list(dict.fromkeys(i for i in ids if isinstance(i, str) and i))
    present = set(unique)
    under: dict[str, list[str]] = {}
    heads: list[str] = []
    for name in unique:
        info = model_info(name)
        parent: str | None = None
        if info is not None and name == info.dated_id:
            parent = info.id
        else:
            match = _DATED_RE.match(name)
            if match and info is None:
                parent = match.group("base")
        if parent is not None and parent != name and parent in present:
            under.setdefault(parent, []).append(name)
        else:
            heads.append(name)
    rank = {m.id: i for i, m in enumerate(KNOWN_MODELS)}
    order = sorted(range(len(heads)), key=lambda i: (rank.get(heads[i], len(rank)), i))
    return [(heads[i], under.get(heads[i], [])) for i in order]


# ---------------------------------------------------------------------------- the live list

_LIVE: dict[tuple[int, str, str], list[str]] = {}
#: What each server's own list offers, by resolved base URL (filled by ``fetch_models``).
_OFFERED: dict[str, list[str]] = {}
#: Base URLs whose list was asked for (answered or not): not asked again on every cell.
_ASKED: set[str] = set()


def _base_key(base_url: str | None) -> str | None:
    """The resolved base URL (env default for ``None``), or ``None`` when it cannot be used."""
    from .errors import UpstageError  # noqa: PLC0415
    from .settings import resolve_base_url  # noqa: PLC0415

    try:
        return str(resolve_base_url(base_url or None))
    except UpstageError:
        return None


def _is_upstage(base: str | None) -> bool:
    from .errors import server_host  # noqa: PLC0415

    return server_host(base) is None


def retired_on(model: str, base_url: str | None = None) -> str | None:
    """:func:`retired_notice` where it is true: Upstage's API, and not offered by its live list.

    The table describes Upstage's server; a model another server (or Upstage's own list) offers
    is that server's, whatever its name (issue 21: a local server calling its model solar-pro2).
    """
    notice = retired_notice(model)
    if notice is None:
        return None
    base = _base_key(base_url)
    if base is None or not _is_upstage(base) or model in _OFFERED.get(base, ()):
        return None
    return notice


def wants_server_list(base_url: str | None = None) -> bool:
    """Whether to ask a server for its models before choosing a default: not Upstage's API,
    ``UPSTAGE_MODEL`` unset, not asked yet in this process."""
    from .settings import env_model  # noqa: PLC0415

    base = _base_key(base_url)
    return base is not None and not _is_upstage(base) and base not in _ASKED and not env_model("")


def server_default(base_url: str | None = None) -> str | None:
    """The model to use when none is chosen, on a server that is not Upstage's: the first one its
    own list offers, unless that list offers :data:`DEFAULT_MODEL` too. ``None``: keep the default
    (Upstage's API, ``UPSTAGE_MODEL`` set, the list unknown or empty)."""
    from .settings import env_model  # noqa: PLC0415

    base = _base_key(base_url)
    offered = _OFFERED.get(base or "") or []
    if base is None or _is_upstage(base) or env_model("") or not offered or DEFAULT_MODEL in offered:
        return None
    return offered[0]


async def fetch_models(provider: object, *, base_url: str | None = None, refresh: bool = False,
                       **options: object) -> tuple[list[str], str | None]:
    """The live model list of ``base_url`` (cached per provider, server and key), or the known list.

    Returns ``(ids, note)``: ``note`` is ``None`` for a live list, else one line saying the
    known list is shown and why. ``provider`` is anything with an async ``list_models``.
    The ids come from a server: registered secrets are masked in them.
    """
    from .secrets import cut, fingerprint, scrub  # noqa: PLC0415
    from .settings import get_api_key  # noqa: PLC0415

    try:
        who = fingerprint(str(options.get("api_key") or get_api_key() or ""))
    except Exception:  # noqa: BLE001 - a malformed key: the list call will say so
        who = ""
    key = (id(provider), base_url or "", who)
    if not refresh and key in _LIVE:
        return list(_LIVE[key]), None
    base = _base_key(base_url)
    if base is not None:
        _ASKED.add(base)
    known = [str(m) for m in getattr(provider, "models", None) or listed_model_ids()]
    list_models = getattr(provider, "list_models", None)
    if list_models is None:
        return known, "known list (this provider cannot list models)"
    try:
        if base_url:
            options["base_url"] = base_url
        ids = [cut(str(i), 200) for i in scrub(list(await list_models(**options)))]  # type: ignore[operator,unused-ignore]
    except Exception as exc:  # noqa: BLE001 - any failure: fall back, say why in one line
        reason = cut(str(exc).split("\n", 1)[0].rstrip("."), 300)
        return known, f"known list; the API could not be asked: {reason}"
    _LIVE[key] = ids
    if base is not None:
        _OFFERED[base] = list(ids)
    return list(ids), None
