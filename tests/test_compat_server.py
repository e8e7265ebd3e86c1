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

