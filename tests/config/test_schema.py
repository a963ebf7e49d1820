import copy
import json

import jsonschema
import pytest

from sedlib.config import PROJECT_ROOT, SCHEMA_FILE, main, params_schema, read_yaml, schema_text

PARAMS_FILES = sorted((PROJECT_ROOT / "params").glob("*.yaml"))
REGENERATE = f"python -m sedlib.config --schema > {SCHEMA_FILE}"


@pytest.fixture(scope="module")
def validator():
    schema = params_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_the_generated_one():
    committed = json.loads((PROJECT_ROOT / SCHEMA_FILE).read_text(encoding="utf-8"))
    assert committed == params_schema(), f"{SCHEMA_FILE} is out of date; regenerate it: {REGENERATE}"
    assert (PROJECT_ROOT / SCHEMA_FILE).read_text(encoding="utf-8") == schema_text(), f"regenerate it: {REGENERATE}"


def test_schema_command_prints_the_schema(capsys):
    assert main(["--schema"]) == 0
    assert capsys.readouterr().out == schema_text()


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda path: path.name)
def test_params_files_validate_against_the_schema(validator, path):
    assert path.read_text(encoding="utf-8").startswith("# yaml-language-server: $schema=params.schema.json\n")
    errors = [f"{'.'.join(map(str, error.path))}: {error.message}" for error in validator.iter_errors(read_yaml(path))]
    assert not errors


def test_every_key_is_described():
    def undescribed(schema, where):
        for name, prop in schema.get("properties", {}).items():
            if "description" not in prop:
                yield f"{where}.{name}"

    schema = params_schema()
    missing = list(undescribed(schema, "<top>"))
    for name, definition in schema["$defs"].items():
        assert definition.get("description"), name
        missing += undescribed(definition, name)
    assert not missing


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("head", "hidden_dim"), 0),
        (("eval", "batch_size"), 0),
        (("train", "lr"), "fast"),
        (("train", "batch_size"), True),
        (("train", "schedule"), "pairs"),
        (("models", "sed_a2d", "lam"), 2.0),
        (("models", "sed_a2d", "lamda"), 0.5),
        (("sweeps", "lam", "values"), [0.5, 1.5]),
        (("sweeps", "lam", "values"), []),
        (("sweeps", "batch_size"), {"model": "sed_a2d", "values": [8]}),
        (("data", "corruptions"), ["rain"]),
        (("cache", "dtype"), "int8"),
        (("cache", "augmentation_scale"), [0.5]),
        (("colour",), "blue"),
        (("train",), 3),
    ],
)
def test_a_bad_value_fails_the_schema(validator, path, value):
    values = copy.deepcopy(read_yaml(PROJECT_ROOT / "params" / "default.yaml"))
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert not validator.is_valid(values)


def test_only_a_file_that_extends_another_may_leave_out_the_study_keys(validator):
    partial_model = {"run_name": "x", "models": {"sed_a2d": {"kappa": 2.0}}}
    assert not validator.is_valid(partial_model)
    assert validator.is_valid({"extends": "default.yaml", **partial_model})
    assert not validator.is_valid({"description": "no run_name, no models"})
    assert validator.is_valid({"extends": "default.yaml", "sweeps": {"lam": {"values": [0.1]}}})
    assert not validator.is_valid({"extends": "default.yaml", "sweeps": {"lam": {"values": [1.5]}}})
