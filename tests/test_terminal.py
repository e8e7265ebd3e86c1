"""Terminal IPython: the magic streams plain text to stdout (no display reprs)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TEST_KEY = "test-key-SECRET123"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def emu():
    from upstage_magic.emulator import serve_in_thread

    with serve_in_thread(api_key=TEST_KEY) as emulator:
        yield emulator


def ipython(emu, code: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, UPSTAGE_BASE_URL=emu.base_url, UPSTAGE_API_KEY=TEST_KEY,
               PYTHONPATH=str(ROOT), TERM="dumb")
    env.pop("UPSTAGE_MODEL", None)
    return subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor", "--HistoryManager.enabled=False",
         *extra, "-c", code],
        capture_output=True, text=True, env=env, timeout=120, cwd=str(ROOT),
    )


def test_cell_magic_streams_plain_text(emu):
    code = "%load_ext upstage_magic\nget_ipython().run_cell_magic('upstage', '', 'Hi from the terminal')"
    r = ipython(emu, code)
    assert r.returncode == 0, r.stderr
    assert "You asked: Hi from the terminal" in r.stdout
    assert "```python\ndef greet" in r.stdout  # the Markdown source, as plain text
    assert " in / " in r.stdout and " out · " in r.stdout  # footer line
    assert "IPython.core.display" not in r.stdout and "object>" not in r.stdout
    assert TEST_KEY not in r.stdout + r.stderr


def test_extension_from_config_and_line_magic(emu):
    code = ("get_ipython().run_cell_magic('upstage', '-f json -o d', 'give me json')\n"
            "print('parsed:', type(d).__name__)\n"
            "get_ipython().run_line_magic('upstage', 'config')")
    r = ipython(emu, code, "--InteractiveShellApp.extensions=['upstage_magic']")
    assert r.returncode == 0, r.stderr
    assert '"answer": "You asked: give me json"' in r.stdout
    assert "parsed: dict" in r.stdout
    assert "set (from UPSTAGE_API_KEY)" in r.stdout and TEST_KEY not in r.stdout


def test_error_is_one_line(emu):
    code = "%load_ext upstage_magic\nget_ipython().run_cell_magic('upstage', '-m no-such-model', 'hi')"
    r = ipython(emu, code)
    out = r.stdout + r.stderr
    assert "ModelNotFoundError:" in out and "no-such-model" in out and "Upstage: Upstage" not in out
    assert "Traceback" not in out and "aiohttp" not in out
