"""Which splits a study caches, which rows each holds, where their images come from, and the hash of each.

A split's plan (`SplitPlan`, `plan_splits`) names it and says what it holds; its hash (`split_hash`) covers
exactly the settings its content depends on, so changing the number of OOD rows never invalidates the training
passes. `split_rows` draws a split's rows in its source set, `source_images` gives the images (or features) they
are read from, and `check_sources` finds what listing the data can find before stage 01 starts. Stage 01
(`sedlib.study.extract`) writes one HDF5 file per split; `sedlib.study.cached` reads them back.

Example:
    >>> from sedlib.config import load_config
    >>> [plan.name for plan in plan_splits(load_config("params/smoke.yaml"))][:4]
    ['train', 'val', 'test', 'gaussian_noise-1']
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sedlib.backbones.timm_models import check_timm_backbone, timm_input
from sedlib.config import OWN_DATASETS, TIMM_PREFIX, ConfigError, RunConfig, resolve_path
from sedlib.data import SOURCES, imagenet, load_fashion_mnist
from sedlib.data.feature_files import FeatureArrays, check_feature_sets, read_feature_file
from sedlib.data.folders import class_folder_set, folder_classes, ood_folder_set
from sedlib.data.imagenet import imagenet_wnids
from sedlib.data.published_features import find_published_file
from sedlib.data.sources import FASHION_MNIST_CLASSES

FEATURE_FORMAT = "sedlib.cache/2"


@dataclass(frozen=True)
class SplitPlan:
    """One split to cache.

    Attributes:
        name: file stem, e.g. ``train``, ``test``, ``fog-5``, ``imagenet_a``, ``digits``.
        kind: ``train``, ``val``, ``test``, ``corruption``, ``subset`` (a labelled class subset such
            as ImageNet-A) or ``ood``.
        passes: augmentation passes (``train`` only; 1 otherwise).
        corruption: corruption name (``corruption`` splits).
        severity: corruption severity (``corruption`` splits).
        imported: the features come from the authors' released files (``cache.import_dir``).
    """

    name: str
    kind: str
    passes: int = 1
    corruption: str | None = None
    severity: int | None = None
    imported: bool = False


def plan_splits(config: RunConfig) -> list[SplitPlan]:
    """The splits a run caches, in the order they are written."""
    data = config.data
    passes = 1 if data.dataset == "features" else config.cache.augmentation_passes  # nothing to augment
    plans = [SplitPlan("train", "train", passes=passes)]
    if data.val_rows != 0:
        plans.append(SplitPlan("val", "val"))
    plans.append(SplitPlan("test", "test"))
    plans += [
        SplitPlan(corruption_split(c, s), "corruption", corruption=c, severity=s)
        for s in data.severities
        for c in data.corruptions
    ]
    plans += [SplitPlan(name, "subset") for name in data.subset_sets]
    plans += [SplitPlan(name, "ood") for name in data.ood_sets]
    if data.disagreement_set:
        plans.append(SplitPlan(DISAGREEMENT_SPLIT, "disagreement"))
    if config.cache.import_dir:
        plans = [SplitPlan(**{**plan.__dict__, "imported": published_file(config, plan) is not None}) for plan in plans]
    return plans


def corruption_split(corruption: str, severity: int) -> str:
    """File stem of a corrupted copy of the test split, e.g. ``fog-5``."""
    return f"{corruption}-{severity}"


_DATA_KEYS = {
    "train": ("train_rows", "val_rows"),
    "val": ("val_rows",),
    "test": ("test_rows",),
    "corruption": ("test_rows", "corruption_rows"),
    "subset": (),
    "ood": ("ood_rows",),
    "disagreement": ("ood_rows", "disagreement_set", "disagreement_rows"),
}


DISAGREEMENT_SPLIT = "disagreement"
"""The split of unlabelled images the naive A2D / DivDis baselines disagree on (``data.disagreement_set``)."""


_CACHE_KEYS = ("backbone", "image_size", "dtype", "pretrained")


def split_hash(config: RunConfig, plan: SplitPlan) -> str:
    """Hash of the settings a split's content depends on, and of nothing else.

    Batching, paths, ``rebuild`` and the settings of other splits are left out: the OOD rows do not
    change the training passes. The augmentation enters only the train split, the protocol only the
    ImageNet-C splits (it decides their transform).
    """
    data, cache = config.to_dict()["data"], config.to_dict()["cache"]
    keys = _DATA_KEYS[plan.kind]
    if plan.kind == "train" and data["train_rows"] is None:
        keys = ("train_rows",)
    if "val_rows" in keys and data["val_rows"] is None:
        keys = (*keys, "val_fraction")
    payload = {
        "format": FEATURE_FORMAT,
        "dataset": data["dataset"],
        "seed": data["seed"],
        "data": {key: data[key] for key in keys},
        "cache": {key: cache[key] for key in _CACHE_KEYS},
        "split": plan.__dict__,
    }
    if plan.kind == "train":
        payload["augmentation"] = [cache["augmentation_passes"], cache["augmentation_scale"]]
    if cache["backbone"].startswith(TIMM_PREFIX) and data["dataset"] in ("imagenet", "folder") and plan.kind != "train":
        payload["eval_transform"] = cache["eval_transform"]
    if plan.kind == "corruption" and data["dataset"] == "imagenet":
        payload["protocol"] = config.protocol
    if data["dataset"] in OWN_DATASETS:
        payload["paths"] = _own_paths(config, plan)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _own_paths(config: RunConfig, plan: SplitPlan) -> list[str]:
    """The data paths (``data.*_path``) a split of your own data is read from (the training set names the classes)."""
    data = config.data
    if plan.kind in ("train", "val"):
        return [data.train_path, data.val_path]
    if plan.kind in ("test", "corruption"):
        return [data.train_path, data.test_path]
    return [data.ood_paths[data.disagreement_set if plan.kind == "disagreement" else plan.name]]


def _draw(rows: int, count: int | None, seed: int, stream: int) -> np.ndarray:
    """``count`` distinct row ids of ``rows``, sorted (all when count is None), drawn with a seeded permutation."""
    order = np.random.default_rng([seed, stream]).permutation(rows)
    return np.sort(order[:count]) if count is not None else np.sort(order)


def split_rows(config: RunConfig, plan: SplitPlan, size: int) -> np.ndarray:
    """Row ids (sorted) of a split in its source set of ``size`` rows.

    ``train`` and ``val`` share the train set: ``val`` is a seeded draw of ``val_rows``, and
    ``train`` is ``train_rows`` of the rest, or, with ``train_rows: null``, every row (so that the
    expensive training passes do not depend on ``val_rows``; training drops the val rows by their
    row ids, `training_rows`). The corrupted splits take the first ``corruption_rows`` of
    the test rows (ImageNet-C holds the validation images in the same order). With ``data.val_path``
    the val split is at most ``val_rows`` of that set and nothing is held out of the train set.
    ``val_rows: null`` holds out ``val_fraction`` of the train set (at least one row, and one is left).

    Raises:
        ConfigError: a row count (named by its params key) asks for more rows than the set has, or the
            validation rows would leave none for training.
    """
    data = config.data
    key = {"train": "train_rows", "test": "test_rows", "corruption": "test_rows"}.get(plan.kind)
    if key and (getattr(data, key) or 0) > size:
        raise ConfigError(
            f"{config.source}: data.{key}={getattr(data, key)} but the {plan.kind} set has only {size} images; "
            f"lower data.{key}, or set it to null for all of them"
        )
    if plan.kind == "val" and data.val_path:
        return _draw(size, None if data.val_rows is None else min(data.val_rows, size), data.seed, 3)
    if plan.kind == "train" and data.val_path:
        return _draw(size, data.train_rows, data.seed, 0) if data.train_rows is not None else np.arange(size)
    if plan.kind in ("train", "val"):
        held_out = held_out_rows(config, size)
        order = np.random.default_rng([data.seed, 0]).permutation(size)
        val, rest = np.sort(order[:held_out]), order[held_out:]
        if plan.kind == "train" and data.train_rows is None:
            return np.arange(size)  # all rows: training leaves the val rows out (`training_rows`)
        if data.train_rows is not None and data.train_rows > len(rest):
            raise ConfigError(
                f"{config.source}: data.train_rows={data.train_rows} but only {len(rest)} train images remain "
                f"after the {held_out} validation rows; lower data.train_rows or data.val_rows, or set "
                "data.train_rows to null for all of them"
            )
        return np.sort(rest[: data.train_rows]) if plan.kind == "train" else val
    if plan.kind in ("test", "corruption"):
        test = _draw(size, data.test_rows, data.seed, 1) if data.test_rows is not None else np.arange(size)
        if plan.kind == "corruption" and data.corruption_rows is not None:
            if data.corruption_rows > len(test):
                raise ConfigError(
                    f"{config.source}: data.corruption_rows={data.corruption_rows} exceeds the {len(test)} test rows"
                )
            test = test[: data.corruption_rows]
        return test
    if plan.kind == "subset":
        return np.arange(size)
    evaluated = size if data.ood_rows is None else min(data.ood_rows, size)
    if plan.kind == "ood":
        return _draw(size, evaluated, data.seed, 2)
    if data.disagreement_set in data.subset_sets:  # the paper's ImageNet-R: a test set too
        return np.arange(size)[: data.disagreement_rows]
    left = np.random.default_rng([data.seed, 2]).permutation(size)[evaluated:]  # rows the OOD split never uses
    if len(left) == 0 or (data.disagreement_rows or 0) > len(left):
        raise ConfigError(
            f"{config.source}: data.disagreement_set {data.disagreement_set} has {size} images and the evaluation uses "
            f"{evaluated} (data.ood_rows), leaving {len(left)} for data.disagreement_rows={data.disagreement_rows}; "
            "lower data.ood_rows or data.disagreement_rows"
        )
    return np.sort(left[: data.disagreement_rows])


def check_sources(config: RunConfig) -> None:
    """Before stage 01 computes anything: what listing the data and reading the params can find.

    Your image folders or feature files (``data.dataset`` folder or features) are listed or read, every set
    once: missing folders and files, empty class folders, class folders that differ between the sets, a
    single class, files that are not feature files, features too large for ``cache.dtype: float16``. Then
    every split's rows are drawn (a row count larger than its set). A ``timm:`` backbone's name and weights are checked
    (`sedlib.backbones.timm_models.check_timm_backbone`).

    Raises:
        sedlib.errors.UserError: the first problem found, naming its folder, file or params key.
    """
    data, cache = config.data, config.cache
    if data.dataset in OWN_DATASETS:
        sizes: dict[str, int] = {}
        for plan in plan_splits(config):
            name = _own_set_name(config, plan)
            if name not in sizes:
                sizes[name] = len(_source_set(config, plan))
            split_rows(config, plan, sizes[name])
    if data.dataset == "features" and cache.dtype == "float16":
        limit = float(np.finfo(np.float16).max)
        for arrays in feature_sets(config).values():
            largest = float(np.abs(arrays.features).max(initial=0))
            if largest > limit:
                raise ConfigError(
                    f"{config.source}: {arrays.path} holds features up to {largest:.4g} in magnitude, beyond float16 "
                    f"({limit:g}): set cache.dtype: float32"
                )
    if cache.backbone.startswith(TIMM_PREFIX) and data.dataset != "features":
        check_timm_backbone(cache.backbone, cache.pretrained, resolve_path(cache.weights) if cache.weights else "")


def held_out_rows(config: RunConfig, size: int) -> int:
    """How many of a train set's ``size`` rows are held out for validation (no ``data.val_path``).

    ``data.val_rows``, or with ``val_rows: null`` ``round(val_fraction * size)``, at least 1 and at most
    ``size - 1``.

    Raises:
        ConfigError: the validation rows would leave no row for training.
    """
    data = config.data
    if data.val_rows is None:
        return min(max(1, round(data.val_fraction * size)), size - 1)
    if data.val_rows >= size:
        raise ConfigError(
            f"{config.source}: data.val_rows={data.val_rows} holds out every one of the {size} training images, "
            "leaving none to train on; lower data.val_rows, give data.val_path, or set data.val_rows to null to "
            f"hold out data.val_fraction ({data.val_fraction}) of them"
        )
    return data.val_rows


def training_rows(train_index: np.ndarray, val_index: np.ndarray | None) -> np.ndarray:
    """Positions of the train split's rows that training uses: those whose row id is not a val row.

    Args:
        train_index: ``(N,)`` row ids of the cached train split.
        val_index: ``(N_val,)`` row ids of the val split, or None when the test split validates.

    Returns:
        ``(n,)`` sorted positions into the train split.
    """
    if val_index is None:
        return np.arange(len(train_index))
    return np.flatnonzero(~np.isin(train_index, val_index))


def source_images(config: RunConfig, plan: SplitPlan):
    """The images of a split and their row ids in their source set.

    Returns:
        ``(images, index)``: the whole source set (a `sedlib.data.ImageSet` for Fashion-MNIST, a
        `sedlib.data.imagenet.ImageFolderSet` for ImageNet and your image folders, a
        `sedlib.data.feature_files.FeatureArrays` for your features) and ``index`` (N,) int64 row ids.
    """
    images = _source_set(config, plan)
    return images, split_rows(config, plan, len(images))


def _source_set(config: RunConfig, plan: SplitPlan):
    data = config.data
    if data.dataset == "fashion_mnist":
        if plan.kind in ("train", "val"):
            return load_fashion_mnist("train")
        if plan.kind in ("test", "corruption"):
            return load_fashion_mnist("test")
        return SOURCES[data.disagreement_set if plan.kind == "disagreement" else plan.name]()
    if data.dataset == "folder":
        return _own_folder_set(config, plan)
    if data.dataset == "features":
        return feature_sets(config)[_own_set_name(config, plan)]
    if plan.kind in ("train", "val"):
        return imagenet.imagenet_split(imagenet.dataset_folder(data, "imagenet"), "train")
    if plan.kind == "test":
        return imagenet.imagenet_split(imagenet.dataset_folder(data, "imagenet"), "val")
    if plan.kind == "corruption":
        return imagenet.imagenet_c_split(imagenet.dataset_folder(data, "imagenet_c"), plan.corruption, plan.severity)
    name = data.disagreement_set if plan.kind == "disagreement" else plan.name
    if name in data.subset_sets or plan.kind == "subset":
        return imagenet.subset_split(imagenet.dataset_folder(data, name), name)
    return imagenet.ood_folder(imagenet.dataset_folder(data, name), name)


def _own_set_name(config: RunConfig, plan: SplitPlan) -> str:
    """Which of your sets a split is read from: ``train``, ``val``, ``test`` or an OOD set's name."""
    data = config.data
    if plan.kind in ("train", "val"):
        return "val" if plan.kind == "val" and data.val_path else "train"
    if plan.kind in ("test", "corruption"):
        return "test"
    return data.disagreement_set if plan.kind == "disagreement" else plan.name


def _own_folder_set(config: RunConfig, plan: SplitPlan):
    data = config.data
    name = _own_set_name(config, plan)
    if name not in ("train", "val", "test"):
        return ood_folder_set(resolve_path(data.ood_paths[name]), name)
    path = resolve_path(getattr(data, f"{name}_path"))
    classes = None if name == "train" else folder_classes(resolve_path(data.train_path))
    return class_folder_set(path, name, classes)


def feature_sets(config: RunConfig) -> dict[str, FeatureArrays]:
    """Your feature files (``data.dataset: features``) by set name, read and checked together (`check_feature_sets`).

    Raises:
        FileNotFoundError: a file is missing.
        sedlib.data.feature_files.FeatureFileError: a file cannot be used (named in the message).
    """
    data = config.data
    named = {"train": data.train_path, "val": data.val_path, "test": data.test_path}
    files = [(name, str(resolve_path(path)), True) for name, path in named.items() if path]
    files += [(name, str(resolve_path(path)), False) for name, path in data.ood_paths.items()]
    stamps = tuple(Path(path).stat().st_mtime_ns if Path(path).is_file() else 0 for _, path, _ in files)
    return _read_feature_sets(tuple(files), stamps)


@functools.lru_cache(maxsize=1)
def _read_feature_sets(files: tuple[tuple[str, str, bool], ...], stamps: tuple[int, ...]) -> dict:
    """The files read once per process while unchanged (``stamps``: their modification times)."""
    sets = {name: read_feature_file(path, name, labelled) for name, path, labelled in files}
    check_feature_sets(sets)
    return sets


def class_names(config: RunConfig) -> tuple[str, ...]:
    """The names of the run's classes: Fashion-MNIST's, ImageNet's wnids, your class folders or feature files'."""
    data = config.data
    if data.dataset == "fashion_mnist":
        return FASHION_MNIST_CLASSES
    if data.dataset == "folder":
        return folder_classes(resolve_path(data.train_path))
    if data.dataset == "features":
        return check_feature_sets(feature_sets(config))
    return imagenet_wnids()


def image_size(config: RunConfig) -> int:
    """The side of the backbone's input: ``cache.image_size``, else a ``timm:`` model's pretrained input size."""
    if config.cache.image_size is not None:
        return config.cache.image_size
    return timm_input(config.cache.backbone).image_size


def published_file(config: RunConfig, plan: SplitPlan) -> Path | None:
    """The authors' feature file for a split in ``cache.import_dir``, or None (the val split never has one)."""
    if plan.kind in ("val", "disagreement"):
        return None
    try:
        return find_published_file(resolve_path(config.cache.import_dir), plan.name)
    except FileNotFoundError:
        return None
