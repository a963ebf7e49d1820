import dataclasses

import pytest
import yaml

from sedlib.config import (
    CORRUPTIONS,
    PROJECT_ROOT,
    ConfigError,
    ParamsDumper,
    RunConfig,
    TrainConfig,
    load_config,
    merge,
    parse_overrides,
    read_yaml,
    resolve_path,
)
from sedlib.config import main as config_main
from sedlib.data.imagenet import dataset_folder
from sedlib.method.published import AUGMENTATION_PASSES, PUBLISHED

MINIMAL = {"run_name": "t", "models": {"de": {"num_members": 3, "lam": 0.0}}}
TRAIN_KEYS = [item.name for item in dataclasses.fields(TrainConfig)]


def write(tmp_path, values):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.dump(values, Dumper=ParamsDumper))
    return path


def refused(tmp_path, values) -> tuple:
    """Write ``values`` as a params file and load it; returns the file and the `ConfigError` it raises."""
    path = write(tmp_path, values)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    return path, error.value


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
    assert dataset_folder(config.data, "imagenet_a") == tmp_path / "imagenet-a"
    own = RunConfig.from_dict(
        {**MINIMAL, "data": {"dataset": "imagenet", "root": str(tmp_path), "inaturalist_dir": "elsewhere/inat"}}
    )
    assert dataset_folder(own.data, "inaturalist") == tmp_path / "elsewhere" / "inat"
    monkeypatch.setenv("SED_DATA", str(tmp_path / "shared"))
    default_root = RunConfig.from_dict({**MINIMAL, "data": {"dataset": "imagenet"}})
    assert dataset_folder(default_root.data, "imagenet") == tmp_path / "shared" / "imagenet"


def test_defaults_fill_in_and_models_inherit_train_section():
    config = RunConfig.from_dict({**MINIMAL, "train": {"batch_size": 64, "lr": 0.01}})
    spec = config.models["de"]
    assert (spec.train.batch_size, spec.train.lr, spec.train.lam) == (64, 0.01, 0.0)
    assert spec.label == "de"
    assert config.data.corruptions == CORRUPTIONS
    assert config.eval.reference_model == "de"  # the first model by default
    assert config.cache.image_size == 48


def test_own_data_keys_and_a_timm_backbone():
    data = {"dataset": "folder", "train_path": "my/train", "test_path": "my/test", "ood_paths": {"far": "my/far"}}
    config = RunConfig.from_dict({**MINIMAL, "data": data, "cache": {"backbone": "timm:resnet18"}})
    assert config.data.ood_sets == ("far",) and not config.data.val_path and config.data.val_held_out
    assert config.data.severities == (1, 5)  # folder images are corrupted like the embedded study's
    assert config.cache.image_size is None  # the model's own pretrained input size, resolved in stage 01
    features = RunConfig.from_dict({**MINIMAL, "data": {**data, "dataset": "features", "val_path": "my/val.npz"}})
    assert features.data.severities == () and not features.data.val_held_out  # no images to corrupt
    assert RunConfig.from_dict({**MINIMAL, "cache": {"image_size": None}}).cache.image_size == 48


def test_model_entry_overrides_train_defaults():
    values = merge(MINIMAL, {"train": {"lam": 0.3}, "models": {"sed": {"num_members": 2, "lam": 0.7}}})
    config = RunConfig.from_dict(values)
    assert config.models["de"].train.lam == 0.0
    assert config.models["sed"].train.lam == 0.7


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"data": {"train_rows": "many"}}, "data.train_rows: expected an integer, got 'many'"),
        ({"data": {"val_rows": True}}, "data.val_rows: expected an integer, got True"),
        ({"cache": {"dtype": "int8"}}, "cache.dtype: must be 'float16' or 'float32', got 'int8'"),
        ({"data": {"severities": [6]}}, "data.severities[0]: must lie in [1, 5], got 6"),
        ({"models": {"de": {"num_members": 3, "lam": "high"}}}, "models.de.lam: expected a number, got 'high'"),
        (
            {"models": {"de": {"num_members": 3, "schedule": "random"}}},
            "models.de.schedule: must be 'iid', 'matching', 'all' or 'independent', got 'random'",
        ),
        ({"train": {"epochs": 0}}, "train.epochs: must be >= 1, got 0"),
        ({"eval": {"reference_model": "nope"}}, "eval.reference_model: 'nope' is not one of the models ['de']"),
        ({"device": "tpu"}, "device: must be 'cpu', 'cuda' or 'auto', got 'tpu'"),
        ({"protocol": "paper"}, "protocol: must be 'faithful' or 'standard', got 'paper'"),
        (
            {"data": {"dataset": "cifar"}},
            "data.dataset: must be 'fashion_mnist', 'imagenet', 'folder' or 'features', got 'cifar'",
        ),
        (
            {"data": {"dataset": "folder", "test_path": "t"}},
            "data.train_path: is needed with dataset folder: an image folder with one sub-folder per class",
        ),
        (
            {"data": {"dataset": "features", "train_path": "a.npz"}},
            "data.test_path: is needed with dataset features: a feature file",
        ),
        (
            {"data": {"val_path": "v"}},
            "data.val_path: is for data.dataset folder or features, not fashion_mnist; remove it",
        ),
        (
            {
                "data": {
                    "dataset": "folder",
                    "train_path": "a",
                    "test_path": "b",
                    "ood_paths": {"far": "c"},
                    "ood_sets": ["near"],
                }
            },
            "data.ood_sets: unknown OOD set(s) ['near'] for dataset folder; choose from ['far']",
        ),  # fmt: skip
        (
            {"data": {"dataset": "folder", "train_path": "a", "test_path": "b", "ood_paths": {"far": ""}}},
            "data.ood_paths: needs a name and a path per set, got 'far'",
        ),
        ({"cache": {"backbone": "timm:"}}, "cache.backbone: needs a timm model name after 'timm:'"),
        (
            {"data": {"ood_sets": ["inaturalist"]}},
            "data.ood_sets: unknown OOD set(s) ['inaturalist'] for dataset fashion_mnist; choose from "
            "['animal_mnist', 'digits']",
        ),
        (
            {"data": {"subset_sets": ["imagenet_a"]}},
            "data.subset_sets: unknown subset set(s) ['imagenet_a'] for dataset fashion_mnist; choose from []",
        ),
        (
            {"data": {"val_rows": 0}},
            "data.val_rows: is 0 (validate on the test split, as the published code does), which the standard "
            "protocol does not allow; hold out validation rows (e.g. data.val_rows: 10000) or set protocol: faithful",
        ),
        ({"head": {"init": "zeros"}}, "head.init: must be 'random' or 'pretrained', got 'zeros'"),
        (
            {"models": {"pretrained_head": {"num_members": 2}}},
            "models.pretrained_head: the name is reserved for eval.pretrained_head; rename the model",
        ),
        (
            {"models": {"de": {"num_members": 3, "disagreement_data": "unlabelled", "hardness": False}}},
            "data.disagreement_set: is empty, but models ['de'] disagree on unlabelled data (disagreement_data: "
            "unlabelled); set it to the set they use",
        ),
        (
            {"data": {"disagreement_set": "imagenet_r"}},
            "data.disagreement_set: must be one of ['animal_mnist', 'digits'] (or empty), got 'imagenet_r'",
        ),
        ({"seeds": [2, -1]}, "seeds[1]: must be >= 0, got -1"),
        ({"seeds": [2, 2]}, "seeds: the seeds must be distinct non-negative integers, got [2, 2]"),
        (
            {"cache": {"backbone": "resnet"}},
            "cache.backbone: must be one of ['efficientnet_lite0', 'deit3_base'] or timm:<model name> (any timm model, "
            "e.g. timm:resnet18), got 'resnet'",
        ),
        (
            {"eval": {"pretrained_head": True}},
            "eval.pretrained_head: needs a backbone with a pretrained head of the SED head's form (deit3_base); "
            "cache.backbone is 'efficientnet_lite0'",
        ),
        (
            {"cache": {"backbone": "deit3_base"}, "head": {"init": "pretrained"}},
            "head.hidden_dim: must be 3072 with head.init: pretrained (the hidden width of deit3_base's head), got 512",
        ),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path, values, message):
    path, error = refused(tmp_path, merge(MINIMAL, values))
    assert str(error) == f"{path}: {message}"
    assert error.problems == [message]


@pytest.mark.parametrize(
    ("values", "start"),
    [
        ({"data": {"trian_rows": 5}}, "data: unknown key(s) ['trian_rows']; known keys are ['dataset', 'train_rows', "),
        ({"colour": 1}, "unknown top-level key(s) ['colour']; known keys are ['run_name', 'description', "),
        (
            {"models": {"de": {"num_members": 3, "lamda": 0.1}}},
            "models.de: unknown key(s) ['lamda']; known keys are ['label', 'num_members', 'schedule', ",
        ),
        ({"data": {"corruptions": ["rain"]}}, "data.corruptions[0]: must be 'gaussian_noise', 'shot_noise', "),
    ],
)
def test_unknown_keys_and_names_list_the_known_ones(tmp_path, values, start):
    path, error = refused(tmp_path, merge(MINIMAL, values))
    assert str(error).startswith(f"{path}: {start}")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train": 3}, "train: expected a mapping of keys to values, got 3"),
        ({"head": [1]}, "head: expected a mapping of keys to values, got [1]"),
        ({"models": ["a"]}, "models: expected a mapping of keys to values, got ['a']"),
        ({"models": {"de": 3}}, "models.de: expected a mapping of keys to values, got 3"),
        ({"models": {"de": None}}, "models.de: expected a mapping of keys to values, got None"),
        ({"sweeps": {"lam": 0.5}}, "sweeps.lam: expected a mapping of keys to values, got 0.5"),
        ({"sweeps": [1]}, "sweeps: expected a mapping of keys to values, got [1]"),
        ({"sweeps": {"lam": {"model": "de", "values": 0.5}}}, "sweeps.lam.values: expected a list, got 0.5"),
        ({"data": {"corruptions": "fog"}}, "data.corruptions: expected a list, got 'fog'"),
        ({"cache": {"augmentation_scale": [0.5]}}, "cache.augmentation_scale: must hold 2 values, got [0.5]"),
        ({"train": {"betas": [0.9, 0.99, 0.9]}}, "train.betas: must hold at most 2 values, got [0.9, 0.99, 0.9]"),
        ({"models": {1: {"num_members": 2}}}, "models: the name 1 must be a string"),
    ],
)
def test_shape_mistakes_are_config_errors_naming_the_key(tmp_path, values, message):
    path, error = refused(tmp_path, merge(MINIMAL, values))
    assert str(error) == f"{path}: {message}"


def test_a_set_section_given_a_scalar_names_the_section():
    with pytest.raises(ConfigError) as error:
        load_config("params/smoke.yaml", parse_overrides(["train=3"]))
    assert str(error.value) == "params/smoke.yaml: train: expected a mapping of keys to values, got 3"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"eval": {"batch_size": 0}}, "eval.batch_size: must be >= 1, got 0"),
        ({"eval": {"bootstrap_resamples": 50}}, "eval.bootstrap_resamples: must lie in [100, 100000], got 50"),
        ({"eval": {"margins": {"auroc": 2}}}, "eval.margins.auroc: must lie in [0, 1], got 2.0"),
        ({"eval": {"margins": {"pds": -0.1}}}, "eval.margins.pds: must be >= 0, got -0.1"),
        ({"head": {"hidden_dim": -5}}, "head.hidden_dim: must be >= 1, got -5"),
        ({"head": {"hidden_dim": 0}}, "head.hidden_dim: must be >= 1, got 0"),
        ({"head": {"norm_eps": 0.0}}, "head.norm_eps: must be > 0, got 0.0"),
        ({"data": {"train_rows": 0}}, "data.train_rows: must be >= 1, got 0"),
        ({"data": {"val_rows": -1}}, "data.val_rows: must be >= 0, got -1"),
        ({"data": {"ood_rows": 0}}, "data.ood_rows: must be >= 1, got 0"),
        ({"data": {"seed": -3}}, "data.seed: must be >= 0, got -3"),
        ({"cache": {"chunk_rows": -1}}, "cache.chunk_rows: must be >= 1, got -1"),
        ({"cache": {"batch_size": 0}}, "cache.batch_size: must be >= 1, got 0"),
        ({"cache": {"image_size": 28}}, "cache.image_size: must be >= 32, got 28"),
        ({"cache": {"loader_workers": -2}}, "cache.loader_workers: must be >= 0, got -2"),
        ({"cache": {"augmentation_scale": [0.0, 1.0]}}, "cache.augmentation_scale[0]: must lie in (0, 1], got 0.0"),
        (
            {"cache": {"augmentation_scale": [0.9, 0.5]}},
            "cache.augmentation_scale: must be [low, high] with low <= high, got [0.9, 0.5]",
        ),
        ({"eval": {"knn_k": 0}}, "eval.knn_k: must be >= 1, got 0"),
        ({"eval": {"knn_k": 10, "knn_train_rows": 5}}, "eval.knn_train_rows: must be >= knn_k (10) or null, got 5"),
        ({"models": {"de": {"num_members": 0}}}, "models.de.num_members: must be >= 1, got 0"),
        ({"train": {"eval_batch_size": 0}}, "train.eval_batch_size: must be >= 1, got 0"),
        ({"train": {"cosine_t_max": 0}}, "train.cosine_t_max: must be >= 1, got 0"),
        ({"train": {"seed": -1}}, "train.seed: must be >= 0, got -1"),
        ({"train": {"betas": [0.9, 1.0]}}, "train.betas[1]: must lie in [0, 1), got 1.0"),
        (
            {"models": {"de": {"num_members": 3, "member_lr": [1e-3, -1.0, 1e-3]}}},
            "models.de.member_lr[1]: must be >= 0, got -1.0",
        ),
        ({"head": {"layer_scale_init": float("inf")}}, "head.layer_scale_init: must be a finite number, got inf"),
    ],
)
def test_sizes_and_counts_are_checked_at_load_time(tmp_path, values, message):
    path, error = refused(tmp_path, merge(MINIMAL, values))
    assert str(error) == f"{path}: {message}"


def test_numbers_are_read_as_people_write_them(tmp_path):
    path = tmp_path / "numbers.yaml"
    path.write_text(
        "run_name: numbers\n"
        "train:\n  lr: 1e-3\n  weight_decay: 5e-4\n"
        "models:\n  de: {num_members: 2, lam: 0, kappa: 2.5E+0}\n"
        "eval:\n  knn_train_rows: 1e6\n"
    )
    config = load_config(path)
    train = config.models["de"].train
    assert (train.lr, train.weight_decay, train.kappa) == (1e-3, 5e-4, 2.5)
    assert type(train.lam) is float  # an int given for a float setting becomes a float
    assert config.eval.knn_train_rows == 1_000_000 and type(config.eval.knn_train_rows) is int
    assert config.train == {"lr": 1e-3, "weight_decay": 5e-4}
    more = tmp_path / "more.yaml"
    more.write_text("a: -2.5E+3\nb: 1_000\nc: 12\nd: '1e-3'\ne: 1.0e-4\nf: .5\ng: 1e\n")
    assert read_yaml(more) == {"a": -2500.0, "b": 1000, "c": 12, "d": "1e-3", "e": 1e-4, "f": 0.5, "g": "1e"}
    assert type(read_yaml(more)["c"]) is int
    assert read_yaml(write(tmp_path, {"label": "1e-3", "lr": 1e-3})) == {"label": "1e-3", "lr": 1e-3}


def test_an_integer_setting_refuses_a_fraction(tmp_path):
    path = tmp_path / "fraction.yaml"
    path.write_text("run_name: f\nmodels: {de: {num_members: 2, lam: 0}}\neval: {knn_train_rows: 2.5e3, knn_k: 1.5}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: eval.knn_k: expected an integer, got 1.5"  # knn_train_rows is 2500


def test_overrides_read_numbers_like_a_params_file():
    assert parse_overrides(["train.lr=1e-3", "models.sed_a2d.kappa=2", "data.corruptions=[fog]", "x.y=-2.5E+3"]) == {
        "train": {"lr": 0.001},
        "models": {"sed_a2d": {"kappa": 2}},
        "data": {"corruptions": ["fog"]},
        "x": {"y": -2500.0},
    }
    config = load_config("params/smoke.yaml", parse_overrides(["train.lr=1e-3", "eval.knn_train_rows=1e3"]))
    assert config.models["sed_a2d"].train.lr == 0.001 and config.eval.knn_train_rows == 1000
    assert parse_overrides(["train.lr=1", "train=3"]) == {"train": 3}  # the later assignment wins
    assert parse_overrides(["train=3", "train.lr=1"]) == {"train": {"lr": 1}}


@pytest.mark.parametrize("assignment", ["epochs", "=3", "train..lr=1", ".lr=1", "train.=1"])
def test_malformed_overrides_say_what_is_expected(assignment):
    with pytest.raises(ConfigError) as error:
        parse_overrides(["train.epochs=3", assignment])
    assert str(error.value) == f"--set expects KEY=VALUE (e.g. --set train.epochs=3), got {assignment!r}"


def test_an_override_that_is_not_yaml_is_a_config_error():
    with pytest.raises(ConfigError) as error:
        parse_overrides(["data.corruptions=[fog"])
    message = "--set 'data.corruptions=[fog': the value is not valid YAML (expected ',' or ']', but got '<stream end>')"
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train": {"batch_size": True}}, "train.batch_size: expected an integer, got True"),
        ({"models": {"de": {"num_members": 3, "lam": True}}}, "models.de.lam: expected a number, got True"),
        ({"eval": {"batch_size": "12"}}, "eval.batch_size: expected an integer, got '12'"),
        ({"train": {"lr": "1e-3"}}, "train.lr: expected a number, got '1e-3'"),  # quoted: a string
        ({"description": 3}, "description: expected a string, got 3"),
        ({"cache": {"weights": 1.5}}, "cache.weights: expected a string, got 1.5"),
        ({"cache": {"rebuild": 1}}, "cache.rebuild: expected true or false, got 1"),
        (
            {"models": {"de": {"num_members": 3, "hardness": "no"}}},
            "models.de.hardness: expected true or false, got 'no'",
        ),
    ],
)
def test_types_are_strict(tmp_path, values, message):
    path, error = refused(tmp_path, merge(MINIMAL, values))
    assert str(error) == f"{path}: {message}"


def test_all_problems_of_a_file_are_reported_together(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "run_name: bad\n"
        "head: {hidden_dim: -5}\n"
        "train: {lr: fast, batch_size: 0}\n"
        "models:\n  de: {num_members: 2, lamda: 0.1}\n"
        "eval: {batch_size: 0}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    known = ", ".join(repr(name) for name in ["label", "num_members", *TRAIN_KEYS])
    problems = [
        "head.hidden_dim: must be >= 1, got -5",
        "train.batch_size: must be >= 1, got 0",
        "train.lr: expected a number, got 'fast'",
        f"models.de: unknown key(s) ['lamda']; known keys are [{known}]",
        "eval.batch_size: must be >= 1, got 0",
    ]
    assert error.value.problems == problems
    assert str(error.value) == "\n  ".join([f"{path}: 5 problems", *problems])


def test_rules_across_keys_are_reported_together_too():
    values = {
        "run_name": "x",
        "models": {"a": {"num_members": 2, "schedule": "independent"}, "b": {"num_members": 2}},
        "eval": {"reference_model": "c"},
        "data": {"val_rows": 0},
    }
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict(values, source="x.yaml")
    assert error.value.problems == [
        "models.a.lam: must be 0 with schedule 'independent' (every member trains alone on its task loss, there is "
        "no repulsion), got 0.5",
        "eval.reference_model: 'c' is not one of the models ['a', 'b']",
        "data.val_rows: is 0 (validate on the test split, as the published code does), which the standard protocol "
        "does not allow; hold out validation rows (e.g. data.val_rows: 10000) or set protocol: faithful",
    ]
    assert str(error.value).startswith("x.yaml: 3 problems\n  models.a.lam: must be 0")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"models": {"sed_a2d": {"num_members": 3, "lam": 2.0}}}, "models.sed_a2d.lam: must lie in [0, 1], got 2.0"),
        (
            {"models": {"de": {"num_members": 3, "schedule": "independent", "lam": 0.5}}},
            "models.de.lam: must be 0 with schedule 'independent' (every member trains alone on its task loss, there "
            "is no repulsion), got 0.5",
        ),
        (
            {"train": {"epochs": 1}, "models": {"sed": {"num_members": 2}}},
            "train.epochs: must be >= 2 when freeze_first_epoch is set (epoch 0 does not update), got 1 "
            "(in models de, sed)",
        ),
        (
            {
                "models": {"de": {"num_members": 3, "schedule": "all", "disagreement_data": "unlabelled"}},
                "data": {"disagreement_set": "digits"},
            },
            "models.de.hardness: must be false with disagreement_data 'unlabelled': the hardness weights are the "
            "ensemble's loss on labelled samples (naive A2D / DivDis use none)",
        ),
        ({"train": {"optimizer": "adam"}}, "train.optimizer: must be 'sgd' or 'adamw', got 'adam'"),
        ({"head": {"hidden_dim": 0}}, "head.hidden_dim: must be >= 1, got 0"),
    ],
)
def test_messages_name_params_keys_not_classes(tmp_path, values, message):
    path, error = refused(tmp_path, merge(MINIMAL, values))
    assert str(error) == f"{path}: {message}"
    assert "TrainConfig" not in str(error) and "HeadConfig" not in str(error)
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_check_command_prints_the_problems(tmp_path, capsys):
    good, bad = write(tmp_path, MINIMAL), tmp_path / "bad.yaml"
    bad.write_text("run_name: b\nmodels: {de: {num_members: 0}}\n")
    assert config_main(["--check", str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == f"{good}: ok\n" and err == f"{bad}: models.de.num_members: must be >= 1, got 0\n"
    assert config_main(["--check", str(good)]) == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"models": MINIMAL["models"]}, "params: missing key 'run_name'"),
        ({"run_name": "x", "models": {"de": {"lam": 0.1}}}, "params: models.de: missing key 'num_members'"),
        ({"run_name": "x"}, "params: models: must name at least one ensemble to train"),
        (
            {**MINIMAL, "run_name": "../escape"},
            "params: run_name: must be letters, digits, '-' or '_', got '../escape'",
        ),
        ([1], "params: expected a mapping of keys to values at the top level, got [1]"),
    ],
)
def test_missing_run_name_and_models(values, message):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict(values)
    assert str(error.value) == message


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


def test_seeds_replicate_the_main_models_and_train_sweep_points_once_with_the_first_seed():
    sweeps = {"lam": {"model": "sed", "values": [0, 0.5, 0.8]}}
    config = RunConfig.from_dict({**SWEEP_BASE, "seeds": [3, 4], "sweeps": sweeps})
    runs = {run.name: run for run in config.model_runs()}
    assert list(runs) == ["de-seed3", "de-seed4", "sed-seed3", "sed-seed4", "sed-lam0.8"]
    assert runs["sed-lam0.8"].seed == 3 and runs["sed-lam0.8"].spec.train.lam == 0.8
    # seeds 3 and 4 as given would draw epoch e with 3 + e and 4 + e: the same shuffles one epoch apart
    assert [runs[name].spec.train.seed for name in runs] == [3000, 4000, 3000, 4000, 3000]
    assert runs["sed-seed4"].spec.train == dataclasses.replace(config.models["sed"].train, seed=4000)


def test_seeds_need_fewer_epochs_than_their_spacing():
    with pytest.raises(ConfigError, match="every model's epochs must be below 1000"):
        RunConfig.from_dict({**SWEEP_BASE, "seeds": [0, 1], "train": {"epochs": 1000}})


@pytest.mark.parametrize(
    "sweeps, message",
    [
        (
            {"lam": {"model": "nope", "values": [0.1]}},
            "sweeps.lam.model: 'nope' is not one of the models ['de', 'sed']",
        ),
        (
            {"batch_size": {"model": "sed", "values": [8]}},
            "sweeps: cannot sweep ['batch_size']; a sweep varies one of ['num_members', 'lam', 'kappa', "
            "'label_smoothing', 'lr', 'momentum', 'weight_decay', 'eps']",
        ),
        (
            {"lam": {"model": "sed", "values": [0.1, 0.1]}},
            "sweeps.lam.values: must list distinct values, at least one, got [0.1, 0.1]",
        ),
        ({"lam": {"model": "sed", "values": []}}, "sweeps.lam.values: must list distinct values, at least one, got []"),
        ({"lam": {"model": "sed", "values": [0.2, 1.5]}}, "sweeps.lam.values[1]: must lie in [0, 1], got 1.5"),
        ({"lam": {"values": [0.1]}}, "sweeps.lam: missing key 'model'"),
        (
            {"num_members": {"model": "sed", "values": [2.5]}},
            "sweeps.num_members.values[0]: expected an integer, got 2.5",
        ),
        ({"num_members": {"model": "sed", "values": [0]}}, "sweeps.num_members.values[0]: must be >= 1, got 0"),
        (
            {"lam": {"model": "de", "values": [0.0, 0.5]}},
            "sweeps.lam.values[1]: must be 0 with schedule 'independent' (every member trains alone on its task loss, "
            "there is no repulsion), got 0.5 (model de)",
        ),
    ],
)
def test_bad_sweeps_name_the_key(sweeps, message):
    values = merge(SWEEP_BASE, {"models": {"de": {"schedule": "independent"}}, "sweeps": sweeps})
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict(values)
    assert str(error.value) == f"params: {message}"


def test_a_null_sweep_is_no_sweep():
    sweeps = {"lam": None, "num_members": {"model": "sed", "values": [2, 4]}}
    assert list(RunConfig.from_dict({**SWEEP_BASE, "sweeps": sweeps}).sweeps) == ["num_members"]


def test_per_member_lists_must_match_the_members():
    values = {**SWEEP_BASE, "models": {"de": {"num_members": 3, "schedule": "independent", "lam": 0.0,
                                              "member_lr": [1e-3, 2e-3]}}}  # fmt: skip
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict(values)
    assert str(error.value) == "params: models.de.member_lr: gives 2 values for 3 members"


def test_full_cpu_turns_the_default_sweeps_off():
    assert load_config("params/default.yaml").sweeps and not load_config("params/full_cpu.yaml").sweeps
