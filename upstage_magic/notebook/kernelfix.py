"""ipykernel 7.4.0's idle race, mended in the kernel this package is loaded into.

ipykernel 7.4.0 dispatches a comm message that arrives while an async cell runs at once, in a
copy of the shell's context ("Allow async cell to process Comm messages"), and then, in
``Kernel.shell_main``, restores the shell parent it saw *before* that dispatch. The dispatch ran
in a copy, so the shell's own parent never changed; but if the running cell ended meanwhile and
the next queued cell started, the restore puts the previous cell's parent back over the new
one. The new cell's idle status (and any output it prints) then goes to the previous cell, and
JupyterLab shows the new cell as running forever (``tests/test_kernel_idle_race.py``).

Any widget's messages can hit it; the chat sends some at render and on every click. The mend
keeps the restore's other job (``set_parent`` also records the context that threads fall back
on, which the dispatch's copy overwrote) but re-sets the parent that is current *then*, in the
shell's context: the running cell's, or the newer cell's if one started. It is installed only on
ipykernel 7.4.0 (whose ``shell_main`` is known), once per kernel, by ``%load_ext upstage_magic``
and by the first chat widget; ``UPSTAGE_MAGIC_KERNEL_FIX=0`` leaves the kernel alone.
"""
from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["RACE_VERSION", "install_idle_race_fix"]

RACE_VERSION = "7.4.0"
_MARK = "_upstage_idle_race_fix"


def install_idle_race_fix(kernel: Any = None) -> bool:
    """Mend ``kernel`` (default: the running IPython's); True when the mend is in place."""
    if os.environ.get("UPSTAGE_MAGIC_KERNEL_FIX", "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    try:
        import ipykernel  # noqa: PLC0415
        from ipykernel.kernelbase import Kernel  # noqa: PLC0415
    except ImportError:
        return False
    if kernel is None:
        try:
            from IPython import get_ipython  # noqa: PLC0415
        except ImportError:  # pragma: no cover - IPython is a dependency
            return False
        ip = get_ipython()
        kernel = getattr(ip, "kernel", None)
    if not isinstance(kernel, Kernel) or getattr(ipykernel, "__version__", "") != RACE_VERSION:
        return False
    if getattr(kernel, _MARK, False):
        return True
    code = getattr(getattr(Kernel, "shell_main", None), "__code__", None)
    # The restore this mends: shell_main calls set_parent once, after the concurrent dispatch.
    if code is None or not {"set_parent", "copy_context", "create_task"} <= set(code.co_names):
        return False
    original = kernel.set_parent

    def set_parent(ident: Any, parent: Any, channel: str = "shell") -> Any:
        if channel == "shell" and sys._getframe(1).f_code is code:
            # shell_main restoring what it saw before a comm dispatch: keep what is current now.
            ident = kernel._get_shell_context_var(kernel._shell_parent_ident)
            parent = kernel._get_shell_context_var(kernel._shell_parent)
        return original(ident, parent, channel=channel)

    kernel.set_parent = set_parent  # type: ignore[method-assign]  # this instance only
    setattr(kernel, _MARK, True)
    return True
