"""Test support shared by tests/ and benchmarks/ (imported one way: nothing here imports benchmarks).

- ``harness``: a real Jupyter kernel (``KernelSession``), the emulator in a subprocess
  (``EmulatorProcess``) or driven over HTTP (``EmulatorControl``), process helpers.
- ``browser``: JupyterLab / Notebook 7 servers and headless Chromium for browser tests.
- ``fault_matrix``: every fault through every entry point, with the expected outcomes.
- ``load``: many concurrent provider streams; many chat widgets in one kernel.

Benchmarks put the repository root on ``sys.path`` and import ``tests.support.*``.
"""
