"""Shared pytest fixtures."""
from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator

import pytest

# The conversation log and the answer cache live under UPSTAGE_MAGIC_HOME: keep the tests'
# (and their kernels') files out of the user's data directory.
os.environ["UPSTAGE_MAGIC_HOME"] = tempfile.mkdtemp(prefix="upstage-magic-tests-")

from upstage_magic.emulator import Emulator

TEST_KEY = "test-key-SECRET123"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A started Emulator on a free loopback port (``emulator.base_url``)."""
    emu = Emulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
def emulator_env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """Point UPSTAGE_BASE_URL at the emulator and set a test key in UPSTAGE_API_KEY."""
    monkeypatch.setenv("UPSTAGE_BASE_URL", emulator.base_url)
    monkeypatch.setenv("UPSTAGE_API_KEY", TEST_KEY)
    return emulator


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the provider's retry waits instead of sleeping."""
    import upstage_magic.providers.http as upstage_module

    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(upstage_module, "_sleep", fake_sleep)
    return delays


@pytest.fixture(autouse=True)
def fresh_model_lists() -> None:
    """Each test starts with no server's model list known (models caches them per process)."""
    from upstage_magic import models

    models._LIVE.clear()
    models._OFFERED.clear()
    models._ASKED.clear()


@pytest.fixture(autouse=True)
def no_stored_server_facts(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """The json_schema answer of a server is kept in the cache file beyond the process; tests start
    from nothing known (emulator ports are reused), except those asking for ``stored_server_facts``."""
    if "stored_server_facts" in request.fixturenames:
        return
    from upstage_magic.providers import jsonmode

    monkeypatch.setattr(jsonmode, "_stored", lambda base, takes=None: None)


@pytest.fixture
def stored_server_facts(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """What servers refused is kept on disk, in a cache file of this test's own."""
    monkeypatch.setenv("UPSTAGE_MAGIC_CACHE", str(tmp_path / "cache.sqlite3"))
    return tmp_path / "cache.sqlite3"
