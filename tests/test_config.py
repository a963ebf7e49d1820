import dataclasses

import pytest
import yaml

from sedlib.config import PROJECT_ROOT, ConfigError, RunConfig, load_config, merge, resolve_path
from sedlib.metrics import CORRUPTIONS
from sedlib.published import AUGMENTATION_PASSES, PUBLISHED

MINIMAL = {"run_name": "t", "models": {"de": {"num_members": 3, "lam": 0.0}}}


def write(tmp_path, values):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_project_params_files_load():
    for name in ("default", "smoke", "full_cpu", "imagenet_deit3b", "imagenet_deit3b_standard", "smoke_imagenet"):
        config = load_config(f"params/{name}.yaml")
        assert config.run_name == name
        assert config.eval.reference_model in config.models
        assert all(spec.num_members >= 2 or spec.train.schedule == "independent" for spec in config.models.values())


def test_imagenet_params_hold_the_published_runs_exactly():
    config = load_config("params/imagenet_deit3b.yaml")
    assert (config.protocol, config.data.dataset, config.data.val_rows) == ("faithful", "imagenet", 0)
    assert config.data.ood_sets == ("inaturalist", "openimage_o")
    assert config.data.subset_sets == ("imagenet_a", "imagenet_r")
    assert config.cache.augmentation_passes == AUGMENTATION_PASSES
    assert list(config.cache.augmentation_scale) == [0.08, 1.0]
    for name, run in PUBLISHED.items():
        spec = config.models[name]
        assert spec.num_members == run.heads.num_members
        # the validation batch is a speed setting, not a hyperparameter of the run
        assert dataclasses.replace(spec.train, eval_batch_size=run.train.eval_batch_size) == run.train, name
        assert config.head.hidden_dim == run.heads.hidden_dim
    ours = [name for name in config.models if name not in PUBLISHED]
    assert ours and all("(ours)" in config.models[name].label for name in ours)
    assert all(config.models[name].train.kappa > 0 for name in ours)
    assert config.evaluated_models() == {"pretrained_head": "deit3_base pretrained head"} | {
        name: spec.label for name, spec in config.models.items()
    }


def test_standard_variant_extends_the_faithful_file():
    faithful = load_config("params/imagenet_deit3b.yaml").to_dict()
    standard = load_config("params/imagenet_deit3b_standard.yaml").to_dict()
    assert (standard["protocol"], standard["data"]["val_rows"]) == ("standard", 10000)
    differs = {key for key in faithful if faithful[key] != standard[key]}
    assert differs == {"run_name", "description", "protocol", "data"}
    assert {k for k in faithful["data"] if faithful["data"][k] != standard["data"][k]} == {"val_rows"}


def test_extends_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="c.yaml: extends 'missing.yaml'"):
        load_config(tmp_path / "c.yaml")


def test_imagenet_dataset_folders_resolve_under_root(tmp_path, monkeypatch):
    config = RunConfig.from_dict({**MINIMAL, "data": {"dataset": "imagenet", "root": str(tmp_path)}})
    assert config.data.folder("imagenet_a") == tmp_path / "imagenet-a"
    own = RunConfig.from_dict(
        {**MINIMAL, "data": {"dataset": "imagenet", "root": str(tmp_path), "inaturalist_dir": "elsewhere/inat"}}
    )
    assert own.data.folder("inaturalist") == tmp_path / "elsewhere" / "inat"
    monkeypatch.setenv("SED_DATA", str(tmp_path / "shared"))
    default_root = RunConfig.from_dict({**MINIMAL, "data": {"dataset": "imagenet"}})
    assert default_root.data.folder("imagenet") == tmp_path / "shared" / "imagenet"


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
        ({"protocol": "paper"}, "protocol must be one of"),
        ({"data": {"dataset": "cifar"}}, "dataset must be one of"),
        ({"data": {"ood_sets": ["inaturalist"]}}, "unknown OOD set(s) ['inaturalist'] for dataset fashion_mnist"),
        ({"data": {"subset_sets": ["imagenet_a"]}}, "unknown subset set(s) ['imagenet_a']"),
        ({"data": {"val_rows": 0}}, "standard protocol does not allow"),
        ({"head": {"init": "zeros"}}, "init must be one of"),
        ({"models": {"pretrained_head": {"num_members": 2}}}, "reserved for eval.pretrained_head"),
        (
            {"models": {"de": {"num_members": 3, "disagreement_data": "unlabelled", "hardness": False}}},
            "set data.disagreement_set",
        ),
        ({"data": {"disagreement_set": "imagenet_r"}}, "disagreement_set must be one of"),
        ({"seeds": [2, -1]}, "seeds must be distinct non-negative integers"),
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


SWEEP_BASE = {
    "run_name": "s",
    "train": {"kappa": 0.5},
    "models": {
        "de": {"label": "DE", "num_members": 4, "lam": 0.0},
        "sed": {"label": "SED", "num_members": 4, "lam": 0.5},
    },
}


def test_sweeps_reuse_models_with_the_same_settings_and_add_the_others():
    sweeps = {"lam": {"model": "sed", "values": [0, 0.5, 0.8]}, "num_members": {"model": "sed", "values": [2, 4]}}
    config = RunConfig.from_dict({**SWEEP_BASE, "sweeps": sweeps})
    assert config.sweeps["lam"].points == ("de", "sed", "sed-lam0.8")  # lam 0 with everything else equal is "de"
    assert config.sweeps["num_members"].points == ("sed-M2", "sed")
    assert config.models["sed-lam0.8"].train.lam == 0.8 and config.models["sed-lam0.8"].num_members == 4
    assert config.models["sed-M2"].num_members == 2 and config.models["sed-M2"].train == config.models["sed"].train
    assert config.models["sed-lam0.8"].label == "SED (λ 0.8)"
    assert config.sweep_models == ("sed-lam0.8", "sed-M2")
    assert config.main_models() == ["de", "sed"]
    assert [run.name for run in config.model_runs()] == ["de", "sed", "sed-lam0.8", "sed-M2"]
    again = RunConfig.from_dict(config.to_dict(), source="resolved")
    assert again.sweeps == config.sweeps and again.sweep_models == config.sweep_models


@pytest.mark.parametrize(
    "sweeps, fragment",
    [
        ({"lam": {"model": "nope", "values": [0.1]}}, r"sweeps.lam.model: 'nope' is not one of the models"),
        ({"batch_size": {"model": "sed", "values": [8]}}, r"sweeps.batch_size: cannot sweep 'batch_size'"),
        ({"lam": {"model": "sed", "values": [0.1, 0.1]}}, r"sweeps.lam.values must be distinct"),
        ({"lam": {"model": "sed", "values": []}}, r"sweeps.lam.values must be a non-empty list"),
        ({"lam": {"model": "sed", "values": [1.5]}}, r"sweeps.lam: lam 1.5: .*lam must lie in \[0, 1\]"),
        ({"lam": {"values": [0.1]}}, r"sweeps.lam: expected the keys 'model' and 'values'"),
        ({"num_members": {"model": "sed", "values": [2.5]}}, r"sweeps.num_members.values\[0\]: expected int"),
    ],
)
def test_bad_sweeps_name_the_key(sweeps, fragment):
    with pytest.raises(ConfigError, match=fragment):
        RunConfig.from_dict({**SWEEP_BASE, "sweeps": sweeps})


def test_per_member_lists_must_match_the_members():
    values = {**SWEEP_BASE, "models": {"de": {"num_members": 3, "schedule": "independent", "lam": 0.0,
                                              "member_lr": [1e-3, 2e-3]}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"models.de: TrainConfig.member_lr gives 2 values for 3 members"):
        RunConfig.from_dict(values)


def test_full_cpu_turns_the_default_sweeps_off():
    assert load_config("params/default.yaml").sweeps and not load_config("params/full_cpu.yaml").sweeps
