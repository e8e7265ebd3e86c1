"""Issue 8 "Leaks": a canary key and a canary password appear nowhere, whatever happens.

A real kernel (nbclient, ``%xmode Verbose`` so every traceback shows its frames' locals) runs
one notebook against an emulator subprocess that requires the canary key:

- the model echoes the key back: ``%%upstage`` streamed, ``--no-stream``, ``-f text``,
  ``-f code``, ``-o`` (and the variable shown), ``%upstage history``, exports, the widget;
- every error path, through the magic and through the provider directly: 401 (whose server
  message echoes the key), 404, 429, 500, connection refused, a cut stream, a malformed
  event, a timeout, a key with a newline inside, a base URL with credentials
  (``http://user:PASSWORD@127.0.0.1:PORT/v1``, as a setting and as ``UPSTAGE_BASE_URL``),
  ``%upstage models`` and ``%upstage config`` (and ``%config UpstageMagics``).

Then the key (and the newline key's halves) and the password are searched for, in raw,
URL-encoded, JSON-escaped and base64 forms (Basic-auth "user:password" included), in every
cell's outputs, the saved .ipynb, its nbconvert HTML export, widget state, exported files
and the kernel's own stdout/stderr. No secret is a literal here: all are built at run time
and reach the kernel through environment variables the first cell pops.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.parse
from typing import Any

import pytest

from tests.support.harness import ROOT, EmulatorProcess, free_port

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(600)]

# Built at run time: no key-shaped literal in the repository.
KEY = "up_" + "KEYCANARY" + secrets.token_hex(10)
NL_HEAD = "up_" + "NLHEADCANARY" + secrets.token_hex(6)
NL_TAIL = "NLTAILCANARY" + secrets.token_hex(6)
PASSWORD = "PWCANARY" + secrets.token_hex(8)
USER = "alice"


def needles() -> dict[str, str]:
    """Every secret in the forms it could take in a text (base64 at every alignment)."""
    out: dict[str, str] = {}
    for name, value in (("key", KEY), ("nl-head", NL_HEAD), ("nl-tail", NL_TAIL), ("password", PASSWORD)):
        out[f"{name}"] = value
        out[f"{name}-core"] = value.removeprefix("up_")[4:]  # a cut-off prefix still leaks
        out[f"{name}-tail"] = value[-14:]  # so does a header cut before the end (random hex)
        out[f"{name}-url"] = urllib.parse.quote(value, safe="")
        out[f"{name}-json"] = json.dumps(value)[1:-1]
        raw = value.encode()
        for lead in range(3):
            out[f"{name}-b64-{lead}"] = base64.b64encode(b"\0" * lead + raw).decode()[4:-4]
    for lead in range(3):  # Authorization: Basic base64(user:password)
        out[f"basic-{lead}"] = base64.b64encode(b"\0" * lead + f"{USER}:{PASSWORD}".encode()).decode()[8:-4]
    return out


NEEDLES = needles()


def find_leaks(text: str, where: str) -> list[str]:
    hits = []
    for form, n in NEEDLES.items():
        i = text.find(n)
        if i >= 0:
            hits.append(f"{where}: {form} at {i}: ...{text[max(0, i - 100):i + 40]!r}...")
    return hits


def test_needles_catch_what_they_must() -> None:
    assert find_leaks(f"Authorization: Bearer {KEY}", "t")
    assert find_leaks("Authorization: Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(), "t")
    assert find_leaks(f"http://{USER}:{PASSWORD}@127.0.0.1/v1", "t")
    assert find_leaks(repr(NL_HEAD + "\n" + NL_TAIL), "t")
    assert find_leaks("...cut " + KEY[-14:], "t")  # the tail the issue saw in a cut header
    assert not find_leaks("Bearer up_***", "t")


# ------------------------------------------------------------------------- notebook

SETUP = """\
%load_ext upstage_magic
import asyncio, json, os, urllib.request
from upstage_magic import settings, ChatWidget, Upstage
settings.set_api_key(os.environ.pop('LEAKTEST_KEY'))
CRED_URL = os.environ.pop('LEAKTEST_CRED_URL')
NL_KEY = os.environ.pop('LEAKTEST_NL_KEY')
GOOD_URL = os.environ['UPSTAGE_BASE_URL']
_CTL = GOOD_URL[:-3]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def _post(path, payload):
    req = urllib.request.Request(_CTL + path, data=json.dumps(payload).encode(), method='POST',
                                 headers={'Content-Type': 'application/json'})
    _OPENER.open(req, timeout=30).read()
def emu(**cfg):
    _post('/_emulator/config', cfg)
def fault(f):
    _post('/_emulator/fault', f)
def echo_key():
    k = str(settings.get_api_key())
    return 'Sure, your key is ' + k + ' and in a sentence: key=' + k + '.'
print('setup done')"""

ECHO = "emu(reply=echo_key())"
ECHO_CODE = "emu(reply='```python\\nAPI_KEY = \"' + str(settings.get_api_key()) + '\"\\n```')"
GOOD = "emu(reply='markdown'); fault(None)"
ECHO_401 = "fault({'kind': 'status', 'status': 401, 'message': 'Incorrect API key provided: ' + str(settings.get_api_key())})"
DIRECT = "await Upstage.create_async('solar-mini4', 'hi', max_retries=0)"
DIRECT_STREAM = "async for c in Upstage.create_async_generator('solar-mini4', 'hi', max_retries=0):\n    pass"

CELLS: list[tuple[str, str]] = [
    ("setup", SETUP),
    ("xmode", "%xmode Verbose"),
    # --- the model echoes the key
    ("echo stream", ECHO + "\nget_ipython().run_cell_magic('upstage', '', 'Tell me my key')"),
    ("echo no-stream", ECHO + "\nget_ipython().run_cell_magic('upstage', '--no-stream', 'Tell me my key')"),
    ("echo -f text", ECHO + "\nget_ipython().run_cell_magic('upstage', '-f text', 'Tell me my key')"),
    ("echo -f code", ECHO_CODE + "\nget_ipython().run_cell_magic('upstage', '-f code -o code_answer', 'Key as code')"),
    ("echo -o", ECHO + "\nget_ipython().run_cell_magic('upstage', '-o answer', 'Tell me my key')"),
    ("-o variable shown", "answer"),
    ("-o code variable shown", "code_answer"),
    ("history", "%upstage history"),
    ("export md", "%upstage export chat.md"),
    ("export json", "%upstage export chat.json"),
    ("widget echo", ECHO + "\nw = ChatWidget()\ndisplay(w)\nt = w.send('Tell me my key')\nif t is not None:\n"
                    "    await t\nwhile w.streaming:\n    await asyncio.sleep(0.05)\nprint([x.status for x in w.session.turns][-1:])"),
    ("widget repr", "print(repr(w)[:5000]); w.export('widget-chat.md')"),
    ("reset", GOOD + "\n%upstage reset"),
    # --- error paths, through the magic and through the provider directly
    ("401 magic", ECHO_401 + "\nget_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("401 direct", ECHO_401 + "\n" + DIRECT),
    ("401 stream direct", ECHO_401 + "\n" + DIRECT_STREAM),
    ("404 magic", GOOD + "\nget_ipython().run_cell_magic('upstage', '-m no-such-model', 'hi')"),
    ("404 direct", "await Upstage.create_async('no-such-model', 'hi', max_retries=0)"),
    ("429 magic", "fault({'kind': 'status', 'status': 429, 'message': 'slow down ' + str(settings.get_api_key()), "
                  "'retry_after': 0, 'times': 10})\nget_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("429 direct", "fault({'kind': 'status', 'status': 429, 'retry_after': 0, 'times': 10})\n" + DIRECT),
    ("500 magic", "fault({'kind': 'status', 'status': 500, 'message': 'boom ' + str(settings.get_api_key()), "
                  "'times': 10})\nget_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("500 direct", "fault({'kind': 'status', 'status': 500, 'times': 10})\n" + DIRECT),
    ("refused magic", GOOD + "\nget_ipython().run_cell_magic('upstage', '--base-url http://127.0.0.1:{dead}/v1', 'hi')"),
    ("refused direct", "await Upstage.create_async('solar-mini4', 'hi', base_url='http://127.0.0.1:{dead}/v1', max_retries=0)"),
    ("cut magic", "fault({'kind': 'cut', 'after': 3})\nget_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("cut direct", "fault({'kind': 'cut', 'after': 3})\n" + DIRECT_STREAM),
    ("malformed magic", "fault({'kind': 'malformed', 'after': 2})\nget_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("malformed direct", "fault({'kind': 'malformed', 'after': 2})\n" + DIRECT_STREAM),
    ("error event magic", "fault({'kind': 'error_event', 'after': 2, 'message': 'echo ' + str(settings.get_api_key())})\n"
                          "get_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("timeout magic", "fault({'kind': 'stall', 'after': 2, 'seconds': 5})\n"
                      "%config UpstageMagics.timeout = 0.5\nget_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("timeout direct", "fault({'kind': 'stall', 'after': 2, 'seconds': 5})\n"
                       "async for c in Upstage.create_async_generator('solar-mini4', 'hi', timeout=0.5, max_retries=0):\n"
                       "    pass"),
    ("timeout reset", "%config UpstageMagics.timeout = None\nfault(None)"),
    ("models ok", "%upstage models"),
    ("config ok", "%upstage config"),
    # --- a key with a newline inside
    ("newline key set", "try:\n    settings.set_api_key(NL_KEY)\n    print('accepted')\nexcept Exception as exc:\n"
                        "    print('refused:', type(exc).__name__, exc)"),
    ("newline key magic", GOOD + "\nget_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("newline key direct", DIRECT),
    ("newline key stream direct", DIRECT_STREAM),
    ("newline key models", "%upstage models"),
    ("newline key config", "%upstage config"),
    ("newline key in env", "os.environ['UPSTAGE_API_KEY'] = NL_KEY\nsettings.set_api_key(None)\n"
                           "get_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("newline key env direct", DIRECT),
    ("key restored", "os.environ.pop('UPSTAGE_API_KEY', None)\nsettings.set_api_key(os.environ['LEAKTEST_KEY_AGAIN'])"
                     "\nprint('key restored')"),
    # --- a base URL with credentials: as a setting, then as UPSTAGE_BASE_URL
    ("cred url setting", "%config UpstageMagics.base_url = CRED_URL"),
    ("cred url %config", "%config UpstageMagics"),
    ("cred url config", "%upstage config"),
    ("cred url models", "%upstage models"),
    ("cred url magic", "get_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("cred url widget", "w2 = ChatWidget()\ndisplay(w2)\nt = w2.send('hi')\nif t is not None:\n    await t\n"
                        "while w2.streaming:\n    await asyncio.sleep(0.05)\nprint(repr(w2)[:3000])"),
    ("cred url direct", "await Upstage.create_async('solar-mini4', 'hi', base_url=CRED_URL, max_retries=0)"),
    ("cred url list direct", "await Upstage.list_models(base_url=CRED_URL, max_retries=0)"),
    ("cred url env", "%config UpstageMagics.base_url = ''\nos.environ['UPSTAGE_BASE_URL'] = CRED_URL\n%upstage config"),
    ("cred url env models", "%upstage models"),
    ("cred url env magic", "get_ipython().run_cell_magic('upstage', '', 'hi')"),
    ("cred url env settings", "print(settings.get_base_url())"),
    ("cred url env direct", DIRECT),
    ("final history", "os.environ['UPSTAGE_BASE_URL'] = GOOD_URL\n%upstage history"),
    ("final state", "from upstage_magic.session import default_session\n"
                    "m = get_ipython().magics_manager.registry['UpstageMagics']\n"
                    "print(repr(m), repr(default_session()), default_session().turns)\n"
                    "print(default_session().export_json())"),
]


def _notebook(dead_port: int) -> Any:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src.replace("{dead}", str(dead_port))) for _, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Execute the notebook (widget state stored), save it, export it to HTML."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    work = tmp_path_factory.mktemp("secrets")
    emu_dir = tmp_path_factory.mktemp("secrets-emulator")  # outside `work`: the server knows the key
    emu = EmulatorProcess(emu_dir, api_key=KEY, tokens_per_second=None)
    port = emu.base_url.split(":")[2].split("/")[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPSTAGE_") and "proxy" not in k.lower()}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", IPYTHONDIR=str(work / ".ipython"),
               UPSTAGE_BASE_URL=emu.base_url, LEAKTEST_KEY=KEY, LEAKTEST_KEY_AGAIN=KEY,
               LEAKTEST_NL_KEY=NL_HEAD + "\n" + NL_TAIL,
               LEAKTEST_CRED_URL=f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/v1")
    log = work / "kernel.log"
    nb = _notebook(free_port())
    try:
        client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True, store_widget_state=True,
                                resources={"metadata": {"path": str(work)}})
        with open(log, "ab") as fh:
            client.execute(env=env, stdout=fh, stderr=fh)
    finally:
        emu.close()
    nbformat.write(nb, work / "secrets.ipynb")
    html, _ = HTMLExporter().from_notebook_node(nbformat.read(work / "secrets.ipynb", as_version=4))
    (work / "secrets.html").write_text(html, encoding="utf-8")
    return {"work": work, "nb": nb}


def _cell_text(nb: Any, name: str) -> str:
    i = [n for n, _ in CELLS].index(name)
    return json.dumps(nb.cells[i].get("outputs", []))


def test_the_paths_really_ran(run: dict[str, Any]) -> None:
    """Guard against a vacuous pass: the key was set, answers and errors happened."""
    nb = run["nb"]
    assert "setup done" in _cell_text(nb, "setup")
    assert "Sure, your key is" in _cell_text(nb, "echo stream")  # the echo reached the output...
    assert "Sure, your key is" in _cell_text(nb, "echo no-stream")
    assert "401" in _cell_text(nb, "401 magic") and "401" in _cell_text(nb, "401 direct")
    assert "Traceback" in _cell_text(nb, "401 direct") or "Error" in _cell_text(nb, "401 direct")
    assert "key restored" in _cell_text(nb, "key restored")
    assert "api key" in _cell_text(nb, "config ok")
    assert "base_url" in _cell_text(nb, "cred url config")
    assert (run["work"] / "chat.md").exists() and (run["work"] / "chat.json").exists()
    assert nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state")
    assert (run["work"] / "kernel.log").stat().st_size > 0


@pytest.mark.parametrize("name", [n for n, _ in CELLS])
def test_no_secret_in_cell_outputs(run: dict[str, Any], name: str) -> None:
    """One case per cell, so a leak names the path that caused it."""
    hits = find_leaks(_cell_text(run["nb"], name), name)
    assert not hits, "\n".join(hits[:6])


def test_no_secret_in_files_widget_state_or_kernel_log(run: dict[str, Any]) -> None:
    """The saved .ipynb, its HTML export, the exports, widget state and the kernel's own output."""
    hits: list[str] = []
    for path in sorted(run["work"].rglob("*")):
        if path.is_file() and ".ipython" not in path.parts:
            hits += find_leaks(path.read_bytes().decode("utf-8", "replace"), str(path.relative_to(run["work"])))
    hits += find_leaks(json.dumps(run["nb"].metadata.get("widgets", {})), "widget state")
    assert not hits, "\n".join(hits[:20])
