"""Which splits a study caches, which rows each holds, where their images come from, and the hash of each.

A split's plan (`SplitPlan`, `plan_splits`) names it and says what it holds; its hash (`split_hash`) covers
exactly the settings its content depends on, so changing the number of OOD rows never invalidates the training
passes. `split_rows` (`sedlib.data.plan`) draws a split's rows in its source set, `source_images` gives the
images (or features) they are read from, and `check_sources` finds what listing the data can find before stage
01 starts; the study's `sedlib.data.datasource.DataSource` (`sedlib.data.registry.data_source`) answers for
its dataset. Stage 01
(`sedlib.study.extract`) writes one HDF5 file per split; `sedlib.study.cached` reads them back.

Example:
    >>> from sedlib.config import load_config
    >>> [plan.name for plan in plan_splits(load_config("params/smoke.yaml"))][:4]
    ['train', 'val', 'test', 'gaussian_noise-1']
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sedlib.config import RunConfig, resolve_path
from sedlib.data.plan import (
    DISAGREEMENT_SPLIT,
    SplitPlan,
    corruption_split,
    held_out_rows,
    image_size,
    split_rows,
    training_rows,
)
from sedlib.data.published_features import find_published_file
from sedlib.data.registry import data_source

__all__ = [
    "DISAGREEMENT_SPLIT",
    "FEATURE_FORMAT",
    "SplitPlan",
    "check_sources",
    "class_names",
    "corruption_split",
    "held_out_rows",
    "image_size",
    "plan_splits",
    "published_file",
    "source_images",
    "split_hash",
    "split_rows",
    "training_rows",
]

FEATURE_FORMAT = "sedlib.cache/2"


def plan_splits(config: RunConfig) -> list[SplitPlan]:
    """The splits a run caches, in the order they are written."""
    data = config.data
    passes = config.cache.augmentation_passes if data_source(config).has_images else 1  # features: nothing to augment
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


_DATA_KEYS = {
    "train": ("train_rows", "val_rows"),
    "val": ("val_rows",),
    "test": ("test_rows",),
    "corruption": ("test_rows", "corruption_rows"),
    "subset": (),
    "ood": ("ood_rows",),
    "disagreement": ("ood_rows", "disagreement_set", "disagreement_rows"),
}


_CACHE_KEYS = ("backbone", "image_size", "dtype", "pretrained")


def split_hash(config: RunConfig, plan: SplitPlan) -> str:
    """Hash of the settings a split's content depends on, and of nothing else.

    Batching, paths, ``rebuild`` and the settings of other splits are left out: the OOD rows do not
    change the training passes. The augmentation enters only the train split, the protocol only the
    ImageNet-C splits (it decides their transform).
    """
    data, cache = config.to_dict()["data"], config.to_dict()["cache"]
    source = data_source(config)
    keys = _DATA_KEYS[plan.kind]
    if plan.kind == "train" and data["train_rows"] is None:
        keys = ("train_rows",)
    if "val_rows" in keys and data["val_rows"] is None:
        keys = (*keys, "val_fraction")
    payload = {
        "format": FEATURE_FORMAT,
        "dataset": source.name,
        "seed": data["seed"],
        "data": {key: data[key] for key in keys},
        "cache": {key: cache[key] for key in _CACHE_KEYS},
        "split": plan.__dict__,
    }
    if plan.kind == "train":
        payload["augmentation"] = [cache["augmentation_passes"], cache["augmentation_scale"]]
    payload |= source.hash_payload(plan)  # e.g. the eval transform, the protocol, your data's paths
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def check_sources(config: RunConfig) -> None:
    """Before stage 01 computes anything: what listing the data and reading the params can find.

    The study's source checks itself (`sedlib.data.datasource.DataSource.check`): the Fashion-MNIST files are
    found; your image folders or feature files are listed or read, every set once (missing folders and files,
    empty class folders, class folders that differ between the sets, a single class, files that are not feature
    files, features too large for ``cache.dtype: float16``), then every split's rows are drawn (a row count larger
    than its set); a ``timm:`` backbone's name and weights are checked
    (`sedlib.backbones.timm_models.check_timm_backbone`).

    Raises:
        sedlib.errors.UserError: the first problem found, naming its folder, file or params key.
    """
    data_source(config).check(plan_splits(config))


def source_images(config: RunConfig, plan: SplitPlan):
    """The images of a split and their row ids in their source set.

    Returns:
        ``(images, index)``: the whole source set (`sedlib.data.datasource.DataSource.source_set`: a
        `sedlib.data.ImageSet` for Fashion-MNIST, a `sedlib.data.imagenet.ImageFolderSet` for ImageNet and your
        image folders, a `sedlib.data.feature_files.FeatureArrays` for your features) and ``index`` (N,) int64
        row ids.
    """
    images = data_source(config).source_set(plan)
    return images, split_rows(config, plan, len(images))


def class_names(config: RunConfig) -> tuple[str, ...]:
    """The names of the run's classes: Fashion-MNIST's, ImageNet's wnids, your class folders or feature files'."""
    return data_source(config).class_names()


def published_file(config: RunConfig, plan: SplitPlan) -> Path | None:
    """The authors' feature file for a split in ``cache.import_dir``, or None (the val split never has one)."""
    if plan.kind in ("val", "disagreement"):
        return None
    try:
        return find_published_file(resolve_path(config.cache.import_dir), plan.name)
    except FileNotFoundError:
        return None
