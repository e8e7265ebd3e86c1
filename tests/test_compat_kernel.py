"""Issue 21 part 3 in a real kernel: a local OpenAI-compatible server (the emulator's compat
mode, over loopback) that calls its one model ``solar-pro2``, and no model set in the notebook."""
from __future__ import annotations

import re

import pytest

from tests.support.harness import TEST_KEY, magic_kernel

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def emu():
    from upstage_magic.emulator import serve_in_thread

    with serve_in_thread(api_key=TEST_KEY) as emulator:
        emulator.configure(compat="openai-local", local_model="solar-pro2")
        yield emulator


@pytest.fixture(scope="module")
def kernel(emu):
    with magic_kernel(emu.base_url) as k:
        yield k


def shown(r) -> str:
    """Everything a cell showed: streams, displays' plain text, the error."""
    texts = [r.stdout, r.stderr, *(d.get("data", {}).get("text/plain", "") for d in r.displays)]
    if r.error is not None:
        texts += r.error.get("traceback", [])
    return "\n".join(texts)


def test_the_servers_own_model_is_used_named_once_and_never_called_retired(kernel, emu):
    emu.requests.clear()
    first = kernel.execute("%%upstage\nHello there")
    second = kernel.execute("%%upstage\nAnd again")
    assert first.error is None and second.error is None
    assert [r["model"] for r in emu.requests] == ["solar-pro2", "solar-pro2"]  # not solar-pro4
    said = "No model set: using solar-pro2, the one the server lists"
    assert shown(first).count(said) == 1 and said not in shown(second)
    assert "retired" not in shown(first) + shown(second)
    # -m solar-pro2 on that server: its own model, no notice on any cell
    third = kernel.execute("%%upstage -m solar-pro2\nOnce more")
    assert third.error is None and "retired" not in shown(third)
    listing = kernel.execute("%upstage models --refresh")
    assert "solar-pro2" in shown(listing) and "[retired]" not in shown(listing)
    assert re.search(r"solar-pro2\s+<- current", shown(listing))


def test_totals_that_include_estimates_are_marked_in_history(kernel, emu):
    kernel.run("%upstage reset")
    r = kernel.execute("%%upstage\nHi")
    assert r.error is None
    footer = shown(r)
    assert re.search(r"solar-pro2 · ~\d+ in / ~\d+ out", footer)  # the stream sent no usage
    history = shown(kernel.execute("%upstage history"))
    assert re.search(r"Total: ~\d+ prompt \+ ~\d+ answer tokens \(some estimated", history)
