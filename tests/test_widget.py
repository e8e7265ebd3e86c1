"""ChatWidget without a browser: front-end messages go to its handler, a fake provider answers.

The front end talks to the kernel only through custom messages (``send``, ``stop``, ...),
so calling ``_handle_custom_msg`` is what JupyterLab does; the replies are captured by
wrapping ``send_msg``. Synced state is measured as the JSON the front end would get.
"""
from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.support.fake import FakeProvider, record, request
from upstage_magic.emulator import HOSTILE_REPLY
from upstage_magic.errors import RateLimitError
from upstage_magic.events import Reasoning
from upstage_magic.notebook.chatview import LiveAnswer
from upstage_magic.notebook.widget import (
    MAX_SHOWN,
    MAX_SHOWN_CHARS,
    ChatWidget,
    answer_html,
    render_html,
)
from upstage_magic.secrets import mask_partial
from upstage_magic.session import ChatSession, default_session
from upstage_magic.settings import Settings, default_settings

BAD_TAGS = {"script", "img", "iframe", "svg", "object", "embed", "style", "form", "input", "details", "video"}


class TagCollector(HTMLParser):
    """Every tag and any event-handler attribute or script URL in a piece of HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.bad: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        if tag in BAD_TAGS:
            self.bad.append(tag)
        for name, value in attrs:
            if name.startswith("on") or (value or "").strip().lower().startswith(("javascript:", "data:text")):
                self.bad.append(f"{tag} {name}={value}")


SETTING_NAMES = ("model", "system_prompt", "temperature", "max_tokens", "update_interval")


@pytest.fixture(autouse=True)
def clean_kernel_state():
    """Each test starts from empty kernel settings and conversation, and leaves them so."""
    s = default_settings()
    saved = {n: getattr(s, n) for n in SETTING_NAMES}
    s.model, s.system_prompt, s.temperature, s.max_tokens = "", "", None, None
    s.update_interval = 0.02
    default_session().reset()
    yield
    for n, v in saved.items():
        setattr(s, n, v)
    default_session().reset()


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


def make(fake: FakeProvider, **kw: Any) -> tuple[ChatWidget, list[dict[str, Any]]]:
    """A widget whose outgoing custom messages are collected."""
    kw.setdefault("session", ChatSession())
    w = ChatWidget(provider=fake, fetch_models=False, **kw)
    out: list[dict[str, Any]] = []
    w.send_msg = out.append  # type: ignore[method-assign]
    return w, out


def front(w: ChatWidget, **msg: Any) -> None:
    """What the browser does: a custom message to the widget."""
    w._handle_custom_msg(msg, [])


def frozen_html(out: list[dict[str, Any]]) -> str:
    """The live answer's frozen HTML as a browser has it from the live messages."""
    html = ""
    for m in out:
        if m["type"] == "live":
            html = m["append"] if m.get("reset") else html + m.get("append", "")
    return html


def acks(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in out if m["type"] == "ack"]


def state_bytes(w: ChatWidget) -> int:
    """Size of the synced state a front end (or a saved notebook) gets."""
    return len(json.dumps(w.get_state(), default=str))


async def finish(w: ChatWidget) -> None:
    assert w._task is not None
    await asyncio.wait_for(w._task, 10)


# ---------------------------------------------------------------------------- sending
async def test_send_message_streams_live_then_lands_in_transcript(fake: FakeProvider) -> None:
    fake.enqueue(["# Title\n\n", "para ", "one\n\n", "```python\nx = 1\n", "```\n\n", "end"], delay=0.03)
    w, out = make(fake)
    front(w, type="send", text="first question", id=7)
    assert acks(out) == [{"type": "ack", "id": 7, "ok": True}]
    assert w.busy and w.live["prompt"] == "first question" and w.live["status"] == "streaming"
    await finish(w)
    live = [m for m in out if m["type"] == "live"]
    assert live, "no live update while streaming"
    assert all("transcript" not in json.dumps(m) and "first question" not in json.dumps(m) for m in live)
    assert not w.busy and w.live == {}
    (entry,) = w.transcript
    assert entry["prompt"] == "first question" and entry["status"] == "done"
    assert entry["html"] == answer_html("# Title\n\npara one\n\n```python\nx = 1\n```\n\nend")
    assert fake.calls[0]["messages"][-1] == {"role": "user", "content": "first question"}
    # The finished turn went to the browser as one "turns" message (an append), once.
    # No custom message carries the whole answer: the turn reaches the browser in the state.
    assert all(entry["html"] not in json.dumps(m) for m in out if m["type"] != "hello")


async def test_text_sent_is_exactly_the_message_text(fake: FakeProvider) -> None:
    w, _out = make(fake)
    text = "  line one\nline two with trailing space \n"
    front(w, type="send", text=text, id=1)
    await finish(w)
    assert fake.calls[0]["messages"][-1]["content"] == text
    assert w.session.turns[0].prompt == text


async def test_empty_text_is_refused_with_the_reason(fake: FakeProvider) -> None:
    w, out = make(fake)
    front(w, type="send", text="  \n ", id=3)
    (ack,) = acks(out)
    assert ack["ok"] is False and "Type a question" in ack["error"]["message"]
    assert not fake.calls and w._task is None


async def test_send_while_a_cell_streams_is_queued_then_sent(fake: FakeProvider) -> None:
    shared = default_session()
    w, out = make(fake, session=shared)
    other = shared.start(request("a cell's question", session=shared))  # a %%upstage cell streaming
    front(w, type="send", text="my question", id=4)
    (ack,) = acks(out)
    assert ack["ok"] is True and ack["queued"] == w.queued[0]["id"]  # accepted: the box clears
    assert [q["text"] for q in w.queued] == ["my question"] and not w.notice
    assert not fake.calls and not w.busy
    assert w.send("from code") is None and w.notice["kind"] == "Busy"  # code is told, not queued
    other.apply(["its answer"])
    other._end()
    assert not w.notice  # its cause is gone
    await asyncio.sleep(0)  # the queued question goes out once the cell's answer is recorded
    assert w.queued == [] and w.busy
    await finish(w)
    assert [t.prompt for t in shared.turns] == ["a cell's question", "my question"]


async def test_sends_while_streaming_are_queued_in_order_and_cancellable(fake: FakeProvider) -> None:
    for _ in range(3):
        fake.enqueue(["a "] * 30, delay=0.005)
    w, out = make(fake)
    front(w, type="send", text="one", id=1)
    front(w, type="send", text="two", id=2)
    front(w, type="send", text="three", id=3)
    front(w, type="send", text="four", id=4)
    assert [a["ok"] for a in acks(out)] == [True, True, True, True]
    assert [q["text"] for q in w.queued] == ["two", "three", "four"]
    front(w, type="unqueue", qid=w.queued[1]["id"])  # cancel "three"
    assert [q["text"] for q in w.queued] == ["two", "four"]
    for _ in range(3):
        await finish(w)
        await asyncio.sleep(0.01)
    assert [t.prompt for t in w.session.turns] == ["one", "two", "four"] and not w.queued
    assert not [m for m in out if m["type"] == "ack" and not m["ok"]]


async def test_new_chat_can_be_undone_until_the_next_question(fake: FakeProvider) -> None:
    w, _out = make(fake)
    for i in range(2):
        front(w, type="send", text=f"q{i}", id=i)
        await finish(w)
    front(w, type="new")
    assert w.session.turns == [] and w.transcript == [] and w.undo_turns == 2
    front(w, type="undo")
    assert [t.prompt for t in w.session.turns] == ["q0", "q1"] and w.undo_turns == 0
    assert [e["prompt"] for e in w.transcript] == ["q0", "q1"]
    front(w, type="new")
    front(w, type="send", text="fresh", id=9)
    await finish(w)
    assert w.undo_turns == 0
    front(w, type="undo")  # too late: a new question was asked
    assert [t.prompt for t in w.session.turns] == ["fresh"]


async def test_stop_keeps_partial_answer(fake: FakeProvider) -> None:
    fake.enqueue([f"w{i} " for i in range(200)], delay=0.01)
    w, _out = make(fake)
    front(w, type="send", text="long", id=1)
    while len(w.exchange.text) < 20:  # type: ignore[union-attr]
        await asyncio.sleep(0.01)
    front(w, type="stop")
    await finish(w)
    (turn,) = w.session.turns
    assert turn.status == "stopped" and turn.answer.startswith("w0 w1 ") and "w199" not in turn.answer
    entry = w.transcript[0]
    assert entry["status"] == "stopped" and "w0 w1" in entry["html"]
    assert "stopped" in w.status and not w.busy


async def test_error_shown_once_in_one_form_with_what_to_do(fake: FakeProvider) -> None:
    fake.enqueue(["partial "], error=RateLimitError("Too many requests", status=429))
    w, _out = make(fake)
    front(w, type="send", text="q", id=1)
    await finish(w)
    (entry,) = w.transcript
    assert entry["status"] == "error"
    assert entry["error"]["kind"] == "RateLimitError"
    assert entry["error"]["message"] == "Too many requests"
    assert "wait" in entry["error"]["hint"].lower()
    assert "partial" in entry["html"]  # the partial answer is kept


async def test_retry_replaces_the_last_answer(fake: FakeProvider) -> None:
    fake.enqueue(["first answer"])
    fake.enqueue(["second answer"])
    w, _out = make(fake)
    front(w, type="send", text="q", id=1)
    await finish(w)
    front(w, type="retry")
    await finish(w)
    assert [(t.prompt, t.answer) for t in w.session.turns] == [("q", "second answer")]
    # The regenerated question is not sent together with the answer it replaces.
    assert fake.calls[1]["messages"] == [{"role": "user", "content": "q"}]
    assert [e["prompt"] for e in w.transcript] == ["q"] and "second answer" in w.transcript[0]["html"]


async def test_new_chat_while_streaming_starts_empty(fake: FakeProvider) -> None:
    fake.enqueue(["x "] * 100, delay=0.01)
    w, _out = make(fake)
    front(w, type="send", text="q", id=1)
    await asyncio.sleep(0.05)
    front(w, type="new")
    await finish(w)
    assert w.session.turns == [] and w.transcript == [] and not w.busy


async def test_reasoning_streams_separately_and_is_kept(fake: FakeProvider) -> None:
    fake.enqueue([Reasoning("thinking **hard**"), Reasoning(" still"), "The answer."], delay=0.03)
    w, out = make(fake)
    front(w, type="send", text="q", id=1)
    await finish(w)
    live = [m for m in out if m["type"] == "live"]
    assert any("<strong>hard</strong>" in m.get("reasoning", "") for m in live)
    assert all("thinking" not in m["tail"] and "thinking" not in m.get("append", "") for m in live)
    entry = w.transcript[0]
    assert "<strong>hard</strong>" in entry["reasoning_html"] and "thinking" not in entry["html"]


async def test_hello_and_copy_give_the_raw_markdown(fake: FakeProvider) -> None:
    md = "Use:\n\n```python\nprint('<b>&amp;')\n```\n"
    fake.enqueue([md])
    w, out = make(fake)
    front(w, type="hello", id=9)
    assert out[-1] == {"type": "hello", "id": 9}
    front(w, type="send", text="q", id=1)
    await finish(w)
    front(w, type="copy", id=2, turn=w.transcript[0]["id"])
    assert out[-1] == {"type": "copy", "id": 2, "text": md}


async def test_new_view_mid_stream_gets_the_whole_live_answer(fake: FakeProvider) -> None:
    fake.enqueue(["para one\n\n", "para two\n\n"] + ["tail "] * 50, delay=0.02)
    w, out = make(fake)
    front(w, type="send", text="q", id=1)
    while "para two" not in (w.exchange.text if w.exchange else ""):
        await asyncio.sleep(0.01)
    front(w, type="hello", id=2)
    full = [m for m in out if m["type"] == "live" and m.get("reset")]
    assert full and "para one" in full[-1]["append"] + full[-1]["tail"]
    await finish(w)


# ---------------------------------------------------------------------------- settings
async def test_settings_are_read_at_every_send(fake: FakeProvider) -> None:
    s = default_settings()
    s.model = "before-widget"  # %config UpstageMagics.model = ... before the widget exists
    w, _out = make(fake)
    front(w, type="send", text="one", id=1)
    await finish(w)
    s.model = "after-widget"  # ... and after
    s.temperature = 0.3
    s.system_prompt = "Be brief."
    front(w, type="send", text="two", id=2)
    await finish(w)
    assert [c["model"] for c in fake.calls] == ["before-widget", "after-widget"]
    assert fake.calls[1]["temperature"] == 0.3 and "temperature" not in fake.calls[0]
    assert fake.calls[1]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert w.settings["model"] == "after-widget"  # the panel follows %config too


async def test_settings_panel_writes_the_kernel_settings(fake: FakeProvider) -> None:
    w, _out = make(fake)
    front(w, type="settings", values={"model": " solar-mini ", "system_prompt": "Haiku only.",
                                      "temperature": 0.5, "max_tokens": 64})
    s = default_settings()
    assert (s.model, s.system_prompt, s.temperature, s.max_tokens) == ("solar-mini", "Haiku only.", 0.5, 64)
    front(w, type="settings", values={"temperature": None, "max_tokens": 0})
    assert s.temperature is None and s.max_tokens is None
    front(w, type="settings", values={"temperature": 7})
    assert s.temperature is None and w.notice["kind"] == "ValueError" and "between 0 and 2" in w.notice["message"]
    assert w.settings["temperature"] is None


async def test_constructor_settings_need_a_private_settings(fake: FakeProvider) -> None:
    with pytest.raises(TypeError, match="settings=Settings"):
        ChatWidget(provider=fake, model="x", fetch_models=False)
    own = Settings()
    w, _out = make(fake, settings=own, model="private-model", max_tokens=10)
    front(w, type="send", text="q", id=1)
    await finish(w)
    assert fake.calls[0]["model"] == "private-model" and fake.calls[0]["max_tokens"] == 10
    assert default_settings().model == ""  # the kernel's settings are untouched


# ---------------------------------------------------------------------------- state
async def test_synced_state_stays_flat_as_turns_grow(fake: FakeProvider) -> None:
    answer = "A table:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('x')\n```\n"
    w, out = make(fake)
    front(w, type="hello", id=0)  # a view exists (JupyterLab, Notebook 7, VS Code)
    synced: list[int] = []
    real_send = w._send
    w._send = lambda msg, buffers=None: (synced.append(len(json.dumps(msg))), real_send(msg, buffers))
    sizes = []
    msg_sizes = []
    for i in range(2 * MAX_SHOWN + 5):
        fake.enqueue([answer])
        del out[:], synced[:]
        front(w, type="send", text=f"question {i:03d}", id=i)
        await finish(w)
        sizes.append(state_bytes(w))
        msg_sizes.append(sum(len(json.dumps(m)) for m in out) + sum(synced))
    assert len(w.session.turns) == 2 * MAX_SHOWN + 5 and len(w.transcript) == MAX_SHOWN
    assert w.hidden_turns == [MAX_SHOWN + 5]
    # Full after MAX_SHOWN turns, then flat: no per-turn growth in what is synced or saved.
    assert max(sizes[MAX_SHOWN:]) - min(sizes[MAX_SHOWN:]) < 200, sizes
    # What one turn sends (messages + state updates) stops growing once the transcript is full.
    assert sum(synced) > 0, "no state update was sent"
    assert max(msg_sizes[MAX_SHOWN:]) - min(msg_sizes[MAX_SHOWN:]) < 400, msg_sizes


async def test_big_answers_bound_the_transcript_by_size(fake: FakeProvider) -> None:
    big = ("word " * 20 + "\n\n") * 500  # ~50 KB of Markdown per answer
    w, _out = make(fake)
    for i in range(12):
        fake.enqueue([big])
        front(w, type="send", text=f"q{i}", id=i)
        await finish(w)
    total = sum(len(e["html"]) for e in w.transcript)
    assert total <= MAX_SHOWN_CHARS and len(w.transcript) < 12
    assert w.hidden_turns == [12 - len(w.transcript)] and w.transcript[-1]["prompt"] == "q11"


async def test_streaming_updates_cost_the_tail_not_the_answer(fake: FakeProvider) -> None:
    block = "Paragraph with **bold** text and `code`. " * 4 + "\n\n"
    fake.enqueue([block] * 300, delay=0.001)
    w, out = make(fake)
    front(w, type="send", text="long", id=1)
    await finish(w)
    live = [m for m in out if m["type"] == "live"]
    final_html = w.transcript[0]["html"]
    assert len(live) >= 3
    biggest = max(len(json.dumps(m)) for m in live)
    total = sum(len(json.dumps(m)) for m in live)
    assert biggest < len(final_html) / 2, (biggest, len(final_html))
    assert total < 2 * len(final_html)  # each block is sent about once
    # The browser keeps the live DOM as the finished turn: frozen blocks + final tail == the turn.
    (adopt,) = [m for m in out if m["type"] == "adopt"]
    assert frozen_html(out) + adopt["live_tail"] == final_html
    assert adopt["entry"]["id"] == w.transcript[0]["id"] and "html" not in adopt["entry"]
    assert len(json.dumps(adopt)) < len(final_html) / 4


async def test_state_and_export_hold_no_server_path(fake: FakeProvider, tmp_path: Path) -> None:
    w, out = make(fake, export_dir=tmp_path)
    front(w, type="send", text="q", id=1)
    await finish(w)
    front(w, type="export", format="md")
    front(w, type="export", format="json")
    md, js = [m for m in out if m["type"] == "export"]
    assert md["mime"] == "text/markdown" and "## 1. You" in md["text"] and md["name"].endswith(".md")
    assert json.loads(js["text"])["turns"][0]["prompt"] == "q" and js["name"].endswith(".json")
    assert "/" not in md["name"] and "/" not in js["name"]
    path = w.export()
    assert path.parent == tmp_path and path.read_text().startswith("# Upstage chat")
    blob = json.dumps(w.get_state(), default=str) + json.dumps(out)
    assert str(tmp_path) not in blob and str(Path.cwd()) not in blob


async def test_hostile_answer_reaches_the_state_sanitised(fake: FakeProvider) -> None:
    fake.enqueue([HOSTILE_REPLY[i:i + 7] for i in range(0, len(HOSTILE_REPLY), 7)], delay=0.001)
    w, out = make(fake)
    front(w, type="send", text="<img src=x onerror=alert(1)>", id=1)
    await finish(w)
    pieces = [w.transcript[0]["html"]] + [m.get("append", "") + m["tail"] for m in out if m["type"] == "live"]
    for html in pieces:
        tags = TagCollector()
        tags.feed(html)
        assert not tags.bad, tags.bad
        assert tags.names, "nothing rendered"
    assert w.transcript[0]["prompt"] == "<img src=x onerror=alert(1)>"  # text, shown with textContent


async def test_shared_session_shows_cell_turns(fake: FakeProvider) -> None:
    shared = default_session()
    w, _out = make(fake, session=shared)
    assert w.shared
    record(shared, "from a cell", "cell answer")
    assert [e["prompt"] for e in w.transcript] == ["from a cell"]
    private, _ = make(fake, session=ChatSession())
    assert not private.shared and private.transcript == []


async def test_a_message_on_another_thread_is_handled_on_the_widgets_own_loop(fake: FakeProvider) -> None:
    """ipykernel 7 runs comm handlers on a kernel subshell's thread when JupyterLab sends widget
    messages on one (homethread.py): the send must still stream on the widget's loop."""
    fake.enqueue(["one ", "two"], delay=0.01)
    w, out = make(fake)
    threads: list[int] = []
    dispatch = w._dispatch

    def recording(msg: dict[str, Any]) -> None:
        threads.append(threading.get_ident())
        dispatch(msg)

    w._dispatch = recording  # type: ignore[method-assign]
    t = threading.Thread(target=front, args=(w,), kwargs={"type": "send", "text": "q", "id": 3})
    t.start()
    t.join()
    for _ in range(200):
        if w._task is not None:
            break
        await asyncio.sleep(0.005)
    await finish(w)
    assert threads == [threading.get_ident()]
    assert acks(out) == [{"type": "ack", "id": 3, "ok": True}]
    assert w._task is not None and w._task.get_loop() is asyncio.get_running_loop()
    assert w.transcript[-1]["status"] == "done"


def test_send_without_running_loop_is_reported(fake: FakeProvider) -> None:
    w, out = make(fake)
    front(w, type="send", text="q", id=1)
    (ack,) = acks(out)
    assert ack["ok"] is False and "event loop" in ack["error"]["message"]


def test_repr_is_short(fake: FakeProvider) -> None:
    w, _ = make(fake)
    assert repr(w).startswith("<ChatWidget idle, 0 turns")


# ---------------------------------------------------------------------------- live pieces
CORPUS = [
    "# Heading\n\nText para.\n\n",
    "```python\ndef f():\n\n    return 1\n```\n\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n",
    "- one\n- two\n\n",
    "- loose\n\n- list\n\n",
    "1. first\n\n2. second\n\n",
    "> quote\n> more\n\n",
    "    indented code\n\n",
    "$$\nx^2\n\ny\n$$\n\n",
    "Setext\n===\n\n",
    "para with [link](http://example.com)\n\n",
    "text\n  continued\n\n",
    "~~~\nfence ~~~ inside\n\n~~~\n\n",
]


def live_render(text: str, cuts: list[int]) -> list[str]:
    """What the browser shows after each live update at ``cuts`` (frozen pieces + tail), as the widget streams."""
    live, frozen, shown = LiveAnswer(load_images=False), "", []
    for cut in sorted(cuts) + [len(text)]:
        append, tail, reset = live.update(text[:cut])
        frozen = "".join(live.frozen_html) if reset else frozen + append
        assert frozen == "".join(live.frozen_html)
        shown.append(frozen + tail)
    return shown


@pytest.mark.parametrize("seed", range(20))
def test_live_pieces_render_like_the_whole(seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice(CORPUS) for _ in range(8)) + "last words"
    cuts = sorted(rng.randrange(len(text)) for _ in range(10))
    assert live_render(text, cuts) == [answer_html(mask_partial(text[:c])) for c in cuts + [len(text)]]


@hsettings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(CORPUS + ["\n", "x\n", "  - sub\n", "```\n", "$$\n", "para\n", "[r]: https://x.y\n", "[r]\n"]),
                max_size=12),
       st.lists(st.integers(0, 400), max_size=6))
def test_live_pieces_never_split_a_block(blocks: list[str], cuts: list[int]) -> None:
    """Frozen pieces + tail == answer_html at every update, block newlines dropped per piece."""
    text = "".join(blocks)
    cuts = sorted(c % (len(text) + 1) for c in cuts)
    assert live_render(text, cuts) == [answer_html(mask_partial(text[:c])) for c in cuts + [len(text)]]


@pytest.mark.parametrize("text", CORPUS + [HOSTILE_REPLY, "```\n</p>\n<li>\n```\n", "a  \nb\n\n---\n\nc"])
def test_sent_html_differs_from_rendered_only_by_block_newlines(text: str) -> None:
    sent, full = answer_html(text), render_html(text)
    assert sent.replace("\n", "") == full.replace("\n", "")
    # Code keeps every newline (the browser's Copy takes its text).
    for block in re.findall(r"<pre>.*?</pre>", full, re.DOTALL):
        assert block in sent


def test_a_slowly_streamed_key_never_shows_its_beginning_live() -> None:
    """Issue 22: the live render masks a possible key prefix, as the cell path does."""
    from upstage_magic.secrets import register_secret

    key = "canary-LIVE-" + "q" * 12
    register_secret(key)
    text = f"The key is {key}, done."
    shown = live_render(text, list(range(len("The key is "), len(text))))
    for page in shown:
        assert "canary-" not in page and "LIVE" not in page
    assert "The key is ***, done." in shown[-1]


# ---------------------------------------------------------------------------- by the turn
def replay_turns(out: list[dict[str, Any]], start: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What chat.js's applyTurns makes of the "turns" messages, from the state a view started with."""
    shown = list(start)
    for m in out:
        if m["type"] == "turns":
            by_id = {e["id"]: e for e in shown} | {e["id"]: e for e in m["add"]}
            shown = [by_id[i] for i in m["ids"]]
    return shown


async def test_a_turn_sends_that_turn_only_however_long_the_chat(fake: FakeProvider) -> None:
    """Bytes sent per turn (custom messages + state updates) do not grow with the chat, from turn 1."""
    answer = "Some **text** and a table:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n" + "word " * 400 + "\n"
    w, out = make(fake)
    front(w, type="hello", id=0)  # a view exists: the transcript goes by the turn
    synced: list[int] = []
    real_send = w._send
    w._send = lambda msg, buffers=None: (synced.append(len(json.dumps(msg))), real_send(msg, buffers))
    start = list(w.transcript)
    costs, every = [], []
    for i in range(MAX_SHOWN - 2):
        fake.enqueue([answer])
        n_out = len(out)
        del synced[:]
        front(w, type="send", text=f"question {i:03d}", id=i)
        await finish(w)
        costs.append(sum(len(json.dumps(m)) for m in out[n_out:]) + sum(synced))
        every.extend(synced)
    # Turn 28 costs what turn 2 cost (the ids list grows by a few bytes a turn), far below the chat.
    assert costs[-1] - costs[1] < 300, costs
    assert costs[-1] < state_bytes(w) / 10
    assert all(n < len(answer) for n in every), "a state update carried the transcript"
    # The view's copy, built from the messages alone, is the kernel's transcript.
    assert replay_turns(out, start) == w.transcript
    # New chat: one message, no entries, no ids.
    del out[:]
    front(w, type="new")
    assert [m for m in out if m["type"] == "turns"] == [{"type": "turns", "ids": [], "add": []}]


async def test_with_no_view_the_transcript_is_synced_whole_for_saved_state(fake: FakeProvider) -> None:
    """nbclient/papermill run no front end: the whole transcript goes out once when the cell ends
    (not with every turn), so the saved notebook has it."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()  # get_ipython() is this shell now: cells end with post_execute
    w, _out = make(fake)
    states: list[dict] = []
    real_send = w._send
    w._send = lambda msg, buffers=None: (states.append(msg), real_send(msg, buffers))

    def synced() -> list:
        return [m["state"]["transcript"] for m in states if "transcript" in m.get("state", {})]

    fake.enqueue(["headless answer"])
    front(w, type="send", text="headless question", id=1)
    await finish(w)
    assert synced() == []  # not per turn
    shell.events.trigger("post_execute")
    assert len(synced()) == 1 and synced()[-1][-1]["prompt"] == "headless question"
    shell.events.trigger("post_execute")
    assert len(synced()) == 1  # once per cell that changed it


async def test_resync_sends_the_whole_transcript_once(fake: FakeProvider) -> None:
    w, _out = make(fake)
    for i in range(3):
        front(w, type="send", text=f"q{i}", id=i)
        await finish(w)
    sent: list[dict[str, Any]] = []
    real_send = w._send
    w._send = lambda msg, buffers=None: (sent.append(msg), real_send(msg, buffers))
    front(w, type="resync")
    (state,) = [m["state"] for m in sent if "transcript" in m.get("state", {})]
    assert [e["prompt"] for e in state["transcript"]] == ["q0", "q1", "q2"]
    w.set_state({"transcript": []})  # a page never overwrites the kernel's transcript
    assert len(w.transcript) == 3


def test_a_wrong_model_in_the_chat_points_at_its_own_model_field():
    """The cell's 404 hint names `%upstage models`; the chat's names its Settings' Model list (issue 17)."""
    from upstage_magic.errors import ModelNotFoundError
    from upstage_magic.notebook.chatview import error_parts

    parts = error_parts(ModelNotFoundError("model solar-nope not found", status=404))
    assert "%upstage" not in parts["hint"] and "Model" in parts["hint"] and "Settings" in parts["hint"]
    url = ModelNotFoundError("not found", status=404, hint=ModelNotFoundError.url_hint)
    assert error_parts(url)["hint"] == ModelNotFoundError.url_hint  # a URL 404 keeps its own hint
