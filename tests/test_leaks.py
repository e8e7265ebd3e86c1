"""The API key never leaks: notebooks, outputs, widget state, exports, logs, reprs.

A distinctive key is used against an emulator subprocess that requires it. The example
notebooks and an error-path notebook (401 whose server message echoes the key, a cut
stream, an error event echoing the key, ``%upstage config``, reprs, tracebacks, the
widget) are executed with nbclient (widget state stored) and saved; every file written,
the kernel's own stdout/stderr, the emulator's log and its recorded requests are then
searched for the key, its URL-encoded form and its base64 forms (every alignment).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import ROOT, EmulatorProcess

KEY = "test-key-LEAKCANARY-7f3a9c"
NOTEBOOKS = ("quickstart.ipynb", "chat_widget.ipynb")


def needles(key: str = KEY) -> dict[str, str]:
    """The key and its encoded forms; base64 at every byte alignment (core chars only)."""
    out = {"raw": key, "canary": "LEAKCANARY", "url": urllib.parse.quote(key, safe=""),
           "url-plus": urllib.parse.quote_plus(key), "json": json.dumps(key)[1:-1]}
    raw = key.encode()
    for lead in range(3):
        for name, enc in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            s = enc(b"\0" * lead + raw).decode()
            out[f"{name}-{lead}"] = s[4:-4]  # drop the groups mixed with padding/prefix
    for lead in range(3):  # "Bearer <key>" and "user:<key>" encodings (Basic-auth style)
        out[f"b64-bearer-{lead}"] = base64.b64encode(b"\0" * lead + b"Bearer " + raw).decode()[8:-4]
    return out


def find_leaks(text: str, where: str) -> list[str]:
    """One line per encoded form found (the raw form implies the plain variants)."""
    hits = []
    for form, n in needles().items():
        i = text.find(n)
        if i < 0 or (form != "raw" and KEY in text and n in KEY):
            continue
        hits.append(f"{where}: {form} form of the key at {i}: ...{text[max(0, i - 80):i + 40]!r}...")
    return hits


def scan_tree(root: Path) -> list[str]:
    hits: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            hits += find_leaks(path.read_bytes().decode("utf-8", "replace"), str(path.relative_to(root)))
    return hits


def test_needles_catch_encoded_forms() -> None:
    assert find_leaks(base64.b64encode(b"xx" + KEY.encode() + b"yy").decode(), "t")
    assert find_leaks(base64.b64encode(("text\n" + KEY).encode()).decode(), "t")
    assert find_leaks("Authorization: " + base64.b64encode(b"Bearer " + KEY.encode()).decode(), "t")
    assert not find_leaks("test-key-***", "t")


# ------------------------------------------------------------------------- notebooks


def _ctl_cell(root: str) -> str:
    return (
        "import json as _j, urllib.request as _u\n"
        f"_CTL = {root!r}\n"
        "def fault(f):\n"
        "    req = _u.Request(_CTL + '/_emulator/fault', data=_j.dumps(f).encode(), method='POST',\n"
        "                     headers={'Content-Type': 'application/json'})\n"
        "    _u.build_opener(_u.ProxyHandler({})).open(req, timeout=10).read()\n"
    )


ERROR_CELLS = [
    # The key comes from an env var the cell pops: it is never in the notebook's source.
    "%load_ext upstage_magic\nimport os\nfrom upstage_magic import settings\n"
    "settings.set_api_key(os.environ.pop('LEAKTEST_KEY_INPUT'))\nprint('key set')",
    "{ctl}",
    "%upstage config",
    "fault({'kind': 'status', 'status': 401, 'message': 'Incorrect API key provided: ' + settings.get_api_key()})",
    "%%upstage\nHello with a rejected key",
    "fault({'kind': 'cut', 'after': 5})",
    "%%upstage\nTell me more",
    "fault({'kind': 'error_event', 'after': 3, 'message': 'server echoes ' + settings.get_api_key()})",
    "%%upstage\nAnd more",
    "%upstage history",
    "%upstage export chat.md",
    "%upstage export chat.json",
    "%upstage models",
    "from upstage_magic import Upstage, ChatSession, ChatWidget\nfrom upstage_magic.session import default_session\n"
    "m = get_ipython().magics_manager.registry['UpstageMagics']\n"
    "print(repr(Upstage), vars(Upstage).keys())\nprint(repr(default_session()), default_session().turns)\n"
    "print(repr(m), m.last_exchange, m.last_exchange.messages)\n"
    "print(repr(m.last_exchange.error), str(m.last_exchange.error), m.last_exchange.error.args)",
    "m.last_exchange.error",
    "default_session().export_json()",
    # Unhandled errors: a full traceback in the output (context mode, then verbose with locals).
    "fault({'kind': 'status', 'status': 401, 'message': 'Incorrect API key provided: ' + settings.get_api_key()})\n"
    "await Upstage.create_async('solar-mini4', 'hi')",
    "%xmode Verbose",
    "fault({'kind': 'status', 'status': 401, 'message': 'Incorrect API key provided: ' + settings.get_api_key()})\n"
    "await Upstage.create_async('solar-mini4', 'hi')",
    "%xmode Context",
    "fault({'kind': 'cut', 'after': 4})\nasync for c in Upstage.create_async_generator('solar-mini4', 'hi'):\n    print(repr(c))",
    # The widget: an error turn, a good turn, the export link (base64 data: URL), its repr.
    "fault({'kind': 'status', 'status': 401, 'message': 'Incorrect API key provided: ' + settings.get_api_key()})\n"
    "w = ChatWidget()\nt = w.send('widget question')\nw",
    "await t\nt = w.send('widget question two')\nawait t\nprint([x.status for x in w.session.turns])",
    "w.export('widget-chat.md')\nprint(repr(w)[:20000])",
    "w",
    "%upstage key clear",
    "%upstage config",
    "print(settings.get_base_url(), settings.get_default_model(), settings.get_api_key())",
]


def _notebook(cells: list[str]) -> Any:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _execute(nb: Any, workdir: Path, env: dict[str, str], log: Path) -> Any:
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True, store_widget_state=True,
                            resources={"metadata": {"path": str(workdir)}})
    with open(log, "ab") as fh:
        client.execute(env=env, stdout=fh, stderr=fh)
    return nb


@pytest.fixture(scope="module")
def leak_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run both example notebooks and the error-path notebook; save everything."""
    import nbformat
    from nbconvert import HTMLExporter

    work = tmp_path_factory.mktemp("leaks")
    emu_dir = tmp_path_factory.mktemp("leaks-emulator")  # outside `work`: the server knows the key
    emu = EmulatorProcess(emu_dir, api_key=KEY, tokens_per_second=None)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("UPSTAGE_") and "proxy" not in k.lower()}
    base_env.update(PYTHONPATH=str(ROOT), UPSTAGE_BASE_URL=emu.base_url, PYTHONUNBUFFERED="1",
                    IPYTHONDIR=str(work / ".ipython"))
    log = work / "kernel.log"
    results: dict[str, Any] = {"work": work, "emu": emu}
    try:
        for name in NOTEBOOKS:
            src = ROOT / "notebooks" / name
            assert src.exists(), f"{src} is missing"
            nb = nbformat.read(src, as_version=4)
            _execute(nb, work, dict(base_env, UPSTAGE_API_KEY=KEY), log)
            nbformat.write(nb, work / f"{src.stem}.executed.ipynb")
            results[name] = nb
        nb = _notebook([c.replace("{ctl}", _ctl_cell(emu.root)) if c == "{ctl}" else c for c in ERROR_CELLS])
        _execute(nb, work, dict(base_env, LEAKTEST_KEY_INPUT=KEY), log)
        nbformat.write(nb, work / "errors.executed.ipynb")
        results["errors"] = nb
        for stem in ("quickstart", "chat_widget", "errors"):
            saved = nbformat.read(work / f"{stem}.executed.ipynb", as_version=4)
            html, _ = HTMLExporter().from_notebook_node(saved)
            (work / f"{stem}.executed.html").write_text(html, encoding="utf-8")
        results["requests"] = emu.requests()
    finally:
        emu.close()
    results["emulator_log"] = emu.log_path.read_text(errors="replace")
    return results


def _outputs(nb: Any) -> list[dict[str, Any]]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.kernel  # leak_run executes notebooks in real kernels
def test_notebooks_ran_the_paths_we_meant(leak_run: dict[str, Any]) -> None:
    """Guard against a vacuous pass: the error paths really happened."""
    nb = leak_run["errors"]
    blob = json.dumps(_outputs(nb))
    assert "key set" in blob
    assert "set (in memory, via %upstage key)" in blob  # %upstage config saw the in-memory key
    assert "HTTP 401" in blob and "AuthenticationError" in blob  # the traceback cells
    assert "Incorrect API key provided: " in blob  # the server's echo reached the outputs, redacted
    assert "server echoes " in blob
    assert "'error', 'done']" in blob  # the widget's two turns
    assert (leak_run["work"] / "chat.json").exists() and (leak_run["work"] / "widget-chat.md").exists()
    widget_state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    assert widget_state.get("state"), "nbclient stored no widget state"
    assert "widget question" in json.dumps(widget_state)
    for name in NOTEBOOKS:  # no errors but the one a cell is tagged to raise (quickstart's %upstage fix demo)
        for cell in leak_run[name].cells:
            if cell.cell_type == "code" and "raises-exception" not in cell.metadata.get("tags", []):
                assert not [o for o in cell.outputs if o.get("output_type") == "error"], (name, cell.source)
    chat = leak_run["chat_widget.ipynb"]
    assert chat.metadata.get("widgets"), "chat_widget.ipynb: no widget state saved"
    assert (leak_run["work"] / "kernel.log").stat().st_size > 0  # the kernels' own output was captured


@pytest.mark.kernel  # leak_run executes notebooks in real kernels
def test_no_key_in_saved_notebooks_exports_and_logs(leak_run: dict[str, Any]) -> None:
    hits = scan_tree(leak_run["work"])
    assert not hits, "\n".join(hits)


@pytest.mark.kernel  # leak_run executes notebooks in real kernels
def test_no_key_in_widget_state(leak_run: dict[str, Any]) -> None:
    hits: list[str] = []
    for name in (*NOTEBOOKS, "errors"):
        hits += find_leaks(json.dumps(leak_run[name].metadata.get("widgets", {})), f"{name} widget state")
    assert not hits, "\n".join(hits)


@pytest.mark.kernel  # leak_run executes notebooks in real kernels
def test_emulator_recorded_auth_but_not_the_key(leak_run: dict[str, Any]) -> None:
    reqs = leak_run["requests"]
    assert len(reqs) >= 10
    assert all(r.get("has_auth") is True for r in reqs)
    hits = find_leaks(json.dumps(reqs), "emulator requests") + find_leaks(leak_run["emulator_log"], "emulator log")
    assert not hits, "\n".join(hits)


@pytest.mark.kernel  # leak_run executes notebooks in real kernels
@pytest.mark.parametrize("cell", range(len(ERROR_CELLS)))
def test_no_key_in_error_path_cell_outputs(leak_run: dict[str, Any], cell: int) -> None:
    """One case per error-path cell, so a leak names the cell that caused it."""
    c = leak_run["errors"].cells[cell]
    hits = find_leaks(json.dumps(c.get("outputs", [])), f"cell {cell} ({c.source.splitlines()[0][:50]!r})")
    assert not hits, "\n".join(hits)


# --------------------------------------------------------------------- in-process reprs


@pytest.fixture
def key_set(monkeypatch: pytest.MonkeyPatch):
    from upstage_magic import settings

    monkeypatch.setenv("UPSTAGE_API_KEY", KEY)
    settings.set_api_key(KEY)
    yield KEY
    settings.set_api_key(None)


def _texts(obj: Any, skip: tuple[str, ...] = ()) -> list[str]:
    out = [repr(obj), str(obj)]
    for name in dir(obj):
        if name.startswith("__") or name in skip:
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # noqa: BLE001 - properties that need state
            continue
        if isinstance(value, (str, bytes, int, float, type(None), list, tuple, dict)):
            out.append(f"{name}={value!r}")
    return out


def _assert_masked(obj: Any, label: str, skip: tuple[str, ...] = ()) -> None:
    hits = [h for t in _texts(obj, skip) for h in find_leaks(t, label)]
    assert not hits, "\n".join(hits)


def _all_errors() -> list[BaseException]:
    from upstage_magic import errors as e

    msg = f"server said: Incorrect API key provided: {KEY}"
    body = {"error": {"message": msg, "type": "invalid_request_error"}}
    out: list[BaseException] = [
        e.UpstageError(msg, hint=f"hint {KEY}"),
        e.MissingAPIKeyError(msg),
        e.InvalidAPIKeyError(msg),
        e.APIConnectionError(msg),
        e.APITimeoutError(msg),
        e.StreamError(msg),
        e.MalformedEventError(msg, f'{{"x": "{KEY}"', 3),
        e.StreamErrorEvent(msg, code="x"),
        e.IncompleteStreamError(msg),
    ]
    for status in (400, 401, 403, 404, 422, 429, 500, 503):
        out.append(e.status_error(status, server_message=msg, code="c", body=body, retry_after=1.0))
    for cls in (e.APIStatusError, e.AuthenticationError, e.BadRequestError, e.ModelNotFoundError,
                e.RateLimitError, e.ServerError):
        out.append(cls(msg, status=499, server_message=msg, body=body))
    return out


def test_every_error_class_masks_the_key(key_set: str) -> None:
    from upstage_magic import errors as e

    errs = _all_errors()
    classes = {type(x) for x in errs}
    public = {getattr(e, n) for n in e.__all__ if isinstance(getattr(e, n), type)}
    assert public <= classes, public - classes
    for err in errs:
        _assert_masked(err, type(err).__name__, skip=("body",))  # body: test_status_error_body_is_redacted
        hits = find_leaks(repr(err.args), f"{type(err).__name__}.args")
        assert not hits, hits


def test_status_error_body_is_redacted(key_set: str) -> None:
    """``APIStatusError.body`` (the parsed error body) is public and kept on the error."""
    for err in _all_errors():
        if hasattr(err, "body"):
            hits = find_leaks(repr(err.body), f"{type(err).__name__}.body")
            assert not hits, hits


def test_settings_outputs_and_module_mask_the_key(key_set: str) -> None:
    from upstage_magic import settings

    assert settings.get_api_key() == KEY  # by contract the provider gets the key...
    texts = [repr(settings), settings.get_base_url(), settings.env_model(), repr(vars(settings).keys())]
    hits = [h for t in texts for h in find_leaks(t, "settings")]  # ...nothing else shows it
    assert not hits, hits


async def test_provider_class_session_exchange_turn_mask_the_key(key_set: str) -> None:
    from tests.support.fake import FakeProvider, request
    from upstage_magic.emulator import Emulator
    from upstage_magic.providers import Upstage
    from upstage_magic.session import ChatSession

    async with Emulator(api_key=KEY) as base_url:
        session = ChatSession(system_prompt="be brief")
        ex = session.start(request("hi", session=session, provider=Upstage, model="solar-mini4", base_url=base_url))
        async for chunk in ex.stream(Upstage):
            _assert_masked(chunk, "stream event")
        bad = session.start(request("again", session=session))
        with pytest.raises(RuntimeError):
            async for _ in bad.stream(FakeProvider().enqueue(RuntimeError(f"boom with {KEY} inside"))):
                pass
        await Upstage.aclose()
    for obj, label in ((Upstage, "Upstage"), (session, "ChatSession"), (ex, "Exchange"), (bad, "Exchange(error)"),
                       (session.turns[0], "Turn"), (session.turns[1], "Turn(error)")):
        _assert_masked(obj, label)
    for text, label in ((session.export_json(), "export_json"), (session.export_markdown(), "export_markdown"),
                        (repr(vars(Upstage)), "vars(Upstage)")):
        assert not find_leaks(text, label), label


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "upstage_magic")
    yield ip


def test_magics_repr_and_config_output_mask_the_key(key_set: str, shell, capsys) -> None:
    m = shell.magics_manager.registry["UpstageMagics"]
    shell.run_line_magic("upstage", "config")
    out = capsys.readouterr()
    assert "api key" in out.out
    assert not find_leaks(out.out + out.err, "%upstage config")
    _assert_masked(m, "UpstageMagics")
    assert not find_leaks(repr(m.trait_values()), "UpstageMagics traits")
    assert not find_leaks(json.dumps(m.config, default=str), "UpstageMagics config")


async def test_chat_widget_repr_and_state_mask_the_key(key_set: str, tmp_path: Path) -> None:
    from upstage_magic.errors import AuthenticationError
    from upstage_magic.notebook.widget import ChatWidget
    from upstage_magic.session import ChatSession

    class Provider:
        models = ["m"]

        def __init__(self) -> None:
            self.errors = [AuthenticationError(f"Incorrect API key provided: {KEY}", status=401),
                           RuntimeError(f"unexpected {KEY}")]

        async def create_async_generator(self, model: str, messages: list, **kw: Any):
            yield "partial "
            raise self.errors.pop(0)

    w = ChatWidget(session=ChatSession(), provider=Provider(), fetch_models=False, export_dir=tmp_path)
    for prompt in ("first", "second"):
        task = w.send(prompt)
        assert task is not None
        await asyncio.wait_for(task, 10)
    w.export(tmp_path / "chat.md")
    w._notice(RuntimeError(f"notice {KEY}"))  # the path used for refused sends / export errors
    state = {}
    stack = [w]
    while stack:
        x = stack.pop()
        state[x.model_id] = x.get_state()
        stack.extend(getattr(x, "children", ()) or ())
    assert [t.status for t in w.session.turns] == ["error", "error"]
    blob = json.dumps(state, default=str)
    assert "Incorrect API key provided" in blob and "unexpected" in blob  # the errors are shown...
    hits = find_leaks(blob, "widget state") + find_leaks(repr(w), "repr(ChatWidget)")
    hits += find_leaks((tmp_path / "chat.md").read_text(), "widget export")
    assert not hits, "\n".join(hits)  # ...without the key
    w.close()
