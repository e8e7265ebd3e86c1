"""The conversation follows the notebook, in a real kernel: cell ids from the execute request.

JupyterLab 4 and Notebook 7 send ``{"cellId": ...}`` in the execute request's metadata;
these tests send exactly that message (as the browser does) over jupyter_client.
"""
from __future__ import annotations

import pytest

from tests.support.harness import TEST_KEY, KernelSession, magic_kernel

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def emu():
    from upstage_magic.emulator import serve_in_thread

    with serve_in_thread(api_key=TEST_KEY) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def kernel(emu):
    with magic_kernel(emu.base_url) as k:
        yield k


@pytest.fixture
def fresh(kernel, emu) -> KernelSession:
    emu.configure(reply="echo", answer_tokens=None, tokens_per_second=None, reasoning=False)
    emu.set_fault(None)
    kernel.run("%upstage reset\n%config UpstageMagics.history_tokens = 4000")
    return kernel


def in_cell(k: KernelSession, cell_id: str | None, code: str) -> list[dict]:
    """Run ``code`` as a notebook front end does: ``cellId`` in the request's metadata."""
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    msg = k.kc.session.msg("execute_request", content, metadata={"cellId": cell_id} if cell_id else {})
    k.kc.shell_channel.send(msg)
    return k.collect(msg["header"]["msg_id"], 120)


STATE = ("import json; m = get_ipython().find_magic('upstage', 'cell').__self__; "
         "r = m.last_exchange.request; "
         "print(json.dumps({'turns': [[t.prompt, t.cell] for t in m.session.turns], "
         "'sent': [x['content'] for x in r.messages if x['role'] == 'user'], "
         "'info': r.history_info.to_dict() if r.history_info else None}))")


def test_rerunning_cells_replaces_their_turns(fresh):
    k = fresh
    for cid in ("a", "b", "c"):
        assert not [m for m in in_cell(k, cid, f"%%upstage\nquestion {cid}") if m["msg_type"] == "error"]
    state = k.json(STATE)
    assert [p for p, _ in state["turns"]] == ["question a", "question b", "question c"]
    assert [c for _, c in state["turns"]] == ["cell:a", "cell:b", "cell:c"]
    # Run all again: still three turns, and cell c carries a and b only (not its own earlier turn).
    for cid in ("a", "b", "c"):
        in_cell(k, cid, f"%%upstage\nquestion {cid}")
    state = k.json(STATE)
    assert len(state["turns"]) == 3
    assert state["sent"] == ["question a", "question b", "question c"]
    assert state["info"]["replaces"] is True and state["info"]["sent"] == 2
    # Re-running the middle cell sends only what is above it, and replaces it in place.
    in_cell(k, "b", "%%upstage\nquestion b, edited")
    state = k.json(STATE)
    assert [p for p, _ in state["turns"]] == ["question a", "question b, edited", "question c"]
    assert state["sent"] == ["question a", "question b, edited"]


def test_without_cell_id_the_run_number_names_the_turn_and_history_says_so(fresh):
    k = fresh
    in_cell(k, None, "%%upstage\nsame question")
    in_cell(k, None, "%%upstage\nsame question")
    state = k.json(STATE)
    assert [p for p, _ in state["turns"]] == ["same question", "same question"]
    assert all(c.startswith("run:") for _, c in state["turns"])
    out = k.execute("%upstage history")
    text = out.stdout + "".join(d["data"].get("text/plain", "") for d in out.displays)
    assert "run number" in text and "adds a turn" in text
    assert "history: 1 turn" in text


def test_history_budget_is_a_setting_and_bounds_what_is_sent(fresh):
    k = fresh
    for cid in "abcd":
        in_cell(k, cid, "%%upstage\n" + f"topic {cid} " + "filler words here " * 40)
    k.run("%config UpstageMagics.history_tokens = 900")
    in_cell(k, "e", "%%upstage\nshort question")
    state = k.json(STATE)
    info = state["info"]
    assert info["budget"] == 900 and info["sent"] >= 1 and info["left_out"] >= 1
    assert info["sent"] + info["left_out"] == 4 and info["tokens"] <= 900
    assert state["sent"][-1] == "short question" and len(state["sent"]) == info["sent"] + 1
    assert state["sent"][0].startswith(f"topic {'abcd'[4 - info['sent']]}")  # the newest ones went
    bad = k.execute("%config UpstageMagics.history_tokens = -1")
    said = bad.stdout + bad.stderr + (str(bad.error) if bad.error else "")
    assert "history_tokens must be" in said
    assert k.json("print(get_ipython().find_magic('upstage', 'cell').__self__.settings.history_tokens)") == 900


def test_a_stopped_answer_is_kept_but_not_sent_back(fresh, emu):
    k = fresh
    emu.configure(reply="markdown", tokens_per_second=20, answer_tokens=400)
    msg_id = k.submit("%%upstage\nwrite a long essay")
    k.collect(msg_id, 60, until=lambda m: m["msg_type"] == "display_data")
    k.interrupt()
    k.collect(msg_id, 60)
    emu.configure(reply="echo", tokens_per_second=None, answer_tokens=None)
    in_cell(k, "z", "%%upstage\nan unrelated question")
    state = k.json(STATE)
    assert [p for p, _ in state["turns"]] == ["write a long essay", "an unrelated question"]
    assert state["sent"] == ["an unrelated question"]
    hist = k.execute("%upstage history")
    text = hist.stdout + "".join(d["data"].get("text/plain", "") for d in hist.displays)
    assert "not sent back as context" in text


def test_an_empty_stream_after_a_large_prompt_says_the_context_may_be_full(fresh, emu):
    k = fresh
    k.run("%config UpstageMagics.history_tokens = None")  # no budget: the whole conversation goes
    in_cell(k, "big", "%%upstage\n" + "a long pasted document " * 700)
    emu.set_fault({"kind": "empty", "body": True, "times": None})
    try:
        r = k.execute("%%upstage\nand now?")
    finally:
        emu.set_fault(None)
    assert r.error is not None and r.error["ename"] == "IncompleteStreamError"
    shown = "\n".join(r.error["traceback"])
    assert "context may be full" in shown and "--no-history" in shown and "history_tokens" in shown


def test_a_connection_error_is_a_small_block_and_a_short_real_error(fresh):
    from tests.support.harness import free_port

    port = free_port()
    r = fresh.execute(f"%%upstage --base-url http://127.0.0.1:{port}/v1\nhello")
    assert r.error is not None and r.error["ename"] == "APIConnectionError"  # a real error: Run all stops
    shown = "\n".join(r.error["traceback"])
    assert f"Could not connect to the server at 127.0.0.1:{port}." in shown  # not Upstage's: named (issue 21)
    assert "ssl:default" not in shown and "Connect call failed" not in shown  # internals only in Details
    blocks = [d["data"] for d in r.displays if "um-error" in d["data"].get("text/html", "")]
    assert len(blocks) == 1
    assert "<details><summary>Details</summary>" in blocks[0]["text/html"]
    assert "Connect call failed" in blocks[0]["text/plain"] and "overflow-wrap: break-word" in blocks[0]["text/html"]
    # While it retried, a live line said so (then it was removed).
    live = [d["data"].get("text/plain", "") for d in r.displays if "retrying (" in d["data"].get("text/plain", "")]
    assert live and live[0].startswith("retrying (1/") and f" s: Could not connect to the server at 127.0.0.1:{port}." in live[0]
    assert "ssl:default" not in "".join(live)
