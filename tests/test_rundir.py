import json

import pytest
import yaml

from sedlib.config import RunConfig
from sedlib.rundir import RunDir, RunDirError

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
