"""The layers of ARCHITECTURE.md, checked from the code itself.

Every module of the package is parsed; every import it makes (at the top or inside a
function) is resolved and must point at a layer the rule allows. No module reaches into
another's private names. Then the import-time cost: the pure modules load no HTTP, IPython,
widget or Markdown library, and ``%load_ext`` stays cheap.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "upstage_magic"

#: layer -> the layers it may import (itself included). "surface": __init__ and __main__.
ALLOWED = {
    "render": {"render"},
    "emulator": {"emulator"},
    "core": {"core", "render"},
    "providers": {"providers", "core"},
    "notebook": {"notebook", "providers", "render", "core"},
    "surface": {"surface", "notebook", "providers", "render", "core", "emulator"},
}
#: Third-party packages a layer must never import, even lazily.
FORBIDDEN = {
    "core": {"aiohttp", "IPython", "ipywidgets", "anywidget", "markdown_it", "nh3", "pygments", "latex2mathml"},
    "providers": {"IPython", "ipywidgets", "anywidget", "markdown_it", "nh3"},
    "render": {"aiohttp", "IPython", "ipywidgets", "anywidget"},
    "emulator": {"IPython", "ipywidgets", "anywidget", "markdown_it", "nh3"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__",):
        return "surface"
    if parts[1] in ("providers", "notebook", "render", "emulator"):
        return parts[1]
    return "core"


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(module: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) for every import in ``module`` (relative ones resolved)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [a.name for a in node.names]
            out.append((node.lineno, base, names))
            # ``from . import x`` imports the module x: count it as such
            out += [(node.lineno, f"{base}.{n}", []) for n in names if f"{base}.{n}" in MODULES]
    return out


def test_the_rule_sees_every_layer():
    assert {layer(m) for m in MODULES} == set(ALLOWED)
    assert len(MODULES) > 30


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_point_down(module):
    mine = layer(module)
    wrong = []
    for line, target, _names in imports(module):
        top = target.split(".")[0]
        if top == "upstage_magic" and target != "upstage_magic" and target in MODULES:
            if layer(target) not in ALLOWED[mine]:
                wrong.append(f"line {line}: {mine} -> {layer(target)} ({target})")
        elif top in FORBIDDEN.get(mine, ()):
            wrong.append(f"line {line}: {mine} imports {top}")
    assert not wrong, f"{module}: " + "; ".join(wrong)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reaches_into_another_modules_private_names(module):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    ours = {}
    wrong = []
    for line, target, names in imports(module):
        if target.startswith("upstage_magic") and target != module:
            wrong += [f"line {line}: from {target} import {n}" for n in names
                      if n.startswith("_") and not n.startswith("__") and f"{target}.{n}" not in MODULES]
    for node in ast.walk(tree):  # modules bound to a name: ``from .. import models as model_table``
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                for _line, target, _ in imports(module):
                    if target.endswith("." + alias.name) and target in MODULES and target != module:
                        ours[alias.asname or alias.name] = target
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ours
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            wrong.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not wrong, f"{module}: " + "; ".join(wrong)


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """A core module importing the notebook layer, or a private name, is caught."""
    bad = PACKAGE / "_layering_probe.py"
    bad.write_text("from .notebook.display import Coalescer\nfrom .secrets import _SECRETS\n")
    try:
        MODULES["upstage_magic._layering_probe"] = bad
        with pytest.raises(AssertionError, match="core -> notebook"):
            test_imports_only_point_down("upstage_magic._layering_probe")
        with pytest.raises(AssertionError, match="_SECRETS"):
            test_no_module_reaches_into_another_modules_private_names("upstage_magic._layering_probe")
    finally:
        bad.unlink()
        MODULES.pop("upstage_magic._layering_probe", None)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_size_limits(module):
    """No module over 700 lines, no function over 80 (ARCHITECTURE.md)."""
    text = MODULES[module].read_text(encoding="utf-8")
    assert text.count("\n") <= 700, f"{module}: {text.count(chr(10))} lines"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert not long, f"{module}: {long}"


# ------------------------------------------------------------------ import-time cost

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
    assert "markdown_it" in loaded_after(["markdown_it"])


PURE = sorted(m for m in MODULES if layer(m) in ("core", "render")) + [
    "upstage_magic.providers.base", "upstage_magic.providers.wire", "upstage_magic.providers.sse",
    "upstage_magic.notebook.display", "upstage_magic.notebook.batch", "upstage_magic.notebook.progress",
    "upstage_magic.notebook.fix"]


def test_all_pure_modules_together_stay_light():
    assert not loaded_after(PURE) & set(HEAVY)


def test_loading_the_magics_module_loads_no_http_widgets_or_markdown():
    """%load_ext stays cheap: aiohttp, ipywidgets and markdown-it load on first use."""
    loaded = loaded_after(["upstage_magic", "upstage_magic.notebook.magics"])
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


def test_public_import_paths_keep_working():
    code = (
        "from upstage_magic import ChatSession, ChatWidget, Settings, Upstage, batch, abatch, set_api_key\n"
        "from upstage_magic.providers import Upstage as U\n"
        "from upstage_magic.emulator import Emulator\n"
        "from upstage_magic.errors import UpstageError\n"
        "print(json.dumps([U is Upstage, callable(batch)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [True, True]
