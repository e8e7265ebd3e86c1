"""ChatWidget logic without a front end: a fake provider, widgets driven from Python."""
from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ipywidgets as widgets
import pytest

from upstage_magic import settings
from upstage_magic.emulator import HOSTILE_REPLY, Emulator
from upstage_magic.errors import AuthenticationError, RateLimitError
from upstage_magic.events import FinishReason, Usage
from upstage_magic.session import ChatSession, default_session
from upstage_magic.widget import ChatWidget

TEST_KEY = "test-key-SECRET123"


class FakeProvider:
    """Records each request's kwargs and streams queued scripts (like llm's test model)."""

    models = ["fake-small", "fake-large"]

    def __init__(self, *, listed: list[str] | None = None, list_error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.scripts: list[dict[str, Any]] = []
        self.listed = listed
        self.list_error = list_error
        self.closed = 0

    def enqueue(self, chunks: list[Any], *, delay: float = 0.0, error: Exception | None = None) -> None:
        self.scripts.append({"chunks": chunks, "delay": delay, "error": error})

    def get_default_model(self) -> str:
        return "fake-small"

    async def create_async_generator(self, model: str, messages: list[dict], **kwargs: Any):
        self.calls.append({"model": model, "messages": messages, **kwargs})
        script = self.scripts.pop(0) if self.scripts else {"chunks": ["ok"], "delay": 0.0, "error": None}
        try:
            for chunk in script["chunks"]:
                await asyncio.sleep(script["delay"])
                yield chunk
            if script["error"] is not None:
                raise script["error"]
        finally:
            self.closed += 1

    async def list_models(self, **kwargs: Any) -> list[str]:
        await asyncio.sleep(0)
        if self.list_error is not None:
            raise self.list_error
        return list(self.listed or [])


def words(n: int) -> list[str]:
    return [f"w{i} " for i in range(n)]


def all_widgets(root: widgets.Widget) -> list[widgets.Widget]:
    """Every widget reachable from root through any trait (children, layout, style...)."""
    seen: dict[int, widgets.Widget] = {}
    stack = [root]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen[id(w)] = w
        for name in w.keys:
            value = getattr(w, name, None)
            items = value if isinstance(value, (list, tuple)) else [value]
            stack.extend(v for v in items if isinstance(v, widgets.Widget))
    return list(seen.values())


def transcript_html(w: ChatWidget) -> str:
    return "\n".join(x.value for x in all_widgets(w._turns_box) if isinstance(x, widgets.HTML))


def text_of(html_text: str) -> str:
    return re.sub(r"<[^>]+>", "", html_text)


async def until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider(listed=["fake-small", "fake-large", "fake-listed"])


@pytest.fixture
def shared():
    """The kernel-wide default session, emptied before and after."""
    s = default_session()
    s.reset()
    yield s
    s.reset()


async def test_send_streams_into_transcript_and_finishes(fake: FakeProvider) -> None:
    fake.enqueue(["Hello ", "**bold** ", "world"] + words(20) + [FinishReason("stop"), Usage(5, 23, 28)],
                 delay=0.01)
    w = ChatWidget(session=ChatSession(), provider=fake, interval=0.05)
    w.input.value = "Say hello"
    w.send_button.click()  # the real on_click path

    # The callback returned at once; the answer streams in a task.
    assert w.streaming and w.exchange is not None and w.exchange.status == "streaming"
    assert w.input.value == "" and w.input.disabled
    assert w.send_button.disabled and not w.stop_button.disabled
    await until(lambda: "Hello" in transcript_html(w))
    assert "streaming" in transcript_html(w) and "streaming" in w.status.value
    assert w.input.disabled

    await w._task
    html_text = transcript_html(w)
    assert "<strong>bold</strong>" in html_text  # Markdown rendered
    assert "w19" in html_text and "Say hello" in html_text
    assert "streaming" not in text_of(html_text)
    turn = w.session.turns[-1]
    assert (turn.prompt, turn.status) == ("Say hello", "done")
    assert turn.answer.startswith("Hello **bold** world")
    assert not w.input.disabled and not w.send_button.disabled and w.stop_button.disabled
    status = text_of(w.status.value)
    assert "done" in status and "23 answer tokens" in status and "first token" in status and "tok/s" in status
    assert fake.closed == 1


async def test_turns_are_visually_distinct_and_user_text_escaped(fake: FakeProvider) -> None:
    fake.enqueue(["fine"])
    w = ChatWidget(session=ChatSession(), provider=fake)
    await w.send("<b>not bold</b> & co")
    html_text = transcript_html(w)
    assert "upstage-turn-user" in html_text and "upstage-answer" in html_text
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; co" in html_text


async def test_stop_keeps_partial_answer_marked_stopped(fake: FakeProvider) -> None:
    fake.enqueue(words(200), delay=0.01)
    w = ChatWidget(session=ChatSession(), provider=fake, interval=0.02)
    task = w.send("long one")
    await until(lambda: w.exchange is not None and len(w.exchange.text) > 10)
    w.stop_button.click()
    assert w.stop_button.disabled  # no double stop
    await asyncio.wait_for(task, 2)

    turn = w.session.turns[-1]
    assert turn.status == "stopped"
    assert 0 < len(turn.answer) < len("".join(words(200)))
    html_text = transcript_html(w)
    assert "stopped" in text_of(html_text) and "w0" in html_text
    assert "stopped" in text_of(w.status.value)
    assert fake.closed == 1  # the generator was closed
    # Still usable, and the stopped partial answer is context for the next question.
    fake.enqueue(["again"])
    await w.send("next")
    assert w.session.turns[-1].answer == "again"
    assert {"role": "assistant", "content": turn.answer} in fake.calls[-1]["messages"]


async def test_upstage_error_shown_inline_with_what_to_do(fake: FakeProvider) -> None:
    fake.enqueue(["partial "], error=RateLimitError("Upstage API request failed with HTTP 429: slow down",
                                                    status=429))
    w = ChatWidget(session=ChatSession(), provider=fake)
    await w.send("q1")
    html_text = text_of(transcript_html(w))
    assert "RateLimitError" in html_text and "slow down" in html_text
    assert "What to do" in html_text and "wait a moment" in html_text
    assert "partial" in html_text
    assert w.session.turns[-1].status == "error"
    assert not w.input.disabled and not w.send_button.disabled and w.stop_button.disabled

    fake.enqueue(["recovered"])
    await w.send("q2")
    assert w.session.turns[-1].status == "done"
    assert "recovered" in transcript_html(w)


async def test_any_exception_is_shown_not_swallowed(fake: FakeProvider) -> None:
    fake.enqueue([], error=ValueError("weird failure"))
    w = ChatWidget(session=ChatSession(), provider=fake)
    await w.send("q")
    html_text = text_of(transcript_html(w))
    assert "ValueError" in html_text and "weird failure" in html_text and "What to do" in html_text

    class Broken:
        def create_async_generator(self, *a: Any, **k: Any):
            raise TypeError("provider exploded")

    w2 = ChatWidget(session=ChatSession(), provider=Broken())
    w2.input.value = "q"
    w2.send_button.click()
    await w2._task
    assert "provider exploded" in transcript_html(w2)
    assert not w2.input.disabled

    # Non-streaming callbacks too: export into a missing directory.
    w.export_dir = Path("/nonexistent/dir")
    w.export_button.click()
    assert "FileNotFoundError" in transcript_html(w)


def test_send_without_running_loop_is_reported(fake: FakeProvider) -> None:
    w = ChatWidget(session=ChatSession(), provider=fake)
    w.input.value = "q"
    w.send_button.click()
    assert "running event loop" in transcript_html(w)
    assert not w.input.disabled


async def test_settings_reach_the_request(fake: FakeProvider) -> None:
    w = ChatWidget(session=ChatSession(), provider=fake)
    await asyncio.wait_for(w._models_task, 2)
    assert "fake-listed" in w.model_dropdown.options  # fetched in the background
    w.model_dropdown.value = "fake-listed"
    w.system_input.value = "Be terse."
    w.temperature.value = 0.25
    w.max_tokens.value = 77
    fake.enqueue(["x"])
    await w.send("hi")
    call = fake.calls[-1]
    assert call["model"] == "fake-listed"
    assert call["temperature"] == 0.25 and call["max_tokens"] == 77
    assert call["messages"][0] == {"role": "system", "content": "Be terse."}
    assert call["messages"][-1] == {"role": "user", "content": "hi"}
    assert w.session.turns[-1].model == "fake-listed"

    w.max_tokens.value = 0  # 0 = server default: not sent
    w.system_input.value = ""
    await w.send("again")
    assert "max_tokens" not in fake.calls[-1] and fake.calls[-1]["messages"][0]["role"] == "user"


async def test_model_list_falls_back_to_known_models() -> None:
    fake = FakeProvider(list_error=RuntimeError("offline"))
    w = ChatWidget(session=ChatSession(), provider=fake)
    await asyncio.wait_for(w._models_task, 2)
    assert set(w.model_dropdown.options) == {"fake-small", "fake-large"}
    assert w.model_dropdown.value == "fake-small"
    assert "could not fetch" in w._models_note.value


async def test_magic_settings_are_the_starting_point(fake: FakeProvider) -> None:
    magics = SimpleNamespace(model="fake-large", system_prompt="From the magic.", temperature=0.1,
                             max_tokens=12, update_interval=0.2, base_url="http://127.0.0.1:9/v1", timeout=5.0)
    w = ChatWidget(session=ChatSession(), provider=fake, magics=magics, fetch_models=False)
    await w.send("q")
    call = fake.calls[-1]
    assert (call["model"], call["temperature"], call["max_tokens"]) == ("fake-large", 0.1, 12)
    assert call["base_url"] == "http://127.0.0.1:9/v1" and call["timeout"] == 5.0
    assert call["messages"][0]["content"] == "From the magic."


async def test_shared_session_with_cells_and_separate_sessions(fake: FakeProvider, shared: ChatSession) -> None:
    w = ChatWidget(provider=fake)
    private = ChatWidget(session=ChatSession(), provider=fake)
    assert w.session is shared

    # A %%upstage cell records a turn in the shared session: the chat shows it...
    ex = shared.start("asked in a cell", model="fake-small")
    ex.add("answered in a cell")
    ex.finish()
    assert "asked in a cell" in transcript_html(w) and "answered in a cell" in transcript_html(w)
    assert "asked in a cell" not in transcript_html(private)

    # ...and it is context for the chat's next question (and the other way round).
    fake.enqueue(["from the widget"])
    await w.send("follow-up")
    sent = fake.calls[-1]["messages"]
    assert {"role": "user", "content": "asked in a cell"} in sent
    assert [t.prompt for t in shared.turns] == ["asked in a cell", "follow-up"]
    assert shared.build_messages("next")[-2] == {"role": "assistant", "content": "from the widget"}

    fake.enqueue(["private answer"])
    await private.send("private q")
    assert {"role": "user", "content": "asked in a cell"} not in fake.calls[-1]["messages"]
    assert len(shared.turns) == 2 and len(private.session.turns) == 1

    # New chat in the widget clears the shared conversation (and its transcript).
    w.new_button.click()
    assert shared.turns == [] and "asked in a cell" not in transcript_html(w)
    w.close()
    private.close()


async def test_two_widgets_stream_at_the_same_time() -> None:
    fake = FakeProvider()
    fake.enqueue(words(30), delay=0.01)
    fake.enqueue(words(30), delay=0.01)
    a = ChatWidget(session=ChatSession(), provider=fake, fetch_models=False)
    b = ChatWidget(session=ChatSession(), provider=fake, fetch_models=False)
    ta, tb = a.send("a"), b.send("b")
    await until(lambda: a.exchange is not None and b.exchange is not None
                and a.exchange.chunks > 3 and b.exchange.chunks > 3)
    assert a.streaming and b.streaming
    await asyncio.gather(ta, tb)
    assert a.session.turns[-1].status == b.session.turns[-1].status == "done"


async def test_coalescing_bounds_html_updates() -> None:
    fake = FakeProvider()
    fake.enqueue(words(400))  # as fast as the loop goes
    w = ChatWidget(session=ChatSession(), provider=fake, interval=0.1, fetch_models=False)
    task = w.send("fast")
    view = w._live
    values: list[str] = []
    view.answer.observe(lambda ch: values.append(ch["new"]), names="value")
    await task
    assert "w399" in values[-1]
    assert len(values) <= 6, len(values)  # first token, maybe a tick or two, final
    assert "w0" in values[0] and "w399" not in values[0]  # first token shown at once

    fake.enqueue(words(40), delay=0.02)  # ~0.8 s of paced tokens
    task = w.send("paced")
    view = w._live
    values.clear()
    view.answer.observe(lambda ch: values.append(ch["new"]), names="value")
    await task
    assert 3 <= len(values) <= 14, len(values)  # ~10/s, not 40


async def test_paused_stream_still_shows_pending_text() -> None:
    """Text that arrived just before a pause is shown during the pause (poll timer)."""

    release = asyncio.Event()

    class Pausing(FakeProvider):
        async def create_async_generator(self, model, messages, **kw):
            yield "first "
            yield "second "  # within the interval: pending
            await release.wait()  # paused until the test has seen "second"
            yield "third"

    p = Pausing()
    w = ChatWidget(session=ChatSession(), provider=p, interval=0.1, fetch_models=False)
    task = w.send("q")
    await until(lambda: "second" in transcript_html(w))  # shown while the stream is paused
    assert "third" not in transcript_html(w) and not task.done()
    release.set()
    await task
    assert "third" in transcript_html(w)


async def test_hostile_answer_is_neutralised_in_the_widget() -> None:
    fake = FakeProvider()
    fake.enqueue([HOSTILE_REPLY])
    w = ChatWidget(session=ChatSession(), provider=fake, fetch_models=False)
    await w.send("<img src=y onerror=alert(1)>")
    collector = TagCollector()
    collector.feed(transcript_html(w))
    for tag, attrs in collector.tags:
        assert tag not in {"script", "img", "iframe", "object", "embed"}, tag
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name)
            assert not (value or "").strip().lower().startswith(("javascript:", "vbscript:")), (tag, value)
    assert "window.__pwned_script=1" in text_of(transcript_html(w))  # shown as text
    assert '&lt;script&gt;alert("kept as code")' in transcript_html(w) or \
        "&lt;script&gt;alert(&quot;kept as code&quot;)" in transcript_html(w)


async def test_widget_state_never_contains_the_key(monkeypatch: pytest.MonkeyPatch, fake: FakeProvider) -> None:
    monkeypatch.setenv("UPSTAGE_API_KEY", TEST_KEY)
    settings.set_api_key(TEST_KEY)
    try:
        fake.enqueue(["a"], error=AuthenticationError(f"bad key {TEST_KEY}", status=401))
        fake.enqueue([], error=RuntimeError(f"something with {TEST_KEY} inside"))
        w = ChatWidget(session=ChatSession(), provider=fake)
        await w.send("first question")
        await w.send("second question")
        states = json.dumps([x.get_state() for x in all_widgets(w)], default=str)
        assert "first question" in states and "RuntimeError" in states  # the walk sees the transcript
        assert TEST_KEY not in states
    finally:
        settings.set_api_key(None)


async def test_widget_state_has_no_key_with_real_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """Upstage provider against the emulator: a rejected key must not leak into the widget."""
    async with Emulator(api_key="the-right-one") as base_url:
        monkeypatch.setenv("UPSTAGE_BASE_URL", base_url)
        monkeypatch.setenv("UPSTAGE_API_KEY", TEST_KEY)
        w = ChatWidget(session=ChatSession())
        await w.send("hello")
        if w._models_task is not None:
            await asyncio.gather(w._models_task, return_exceptions=True)
        states = json.dumps([x.get_state() for x in all_widgets(w)], default=str)
        assert "AuthenticationError" in states
        assert TEST_KEY not in states
        from upstage_magic.providers import Upstage

        await Upstage.aclose()


async def test_real_provider_streams_from_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Emulator() as base_url:
        monkeypatch.setenv("UPSTAGE_BASE_URL", base_url)
        monkeypatch.setenv("UPSTAGE_API_KEY", TEST_KEY)
        w = ChatWidget(session=ChatSession())
        await asyncio.wait_for(w._models_task, 5)
        w.max_tokens.value = 0
        await w.send("what is up")
        turn = w.session.turns[-1]
        assert turn.status == "done" and "You asked: what is up" in turn.answer
        assert "You asked: what is up" in text_of(transcript_html(w))
        from upstage_magic.providers import Upstage

        await Upstage.aclose()


async def test_new_chat_while_streaming_starts_empty(fake: FakeProvider) -> None:
    fake.enqueue(words(100), delay=0.01)
    w = ChatWidget(session=ChatSession(), provider=fake)
    task = w.send("q")
    await until(lambda: w.exchange is not None and w.exchange.chunks > 2)
    w.new_button.click()
    await task
    assert w.session.turns == []
    assert "w0" not in transcript_html(w)
    assert not w.input.disabled


async def test_export_writes_markdown_and_offers_download(fake: FakeProvider, tmp_path) -> None:
    fake.enqueue(["The answer."])
    w = ChatWidget(session=ChatSession(), provider=fake, export_dir=tmp_path)
    await w.send("Question?")
    w.export_button.click()
    files = list(tmp_path.glob("upstage-chat-*.md"))
    assert len(files) == 1
    text = files[0].read_text()
    assert "Question?" in text and "The answer." in text
    m = re.search(r'href="data:text/markdown;charset=utf-8;base64,([^"]+)"', w.export_area.value)
    assert m and base64.b64decode(urllib.parse.unquote(m.group(1))).decode() == text
    assert str(files[0]) in w.export_area.value


async def test_refused_second_send_while_streaming(fake: FakeProvider) -> None:
    fake.enqueue(words(50), delay=0.01)
    w = ChatWidget(session=ChatSession(), provider=fake)
    task = w.send("one")
    assert w.send("two") is None
    assert "still streaming" in transcript_html(w)
    await task
    assert [t.prompt for t in w.session.turns] == ["one"]


def test_closing_detaches_from_shared_session(fake: FakeProvider, shared: ChatSession) -> None:
    w = ChatWidget(provider=fake)
    n = len(shared._callbacks)
    w.close()
    assert len(shared._callbacks) == n - 1


def test_repr_is_short(fake: FakeProvider) -> None:
    w = ChatWidget(session=ChatSession(), provider=fake, fetch_models=False)
    assert repr(w) == "<ChatWidget idle, 0 turns, model='fake-small'>"
    assert w._repr_mimebundle_()["text/plain"] == repr(w)


async def test_close_while_streaming_is_clean(fake: FakeProvider) -> None:
    fake.enqueue(words(100), delay=0.01)
    session = ChatSession()
    w = ChatWidget(session=session, provider=fake)
    task = w.send("q")
    await until(lambda: w.exchange is not None and w.exchange.chunks > 2)
    w.close()
    await asyncio.wait_for(task, 2)
    assert session.turns[-1].status == "stopped"  # the partial answer is kept in the session
    assert session._callbacks == []
    assert w.comm is None and w.input.comm is None


async def test_timeout_from_magics_only_when_set(fake: FakeProvider) -> None:
    magics = SimpleNamespace(model="", system_prompt="", temperature=None, max_tokens=None,
                             update_interval=0.1, base_url="", timeout=None)
    w = ChatWidget(session=ChatSession(), provider=fake, magics=magics, fetch_models=False)
    assert "timeout" not in w.request_options()
    magics.timeout = 9.0
    w2 = ChatWidget(session=ChatSession(), provider=fake, magics=magics, fetch_models=False)
    assert w2.request_options()["timeout"] == 9.0


async def test_empty_system_box_sends_no_system_prompt(fake: FakeProvider) -> None:
    w = ChatWidget(session=ChatSession(system_prompt="Session prompt."), provider=fake, fetch_models=False)
    assert w.system_input.value == "Session prompt."
    await w.send("a")
    assert fake.calls[-1]["messages"][0] == {"role": "system", "content": "Session prompt."}
    w.system_input.value = ""
    await w.send("b")
    assert [m["role"] for m in fake.calls[-1]["messages"]] == ["user", "assistant", "user"]


async def test_temperature_is_server_default_unless_chosen(fake: FakeProvider) -> None:
    w = ChatWidget(session=ChatSession(), provider=fake, fetch_models=False)
    assert not w.custom_temperature.value and w.temperature.disabled
    await w.send("a")
    assert "temperature" not in fake.calls[-1]
    w.custom_temperature.value = True
    assert not w.temperature.disabled
    w.temperature.value = 0.3
    await w.send("b")
    assert fake.calls[-1]["temperature"] == 0.3
    w.custom_temperature.value = False
    await w.send("c")
    assert "temperature" not in fake.calls[-1]

    # Opened by %upstage chat: the magic's None means server default, a value is kept.
    magics = SimpleNamespace(model="", system_prompt="", temperature=None, max_tokens=None,
                             update_interval=0.1, base_url="", timeout=None)
    w2 = ChatWidget(session=ChatSession(), provider=fake, magics=magics, fetch_models=False)
    await w2.send("d")
    assert "temperature" not in fake.calls[-1]
    magics.temperature = 0.2
    w3 = ChatWidget(session=ChatSession(), provider=fake, magics=magics, fetch_models=False)
    assert w3.custom_temperature.value
    await w3.send("e")
    assert fake.calls[-1]["temperature"] == 0.2


async def test_export_json_link_matches_file_and_is_built_once(fake: FakeProvider, tmp_path, monkeypatch) -> None:
    fake.enqueue(["The answer."])
    session = ChatSession()
    w = ChatWidget(session=session, provider=fake, fetch_models=False)
    await w.send("Question?")
    calls: list[str] = []
    for name in ("export_json", "export_markdown"):
        real = getattr(session, name)
        monkeypatch.setattr(session, name, lambda real=real, name=name: calls.append(name) or real())
    out = w.export(tmp_path / "x.json")
    assert calls == ["export_json"]
    text = out.read_text()
    assert json.loads(text)["turns"][0]["answer"] == "The answer."
    m = re.search(r'download="x.json" href="data:application/json;charset=utf-8;base64,([^"]+)"',
                  w.export_area.value)
    assert m and base64.b64decode(m.group(1)).decode() == text
    assert "Saved 1 turn to" in text_of(w.export_area.value)
    with pytest.raises(ValueError):
        w.export(tmp_path / "x.txt")


async def test_conversation_text_is_masked_not_redacted(fake: FakeProvider) -> None:
    from upstage_magic.errors import register_secret

    register_secret(TEST_KEY)
    fake.enqueue(["Call group_by_category(); the key was ", TEST_KEY])
    w = ChatWidget(session=ChatSession(), provider=fake, fetch_models=False)
    await w.send(f"Explain group_by_category, key {TEST_KEY}")
    shown = text_of(transcript_html(w))
    assert shown.count("group_by_category") == 2  # ordinary text is not mangled
    assert "SECRET123" not in shown
