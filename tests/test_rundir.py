import contextlib
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from sedlib.config import RunConfig, load_config
from sedlib.rundir import LOCK_ENVIRONMENT_VARIABLE, RunDir, RunDirError, RunDirLockedError

MODELS = {"de": {"num_members": 2, "lam": 0.0}}


def test_open_creates_layout_and_records_params(tmp_path):
    config = RunConfig.from_dict({"run_name": "a", "models": MODELS}, source="params/a.yaml")
    run = RunDir.open(config, tmp_path / "run")
    assert run.features.is_dir() and run.models.is_dir() and run.tables.is_dir() and run.figures.is_dir()
    assert json.loads((run.root / "run.json").read_text()) == {"run_name": "a", "params_file": "params/a.yaml"}
    assert yaml.safe_load((run.root / "params.yaml").read_text()) == config.to_dict()
    assert RunDir.open(config, tmp_path / "run") == run  # reopening with the same params file is fine


def test_directory_of_another_params_file_is_refused(tmp_path):
    first = RunConfig.from_dict({"run_name": "a", "models": MODELS}, source="params/a.yaml")
    other = RunConfig.from_dict({"run_name": "a", "models": MODELS}, source="params/b.yaml")
    run = RunDir.open(first, tmp_path / "run")
    (run.models / "de.safetensors").write_text("kept")
    with pytest.raises(RunDirError, match="made by params file 'params/a.yaml'") as error:
        RunDir.open(other, tmp_path / "run")
    assert "another run_name" in str(error.value)
    assert (run.models / "de.safetensors").read_text() == "kept"
    assert json.loads((run.root / "run.json").read_text())["params_file"] == "params/a.yaml"


def test_unreadable_record_is_an_error(tmp_path):
    config = RunConfig.from_dict({"run_name": "a", "models": MODELS}, source="params/a.yaml")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{not json")
    with pytest.raises(RunDirError, match="unreadable"):
        RunDir.open(config, tmp_path / "run")


HOLD = """
import sys
from pathlib import Path
from sedlib.rundir import RunDir
with RunDir(Path(sys.argv[1])).lock("test holder: python -m sedlib.run params/a.yaml"):
    print("held", flush=True)
    sys.stdin.readline()
"""


@contextlib.contextmanager
def held_by_another_process(root, env=None):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.communicate("\n", timeout=60)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    run = RunDir(tmp_path / "run")
    with held_by_another_process(run.root) as holder:
        with pytest.raises(RunDirLockedError) as error, run.lock("second"):
            pass
        message = str(error.value)
        assert f"PID {holder.pid} on host {socket.gethostname()}" in message
        assert "'test holder: python -m sedlib.run params/a.yaml'" in message and "Wait until that run" in message
    with run.lock("second"):  # released when its process ended
        assert json.loads((run.root / ".lock").read_text())["holder"] == "second"
    assert (run.root / ".lock").read_text() == ""


def test_processes_the_holder_starts_work_under_its_lock(tmp_path):
    run = RunDir(tmp_path / "run")
    enter = "import sys; from pathlib import Path; from sedlib.rundir import RunDir\n"
    enter += "with RunDir(Path(sys.argv[1])).lock('child'): print('entered')"
    with run.lock("runner"):
        with run.lock("nested"):  # the holder itself: no refusal, and the record stays the runner's
            assert json.loads((run.root / ".lock").read_text())["holder"] == "runner"
        token = os.environ[LOCK_ENVIRONMENT_VARIABLE]
        child = subprocess.run([sys.executable, "-c", enter, str(run.root)], capture_output=True, text=True)
        assert child.returncode == 0 and child.stdout.strip() == "entered"
        stranger = {key: value for key, value in os.environ.items() if key != LOCK_ENVIRONMENT_VARIABLE}
        refused = subprocess.run(
            [sys.executable, "-c", enter, str(run.root)], capture_output=True, text=True, env=stranger
        )
        assert refused.returncode != 0 and "RunDirLockedError" in refused.stderr
        assert f"PID {os.getpid()}" in refused.stderr
    assert LOCK_ENVIRONMENT_VARIABLE not in os.environ or os.environ[LOCK_ENVIRONMENT_VARIABLE] != token


def test_runner_and_cache_stage_are_refused_while_another_run_writes(tmp_path, capsys):
    from sedlib import run as runner
    from sedlib.cache import cache_features

    run_dir = tmp_path / "run"
    config = load_config("params/smoke.yaml")
    run = RunDir.open(config, run_dir)
    with held_by_another_process(run_dir):
        assert runner.main(["params/smoke.yaml", "--run-dir", str(run_dir), "--no-report"]) == 1
        assert "is being written by another run" in capsys.readouterr().err
        with pytest.raises(RunDirLockedError):
            cache_features(config, run, progress=False)
    assert not list(run.features.iterdir()) and not (run_dir / "stages").exists()
