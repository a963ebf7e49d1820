"""Stage 01: images -> frozen backbone -> one HDF5 feature file per split.

The paper caches DeiT-3-B features of ImageNet (four augmented passes of the training set, the
validation set, ImageNet-C, and the OOD sets) once, and trains every head on the cache. The embedded
study does the same on Fashion-MNIST with EfficientNet-Lite0 (DESIGN.md, "The embedded default run"):

=====================  =====================================================================
split                  images
=====================  =====================================================================
``train``              ``train_rows`` Fashion-MNIST train images, P augmented passes
``val``                ``val_rows`` other train images, clean (model selection, curves)
``test``               ``test_rows`` Fashion-MNIST test images, clean (the ImageNet-val analog)
``<corruption>-<s>``   the first ``corruption_rows`` test images, corrupted at severity s
``animal_mnist`` ...   semantic-OOD sets, labels -1
=====================  =====================================================================

Every image is turned into a ``image_size`` RGB input first (grey replicated), then augmented or
corrupted, so corruptions act at the resolution the backbone sees. Each split's manifest carries a
hash of every setting its content depends on; a later stage that reads a split checks it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sedlib.backbones import augment, extract_features, load_backbone, to_model_input
from sedlib.config import RunConfig
from sedlib.data import SOURCES, corrupt_images, load_fashion_mnist
from sedlib.features import SplitManifest, StaleFeaturesError, read_split, split_status, write_split
from sedlib.rundir import RunDir

FEATURE_FORMAT = "sedlib.cache/1"


@dataclass(frozen=True)
class SplitPlan:
    """One split to cache.

    Attributes:
        name: file stem, e.g. ``train``, ``test``, ``fog-5``, ``digits``.
        kind: ``train``, ``val``, ``test``, ``corruption`` or ``ood``.
        passes: augmentation passes (``train`` only; 1 otherwise).
        corruption: corruption name (``corruption`` splits).
        severity: corruption severity (``corruption`` splits).
    """

    name: str
    kind: str
    passes: int = 1
    corruption: str | None = None
    severity: int | None = None


def plan_splits(config: RunConfig) -> list[SplitPlan]:
    """The splits a run caches, in the order they are written."""
    data = config.data
    plans = [
        SplitPlan("train", "train", passes=config.cache.augmentation_passes),
        SplitPlan("val", "val"),
        SplitPlan("test", "test"),
    ]
    plans += [
        SplitPlan(corruption_split(c, s), "corruption", corruption=c, severity=s)
        for s in data.severities
        for c in data.corruptions
    ]
    plans += [SplitPlan(name, "ood") for name in data.ood_sets]
    return plans


def corruption_split(corruption: str, severity: int) -> str:
    """File stem of a corrupted copy of the test split, e.g. ``fog-5``."""
    return f"{corruption}-{severity}"


def split_hash(config: RunConfig, plan: SplitPlan) -> str:
    """Hash of every setting the split's content depends on (batching and ``rebuild`` excluded)."""
    cache = {k: v for k, v in config.to_dict()["cache"].items() if k not in ("batch_size", "chunk_rows", "rebuild")}
    payload = {"format": FEATURE_FORMAT, "data": config.to_dict()["data"], "cache": cache, "split": plan.__dict__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _draw(rows: int, count: int | None, seed: int, stream: int) -> np.ndarray:
    """``count`` distinct row ids of ``rows``, in a seeded random order (all when count is None)."""
    order = np.random.default_rng([seed, stream]).permutation(rows)
    if count is not None and count > rows:
        raise ValueError(f"asked for {count} rows of a set with {rows}")
    return np.sort(order[:count]) if count is not None else order


def source_images(config: RunConfig, plan: SplitPlan):
    """The images of a split and their row ids in their source set.

    Returns:
        ``(image_set, index)``: the full `sedlib.data.ImageSet` and ``index`` (N,) int64 row ids.
    """
    data = config.data
    if plan.kind in ("train", "val"):
        images = load_fashion_mnist("train")
        available = len(images) - data.val_rows
        order = _draw(len(images), None, data.seed, 0)
        val, rest = np.sort(order[: data.val_rows]), order[data.val_rows :]
        if data.train_rows is not None and data.train_rows > available:
            raise ValueError(
                f"{config.source}: data.train_rows={data.train_rows} but only {available} train images remain "
                f"after the {data.val_rows} validation rows"
            )
        train = np.sort(rest[: data.train_rows] if data.train_rows is not None else rest)
        return images, (train if plan.kind == "train" else val)
    if plan.kind in ("test", "corruption"):
        images = load_fashion_mnist("test")
        test = _draw(len(images), data.test_rows, data.seed, 1)
        if plan.kind == "corruption":
            if data.corruption_rows > len(test):
                raise ValueError(
                    f"{config.source}: data.corruption_rows={data.corruption_rows} exceeds the {len(test)} test rows"
                )
            test = test[: data.corruption_rows]
        return images, test
    images = SOURCES[plan.name]()
    rows = len(images) if data.ood_rows is None else min(data.ood_rows, len(images))
    return images, _draw(len(images), rows, data.seed, 2)


def cache_features(config: RunConfig, run: RunDir, progress: bool = True) -> pd.DataFrame:
    """Cache every split of ``config`` into ``run.features``, resuming or reusing what is there.

    A finished split whose settings match is reused; an interrupted one continues after its last
    complete chunk; one made with other settings is refused unless ``cache.rebuild`` is set.

    Returns:
        One row per split: ``split``, ``kind``, ``rows``, ``passes``, ``status`` (what was found
        before: missing / partial / complete), ``seconds`` spent now, ``file``.
    """
    cache, data = config.cache, config.data
    device = resolve_device(config.device)
    backbone = load_backbone(cache.backbone, pretrained=True, device=device)
    rows = []
    for plan in plan_splits(config):
        images, index = source_images(config, plan)
        if plan.kind == "train":
            transform = f"augmented: random resized crop scale {list(cache.augmentation_scale)} + flip"
        elif plan.kind == "corruption":
            transform = f"{plan.corruption} severity {plan.severity} (imagecorruptions), seed {data.seed}"
        else:
            transform = "clean"
        manifest = SplitManifest(
            split=plan.name,
            source=f"{images.name} ({images.origin}), {len(index)} rows, seed {data.seed}",
            backbone=f"{backbone.name} [{backbone.weights}]",
            transform=f"grey->RGB {cache.image_size}px bilinear; {transform}",
            passes=plan.passes,
            rows=len(index),
            feature_dim=backbone.feature_dim,
            dtype=cache.dtype,
            params_hash=split_hash(config, plan),
        )
        path = run.features / f"{plan.name}.h5"
        status = split_status(path, manifest)

        def compute(pass_index, start, stop, plan=plan, images=images, index=index):
            rows_index = index[start:stop]
            batch = to_model_input(images.images[rows_index], cache.image_size)
            if plan.kind == "train":
                batch = augment(batch, data.seed, pass_index, rows_index, scale=tuple(cache.augmentation_scale))
            elif plan.kind == "corruption":
                batch = corrupt_images(batch, plan.corruption, plan.severity, data.seed, rows_index)
            features = extract_features(backbone, batch, cache.batch_size, device=device)
            return features, images.labels[rows_index], rows_index

        started = time.perf_counter()
        write_split(path, manifest, compute, chunk_rows=cache.chunk_rows, progress=progress, rebuild=cache.rebuild)
        rows.append(
            {
                "split": plan.name,
                "kind": plan.kind,
                "rows": len(index),
                "passes": plan.passes,
                "status": status,
                "seconds": round(time.perf_counter() - started, 1),
                "file": path.name,
            }
        )
    return pd.DataFrame(rows)


def load_split(config: RunConfig, run: RunDir, name: str):
    """Read a cached split and check it was made with this run's settings.

    Returns:
        A `sedlib.features.FeatureSplit`.

    Raises:
        FileNotFoundError: the split was never cached (run notebooks/01_cache).
        sedlib.features.StaleFeaturesError: it was cached with other settings.
    """
    plans = {plan.name: plan for plan in plan_splits(config)}
    if name not in plans:
        raise KeyError(f"{config.source}: no split {name!r} in this run; its splits are {list(plans)}")
    path = run.features / f"{name}.h5"
    split = read_split(path)
    expected = split_hash(config, plans[name])
    if split.manifest.params_hash != expected:
        raise StaleFeaturesError(
            f"{path} was cached with other settings (params hash {split.manifest.params_hash}, this run's is "
            f"{expected}); rerun notebooks/01_cache (python -m sedlib.run {config.source})"
        )
    return split


def resolve_device(device: str):
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for, but torch sees no GPU; set device: auto or cpu")
    return torch.device(device)


def example_inputs(config: RunConfig, count: int = 8) -> dict[str, np.ndarray]:
    """A few backbone inputs of each kind, made exactly as `cache_features` makes them.

    Returns:
        Row title -> ``(count, S, S, 3)`` uint8 images: clean train images, their first augmented
        pass, clean test images, the first and last configured corruption at the highest severity,
        and each OOD set.
    """
    size, seed = config.cache.image_size, config.data.seed
    rows = {}
    plans = {plan.name: plan for plan in plan_splits(config)}

    def spread(index: np.ndarray) -> np.ndarray:  # evenly over the split: sources are often sorted by class
        return index[np.linspace(0, len(index) - 1, min(count, len(index))).astype(int)]

    images, index = source_images(config, plans["train"])
    chosen = spread(index)
    rows["train"] = to_model_input(images.images[chosen], size)
    rows["train, augmented"] = augment(rows["train"], seed, 0, chosen, scale=tuple(config.cache.augmentation_scale))
    images, index = source_images(config, plans["test"])
    chosen = spread(index)
    rows["test"] = to_model_input(images.images[chosen], size)
    severity = max(config.data.severities)
    for corruption in dict.fromkeys((config.data.corruptions[0], config.data.corruptions[-1])):
        rows[f"{corruption} {severity}"] = corrupt_images(rows["test"], corruption, severity, seed, chosen)
    for name in config.data.ood_sets:
        images, index = source_images(config, plans[name])
        rows[name] = to_model_input(images.images[spread(index)], size)
    return rows
