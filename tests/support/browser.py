"""Helpers for the real-browser tests: JupyterLab + emulator on loopback, Debian chromium.

Everything runs on 127.0.0.1 in throw-away directories (HOME, Jupyter config/data/runtime,
Chromium profile). Playwright never downloads a browser: it launches /usr/bin/chromium.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .harness import ROOT, TEST_KEY, EmulatorProcess, free_port, stop_process, wait_http

CHROMIUM = os.environ.get("UPSTAGE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


class LabServer:
    """``jupyter lab`` on 127.0.0.1 with a token, in throw-away HOME/config/runtime dirs."""

    app_module = "jupyterlab"
    log_name = "jupyterlab.log"

    def app_args(self, workdir: Path) -> list[str]:
        """Options of the front-end application (no update checks, no news, read-only extensions)."""
        return [
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=",
            "--LabApp.extension_manager=readonly",
            f"--LabApp.workspaces_dir={workdir / 'workspaces'}",
        ]

    def __init__(self, workdir: Path, root_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.root_dir = root_dir
        self.log_path = workdir / self.log_name
        home = workdir / "home"
        for sub in ("home", "jupyter-config", "jupyter-data", "jupyter-runtime", "ipython"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        # No "Jupyter news?" toast over the screenshots, no update checks.
        labconfig = workdir / "jupyter-config" / "labconfig"
        labconfig.mkdir(parents=True, exist_ok=True)
        (labconfig / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        venv_bin = str(Path(sys.executable).parent)
        full_env = {
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "JUPYTER_CONFIG_DIR": str(workdir / "jupyter-config"),
            "JUPYTER_DATA_DIR": str(workdir / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter-runtime"),
            "IPYTHONDIR": str(workdir / "ipython"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            # The kernels import this checkout's package (a worktree), not the installed one.
            "PYTHONPATH": str(ROOT),
        }
        full_env.update(env or {})
        args = [
            sys.executable, "-m", self.app_module,
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root_dir}",
            "--ServerApp.open_browser=False",
            *self.app_args(workdir),
            "--ServerApp.terminals_enabled=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
            args.append("--allow-root")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, env=full_env, cwd=str(root_dir),
                                     stdout=self._log, stderr=subprocess.STDOUT)
        wait_http(f"http://127.0.0.1:{self.port}/api/status?token={self.token}", timeout=60,
                   proc=self.proc, log=self.log_path)

    def url(self, path: str = "lab") -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def log_tail(self, n: int = 8000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def close(self) -> None:
        stop_process(self.proc)
        self._log.close()


def launch_chromium(playwright: Any, user_data_dir: Path) -> Any:
    """A persistent headless chromium context with a fresh profile (Debian's binary)."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} not found: run .ci/browser-setup.sh (apt-get install chromium)")
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 1000},
        accept_downloads=True,
    )


def open_notebook(page: Any, lab: LabServer, name: str, *, timeout: float = 60_000) -> None:
    """Open a notebook in JupyterLab and wait until its kernel is idle."""
    # A workspace of its own, so JupyterLab does not restore notebooks opened before.
    workspace = "w" + secrets.token_hex(4)
    page.goto(lab.url(f"lab/workspaces/{workspace}/tree/{name}"), timeout=timeout)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout)
    dismiss_dialogs(page)
    wait_kernel_idle(page, timeout=timeout)


def dismiss_dialogs(page: Any) -> None:
    """Close a kernel-selection or similar dialog if JupyterLab shows one."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        accept = dialog.locator(".jp-mod-accept")
        (accept if accept.count() else dialog.locator("button").first).click()


def wait_kernel_idle(page: Any, *, timeout: float = 60_000) -> None:
    """Wait until the status bar says the kernel is connected and idle."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-StatusBar-Widget, .jp-StatusBar-TextItem')]
                 .some(el => /\\|\\s*Idle\\s*$/.test(el.textContent.trim()))""",
        timeout=timeout,
    )


def run_all_cells(page: Any) -> None:
    """Run > Run All Cells, through the menu bar like a user."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def wait_all_cells_ran(page: Any, *, timeout: float = 60_000) -> None:
    """Wait until every code cell of the visible notebook shows an execution count."""
    page.wait_for_function(
        """() => {
            const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
            if (!nb) return false;
            const prompts = nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt');
            return prompts.length > 0 && [...prompts].every(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=timeout,
    )


def save_diagnostics(page: Any | None, lab: LabServer | None, emulator: EmulatorProcess | None,
                     artifacts: Path, name: str, *, server_label: str = "jupyterlab") -> list[Path]:
    """On failure: screenshot, page HTML, server and emulator logs into artifacts/."""
    artifacts.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    if page is not None:
        try:
            shot = artifacts / f"{name}-failure.png"
            page.screenshot(path=str(shot), full_page=True, timeout=15_000)  # huge pages: do not hang
            saved.append(shot)
            html = artifacts / f"{name}-failure.html"
            html.write_text(page.content())
            saved.append(html)
        except Exception:  # noqa: BLE001 - best effort, the page may be gone
            pass
    for proc, label in ((lab, server_label), (emulator, "emulator")):
        if proc is not None and proc.log_path.exists():
            dst = artifacts / f"{name}-{label}.log"
            shutil.copyfile(proc.log_path, dst)
            saved.append(dst)
    return saved


class NotebookServer(LabServer):
    """``jupyter notebook`` (Notebook 7) on 127.0.0.1 with a token, in throw-away dirs.

    JupyterLab's server extension is loaded in the same server when it is installed, so its
    no-news/no-update-check options are passed too.
    """

    app_module = "notebook"
    log_name = "notebook.log"

    def app_args(self, workdir: Path) -> list[str]:
        return [*super().app_args(workdir), "--JupyterNotebookApp.expose_app_in_browser=True"]

    def notebook_url(self, name: str) -> str:
        """The Notebook 7 page of ``name`` (a path relative to the root dir)."""
        return self.url(f"notebooks/{name}")


def open_notebook7(page: Any, server: NotebookServer, name: str, *, timeout: float = 60_000) -> None:
    """Open a notebook in Notebook 7 and wait until its kernel is idle."""
    page.goto(server.notebook_url(name), timeout=timeout)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout)
    dismiss_dialogs(page)
    # Notebook 7 has no status bar, and its toolbar's execution indicator already says "idle"
    # before the kernel is connected (Run All then does nothing): ask the app itself.
    page.wait_for_function(
        """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                   const k = w && w.sessionContext && w.sessionContext.session
                             && w.sessionContext.session.kernel;
                   return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }""",
        timeout=timeout,
    )


@contextmanager
def browser_page(server_cls: type[LabServer], workdir: Path, root_dir: Path, emulator: EmulatorProcess,
                 artifacts: Path, name: str, *, timeout_ms: float) -> Iterator[tuple[LabServer, Any]]:
    """A Jupyter server (``server_cls``) on ``root_dir`` pointed at ``emulator``, and a Chromium
    page. On failure: diagnostics into ``artifacts`` and the server log's tail on stdout.
    The server and the browser are always closed; the emulator is the caller's."""
    from playwright import sync_api

    server = page = None
    try:
        server = server_cls(workdir, root_dir,
                            env={"UPSTAGE_BASE_URL": emulator.base_url, "UPSTAGE_API_KEY": TEST_KEY})
        with sync_api.sync_playwright() as pw:
            ctx = launch_chromium(pw, workdir / "chromium-profile")
            try:
                page = ctx.new_page()
                page.set_default_timeout(timeout_ms)
                yield server, page
            except BaseException:
                label = server.log_name.removesuffix(".log")
                saved = save_diagnostics(page, server, emulator, artifacts, name, server_label=label)
                print(f"{name} test diagnostics:", *map(str, saved), sep="\n  ")
                print(f"--- {label} log tail ---\n" + server.log_tail(4000))
                raise
            finally:
                ctx.close()
    finally:
        if server is not None:
            server.close()
