"""Imports only point down: the pure modules load no HTTP, IPython, widget or Markdown library."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["aiohttp", "IPython", "ipywidgets", "markdown_it"]


def loaded_after(imports: list[str]) -> set[str]:
    """Top-level package names in sys.modules after importing ``imports`` in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {imports!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_helper_sees_heavy_imports():
    """The check itself works: importing markdown_it shows up."""
    assert "markdown_it" in loaded_after(["markdown_it"])


PURE = ["upstage_magic", "upstage_magic.sse", "upstage_magic.errors", "upstage_magic.events",
        "upstage_magic.render", "upstage_magic.session", "upstage_magic.settings",
        "upstage_magic.display", "upstage_magic.providers.base", "upstage_magic.providers.wire",
        "upstage_magic.models", "upstage_magic.schema", "upstage_magic.cache", "upstage_magic.batch",
        "upstage_magic.progress", "upstage_magic.config", "upstage_magic.formats", "upstage_magic.placeholders",
        "upstage_magic.context", "upstage_magic.fix", "upstage_magic.log", "upstage_magic.dryrun"]


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_stay_light(module):
    loaded = loaded_after([module])
    assert not loaded & set(HEAVY), f"{module} loaded {sorted(loaded & set(HEAVY))}"


def test_all_pure_modules_together_stay_light():
    assert not loaded_after(PURE) & set(HEAVY)


def test_loading_the_magics_module_loads_no_http_widgets_or_markdown():
    """%load_ext stays cheap: aiohttp, ipywidgets and markdown-it load on first use."""
    loaded = loaded_after(["upstage_magic", "upstage_magic.magics"])
    assert not loaded & {"aiohttp", "ipywidgets", "markdown_it"}


def test_render_loads_markdown_it_only_when_used():
    code = (
        "import sys\n"
        "from upstage_magic.render import render_html\n"
        "lazy = ['markdown_it', 'nh3', 'pygments', 'latex2mathml']\n"
        "assert not [m for m in lazy if m in sys.modules], [m for m in lazy if m in sys.modules]\n"
        "render_html('```python\\n<b>\\n```\\n$x$')\n"
        "assert all(m in sys.modules for m in lazy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_providers_do_not_load_ipython_or_widgets():
    loaded = loaded_after(["upstage_magic.providers"])
    assert "IPython" not in loaded and "ipywidgets" not in loaded
