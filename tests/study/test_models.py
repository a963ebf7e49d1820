import json
import shutil

import pandas as pd
import pytest
import torch

from sedlib.config import load_config
from sedlib.rundir.directory import RunDir
from sedlib.study import models as training


def test_training_record_names_settings_features_and_code():
    config = load_config("params/smoke.yaml")
    spec = config.models["sed_a2d"]
    heads = training.head_config(config, spec, feature_dim=16, num_classes=10)
    record = training._training_record(config, spec, heads, "train-hash", "val-hash", curves=True)
    assert record["features"] == {"train": "train-hash", "val": "val-hash"}
    assert record["code"] == training.training_code_hash() and record["validated_every_epoch"] is True
    assert record["train"]["kappa"] == spec.train.kappa and record["heads"]["hidden_dim"] == 32
    assert json.loads(json.dumps(record)) == record


def test_worker_count_follows_the_cores_the_replicas_and_the_work(monkeypatch):
    monkeypatch.setattr(training, "cpu_cores", lambda: 4)
    enough = training.PARALLEL_MIN_STEPS
    assert training.training_workers(torch.device("cpu"), 9, enough) == 4
    assert training.training_workers(torch.device("cpu"), 3, enough) == 3
    assert training.training_workers(torch.device("cpu"), 0, enough) == 1
    assert training.training_workers(torch.device("cpu"), 9, enough - 1) == 1
    assert training.training_workers(torch.device("cuda"), 9, enough) == 1


@pytest.mark.e2e
def test_models_trained_one_per_core_equal_those_trained_one_after_the_other(smoke_run, tmp_path, monkeypatch, capsys):
    """Every model of the smoke run trained again, shared out over the cores, gives the same bytes; a damaged
    model among them is trained again, never reused, and the line printed says why."""
    config = load_config("params/smoke.yaml")
    monkeypatch.setattr(training, "PARALLEL_MIN_STEPS", 0)  # the smoke study is small enough to train in-process
    assert training.training_workers(torch.device("cpu"), len(config.model_runs()), 1) > 1, "needs two cores"
    target = tmp_path / "run"
    shutil.copytree(smoke_run.root, target)
    damaged = target / "models" / "deep_ensemble.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    for path in (target / "models").iterdir():
        if path.name.split(".")[0].removesuffix("_log").removesuffix("_train") != "deep_ensemble":
            path.unlink()  # every other model is trained afresh
    capsys.readouterr()
    training.train_models(config, RunDir(target), progress=False)
    assert "deep_ensemble: training Deep ensemble (M=3, iid pairs): models/deep_ensemble.safetensors changed since" in (
        capsys.readouterr().out
    )
    drawn = {model_run.name for model_run in config.first_replicas()}
    for model_run in config.model_runs():
        name = model_run.name
        model = f"models/{name}.safetensors"
        assert (target / model).read_bytes() == (smoke_run.root / model).read_bytes(), name
        timings = ["seconds", "steps_seconds"]
        log = pd.read_csv(target / f"models/{name}_log.csv").drop(columns=timings)
        assert log.equals(pd.read_csv(smoke_run.root / f"models/{name}_log.csv").drop(columns=timings)), name
        validated = log["val_acc_ensemble"].notna()
        assert validated.iloc[-1] and validated.all() == (name in drawn), name


def test_step_cost_uses_the_swept_model_else_the_first_diverse_pair_model():
    assert training.step_cost_model(load_config("params/smoke.yaml")) == "sed_a2d"  # its num_members sweep
    full = load_config("params/full_cpu.yaml")  # no sweeps: deep_ensemble (lam 0) comes first
    assert not full.sweeps and training.step_cost_model(full) == "sed_a2d"
    only_baselines = load_config("params/smoke.yaml", {"sweeps": None, "models": {"sed_a2d": {"lam": 0.0}}})
    assert training.step_cost_model(only_baselines) == "deep_ensemble"
