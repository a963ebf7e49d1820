import json

import pytest

from sedlib import run as runner
from sedlib.config import load_config
from sedlib.rundir import RunDir


def test_parse_overrides_builds_nested_yaml_values():
    assert runner.parse_overrides(["train.epochs=3", "models.sed_a2d.kappa=2.5", "data.corruptions=[fog]"]) == {
        "train": {"epochs": 3},
        "models": {"sed_a2d": {"kappa": 2.5}},
        "data": {"corruptions": ["fog"]},
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        runner.parse_overrides(["epochs"])


@pytest.fixture
def fake_stages(monkeypatch, tmp_path):
    """Replace notebook execution by a function that writes one output file per stage."""
    calls = []

    def execute(stage, config, run, params_file, overrides, verbose):
        calls.append(stage.name)
        run.notebooks.mkdir(exist_ok=True)
        (run.notebooks / f"{stage.name}.ipynb").write_text(json.dumps({"stage": stage.name, "overrides": overrides}))
        if stage.name == "01_cache":
            (run.features / "test.h5").write_text("features")

    monkeypatch.setattr(runner, "execute_stage", execute)
    return calls


def test_unchanged_stages_are_skipped_and_changes_propagate(fake_stages, tmp_path):
    run_dir = tmp_path / "run"
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), report=False)
    assert fake_stages == [stage.name for stage in runner.STAGES]
    fake_stages.clear()
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), report=False)
    assert fake_stages == []
    # a changed upstream output reruns its stage and, through the upstream hashes, nothing else yet:
    (run_dir / "features" / "test.h5").write_text("tampered")
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), report=False)
    assert fake_stages == ["01_cache"]  # the fake rewrites the same content, so downstream stays valid
    fake_stages.clear()
    # a changed training parameter reruns training and everything after it, not the cache
    overrides = {"models": {"sed_a2d": {"kappa": 2.0}}}
    runner.run_study("params/smoke.yaml", overrides=overrides, run_dir=str(run_dir), report=False)
    assert fake_stages == ["02_train_a2d", "03_eval_ood_gen", "04_eval_ood_det", "05_tables"]
    fake_stages.clear()
    # an evaluation setting reruns the evaluation stages only
    overrides["eval"] = {"batch_size": 7}
    runner.run_study("params/smoke.yaml", overrides=overrides, run_dir=str(run_dir), report=False)
    assert fake_stages == ["03_eval_ood_gen", "04_eval_ood_det", "05_tables"]


def test_only_the_chosen_stages_run_and_force_reruns(fake_stages, tmp_path):
    run_dir = str(tmp_path / "run")
    runner.run_study("params/smoke.yaml", stages=["01_cache"], run_dir=run_dir, report=False)
    assert fake_stages == ["01_cache"]
    runner.run_study("params/smoke.yaml", stages=["01_cache"], run_dir=run_dir, report=False, force=True)
    assert fake_stages == ["01_cache", "01_cache"]
    with pytest.raises(ValueError, match="unknown stage"):
        runner.run_study("params/smoke.yaml", stages=["06_extra"], run_dir=run_dir, report=False)


def test_failed_stage_names_the_executed_notebook(monkeypatch, tmp_path):
    def execute(stage, *args):
        raise RuntimeError("cell 3 raised\nValueError: bad features")

    monkeypatch.setattr(runner, "execute_stage", execute)
    with pytest.raises(RuntimeError, match=r"\[01_cache\] failed.*bad features") as error:
        runner.run_study("params/smoke.yaml", run_dir=str(tmp_path / "run"), report=False)
    assert "01_cache.ipynb" in str(error.value)
    assert not (tmp_path / "run" / "stages" / "01_cache.json").exists()


def test_main_reports_bad_params_without_a_traceback(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_name: x\nmodels: {de: {num_members: 2}}\ndata: {trian_rows: 3}\n")
    assert runner.main([str(bad), "--no-report"]) == 1
    assert "unknown key(s) ['trian_rows']" in capsys.readouterr().err


def test_run_directory_of_another_params_file_is_refused(fake_stages, tmp_path):
    run_dir = tmp_path / "run"
    RunDir.open(load_config("params/default.yaml"), run_dir)
    assert runner.main(["params/smoke.yaml", "--run-dir", str(run_dir), "--no-report"]) == 1
    assert fake_stages == []
