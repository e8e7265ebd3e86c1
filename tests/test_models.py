"""The known-model table: names, retirement, per-model reasoning effort, grouped listing."""
from __future__ import annotations

import pytest

from upstage_magic import models
from upstage_magic.models import (
    ALL_EFFORTS,
    DEFAULT_MODEL,
    KNOWN_MODELS,
    ReasoningEffortError,
    check_effort,
    dated_id,
    effort_for_think,
    group_models,
    listed_model_ids,
    model_info,
    reasons,
    retired_notice,
)


def test_default_is_the_current_flagship() -> None:
    assert DEFAULT_MODEL == "solar-pro4"
    info = model_info(DEFAULT_MODEL)
    assert info is not None and info.status == "current"


@pytest.mark.parametrize(
    ("alias", "dated"),
    [("solar-pro4", "solar-pro4-260806"), ("solar-mini4", "solar-mini4-260922"),
     ("syn-pro", "syn-pro-251021"), ("solar-pro3", "solar-pro3-260323"),
     ("solar-pro2", "solar-pro2-251215")],
)
def test_alias_and_dated_id_name_the_same_model(alias: str, dated: str) -> None:
    assert model_info(alias) is model_info(dated)
    info = model_info(dated)
    assert info is not None and info.id == alias and info.dated_id == dated
    assert dated_id(alias) == dated and dated_id(dated) == dated


@pytest.mark.parametrize("name", ["solar-pro5", "gpt-4o", "", "SOLAR-PRO4-X", None, 3])
def test_unknown_names_pass_through(name: object) -> None:
    assert model_info(name) is None
    if isinstance(name, str):
        assert dated_id(name) == name
        assert retired_notice(name) is None
        check_effort(name, "anything-goes")  # unknown models are not checked
        assert reasons(name, "high") is None


def test_statuses() -> None:
    status = {m.id: m.status for m in KNOWN_MODELS}
    assert status == {
        "solar-pro4": "current", "solar-mini4": "current", "syn-pro": "current",
        "solar-pro3": "older", "solar-pro2": "retired", "solar-mini": "retired",
        "solar-pro": "retired", "solar-1-mini-chat": "retired", "solar-1-mini-chat-ja": "retired",
    }
    for m in KNOWN_MODELS:
        assert (m.replacement is not None) == (m.status == "retired"), m.id
        if m.replacement:
            assert model_info(m.replacement).status == "current"  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["solar-pro4", "solar-mini4", "solar-mini4-260922"])
def test_current_models_accept_every_effort(model: str) -> None:
    for effort in ALL_EFFORTS:
        check_effort(model, effort)
    with pytest.raises(ReasoningEffortError) as info:
        check_effort(model, "extreme")
    msg = str(info.value)
    assert "'extreme'" in msg and "'none'" in msg and "'max'" in msg and "turns reasoning off" in msg


@pytest.mark.parametrize("effort", ["none", "minimal", "xhigh", "max", "HIGH"])
def test_solar_pro3_refuses_what_it_does_not_take(effort: str) -> None:
    with pytest.raises(ReasoningEffortError) as info:
        check_effort("solar-pro3", effort)
    msg = str(info.value)
    assert msg == (f"solar-pro3 does not accept reasoning_effort {effort!r}; "
                   "use 'low', 'medium' or 'high' ('low' turns reasoning off).")
    assert isinstance(info.value, ValueError)


def test_solar_pro3_accepts_low_medium_high_and_no_effort() -> None:
    for effort in ("low", "medium", "high", None):
        check_effort("solar-pro3-260323", effort)


def test_syn_pro_is_unchecked() -> None:
    check_effort("syn-pro", "whatever")
    assert reasons("syn-pro") is None


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("solar-pro3", None, True), ("solar-pro3", "low", False), ("solar-pro3", "medium", True),
        ("solar-pro3", "high", True), ("solar-pro4", None, False), ("solar-pro4", "none", False),
        ("solar-pro4", "minimal", False), ("solar-pro4", "low", True), ("solar-mini4", "max", True),
        ("solar-pro3", "max", False),  # refused by the server, so it does not reason either
        ("solar-pro2", None, False),
    ],
)
def test_reasons(model: str, effort: str | None, expected: bool) -> None:
    assert reasons(model, effort) is expected


@pytest.mark.parametrize(
    ("model", "think", "no_think"),
    [("solar-pro4", "medium", "none"), ("solar-mini4-260922", "medium", "none"),
     ("solar-pro3", "medium", "low"), ("syn-pro", "medium", None), ("my-local-llm", "medium", None)],
)
def test_think_shorthands(model: str, think: str, no_think: str | None) -> None:
    assert effort_for_think(model, True) == think
    assert effort_for_think(model, False) == no_think
    # the mapped values are accepted by the model and do what they say
    for value, on in ((think, True), (no_think, False)):
        if value is not None:
            check_effort(model, value)
            if model_info(model) and model_info(model).efforts:  # type: ignore[union-attr]
                assert reasons(model, value) is on


def test_retired_notices_name_the_replacement() -> None:
    assert retired_notice("solar-pro2") == "solar-pro2 was retired on 2026-10-30; use solar-pro4."
    assert retired_notice("solar-pro2-251215") == "solar-pro2-251215 was retired on 2026-10-30; use solar-pro4."
    assert retired_notice("solar-mini") == "solar-mini is a legacy name Upstage no longer serves; use solar-mini4."
    assert "use solar-mini4" in (retired_notice("solar-1-mini-chat-ja") or "")
    assert "use solar-pro4" in (retired_notice("solar-pro") or "")
    for name in ("solar-pro4", "solar-pro3", "syn-pro"):
        assert retired_notice(name) is None


def test_listed_ids_are_current_and_older_not_retired() -> None:
    ids = listed_model_ids()
    assert ids == [
        "solar-pro4", "solar-mini4", "syn-pro", "solar-pro3",
        "solar-pro4-260806", "solar-mini4-260922", "syn-pro-251021", "solar-pro3-260323",
    ]
    assert not any(retired_notice(i) for i in ids)


def test_group_models_folds_dated_ids_under_aliases() -> None:
    ids = ["solar-pro3-260323", "zeta-model", "solar-pro4-260806", "solar-pro3", "solar-pro4",
           "solar-mini4", "solar-pro4", "solar-pro5-270101", "solar-pro5"]
    assert group_models(ids) == [
        ("solar-pro4", ["solar-pro4-260806"]),
        ("solar-mini4", []),
        ("solar-pro3", ["solar-pro3-260323"]),
        ("zeta-model", []),
        ("solar-pro5", ["solar-pro5-270101"]),
    ]


def test_group_models_keeps_a_dated_id_whose_alias_is_absent() -> None:
    assert group_models(["solar-pro4-260806", "other-270101"]) == [
        ("solar-pro4-260806", []), ("other-270101", []),
    ]


def test_group_models_of_the_live_list_is_short() -> None:
    groups = group_models(listed_model_ids())
    assert [g[0] for g in groups] == ["solar-pro4", "solar-mini4", "syn-pro", "solar-pro3"]
    assert all(len(dated) == 1 for _, dated in groups)


def test_module_is_documented() -> None:
    for name in models.__all__:
        obj = getattr(models, name)
        if callable(obj):
            assert obj.__doc__, name
