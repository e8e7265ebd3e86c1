"""The fault matrix (tests/support/fault_matrix.py) as tests: one case per fault x entry point.

Each case asserts the outcome the table defines: the right error class (or success), a
short clear message, partial text kept exactly, the session's turns consistent, the
kernel alive, and the next request working. One emulator and one kernel per entry point
are shared by the whole module.
"""
from __future__ import annotations

import pytest

from tests.support import fault_matrix as fm

FAULT_NAMES = [f.name for f in fm.FAULTS]


@pytest.fixture(scope="module")
def ctl():
    from upstage_magic.emulator import serve_in_thread

    with serve_in_thread(api_key=fm.KEY) as emu:
        yield fm.MatrixControl(emu.base_url)


@pytest.fixture(scope="module")
def magic_runner(ctl):
    runner = fm.MagicRunner(ctl)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def widget_runner(ctl):
    runner = fm.WidgetRunner(ctl)
    yield runner
    runner.close()


def _assert_ok(outcome: fm.Outcome) -> None:
    assert outcome.ok, f"{outcome.fault} x {outcome.entry}:\n  - " + "\n  - ".join(outcome.problems)


def test_matrix_covers_every_required_fault() -> None:
    required = {"http_400", "http_401", "http_403", "unknown_model", "http_422", "429_then_ok", "429_forever",
                "500_then_ok", "503_forever", "conn_refused", "dns_failure", "cut", "malformed", "error_event",
                "stall", "slow_first_byte", "answer_5mb", "empty", "invalid_utf8", "length", "proxy_refused"}
    assert required <= set(FAULT_NAMES)
    assert len(fm.big_reply()) >= 5 * 1024 * 1024


@pytest.mark.parametrize("name", FAULT_NAMES)
async def test_provider(name: str, ctl) -> None:
    runner = fm.ProviderRunner(ctl)
    try:
        outcome = await runner.run(fm.FAULTS_BY_NAME[name])
    finally:
        await runner.close()
    _assert_ok(outcome)


@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("name", FAULT_NAMES)
def test_magic(name: str, magic_runner) -> None:
    _assert_ok(magic_runner.run(fm.FAULTS_BY_NAME[name]))


@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("name", FAULT_NAMES)
def test_widget(name: str, widget_runner) -> None:
    _assert_ok(widget_runner.run(fm.FAULTS_BY_NAME[name]))
