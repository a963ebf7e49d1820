import os
import shutil
import subprocess
import sys
import tomllib

import nbformat
import pytest

from sedlib import PROJECT_ROOT, cli
from sedlib.rundir.declaration import STAGE_NAMES


def test_the_console_command_is_declared_and_each_subcommand_reaches_its_module(capsys):
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"sedlib": "sedlib.cli:main"}
    assert cli.main(["check", "params/smoke.yaml"]) == 0
    assert capsys.readouterr().out == "params/smoke.yaml: ok\n"
    for command in cli.COMMANDS:
        with pytest.raises(SystemExit) as done:
            cli.main([command, "--help"])
        assert done.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_an_unknown_command_prints_the_commands(capsys):
    assert cli.main(["sed"]) == 2
    assert capsys.readouterr().err.startswith("usage: sedlib {run,report,check,cache}")
    assert cli.main([]) == 2


def test_check_takes_paths_from_the_working_directory(monkeypatch, capsys):
    monkeypatch.chdir(PROJECT_ROOT / "notebooks")
    assert cli.main(["check", "../params/smoke.yaml"]) == 0
    assert cli.main(["check", "params/smoke.yaml"]) == 1
    assert "not found" in capsys.readouterr().err


@pytest.mark.e2e
def test_an_installed_copy_runs_from_a_checkout_and_its_kernels_import_it(smoke_run, tmp_path):
    """``pip install .`` (not editable) beside the checkout, then ``sedlib run`` in the checkout's notebooks/ folder.

    On a copy of the session's smoke run: the installed copy finds every stage up to date (its code is the
    checkout's, file for file) and renders the report from the checkout's templates; a stage it runs starts a
    kernel that imports the installed copy (a minimal notebook that says which, `tests.helpers.kernel_runner`)."""
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(PROJECT_ROOT)], check=True, cwd=tmp_path)
    installed = site / "sedlib" / "__init__.py"
    assert not (site / "sedlib" / "run.py").samefile(PROJECT_ROOT / "sedlib" / "run.py")
    environment = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    probe = [sys.executable, "-c", "import sedlib; print(sedlib.__file__, sedlib.PROJECT_ROOT)"]
    where = subprocess.run(probe, cwd=PROJECT_ROOT / "notebooks", env=environment, capture_output=True, text=True)
    assert where.stdout.split() == [str(installed), str(PROJECT_ROOT)]
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run.root, run_dir)
    shutil.rmtree(run_dir / "report")
    # the params file as the smoke run names it (`../params/smoke.yaml` from here is refused: its run directory
    # records `notebooks/../params/smoke.yaml`, a path the runner does not normalise)
    arguments = [str(PROJECT_ROOT / "params" / "smoke.yaml"), "--run-dir", str(run_dir)]
    command = [str(site / "bin" / "sedlib"), "run", *arguments, "--quiet"]
    done = subprocess.run(command, cwd=PROJECT_ROOT / "notebooks", env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[:-1] == [f"[{stage}] skipped: up to date" for stage in STAGE_NAMES]
    assert lines[-1].startswith("[report]")
    assert (run_dir / "report" / "index.html").is_file()
    kernel = [sys.executable, "-m", "tests.helpers.kernel_runner", "--notebook", "which_sedlib", *arguments]
    kernel += ["--no-report", "--force", "--stages", "05_tables"]
    environment["PYTHONPATH"] = f"{site}{os.pathsep}{PROJECT_ROOT}"  # the installed sedlib first; tests.helpers
    done = subprocess.run(kernel, cwd=PROJECT_ROOT / "notebooks", env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    executed = nbformat.read(run_dir / "notebooks" / "05_tables.ipynb", as_version=4)
    assert [output.text.strip() for output in executed.cells[-1].outputs] == [str(installed)]
