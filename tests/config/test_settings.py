"""Each setting is declared once: the params check, the check of code that builds it, and the schema agree."""

import dataclasses
import json
import shutil
import subprocess
import sys

import jsonschema
import pytest

from sedlib.config import (
    PROJECT_ROOT,
    ConfigError,
    DataConfig,
    RunConfig,
    SettingError,
    TrainConfig,
    TrainSettings,
    params_schema,
)
from sedlib.config.entries import SWEPT
from sedlib.config.fields import tidy
from sedlib.errors import UserError, user_error_class

MINIMAL = {"run_name": "t", "models": {"de": {"num_members": 2, "lam": 0.0}}}
SCHEMA = params_schema()


def bounded_settings():
    """(setting, a value outside its range, the bound it breaks) for every bounded number of TrainSettings."""
    for name, prop in SCHEMA["$defs"]["TrainSettings"]["properties"].items():
        prop = next(option for option in prop.get("anyOf", [prop]) if option.get("type") != "null")
        if prop.get("type") == "number" and ("maximum" in prop or "exclusiveMaximum" in prop):
            yield name, float(prop.get("maximum", prop.get("exclusiveMaximum"))) + 1.0
        elif prop.get("type") in ("number", "integer") and "minimum" in prop:
            yield name, prop["minimum"] - 1 if prop["type"] == "integer" else prop["minimum"] - 1.0


@pytest.mark.parametrize(("name", "value"), list(bounded_settings()), ids=lambda item: str(item))
def test_the_params_check_the_direct_check_and_the_schema_agree_on_every_bound(name, value):
    with pytest.raises(SettingError) as direct:
        TrainConfig(**{name: value})
    assert direct.value.key == name and str(direct.value) == f"TrainConfig.{name} {direct.value.reason}"
    with pytest.raises(ConfigError) as from_file:
        RunConfig.from_dict({**MINIMAL, "models": {"de": {"num_members": 2, "lam": 0.0, name: value}}})
    assert from_file.value.problems == [f"models.de.{name}: {direct.value.reason}"]
    entry = {"num_members": 2, name: value}
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid({**MINIMAL, "models": {"de": entry}})
    if name in SWEPT:
        sweep = {name: {"model": "de", "values": [value]}}
        with pytest.raises(ConfigError) as swept:
            RunConfig.from_dict({**MINIMAL, "sweeps": sweep})
        assert swept.value.problems == [f"sweeps.{name}.values[0]: {direct.value.reason}"]


def test_the_bounds_are_read_from_the_schema():
    names = [name for name, _ in bounded_settings()]
    assert {"lam", "kappa", "lr", "weight_decay", "batch_size", "epochs", "cosine_t_max", "seed"} <= set(names)


def test_descriptions_come_from_the_docstring_under_each_setting():
    definitions = SCHEMA["$defs"]
    for name, field in TrainSettings.__pydantic_fields__.items():
        assert field.description, name
        assert definitions["TrainSettings"]["properties"][name]["description"] == tidy(field.description)
        assert definitions["ModelEntry"]["properties"][name]["description"] == tidy(field.description)
    assert definitions["Sweeps"]["properties"]["lam"]["description"] == f"lam: {tidy(SWEPT['lam'].description)}"
    assert "``" not in json.dumps(SCHEMA)  # reST literals read as Markdown ones


def test_a_bound_changed_in_its_declaration_changes_every_check(tmp_path):
    """Widen ``lam`` to [0, 2] in `TrainSettings` alone: the direct check, a params file and the schema follow."""
    package = tmp_path / "sedlib"
    (package / "config").mkdir(parents=True)
    for name in ("__init__.py", "errors.py"):
        shutil.copy(PROJECT_ROOT / "sedlib" / name, package / name)
    for path in (PROJECT_ROOT / "sedlib" / "config").glob("*.py"):
        shutil.copy(path, package / "config" / path.name)
    training = package / "config" / "training.py"
    declaration = "lam: number(float, ge=0, le=1) = 0.5"
    assert training.read_text().count(declaration) == 1
    training.write_text(training.read_text().replace(declaration, "lam: number(float, ge=0, le=2) = 0.5"))
    check = (
        "from sedlib.config import RunConfig, TrainConfig, params_schema\n"
        "assert TrainConfig(lam=1.5).lam == 1.5\n"
        "config = RunConfig.from_dict({'run_name': 't', 'models': {'de': {'num_members': 2, 'lam': 1.5}},"
        " 'sweeps': {'lam': {'model': 'de', 'values': [1.5, 1.8]}}})\n"
        "assert config.models['de'].train.lam == 1.5 and config.sweeps['lam'].points == ('de', 'de-lam1.8')\n"
        "definitions = params_schema()['$defs']\n"
        "assert definitions['TrainSettings']['properties']['lam']['maximum'] == 2\n"
        "assert definitions['ModelEntry']['properties']['lam']['maximum'] == 2\n"
        "assert definitions['LamSweep']['properties']['values']['items']['maximum'] == 2\n"
        "try:\n    TrainConfig(lam=2.5)\nexcept ValueError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "TrainConfig.lam must lie in [0, 2], got 2.5\n"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainConfig(lam=2.0), "TrainConfig.lam must lie in [0, 1], got 2.0"),
        (lambda: TrainConfig(batch_size=True), "TrainConfig.batch_size expected an integer, got True"),
        (lambda: TrainConfig(lr="1e-3"), "TrainConfig.lr expected a number, got '1e-3'"),
        (lambda: TrainConfig(member_lr=(1e-3, -1.0)), "TrainConfig.member_lr[1] must be >= 0, got -1.0"),
        (lambda: TrainConfig(lamda=0.5), "TrainConfig.lamda is not a setting here"),
        (
            lambda: dataclasses.replace(TrainConfig(), epochs=1),
            "TrainConfig.epochs must be >= 2 when freeze_first_epoch is set (epoch 0 does not update), got 1",
        ),
        (lambda: DataConfig(train_rows=0), "DataConfig.train_rows must be >= 1, got 0"),
        (
            lambda: DataConfig(val_path="v"),
            "DataConfig.val_path is for data.dataset folder or features, not fashion_mnist; remove it",
        ),
    ],
)
def test_code_that_builds_settings_gets_a_setting_error_naming_the_setting(build, message):
    with pytest.raises(SettingError) as error:
        build()
    assert str(error.value) == message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_settings_built_in_code_keep_their_types_and_stay_frozen_and_hashable():
    config = TrainConfig(lam=0, betas=[0.8, 0.9], schedule="independent", member_lr=[1, 2])
    assert (type(config.lam), config.betas, config.member_lr, config.weight_decay) == (
        float,
        (0.8, 0.9),
        (1.0, 2.0),
        0.1,
    )
    assert hash(config) == hash(TrainConfig(lam=0.0, betas=(0.8, 0.9), schedule="independent", member_lr=(1.0, 2.0)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lam = 0.5  # type: ignore[misc]


def test_setting_and_config_errors_are_user_errors_the_runner_recognises_by_type():
    for cls in (SettingError, ConfigError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)
        assert cls.__module__ == "sedlib.errors" and user_error_class(cls.__name__) is cls
