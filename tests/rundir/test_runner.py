import json
import os

import pytest

from sedlib import PROJECT_ROOT
from sedlib import run as runner
from sedlib.config import ConfigError, load_config
from sedlib.rundir import closure
from sedlib.rundir import declaration as stages
from sedlib.rundir.declaration import STAGE_NAMES
from sedlib.rundir.directory import RunDir


def lines(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]


def test_unchanged_stages_are_skipped_and_changes_propagate(fake_stages, tmp_path, capsys):
    run_dir = tmp_path / "run"
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), report=False)
    assert fake_stages.calls == list(STAGE_NAMES)
    fake_stages.calls.clear()
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), report=False)
    assert fake_stages.calls == []
    capsys.readouterr()
    # a changed output reruns its stage; the stage writes the same content, so the stages after it stay valid
    (run_dir / "features" / "test.h5").write_text("tampered")
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), report=False)
    assert fake_stages.calls == ["01_cache"]
    assert lines(capsys)[0] == "[01_cache] running: features/test.h5 changed since the stage wrote it"
    fake_stages.calls.clear()
    # a changed training parameter reruns training and everything after it that reads its files, not the cache
    overrides = {"models": {"sed_a2d": {"kappa": 2.0}}}
    runner.run_study("params/smoke.yaml", overrides=overrides, run_dir=str(run_dir), report=False)
    assert fake_stages.calls == ["02_train_a2d", "03_eval_ood_gen", "04_eval_ood_det", "05_tables"]
    assert lines(capsys)[1] == "[02_train_a2d] running: changed since it last ran: params models"
    fake_stages.calls.clear()
    # an evaluation setting reruns the evaluation stages only
    overrides["eval"] = {"batch_size": 7}
    runner.run_study("params/smoke.yaml", overrides=overrides, run_dir=str(run_dir), report=False)
    assert fake_stages.calls == ["03_eval_ood_gen", "04_eval_ood_det", "05_tables"]


@pytest.mark.parametrize(
    "edited, reruns",
    [
        # by hand, from the notebooks' imports: stage 01 draws its figure with input_plots, the others with plots
        ("sedlib/study/plots.py", ["02_train_a2d", "03_eval_ood_gen", "04_eval_ood_det", "05_tables"]),
        ("sedlib/study/input_plots.py", list(STAGE_NAMES)),  # plots.py draws its notes with it
        # training imports the losses (stage 02 on); stage 01 imports neither training nor the scores
        ("sedlib/method/losses.py", ["02_train_a2d", "03_eval_ood_gen", "04_eval_ood_det", "05_tables"]),
        ("sedlib/features/store.py", list(STAGE_NAMES)),  # every stage reads features
        ("sedlib/study/findings.py", ["05_tables"]),
        ("notebooks/03_eval_ood_gen.py", ["03_eval_ood_gen"]),
    ],
)
def test_an_edit_reruns_exactly_the_stages_whose_code_holds_it(
    fake_stages, tmp_path, capsys, monkeypatch, edited, reruns
):
    run_dir = str(tmp_path / "run")
    runner.run_study("params/smoke.yaml", run_dir=run_dir, report=False)
    fake_stages.calls.clear()
    capsys.readouterr()
    real = closure.file_sha256
    target = (PROJECT_ROOT / edited).resolve()
    monkeypatch.setattr(closure, "file_sha256", lambda path: "edited" if path.resolve() == target else real(path))
    runner.run_study("params/smoke.yaml", run_dir=run_dir, report=False)
    assert fake_stages.calls == reruns
    assert f"[{reruns[0]}] running: changed since it last ran: {edited}" in lines(capsys)


@pytest.mark.parametrize(
    "stage, relative",
    [
        ("01_cache", "results/splits.csv"),
        ("02_train_a2d", "models/sed_a2d_alpha.npz"),
        ("03_eval_ood_gen", "results/evaluations.h5"),
        ("04_eval_ood_det", "results/figures/ood_det_roc.png"),
        ("05_tables", "results/tables/sweeps.md"),
        ("05_tables", "notebooks/05_tables.ipynb"),
    ],
)
def test_a_deleted_output_reruns_its_stage_without_force(fake_stages, tmp_path, capsys, stage, relative):
    run_dir = tmp_path / "run"
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), report=False)
    fake_stages.calls.clear()
    capsys.readouterr()
    (run_dir / relative).unlink()
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), report=False)
    assert fake_stages.calls == [stage]  # rewritten with the same content: nothing after it reruns
    assert f"[{stage}] running: {relative} is missing" in lines(capsys)
    assert (run_dir / relative).is_file()


def test_only_the_chosen_stages_run_and_force_reruns(fake_stages, tmp_path):
    run_dir = str(tmp_path / "run")
    runner.run_study("params/smoke.yaml", stages=["01_cache"], run_dir=run_dir, report=False)
    assert fake_stages.calls == ["01_cache"]
    runner.run_study("params/smoke.yaml", stages=["01_cache"], run_dir=run_dir, report=False, force=True)
    assert fake_stages.calls == ["01_cache", "01_cache"]
    with pytest.raises(ConfigError, match="unknown stage"):
        runner.run_study("params/smoke.yaml", stages=["06_extra"], run_dir=run_dir, report=False)


def test_a_chosen_stage_whose_inputs_are_missing_is_refused_before_anything_runs(fake_stages, tmp_path):
    with pytest.raises(runner.StageFailedError) as error:
        chosen = ["01_cache", "03_eval_ood_gen"]
        runner.run_study("params/smoke.yaml", stages=chosen, run_dir=str(tmp_path), report=False)
    assert fake_stages.calls == []
    message = str(error.value)  # which stage, the file it lacks, the stage that writes it, the command that does
    assert message.startswith("[03_eval_ood_gen] cannot run: it reads models/deep_ensemble.safetensors, which is")
    assert "Stage 02_train_a2d writes it" in message
    command = f"python -m sedlib.run params/smoke.yaml --run-dir {tmp_path} --stages 01_cache 02_train_a2d"
    assert f"`{command} 03_eval_ood_gen`" in message


def test_a_failed_stage_keeps_what_was_complete(fake_stages, monkeypatch, tmp_path):
    run_dir = tmp_path / "run"
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), report=False)
    kept = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file() and path.name != ".lock"}

    def fail(step, run, params_file, overrides, output, terminal):
        output.write_text('{"cells": "as far as it got"}')
        raise RuntimeError("the kernel died")

    monkeypatch.setattr(runner, "execute_stage", fail)
    with pytest.raises(runner.StageFailedError) as error:
        runner.run_study("params/smoke.yaml", run_dir=str(run_dir), report=False, force=True)
    message = str(error.value)
    assert message.startswith("[01_cache] failed: RuntimeError: the kernel died\n")
    assert f"{run_dir}/notebooks/01_cache.failed.ipynb" in message and "continues from here" in message
    assert {path: path.read_bytes() for path in kept} == kept  # every earlier artefact and record as it was
    assert (run_dir / "notebooks" / "01_cache.failed.ipynb").read_text() == '{"cells": "as far as it got"}'


@pytest.mark.parametrize(
    "name", ["ArtefactError", "FolderLayoutError", "ImageReadError", "TimmBackboneError", "MissingFileError"]
)
def test_failure_message_shows_user_errors_from_a_kernel_as_plain_words(tmp_path, name):
    from papermill.exceptions import PapermillExecutionError

    stage = stages.stage("03_eval_ood_gen")
    ours = PapermillExecutionError(3, 4, "", name, "models/x.safetensors is missing. Stage ...", [])
    message = runner.failure_message(stage, ours, "runs/s/notebooks/03.failed.ipynb", "params/s.yaml", tmp_path)
    assert message.splitlines()[0] == "[03_eval_ood_gen] failed: models/x.safetensors is missing. Stage ..."
    assert "PapermillExecutionError" not in message and "cell [4]" in message and "probably a bug" not in message


def test_failure_message_names_other_errors_as_bugs(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    bug = PapermillExecutionError(3, 4, "", "ZeroDivisionError", "division by zero", [])
    message = runner.failure_message(stages.stage("03_eval_ood_gen"), bug, "n.ipynb", "params/s.yaml", tmp_path)
    assert message.startswith("[03_eval_ood_gen] failed: ZeroDivisionError: division by zero\n  This is not an error")


def test_a_full_disk_ends_with_one_line_naming_the_device_and_the_command(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    full = PapermillExecutionError(3, 4, "", "OSError", "[Errno 28] No space left on device: 'x.h5'", [])
    message = runner.failure_message(stages.stage("03_eval_ood_gen"), full, "n.ipynb", "params/s.yaml", tmp_path)
    assert len(message.splitlines()) == 1 and "probably a bug" not in message
    assert message.startswith("[03_eval_ood_gen] failed: no space left on the device mounted at /")
    assert str(tmp_path) in message and message.endswith("`params/s.yaml` continues from here.")
    raised_here = RuntimeError("could not save")
    raised_here.__cause__ = OSError(28, "No space left on device")
    assert "no space left" in runner.failure_message(stages.stage("02_train_a2d"), raised_here, "n", "c", tmp_path)


def test_main_reports_bad_params_without_a_traceback(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_name: x\nmodels: {de: {num_members: 2}}\ndata: {trian_rows: 3}\n")
    assert runner.main([str(bad), "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "trian_rows" in err and "Traceback" not in err
    assert runner.main(["params/smoke.yaml", "--no-report", "--set", "train=3"]) == 1
    err = capsys.readouterr().err
    assert "train" in err and "Traceback" not in err


def test_run_directory_of_another_params_file_is_refused(fake_stages, tmp_path):
    run_dir = tmp_path / "run"
    RunDir.open(load_config("params/default.yaml"), run_dir)
    assert runner.main(["params/smoke.yaml", "--run-dir", str(run_dir), "--no-report"]) == 1
    assert fake_stages.calls == []


def test_the_params_file_typed_from_another_directory_opens_the_same_run(fake_stages, runs_in, monkeypatch):
    assert runner.main(["params/smoke.yaml", "--no-report"]) == 0
    monkeypatch.chdir(PROJECT_ROOT / "notebooks")
    assert runner.main(["../params/smoke.yaml", "--no-report"]) == 0
    assert json.loads((runs_in / "smoke" / "run.json").read_text())["params_file"] == "params/smoke.yaml"


def test_publish_refuses_overridden_params(capsys):
    with pytest.raises(SystemExit) as stopped:
        runner.main(["params/smoke.yaml", "--publish", "--set", "train.epochs=3"])
    assert stopped.value.code == 2
    assert "--publish copies the results of the params file as it is" in capsys.readouterr().err


def test_missing_fashion_mnist_stops_the_run_before_any_kernel_starts(fake_stages, tmp_path, monkeypatch, capsys):
    from sedlib.data import get_fashion_mnist

    monkeypatch.delenv("SED_DATA", raising=False)
    monkeypatch.setattr(get_fashion_mnist, "_CHECKOUT", tmp_path / "project")
    monkeypatch.setattr(get_fashion_mnist, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    code = runner.main(["params/smoke.yaml", "--run-dir", str(tmp_path / "run"), "--no-report"])
    assert code == 1 and fake_stages.calls == []
    message = capsys.readouterr().err
    assert "[01_cache] cannot run: the Fashion-MNIST files were not found" in message
    assert "sudo apt-get install dataset-fashion-mnist" in message and "Traceback" not in message


@pytest.mark.parametrize("before", [None, "widgets"])
def test_kernels_get_text_bars_and_the_runner_process_keeps_its_own_setting(monkeypatch, before):
    from sedlib import progress

    if before is None:
        monkeypatch.delenv(progress.ENVIRONMENT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(progress.ENVIRONMENT_VARIABLE, before)
    with runner._text_progress():
        assert os.environ[progress.ENVIRONMENT_VARIABLE] == "text"
    assert os.environ.get(progress.ENVIRONMENT_VARIABLE) == before


def test_a_variant_gets_its_own_directory_takes_over_what_it_can_and_leaves_the_run_as_it_was(
    fake_stages, runs_in, capsys
):
    runner.run_study("params/smoke.yaml", report=False)
    canonical = runs_in / "smoke"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in canonical.rglob("*") if p.is_file()}
    fake_stages.calls.clear()
    capsys.readouterr()
    overrides = {"models": {"sed_a2d": {"kappa": 2.0}}}
    run = runner.run_study("params/smoke.yaml", overrides=overrides, report=False)
    assert run.root == runs_in / "smoke+models.sed_a2d.kappa=2.0"
    assert fake_stages.calls == ["02_train_a2d", "03_eval_ood_gen", "04_eval_ood_det", "05_tables"]
    assert lines(capsys)[0] == f"[01_cache] skipped: taken over from {canonical} (the same code, settings and inputs)"
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in canonical.rglob("*") if p.is_file()} == before
    feature = "features/test.h5"
    assert (run.root / feature).stat().st_ino == (canonical / feature).stat().st_ino  # a hard link, not a copy
    assert run.verified(feature).read_bytes() == (canonical / feature).read_bytes()
    model = "models/sed_a2d.safetensors"
    assert (run.root / model).read_text() != (canonical / model).read_text()  # retrained here, there as it was
    assert json.loads((run.root / "run.json").read_text())["base"] == "smoke"
    assert run.command() == "python -m sedlib.run params/smoke.yaml --set models.sed_a2d.kappa=2.0"
    fake_stages.calls.clear()
    runner.run_study("params/smoke.yaml", overrides=overrides, report=False)
    assert fake_stages.calls == []


def test_overrides_into_the_params_files_own_run_directory_are_refused(fake_stages, runs_in):
    from sedlib.rundir.directory import RunDirError

    with pytest.raises(RunDirError, match=r"goes to its own directory, runs/smoke\+train.epochs=3"):
        runner.run_study("params/smoke.yaml", overrides={"train": {"epochs": 3}}, run_dir=str(runs_in / "smoke"))
    assert fake_stages.calls == [] and not runs_in.exists()


def test_command_line_paths_are_taken_from_the_working_directory(fake_stages, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(PROJECT_ROOT / "notebooks")
    assert runner.main(["../params/smoke.yaml", "--run-dir", os.path.relpath(tmp_path / "x"), "--no-report"]) == 0
    assert (tmp_path / "x" / "stages" / "05_tables.json").is_file()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert runner.main(["params/smoke.yaml", "--run-dir", "y", "--no-report"]) == 1
    assert capsys.readouterr().err.startswith("error: params file params/smoke.yaml not found from the working dir")
    assert not (tmp_path / "y").exists()


def test_a_run_directory_is_not_created_for_a_run_that_cannot_start(fake_stages, tmp_path, capsys):
    params = str(PROJECT_ROOT / "params" / "smoke.yaml")
    assert runner.main([params, "--run-dir", str(tmp_path / "new"), "--stages", "03_eval_ood_gen"]) == 1
    assert "cannot run: it reads" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
