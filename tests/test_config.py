import pytest
import yaml

from sedlib.config import PROJECT_ROOT, ConfigError, RunConfig, load_config, merge, resolve_path
from sedlib.metrics import CORRUPTIONS

MINIMAL = {"run_name": "t", "models": {"de": {"num_members": 3, "lam": 0.0}}}


def write(tmp_path, values):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_project_params_files_load():
    for name in ("default", "smoke"):
        config = load_config(f"params/{name}.yaml")
        assert config.run_name == name
        assert config.eval.reference_model in config.models
        assert all(spec.num_members >= 2 for spec in config.models.values())


def test_defaults_fill_in_and_models_inherit_train_section():
    config = RunConfig.from_dict({**MINIMAL, "train": {"batch_size": 64, "lr": 0.01}})
    spec = config.models["de"]
    assert (spec.train.batch_size, spec.train.lr, spec.train.lam) == (64, 0.01, 0.0)
    assert spec.label == "de"
    assert config.data.corruptions == CORRUPTIONS
    assert config.eval.reference_model == "de"  # the first model by default
    assert config.cache.image_size == 48


def test_model_entry_overrides_train_defaults():
    values = merge(MINIMAL, {"train": {"lam": 0.3}, "models": {"sed": {"num_members": 2, "lam": 0.7}}})
    config = RunConfig.from_dict(values)
    assert config.models["de"].train.lam == 0.0
    assert config.models["sed"].train.lam == 0.7


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"data": {"trian_rows": 5}}, "data: unknown key(s) ['trian_rows']"),
        ({"colour": 1}, "unknown top-level key(s) ['colour']"),
        ({"data": {"train_rows": "many"}}, "data.train_rows: expected int"),
        ({"data": {"val_rows": True}}, "data.val_rows: expected int"),
        ({"cache": {"dtype": "int8"}}, "cache: dtype must be"),
        ({"data": {"corruptions": ["rain"]}}, "unknown corruption(s) ['rain']"),
        ({"data": {"severities": [6]}}, "severities must lie in 1..5"),
        ({"models": {"de": {"num_members": 3, "lamda": 0.1}}}, "models.de: unknown key(s) ['lamda']"),
        ({"models": {"de": {"num_members": 3, "lam": "high"}}}, "models.de.lam: expected float"),
        ({"models": {"de": {"num_members": 3, "schedule": "random"}}}, "schedule must be one of"),
        ({"train": {"epochs": 0}}, "epochs must be a positive integer"),
        ({"eval": {"reference_model": "nope"}}, "eval.reference_model 'nope'"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path, values, fragment):
    path = write(tmp_path, merge(MINIMAL, values))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert fragment in str(error.value)
    assert str(path) in str(error.value)


def test_missing_run_name_and_models(tmp_path):
    with pytest.raises(ConfigError, match="missing key 'run_name'"):
        RunConfig.from_dict({"models": MINIMAL["models"]})
    with pytest.raises(ConfigError, match="models.de: missing key 'num_members'"):
        RunConfig.from_dict({"run_name": "x", "models": {"de": {"lam": 0.1}}})
    with pytest.raises(ConfigError, match="at least one ensemble"):
        RunConfig.from_dict({"run_name": "x"})
    with pytest.raises(ConfigError, match="run_name must be"):
        RunConfig.from_dict({**MINIMAL, "run_name": "../escape"})


def test_missing_file_lists_available_params(tmp_path):
    with pytest.raises(FileNotFoundError, match="default.yaml"):
        load_config("params/nope.yaml")


def test_overrides_merge_deeply():
    config = load_config("params/smoke.yaml", {"train": {"epochs": 2}, "models": {"sed_a2d": {"kappa": 3.0}}})
    assert config.models["sed_a2d"].train.epochs == 2
    assert config.models["sed_a2d"].train.kappa == 3.0
    assert config.models["sed_a2d"].train.lam == 0.5  # untouched sibling keys survive


def test_to_dict_round_trips_and_sections_change_independently():
    config = load_config("params/smoke.yaml")
    again = RunConfig.from_dict(config.to_dict(), source="resolved")
    assert again.to_dict() == config.to_dict()
    changed = RunConfig.from_dict(merge(config.to_dict(), {"models": {"sed_a2d": {"lr": 0.5}}}))
    assert {key: changed.to_dict()[key] for key in ("data", "cache")} == {
        key: config.to_dict()[key] for key in ("data", "cache")
    }
    assert changed.to_dict()["models"] != config.to_dict()["models"]


def test_relative_paths_resolve_against_the_project_root(tmp_path):
    assert resolve_path("params/default.yaml") == PROJECT_ROOT / "params" / "default.yaml"
    assert resolve_path(tmp_path) == tmp_path
