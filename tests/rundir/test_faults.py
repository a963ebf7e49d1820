"""Faults a careful user meets: what they read, what is kept, what recovers.

The runner's side (which stage runs again and why, what a failure keeps, what its message names) is tested on
run directories that the fake executor writes (`tests.helpers.executors.FakeExecutor`). The stages' side (a
damaged artefact refused by the code that reads it, a diverged training, a truncated feature file) runs the
stage's own code on a private copy of the session's smoke run (`conftest.smoke_run`). A killed, terminated or
interrupted runner is the runner's command line with real notebook kernels: a minimal one that only waits
(`tests.helpers.kernel_runner`), and for Ctrl-C the training stage with its worker processes.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from sedlib import run as runner
from sedlib.config import PROJECT_ROOT, load_config
from sedlib.rundir.declaration import STAGE_NAMES, declared_outputs, stage
from sedlib.rundir.directory import ArtefactError, RunDir
from sedlib.rundir.lock import LOCK_ENVIRONMENT_VARIABLE
from sedlib.study.models import load_models
from tests.helpers.executors import kernel_error
from tests.helpers.runs import status_lines

PARAMS = "params/smoke.yaml"
RESULTS = ("ood_gen", "ood_gen_per_corruption", "calibration", "ood_det", "diversity", "summary")
UP_TO_DATE = [f"[{stage}] skipped: up to date" for stage in STAGE_NAMES]


@pytest.fixture
def copy(smoke_run, tmp_path):
    """A private copy of the smoke run directory."""
    target = tmp_path / "run"
    shutil.copytree(smoke_run.root, target)
    (target / ".lock").write_text("")
    return RunDir(target)


@pytest.fixture
def fake_run(fake_stages, tmp_path, capsys):
    """A run directory of params/smoke.yaml written by the fake executor (no stage has run since)."""
    run = runner.run_study(PARAMS, run_dir=str(tmp_path / "run"), report=False)
    fake_stages.calls.clear()
    capsys.readouterr()
    return run


def run_again(run: RunDir, capsys, **kwargs) -> list[str]:
    """Run the study on ``run`` as a user would, and return the runner's status lines."""
    capsys.readouterr()
    runner.run_study(PARAMS, run_dir=str(run.root), report=False, **kwargs)
    return status_lines(capsys)


def contents(run: RunDir, kinds=RESULTS) -> dict[str, bytes]:
    return {kind: run.path(kind).read_bytes() for kind in kinds}


def outputs(run: RunDir) -> dict[str, bytes]:
    """Every declared output of the smoke study in ``run``, with its bytes."""
    config = load_config(PARAMS)
    return {r: (run.root / r).read_bytes() for stage in STAGE_NAMES for r in declared_outputs(config, stage)}


def overwrite_middle(path, count=64):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(255 - b for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.e2e
def test_a_second_run_skips_every_stage(copy, capsys):
    assert run_again(copy, capsys) == UP_TO_DATE


@pytest.mark.parametrize(
    "damage, reason",
    [
        (overwrite_middle, "changed since the stage wrote it"),
        (truncate, "changed since the stage wrote it"),
        (lambda path: path.unlink(), "is missing"),
    ],
    ids=["64 bytes overwritten", "truncated", "deleted"],
)
@pytest.mark.parametrize(
    "relative, stage",
    [("models/deep_ensemble.safetensors", "02_train_a2d"), ("results/evaluations.h5", "03_eval_ood_gen")],
)
def test_a_damaged_artefact_reruns_its_stage_and_what_it_rewrites_alike_stays(
    fake_run, fake_stages, capsys, relative, stage, damage, reason
):
    before = outputs(fake_run)
    damage(fake_run.root / relative)
    status = run_again(fake_run, capsys)
    assert status[STAGE_NAMES.index(stage)] == f"[{stage}] running: {relative} {reason}"
    assert fake_stages.calls == [stage]  # the same bytes again: nothing after it reruns
    assert outputs(fake_run) == before


def test_a_damaged_input_met_by_a_stage_run_alone_names_the_stage_that_writes_it(fake_run, fake_stages):
    overwrite_middle(fake_run.path("evaluations"))
    before = outputs(fake_run)
    with pytest.raises(runner.StageFailedError) as error:
        runner.run_study(PARAMS, stages=["04_eval_ood_det"], run_dir=str(fake_run.root), report=False)
    first, where = str(error.value).splitlines()[:2]
    # what failed, where, which stage writes it and the command that reruns it
    assert first.startswith("[04_eval_ood_det] failed: results/evaluations.h5 changed since it was written")
    assert f"Stage 03_eval_ood_gen writes it: `python -m sedlib.run params/smoke.yaml --run-dir {fake_run.root}`" in (
        first
    )
    assert "ArtefactError" not in first and "probably a bug" not in str(error.value)
    assert where.endswith("notebooks/04_eval_ood_det.failed.ipynb") and "traceback" in where
    assert outputs(fake_run) == before  # the earlier results stay


def test_a_failed_stage_under_other_settings_keeps_the_run_up_to_date_for_its_own(fake_run, fake_stages, capsys):
    from sedlib.errors import TrainingDivergedError

    before = outputs(fake_run)
    fake_stages.failures["02_train_a2d"] = TrainingDivergedError("model 'sed_a2d' (SED-A2D) diverged: ...")
    with pytest.raises(runner.StageFailedError) as error:
        run_again(fake_run, capsys, overrides={"models": {"sed_a2d": {"lr": 1e6}}})
    assert str(error.value).startswith("[02_train_a2d] failed: model 'sed_a2d' (SED-A2D) diverged")
    assert outputs(fake_run) == before
    fake_stages.calls.clear()
    assert run_again(fake_run, capsys) == UP_TO_DATE  # the settings that made the kept files: nothing to rerun
    assert fake_stages.calls == []


@pytest.mark.e2e
def test_a_damaged_model_is_refused_by_the_stages_that_read_it(copy):
    overwrite_middle(copy.path("model", "deep_ensemble"))
    with pytest.raises(ArtefactError, match=r"^models/deep_ensemble.safetensors changed since it was written"):
        load_models(load_config(PARAMS), copy)  # what stage 03 would meet if it ran first


@pytest.mark.e2e
def test_a_diverged_retraining_names_the_params_key_and_keeps_the_model_it_would_have_replaced(copy):
    from sedlib.errors import TrainingDivergedError
    from sedlib.study.models import train_models

    before = {path: path.read_bytes() for path in copy.models.iterdir()}
    with pytest.raises(TrainingDivergedError) as error:
        train_models(load_config(PARAMS, {"models": {"sed_a2d": {"lr": 1e6}}}), copy, progress=False)
    message = runner.failure_message(stage("02_train_a2d"), kernel_error(error.value), "n", "c", copy.root)
    assert message.startswith("[02_train_a2d] failed: model 'sed_a2d' (SED-A2D) diverged: non-finite training loss")
    assert "models.sed_a2d.lr (or train.lr) in params/smoke.yaml" in message and "probably a bug" not in message
    assert {path: path.read_bytes() for path in copy.models.iterdir()} == before


@pytest.mark.e2e
def test_a_truncated_feature_file_is_refused_with_the_params_key_first(copy):
    from sedlib.errors import UserError
    from sedlib.study.extract import cache_features

    truncate(copy.path("features", "digits"))
    with pytest.raises(UserError) as error:
        cache_features(load_config(PARAMS), copy, progress=False)
    message = runner.failure_message(stage("01_cache"), kernel_error(error.value), "n", "c", copy.root)
    first = message.splitlines()[0]  # what the runner prints when the kernel reports it
    assert first.startswith("[01_cache] failed: ") and "digits.h5" in first
    assert first.index("cache.rebuild: true") < first.index("write_split")
    assert "CorruptFeaturesError" not in first and "probably a bug" not in message


def kernel_of(runner_process: subprocess.Popen, timeout: float = 120) -> psutil.Process:
    """The notebook kernel the runner started, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(runner_process.pid).children(recursive=True):
            if "ipykernel_launcher" in " ".join(child.cmdline()):
                return child
        time.sleep(0.1)
    raise AssertionError("the runner started no kernel")


def children_of(process: psutil.Process, marker: str, count: int, timeout: float = 120) -> list[psutil.Process]:
    """``count`` child processes of ``process`` whose command line holds ``marker``, once they run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [child for child in process.children() if marker in " ".join(child.cmdline())]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {count} processes {marker!r} under the kernel")


def kernel_runner(run: RunDir, *arguments, **popen) -> subprocess.Popen:
    """The runner's command line, forced to rerun stage 02 in a kernel that waits (`tests.helpers.kernel_runner`)."""
    command = [sys.executable, "-m", "tests.helpers.kernel_runner", *arguments, PARAMS, "--run-dir", str(run.root)]
    command += ["--no-report", "--force", "--stages", "02_train_a2d"]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, **popen)


def gone(process: psutil.Process) -> bool:
    psutil.wait_procs([process], timeout=30)
    return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE


@pytest.mark.e2e
def test_a_killed_runner_leaves_no_kernel_and_its_processes_are_stopped_by_the_next_run(fake_run, capsys, caplog):
    before = outputs(fake_run)
    started = kernel_runner(fake_run, "--worker", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kernel = kernel_of(started)
    (worker,) = children_of(kernel, "time.sleep", 1)  # a process of the kernel's own, as a data-loader worker
    token = kernel.environ()[LOCK_ENVIRONMENT_VARIABLE]
    assert worker.environ()[LOCK_ENVIRONMENT_VARIABLE] == token
    os.kill(started.pid, signal.SIGKILL)
    started.wait()
    assert gone(kernel)  # the kernel goes with its runner (ipykernel polls its parent)
    assert worker.is_running()  # its own process outlives it ...
    assert fake_run.holder() is None  # the dead runner's record names no live holder
    try:
        assert run_again(fake_run, capsys) == UP_TO_DATE
        assert gone(worker)  # ... until the next run stops every process that carries the dead run's token
        assert [p for p in psutil.process_iter() if _token(p) == token] == []
    finally:
        if worker.is_running():
            worker.kill()
    assert outputs(fake_run) == before


@pytest.mark.e2e
def test_sigterm_stops_the_runner_and_its_kernel(fake_run):
    started = kernel_runner(fake_run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kernel = kernel_of(started)
    started.send_signal(signal.SIGTERM)
    _, err = started.communicate(timeout=60)
    assert started.returncode == 130
    assert "[run] interrupted (signal SIGTERM)" in err and "Traceback" not in err
    assert "continues from here" in err.splitlines()[-1]
    assert gone(kernel)


def ignores_sigint(process: psutil.Process) -> bool:
    """Whether ``process`` ignores SIGINT (its ``SigIgn`` mask in /proc)."""
    with open(f"/proc/{process.pid}/status") as handle:
        status = dict(line.split(":\t", 1) for line in handle.read().splitlines() if ":\t" in line)
    return bool(int(status["SigIgn"], 16) & (1 << (signal.SIGINT - 1)))


@pytest.mark.e2e
def test_ctrl_c_in_a_terminal_ends_with_the_runners_line(copy):
    """Ctrl-C reaches the whole process group: the runner, its kernel and the kernel's training workers."""
    command = [sys.executable, "-m", "sedlib.run", PARAMS, "--run-dir", str(copy.root), "--no-report"]
    started = subprocess.Popen(
        [*command, "--force", "--stages", "02_train_a2d", "--set", "train.epochs=60"], cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    kernel = kernel_of(started)
    workers = children_of(kernel, "multiprocessing-fork", 2)  # 60 epochs are enough steps for one per core
    deadline = time.monotonic() + 120
    while not all(ignores_sigint(worker) for worker in workers) and time.monotonic() < deadline:
        time.sleep(0.1)  # each worker ignores SIGINT once it has started (`training._start_worker`)
    os.killpg(started.pid, signal.SIGINT)
    out, _ = started.communicate(timeout=60)
    assert started.returncode == 130
    assert out.rstrip().splitlines()[-1].startswith("[run] interrupted: the notebook kernel was stopped")
    assert "Traceback" not in out and "KeyboardInterrupt" not in out and "Task exception" not in out
    assert gone(kernel) and all(gone(worker) for worker in workers)


def _token(process: psutil.Process) -> str | None:
    try:
        return process.environ().get(LOCK_ENVIRONMENT_VARIABLE)
    except (psutil.Error, OSError):
        return None
