"""Shared stand-ins for the tests: executors that replace a stage's notebook kernel, and small helpers around them.

- `tests.helpers.executors`: `FakeExecutor` writes a stage's declared outputs at once (the runner's logic without
  any notebook), `InProcessExecutor` runs a stage's real notebook cells in the test process (the notebooks'
  code on a study without a kernel's start-up), `kernel_error` turns an exception into what papermill reports;
- `tests.helpers.kernel_runner`: the runner's command line (``python -m sedlib.run``) with a minimal real kernel
  for every stage, for the tests that kill or interrupt a runner;
- `tests.helpers.runs`: status lines, private copies of a run directory, file contents.

The fixtures built on them (``fake_stages``, ``runs_in``) are in ``tests/conftest.py``.
"""
