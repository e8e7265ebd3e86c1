"""Shared harness for tests and benchmarks: a real Jupyter kernel, the emulator in a subprocess.

- ``KernelSession``: start an ipykernel (jupyter_client) with a clean environment, execute
  cells and collect their iopub messages (stdout, stderr, error, displays), interrupt it,
  send widget comm messages the way a browser does.
- ``EmulatorControl``: drive any running emulator (thread or subprocess) through its HTTP
  control endpoints; ``EmulatorProcess`` starts ``python -m upstage_magic.emulator`` too.
- ``free_port``, ``wait_http``, ``stop_process``: small process helpers.

Tests import it as ``tests.support.harness``; benchmarks too, after putting the repository root
on ``sys.path`` (this package never imports benchmarks/).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository (tests/support/harness.py)
TEST_KEY = "test-key-SECRET123"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
              "all_proxy", "no_proxy")
DISPLAY_TYPES = ("display_data", "update_display_data")

__all__ = ["ROOT", "TEST_KEY", "PROXY_VARS", "DISPLAY_TYPES", "free_port", "wait_http", "stop_process",
           "CellResult", "KernelSession", "EmulatorControl", "EmulatorProcess"]


# ------------------------------------------------------------------------------ processes


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, *, timeout: float, headers: dict[str, str] | None = None,
              proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll ``url`` until it answers below 500; fail early if ``proc`` exits (``log`` tail shown)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:  # any HTTP answer means it is up
            if exc.code < 500:
                return
            last = exc
        except Exception as exc:  # noqa: BLE001 - retry until the deadline
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last!r}")


def stop_process(proc: subprocess.Popen | None) -> None:
    """Terminate ``proc`` (kill it after 10 s)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --------------------------------------------------------------------------------- kernel


@dataclass
class CellResult:
    """What one executed cell sent on iopub."""

    stdout: str
    stderr: str
    error: dict[str, Any] | None  # the first ``error`` message's content
    displays: list[dict[str, Any]]  # display_data / update_display_data / execute_result contents
    elapsed: float
    msgs: list[dict[str, Any]]  # every iopub message of the cell, up to idle

    @classmethod
    def from_msgs(cls, msgs: list[dict[str, Any]], elapsed: float) -> CellResult:
        def stream(name: str) -> str:
            return "".join(m["content"]["text"] for m in msgs
                           if m["msg_type"] == "stream" and m["content"]["name"] == name)

        error = next((m["content"] for m in msgs if m["msg_type"] == "error"), None)
        displays = [m["content"] for m in msgs if m["msg_type"] in (*DISPLAY_TYPES, "execute_result")]
        return cls(stream("stdout"), stream("stderr"), error, displays, elapsed, msgs)


class KernelSession:
    """A real ipykernel (jupyter_client) with helpers to run cells and collect their output.

    The kernel's environment is this process's minus ``UPSTAGE_*`` (but ``UPSTAGE_MAGIC_HOME``,
    the tests' own data directory) and proxy variables,
    plus the repo on ``PYTHONPATH``, plus ``env``. ``log_path``: the kernel process's own
    stdout/stderr go there (for leak checks).
    """

    def __init__(self, env: dict[str, str], *, log_path: Path | None = None, cwd: Path | None = None) -> None:
        from jupyter_client.manager import start_new_kernel

        full = {k: v for k, v in os.environ.items()
                if (not k.startswith("UPSTAGE_") or k == "UPSTAGE_MAGIC_HOME") and k not in PROXY_VARS}
        full.update(PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
        full.update(env)
        kw: dict[str, Any] = {}
        self._log = None
        if log_path is not None:
            self._log = open(log_path, "ab")
            kw.update(stdout=self._log, stderr=self._log)
        if cwd is not None:
            kw["cwd"] = str(cwd)
        self.km, self.kc = start_new_kernel(kernel_name="python3", env=full, startup_timeout=120,
                                            extra_arguments=["--HistoryManager.enabled=False"], **kw)

    def alive(self) -> bool:
        return bool(self.km.is_alive())

    def submit(self, code: str) -> str:
        """Send a cell for execution without waiting; return its msg_id (see ``collect``)."""
        return self.kc.execute(code)

    def collect(self, msg_id: str, timeout: float = 120, *,
                until: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """The cell's iopub messages up to idle (or up to the first one ``until`` accepts).

        Raises TimeoutError after ``timeout`` s, RuntimeError if the kernel dies.
        """
        msgs: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no idle within {timeout} s; got {[m['msg_type'] for m in msgs]}")
            try:
                m = self.kc.get_iopub_msg(timeout=min(left, 5))
            except Exception:  # noqa: BLE001 - queue.Empty: keep waiting, check the kernel
                if not self.alive():
                    raise RuntimeError("the kernel died") from None
                continue
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            msgs.append(m)
            if until is not None and until(m):
                return msgs
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                return msgs

    def execute(self, code: str, timeout: float = 120) -> CellResult:
        """Run one cell; return its outputs when the kernel is idle again."""
        t0 = time.monotonic()
        msg_id = self.submit(code)
        try:
            msgs = self.collect(msg_id, timeout)
        except TimeoutError:
            raise TimeoutError(f"cell did not finish within {timeout} s: {code[:80]!r}") from None
        return CellResult.from_msgs(msgs, time.monotonic() - t0)

    def run(self, code: str, timeout: float = 120) -> str:
        """Run a helper cell that must succeed; return its stdout."""
        r = self.execute(code, timeout)
        if r.error is not None:
            raise RuntimeError(f"helper cell failed: {r.error['ename']}: {r.error['evalue']}\n"
                               + "\n".join(r.error.get("traceback", []))[-3000:])
        return r.stdout

    def json(self, code: str, timeout: float = 120) -> Any:
        """Run a cell whose last stdout line is JSON."""
        out = self.run(code, timeout)
        return json.loads(out.strip().splitlines()[-1])

    def interrupt(self) -> None:
        """SIGINT the kernel, like the front end's Stop button."""
        self.km.interrupt_kernel()

    def comm_msg(self, comm_id: str, data: dict[str, Any]) -> None:
        """Send what the browser sends for a widget event (state update, button click)."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.kc.shell_channel.send(msg)

    def close(self) -> None:
        try:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)
        finally:
            if self._log is not None:
                self._log.close()


@contextmanager
def magic_kernel(base_url: str, *, setup: str = "%config UpstageMagics.log_path = ''") -> Iterator[KernelSession]:
    """A kernel pointed at ``base_url`` (with the tests' key), the extension loaded and ``setup``
    run (by default: no conversation log); closed on exit."""
    k = KernelSession({"UPSTAGE_BASE_URL": base_url, "UPSTAGE_API_KEY": TEST_KEY})
    try:
        k.run("%load_ext upstage_magic\n" + setup)
        yield k
    finally:
        k.close()


# ------------------------------------------------------------------------------- emulator


class EmulatorControl:
    """Drive a running emulator (thread or subprocess) through its HTTP control endpoints."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def _call(self, path: str, payload: Any = None, method: str = "POST") -> Any:
        data = None if method == "GET" else json.dumps(payload).encode()
        req = urllib.request.Request(self.root + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        with opener.open(req, timeout=30) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def config(self, **cfg: Any) -> Any:
        return self._call("/_emulator/config", cfg)

    def fault(self, fault: dict[str, Any] | None) -> Any:
        return self._call("/_emulator/fault", fault)

    def reset(self) -> Any:
        return self._call("/_emulator/reset", {})

    def requests(self) -> list[dict[str, Any]]:
        return self._call("/_emulator/requests", method="GET")

    def stats(self) -> dict[str, Any]:
        return self._call("/_emulator/stats", method="GET")


class EmulatorProcess(EmulatorControl):
    """``python -m upstage_magic.emulator`` in a subprocess (log in ``workdir/emulator.log``)."""

    def __init__(self, workdir: Path, *, api_key: str | None = TEST_KEY, **cfg: Any) -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}/v1")
        self.api_key = api_key
        self.log_path = workdir / "emulator.log"
        args = [sys.executable, "-m", "upstage_magic.emulator", "--port", str(self.port)]
        if api_key:
            args += ["--api-key", api_key]
        self._log = open(self.log_path, "wb")
        # This checkout's package, whatever the caller's working directory (like KernelSession).
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        wait_http(f"{self.base_url}/models", timeout=20, proc=self.proc, log=self.log_path,
                  headers={"Authorization": f"Bearer {api_key or 'x'}"})
        if cfg:
            self.config(**cfg)

    def close(self) -> None:
        stop_process(self.proc)
        self._log.close()
