"""Documents and the notebook's own cells in a real kernel, against the emulator.

``%upstage parse`` (a table back as a DataFrame, the asynchronous path with progress and
interrupt, the disk cache), ``%%upstage --file`` (a PDF through Document Parse, a text file
never placeholder-filled), ``--cells``/``--notebook`` within the budget, and each error
as one line with nothing sent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import DISPLAY_TYPES, TEST_KEY, KernelSession
from tests.support.pdfs import TABLE, long_pdf, report_pdf
from upstage_magic.context import estimate_tokens

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def emu():
    from upstage_magic.emulator import serve_in_thread

    with serve_in_thread(api_key=TEST_KEY) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("docs")
    (d / "report.pdf").write_bytes(report_pdf())
    (d / "long.pdf").write_bytes(long_pdf(60))
    (d / "mid.pdf").write_bytes(long_pdf(25))
    (d / "notes.md").write_text("Remember {x} and {secret}: keep as written.\n")
    (d / "tool.exe").write_bytes(b"MZ\x90\x00")
    with open(d / "huge.pdf", "wb") as f:
        f.truncate(50 * 1024 * 1024 + 10)
    return d


@pytest.fixture(scope="module")
def kernel(emu, files):
    k = KernelSession({"UPSTAGE_BASE_URL": emu.base_url, "UPSTAGE_API_KEY": TEST_KEY}, cwd=files)
    try:
        k.run("%load_ext upstage_magic")
        yield k
    finally:
        k.close()


@pytest.fixture
def fresh(kernel, emu) -> KernelSession:
    emu.configure(reply="echo", answer_tokens=None, tokens_per_second=None, reasoning=False)
    emu.reset()
    emu.configure(reply="echo")
    kernel.run("%upstage reset\n%upstage cache clear")
    return kernel


def texts(msgs: list[dict[str, Any]]) -> str:
    """Everything a person could read in the cell: streams, text/plain of displays, errors."""
    out = []
    for m in msgs:
        c = m["content"]
        if m["msg_type"] == "stream":
            out.append(c["text"])
        elif m["msg_type"] in (*DISPLAY_TYPES, "execute_result"):
            out.append(c["data"].get("text/plain", ""))
        elif m["msg_type"] == "error":
            out.append(f"{c['ename']}: {c['evalue']}")
    return "\n".join(out)


def error_of(msgs: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((m["content"] for m in msgs if m["msg_type"] == "error"), None)


def test_parse_gives_document_with_table_as_dataframe(fresh, emu, files):
    r = fresh.execute(f"%upstage parse {files / 'report.pdf'} -o doc")
    assert r.error is None, r.error
    [html] = [d["data"]["text/html"] for d in r.displays if "text/html" in d.get("data", {})]
    assert "report.pdf" in html and "3 pages" in html and "1 table" in html
    rows = fresh.json("import json\nprint(json.dumps([doc.page_count, list(doc.tables[0].columns), "
                      "doc.tables[0].values.tolist(), len(doc.pages), doc.elements[0].category]))")
    assert rows == [3, list(TABLE[0]), [list(r) for r in TABLE[1:]], 3, "heading1"]
    assert [q["path"] for q in emu.documents.requests] == ["sync"]


def test_second_parse_sends_nothing_and_cache_clear_clears_it(fresh, emu, files):
    fresh.run(f"%upstage parse {files / 'report.pdf'} -o a")
    fresh.run(f"%upstage parse {files / 'report.pdf'} -o b")
    assert len(emu.documents.requests) == 1
    assert fresh.json("print(str([a.markdown == b.markdown, b.cached]).lower())") == [True, True]
    out = fresh.run("%upstage cache clear")
    assert "1 parsed document removed" in out
    fresh.run(f"%upstage parse {files / 'report.pdf'} -o c")
    assert len(emu.documents.requests) == 2


def test_async_path_shows_progress_pages(fresh, emu, files):
    emu.documents.seconds_per_batch = 0.3
    r = fresh.execute(f"%upstage parse {files / 'mid.pdf'} -o doc")
    assert r.error is None, r.error
    shown = texts(r.msgs)
    assert "/25 pages" in shown and "Parsed mid.pdf: 25 pages" in shown
    done = [int(line.split(": ")[1].split("/")[0]) for line in shown.splitlines() if line.startswith("Parsing mid.pdf")]
    assert done == sorted(done) and len(done) >= 2
    assert [q["path"] for q in emu.documents.requests] == ["async"]
    assert fresh.json("print(doc.page_count)") == 25


def test_interrupt_cancels_the_async_parse(fresh, emu, files):
    emu.documents.seconds_per_batch = 5.0  # 60 pages: 30 s
    msg_id = fresh.submit(f"%upstage parse {files / 'long.pdf'} -o doc_long")
    seen = fresh.collect(msg_id, 60, until=lambda m: m["msg_type"] in DISPLAY_TYPES
                         and "Parsing long.pdf" in m["content"]["data"].get("text/plain", ""))
    fresh.interrupt()
    msgs = seen + fresh.collect(msg_id, 30)
    err = error_of(msgs)
    assert err is not None and err["ename"] == "KeyboardInterrupt" and len(err["traceback"]) <= 3
    assert "stopped (nothing was stored)" in texts(msgs)
    assert fresh.json("print(str('doc_long' in globals()).lower())") is False
    emu.documents.seconds_per_batch = 0.0
    after = fresh.execute("%%upstage --no-history\nstill there?")
    assert after.error is None


def test_file_attaches_pdf_markdown_and_text_unfilled(fresh, emu, files):
    fresh.run("x = 'FILLED'\nsecret = 'NO'")
    r = fresh.execute("%%upstage --file report.pdf,notes.md --no-history\nWhat grew, {x}?")
    assert r.error is None, r.error
    sent = emu.requests[-1]["messages"][-1]["content"]
    assert "| North | 10 | 12 |" in sent and "Quarterly report" in sent
    assert "Remember {x} and {secret}: keep as written." in sent
    assert sent.rstrip().endswith("What grew, FILLED?")
    assert "Attached: file report.pdf, file notes.md" in texts(r.msgs)
    assert len(emu.documents.requests) == 1


def test_dry_run_shows_attachments_and_parses_nothing_new(fresh, emu, files):
    r = fresh.execute("%%upstage --file report.pdf --dry-run\nsummarise")
    shown = texts(r.msgs)
    assert "Dry run: nothing was sent." in shown and "would be parsed by Upstage Document Parse" in shown
    assert emu.documents.requests == [] and emu.requests == []
    fresh.run(f"%upstage parse {files / 'report.pdf'} -o d")
    shown = texts(fresh.execute("%%upstage --file report.pdf --dry-run\nsummarise").msgs)
    assert "| North | 10 | 12 |" in shown and len(emu.documents.requests) == 1 and emu.requests == []


def test_cells_and_notebook_within_budget(fresh, emu):
    fresh.run("alpha = 41")
    fresh.execute("alpha + 1")
    fresh.run("big = '''" + "y" * 9000 + "'''")
    fresh.run("beta = 'last one {alpha}'")
    r = fresh.execute("%%upstage --notebook --context-budget 600 --no-history\nwhat is alpha?")
    assert r.error is None, r.error
    sent = emu.requests[-1]["messages"][-1]["content"]
    block = sent.split("End of attachments.")[0] + "End of attachments."
    assert estimate_tokens(block) <= 600
    assert "beta = 'last one {alpha}'" in sent  # newest first, never filled
    assert sent.index("beta = ") < sent.index("big = ")
    assert "cut to fit" in sent or "Left out" in sent
    fresh.run("gamma = 7")
    n = fresh.json("print(len(In) - 2)")  # the cell that defined gamma
    r = fresh.execute(f"%%upstage --cells {n}-{n} --no-history\nwhat is gamma?")
    sent = emu.requests[-1]["messages"][-1]["content"]
    assert f"### cell {n}" in sent and "gamma = 7" in sent and "alpha = 41" not in sent


def test_own_answers_left_out_unless_asked(fresh, emu):
    fresh.execute("%%upstage\nfirst question")  # the echo reply answers "first question"
    r = fresh.execute("%%upstage --notebook --no-history\nagain")
    sent = emu.requests[-1]["messages"][-1]["content"]
    assert "%%upstage\nfirst question" in sent and "# answer:" not in sent
    assert "again\n```" not in sent  # the running cell itself is not attached
    fresh.execute("%%upstage --notebook --with-answers --no-history\nagain")
    assert "%%upstage\nfirst question\n# answer:\nfirst question" in emu.requests[-1]["messages"][-1]["content"]
    assert r.error is None


@pytest.mark.parametrize(("line", "words"), [
    ("%%upstage --file missing.pdf", "missing.pdf: no such file"),
    ("%%upstage --file tool.exe", "unsupported file type '.exe'"),
    ("%%upstage --file huge.pdf", "over Document Parse's limit of 50 MB"),
    ("%upstage parse missing.pdf", "no such file"),
    ("%upstage parse notes.md", "attach this file with --file instead"),
    ("%%upstage --cells 9-x", "--cells '9-x'"),
])
def test_local_errors_are_one_line_and_send_nothing(fresh, emu, line, words):
    r = fresh.execute(line + ("\nquestion" if line.startswith("%%") else ""))
    assert r.error is None and r.stderr.startswith("UsageError: ") and r.stderr.count("\n") == 1, r.stderr
    assert words in r.stderr
    assert emu.requests == [] and emu.documents.requests == []


def test_service_4xx_is_one_line(fresh, emu, files):
    emu.documents.fault = {"status": 400, "message": "The document is password protected."}
    r = fresh.execute(f"%upstage parse {files / 'report.pdf'}")
    assert r.stderr.startswith("UsageError: BadRequestError: ") and r.stderr.count("\n") == 1, r.stderr
    assert "password protected" in r.stderr
