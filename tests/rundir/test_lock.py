import contextlib
import json
import os
import socket
import subprocess
import sys

import pytest

from sedlib.config import load_config
from sedlib.rundir.directory import RunDir
from sedlib.rundir.lock import LOCK_ENVIRONMENT_VARIABLE, RunDirLockedError

HOLD = """
import sys
from pathlib import Path
from sedlib.rundir.directory import RunDir
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
    enter = "import sys; from pathlib import Path; from sedlib.rundir.directory import RunDir\n"
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
    from sedlib.study.extract import cache_features

    run_dir = tmp_path / "run"
    config = load_config("params/smoke.yaml")
    run = RunDir.open(config, run_dir)
    with held_by_another_process(run_dir):
        assert runner.main(["params/smoke.yaml", "--run-dir", str(run_dir), "--no-report"]) == 1
        assert "is being written by another run" in capsys.readouterr().err
        with pytest.raises(RunDirLockedError):
            cache_features(config, run, progress=False)
    assert not run.features.exists() and not (run_dir / "stages").exists()


def test_the_next_run_stops_what_a_killed_holder_left_running(tmp_path):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    token = "feedface" * 4
    left = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, LOCK_ENVIRONMENT_VARIABLE: token},
        start_new_session=True,  # as a notebook kernel: no signal from the terminal reaches it
    )
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = {"holder": "python -m sedlib.run params/a.yaml", "pid": int(dead.stdout), "host": socket.gethostname()}
    (run.root / ".lock").write_text(json.dumps({**holder, "since": "earlier", "token": token}))
    assert run.holder() is None  # the record names a dead process: nobody holds the lock
    try:
        with run.lock("next run"):
            assert left.wait(timeout=30) is not None
            assert run.holder()["holder"] == "next run" and "token" not in run.holder()
    finally:
        left.kill()
    assert (run.root / ".lock").read_text() == ""
