"""Every field a hostile server sends is masked before it is shown, stored or returned.

A hostile OpenAI-compatible server (``tests/support/hostile.py``, real aiohttp on loopback)
echoes the request's key into every field of every reply and error: model ids, stream
metadata, finish reasons, usage, tool calls, reasoning, JSON bodies and HTML error pages
for each status, stream error events, malformed events. The key is repeated back to back,
so a text cut to any length is cut inside a copy of the key. Checked at each layer: the
provider's errors (every attribute) and whole values, the exchange and its turn (also
while it streams, as a live view shows it), the conversation's exports, the conversation
log's file, the batch results, failures table, answer cache file and ``-o`` values. Needles:
the key and its first and last 12 characters.
"""
from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hostile import MODES, STATUSES, HostileServer, find_needles, make_key
from upstage_magic.errors import UpstageError
from upstage_magic.events import Reasoning
from upstage_magic.log import ConversationLog, SessionLog
from upstage_magic.providers import Upstage
from upstage_magic.request import Ask, plan
from upstage_magic.secrets import mask_partial
from upstage_magic.session import ChatSession
from upstage_magic.settings import Settings

KEY = make_key()
ERROR_MODES = tuple(m for m in MODES if m.startswith(("status-", "html-", "text-"))
                    or m in ("error-event", "event-error", "malformed"))


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def hostile_env(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> HostileServer:
    """The canary is the key in use (so it is registered) and the hostile server the base URL."""
    monkeypatch.setenv("UPSTAGE_API_KEY", KEY)
    monkeypatch.setenv("UPSTAGE_BASE_URL", server.base_url)
    return server


def leaks(value: Any, where: str) -> list[str]:
    return find_needles(deep_text(value), KEY, where)


def deep_text(value: Any, depth: int = 0) -> str:
    """``repr`` and ``str`` of a value and, for exceptions and objects, of their attributes."""
    parts = [repr(value), str(value)]
    if depth < 3:
        if isinstance(value, BaseException):
            parts += [deep_text(a, depth + 1) for a in value.args]
            parts += [deep_text(v, depth + 1) for v in (value.__cause__, value.__context__) if v is not None]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            parts += [deep_text(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)]
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            parts += [deep_text(v, depth + 1) for v in vars(value).values()]
        if isinstance(value, dict):
            parts += [deep_text(v, depth + 1) for v in value.values()]
        elif isinstance(value, (list, tuple)):
            parts += [deep_text(v, depth + 1) for v in value]
    return "\n".join(parts)


def test_the_server_echoes_the_key_everywhere(server: HostileServer) -> None:
    """The test can fail: without masking, each mode's reply holds the key (and its ends)."""
    import json
    import urllib.request

    for mode in ("answer", "status-500", "html-404", "error-event"):
        req = urllib.request.Request(server.base_url + "/chat/completions", method="POST",
                                     data=json.dumps({"stream": True, "messages": [
                                         {"role": "user", "content": f"mode={mode}"}]}).encode(),
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            body = opener.open(req, timeout=10).read().decode()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode()
        assert len(find_needles(body, KEY, mode)) == 3, mode
    assert not find_needles("hk-CANARY-*** " + KEY[:11], KEY, "ok")


# ------------------------------------------------------------------------ provider


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("mode", MODES)
async def test_provider_values_and_errors(mode: str, stream: bool) -> None:
    """Errors (every attribute, cause and arg) and whole values (finish reason, tool calls) masked.

    Text and reasoning pieces are checked once joined, by the exchange (a key may be split).
    """
    items: list[Any] = []
    error: BaseException | None = None
    try:
        async for item in Upstage.create_async_generator("solar-pro2", f"mode={mode}", stream=stream, max_retries=0):
            items.append(item)
    except UpstageError as exc:
        error = exc
    whole = [i for i in items if not isinstance(i, (str, Reasoning))]
    assert not leaks(whole, f"{mode}: items") + leaks(error, f"{mode}: error")
    if mode in ERROR_MODES and not (mode in ("event-error", "malformed") and not stream):
        assert error is not None, mode


@pytest.mark.parametrize("mode", ["answer", *(f"status-{s}" for s in (401, 404, 500)), "html-503", "status-500+keys",
                                  "html-503+keys"])
async def test_model_list_and_its_errors(server: HostileServer, mode: str) -> None:
    url = server.base_url if mode == "answer" else server.mode_url(mode)
    try:
        ids: Any = await Upstage.list_models(base_url=url, max_retries=0)
    except UpstageError as exc:
        ids = exc
    assert not leaks(ids, mode)
    if mode == "answer":
        assert len(ids) == 3 and "solar-pro2" in ids


# ------------------------------------------------------------------------ exchange


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("mode", [*MODES, *(m + "+keys" for m in MODES)])
async def test_exchange_turn_exports_and_log(mode: str, stream: bool, tmp_path: Path) -> None:
    """What an answer shows while streaming and records at the end: nothing of the key.

    ``+keys``: the key's copies come first in every text, so every cut (80 to 2000
    characters) lands inside a key.
    """
    session = ChatSession()
    log = SessionLog(lambda: str(tmp_path / "logs.db"))
    log.attach(session)
    fmt = "json" if mode.startswith(("json", "badjson")) else None
    request = plan(Settings(), Ask(prompt=f"mode={mode}", stream=stream, format=fmt, extra={"max_retries": 0}),
                   session=session, provider=Upstage)
    exchange = session.start(request)
    live: list[str] = []
    try:
        async for _ in exchange.stream(Upstage):
            # What a live view shows (a possible key's beginning at the end held back), and
            # the exchange's own texts (whole keys masked).
            live.append(mask_partial(exchange.text) + mask_partial(exchange.reasoning))
            assert KEY not in exchange.text + exchange.reasoning
    except UpstageError:
        pass
    assert exchange.turn is not None
    found = leaks(live, f"{mode}: live view")
    found += leaks([exchange.text, exchange.reasoning, exchange.tool_calls, exchange.finish_reason,
                    exchange.error, exchange.usage], f"{mode}: exchange")
    found += leaks(exchange.turn, f"{mode}: turn") + leaks(exchange.turn.to_dict(), f"{mode}: turn dict")
    found += find_needles(session.export_markdown() + session.export_json(), KEY, f"{mode}: exports")
    db = tmp_path / "logs.db"
    assert db.exists()
    ConversationLog(db).close()  # checkpoint the WAL into the file
    found += find_needles(b"".join(p.read_bytes() for p in tmp_path.iterdir()).decode("latin-1"), KEY,
                          f"{mode}: log file")
    assert not found
    if mode == "answer":
        assert exchange.status == "done" and exchange.text.count("***") >= 20


# ------------------------------------------------------------------------ batch


def _cache_text(path: Path) -> str:
    from upstage_magic.cache import AnswerCache

    AnswerCache(path).close()
    return b"".join(p.read_bytes() for p in path.parent.iterdir()).decode("latin-1")


def test_batch_answers_cache_and_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch answers (first run and cached re-run), failures, its table and the cache file."""
    from upstage_magic.notebook.batch import batch

    items = ["answer", "code", "think", "reasoning", "status-400", "status-422", "status-500", "status-503",
             "html-500", "text-500", "error-event", "event-error", "malformed", "status-500+keys", "html-500+keys",
             "error-event+keys", "malformed+keys"]
    cache = tmp_path / "cache" / "answers.db"
    cache.parent.mkdir()
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    first = batch("mode={item}", items, cache=str(cache), retries=0, concurrency=4)
    again = batch("mode={item}", items, cache=str(cache), retries=0, concurrency=4)
    found = leaks(list(first), "results") + leaks(first.errors, "errors") + leaks(list(again), "cached results")
    found += find_needles(err.getvalue(), KEY, "progress summary and failures table")
    found += find_needles(_cache_text(cache), KEY, "answer cache file")
    assert not found
    assert first[0].count("***") >= 20 and again[0] == first[0]
    assert len(first.errors) == 13, first.errors


def test_batch_json_schema_failures_and_values(tmp_path: Path) -> None:
    """-f json values (hostile strings) and a schema failure quoting the reply."""
    from upstage_magic.notebook.batch import batch

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    values = batch("mode={item}", ["json"], format="json", cache=False, retries=0, progress=False)
    failed = batch("mode={item}", ["badjson", "json", "badjson+keys"], schema=schema, cache=False, retries=0,
                   progress=False)
    assert not leaks(list(values), "json values") + leaks(list(failed), "schema failures") + leaks(
        failed.errors, "schema errors")
    assert isinstance(values[0], dict) and "***" in values[0]["answer"]
    assert len(failed.errors) == 3


def test_map_cell_out_value(tmp_path: Path) -> None:
    """%%upstage --map ... -o NAME: the value stored in the namespace."""
    from upstage_magic.notebook.batch import map_cell

    ns: dict[str, Any] = {"rows": ["answer", "json", "status-400"]}
    shown = map_cell(Ask(prompt="mode={item}"), "rows", ns, out="res", show=False, cache=False, retries=0,
                     progress=False)
    assert shown is None
    assert not leaks(ns["res"], "-o value") + leaks(getattr(ns["res"], "errors", None), "-o errors")


def test_a_key_streamed_in_pieces_never_shows_a_prefix() -> None:
    """The 'slow' mode sends five characters per event: every live state is masked."""
    async def run() -> list[str]:
        session = ChatSession()
        ex = session.start(plan(Settings(), Ask(prompt="mode=slow"), session=session, provider=Upstage))
        seen = []
        async for _ in ex.stream(Upstage):
            seen.append(mask_partial(ex.text))
        return seen

    seen = asyncio.run(run())
    assert len(seen) > 50
    assert not leaks(seen, "live")


def test_statuses_cover_the_issue() -> None:
    assert set(STATUSES) == {400, 401, 403, 404, 422, 429, 500, 503}
