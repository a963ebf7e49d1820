"""Run configuration: one YAML params file per run, checked completely before any stage starts.

A params file (``params/default.yaml``, ``params/smoke.yaml``, ...) holds every setting of a study:
which images are cached with which backbone (``data``, ``cache``), the heads' shape (``head``), the
training defaults (``train``, the keys of `sedlib.config.TrainConfig`), the ensembles to train
(``models``, each a name with its own overrides), the sweeps (``sweeps``) and the evaluation (``eval``).
A file may start from another (``extends``). The notebooks receive the file's path and optional
``overrides`` (a nested mapping merged over the file) from papermill; ``--set KEY=VALUE`` on the command
line gives the same overrides (`parse_overrides`).

Settings. Each setting is declared once, as a field of a frozen pydantic dataclass with its type, its range
or choices, its default, and the docstring under it that describes it (`sedlib.config.fields.settings`): the
training settings in `TrainSettings` (`TrainConfig` adds the rules across them), the sections ``data``,
``cache``, ``head``, ``eval`` in `sedlib.config.sections`, the study's own keys in
`sedlib.config.study.StudySettings`. The same classes check a params file, are what the code receives
(`RunConfig`, `TrainConfig`, `DataConfig`, ...) and give the JSON Schema. Built directly by code
(``TrainConfig(lam=2.0)``, ``dataclasses.replace``), a class raises `SettingError` naming the setting
(``TrainConfig.lam must lie in [0, 1], got 2.0``). Every user error, `SettingError` and `ConfigError` among
them, is a `sedlib.errors.UserError`.

Validation. `load_config` (`RunConfig.from_dict` for values already read) checks the whole file with
pydantic (`sedlib.config.study.Params`: every section, entry and key, its type and range; ``train`` and each
``models`` entry against `TrainSettings`, each ``sweeps`` entry's values against the swept setting's type).
The rules that tie several keys together run next (each model's TrainConfig, the sweeps, the backbone's head,
the protocol). Every problem found is reported at once in a `ConfigError`: the file, then one line per problem
that names the key path as written in the file (``models.sed_a2d.lam: must lie in [0, 1], got 2.0``), so a
typo never silently falls back to a default and no stage starts on a bad file.

Types are strict, the same way everywhere: a bool is not a number (``batch_size: true`` is an error), a
number is not a string, and a quoted number (``"12"``) is a string, refused where a number is expected. An
integer setting takes a float with an integral value (``knn_train_rows: 1e6`` is 1000000; ``2.5`` is
refused), a float setting takes an integer. A list may be given where a tuple is kept. A section given null
(``sweeps: null``) takes its defaults.

Numbers. PyYAML reads YAML 1.1, where ``1e-3`` (no dot in the mantissa) is a string. Params files and
``--set`` values are read with `ParamsLoader`, whose floats follow YAML 1.2: ``1e-3``, ``5e-4``, ``1e6`` and
``-2.5E+3`` are numbers, as people write them (``1_000`` is the integer 1000).

Schema. ``python -m sedlib.config --schema`` prints the JSON Schema of a params file, made from the same
classes and described by the docstrings of their fields (one source for both). It is committed as
``params/params.schema.json`` (a test keeps it current), and the first line of each params file points
editors at it (``# yaml-language-server: $schema=params.schema.json``). ``python -m
sedlib.config --check FILE...`` checks params files and prints their problems.

The resolved configuration is saved with every run (``runs/<run>/params.yaml``) and hashed per stage, so a
stage reruns exactly when its inputs change.

The package sits at the bottom of `sedlib`: it imports nothing of the library but `sedlib.errors`, so
reading a params file loads neither torch nor the training loop, the backbones or the detectors.
Its modules: `reading` (YAML, ``--set``, merging), `fields` (strict types and `settings`, how a group of
settings is declared), `training` (`TrainSettings`, `TrainConfig`), `sections` (``data``, ``cache``,
``head``, ``eval`` and the names they accept), `entries` (``models`` and ``sweeps``), `study` (`RunConfig`,
`load_config`), `messages` (errors in the project's words), `schema` (the JSON Schema and ``python -m
sedlib.config``).

Example:
    >>> config = RunConfig.from_dict({"run_name": "demo", "models": {"de": {"num_members": 2, "lam": 0.0}}})
    >>> config.models["de"].train.lam, config.models["de"].train.batch_size
    (0.0, 32)
    >>> parse_overrides(["train.lr=1e-3", "models.de.num_members=3"])
    {'train': {'lr': 0.001}, 'models': {'de': {'num_members': 3}}}
"""

from sedlib import PROJECT_ROOT
from sedlib.config.entries import PRETRAINED_HEAD_MODEL, SWEEP_SYMBOLS, ModelRun, ModelSpec, Sweep
from sedlib.config.reading import (
    ConfigError,
    ParamsDumper,
    ParamsLoader,
    format_overrides,
    from_working_directory,
    merge,
    parse_overrides,
    project_relative,
    read_overrides,
    read_yaml,
    resolve_path,
)
from sedlib.config.schema import SCHEMA_FILE, main, params_schema, schema_text
from sedlib.config.sections import (
    BACKBONE_HEAD_WIDTHS,
    CORRUPTIONS,
    DATASET_OOD_SETS,
    DETECTOR_NAMES,
    OWN_DATASETS,
    TIMM_PREFIX,
    CacheConfig,
    DataConfig,
    EvalConfig,
    HeadSettings,
    backbone_head_width,
)
from sedlib.config.study import RunConfig, load_config
from sedlib.config.training import TrainConfig, TrainSettings
from sedlib.errors import SettingError

__all__ = [
    "BACKBONE_HEAD_WIDTHS",
    "CORRUPTIONS",
    "DATASET_OOD_SETS",
    "DETECTOR_NAMES",
    "OWN_DATASETS",
    "PRETRAINED_HEAD_MODEL",
    "PROJECT_ROOT",
    "SCHEMA_FILE",
    "SWEEP_SYMBOLS",
    "TIMM_PREFIX",
    "CacheConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "HeadSettings",
    "ModelRun",
    "ModelSpec",
    "ParamsDumper",
    "ParamsLoader",
    "format_overrides",
    "from_working_directory",
    "read_overrides",
    "RunConfig",
    "SettingError",
    "Sweep",
    "TrainConfig",
    "TrainSettings",
    "backbone_head_width",
    "load_config",
    "main",
    "merge",
    "params_schema",
    "parse_overrides",
    "project_relative",
    "read_yaml",
    "resolve_path",
    "schema_text",
]
