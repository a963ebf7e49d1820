"""A whole study (`RunConfig`), checked completely from a params file (`load_config`).

A study's settings are declared once. `StudySettings` holds the keys a params file gives and a
`RunConfig` keeps as they are (the sections of `sedlib.config.sections` among them); `Params` adds the
file's ``train``, ``models`` and ``sweeps`` (`sedlib.config.training.TrainSettings`,
`sedlib.config.entries.ModelEntry`, `sedlib.config.entries.Sweeps`), and `RunConfig` holds them resolved.
`RunConfig.from_dict` validates the values with pydantic (`Params`: every section, entry and key, its
type and range), then the rules that tie several keys together (each model's TrainConfig, the sweeps,
the backbone's head, the protocol). Every problem found is reported at once in a
`sedlib.config.reading.ConfigError`: the file, then one line per problem by the key path as written.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, SkipValidation, TypeAdapter, ValidationError

from sedlib import PROJECT_ROOT
from sedlib.config.entries import (
    MODEL_KEYS,
    PRETRAINED_HEAD_MODEL,
    SWEEP_SYMBOLS,
    ModelEntry,
    ModelRun,
    ModelSpec,
    Sweep,
    Sweeps,
)
from sedlib.config.fields import Natural, Str, settings
from sedlib.config.messages import shown_value, validation_problems
from sedlib.config.reading import ConfigError, merge, read_yaml, resolve_path
from sedlib.config.sections import (
    DEVICES,
    OWN_DATA_ROWS,
    OWN_DATASETS,
    PROTOCOLS,
    CacheConfig,
    DataConfig,
    EvalConfig,
    HeadSettings,
    backbone_head_width,
)
from sedlib.config.training import TrainConfig, TrainSettings
from sedlib.errors import MissingFileError, SettingError

logger = logging.getLogger("sedlib.config")

#: Seed ``s`` of ``seeds`` trains with ``train.seed`` = ``s * SEED_SPACING`` (`RunConfig.model_runs`).
SEED_SPACING = 1000


def _run_name(name: str) -> str:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"must be letters, digits, '-' or '_', got {name!r}")
    return name


def _distinct(seeds: tuple) -> tuple:
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the seeds must be distinct non-negative integers, got {list(seeds)}")
    return seeds


Seeds = Annotated[tuple[Natural, ...], AfterValidator(_distinct), Field(json_schema_extra={"uniqueItems": True})]


def _section(cls: type) -> object:
    """The annotation of a section: its class, or null for its defaults (``data: null``)."""
    return Annotated[cls | None, AfterValidator(lambda value: cls() if value is None else value)]


@settings
class StudySettings:
    """The settings of a study that a params file gives and its `RunConfig` holds as they are."""

    run_name: Annotated[Str, AfterValidator(_run_name)]
    """results go to ``runs/<run_name>/`` (letters, digits, ``-`` and ``_``)."""
    description: Str = ""
    """one line for the report."""
    device: Literal[DEVICES] = "cpu"
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available)."""
    protocol: Literal[PROTOCOLS] = "standard"
    """``faithful`` (the published code's evaluation, quirks included) or ``standard`` (`sedlib.eval.protocols`); every
    table names it."""
    seeds: Seeds = ()
    """train every main model once per seed (tables give mean ± std over them), each with its own initialisation and
    data order, and each sweep point once; distinct and non-negative; empty for one run per model with its
    ``train.seed``."""
    data: _section(DataConfig) = Field(None, validate_default=True)
    """which images are cached (`DataConfig`)."""
    cache: _section(CacheConfig) = Field(None, validate_default=True)
    """how their features are computed and stored (`CacheConfig`)."""
    head: _section(HeadSettings) = Field(None, validate_default=True)
    """the trainable head (`HeadSettings`)."""
    eval: _section(EvalConfig) = Field(None, validate_default=True)
    """the evaluation (`EvalConfig`)."""


@settings
class Params(StudySettings):
    """The values of a study as `RunConfig.from_dict` takes them: types and ranges, before the rules across keys."""

    train: TrainSettings | None = None
    """training defaults shared by all models (`sedlib.config.TrainConfig` keys)."""
    models: dict[Str, ModelEntry] | None = None
    """name -> an ensemble to train; each entry may override any `train` key."""
    sweeps: Sweeps | None = None
    """parameter -> a model trained at several values of one parameter (the accuracy-detection trade-off of stage
    05); the main tables leave out the models that only a sweep adds."""


@settings
class ParamsFile(Params):
    """A params file of the SED project (`sedlib.config`): one study, checked before any stage starts."""

    extends: Str = ""
    """another params file, a path relative to this one, whose values this file's own are merged over (mappings
    merge key by key, other values replace); such a file may leave out any key."""


_PARAMS = TypeAdapter(Params)


@settings
class RunConfig(StudySettings):
    """A whole study, as read from a params file: its `StudySettings`, and its models and sweeps resolved."""

    train: SkipValidation[dict] = field(default_factory=dict)
    """training defaults shared by all models (`sedlib.config.TrainConfig` keys), as given."""
    models: SkipValidation[dict[str, ModelSpec]] = field(default_factory=dict)
    """name -> `ModelSpec`; each entry may override any `train` key. The models that ``sweeps`` adds come after
    the file's own."""
    sweeps: SkipValidation[dict[str, Sweep]] = field(default_factory=dict)
    """parameter -> `Sweep`: a model trained at several values of one parameter (the accuracy-detection trade-off
    of stage 05); the main tables leave out the models that only a sweep adds (`main_models`)."""
    sweep_models: tuple[str, ...] = ()
    """the names of those models."""
    source: str = "params"
    """where the values came from (for messages)."""

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "params") -> RunConfig:
        """Validate a parsed params mapping (a file's values merged with its overrides).

        Raises:
            ConfigError: names ``source``, then every problem found, each by the key path it concerns.
        """
        if not isinstance(values, Mapping):
            got = shown_value(values)
            raise ConfigError(f"{source}: expected a mapping of keys to values at the top level, got {got}")
        try:
            params = _PARAMS.validate_python(_with_own_data_rows(values))
        except ValidationError as error:
            raise ConfigError.listing(source, validation_problems(error, Params, list(values))) from None
        problems = []
        train, models = _model_specs(params, values, problems)
        declared = [name for name in params.models or {} if name != PRETRAINED_HEAD_MODEL]
        if not declared:
            problems.append("models: must name at least one ensemble to train")
        failed = set(declared) - set(models)
        sweeps, swept_models = _resolve_sweeps(params.sweeps, values.get("sweeps"), models, failed, problems)
        data, cache, head, evaluation = params.data, params.cache, params.head, params.eval
        if declared and not evaluation.reference_model:
            evaluation = dataclasses.replace(evaluation, reference_model=declared[0])
        if declared and evaluation.reference_model not in declared:
            problems.append(f"eval.reference_model: {evaluation.reference_model!r} is not one of the models {declared}")
        problems += _study_problems(params.protocol, data, cache, head, evaluation, models)
        if params.seeds and any(spec.train.epochs >= SEED_SPACING for spec in models.values()):
            problems.append(f"seeds: with seeds, every model's epochs must be below {SEED_SPACING} (their data orders)")
        if problems:
            raise ConfigError.listing(source, problems)
        return cls(
            run_name=params.run_name,
            description=params.description,
            device=params.device,
            protocol=params.protocol,
            seeds=params.seeds,
            data=data,
            cache=cache,
            head=head,
            train=train,
            models=models | swept_models,
            eval=evaluation,
            sweeps=sweeps,
            sweep_models=tuple(swept_models),
            source=source,
        )

    def evaluated_models(self) -> dict[str, str]:
        """Name -> label of every model the evaluation reports.

        The backbone's pretrained head comes first ("row zero", with ``eval.pretrained_head``), then
        ``models`` in the file's order.
        """
        labels = {PRETRAINED_HEAD_MODEL: f"{self.cache.backbone} pretrained head"} if self.eval.pretrained_head else {}
        return labels | {name: spec.label for name, spec in self.models.items()}

    def main_models(self) -> list[str]:
        """The models of the main tables and figures: the file's own (and row zero), not those only a sweep adds."""
        return [name for name in self.evaluated_models() if name not in self.sweep_models]

    def first_replicas(self) -> list[ModelRun]:
        """The first seed's replica of each main model (`main_models`): the one figures draw."""
        first = {}
        for model_run in self.model_runs():
            if model_run.model in self.main_models():
                first.setdefault(model_run.model, model_run)
        return list(first.values())

    def model_runs(self, pretrained_head: bool = False) -> list[ModelRun]:
        """Every replica to train: each main model once per seed (or once, with its own ``train.seed``).

        Seed ``s`` trains with ``train.seed`` = ``s`` x `SEED_SPACING`: epoch ``e`` of a run draws its
        shuffle and pairs with ``train.seed + e`` (`sedlib.method.train.epoch_seed`, as published), so seeds 0
        and 1 used as they are would see the same shuffles one epoch apart; spaced, every seed has its
        own initialisation and data order. The models that only a sweep adds (`sweep_models`) train
        once, with the first seed: a sweep shows a trend over its values, and a seed per point would
        multiply the study's cost.

        Args:
            pretrained_head: also list the backbone's head first (``eval.pretrained_head``), as the
                evaluation does; it is never trained.
        """
        runs = []
        if pretrained_head and self.eval.pretrained_head:
            label = self.evaluated_models()[PRETRAINED_HEAD_MODEL]
            first = next(iter(self.models.values()))
            spec = ModelSpec(PRETRAINED_HEAD_MODEL, label, 1, first.train)
            runs.append(ModelRun(PRETRAINED_HEAD_MODEL, PRETRAINED_HEAD_MODEL, label, None, spec))
        for name, spec in self.models.items():
            if not self.seeds:
                runs.append(ModelRun(name, name, spec.label, spec.train.seed, spec))
                continue
            if name in self.sweep_models:
                train = dataclasses.replace(spec.train, seed=self.seeds[0] * SEED_SPACING)
                runs.append(ModelRun(name, name, spec.label, self.seeds[0], dataclasses.replace(spec, train=train)))
                continue
            for seed in self.seeds:
                replica = f"{name}-seed{seed}" if len(self.seeds) > 1 else name
                label = f"{spec.label} (seed {seed})" if len(self.seeds) > 1 else spec.label
                train = dataclasses.replace(spec.train, seed=seed * SEED_SPACING)
                runs.append(
                    ModelRun(replica, name, spec.label, seed, ModelSpec(replica, label, spec.num_members, train))
                )
        return runs

    def to_dict(self) -> dict:
        """The resolved values (defaults filled in), as written to ``runs/<run>/params.yaml``."""

        def plain(value):
            if isinstance(value, tuple | list):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return {
            "run_name": self.run_name,
            "description": self.description,
            "device": self.device,
            "protocol": self.protocol,
            "seeds": list(self.seeds),
            "data": plain(dataclasses.asdict(self.data)),
            "cache": plain(dataclasses.asdict(self.cache)),
            "head": plain(dataclasses.asdict(self.head)),
            "train": plain(self.train),
            "models": {
                name: {"label": spec.label, "num_members": spec.num_members, **plain(spec.train.to_dict())}
                for name, spec in self.models.items()
                if name in self.main_models()
            },
            "sweeps": {
                name: {"model": sweep.model, "values": list(sweep.values)} for name, sweep in self.sweeps.items()
            },
            "eval": plain(dataclasses.asdict(self.eval)),
        }


def _with_own_data_rows(values: Mapping) -> dict:
    """The params with `OWN_DATA_ROWS` for the row counts a ``folder`` or ``features`` study leaves out."""
    data = values.get("data")
    if not isinstance(data, Mapping) or data.get("dataset") not in OWN_DATASETS:
        return dict(values)
    return {**values, "data": {**OWN_DATA_ROWS, **data}}


def _model_specs(params: Params, values: Mapping, problems: list[str]) -> tuple[dict, dict[str, ModelSpec]]:
    """The ``train`` keys as given (typed) and the spec of each model whose settings make a valid TrainConfig.

    A TrainConfig error is reported under the key that holds the value: the model's own, else the ``train``
    section's (once, naming the models it breaks), else the model's (a default that does not fit).
    """
    train = {key: getattr(params.train, key) for key in values.get("train") or {}}
    models, from_train = {}, {}
    for name, entry in (params.models or {}).items():
        if name == PRETRAINED_HEAD_MODEL:
            problems.append(f"models.{name}: the name is reserved for eval.pretrained_head; rename the model")
            continue
        own = {key: getattr(entry, key) for key in values["models"][name] if key not in MODEL_KEYS}
        try:
            settings = TrainConfig(**(train | own))
            settings.check_members(entry.num_members)
        except SettingError as error:
            if error.key in train and error.key not in own:
                from_train.setdefault((error.key, error.reason), []).append(name)
            else:
                problems.append(f"models.{name}.{error.key}: {error.reason}")
            continue
        models[name] = ModelSpec(name, entry.label or name, entry.num_members, settings)
    for (key, reason), names in from_train.items():
        problems.append(f"train.{key}: {reason} (in model{'s' * (len(names) > 1)} {', '.join(names)})")
    return train, models


def _resolve_sweeps(
    params: Sweeps | None, values: Mapping | None, models: dict[str, ModelSpec], failed: set, problems: list[str]
) -> tuple[dict[str, Sweep], dict[str, ModelSpec]]:
    """The sweeps of a params file and the models they add (those no existing model already is)."""
    sweeps, added = {}, {}
    for name in values or {}:
        sweep, where = getattr(params, name), f"sweeps.{name}"
        if sweep is None or sweep.model in failed:
            continue
        if sweep.model not in models:
            problems.append(f"{where}.model: {sweep.model!r} is not one of the models {list(models)}")
            continue
        if not sweep.values or len(set(sweep.values)) != len(sweep.values):
            problems.append(f"{where}.values: must list distinct values, at least one, got {list(sweep.values)}")
            continue
        spec, points = models[sweep.model], []
        for index, value in enumerate(sweep.values):
            try:
                if name == "num_members":
                    spec.train.check_members(value)
                    candidate = ModelSpec("", "", value, spec.train)
                else:
                    candidate = ModelSpec("", "", spec.num_members, dataclasses.replace(spec.train, **{name: value}))
            except SettingError as error:
                reason = error.reason if error.key == name else f"{error.key} {error.reason}"
                problems.append(f"{where}.values[{index}]: {reason} (model {sweep.model})")
                continue
            settings = (candidate.num_members, candidate.train)
            same = [n for n, m in {**models, **added}.items() if (m.num_members, m.train) == settings]
            if same:
                points.append(same[0])
                continue
            point = f"{sweep.model}-{'M' if name == 'num_members' else name}{value:g}"
            label = f"{spec.label} ({SWEEP_SYMBOLS.get(name, name)} {value:g})"
            added[point] = dataclasses.replace(candidate, name=point, label=label)
            points.append(point)
        sweeps[name] = Sweep(name, sweep.model, sweep.values, tuple(points))
    return sweeps, added


def _study_problems(
    protocol: str,
    data: DataConfig,
    cache: CacheConfig,
    head: HeadSettings,
    evaluation: EvalConfig,
    models: dict[str, ModelSpec],
) -> list[str]:
    """What the sections and models do not allow together (the backbone's head, the protocol, the data)."""
    problems = []
    backbone = cache.backbone
    width = backbone_head_width(backbone)
    needs = "needs a backbone with a pretrained head of the SED head's form (deit3_base)"
    if evaluation.pretrained_head and width is None:
        problems.append(f"eval.pretrained_head: {needs}; cache.backbone is {backbone!r}")
    if head.init == "pretrained" and width is None:
        problems.append(f"head.init: 'pretrained' {needs}; cache.backbone is {backbone!r}")
    elif head.init == "pretrained" and head.hidden_dim != width:
        problems.append(
            f"head.hidden_dim: must be {width} with head.init: pretrained (the hidden width of {backbone}'s head), "
            f"got {head.hidden_dim}"
        )
    unlabelled = [name for name, spec in models.items() if spec.train.disagreement_data == "unlabelled"]
    if unlabelled and not data.disagreement_set:
        problems.append(
            f"data.disagreement_set: is empty, but models {unlabelled} disagree on unlabelled data "
            "(disagreement_data: unlabelled); set it to the set they use"
        )
    if data.val_rows == 0 and protocol == "standard":
        problems.append(
            "data.val_rows: is 0 (validate on the test split, as the published code does), which the standard "
            "protocol does not allow; hold out validation rows (e.g. data.val_rows: 10000) or set protocol: faithful"
        )
    return problems


def _read_params(path: Path, name: str, seen: tuple[Path, ...]) -> object:
    """A params file's values, merged over the file it ``extends`` (a path relative to it), if any."""
    try:
        values = read_yaml(path)
    except yaml.YAMLError as error:
        raise ConfigError(f"{name}: not valid YAML ({error})") from None
    if values is None:
        return {}
    if not isinstance(values, Mapping) or "extends" not in values:
        return values
    values = dict(values)
    parent = values.pop("extends")
    if not isinstance(parent, str) or not parent:
        got = shown_value(parent)
        raise ConfigError(f"{name}: extends: expected the name of a params file beside this one, got {got}")
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen or parent_path == path.resolve():
        raise ConfigError(f"{name}: extends {parent!r} makes a cycle")
    if not parent_path.is_file():
        raise ConfigError(f"{name}: extends {parent!r}, but {parent_path.name} does not exist beside it")
    parent_values = _read_params(parent_path, f"{name} -> {parent}", (*seen, path.resolve()))
    if not isinstance(parent_values, Mapping):
        raise ConfigError(f"{name} -> {parent}: expected a mapping of keys to values, got {shown_value(parent_values)}")
    return merge(parent_values, values)


def load_config(params_file: str | Path, overrides: Mapping | None = None) -> RunConfig:
    """Read, merge and validate a params file.

    A file may start from another: ``extends: imagenet_deit3b.yaml`` (relative to the file) merges its
    own values over that file's.

    Args:
        params_file: YAML file; a relative path is taken relative to the project root.
        overrides: nested mapping merged over the file's values (papermill's ``overrides`` parameter, or
            `parse_overrides` of ``--set`` options).

    Raises:
        FileNotFoundError: the file does not exist (the message lists the files in ``params/``).
        ConfigError: unknown keys, wrong types or invalid values (names the file, then each problem by its
            key path).
    """
    path = resolve_path(params_file)
    if not path.is_file():
        available = sorted(p.name for p in (PROJECT_ROOT / "params").glob("*.yaml"))
        raise MissingFileError(f"params file {params_file} not found; the project has params/{available}")
    values = _read_params(path, str(params_file), ())
    if overrides:
        if not isinstance(values, Mapping):
            raise ConfigError(f"{params_file}: expected a mapping of keys to values at the top level")
        _check_added_models(values, overrides, str(params_file))
        values = merge(values, overrides)
    return RunConfig.from_dict(values, source=str(params_file))


def _check_added_models(values: Mapping, overrides: Mapping, source: str) -> None:
    """Say so when ``--set`` adds a model the params file does not have; refuse it when it looks like a typo.

    Raises:
        ConfigError: a new model's name is close to one of the file's (``sed_a2`` beside ``sed_a2d``).
    """
    existing = list(values.get("models") or {}) if isinstance(values.get("models"), Mapping) else []
    added = overrides.get("models") if isinstance(overrides.get("models"), Mapping) else {}
    for name in added:
        if name in existing:
            continue
        nearest = difflib.get_close_matches(name, existing, n=1, cutoff=0.75)
        if nearest:
            raise ConfigError(
                f"{source}: --set models.{name}...: the params file has no model {name!r}; did you mean "
                f"{nearest[0]!r}? (A new model would train with the default settings.) Fix the name, or add the "
                "model to the params file"
            )
        logger.warning("--set models.%s...: adds the model %s, which %s does not have", name, name, source)
