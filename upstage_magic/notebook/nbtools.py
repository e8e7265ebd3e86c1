"""The built-in ``notebook`` toolset (``%%upstage --tools notebook``).

- ``list_variables``: the notebook's variables (name, type, shape or length); runs without asking.
- ``describe_variable``: one variable's bounded summary, the one ``--context`` sends; asks.
- ``read_cell``: a cell's input, output or error (``In[n]``, ``Out[n]``, the recorded error); asks.
- ``run_python``: run code in the kernel. It always asks (``--approve`` and "always" do not
  apply), and the question shows the code itself. Its stdout and rich outputs are shown
  in the answer's cell; the model gets a bounded text of them (a figure is described as
  "a figure was shown to the user").

Every text sent back is masked and cut (``tools.result_text``).
"""
from __future__ import annotations

import ast
import sys
from typing import Any, Literal

from ..secrets import cut, mask_secrets
from ..tools import Tool, build

__all__ = ["OUTPUT_CHARS", "notebook_tools"]

#: Characters of a run's captured output sent back.
OUTPUT_CHARS = 3000
_HIDDEN = frozenset({"In", "Out", "exit", "quit", "get_ipython"})


def _user_variables(ns: dict[str, Any]) -> dict[str, Any]:
    import types  # noqa: PLC0415

    return {k: v for k, v in ns.items() if not k.startswith("_") and k not in _HIDDEN
            and not isinstance(v, types.ModuleType)}


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        return "x".join(str(n) for n in shape)
    try:
        return f"len {len(value)}" if not isinstance(value, type) and hasattr(value, "__len__") else ""
    except Exception:  # noqa: BLE001 - a strange __len__
        return ""


def notebook_tools(shell: Any) -> list[Tool]:
    """The built-in tools bound to ``shell`` (its namespace, history and recorded errors)."""
    def ns() -> dict[str, Any]:
        return shell.user_ns if shell is not None else {}

    def list_variables() -> list[dict[str, str]]:
        """List the notebook's variables: name, type and shape (or length)."""
        return [{"name": k, "type": type(v).__name__, "shape": _shape(v)} for k, v in _user_variables(ns()).items()]

    def describe_variable(name: str) -> str:
        """Describe one notebook variable: a bounded summary (DataFrame columns and rows, array range...).

        Args:
            name: the variable's name, as list_variables gives it.
        """
        from ..context import summarize  # noqa: PLC0415

        variables = _user_variables(ns())
        if name not in variables:
            raise KeyError(f"no variable named {name!r}")
        return summarize([name], variables, budget_tokens=1500).text

    def read_cell(number: int, part: Literal["input", "output", "error"] = "input") -> str:
        """Read a notebook cell's input, output or error by its execution number.

        Args:
            number: the cell's execution number (the N of In[N]).
            part: which part: the code (input), its value (output) or its error.
        """
        space = ns()
        if part == "input":
            inputs = space.get("In") or []
            if not 0 < number < len(inputs):
                raise KeyError(f"no cell {number} (cells 1..{len(inputs) - 1} ran)")
            return str(inputs[number])
        if part == "output":
            outputs = space.get("Out") or {}
            if number not in outputs:
                raise KeyError(f"cell {number} has no output value")
            return repr(outputs[number])
        magics = getattr(shell, "magics_manager", None)
        errors = getattr(magics.registry.get("UpstageMagics"), "error_log", None) if magics else None
        if not errors or number not in errors:
            raise KeyError(f"cell {number} recorded no error")
        return errors[number].traceback_text()

    def run_python(code: str) -> str:
        """Run Python code in the notebook's kernel (the user is asked first and sees the code).

        The code runs in the notebook's namespace; its printed output and the value of a last
        expression come back as text; figures and rich outputs are shown to the user.

        Args:
            code: the Python code to run.
        """
        return run_code(shell, code)

    run_python.__upstage_always_ask__ = True  # type: ignore[attr-defined]
    return [build(list_variables, approve=False), build(describe_variable), build(read_cell),
            build(run_python)]


def run_code(shell: Any, code: str) -> str:
    """Run ``code`` in ``shell``'s namespace, show its outputs here, return their bounded text."""
    from IPython.display import display  # noqa: PLC0415
    from IPython.utils.capture import capture_output  # noqa: PLC0415

    namespace = shell.user_ns if shell is not None else {}
    tree = ast.parse(code, "<run_python>", "exec")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    assert last is None or isinstance(last, ast.Expr)
    figures = _figures()
    value = None
    with capture_output(display=True) as captured:
        exec(compile(tree, "<run_python>", "exec"), namespace)  # noqa: S102 - the user approved this code
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<run_python>", "eval"), namespace)  # noqa: S307
            if value is not None:
                display(value)
    captured.show()  # into the answer's cell, as the code would show them
    parts = [captured.stdout] if captured.stdout else []
    if captured.stderr:
        parts.append("stderr:\n" + captured.stderr)
    for out in captured.outputs:
        data = getattr(out, "data", {}) or {}
        if any(k.startswith("image/") for k in data):
            parts.append("(a figure was shown to the user)")
        elif "text/plain" in data:
            parts.append(str(data["text/plain"]))
    shown = _show_new_figures(figures)
    parts += ["(a figure was shown to the user)"] * shown
    text = "\n".join(p.rstrip("\n") for p in parts) or "(no output)"
    return cut(mask_secrets(text), OUTPUT_CHARS, more=f"... [cut: {len(text):,} characters in all]", redacting=False)


def _figures() -> set[int]:
    plt = sys.modules.get("matplotlib.pyplot")
    return set(plt.get_fignums()) if plt is not None else set()


def _show_new_figures(before: set[int]) -> int:
    """Show (and close) the matplotlib figures the code opened; how many."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return 0
    from IPython.display import display  # noqa: PLC0415

    new = [n for n in plt.get_fignums() if n not in before]
    for n in new:
        fig = plt.figure(n)
        display(fig)
        plt.close(fig)
    return len(new)
