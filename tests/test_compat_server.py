"""Issue 21 part 3, the rest: another OpenAI-compatible server is named as itself in errors,
its own models are not called retired, its model is used when none is set, and totals that
include estimates say so."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from upstage_magic import errors
from upstage_magic.emulator import Emulator
from upstage_magic.providers import Upstage

from .support.harness import free_port
from .test_provider_http import CompatResponse

KEY = "test-key-SECRET123"
MSGS = [{"role": "user", "content": "Hi"}]
UPSTAGE_CHAT = "https://api.upstage.ai/v1/chat/completions"
LOCAL_CHAT = "http://10.1.2.3:8000/v1/chat/completions"


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Any:
    from aioresponses import core

    monkeypatch.setattr(core, "ClientResponse", CompatResponse)  # aioresponses 0.7.9 vs aiohttp 3.14
    return aioresponses


async def collect(**kw: Any) -> list[Any]:
    return [c async for c in Upstage.create_async_generator("solar-mini4", MSGS, api_key=KEY, **kw)]


# ------------------------------------------------------------------------ errors name the server


async def test_a_refused_connection_names_the_local_server_not_upstage() -> None:
    port = free_port()  # nothing listens there: a real refused connection over loopback
    with pytest.raises(errors.APIConnectionError) as info:
        await collect(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    assert info.value.message.startswith(f"Could not connect to the server at 127.0.0.1:{port} (")
    assert "Upstage" not in info.value.message


async def test_a_first_byte_timeout_names_the_local_server(emulator: Emulator) -> None:
    emulator.set_fault({"kind": "slow_first_byte", "seconds": 2})
    host = emulator.base_url.split("/")[2]
    with pytest.raises(errors.APITimeoutError) as info:
        await collect(base_url=emulator.base_url, timeout=0.2, max_retries=0)
    assert info.value.message.startswith(f"The server at {host} did not answer within the timeout")


def _refused(host: str) -> aiohttp.ClientConnectorError:
    from types import SimpleNamespace

    return aiohttp.ClientConnectorError(SimpleNamespace(host=host, port=443, ssl=True),
                                        ConnectionRefusedError(111, "Connection refused"))


@pytest.mark.parametrize("make, phrase", [
    (lambda h: _refused(h), "Could not connect to {api} ("),
    (lambda h: aiohttp.ServerDisconnectedError(), "The connection to {api} broke before an answer arrived"),
    (lambda h: aiohttp.ClientSSLError(_refused(h)._conn_key, OSError("bad cert")), "TLS/SSL error talking to {api}"),
    (lambda h: aiohttp.ClientPayloadError("odd"), "Request to {api} failed"),
])
async def test_every_transport_error_names_the_server_it_was_talking_to(sleeps: list[float], mocked: Any, make: Any,
                                                                       phrase: str) -> None:
    for url, api in ((UPSTAGE_CHAT, "the Upstage API"), (LOCAL_CHAT, "the server at 10.1.2.3:8000")):
        with mocked() as m:
            m.post(url, exception=make(url.split("/")[2]), repeat=True)
            with pytest.raises(errors.APIConnectionError) as info:
                await collect(base_url=url.removesuffix("/chat/completions"), max_retries=0)
        assert info.value.message.startswith(phrase.format(api=api)), info.value.message
        if api != "the Upstage API":
            assert "Upstage" not in info.value.message


@pytest.mark.parametrize("status", [500, 503])
async def test_a_5xx_hint_names_the_server(sleeps: list[float], mocked: Any, status: int) -> None:
    with mocked() as m:
        m.post(LOCAL_CHAT, status=status, payload={"error": {"message": "boom"}}, repeat=True)
        with pytest.raises(errors.ServerError) as info:
            await collect(base_url=LOCAL_CHAT.removesuffix("/chat/completions"), max_retries=0)
    assert "Upstage" not in str(info.value) and "The server at 10.1.2.3:8000 had a problem" in str(info.value)


def test_no_user_facing_string_names_upstage_outside_the_one_helper() -> None:
    """Error texts name the server through errors.api_name / server_problem_hint, not by hand."""
    import ast

    root = Path(errors.__file__).parent
    offenders = []
    for path in [*root.glob("*.py"), *root.glob("providers/*.py"), *root.glob("notebook/*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and re.search(r"the Upstage (API|service)\b", node.value, re.IGNORECASE):
                offenders.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert [o for o in offenders if not o.startswith("errors.py:")] == []
    assert len(offenders) == 2  # errors.api_name's "the Upstage API" and server_problem_hint's "The Upstage service"
    assert errors.api_name("https://api.upstage.ai/v1") == "the Upstage API"
    assert errors.api_name("http://localhost:8000/v1", start=True) == "The server at localhost:8000"



# ------------------------------------------------------------------------ the server's own models

from collections.abc import Iterator  # noqa: E402

from upstage_magic import models  # noqa: E402
from upstage_magic.request import Ask, plan  # noqa: E402
from upstage_magic.settings import Settings  # noqa: E402


class Listing:
    """A provider whose list_models returns ``ids`` (only the list matters here)."""

    def __init__(self, ids: list[str]) -> None:
        self.ids, self.asked = ids, 0

    async def list_models(self, **options: Any) -> list[str]:
        self.asked += 1
        return list(self.ids)

    def get_model(self, name: str | None) -> str:
        return name or models.DEFAULT_MODEL


async def test_a_retired_notice_only_on_upstages_api_and_never_for_a_model_the_server_lists(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPSTAGE_BASE_URL", raising=False)
    upstage, local = "https://api.upstage.ai/v1", "http://127.0.0.1:8000/v1"
    ask = Ask("hi", model="solar-pro2")
    assert plan(Settings(base_url=local), ask).notices == ()  # another server's model is its own
    assert "solar-pro2 was retired" in plan(Settings(), ask).notices[0]  # Upstage's API (the default URL)
    assert "solar-pro2 was retired" in plan(Settings(base_url=upstage), ask).notices[0]
    ids, note = await models.fetch_models(Listing(["solar-pro2", "solar-pro4"]), base_url=upstage)
    assert note is None and ids == ["solar-pro2", "solar-pro4"]
    assert plan(Settings(base_url=upstage), ask).notices == ()  # Upstage's own live list offers it: the truth
    assert plan(Settings(), Ask("hi", model="solar-mini")).notices  # one it does not list still is


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Iterator[tuple[Any, Any, Emulator]]:
    """An IPython shell with the magic (the real provider) and a local OpenAI-compatible server
    (the emulator in compat mode, over loopback) as UPSTAGE_BASE_URL."""
    from IPython.core.interactiveshell import InteractiveShell

    from upstage_magic.emulator import serve_in_thread
    from upstage_magic.session import ChatSession

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "upstage_magic")
    try:
        m = shell.magics_manager.registry["UpstageMagics"]
        m.provider, m.session, m.display_mode, m.model, m.footer = None, ChatSession(), "plain", "", True
        with serve_in_thread(api_key=KEY) as emu:
            emu.configure(compat="openai-local")
            monkeypatch.setenv("UPSTAGE_BASE_URL", emu.base_url)
            monkeypatch.setenv("UPSTAGE_API_KEY", KEY)
            monkeypatch.delenv("UPSTAGE_MODEL", raising=False)
            capsys.readouterr()
            yield shell, m, emu
    finally:
        shell.run_line_magic("unload_ext", "upstage_magic")


def test_a_local_server_calling_its_model_solar_pro2_gets_no_retired_notice(local: Any,
                                                                             capsys: pytest.CaptureFixture) -> None:
    shell, m, emu = local
    emu.configure(local_model="solar-pro2")
    for _ in range(2):
        shell.run_cell_magic("upstage", "-m solar-pro2", "Hi")
    out = capsys.readouterr()
    assert "retired" not in out.err + out.out and [r["model"] for r in emu.requests] == ["solar-pro2"] * 2
    emu.set_fault({"kind": "status", "status": 404, "message": "The model 'solar-pro2' does not exist"})
    with pytest.raises(errors.ModelNotFoundError) as info:
        shell.run_cell_magic("upstage", "-m solar-pro2", "Hi")
    assert "retired" not in str(info.value) and "retired" not in capsys.readouterr().err  # not in the hint
    shell.run_line_magic("upstage", "models --refresh")
    listing = capsys.readouterr().out
    assert "Models (from the API):" in listing and "solar-pro2" in listing and "[retired]" not in listing


def test_a_retired_notice_on_upstages_api_is_said_once_per_model(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from tests.support.fake import FakeProvider
    from upstage_magic.session import ChatSession

    monkeypatch.delenv("UPSTAGE_BASE_URL", raising=False)  # Upstage's API
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "upstage_magic")
    try:
        m = shell.magics_manager.registry["UpstageMagics"]
        m.provider, m.session, m.display_mode, m.model = FakeProvider(), ChatSession(), "plain", ""
        for model in ("solar-pro2", "solar-pro2", "solar-mini", "solar-pro2", "solar-mini"):
            shell.run_cell_magic("upstage", f"-m {model}", "q")
        err = capsys.readouterr().err
        assert err.count("solar-pro2 was retired") == 1 and err.count("solar-mini is a legacy name") == 1
        assert [c["model"] for c in m.provider.calls] == ["solar-pro2", "solar-pro2", "solar-mini",
                                                          "solar-pro2", "solar-mini"]  # sent anyway
        m.session = ChatSession()  # a new session says it again
        shell.run_cell_magic("upstage", "-m solar-pro2", "q")
        assert "solar-pro2 was retired" in capsys.readouterr().err
    finally:
        shell.run_line_magic("unload_ext", "upstage_magic")


def test_with_no_model_set_the_model_a_local_server_lists_is_used_and_said_once(
        local: Any, capsys: pytest.CaptureFixture) -> None:
    shell, m, emu = local
    shell.run_cell_magic("upstage", "", "Hi")
    first = capsys.readouterr().out
    shell.run_cell_magic("upstage", "", "And again?")
    second = capsys.readouterr().out
    assert [r["model"] for r in emu.requests] == ["local-model", "local-model"]  # not solar-pro4
    said = "No model set: using local-model, the one the server lists"
    assert first.count(said) == 1 and said not in second
    assert re.search(r"^\[local-model · ", first, re.MULTILINE)  # the footer names it too
    shell.run_line_magic("upstage", "config")
    assert re.search(r"^model\s+local-model$", capsys.readouterr().out, re.MULTILINE)


def test_a_chosen_model_or_upstage_model_is_sent_as_chosen(local: Any, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    shell, m, emu = local
    shell.run_cell_magic("upstage", "-m solar-mini4", "Hi")
    monkeypatch.setenv("UPSTAGE_MODEL", "my-model")
    shell.run_cell_magic("upstage", "", "Hi")
    assert [r["model"] for r in emu.requests] == ["solar-mini4", "my-model"]
    assert "No model set" not in capsys.readouterr().out


def test_a_server_that_also_lists_the_default_keeps_it(local: Any, capsys: pytest.CaptureFixture) -> None:
    """The emulator as Upstage's API (on loopback, so not Upstage's URL) lists solar-pro4: it is kept."""
    shell, m, emu = local
    emu.configure(compat=None)
    shell.run_cell_magic("upstage", "", "Hi")
    assert [r["model"] for r in emu.requests] == ["solar-pro4"]
    assert "No model set" not in capsys.readouterr().out


def test_a_model_list_that_fails_is_asked_once_and_the_default_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from tests.support.fake import FakeProvider
    from upstage_magic.session import ChatSession

    asked = []

    async def broken(**kw: Any) -> list[str]:
        asked.append(kw)
        raise errors.APIConnectionError("no list here")

    monkeypatch.setenv("UPSTAGE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("UPSTAGE_MODEL", raising=False)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "upstage_magic")
    try:
        m = shell.magics_manager.registry["UpstageMagics"]
        fake = FakeProvider()
        fake.list_models = broken  # type: ignore[attr-defined]
        m.provider, m.session, m.display_mode, m.model = fake, ChatSession(), "plain", ""
        for _ in range(3):
            shell.run_cell_magic("upstage", "", "q")
    finally:
        shell.run_line_magic("unload_ext", "upstage_magic")
    assert len(asked) == 1 and [c["model"] for c in fake.calls] == ["fake-model"] * 3


# ------------------------------------------------------------------------ totals that include estimates


async def test_session_totals_that_include_an_estimate_are_marked(emulator: Emulator) -> None:
    from upstage_magic.session import ChatSession, Exchange

    session = ChatSession()
    for compat in (None, None):  # two answers whose usage the server reported
        emulator.configure(compat=compat)
        request = plan(Settings(base_url=emulator.base_url), Ask("Hi", model="solar-mini4", extra={"api_key": KEY}),
                       session=session)
        async for _ in Exchange(request, session).stream(Upstage):
            pass
    assert not session.usage.estimated and not session.totals_text().startswith("~")
    reported = session.usage
    emulator.configure(compat="openai-local")  # one whose usage the client estimated
    request = plan(Settings(base_url=emulator.base_url), Ask("Hi", model="solar-mini4", extra={"api_key": KEY}),
                   session=session)
    async for _ in Exchange(request, session).stream(Upstage):
        pass
    assert session.usage.estimated and session.usage.prompt_tokens > reported.prompt_tokens
    text = session.totals_text()
    assert text.startswith(f"~{session.usage.prompt_tokens} prompt + ~{session.usage.completion_tokens} answer")
    assert "estimated" in text and f"_Total: {text}._" in session.export_markdown()
    session.pop_last()  # the estimated turn gone: the totals are the server's again
    assert not session.usage.estimated and session.totals_text() == (
        f"{reported.prompt_tokens} prompt + {reported.completion_tokens} answer tokens")


def test_per_answer_stats_mark_an_estimate() -> None:
    from types import SimpleNamespace

    from upstage_magic.events import Usage
    from upstage_magic.notebook.display import stats_parts

    est = SimpleNamespace(usage=Usage(40, 120, 160, estimated=True))
    assert stats_parts(est)[0] == "~40 prompt + ~120 answer tokens"
    assert stats_parts(SimpleNamespace(usage=Usage(40, 120, 160)))[0] == "40 prompt + 120 answer tokens"


async def test_a_batch_summary_marks_estimated_tokens(emulator: Emulator, mocked: Any, tmp_path: Path) -> None:
    from upstage_magic.notebook.batch import abatch

    out = await abatch("Say {item}", ["a", "b"], base_url=emulator.base_url, api_key=KEY, model="solar-mini4",
                       cache=False)
    assert re.search(r"tokens [1-9][\d,]* in / [1-9][\d,]* out", out.stats.summary())  # reported: no ~
    assert not out.stats.tokens_estimated
    answer = {"id": "x", "object": "chat.completion", "model": "local-model",  # a server that reports no usage
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}]}
    cache = tmp_path / "batch.sqlite3"
    with mocked() as m:
        m.post(LOCAL_CHAT, payload=answer, repeat=True)
        out = await abatch("Say {item}", ["a", "b"], base_url=LOCAL_CHAT.removesuffix("/chat/completions"),
                           api_key=KEY, model="local-model", cache=cache)
        # Again, from the cache: nothing sent, and the totals are still marked as estimates.
        again = await abatch("Say {item}", ["a", "b"], base_url=LOCAL_CHAT.removesuffix("/chat/completions"),
                             api_key=KEY, model="local-model", cache=cache)
        sent = sum(len(calls) for calls in m.requests.values())
    await Upstage.aclose()
    assert out == ["fine", "fine"] and out.stats.tokens_estimated
    assert re.search(r"tokens ~[1-9][\d,]* in / ~[1-9][\d,]* out", out.stats.summary())
    assert sent == 2 and again == ["fine", "fine"] and again.stats.cached == 2
    assert again.stats.tokens_estimated and again.stats.tokens_text() == out.stats.tokens_text()


def test_the_log_keeps_an_estimate_marked_in_listings_and_resumed_totals(tmp_path: Path) -> None:
    from upstage_magic.events import Usage
    from upstage_magic.log import ConversationLog, format_conversations, session_turns
    from upstage_magic.session import ChatSession

    log = ConversationLog(tmp_path / "log.sqlite3")
    plain, mixed = log.new_conversation(), log.new_conversation()
    log.append(plain, {"prompt": "q", "answer": "a", "usage": Usage(3, 4, 7).to_dict()})
    log.append(mixed, {"prompt": "q", "answer": "a", "usage": Usage(3, 4, 7).to_dict()})
    log.append(mixed, {"prompt": "q2", "answer": "a2", "usage": Usage(10, 20, 30, estimated=True).to_dict()})
    rows = {r.id: r for r in log.recent()}
    assert not rows[plain].estimated and rows[mixed].estimated
    table = format_conversations([rows[plain], rows[mixed]])
    assert re.search(rf"^\s*{mixed}\s.*\s~37\s", table, re.MULTILINE)
    assert re.search(rf"^\s*{plain}\s.*\s7\s", table, re.MULTILINE)
    session = ChatSession()
    session.load_turns(session_turns(log.load(mixed)))  # %upstage resume
    assert session.usage.estimated and session.totals_text().startswith("~13 prompt + ~24 answer")


# ------------------------------------------------------------------------ the fallback, beyond the process


async def test_a_refused_json_schema_is_remembered_by_the_next_process(emulator: Emulator, stored_server_facts: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import json
    import os
    import sys

    from upstage_magic import cache
    from upstage_magic.providers import jsonmode

    monkeypatch.setattr(jsonmode, "_JSON_SCHEMA", {})
    emulator.configure(compat="openai-local")
    schema = {"type": "object", "properties": {"label": {"enum": ["pos", "neg"]}}, "required": ["label"]}
    rf = {"type": "json_schema", "json_schema": {"name": "v", "schema": schema}}
    script = ("import asyncio, sys\nfrom upstage_magic.providers import Upstage\n"
              "async def main():\n    out = [c async for c in Upstage.create_async_generator('m', "
              f"[{{'role': 'user', 'content': 'label it'}}], api_key={KEY!r}, base_url={emulator.base_url!r}, "
              f"response_format={rf!r}, stream=False)]\n    await Upstage.aclose()\n"
              "    print(''.join(c for c in out if isinstance(c, str)))\nasyncio.run(main())\n")
    for run in range(2):  # two processes, one after the other
        emulator.requests.clear()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=dict(os.environ),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert json.loads(out.decode())["label"] in ("pos", "neg")
        kinds = [r["response_format"]["type"] for r in emulator.requests]
        assert kinds == (["json_schema", "json_object"] if run == 0 else ["json_object"]), (run, kinds)
    assert cache.server_fact(emulator.base_url, "json_schema") == "refused"
    cache.clear_cache()  # %upstage cache clear forgets it too
    assert cache.server_fact(emulator.base_url, "json_schema") is None



async def test_the_chat_widget_uses_the_model_the_local_server_lists(emulator: Emulator,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from upstage_magic.notebook.widget import ChatWidget
    from upstage_magic.session import ChatSession

    emulator.configure(compat="openai-local")
    monkeypatch.setenv("UPSTAGE_BASE_URL", emulator.base_url)
    monkeypatch.setenv("UPSTAGE_API_KEY", KEY)
    monkeypatch.delenv("UPSTAGE_MODEL", raising=False)
    w = ChatWidget(provider=Upstage, session=ChatSession())
    try:
        await w._models_task
        assert "local-model" in w.models
        assert w.request_for("Hi").model == "local-model"
        assert w._default_model() == "local-model"
    finally:
        w.close()
        await Upstage.aclose()
