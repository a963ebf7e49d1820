"""Stand-ins for the notebook kernel that `sedlib.run.execute_stage` starts for each stage.

The runner calls ``execute_stage(step, run, params_file, overrides, output, terminal)`` and expects the stage's
declared outputs in the run directory and its executed notebook at ``output``; a failure reaches it as papermill
reports one (`kernel_error`). A test installs an executor with ``monkeypatch.setattr(runner, "execute_stage", ...)``
(the ``fake_stages`` fixture of ``tests/conftest.py`` does it for `FakeExecutor`).

- `FakeExecutor`: every stage verifies what it declares it reads (as the notebooks do, through
  `RunDir.verified`) and writes every output it declares, at once. Its content depends on the path and the
  overrides only, so a stage run again with the same settings writes the same bytes, as the real stages do.
  For the runner's logic: what runs, what is skipped, what it prints, what a failure keeps.
- `InProcessExecutor`: runs the stage's real notebook (``notebooks/NN_name.py``, every code cell in order, the
  parameters injected after the parameters cell as papermill does) in the test process: the notebooks' code on
  another study without a kernel's start-up (a few seconds per stage), the imports shared with the tests. The
  executed notebook it writes has no outputs: a study run this way renders no report.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import traceback
from pathlib import Path

from sedlib import run as runner
from sedlib.config import PROJECT_ROOT, load_config
from sedlib.rundir import closure
from sedlib.rundir import directory as rundir
from sedlib.rundir.declaration import declared_outputs, declared_reads


def kernel_error(error: BaseException, exec_count: int = 1) -> Exception:
    """``error`` as papermill reports an exception raised in a notebook's cell: its class name and message only."""
    from papermill.exceptions import PapermillExecutionError

    lines = traceback.format_exception(error)
    return PapermillExecutionError(exec_count - 1, exec_count, "", type(error).__name__, str(error), lines)


_import_closure = closure.import_closure  # the real one, before any test replaces it


@functools.cache
def _sedlib_closure(path: Path) -> tuple[Path, ...]:
    return tuple(_import_closure(path))


def cached_import_closure(path, package_dir: Path = closure.PACKAGE_DIR) -> list[Path]:
    """`sedlib.rundir.closure.import_closure`, computed once per file for the test session (sedlib's code does
    not change while the tests run); the runner parses every module of a stage's closure on each run otherwise."""
    if Path(package_dir).resolve() != closure.PACKAGE_DIR.resolve():
        return _import_closure(path, package_dir)
    return list(_sedlib_closure(Path(path).resolve()))


def cache_closures(monkeypatch) -> None:
    """Compute each code closure once for the test session (`cached_import_closure`), in the runner and in the
    training records (`sedlib.rundir.closure.module_code_hash`)."""
    monkeypatch.setattr(closure, "import_closure", cached_import_closure)
    monkeypatch.setattr(runner, "import_closure", cached_import_closure)


def install(monkeypatch, executor) -> None:
    """Run stages with ``executor`` instead of a kernel, and write run directory files without flushing each to
    disk (an fsync takes milliseconds; durability is not what these tests check)."""
    monkeypatch.setattr(runner, "execute_stage", executor)
    monkeypatch.setattr(rundir, "fsync", lambda path, directory=False: None)


class FakeExecutor:
    """Writes every declared output of a stage at once, after verifying what the stage reads.

    Attributes:
        calls: the stages executed, in order.
        failures: ``{stage: exception}``: the stage raises it (as its kernel would report it) before writing.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failures: dict[str, BaseException] = {}

    def __call__(self, step, run, params_file, overrides, output, terminal) -> None:
        self.calls.append(step.name)
        output.write_text(json.dumps({"stage": step.name, "overrides": overrides}))
        config = load_config(params_file, overrides)
        try:
            for relative in declared_reads(config, step.name):
                run.verified(relative)
            if step.name in self.failures:
                raise self.failures[step.name]
        except Exception as error:
            raise kernel_error(error) from error
        files = [path for path in declared_outputs(config, step.name) if not path.startswith("notebooks/")]
        with run.writing(*files) as temporaries:
            for relative, temporary in zip(files, temporaries, strict=True):
                temporary.write_text(f"{relative} of {json.dumps(overrides, sort_keys=True)}")


class InProcessExecutor:
    """Runs a stage's notebook cells in this process, as a kernel would run them.

    Attributes:
        calls: the stages executed, in order.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, step, run, params_file, overrides, output, terminal) -> None:
        import jupytext
        import nbformat

        from sedlib import progress

        self.calls.append(step.name)
        notebook = jupytext.read(runner.notebook_source(step.name))
        namespace = {"__name__": "__main__"}
        parameters = {"params_file": params_file, "run_dir": str(run.root), "overrides": overrides}
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        with contextlib.chdir(PROJECT_ROOT), runner._text_progress():
            for count, cell in enumerate(code, 1):
                try:
                    exec(compile(cell.source, f"{step.name} cell [{count}]", "exec"), namespace)  # noqa: S102
                except Exception as error:
                    raise kernel_error(error, count) from error
                finally:
                    progress.close_text_bars()  # as after every cell in a kernel
                    if "matplotlib.pyplot" in sys.modules:  # a kernel shows each figure once; nothing shows here
                        sys.modules["matplotlib.pyplot"].close("all")
                if "parameters" in cell.metadata.get("tags", []):
                    namespace.update(parameters)  # papermill's injected cell
        nbformat.write(notebook, output)


def run_in_process(params_file: str, overrides: dict | None = None, run_dir=None, **kwargs):
    """`sedlib.run.run_study` with every stage's notebook run in this process (`InProcessExecutor`),
    for module-scoped fixtures (the ``in_process`` fixture does the same for one test). No report: the notebooks
    run this way keep no outputs to embed."""
    import pytest

    with pytest.MonkeyPatch.context() as monkeypatch:
        install(monkeypatch, InProcessExecutor())
        return runner.run_study(params_file, overrides=overrides, run_dir=run_dir, report=False, **kwargs)
