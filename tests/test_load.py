"""Load (CI-sized): 500 concurrent provider streams; 20 chat widgets in one kernel.

Correctness and bounds only, no timing asserts (see benchmarks/bench_load.py for figures).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import load

pytestmark = pytest.mark.slow

N = 500


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two passes of 500 concurrent streams (the 2nd under tracemalloc), emulator in a subprocess."""
    return load.run_streams(N, words=20, tps=400.0, workdir=tmp_path_factory.mktemp("load"))


def test_500_concurrent_streams_exact(streams: dict[str, Any]) -> None:
    r = streams
    assert r["n_errors"] == 0, r["errors"]
    assert r["n_wrong"] == 0, f"streams with lost/duplicated/mixed text: {r['wrong']}"
    assert r["n_ok"] == N, r
    assert r["emulator_requests"] == 2 * N, r  # no request sent twice (no retries)


def test_connection_limit_respected(streams: dict[str, Any]) -> None:
    assert 1 < streams["peak_connections"] <= streams["limit"], streams  # concurrent, and bounded


def test_memory_bounded(streams: dict[str, Any]) -> None:
    assert streams["tracemalloc_peak_mb"] < 100, streams


def test_connections_are_reused(streams: dict[str, Any]) -> None:
    """Keep-alive: each pass (own event loop, own pool) should open at most `limit` connections.

    The emulator paces its events, so the chunked body's terminator arrives after
    ``data: [DONE]``; a provider that releases the response before reading it makes aiohttp
    close the connection, and every request then pays a new TCP (and, for the real API, TLS)
    handshake.
    """
    assert streams["emulator_connections"] <= 2 * streams["limit"], streams


@pytest.mark.kernel
def test_20_widgets_stream_at_once_while_a_cell_computes(tmp_path: Path) -> None:
    r = load.run_widgets(20, words=80, tps=40.0, cpu_seconds=2.0, workdir=tmp_path)
    assert r["sent"] == [True] * 20
    assert r["cpu"]["loops"] > 0 and r["cpu"]["cpu"] >= 2.0  # the computing cell ran to its end
    assert r["cpu"]["before"] >= 1, r["cpu"]  # the answers really streamed while it computed
    assert r["pending"] == 0 and r["alive"]
    assert r["turns"] == 20  # one turn per widget: nothing dropped or duplicated
    bad = [(i, row) for i, row in enumerate(r["rows"])
           if not (row["n"] == 1 and row["status"] == "done" and row["exact"] and row["html_has_end"]
                   and not row["streaming"] and not row["send_disabled"])]
    assert not bad, bad
