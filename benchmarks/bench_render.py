"""Renderer speed: one ~100 KB Markdown answer (tables, code, math, lists), whole and streamed.

Prints the time of ``render_html`` on the whole answer (best of ``--repeat``), its parts
(markdown-it + our rules, nh3), and a stream of the same answer rendered every ``--step``
characters, uncached (``render_html`` each time) and with ``AnswerRenderer`` (one
answer's view that re-parses only the unfinished end).

    .venv/bin/python benchmarks/bench_render.py [--size 100000 --step 2000 --repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from upstage_magic import render
from upstage_magic.render import AnswerRenderer, render_html

BLOCK = (
    "## Section\n\nSome **bold** text with `code`, a [link](https://upstage.ai/docs) and $x^2 + y_i$.\n\n"
    "| col a | col b | col c |\n|---|:-:|--:|\n" + "| 1 | two | 3.0 |\n" * 8 + "\n"
    "```python\nimport numpy as np\n\ndef f(x: int) -> str:\n    # comment <b>\n    return f'{x!r}' * 2\n\n"
    "print(f(3))\n```\n\n- item one\n- item two with *em*\n  - nested\n\n> a quote\n\n"
)


def best_ms(fn, repeat: int) -> float:
    """Best wall time of ``fn()`` in ms."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--step", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    doc = BLOCK * max(1, args.size // len(BLOCK))
    render_html("warm up `x`\n\n```python\nx\n```\n\n$x$\n\n| a |\n|---|\n| 1 |")
    md = render._markdown()
    print(f"answer: {len(doc)} chars")
    print(f"render_html whole answer:      {best_ms(lambda: render_html(doc), args.repeat):8.1f} ms")
    print(f"  markdown-it + rules (no nh3): {best_ms(lambda: md.render(doc, {}), args.repeat):8.1f} ms")
    raw = md.render(doc, {})
    print(f"  nh3 sanitiser only:          {best_ms(lambda: render.sanitise(raw), args.repeat):8.1f} ms")
    cuts = [*range(args.step, len(doc), args.step), len(doc)]
    t = time.perf_counter()
    for i in cuts:
        render_html(doc[:i])
    uncached = (time.perf_counter() - t) * 1000
    view = AnswerRenderer()
    t = time.perf_counter()
    for i in cuts:
        view.render(doc[:i])
    cached = (time.perf_counter() - t) * 1000
    print(f"stream of {len(cuts)} renders: render_html {uncached:8.1f} ms total ({uncached / len(cuts):.1f} ms each), "
          f"AnswerRenderer {cached:8.1f} ms total ({cached / len(cuts):.1f} ms each)")


if __name__ == "__main__":
    main()
