"""Where ``%upstage chat --side`` puts the chat, in a real front end (Debian chromium).

1. JupyterLab with sidecar's extension: JupyterLab lists and activates the extension
   (``@jupyter-widgets/jupyterlab-sidecar``), and the chat is in JupyterLab's right side area
   (``#jp-right-stack``, right of the notebook), not in the cell.
2. JupyterLab with that extension disabled (page config): no side panel; the chat stays in the
   cell, usable, with one quiet line saying the extension is not loaded.
3. Notebook 7 (no side area): the chat stays in the cell with one quiet line saying why.

Screenshots: artifacts/side_{lab,no_extension,notebook7}.png (the chat's box is measured too).
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from playwright import sync_api

from tests.support.browser import (
    LabServer,
    NotebookServer,
    browser_page,
    open_notebook,
    open_notebook7,
    run_all_cells,
    wait_all_cells_ran,
)
from tests.support.harness import EmulatorProcess

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
SIDECAR = "@jupyter-widgets/jupyterlab-sidecar"

# What the page says about sidecar's extension: listed in the page config, activated by the app.
EXTENSION_JS = """(name) => {
    const c = JSON.parse(document.getElementById('jupyter-config-data').textContent);
    const app = window.jupyterapp;
    return {listed: (c.federated_extensions || []).some(e => e.name === name),
            registered: !!app && app.hasPlugin(name), activated: !!app && app.isPluginActivated(name)};
}"""

# The quiet note of an inline chat: its text, height in lines, and whether the input is usable.
NOTE_JS = """(chat) => {
    const note = chat.querySelector('.upstage-side-note');
    const cs = getComputedStyle(note);
    const lh = parseFloat(cs.lineHeight) || parseFloat(cs.fontSize) * 1.45;
    const input = chat.querySelector('textarea.upstage-chat-input');
    const r = note.getBoundingClientRect();
    return {text: note.textContent, visible: note.offsetParent !== null && r.height > 0,
            lines: r.height / lh, color: cs.color, inputVisible: input.offsetParent !== null,
            errors: chat.querySelectorAll('.upstage-error').length};
}"""


class ExposedLab(LabServer):
    """JupyterLab with ``window.jupyterapp`` (to ask which plugins are active)."""

    disabled: tuple[str, ...] = ()

    def app_args(self, workdir: Path) -> list[str]:
        if self.disabled:
            cfg = workdir / "jupyter-config" / "labconfig" / "page_config.json"
            data = json.loads(cfg.read_text())
            data["disabledExtensions"].update({name: True for name in self.disabled})
            cfg.write_text(json.dumps(data))
        return [*super().app_args(workdir), "--LabApp.expose_app_in_browser=True"]


class LabWithoutSidecar(ExposedLab):
    disabled = (SIDECAR,)


def side_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext upstage_magic"),
                nbformat.v4.new_code_cell("%upstage chat --side")]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, path)


def setup(tmp_path: Path) -> tuple[Path, EmulatorProcess]:
    root = tmp_path / "root"
    root.mkdir()
    side_notebook(root / "side.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    return root, EmulatorProcess(tmp_path)


def ask(page, chat, question: str) -> None:
    """The chat works where it is: a question gets its answer."""
    box = chat.locator("textarea.upstage-chat-input")
    box.fill(question)
    box.press("Enter")
    done = chat.locator(".upstage-turn:not(.upstage-live) .upstage-answer.upstage-status-done")
    sync_api.expect(done).to_have_count(1, timeout=30_000)
    sync_api.expect(done.last).to_contain_text(question)


def assert_inline_with_note(page, chat, why: str, shot: str) -> dict:
    note = chat.locator(".upstage-side-note")
    sync_api.expect(note).to_be_visible()
    m = chat.evaluate(NOTE_JS)
    assert why in m["text"] and "so the chat stays here" in m["text"], m
    assert m["lines"] < 1.6, m  # one line
    assert m["inputVisible"] and m["errors"] == 0, m
    assert page.locator(".jupyterlab-sidecar").count() == 0
    chat.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / shot))
    return m


def test_side_panel_is_in_jupyterlabs_side_area(tmp_path: Path) -> None:
    root, emu = setup(tmp_path)
    try:
        with browser_page(ExposedLab, tmp_path, root, emu, ARTIFACTS, "browser_side_lab",
                          timeout_ms=30_000) as (lab, page):
            open_notebook(page, lab, "side.ipynb")
            ext = page.evaluate(EXTENSION_JS, SIDECAR)
            assert ext == {"listed": True, "registered": True, "activated": True}, ext
            run_all_cells(page)
            wait_all_cells_ran(page)
            side = page.locator("#jp-right-stack .jupyterlab-sidecar .upstage-chat")
            side.wait_for()
            inline = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .upstage-chat")
            sync_api.expect(inline.locator(".upstage-elsewhere-note")).to_contain_text("open in the side panel")
            # Right of the notebook, with room to use it.
            panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").bounding_box()
            box = side.bounding_box()
            assert panel and box and box["x"] >= panel["x"] + panel["width"] - 1, (panel, box)
            assert box["width"] >= 240 and box["height"] > 200, box
            ask(page, side, "asked in the side panel")
            page.screenshot(path=str(ARTIFACTS / "side_lab.png"))
    finally:
        emu.close()


def test_side_without_sidecars_extension_stays_inline(tmp_path: Path) -> None:
    root, emu = setup(tmp_path)
    try:
        with browser_page(LabWithoutSidecar, tmp_path, root, emu, ARTIFACTS, "browser_side_noext",
                          timeout_ms=30_000) as (lab, page):
            open_notebook(page, lab, "side.ipynb")
            ext = page.evaluate(EXTENSION_JS, SIDECAR)
            assert not ext["activated"], ext
            run_all_cells(page)
            wait_all_cells_ran(page)
            chat = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .upstage-chat")
            m = assert_inline_with_note(page, chat, "has not loaded sidecar's extension", "side_no_extension.png")
            print("note:", m)
            ask(page, chat, "asked inline without sidecar")
    finally:
        emu.close()


def test_side_in_notebook7_stays_inline(tmp_path: Path) -> None:
    root, emu = setup(tmp_path)
    try:
        with browser_page(NotebookServer, tmp_path, root, emu, ARTIFACTS, "browser_side_nb7",
                          timeout_ms=30_000) as (server, page):
            open_notebook7(page, server, "side.ipynb")
            assert page.evaluate("() => window.jupyterapp.name") == "Jupyter Notebook"
            run_all_cells(page)
            wait_all_cells_ran(page)
            chat = page.locator(".jp-NotebookPanel .upstage-chat")
            chat.wait_for()
            m = assert_inline_with_note(page, chat, "only JupyterLab has one (this is Notebook 7)", "side_notebook7.png")
            print("note:", m)
            sync_api.expect(chat.locator("button.upstage-chat-side")).to_be_hidden()
            ask(page, chat, "asked in Notebook 7")
    finally:
        emu.close()
