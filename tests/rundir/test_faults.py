"""Faults a careful user meets, on copies of the smoke run: what they read, what is kept, what recovers.

Each test damages a copy of the session's smoke run (`conftest.smoke_run`), runs the study again as a
user would, and checks the user-visible outcome (the line that says why a stage reruns, or the error
and its fix), that completed artefacts are intact, and that a run that recovers ends with the results
of the undisturbed run.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import nbformat
import psutil
import pytest

from sedlib import run as runner
from sedlib.config import PROJECT_ROOT, load_config
from sedlib.rundir.declaration import STAGE_NAMES
from sedlib.rundir.directory import ArtefactError, RunDir
from sedlib.rundir.lock import LOCK_ENVIRONMENT_VARIABLE
from sedlib.study.models import load_models

pytestmark = pytest.mark.e2e  # runs the notebooks with papermill (make test-fast leaves it out)
PARAMS = "params/smoke.yaml"
RESULTS = ("ood_gen", "ood_gen_per_corruption", "calibration", "ood_det", "diversity", "summary")


@pytest.fixture
def copy(smoke_run, tmp_path):
    """A private copy of the smoke run directory."""
    target = tmp_path / "run"
    shutil.copytree(smoke_run.root, target)
    (target / ".lock").write_text("")
    return RunDir(target)


def run_again(run: RunDir, capsys, **kwargs) -> list[str]:
    """Run the study on ``run`` as a user would, and return the runner's status lines."""
    capsys.readouterr()
    runner.run_study(PARAMS, run_dir=str(run.root), report=False, **kwargs)
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]


def contents(run: RunDir, kinds=RESULTS) -> dict[str, bytes]:
    return {kind: run.path(kind).read_bytes() for kind in kinds}


def executed_text(run: RunDir, stage: str) -> str:
    return json.dumps([cell.get("outputs", []) for cell in nbformat.read(run.path("notebook", stage), 4).cells])


def overwrite_middle(path, count=64):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(255 - b for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


def test_a_second_run_skips_every_stage(copy, capsys):
    assert run_again(copy, capsys) == [f"[{stage}] skipped: up to date" for stage in STAGE_NAMES]


@pytest.mark.parametrize(
    "damage",
    [overwrite_middle, lambda path: path.write_bytes(path.read_bytes()[:100])],
    ids=["64 bytes overwritten", "truncated"],
)
def test_a_damaged_model_is_retrained_never_reused(copy, smoke_run, capsys, damage):
    weights = copy.path("model", "deep_ensemble")
    damage(weights)
    config = load_config(PARAMS)
    with pytest.raises(ArtefactError, match=r"^models/deep_ensemble.safetensors changed since it was written"):
        load_models(config, copy)  # what stage 03 would meet if it ran first
    status = run_again(copy, capsys)
    assert status[1] == "[02_train_a2d] running: models/deep_ensemble.safetensors changed since the stage wrote it"
    assert "deep_ensemble: training Deep ensemble (M=3, iid pairs): models/deep_ensemble.safetensors changed since" in (
        executed_text(copy, "02_train_a2d")
    )
    assert weights.read_bytes() == smoke_run.path("model", "deep_ensemble").read_bytes()  # the same training again
    assert contents(copy) == contents(smoke_run)


@pytest.mark.parametrize(
    "damage, reason",
    [(lambda path: path.unlink(), "is missing"), (overwrite_middle, "changed since the stage wrote it")],
    ids=["deleted", "corrupt"],
)
def test_a_deleted_or_corrupt_evaluation_store_is_recomputed(copy, smoke_run, capsys, damage, reason):
    damage(copy.path("evaluations"))
    status = run_again(copy, capsys)
    assert status[2] == f"[03_eval_ood_gen] running: results/evaluations.h5 {reason}"
    assert copy.problem(copy.path("evaluations")) is None
    assert contents(copy) == contents(smoke_run)


def test_a_damaged_store_met_by_a_stage_run_alone_names_the_fix(copy, smoke_run):
    overwrite_middle(copy.path("evaluations"))
    with pytest.raises(runner.StageFailedError) as error:
        runner.run_study(PARAMS, stages=["04_eval_ood_det"], run_dir=str(copy.root), report=False)
    lines = str(error.value).splitlines()
    assert lines[0] == (
        "[04_eval_ood_det] failed: results/evaluations.h5 changed since it was written (its content hash differs "
        "from the one recorded). Stage 03_eval_ood_gen writes it: `python -m sedlib.run params/smoke.yaml "
        f"--run-dir {copy.root}` reruns that stage and every stage after it that needs it."
    )
    assert lines[1].endswith("notebooks/04_eval_ood_det.failed.ipynb") and "traceback" in lines[1]
    assert contents(copy) == contents(smoke_run)  # the earlier results stay


def test_a_failed_retrain_keeps_the_model_it_would_have_replaced(copy, smoke_run, capsys):
    before = {path: path.read_bytes() for path in copy.models.iterdir()}
    with pytest.raises(runner.StageFailedError) as error:
        run_again(copy, capsys, overrides={"models": {"sed_a2d": {"lr": 1e6}}})
    message = str(error.value)
    assert message.startswith("[02_train_a2d] failed: model 'sed_a2d' (SED-A2D) diverged: non-finite training loss")
    assert "models.sed_a2d.lr (or train.lr) in params/smoke.yaml" in message
    assert {path: path.read_bytes() for path in copy.models.iterdir()} == before
    # the settings that made the kept models: nothing to retrain
    assert run_again(copy, capsys) == [f"[{stage}] skipped: up to date" for stage in STAGE_NAMES]
    assert contents(copy) == contents(smoke_run)


def test_a_truncated_feature_file_is_refused_with_the_params_key_first(copy, capsys):
    path = copy.path("features", "digits")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(runner.StageFailedError) as error:
        run_again(copy, capsys)
    first = str(error.value).splitlines()[0]
    assert first.startswith("[01_cache] failed: ") and "digits.h5" in first
    assert first.index("cache.rebuild: true") < first.index("write_split")
    assert "CorruptFeaturesError" not in first


def kernel_of(runner_process: subprocess.Popen, timeout: float = 120) -> psutil.Process:
    """The notebook kernel the runner started, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(runner_process.pid).children(recursive=True):
            if "ipykernel_launcher" in " ".join(child.cmdline()):
                return child
        time.sleep(0.2)
    raise AssertionError("the runner started no kernel")


def test_a_killed_runner_leaves_no_kernel_writing(copy, smoke_run, capsys):
    command = [sys.executable, "-m", "sedlib.run", PARAMS, "--run-dir", str(copy.root), "--no-report"]
    started = subprocess.Popen(
        [*command, "--force", "--stages", "02_train_a2d"], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    kernel = kernel_of(started)
    token = kernel.environ()[LOCK_ENVIRONMENT_VARIABLE]
    os.kill(started.pid, signal.SIGKILL)
    started.wait()
    # the kernel goes with its runner (ipykernel polls its parent); a later run would also stop it
    psutil.wait_procs([kernel], timeout=30)
    assert not kernel.is_running() or kernel.status() == psutil.STATUS_ZOMBIE
    assert copy.holder() is None  # the dead runner's record names no live holder
    run_again(copy, capsys)
    leftovers = [p for p in psutil.process_iter() if _token(p) == token]
    assert leftovers == []
    assert contents(copy) == contents(smoke_run)


def test_sigterm_stops_the_runner_and_its_kernel(copy):
    command = [sys.executable, "-m", "sedlib.run", PARAMS, "--run-dir", str(copy.root), "--no-report"]
    started = subprocess.Popen(
        [*command, "--force", "--stages", "02_train_a2d"], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    kernel = kernel_of(started)
    started.send_signal(signal.SIGTERM)
    _, err = started.communicate(timeout=60)
    assert started.returncode == 130
    assert "[run] interrupted (signal SIGTERM)" in err and "Traceback" not in err
    psutil.wait_procs([kernel], timeout=30)
    assert not kernel.is_running() or kernel.status() == psutil.STATUS_ZOMBIE


def test_ctrl_c_in_a_terminal_ends_with_the_runners_line(copy):
    """Ctrl-C reaches the whole process group: the runner, its kernel and the kernel's training workers."""
    command = [sys.executable, "-m", "sedlib.run", PARAMS, "--run-dir", str(copy.root), "--no-report"]
    started = subprocess.Popen(
        [*command, "--force", "--stages", "02_train_a2d", "--set", "train.epochs=60"], cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    kernel = kernel_of(started)
    time.sleep(15)  # into training, with its workers (60 epochs are enough steps for them)
    os.killpg(started.pid, signal.SIGINT)
    out, _ = started.communicate(timeout=60)
    assert started.returncode == 130
    assert out.rstrip().splitlines()[-1].startswith("[run] interrupted: the notebook kernel was stopped")
    assert "Traceback" not in out and "KeyboardInterrupt" not in out and "Task exception" not in out
    psutil.wait_procs([kernel], timeout=30)
    assert not kernel.is_running() or kernel.status() == psutil.STATUS_ZOMBIE


def _token(process: psutil.Process) -> str | None:
    try:
        return process.environ().get(LOCK_ENVIRONMENT_VARIABLE)
    except (psutil.Error, OSError):
        return None
