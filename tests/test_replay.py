"""Replay (pure): what is recorded, what a hit yields, what misses, --fresh, batch's own cache."""
from __future__ import annotations

import asyncio
import json

import pytest

from upstage_magic import replay
from upstage_magic.events import FinishReason, Reasoning, Usage
from upstage_magic.request import Ask, plan
from upstage_magic.session import ChatSession, Exchange
from upstage_magic.settings import Settings


class CountingProvider:
    """Answers "answer N" (N: calls so far), with reasoning, usage and a finish reason."""

    default_model = "solar-mini4"

    def __init__(self) -> None:
        self.calls = 0

    async def create_async_generator(self, model, messages, **options):
        self.calls += 1
        yield Reasoning("hmm ")
        yield f"answer {self.calls}"
        yield FinishReason("stop")
        yield Usage(prompt_tokens=7, completion_tokens=5, total_tokens=12)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSTAGE_MAGIC_HOME", str(tmp_path))
    monkeypatch.delenv(replay.ENV, raising=False)
    return tmp_path


def answer(settings, ask, provider, session=None):
    request = plan(settings, ask, session=session, provider=provider)
    ex = Exchange(request, session)

    async def go():
        async for _ in ex.stream(provider):
            pass

    asyncio.run(go())
    return ex


def test_replay_off_by_default_records_and_asks_again():
    s, p = Settings(), CountingProvider()
    assert answer(s, Ask("hi"), p).text == "answer 1"
    second = answer(s, Ask("hi"), p)
    assert second.text == "answer 2" and second.replayed is None and p.calls == 2


def test_hit_replays_everything_and_marks_it():
    s, p = Settings(), CountingProvider()
    first = answer(s, Ask("hi"), p)
    s.replay = True
    hit = answer(s, Ask("hi"), p)
    assert p.calls == 1
    assert (hit.text, hit.reasoning, hit.finish_reason) == ("answer 1", "hmm ", "stop")
    assert hit.usage is not None and hit.usage.prompt_tokens == 7 and hit.usage.completion_tokens == 5
    assert hit.replayed is not None and abs(hit.replayed - first.turn.created) < 5
    assert hit.turn.replayed == hit.replayed and hit.turn.to_dict()["replayed"].startswith("20")
    assert replay.recorded_label(hit.replayed).startswith("replayed · recorded 20")


@pytest.mark.parametrize("change", [
    {"model": "solar-pro3"}, {"prompt": "hi!"}, {"system": "be brief"}, {"temperature": 0.3},
    {"max_tokens": 50}, {"format": "json", "prompt": "hi as JSON"}, {"base_url": "http://127.0.0.1:9/v1"},
])
def test_any_change_of_model_messages_or_options_misses(change):
    s, p = Settings(), CountingProvider()
    answer(s, Ask("hi"), p)
    fields = {"prompt": "hi", **change}
    miss = answer(s, Ask(**fields, replay=True), p)
    assert p.calls == 2 and miss.replayed is None and miss.text == "answer 2"


def test_the_key_and_transport_options_do_not_change_the_key():
    s, p = Settings(), CountingProvider()
    answer(s, Ask("hi", extra={"api_key": "k-one", "timeout": 5}), p)
    hit = answer(s, Ask("hi", replay=True, stream=False, extra={"api_key": "k-two", "timeout": 9}), p)
    assert p.calls == 1 and hit.replayed is not None
    blob = json.dumps(hit.turn.to_dict())
    assert "k-one" not in blob and "k-two" not in blob


def test_fresh_asks_again_and_records_the_new_answer():
    s, p = Settings(replay=True), CountingProvider()
    answer(s, Ask("hi"), p)
    fresh = answer(s, Ask("hi", fresh=True), p)
    assert fresh.text == "answer 2" and fresh.replayed is None
    assert answer(s, Ask("hi"), p).text == "answer 2" and p.calls == 2


def test_env_turns_replay_on(monkeypatch):
    s, p = Settings(), CountingProvider()
    answer(s, Ask("hi"), p)
    monkeypatch.setenv(replay.ENV, "1")
    assert answer(s, Ask("hi"), p).replayed is not None and p.calls == 1
    monkeypatch.setenv(replay.ENV, "0")
    assert answer(s, Ask("hi"), p).replayed is None and p.calls == 2


def test_errors_and_stops_are_not_recorded():
    class Failing(CountingProvider):
        async def create_async_generator(self, model, messages, **options):
            self.calls += 1
            yield "partial"
            raise RuntimeError("boom")

    s, p = Settings(), Failing()
    with pytest.raises(RuntimeError):
        answer(s, Ask("hi"), p)
    with pytest.raises(RuntimeError):
        answer(s, Ask("hi", replay=True), p)
    assert p.calls == 2


def test_history_is_part_of_the_key_and_a_replayed_turn_is_recorded():
    s, p = Settings(replay=True), CountingProvider()
    one = ChatSession()
    answer(s, Ask("hi"), p, one)
    answer(s, Ask("more"), p, one)
    two = ChatSession()
    answer(s, Ask("hi"), p, two)  # same history (none): replayed
    again = answer(s, Ask("more"), p, two)  # same history as before: replayed
    assert p.calls == 2 and again.replayed is not None and len(two.turns) == 2
    other = ChatSession()
    answer(s, Ask("more"), p, other)  # no history this time: a different request
    assert p.calls == 3


def test_batch_keeps_its_own_cache_and_fresh_asks_again(tmp_path):
    from upstage_magic.notebook.batch import batch

    p = CountingProvider()
    path = str(tmp_path / "b.sqlite3")
    first = batch("{item}", ["a", "b"], provider=p, cache=path, progress=False)
    again = batch("{item}", ["a", "b"], provider=p, cache=path, progress=False)
    assert p.calls == 2 and list(again) == list(first)
    fresh = batch("{item}", ["a", "b"], provider=p, cache=path, progress=False, fresh=True)
    assert p.calls == 4 and sorted(fresh) == ["answer 3", "answer 4"]
    assert sorted(batch("{item}", ["a", "b"], provider=p, cache=path, progress=False)) == ["answer 3", "answer 4"]
