"""ChatWidget.attach: files go with the next question only (a PDF through the emulator's Document Parse)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.fake import FakeProvider
from tests.support.pdfs import report_pdf
from upstage_magic import settings as settings_mod
from upstage_magic.document import DocumentError
from upstage_magic.emulator import serve_in_thread
from upstage_magic.notebook.widget import ChatWidget
from upstage_magic.session import ChatSession
from upstage_magic.settings import Settings

KEY = "test-key-WIDGET-ATTACH"


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch):
    with serve_in_thread(api_key=KEY) as emulator:
        monkeypatch.setenv("UPSTAGE_API_KEY", KEY)
        monkeypatch.setattr(settings_mod, "_api_key", None)
        yield emulator


async def test_attach_goes_with_the_next_send_only(emu, tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(report_pdf())
    (tmp_path / "notes.md").write_text("See {x} as written.")
    fake = FakeProvider()
    w = ChatWidget(provider=fake, fetch_models=False, session=ChatSession(), settings=Settings(base_url=emu.base_url))
    w.send_msg = lambda m: None  # type: ignore[method-assign]
    names = await asyncio.to_thread(w.attach, tmp_path / "report.pdf", tmp_path / "notes.md")
    assert names == ["report.pdf", "notes.md"] and "attached: report.pdf, notes.md" == w.status
    task = w.send("what grew?")
    assert task is not None
    await asyncio.wait_for(task, 10)
    first = fake.calls[0]["messages"][-1]["content"]
    assert "| North | 10 | 12 |" in first and "See {x} as written." in first and first.endswith("what grew?")
    assert [q["path"] for q in emu.documents.requests] == ["sync"]
    task = w.send("and then?")
    assert task is not None
    await asyncio.wait_for(task, 10)
    assert fake.calls[1]["messages"][-1]["content"] == "and then?"


def test_attach_refuses_bad_files_and_detach_forgets(tmp_path: Path) -> None:
    w = ChatWidget(provider=FakeProvider(), fetch_models=False, session=ChatSession())
    with pytest.raises(DocumentError, match="no such file"):
        w.attach(tmp_path / "nope.txt")
    with pytest.raises(DocumentError, match="unsupported file type"):
        w.attach(tmp_path / "x.exe")
    (tmp_path / "a.txt").write_text("hello")
    w.attach(tmp_path / "a.txt")
    w.detach()
    assert w.take_attachments() is None
