import os
import subprocess
import sys
import tomllib

import pytest

from sedlib import PROJECT_ROOT, cli


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
def test_an_installed_copy_runs_the_smoke_study_from_a_checkout(tmp_path):
    """``pip install .`` (not editable) beside the checkout, then ``sedlib run`` in the checkout's notebooks/ folder."""
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(PROJECT_ROOT)], check=True, cwd=tmp_path)
    assert not (site / "sedlib" / "run.py").samefile(PROJECT_ROOT / "sedlib" / "run.py")
    environment = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    probe = [sys.executable, "-c", "import sedlib; print(sedlib.__file__, sedlib.PROJECT_ROOT)"]
    where = subprocess.run(probe, cwd=PROJECT_ROOT / "notebooks", env=environment, capture_output=True, text=True)
    assert where.stdout.split() == [str(site / "sedlib" / "__init__.py"), str(PROJECT_ROOT)]
    run_dir = tmp_path / "run"
    command = [str(site / "bin" / "sedlib"), "run", "../params/smoke.yaml", "--run-dir", str(run_dir), "--quiet"]
    done = subprocess.run(command, cwd=PROJECT_ROOT / "notebooks", env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (run_dir / "report" / "index.html").is_file() and (run_dir / "stages" / "05_tables.json").is_file()
