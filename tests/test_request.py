"""The one request plan: what is sent for an Ask, decided once (and --dry-run shows exactly that)."""
from __future__ import annotations

import pytest

from upstage_magic.context import summarize
from upstage_magic.formats import JSON_INSTRUCTION
from upstage_magic.providers import Upstage
from upstage_magic.request import Ask, Request, RequestError, estimate_request_tokens, plan, public_options
from upstage_magic.session import ChatSession
from upstage_magic.settings import Settings


def planned(ask: Ask, **settings) -> Request:
    return plan(Settings(**settings), ask, provider=Upstage)


def test_describe_shows_messages_options_and_estimate():
    request = planned(Ask("x" * 400, system="Be brief.", temperature=0.2), model="solar-pro3")
    text = request.describe()
    assert text.startswith("Dry run: nothing was sent.\n")
    assert "model: solar-pro3 · 2 messages · ~" in text
    assert estimate_request_tokens(request.messages) == (3 + 4) + (100 + 4)
    assert f"~{estimate_request_tokens(request.messages)} prompt tokens" in text
    assert 'options: {"temperature": 0.2}' in text
    assert "── system ──\nBe brief.\n\n── user ──\n" + "x" * 400 in text


def test_describe_never_shows_the_key(monkeypatch):
    key = "up_" + "Dr7" * 10  # built at run time
    monkeypatch.setenv("UPSTAGE_API_KEY", key)
    request = planned(Ask(f"my key {key}", extra={"api_key": key, "headers": {"Authorization": f"Bearer {key}"},
                                                   "extra_body": {"note": key}}))
    text = request.describe()
    assert key not in text
    assert "api_key" not in text and "Authorization" not in text
    assert public_options(request.options) == {"extra_body": {"note": key}}  # masked on output


def test_the_model_comes_from_the_ask_then_the_settings_then_the_provider(monkeypatch):
    monkeypatch.delenv("UPSTAGE_MODEL", raising=False)
    assert planned(Ask("q")).model == "solar-pro4"
    assert planned(Ask("q"), model="solar-mini4").model == "solar-mini4"
    assert planned(Ask("q", model="solar-pro3"), model="solar-mini4").model == "solar-pro3"
    assert planned(Ask("q", model="solar")).model == "solar-pro4"  # the one alias
    monkeypatch.setenv("UPSTAGE_MODEL", "syn-pro")
    assert planned(Ask("q")).model == "syn-pro"


def test_a_retired_name_is_sent_as_written_with_a_notice():
    for name in ("solar-pro2", "solar-pro", "solar-mini"):
        request = planned(Ask("q", model=name))
        assert request.model == name  # the server decides (it refuses retired names)
        assert len(request.notices) == 1 and name in request.notices[0] and "use solar-" in request.notices[0]
    assert planned(Ask("q", model="solar-pro4")).notices == ()


def test_think_maps_per_model_and_efforts_are_checked_before_sending():
    assert planned(Ask("q", model="solar-pro4", think=True)).options["reasoning_effort"] == "medium"
    assert planned(Ask("q", model="solar-pro4", think=False)).options["reasoning_effort"] == "none"
    assert planned(Ask("q", model="solar-pro3", think=False)).options["reasoning_effort"] == "low"
    with pytest.raises(RequestError, match="solar-pro3 does not accept reasoning_effort 'max'.*Nothing was sent"):
        planned(Ask("q", model="solar-pro3", reasoning_effort="max"))
    with pytest.raises(RequestError, match="does not accept"):  # the settings' effort is checked too
        planned(Ask("q", model="solar-pro3"), reasoning_effort="xhigh")
    with pytest.raises(RequestError, match="drop --reasoning-effort"):
        planned(Ask("q", think=True, reasoning_effort="high"))


@pytest.mark.parametrize("bad", [0, -5])
def test_max_tokens_below_one_is_an_error_not_the_server_default(bad):
    with pytest.raises(RequestError, match="max_tokens must be a whole number >= 1"):
        planned(Ask("q", max_tokens=bad))
    from traitlets import TraitError

    with pytest.raises(TraitError, match="max_tokens must be"):
        Settings(max_tokens=bad)


def test_json_format_adds_one_instruction_only_when_json_is_not_said():
    request = planned(Ask("List planets", format="json"))
    assert request.options["response_format"] == {"type": "json_object"}
    assert request.messages[0] == {"role": "system", "content": JSON_INSTRUCTION}
    said = planned(Ask("List planets as JSON", format="json"))
    assert said.messages[0]["role"] == "user"


def test_a_schema_becomes_the_response_format_and_needs_json():
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    request = planned(Ask("Label it (JSON)", format="json", schema=schema))
    assert request.options["response_format"]["type"] == "json_schema"
    with pytest.raises(RequestError, match="json format"):
        planned(Ask("x", schema=schema))


def test_placeholders_fill_prompt_and_system_with_one_note():
    ns = {"name": "Ada", "lang": "French"}
    request = planned(Ask("Hi {name} {missing}", system="Answer in {lang}.", namespace=ns))
    assert request.prompt == "Hi Ada {missing}" and request.system == "Answer in French."
    assert request.notes == ("filled: {name}, {lang} · left as written: {missing}",)
    assert planned(Ask("Hi {name}", namespace=ns, raw=True)).prompt == "Hi {name}"


def test_context_goes_before_the_prompt_in_this_request_only():
    block = summarize("data", {"data": [1, 2, 3]})
    request = planned(Ask("What is it?", context=block))
    assert request.messages[-1]["content"] == f"{block.text}\n\nWhat is it?"
    assert request.prompt == "What is it?"  # what the conversation records


def test_history_comes_from_the_session_unless_it_is_a_one_off():
    session = ChatSession(system_prompt="Be kind.")
    from upstage_magic.session import Turn

    session.load_turns([Turn("a", "b")])
    request = plan(Settings(), Ask("c"), session=session, provider=Upstage)
    assert [m["role"] for m in request.messages] == ["system", "user", "assistant", "user"]
    one_off = plan(Settings(), Ask("c", history=False), session=session, provider=Upstage)
    assert [m["role"] for m in one_off.messages] == ["system", "user"] and not one_off.record


def test_for_item_fills_rows_and_names_a_missing_field():
    request = planned(Ask("Review: {item.text} ({index})", system="Rate {item.kind}."))
    row = request.for_item({"text": "great", "kind": "films"}, 7)
    assert row.messages[-1]["content"] == "Review: great (7)" and row.system == "Rate films."
    with pytest.raises(KeyError, match="item.text"):
        request.for_item({"other": 1}, 0)


def test_the_cache_key_ignores_the_key_and_transport_but_not_the_answer_options():
    a = planned(Ask("q", extra={"api_key": "k1", "timeout": 3}))
    b = planned(Ask("q", extra={"api_key": "k2", "timeout": 9}))
    c = planned(Ask("q", temperature=0.5))
    assert a.cache_key() == b.cache_key() != c.cache_key()
