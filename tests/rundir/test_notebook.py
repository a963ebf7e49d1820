import pytest

from sedlib.config import ConfigError
from sedlib.rundir import directory as rundir
from sedlib.rundir import notebook


@pytest.fixture
def runs_in(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def test_overrides_as_papermill_passes_them_open_the_variant_and_say_where(runs_in, capsys):
    config, run = notebook.open_stage("params/smoke.yaml", "", '{"train": {"epochs": 3}}', {})
    assert config.to_dict()["train"]["epochs"] == 3 and run.root == runs_in / "smoke+train.epochs=3"
    assert capsys.readouterr().out == f"run directory: {run.root} (a variant of params/smoke.yaml with overrides)\n"
    config, run = notebook.open_stage("params/smoke.yaml", None, {}, {})
    assert run.root == runs_in / "smoke"


def test_papermill_f_is_refused_naming_the_parameter_to_use(runs_in):
    passed = {"run_name": "smoke", "data": {}, "params_file": "params/default.yaml"}
    with pytest.raises(ConfigError, match=r"-p params_file params/<study>.yaml") as error:
        notebook.open_stage("params/default.yaml", "", {}, passed)
    assert "papermill -f" in str(error.value) and not runs_in.exists()


def test_overrides_that_are_not_a_mapping_are_refused():
    with pytest.raises(ConfigError, match="overrides: expected a mapping"):
        notebook.open_stage("params/smoke.yaml", "", "[1, 2]", {})
    with pytest.raises(ConfigError, match="overrides: not valid YAML"):
        notebook.open_stage("params/smoke.yaml", "", "{train: [", {})
