"""batch(): order and alignment, schemas, pacing under 429s, failures, interrupt and resume, cache.

Everything talks to the in-process emulator over real loopback HTTP.
"""
from __future__ import annotations

import asyncio
import collections
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import upstage_magic.notebook.batch as batch_module
from upstage_magic.emulator import Emulator, serve_in_thread
from upstage_magic.errors import AuthenticationError, BadRequestError
from upstage_magic.notebook.batch import (
    Batch,
    BatchDict,
    BatchError,
    BatchInterrupted,
    BatchResult,
    BatchStats,
    _Pacer,
    abatch,
    batch,
)
from upstage_magic.notebook.progress import TextProgress, failures_table
from upstage_magic.placeholders import fill_item as fill_template
from upstage_magic.providers import Upstage

KEY = "test-key-SECRET123"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
async def _close_sessions():
    yield
    await Upstage.aclose()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    """Retry waits of 5xx retries take no time (the rate-limit gate still waits)."""
    monkeypatch.setattr(batch_module, "backoff", lambda attempt, **kw: 0.0)


@pytest.fixture
async def emu():
    e = Emulator(reply="echo")
    await e.start()
    try:
        yield e
    finally:
        await e.stop()


def opts(emu: Emulator, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    return {"base_url": emu.base_url, "api_key": KEY, "model": "solar-mini4",
            "cache": str(tmp_path / "cache.sqlite3"), **kw}


def prompts_sent(emu: Emulator) -> list[str]:
    return [r["messages"][-1]["content"] for r in emu.requests]


# --------------------------------------------------------------------------- templates


def test_fill_template_fields_and_other_braces():
    row = {"text": "great", "n": 3}
    assert fill_template("{item.text}|{item[n]}|{index}", row, "r7") == "great|3|r7"
    assert fill_template("Say {item}", "hi", 0) == "Say hi"
    assert fill_template('JSON like {"label": "x"} for {item[0]}; {other} {}', ["a"], 0) == \
        'JSON like {"label": "x"} for a; {other} {}'
    assert fill_template("{item}", {"a": 1}, 0) == '{"a": 1}'

    class Obj:
        name = "o"

        def method(self):
            raise AssertionError("templates must never call anything")

    assert fill_template("{item.name}", Obj(), 0) == "o"
    with pytest.raises(KeyError, match="method"):
        fill_template("{item.method}", Obj(), 0)
    with pytest.raises(KeyError, match="private"):
        fill_template("{item.__class__}", Obj(), 0)
    with pytest.raises(KeyError, match=r"no 'missing' \(has text, n\)"):
        fill_template("{item.missing}", row, 0)


def test_bad_arguments_are_clear():
    with pytest.raises(TypeError, match="not one string"):
        Batch("{item}", "abc", cache=False)
    with pytest.raises(ValueError, match="format must be one of"):
        Batch("{item}", [1], format="yaml", cache=False)
    with pytest.raises(ValueError, match="concurrency"):
        Batch("{item}", [1], concurrency=0, cache=False)
    with pytest.raises(TypeError, match="template"):
        Batch("", [1], cache=False)


# --------------------------------------------------------------------------- shapes


async def test_list_results_in_input_order_even_when_answers_finish_out_of_order(tmp_path):
    class Slow:
        """Answers item i after a delay that shrinks with i: the last finishes first."""

        @staticmethod
        async def create_async_generator(model, messages, **kw):
            text = messages[-1]["content"]
            await asyncio.sleep(0.002 * (20 - int(text)))
            yield f"answer {text}"

    items = [str(i) for i in range(20)]
    finished: list[str] = []
    orig = Batch._value

    def spy(self, text):
        finished.append(text)
        return orig(self, text)

    Batch._value = spy  # type: ignore[method-assign]
    try:
        out = await abatch("{item}", items, cache=False, concurrency=20, provider=Slow)
    finally:
        Batch._value = orig  # type: ignore[method-assign]
    assert finished != sorted(finished, key=lambda t: int(t.split()[1]))  # they did finish out of order
    assert isinstance(out, BatchResult) and out == [f"answer {i}" for i in items]
    assert out.errors == [] and out.stats.done == 20


async def test_list_and_dict_over_the_emulator(emu, tmp_path):
    out = await abatch("Q{index}: {item}", ["a", "b", "c"], **opts(emu, tmp_path))
    assert out == ["Q0: a", "Q1: b", "Q2: c"]
    d = await abatch("{index} is {item}", {"x": 1, "y": 2}, **opts(emu, tmp_path))
    assert isinstance(d, BatchDict) and d == {"x": "x is 1", "y": "y is 2"}
    assert list(d) == ["x", "y"] and d.errors == []


async def test_series_and_dataframe_align_to_their_index(emu, tmp_path):
    pd = pytest.importorskip("pandas")
    s = pd.Series(["red", "green", "blue"], index=[30, 10, 20])
    out = await abatch("{index}={item}", s, **opts(emu, tmp_path))
    assert isinstance(out, pd.Series) and list(out.index) == [30, 10, 20]
    assert out.to_dict() == {30: "30=red", 10: "10=green", 20: "20=blue"}
    df = pd.DataFrame({"name": ["ann", "bob"], "age": [31, 42]}, index=["u2", "u1"])
    out = await abatch("{item.name} is {item[age]} ({index})", df, **opts(emu, tmp_path))
    assert out.to_dict() == {"u2": "ann is 31 (u2)", "u1": "bob is 42 (u1)"}
    assert out.attrs["errors"] == []


async def test_schema_results_become_columns(emu, tmp_path):
    pd = pytest.importorskip("pandas")
    schema = {"type": "object", "properties": {"label": {"enum": ["spam", "ham"]}, "score": {"type": "number"}},
              "required": ["label", "score"]}
    df = pd.DataFrame({"text": ["buy now", "hi mum", "win!"]}, index=["a", "b", "c"])
    out = await abatch("Label {item.text}", df, schema=schema, **opts(emu, tmp_path))
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["label", "score"] and list(out.index) == ["a", "b", "c"]
    assert out["label"].tolist() == ["spam"] * 3 and out["score"].tolist() == [1.5] * 3  # emulator's example
    sent = emu.requests[-1]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert "json" in json.dumps(sent["messages"]).lower()  # JSON mode needs the word


async def test_pydantic_schema_gives_model_objects(emu, tmp_path):
    pydantic = pytest.importorskip("pydantic")

    class Label(pydantic.BaseModel):
        label: str
        confident: bool

    out = await abatch("Label {item} as JSON", ["x", "y"], schema=Label, **opts(emu, tmp_path))
    assert all(isinstance(v, Label) for v in out) and out[0].confident is True


async def test_format_json_parses_and_adds_the_json_word(emu, tmp_path):
    out = await abatch("Describe {item}", ["cat"], format="json", **opts(emu, tmp_path))
    assert out == [{"answer": "You asked: Describe cat", "turn": 1}]
    assert emu.requests[-1]["response_format"] == {"type": "json_object"}


# --------------------------------------------------------------------------- pacing


async def test_429_storm_nothing_lost_nothing_sent_twice(emu, tmp_path):
    emu.configure(rate_limit={"rps": 10})
    items = [f"p{i}" for i in range(35)]
    out = await abatch("{item}", items, concurrency=8, pacing="aimd", **opts(emu, tmp_path))  # the fallback
    assert out == items and out.errors == []
    assert emu.rate_limited > 0 and out.stats.rate_limited == emu.rate_limited
    counts = collections.Counter(prompts_sent(emu))  # requests the emulator answered (not the 429s)
    assert counts == collections.Counter(items)  # each exactly once
    assert out.stats.concurrency < 8  # the limit came down


async def test_pacer_gate_holds_everyone_and_limit_adapts():
    stats = BatchStats()
    pacer = _Pacer(8, stats)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    pacer.rate_limited(0.05)
    assert pacer.limit == 4.0
    pacer.rate_limited(0.05)  # same episode: no second cut
    assert pacer.limit == 4.0
    await asyncio.gather(*(pacer.acquire() for _ in range(4)))
    assert loop.time() >= t0 + 0.05  # nobody went through the closed gate
    blocked = asyncio.ensure_future(pacer.acquire())  # the 5th waits for a free slot
    await asyncio.sleep(0)
    assert not blocked.done()
    pacer.release()
    await blocked
    for _ in range(40):
        pacer.success()
    assert pacer.limit == 8.0 and stats.concurrency == 8


async def test_server_errors_are_retried_per_item(emu, tmp_path):
    emu.set_fault({"kind": "status", "status": 503, "times": 2})
    out = await abatch("{item}", ["a", "b"], concurrency=1, **opts(emu, tmp_path))
    assert out == ["a", "b"] and out.stats.retries == 2


async def test_failed_item_is_an_error_value_and_the_rest_complete(emu, tmp_path):
    emu.set_fault({"kind": "status", "status": 400, "message": "bad thing", "times": 1})
    out = await abatch("{item}", ["a", "b", "c"], concurrency=1, **opts(emu, tmp_path))
    assert isinstance(out[0], BatchError) and not out[0]
    assert out[0].kind == "BadRequestError" and "bad thing" in out[0].message and out[0].index == 0
    assert out[1:] == ["b", "c"]
    assert out.errors == [out[0]] and out.stats.failed == 1
    again = await abatch("{item}", ["a", "b", "c"], concurrency=1, **opts(emu, tmp_path))
    assert again == ["a", "b", "c"]  # the failure was not cached; the rest came from the cache
    assert prompts_sent(emu).count("a") == 2 and prompts_sent(emu).count("b") == 1


async def test_retries_exhausted_is_an_error_value(emu, tmp_path):
    emu.set_fault({"kind": "status", "status": 500, "times": None})
    out = await abatch("{item}", ["a"], retries=2, **opts(emu, tmp_path))
    assert out[0].kind == "ServerError" and out[0].attempts == 3 and len(emu.requests) == 3


async def test_fail_fast_raises_the_first_failure(emu, tmp_path):
    emu.set_fault({"kind": "status", "status": 400, "times": 1})
    with pytest.raises(BadRequestError):
        await abatch("{item}", ["a", "b", "c"], concurrency=1, fail_fast=True, **opts(emu, tmp_path))


async def test_wrong_key_stops_the_whole_batch_at_once(tmp_path):
    async with Emulator(api_key="the-right-key") as url:
        with pytest.raises(AuthenticationError) as info:
            await abatch("{item}", list(range(50)), base_url=url, api_key="wrong-key-CANARY77",
                         cache=str(tmp_path / "c.sqlite3"), concurrency=4)
    assert "CANARY77" not in str(info.value)


# --------------------------------------------------------------------------- interrupt and cache


async def test_interrupt_then_rerun_sends_only_the_missing_items(emu, tmp_path):
    emu.configure(rate_limit={"rps": 10})  # the first 10 go at once, then the batch waits
    items = [f"p{i}" for i in range(30)]
    job = Batch("{item}", items, concurrency=4, **opts(emu, tmp_path))
    task = asyncio.ensure_future(job.run())
    while job.stats.done < 10:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = {items[i] for i, r in enumerate(job.results) if r is not None}
    assert len(done) == job.stats.done and 10 <= len(done) < 30
    emu.requests.clear()
    emu.configure(rate_limit=None)
    out = await abatch("{item}", items, **opts(emu, tmp_path))
    assert out == items
    second = prompts_sent(emu)
    assert sorted(second) == sorted(set(items) - done)  # only the missing ones, each once
    assert out.stats.cached == len(done)


def test_sync_batch_interrupt_says_how_many_are_done(tmp_path, monkeypatch):
    """KeyboardInterrupt in the calling thread stops the batch; nothing is returned."""

    class Interrupting(TextProgress):
        fired = False

        def update(self, stats):
            if stats.done >= 5 and not Interrupting.fired:
                Interrupting.fired = True
                os.kill(os.getpid(), signal.SIGINT)  # like the kernel's interrupt

    stream = io.StringIO()
    monkeypatch.setattr("upstage_magic.notebook.progress.make_progress", lambda: Interrupting(stream))
    with serve_in_thread(reply="echo") as emu:
        emu.configure(rate_limit={"rps": 5})
        items = [f"q{i}" for i in range(20)]
        with pytest.raises(BatchInterrupted) as info:
            batch("{item}", items, base_url=emu.base_url, api_key=KEY, model="solar-mini4",
                  cache=str(tmp_path / "c.sqlite3"), concurrency=2)
        stats = info.value.stats
        assert 5 <= stats.done < 20
        assert f"{stats.done} of 20 answers done and cached" in str(info.value)
        assert "Stopped:" in stream.getvalue()
        n_first = len(emu.requests)
        emu.configure(rate_limit=None)
        out = batch("{item}", items, base_url=emu.base_url, api_key=KEY, model="solar-mini4",
                    cache=str(tmp_path / "c.sqlite3"), progress=False)
        assert out == items and out.stats.cached == stats.done
        assert len(emu.requests) - n_first == 20 - stats.done


async def test_cache_never_stores_the_key(emu, tmp_path):
    canary = "up_" + "CanaryKey" * 4
    cache = tmp_path / "cache.sqlite3"
    out = await abatch("{item}", ["secret-free prompt", "two"], base_url=emu.base_url, api_key=canary,
                       model="solar-mini4", cache=str(cache))
    assert out == ["secret-free prompt", "two"]
    files = list(tmp_path.iterdir())
    assert cache in files
    blob = b"".join(f.read_bytes() for f in files)
    assert b"secret-free prompt" in blob  # the check can see content...
    assert canary.encode() not in blob and b"CanaryKey" not in blob  # ...and the key is not there


async def test_cache_false_sends_every_time(emu, tmp_path):
    await abatch("{item}", ["a"], base_url=emu.base_url, api_key=KEY, model="solar-mini4", cache=False)
    await abatch("{item}", ["a"], base_url=emu.base_url, api_key=KEY, model="solar-mini4", cache=False)
    assert prompts_sent(emu) == ["a", "a"]
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- progress


def test_text_progress_summary_and_failures_table_escaped():
    stats = BatchStats(total=3, done=3, failed=1, tokens_in=10, tokens_out=20)
    stats.first_errors.append(BatchError(2, "BadRequestError", "<script>alert(1)</script> bad"))
    stream = io.StringIO()
    view = TextProgress(stream)
    view.start(stats)
    view.update(stats)
    view.finish(stats)
    text = stream.getvalue()
    assert text.startswith("Done: 2/3 answered") and "1 failed" in text
    assert "2: BadRequestError: <script>" in text  # plain text on a terminal
    html = failures_table(stats, as_html=True)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_package_batch_is_the_function_whatever_was_imported(tmp_path):
    import upstage_magic
    import upstage_magic.notebook.batch
    from upstage_magic import batch as from_package

    assert from_package is upstage_magic.batch is upstage_magic.notebook.batch.batch
    assert from_package(["a"].__class__.__name__ + " {item}", [1], cache=False, progress=False,
                        provider=_Echo) == ["list 1"]


class _Echo:
    @staticmethod
    async def create_async_generator(model, messages, **kw):
        yield messages[-1]["content"]


def test_importing_batch_loads_no_pandas_pydantic_or_http():
    code = (
        "import sys\n"
        "import upstage_magic\n"
        "from upstage_magic import batch\n"
        "import upstage_magic.notebook.batch, upstage_magic.cache, upstage_magic.schema\n"
        "print(sorted(m for m in ('pandas', 'pydantic', 'aiohttp', 'IPython', 'ipywidgets') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- notebook


@pytest.mark.kernel
def test_batch_notebook_executes(tmp_path, monkeypatch):
    """notebooks/batch.ipynb labels a DataFrame with a schema on the emulator and shows progress."""
    monkeypatch.setenv("UPSTAGE_MAGIC_HOME", str(tmp_path / "home"))  # the kernel's cache goes here
    monkeypatch.setenv("UPSTAGE_API_KEY", KEY)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    from upstage_magic.__main__ import run_demo

    nb_path, _html = run_demo(ROOT / "notebooks" / "batch.ipynb", offline=True, tokens_per_second=None,
                              timeout=180, out_dir=tmp_path)
    nb = json.loads(nb_path.read_text())
    outs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    blob = json.dumps(outs)
    assert not any(o.get("output_type") == "error" for o in outs), blob[:2000]
    assert "application/vnd.jupyter.widget-view+json" in blob  # the progress widget was shown
    assert "Done: 6/6 answered" in blob
    assert "sentiment" in blob and "positive" in blob  # the labelled DataFrame
    assert "6 from cache" in blob  # the second run sent nothing
    assert KEY not in nb_path.read_text()
    assert (tmp_path / "home" / "cache.sqlite3").exists()


# --------------------------------------------------------------------------- emulator rate-limit mode


async def _post(session: Any, url: str, content: str = "hi", **body: Any) -> Any:
    payload = {"model": "solar-mini4", "messages": [{"role": "user", "content": content}], **body}
    async with session.post(url + "/chat/completions", json=payload,
                            headers={"Authorization": f"Bearer {KEY}"}) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def test_emulator_rate_limit_answers_429_with_headers(emu):
    import aiohttp

    emu.configure(rate_limit={"rps": 2, "rpm": 100})
    async with aiohttp.ClientSession() as s:
        first = [await _post(s, emu.base_url) for _ in range(3)]
    assert [st for st, _, _ in first] == [200, 200, 429]
    _status, headers, body = first[2]
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(headers["Retry-After"]) and 0 < int(headers["retry-after-ms"]) <= 1000
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert emu.rate_limited == 1 and len(emu.requests) == 2  # refused requests are not recorded


async def test_emulator_tokens_per_minute_and_control_endpoint(emu):
    import aiohttp

    async with aiohttp.ClientSession() as s:
        base = emu.base_url.rsplit("/v1", 1)[0]
        async with s.post(base + "/_emulator/config", json={"rate_limit": {"tpm": 30}}) as resp:
            assert resp.status == 200 and (await resp.json())["rate_limit"] == {"tpm": 30}
        async with s.post(base + "/_emulator/config", json={"rate_limit": {"rps": -1}}) as resp:
            assert resp.status == 400 and "positive" in (await resp.json())["error"]["message"]
        ok = await _post(s, emu.base_url, "one two three", max_tokens=20)  # 23 tokens
        over = await _post(s, emu.base_url, "four five six", max_tokens=20)  # 23 more > 30
        async with s.get(base + "/_emulator/stats") as resp:
            stats = await resp.json()
        async with s.post(base + "/_emulator/config", json={"rate_limit": None}) as resp:
            assert resp.status == 200
        after = await _post(s, emu.base_url, "seven", max_tokens=20)
    assert ok[0] == 200 and over[0] == 429 and after[0] == 200
    assert over[1]["x-ratelimit-limit-tokens"] == "30"
    assert over[1]["x-ratelimit-remaining-tokens"] == "7"
    assert 59 <= int(over[1]["Retry-After"]) <= 60
    assert stats["rate_limited"] == 1
    emu.reset()
    assert emu.rate_limit is None and emu.rate_limited == 0


def test_map_cell_resolves_names_and_stores_the_result(tmp_path):
    pd = pytest.importorskip("pandas")
    from upstage_magic.notebook.batch import map_cell

    ns: dict[str, Any] = {
        "df": pd.DataFrame({"text": ["a", "b"]}, index=["x", "y"]),
        "S": {"type": "object", "properties": {"n": {"type": "integer"}}},
    }
    got = map_cell("{item}", "df.text", ns, out="answers", cache=False, progress=False, provider=_Echo)
    assert ns["answers"] is got and got.to_dict() == {"x": "a", "y": "b"}

    class JSONEcho:
        @staticmethod
        async def create_async_generator(model, messages, **kw):
            assert kw["response_format"]["type"] == "json_schema"
            yield json.dumps({"n": len(messages[-1]["content"])})

    table = map_cell("{item.text}!", "df", ns, schema="S", cache=False, progress=False, provider=JSONEcho)
    assert table["n"].tolist() == [2, 2]
    with pytest.raises(ValueError, match="no variable 'nope'"):
        map_cell("{item}", "nope", ns, cache=False, progress=False)
    with pytest.raises(ValueError, match="variable name"):
        map_cell("{item}", "df()", ns, cache=False, progress=False)
    with pytest.raises(ValueError, match="-o"):
        map_cell("{item}", "df", ns, out="a b", cache=False, progress=False)


@pytest.mark.kernel
def test_kernel_progress_updates_then_interrupt_then_resume(tmp_path):
    """In a real kernel: the widget updates live, the kernel's interrupt stops the batch with
    a one-line count, and the next run sends only the missing items."""
    from tests.support.harness import KernelSession

    with serve_in_thread(reply="echo") as emu:
        emu.configure(rate_limit={"rps": 5})
        k = KernelSession({"UPSTAGE_BASE_URL": emu.base_url, "UPSTAGE_API_KEY": KEY,
                           "UPSTAGE_MAGIC_HOME": str(tmp_path)})
        try:
            k.run("from upstage_magic import batch\nitems = [f'k{i}' for i in range(40)]")
            msg_id = k.submit("out = batch('{item}', items, model='solar-mini4', concurrency=2)")

            def progressed(m: dict[str, Any]) -> bool:
                state = m["content"].get("data", {}).get("state", {}) if m["msg_type"] == "comm_msg" else {}
                return isinstance(state.get("value"), int) and state["value"] >= 6

            first = k.collect(msg_id, timeout=60, until=progressed)
            assert any(m["msg_type"] == "display_data" for m in first)  # the widget was shown
            k.interrupt()
            rest = k.collect(msg_id, timeout=60)
            error = next(m["content"] for m in rest if m["msg_type"] == "error")
            assert error["ename"] == "BatchInterrupted"
            done = int(re.search(r"(\d+) of 40 answers done and cached", error["evalue"]).group(1))
            assert 6 <= done < 40
            assert "'out'" not in k.run("print(sorted(globals()))")  # nothing half-written
            emu.configure(rate_limit=None)
            before = len(emu.requests)
            r = k.execute("out = batch('{item}', items, model='solar-mini4', progress=False)\n"
                          "print(out == items, out.stats.cached)")
            assert r.error is None and r.stdout.split() == ["True", str(done)]
            assert len(emu.requests) - before == 40 - done
        finally:
            k.close()


def test_batch_follows_the_kernels_settings_under_its_own_options(monkeypatch):
    """batch() called from code plans with %config's model and sampling unless the call says otherwise."""
    from upstage_magic.settings import Settings

    settings = Settings(model="solar-mini4", temperature=0.3, max_tokens=50, stream=False)
    monkeypatch.setattr("upstage_magic.settings._DEFAULT", settings)
    job = Batch("{item}", [1], max_tokens=7, cache=False, provider=Upstage)
    assert job.model == "solar-mini4"
    assert job.request.options == {"temperature": 0.3, "max_tokens": 7, "stream": False, "max_retries": 0}
    assert Batch("{item}", [1], model="solar-pro4", cache=False, provider=Upstage).model == "solar-pro4"
    monkeypatch.setattr("upstage_magic.settings._DEFAULT", Settings())
    assert Batch("{item}", [1], cache=False, provider=Upstage).model == Upstage.get_model(None)  # the provider's


def test_a_row_missing_a_template_field_fails_alone(tmp_path):
    """Defect: a missing {item.field} raised KeyError outside the per-item try and stopped the batch."""
    rows = [{"text": "a"}, {"other": "b"}, {"text": "c"}]
    out = batch("Say {item.text}", rows, cache=False, progress=False, provider=_Echo)
    assert out[0] == "Say a" and out[2] == "Say c"
    assert not out[1] and out.errors[0].kind == "RequestError" and "item.text" in out.errors[0].message


def test_map_fills_placeholders_in_the_system_prompt_too(tmp_path):
    """Defect: --map left {placeholders} in -s unfilled (one plan now fills prompt and system)."""
    from upstage_magic.request import Ask

    seen: list = []

    class Spy:
        @staticmethod
        async def create_async_generator(model, messages, **kw):
            seen.append(messages)
            yield "ok"

    ask = Ask("Rate {item}", system="Answer in {lang}.", history=False, namespace={"lang": "French"})
    batch(ask, ["x"], cache=False, progress=False, provider=Spy)
    assert seen[0][0] == {"role": "system", "content": "Answer in French."}


def test_widget_progress_says_the_numbers_once_at_the_end(monkeypatch):
    import IPython.display

    from upstage_magic.notebook.progress import WidgetProgress

    shown: list = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    stats = BatchStats(total=2, done=2, tokens_in=10, tokens_out=20)
    view = WidgetProgress()
    view.start(stats)
    assert "2/2" in view.label.value  # while running: the live line
    view.finish(stats)
    assert view.label.value == "" and view.bar.bar_style == "success"
    assert repr(shown[-1]).startswith("Done: 2/2 answered")  # the one summary, kept in the saved notebook
