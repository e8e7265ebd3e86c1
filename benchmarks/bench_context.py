"""How long ``--context`` takes to summarise large notebook variables (goal: < 200 ms).

Summarises, with the default budget (2,000 tokens):

1. a 1,000,000-row pandas DataFrame of mixed dtypes (int, float with NaN, string with
   nulls, datetime, category, bool): the issue's case;
2. a 1,000,000 × 40 float frame (null counts on wide frames are capped);
3. a 1,000 × 5,000 frame (very wide: the column list is cut);
4. a 1000 × 1000 numpy array and a 1,000,000-element list;
5. the 1M-row frame as polars, if polars is installed.

Prints the median and best of ``--repeat`` runs in ms and the block's estimated tokens.

    .venv/bin/python benchmarks/bench_context.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np
import pandas as pd

from upstage_magic.context import summarize

GOAL_MS = 200.0


def mixed_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.random(n)
    x[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "id": np.arange(n),
        "x": x,
        "label": np.where(np.arange(n) % 3 == 0, None, "label-b"),
        "when": pd.date_range("2024-01-01", periods=n, freq="s"),
        "kind": pd.Categorical(rng.choice(["a", "b", "c"], n)),
        "flag": rng.random(n) > 0.5,
    })


def measure(name: str, ns: dict[str, Any], repeat: int) -> float:
    times = []
    block = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        block = summarize(list(ns), ns)
        times.append((time.perf_counter() - t0) * 1000)
    assert block is not None
    med = statistics.median(times)
    print(f"{name:42} median {med:7.1f} ms   best {min(times):7.1f} ms   "
          f"~{block.tokens} tokens (budget {block.budget_tokens})")
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rows = 1_000_000
    df = mixed_frame(rows)
    results = {
        "1M rows × 6 mixed columns (pandas)": measure("1M rows × 6 mixed columns (pandas)", {"df": df}, args.repeat),
    }
    rng = np.random.default_rng(1)
    measure("1M rows × 40 float columns (pandas)",
            {"wide": pd.DataFrame(rng.random((rows, 40)), columns=[f"c{i}" for i in range(40)])}, args.repeat)
    measure("1,000 rows × 5,000 columns (pandas)",
            {"w": pd.DataFrame(rng.random((1000, 5000)))}, args.repeat)
    measure("ndarray 1000×1000 + list of 1M ints",
            {"arr": rng.random((1000, 1000)), "big": list(range(rows))}, args.repeat)
    try:
        import polars as pl
    except ImportError:
        print("polars not installed: skipped")
    else:
        pdf = pl.DataFrame({
            "id": df["id"].to_numpy(), "x": df["x"].to_numpy(),
            "label": pl.Series([None if i % 3 == 0 else "label-b" for i in range(len(df))], dtype=pl.String),
            "when": df["when"].to_numpy(), "kind": pl.Series(df["kind"].astype(str).tolist()).cast(pl.Categorical),
            "flag": df["flag"].to_numpy(),
        })
        measure("1M rows × 6 mixed columns (polars)", {"pdf": pdf}, args.repeat)
    worst = max(results.values())
    print(f"goal: the 1M-row frame under {GOAL_MS:.0f} ms -> {'met' if worst < GOAL_MS else 'NOT met'}")
    return 0 if worst < GOAL_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
