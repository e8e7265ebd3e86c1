"""%%upstage / %upstage with an InteractiveShell and a fake provider (no HTTP)."""
from __future__ import annotations

import json
import sys

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from tests.support.fake import FakeProvider
from upstage_magic.errors import AuthenticationError
from upstage_magic.events import FinishReason, Usage
from upstage_magic.notebook.magics import UpstageMagics
from upstage_magic.session import ChatSession


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "upstage_magic")
    yield ip
    ip.run_line_magic("unload_ext", "upstage_magic")


@pytest.fixture
def magics(shell) -> UpstageMagics:
    m = shell.magics_manager.registry["UpstageMagics"]
    m.provider = FakeProvider()
    m.session = ChatSession()
    m.display_mode = "plain"
    m.format = "markdown"
    m.model = ""
    m.footer = True
    return m


@pytest.fixture
def fake(magics) -> FakeProvider:
    return magics.provider


def cell(shell, line: str, body: str):
    return shell.run_cell_magic("upstage", line, body)


# -- loading -------------------------------------------------------------------------------


def test_reload_ext_leaves_one_registration(shell):
    before = sum(isinstance(c, UpstageMagics) for c in shell.configurables)
    shell.run_line_magic("reload_ext", "upstage_magic")
    shell.run_line_magic("reload_ext", "upstage_magic")
    assert sum(isinstance(c, UpstageMagics) for c in shell.configurables) == before == 1
    assert "upstage" in shell.magics_manager.magics["cell"]
    assert "upstage" in shell.magics_manager.magics["line"]


def test_unload_removes_magics():
    ip = InteractiveShell.instance()
    ip.run_line_magic("unload_ext", "upstage_magic")
    try:
        assert "upstage" not in ip.magics_manager.magics["cell"]
        assert not any(isinstance(c, UpstageMagics) for c in ip.configurables)
    finally:
        ip.run_line_magic("load_ext", "upstage_magic")


def test_config_traits_and_key_not_a_trait(shell, magics):
    shell.run_line_magic("config", "UpstageMagics.model = 'fake-mini'")
    try:
        assert magics.model == "fake-mini"
    finally:
        magics.model = ""
    names = set(UpstageMagics.class_traits(config=True))
    assert {"model", "base_url", "timeout", "system_prompt", "temperature", "max_tokens",
            "max_history", "update_interval", "format"} <= names
    assert not any("key" in n for n in names)


# -- prompt and options ----------------------------------------------------------------------


@pytest.mark.parametrize("effort", ["none", "minimal", "xhigh", "max"])
def test_reasoning_effort_accepts_solar_pro4_levels(shell, magics, fake, effort):
    fake.enqueue(["ok"])
    cell(shell, f"--reasoning-effort {effort}", "Think.\n")
    assert fake.calls[-1]["reasoning_effort"] == effort


def test_reasoning_effort_rejects_unknown_level(shell, magics, fake):
    with pytest.raises(UsageError):
        cell(shell, "--reasoning-effort extreme", "Think.\n")


def test_prompt_history_and_options(shell, magics, fake, capsys):
    fake.enqueue(["Hello", " there", FinishReason("stop"), Usage(3, 2, 5)])
    cell(shell, "-m fake -t 0.3 --max-tokens 50 --top-p 0.9 --reasoning-effort low", "Hi!\n")
    out = capsys.readouterr().out
    assert "Hello there" in out and "fake-model · 3 in / 2 out · " in out
    call = fake.calls[-1]
    assert call["model"] == "fake-model"
    assert (call["temperature"], call["max_tokens"], call["top_p"], call["reasoning_effort"]) == (0.3, 50, 0.9, "low")
    assert call["messages"] == [{"role": "user", "content": "Hi!"}]
    fake.enqueue(["Second"])
    cell(shell, "-s 'be terse'", "And again?")
    assert fake.calls[-1]["messages"] == [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "And again?"},
    ]
    assert [t.status for t in magics.session.turns] == ["done", "done"]


def test_no_history_and_new(shell, magics, fake):
    cell(shell, "", "one")
    cell(shell, "--no-history", "two")
    assert fake.calls[-1]["messages"] == [{"role": "user", "content": "two"}]
    assert [t.prompt for t in magics.session.turns] == ["one"]
    cell(shell, "--new", "three")
    assert fake.calls[-1]["messages"] == [{"role": "user", "content": "three"}]
    assert [t.prompt for t in magics.session.turns] == ["three"]


def test_history_trimming_via_trait(shell, magics, fake):
    magics.max_history = 2
    try:
        for i in range(4):
            cell(shell, "", f"q{i}")
        users = [m["content"] for m in fake.calls[-1]["messages"] if m["role"] == "user"]
        assert users == ["q1", "q2", "q3"]
        assert len(magics.session.turns) == 4  # all kept; max_history caps what is sent
    finally:
        magics.max_history = 20


def test_base_url_and_no_stream_passed(shell, magics, fake):
    cell(shell, "--base-url http://127.0.0.1:9/v1 --no-stream", "x")
    assert fake.calls[-1]["base_url"] == "http://127.0.0.1:9/v1"
    assert fake.calls[-1]["stream"] is False


def test_timeout_is_provider_default_unless_set(shell, magics, fake):
    assert UpstageMagics.class_traits()["timeout"].default_value is None
    cell(shell, "--no-stream", "x")
    assert "timeout" not in fake.calls[-1]  # the provider picks 300 s without streaming
    cell(shell, "", "y")
    assert "timeout" not in fake.calls[-1]
    magics.timeout = 7.0
    try:
        cell(shell, "--no-stream", "z")
        assert fake.calls[-1]["timeout"] == 7.0
    finally:
        magics.timeout = None


def test_system_prompt_setting_can_be_cleared(shell, magics, fake):
    shell.run_line_magic("config", "UpstageMagics.system_prompt = 'Be terse.'")
    try:
        cell(shell, "--no-history", "a")
        assert fake.calls[-1]["messages"][0] == {"role": "system", "content": "Be terse."}
    finally:
        shell.run_line_magic("config", "UpstageMagics.system_prompt = ''")
    cell(shell, "--no-history", "b")
    assert [m["role"] for m in fake.calls[-1]["messages"]] == ["user"]
    assert magics.session.system_prompt is None


@pytest.mark.parametrize("line", ["-f nope", "-t hot", "--bogus", "-o 1x", "-o class", "-n"])
def test_bad_options_are_usage_errors(shell, magics, line):
    with pytest.raises(UsageError):
        cell(shell, line, "prompt")


def test_empty_cell_is_usage_error(shell, magics):
    with pytest.raises(UsageError, match="empty"):
        cell(shell, "", "  \n")


# -- placeholders (rules: tests/test_placeholders.py) -------------------------------------


def test_cell_interpolates_from_user_ns_and_raw(shell, magics, fake):
    shell.user_ns["topic"] = "volcanoes"
    cell(shell, "-s 'expert on {topic}'", "Tell me about {topic}. Use {{topic}} literally.")
    msgs = fake.calls[-1]["messages"]
    assert msgs[0] == {"role": "system", "content": "expert on volcanoes"}
    assert msgs[-1]["content"] == "Tell me about volcanoes. Use {topic} literally."
    cell(shell, "--raw", "keep {topic} and {undefined_name}")
    assert fake.calls[-1]["messages"][-1]["content"] == "keep {topic} and {undefined_name}"


def test_pasted_code_is_sent_as_written_and_the_note_says_what_was_filled(shell, magics, fake, capsys):
    shell.user_ns.update(name="Bob", i=3)
    body = 'Explain {name}\'s code:\n```python\nprint(f"Hello, {name} #{i}!")\n```\nand `{i}` and {nope_zz!r}'
    cell(shell, "", body)
    sent = fake.calls[-1]["messages"][-1]["content"]
    assert sent == 'Explain Bob\'s code:\n```python\nprint(f"Hello, {name} #{i}!")\n```\nand `{i}` and {nope_zz!r}'
    out = capsys.readouterr().out
    assert "filled: {name}" in out and "left as written: {nope_zz!r}" in out


# -- formats and -o ---------------------------------------------------------------------------


def test_out_stores_text(shell, magics, fake):
    fake.enqueue(["forty", "-two"])
    cell(shell, "-o answer", "q")
    assert shell.user_ns["answer"] == "forty-two"


def test_text_format_plain_stdout(shell, magics, fake, capsys):
    fake.enqueue(["<b>plain</b>"])
    cell(shell, "-f text", "q")
    assert "<b>plain</b>" in capsys.readouterr().out


def test_code_format_extracts_block_and_next_cell(shell, magics, fake):
    fake.enqueue(["Here:\n```python\nprint('hi')\n", "x = {'a': 1}\n```\nDone."])
    shell.rl_next_input = None
    cell(shell, "-f code -o src -n", "write code")
    assert shell.user_ns["src"] == "print('hi')\nx = {'a': 1}\n"
    assert shell.rl_next_input == "print('hi')\nx = {'a': 1}"
    sys_msg = fake.calls[-1]["messages"][0]
    assert sys_msg["role"] == "system" and "code block" in sys_msg["content"]
    shell.rl_next_input = None
    fake.enqueue(["```\nz\n```"])
    cell(shell, "-f code", "again")  # without -n: nothing is put into the next cell
    assert shell.rl_next_input is None


def test_json_format_parses_and_adds_json_word(shell, magics, fake):
    fake.enqueue(['{"planets": [', '{"name": "Mars"}]}'])
    cell(shell, "-f json -o data", "List planets")
    assert shell.user_ns["data"] == {"planets": [{"name": "Mars"}]}
    call = fake.calls[-1]
    assert call["response_format"] == {"type": "json_object"}
    assert any("JSON" in m["content"] for m in call["messages"] if m["role"] == "system")
    fake.enqueue(['{"a": 1}'])
    cell(shell, "-f json --new", "Answer in JSON please")  # the word is there: no system added
    assert fake.calls[-1]["messages"] == [{"role": "user", "content": "Answer in JSON please"}]


def test_json_fenced_answer_is_accepted(shell, magics, fake):
    fake.enqueue(['```json\n{"a": [1, 2]}\n```'])
    cell(shell, "-f json -o v", "q")
    assert shell.user_ns["v"] == {"a": [1, 2]}


def test_json_unparsable_is_clear_error_text_kept(shell, magics, fake, capsys):
    shell.user_ns.pop("bad", None)
    fake.enqueue(['{"a": 1,,}'])
    with pytest.raises(UsageError, match="not valid JSON.*bad was not set"):
        cell(shell, "-f json -o bad", "q")
    assert '{"a": 1,,}' in capsys.readouterr().out
    assert "bad" not in shell.user_ns
    assert magics.session.turns[-1].answer == '{"a": 1,,}'


def test_length_finish_reason_explained(shell, magics, fake, capsys):
    fake.enqueue(["cut", FinishReason("length"), Usage(1, 1, 2)])
    cell(shell, "--max-tokens 1", "q")
    assert "max_tokens" in capsys.readouterr().out
    assert magics.session.turns[-1].status == "length"


# -- errors and interrupt -------------------------------------------------------------------


def test_provider_error_is_one_line_usage_error_partial_kept(shell, magics, fake, capsys):
    fake.enqueue(["partial ", AuthenticationError("Invalid key test-key-SECRET123.", status=401)])
    from upstage_magic.secrets import register_secret

    register_secret("test-key-SECRET123")
    with pytest.raises(AuthenticationError) as info:
        cell(shell, "", "q")
    lines = info.value._render_traceback_()
    assert len(lines) == 1 and lines[0].startswith("AuthenticationError: Invalid key")
    assert "UPSTAGE_API_KEY" in lines[0] and "SECRET123" not in lines[0]
    assert "partial" in capsys.readouterr().out
    turn = magics.session.turns[-1]
    assert (turn.status, turn.answer) == ("error", "partial ")
    fake.enqueue(["fine"])
    cell(shell, "", "next")  # healthy afterwards
    assert magics.session.turns[-1].status == "done"


def test_run_cell_shows_one_line_error(shell, magics, fake, capsys):
    fake.enqueue([AuthenticationError("Invalid key.", status=401)])
    result = shell.run_cell("%%upstage\nq")
    shown = capsys.readouterr()
    out = (shown.out + shown.err).strip()
    assert isinstance(result.error_in_exec, AuthenticationError)  # "Run all" stops here
    assert out.startswith("AuthenticationError: Invalid key.") and out.count("\n") == 0, out
    assert "Traceback" not in out and "aiohttp" not in out and "Upstage: Upstage" not in out


def test_interrupt_keeps_partial_marked_stopped(shell, magics, fake, capsys):
    fake.enqueue(["part one ", KeyboardInterrupt()])  # raised on the stream side...
    with pytest.raises(KeyboardInterrupt):
        cell(shell, "", "q")
    out = capsys.readouterr().out
    assert "part one" in out and "stopped" in out
    assert magics.session.turns[-1].status == "stopped"


def test_interrupt_in_caller_thread_cancels_stream(shell, magics, fake, capsys, monkeypatch):
    """A KeyboardInterrupt in the main thread (where SIGINT lands) stops the stream."""
    import upstage_magic.notebook.display as display_mod

    calls = {"n": 0}
    original = display_mod.PlainView.changed

    def changed(self, **kw):
        original(self, **kw)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(display_mod.PlainView, "changed", changed)
    fake.pause = 0.01  # each chunk its own network read, so each is its own hand-over
    fake.enqueue([f"t{i} " for i in range(100)])
    with pytest.raises(KeyboardInterrupt):
        cell(shell, "", "q")
    turn = magics.session.turns[-1]
    full = "".join(f"t{i} " for i in range(100))
    assert turn.status == "stopped" and turn.answer.startswith("t0 t1 ") and full.startswith(turn.answer)
    assert len(turn.answer) < len(full)  # the stream was cancelled, not run to the end
    out = capsys.readouterr().out
    assert "stopped" in out and turn.answer in out  # everything recorded was shown


# -- rich display ------------------------------------------------------------------------------


@pytest.fixture
def captured(shell, magics):
    pub = CapturingDisplayPublisher()
    saved = shell.display_pub
    shell.display_pub = pub
    magics.display_mode = "rich"
    try:
        yield pub.outputs
    finally:
        shell.display_pub = saved


def test_rich_markdown_is_sanitised_and_bounded(shell, magics, fake, captured):
    hostile = "Hi <img src=x onerror=alert(1)>\n\n```html\n<script>x()</script>\n```\n"
    fake.enqueue(list(hostile) * 1 + [Usage(1, 2, 3)])
    cell(shell, "", "q")
    assert all("text/markdown" not in o["data"] for o in captured)  # never Markdown for the front end
    pages = [o["data"]["text/html"] for o in captured]
    final = pages[-2]  # the last is the footer
    assert "<img" not in final and "<script" not in final
    import html as html_mod
    import re as re_mod

    code_text = html_mod.unescape(re_mod.sub(r"<[^>]+>", "", final.split("<pre", 1)[1].split(">", 1)[1]))
    assert "<script>x()</script>" in code_text  # the code, escaped and highlighted, reads exactly
    assert captured[-2]["data"]["text/plain"] == hostile
    assert len(captured) <= 5  # first, maybe one update, final, footer
    assert captured[0]["transient"]["display_id"] and captured[1]["update"]
    footer = captured[-1]["data"]["text/plain"]
    assert "3 out" not in footer and "1 in / 2 out" in footer


def test_rich_json_shows_pretty_block(shell, magics, fake, captured):
    fake.enqueue(['{"a":', '[1,2]}'])
    cell(shell, "-f json", "q")
    final = [o for o in captured if o["update"]][-1]["data"]
    assert final["text/plain"] == json.dumps({"a": [1, 2]}, indent=2)
    assert "<pre" in final["text/html"] and "text/markdown" not in final


def test_rich_text_format_has_no_markdown(shell, magics, fake, captured):
    fake.enqueue(["<b>x</b>"])
    cell(shell, "-f text --no-stream", "q")
    assert captured[0]["data"]["text/plain"] == "<b>x</b>"
    assert "&lt;b&gt;x&lt;/b&gt;" in captured[0]["data"]["text/html"] and "text/markdown" not in captured[0]["data"]


# -- line magic ---------------------------------------------------------------------------------


def line(shell, text: str):
    return shell.run_line_magic("upstage", text)


def test_line_models_config_history_reset_export(shell, magics, fake, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("UPSTAGE_API_KEY", "test-key-SECRET123")
    line(shell, "models")
    out = capsys.readouterr().out
    assert "fake-large" in out and "from the API" in out
    line(shell, "config")
    out = capsys.readouterr().out
    assert "set (from UPSTAGE_API_KEY)" in out and "SECRET123" not in out and "fake-model" in out
    cell(shell, "", "remember me")
    capsys.readouterr()
    line(shell, "history")
    assert "remember me" in capsys.readouterr().out
    capsys.readouterr()
    line(shell, f"export {tmp_path / 'c.json'}")
    assert "Saved 1 turn to" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["turns"][0]["prompt"] == "remember me"
    with pytest.raises(UsageError):
        line(shell, f"export {tmp_path / 'c.txt'}")
    line(shell, "reset")
    assert magics.session.turns == []
    with pytest.raises(UsageError):
        line(shell, "frobnicate")


def test_line_models_falls_back_to_known_list(shell, magics, fake, capsys):
    async def broken(**kw):
        raise AuthenticationError("nope", status=401)

    fake.list_models = broken
    line(shell, "models")
    out = capsys.readouterr().out
    assert "known list" in out and "fake-mini" in out


def test_line_key_uses_getpass_and_masks(shell, magics, capsys, monkeypatch):
    from upstage_magic import settings

    monkeypatch.delenv("UPSTAGE_API_KEY", raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "test-key-SECRET123")
    try:
        line(shell, "key")
        assert settings.get_api_key() == "test-key-SECRET123"
        line(shell, "config")
        out = capsys.readouterr().out
        assert "set (in memory" in out and "SECRET123" not in out
    finally:
        settings.set_api_key(None)
    line(shell, "config")
    assert "not set" in capsys.readouterr().out


def test_line_chat_without_widget_is_clear(shell, magics, monkeypatch):
    monkeypatch.setitem(sys.modules, "upstage_magic.notebook.widget", None)  # import fails
    with pytest.raises(UsageError, match="chat widget is not available"):
        line(shell, "chat")


def test_line_chat_opens_widget_on_shared_session(shell, magics, captured):
    from ipywidgets.widgets.widget import _instances

    line(shell, "chat")
    views = [o["data"]["application/vnd.jupyter.widget-view+json"] for o in captured
             if "application/vnd.jupyter.widget-view+json" in o["data"]]
    assert len(views) == 1
    widget = _instances[views[0]["model_id"]]
    assert type(widget).__name__ == "ChatWidget" and widget.session is magics.session


# -- today's API: reasoning controls, retired models, grouped model list ----------------------------


def test_think_flags_map_per_model(shell, magics, fake):
    for model, flag, effort in (("solar-pro4", "--think", "medium"), ("solar-pro4", "--no-think", "none"),
                                ("solar-pro3", "--no-think", "low"), ("solar-mini4", "--no-think", "none")):
        cell(shell, f"-m {model} {flag}", "q")
        assert fake.calls[-1]["reasoning_effort"] == effort, (model, flag)
    with pytest.raises(UsageError, match="choose one"):
        cell(shell, "--think --no-think", "q")


def test_effort_the_model_refuses_is_an_error_and_sends_nothing(shell, magics, fake):
    with pytest.raises(UsageError) as info:
        cell(shell, "-m solar-pro3 --reasoning-effort max", "q")
    assert "'low', 'medium' or 'high'" in str(info.value) and "Nothing was sent" in str(info.value)
    assert fake.calls == [] and magics.session.active is None and magics.session.turns == []
    cell(shell, "-m brand-new-model --reasoning-effort max", "q")  # unknown models pass unchecked
    assert fake.calls[-1]["reasoning_effort"] == "max"


def test_retired_model_gets_a_notice_and_is_sent_anyway(shell, magics, fake, capsys):
    cell(shell, "-m solar-pro2", "q")
    err = capsys.readouterr().err
    assert "solar-pro2 was retired" in err and "use solar-pro4" in err
    assert fake.calls[-1]["model"] == "solar-pro2"


def test_models_listing_is_grouped_and_cached(shell, magics, fake, capsys):
    calls = []

    async def listing(**kw):
        calls.append(kw)
        return ["solar-pro4-260806", "solar-pro4", "solar-mini4", "solar-mini4-260922", "solar-pro3"]

    fake.list_models = listing
    line(shell, "models")
    out = capsys.readouterr().out
    rows = out.splitlines()[1:]
    assert rows[0].strip().startswith("solar-pro4  (solar-pro4-260806)")
    assert rows[1].strip().startswith("solar-mini4  (solar-mini4-260922)")
    assert len(rows) == 3
    line(shell, "models --all")
    assert len(calls) == 1  # the live list is cached per provider and base URL
    line(shell, "models --refresh")
    assert len(calls) == 2


def test_each_answer_is_logged_once_and_resume_restores_it(shell, magics, fake, capsys, tmp_path):
    magics.log_path = str(tmp_path / "logs.db")
    try:
        magics.new_conversation()
        cell(shell, "", "first question")
        cell(shell, "", "second question")
        cell(shell, "--no-history", "a one-off")  # not part of the conversation: not logged
        line(shell, "reset")
        assert magics.session.turns == []
        line(shell, "resume")
        assert [t.prompt for t in magics.session.turns] == ["first question", "second question"]
        cell(shell, "", "third")
        assert [m["content"] for m in fake.calls[-1]["messages"] if m["role"] == "user"] == [
            "first question", "second question", "third"]
        line(shell, "log")
        out = capsys.readouterr().out
        assert "first question" in out and "logs.db" in out
    finally:
        magics.log_path = None


# -- batch: %%upstage --map -----------------------------------------------------------------------


def test_map_runs_the_cell_once_per_item_in_order(shell, magics, fake, capsys):
    class Echo(FakeProvider):
        async def create_async_generator(self, model, messages, proxy=None, **kwargs):
            self.calls.append({"model": model, "messages": [dict(m) for m in messages], **kwargs})
            yield "A:" + messages[-1]["content"]

    magics.provider = echo = Echo()
    shell.user_ns["rows"] = ["red", "green", "blue"]
    shell.user_ns["topic"] = "colours"
    stored = cell(shell, "--map rows -o answers --no-cache -t 0.2", "Say {item} ({index}) about {topic}")
    assert stored is None  # with -o the cell shows the progress, not every row as its Out (issue 17)
    assert list(shell.user_ns["answers"]) == [f"A:Say {c} ({i}) about colours" for i, c in enumerate(["red", "green", "blue"])]
    assert len(echo.calls) == 3 and all(c["temperature"] == 0.2 for c in echo.calls)
    assert list(cell(shell, "--map rows --no-cache -t 0.2", "Say {item} ({index}) about {topic}")) == list(shell.user_ns["answers"])
    assert magics.session.turns == []  # a batch is not part of the conversation
    with pytest.raises(UsageError, match="--map"):
        cell(shell, "--map nowhere -o x --no-cache", "{item}")
    with pytest.raises(UsageError, match="work with --map"):
        cell(shell, "--no-cache", "q")


# -- defects found in the redesign (each failed before it) -----------------------------------------


def test_code_and_json_keep_their_format_when_the_model_reasons_or_calls_a_tool(shell, magics, fake, captured):
    from upstage_magic.events import Reasoning, ToolCall

    fake.enqueue([Reasoning("thinking about it"), "Sure, here it is:\n```python\nx = 1\n```\nHope that helps."])
    cell(shell, "-f code -o code_out", "q")
    final = [o for o in captured if o["update"]][-1]["data"]
    assert "Hope that helps" not in final["text/plain"] and final["text/plain"] == "x = 1\n"
    assert "um-thinking" in final["text/html"] and "Hope that helps" not in final["text/html"]
    assert shell.user_ns["code_out"] == "x = 1\n"
    captured.clear()
    fake.enqueue(['{"a": 1}', ToolCall("f", "{}", "c1")])
    cell(shell, "-f json -o data", "q (JSON)")
    final = [o for o in captured if o.get("update")][-1]["data"]
    assert final["text/plain"].startswith(json.dumps({"a": 1}, indent=2)) and shell.user_ns["data"] == {"a": 1}


def test_resume_of_an_unknown_id_and_a_corrupt_log_are_one_line_errors(shell, magics, tmp_path):
    magics.log_path = str(tmp_path / "logs.db")
    try:
        with pytest.raises(UsageError, match="no conversation 999 in the log"):
            line(shell, "resume 999")
        (tmp_path / "bad.db").write_bytes(b"not a database" * 100)
        magics.log_path = str(tmp_path / "bad.db")
        with pytest.raises(UsageError, match="cannot be used|Cannot open"):
            line(shell, "log")
    finally:
        magics.log_path = None


def test_map_takes_a_quoted_schema_name_like_a_single_cell(shell, magics, fake):
    fake.enqueue(['{"label": "pos"}'])
    shell.user_ns["rows"] = ["good"]
    shell.user_ns["S"] = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    cell(shell, "--map rows -o labels -f json --schema 'S' --no-cache", "Label {item} as JSON")
    assert list(shell.user_ns["labels"]) == [{"label": "pos"}]


def test_an_unexpected_exception_keeps_its_traceback(shell, magics, fake, capsys):
    fake.enqueue(["partial ", ZeroDivisionError("a bug somewhere")])
    with pytest.raises(ZeroDivisionError) as info:
        cell(shell, "", "q")
    assert not hasattr(info.value, "_render_traceback_")  # IPython shows the whole traceback
    assert "partial" in capsys.readouterr().out  # what was shown stays
    assert magics.session.turns[-1].status == "error"


def test_widget_retry_takes_the_answer_back_out_of_the_log(shell, magics, fake, tmp_path):
    from upstage_magic.log import ConversationLog

    magics.log_path = str(tmp_path / "logs.db")
    try:
        magics.new_conversation()
        cell(shell, "", "first")
        fake.enqueue(["an answer to retry"])
        cell(shell, "", "second")
        magics.session.pop_last()  # what the widget's Retry does before asking again
        rows = ConversationLog(tmp_path / "logs.db").load(magics.log.conversation)
        assert [r["prompt"] for r in rows] == ["first"]
    finally:
        magics.log_path = None


def test_the_live_model_list_is_cached_per_key(shell, magics, fake, capsys, monkeypatch):
    from upstage_magic import settings

    lists = iter([["fake-one"], ["fake-two"]])

    async def listing(**kw):
        return next(lists)

    fake.list_models = listing
    monkeypatch.setattr(settings, "_api_key", None)
    monkeypatch.setenv("UPSTAGE_API_KEY", "test-key-FIRST1")
    line(shell, "models")
    assert "fake-one" in capsys.readouterr().out
    settings.set_api_key("test-key-SECOND2")  # %upstage key with another key
    line(shell, "models")
    assert "fake-two" in capsys.readouterr().out


def test_a_thousand_cells_under_a_tiny_switch_interval_store_exact_values(shell, magics, fake):
    """One owner per answer: the worker moves raw items, the cell's thread applies them."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        magics.max_history = 0
        for n in range(1000):
            pieces = [f"{n}.{i} " for i in range(n % 13 + 1)]
            fake.enqueue(pieces)
            cell(shell, "-o got", f"q{n}")
            assert shell.user_ns["got"] == magics.session.turns[-1].answer == "".join(pieces), n
    finally:
        sys.setswitchinterval(old)
        magics.max_history = 20


def test_cell_magic_help_prints_the_options(shell, magics, capsys):
    shell.run_cell_magic("upstage", "--help", "anything")  # IPython itself refuses an empty body
    out = capsys.readouterr().out
    assert "%%upstage" in out and "--no-history" in out and "--map" in out
