"""Stage 01: images -> frozen backbone -> one HDF5 feature file per split.

The paper caches DeiT-3-B features of ImageNet (four augmented passes of the training set, the
validation set, ImageNet-C, ImageNet-A/R and the OOD sets) once, and trains every head on the cache.
Both studies of this project follow that plan (``data.dataset``):

=====================  ====================================  ======================================
split                  ``fashion_mnist`` (embedded default)   ``imagenet`` (the paper)
=====================  ====================================  ======================================
``train``              ``train_rows`` train images, P passes  ImageNet train, P augmented passes
``val``                ``val_rows`` other train images        ``val_rows`` other train images (none
                                                              when 0: the test split validates)
``test``               Fashion-MNIST test                     ImageNet val (Resize 256, crop 224)
``<corruption>-<s>``   test images, corrupted here            ImageNet-C; ``faithful``: resized 256
                                                              and cropped as published, ``standard``:
                                                              as they are
``imagenet_a/_r``      --                                     200-class sets, labels 0..199
OOD sets, labels -1    ``animal_mnist``, ``digits``           ``inaturalist``, ``openimage_o``
=====================  ====================================  ======================================

A split whose settings match a finished file is reused; an interrupted one resumes after its last
complete chunk. Each split's manifest carries a hash of exactly the settings its content depends on
(`split_hash`), which a later stage checks, so changing the number of OOD rows never invalidates the
training passes. With ``cache.import_dir``, splits found among the authors' released feature files
(`sedlib.published_features`) are imported instead of computed.

The features of a chunk of ``cache.chunk_rows`` rows depend on that chunk alone: augmentations and
corruptions are seeded per image (``(seed, pass, row)``), and backbone batches never cross a chunk
boundary. That is what lets several processes share the work (`sedlib.distributed`):

::

    python -m sedlib.cache params/<run>.yaml [--run-dir DIR] [--set KEY=VALUE ...]
    torchrun --nproc-per-node 4 -m sedlib.cache params/<run>.yaml       # one process per GPU

The run directory is locked while caching (`sedlib.rundir.RunDir.lock`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sedlib.backbones import FrozenBackbone, augment, extract_features, load_backbone, to_model_input
from sedlib.config import RunConfig, load_config, parse_overrides, resolve_path
from sedlib.data import SOURCES, corrupt_images, load_fashion_mnist
from sedlib.distributed import Ranks, process_group, run_lock, write_sharded
from sedlib.ensemble import HeadEnsemble
from sedlib.features import SplitManifest, StaleFeaturesError, read_split, split_status, write_split
from sedlib.rundir import RunDir
from sedlib.stages import has_pretrained_head

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
    plans = [SplitPlan("train", "train", passes=config.cache.augmentation_passes)]
    if data.val_rows > 0:
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
        plans = [
            SplitPlan(**{**plan.__dict__, "imported": _published_file(config, plan) is not None}) for plan in plans
        ]
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
    if plan.kind == "corruption" and data["dataset"] == "imagenet":
        payload["protocol"] = config.protocol
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _draw(rows: int, count: int | None, seed: int, stream: int) -> np.ndarray:
    """``count`` distinct row ids of ``rows``, sorted (all when count is None), drawn with a seeded permutation."""
    order = np.random.default_rng([seed, stream]).permutation(rows)
    if count is not None and count > rows:
        raise ValueError(f"asked for {count} rows of a set with {rows}")
    return np.sort(order[:count]) if count is not None else np.sort(order)


def split_rows(config: RunConfig, plan: SplitPlan, size: int) -> np.ndarray:
    """Row ids (sorted) of a split in its source set of ``size`` rows.

    ``train`` and ``val`` share the train set: ``val`` is a seeded draw of ``val_rows``, and
    ``train`` is ``train_rows`` of the rest, or, with ``train_rows: null``, every row (so that the
    expensive training passes do not depend on ``val_rows``; training drops the val rows by their
    row ids, `training_rows`). The corrupted splits take the first ``corruption_rows`` of
    the test rows (ImageNet-C holds the validation images in the same order).
    """
    data = config.data
    if plan.kind in ("train", "val"):
        order = np.random.default_rng([data.seed, 0]).permutation(size)
        val, rest = np.sort(order[: data.val_rows]), order[data.val_rows :]
        if plan.kind == "train" and data.train_rows is None:
            return np.arange(size)  # all rows: training leaves the val rows out (`training_rows`)
        if data.train_rows is not None and data.train_rows > len(rest):
            raise ValueError(
                f"{config.source}: data.train_rows={data.train_rows} but only {len(rest)} train images remain "
                f"after the {data.val_rows} validation rows"
            )
        return np.sort(rest[: data.train_rows]) if plan.kind == "train" else val
    if plan.kind in ("test", "corruption"):
        test = _draw(size, data.test_rows, data.seed, 1) if data.test_rows is not None else np.arange(size)
        if plan.kind == "corruption" and data.corruption_rows is not None:
            if data.corruption_rows > len(test):
                raise ValueError(
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
        raise ValueError(
            f"{config.source}: data.disagreement_set {data.disagreement_set} has {size} images and the evaluation uses "
            f"{evaluated} (data.ood_rows), leaving {len(left)} for data.disagreement_rows={data.disagreement_rows}; "
            "lower data.ood_rows or data.disagreement_rows"
        )
    return np.sort(left[: data.disagreement_rows])


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
        `sedlib.data.imagenet.ImageFolderSet` for ImageNet) and ``index`` (N,) int64 row ids.
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
    from sedlib.data import imagenet

    if plan.kind in ("train", "val"):
        return imagenet.imagenet_split(data.folder("imagenet"), "train")
    if plan.kind == "test":
        return imagenet.imagenet_split(data.folder("imagenet"), "val")
    if plan.kind == "corruption":
        return imagenet.imagenet_c_split(data.folder("imagenet_c"), plan.corruption, plan.severity)
    name = data.disagreement_set if plan.kind == "disagreement" else plan.name
    if name in data.subset_sets or plan.kind == "subset":
        return imagenet.subset_split(data.folder(name), name)
    return imagenet.ood_folder(data.folder(name), name)


def _published_file(config: RunConfig, plan: SplitPlan) -> Path | None:
    """The authors' feature file for a split in ``cache.import_dir``, or None (the val split never has one)."""
    from sedlib.published_features import find_published_file

    if plan.kind in ("val", "disagreement"):
        return None
    try:
        return find_published_file(resolve_path(config.cache.import_dir), plan.name)
    except FileNotFoundError:
        return None


def _transform(config: RunConfig, plan: SplitPlan) -> str:
    """The `sedlib.data.imagenet` transform of an ImageNet split."""
    if plan.kind == "train":
        return "train"
    if plan.kind == "corruption" and config.protocol == "standard":
        return "as_is"
    return "eval"


def _describe_transform(config: RunConfig, plan: SplitPlan) -> str:
    cache, data = config.cache, config.data
    if data.dataset == "fashion_mnist":
        if plan.kind == "train":
            what = f"augmented: random resized crop scale {list(cache.augmentation_scale)} + flip"
        elif plan.kind == "corruption":
            what = f"{plan.corruption} severity {plan.severity} (imagecorruptions), seed {data.seed}"
        else:
            what = "clean"
        return f"grey->RGB {cache.image_size}px bilinear; {what}"
    from sedlib.data.imagenet import resize_size

    size = cache.image_size
    return {
        "train": f"random resized crop {size} scale {list(cache.augmentation_scale)} + flip, seed {data.seed}",
        "eval": f"resize {resize_size(size)} + centre crop {size} (bilinear)",
        "as_is": f"as stored ({size}x{size}; others resized to {size} and centre-cropped)",
    }[_transform(config, plan)]


def chunk_batches(start: int, rows: int, chunk_rows: int, batch_size: int) -> list[range]:
    """Backbone batches over rows ``[start, rows)``, as positions from ``start``, cut at every chunk boundary.

    Within each chunk of ``chunk_rows`` rows the batches are those `extract_features` makes of that
    chunk alone (``batch_size`` rows from the chunk's start, the last one shorter), so the features
    of a chunk do not depend on where a process began.

    Example:
        >>> [(b.start, b.stop) for b in chunk_batches(2, 12, chunk_rows=8, batch_size=5)]
        [(0, 3), (3, 6), (6, 10)]
    """
    batches = []
    for chunk in range(start - start % chunk_rows, rows, chunk_rows):
        end = min(chunk + chunk_rows, rows)
        for first in range(chunk, end, batch_size):
            low, high = max(first, start), min(first + batch_size, end)
            if low < high:
                batches.append(range(low - start, high - start))
    return batches


class _FolderStream:
    """Features of one ImageNet split, computed through a DataLoader and handed out chunk by chunk.

    `sedlib.features.write_split` asks for consecutive row ranges of each pass in order; the loader
    keeps running across chunks, and is restarted only when a pass begins or a write resumes. Its
    batches never cross a chunk boundary (`chunk_batches`).
    """

    def __init__(self, backbone: FrozenBackbone, images, index: np.ndarray, config: RunConfig, plan: SplitPlan):
        self.backbone, self.images, self.index, self.config, self.plan = backbone, images, index, config, plan
        self.device = next(backbone.parameters()).device
        self.position: tuple[int, int] | None = None
        self.batches = None
        self.pending: list[np.ndarray] | None = None

    def _restart(self, pass_index: int, start: int) -> None:
        from sedlib.data.imagenet import FolderImages, image_loader

        cache = self.config.cache
        dataset = FolderImages(
            self.images,
            self.index[start:],
            _transform(self.config, self.plan),
            image_size=cache.image_size,
            seed=self.config.data.seed,
            pass_index=pass_index,
            scale=tuple(cache.augmentation_scale),
        )
        batches = chunk_batches(start, len(self.index), cache.chunk_rows, cache.batch_size)
        self.batches = iter(
            image_loader(
                dataset, cache.batch_size, cache.loader_workers, pin_memory=self.device.type == "cuda", batches=batches
            )
        )
        self.pending = None

    def __call__(self, pass_index: int, start: int, stop: int):
        if self.position != (pass_index, start):
            self._restart(pass_index, start)
        parts = [self.pending] if self.pending is not None else []
        have = 0 if self.pending is None else len(self.pending[0])
        while have < stop - start:
            images, labels, index = next(self.batches)
            with torch.inference_mode():
                x = images.to(self.device, non_blocking=True).float().div_(255)
                features = self.backbone(x).float().cpu().numpy()
            parts.append([features, labels.numpy(), index.numpy()])
            have += len(features)
        joined = [np.concatenate([part[k] for part in parts]) for k in range(3)]
        need = stop - start
        self.pending = [column[need:] for column in joined] if have > need else None
        self.position = (pass_index, stop)
        return tuple(column[:need] for column in joined)


def _array_compute(backbone, images, index: np.ndarray, config: RunConfig, plan: SplitPlan):
    """Chunks of a Fashion-MNIST-family split: resize, augment or corrupt, extract."""
    cache, data = config.cache, config.data
    device = next(backbone.parameters()).device

    def compute(pass_index, start, stop):
        rows = index[start:stop]
        batch = to_model_input(images.images[rows], cache.image_size)
        if plan.kind == "train":
            batch = augment(batch, data.seed, pass_index, rows, scale=tuple(cache.augmentation_scale))
        elif plan.kind == "corruption":
            batch = corrupt_images(batch, plan.corruption, plan.severity, data.seed, rows)
        return extract_features(backbone, batch, cache.batch_size, device=device), images.labels[rows], rows

    return compute


def _imported_compute(published, index: np.ndarray, plan: SplitPlan):
    """Chunks read from the authors' file; their OOD sets label every image 0, ours -1."""

    def compute(pass_index, start, stop):
        features, labels, rows = published.read(pass_index, index[start:stop])
        if plan.kind == "ood":
            labels = np.full_like(labels, -1)
        return features, labels, rows

    return compute


def cache_features(config: RunConfig, run: RunDir, progress: bool = True, ranks: Ranks | None = None) -> pd.DataFrame:
    """Cache every split of ``config`` into ``run.features``, resuming or reusing what is there.

    A finished split whose settings match is reused; an interrupted one continues after its last
    complete chunk; one made with other settings is refused unless ``cache.rebuild`` is set. The
    backbone is loaded only when a split has to be computed or it has a pretrained head of the SED
    head's form (DeiT-3-B), which is saved as ``features/pretrained_head.safetensors``. The run
    directory's lock is held throughout (`sedlib.rundir.RunDir.lock`).

    Args:
        config: the run.
        run: its directory.
        progress: show a progress bar per split (rank 0's only, under torchrun).
        ranks: this process's place among several (`sedlib.distributed`; every rank calls this
            function); one process when None.

    Returns:
        One row per split: ``split``, ``kind``, ``rows``, ``passes``, ``source`` (``images`` or
        ``imported``), ``status`` (what was found before: missing / partial / complete),
        ``seconds`` spent now, ``file``.
    """
    ranks = ranks or Ranks()
    with run_lock(run, ranks, f"stage 01 (feature caching) of {config.source}"):
        return _cache_splits(config, run, progress and ranks.is_main, ranks)


def _cache_splits(config: RunConfig, run: RunDir, progress: bool, ranks: Ranks) -> pd.DataFrame:
    cache, data = config.cache, config.data
    device = ranks.device(resolve_device(config.device))
    backbone: FrozenBackbone | None = None

    def get_backbone() -> FrozenBackbone:
        nonlocal backbone
        if backbone is None:
            backbone = load_backbone(
                cache.backbone,
                pretrained=cache.pretrained,
                device=device,
                weights=cache.weights or None,
                image_size=cache.image_size,
            )
        return backbone

    rows = []
    for plan in plan_splits(config):
        with contextlib.ExitStack() as stack:
            if plan.imported:
                from sedlib.published_features import PublishedFeatures

                path_in = _published_file(config, plan)
                published = stack.enter_context(PublishedFeatures(path_in, passes=plan.passes))
                index = split_rows(config, plan, published.rows)
                compute = _imported_compute(published, index, plan)
                source = f"{plan.name} imported from the authors' {path_in.name}, {len(index)} of {published.rows} rows"
                backbone_text = f"{cache.backbone} [as cached by the authors of arXiv:2409.16797]"
                transform = "the authors' caching transforms (sedlib.published_features)"
                feature_dim = published.feature_dim
            else:
                images, index = source_images(config, plan)
                net = get_backbone()
                if data.dataset == "fashion_mnist":
                    compute = _array_compute(net, images, index, config, plan)
                    source = f"{images.name} ({images.origin}), {len(index)} rows, seed {data.seed}"
                else:
                    compute = _FolderStream(net, images, index, config, plan)
                    source = f"{images.name}, {len(index)} of {len(images)} rows, seed {data.seed}"
                backbone_text = f"{net.name} [{net.weights}]"
                transform = _describe_transform(config, plan)
                feature_dim = net.feature_dim
            manifest = SplitManifest(
                split=plan.name,
                source=source,
                backbone=backbone_text,
                transform=transform,
                passes=plan.passes,
                rows=len(index),
                feature_dim=feature_dim,
                dtype=cache.dtype,
                params_hash=split_hash(config, plan),
            )
            path = run.path("features", plan.name)
            started = time.perf_counter()
            if ranks.world_size == 1:
                status = split_status(path, manifest)
                write_split(
                    path, manifest, compute, chunk_rows=cache.chunk_rows, progress=progress, rebuild=cache.rebuild
                )
            else:
                status = write_sharded(
                    path, manifest, compute, run.shards / plan.name, ranks, cache.chunk_rows, progress, cache.rebuild
                )
        rows.append(
            {
                "split": plan.name,
                "kind": plan.kind,
                "rows": len(index),
                "passes": plan.passes,
                "source": "imported" if plan.imported else "images",
                "status": status,
                "seconds": round(time.perf_counter() - started, 1),
                "file": path.name,
            }
        )
    if ranks.is_main:
        run.record(*(run.path("features", row["split"]) for row in rows))
        if has_pretrained_head(config):
            save_pretrained_head(get_backbone(), run)
    ranks.barrier()  # every rank returns once every file is in place
    splits = pd.DataFrame(rows)
    if ranks.is_main:
        run.save_csv("splits", splits)
    return splits


def save_pretrained_head(backbone: FrozenBackbone, run: RunDir) -> Path:
    """Write the backbone's own head (block-12 MLP, norm, classifier) as a one-member `HeadEnsemble`.

    Raises:
        ValueError: the backbone has no head of that form (e.g. EfficientNet-Lite0).
    """
    state = backbone.pretrained_head()
    if state is None:
        raise ValueError(
            f"backbone {backbone.name} has no pretrained head of the SED head's form; set eval.pretrained_head: "
            "false and head.init: random in the params file"
        )
    head = HeadEnsemble.from_member_state(state, num_members=1, norm_eps=backbone.head_norm_eps)
    with run.writing(run.path("pretrained_head"), run.path("pretrained_head_config")) as (weights, _):
        head.save(weights)
    return run.path("pretrained_head")


def load_pretrained_head(run: RunDir, device: str | torch.device = "cpu") -> HeadEnsemble:
    """The backbone's head that stage 01 saved (`save_pretrained_head`), verified against its recorded hash."""
    run.verified(run.path("pretrained_head_config"))
    return HeadEnsemble.load(run.verified(run.path("pretrained_head")), device=device)


def load_split(config: RunConfig, run: RunDir, name: str, lazy: bool = False):
    """Read a cached split and check it was made with this run's settings.

    ``val`` with ``data.val_rows: 0`` is the test split (the published code validates on ImageNet val).

    Args:
        config: the run.
        run: its directory.
        name: the split, e.g. ``train``, ``test``, ``fog-5``.
        lazy: leave the features on disk and read one pass per access (`sedlib.features.PassReader`).

    Returns:
        A `sedlib.features.FeatureSplit`.

    Raises:
        FileNotFoundError: the split was never cached (run notebooks/01_cache).
        sedlib.features.StaleFeaturesError: it was cached with other settings.
    """
    if name == "val" and config.data.val_rows == 0:
        name = "test"
    plans = {plan.name: plan for plan in plan_splits(config)}
    if name not in plans:
        raise KeyError(f"{config.source}: no split {name!r} in this run; its splits are {list(plans)}")
    path = run.path("features", name)
    split = read_split(path, lazy=lazy)
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


def _spread(index: np.ndarray, count: int) -> np.ndarray:
    """``count`` row ids spread evenly over a split (sources are often sorted by class)."""
    return index[np.linspace(0, len(index) - 1, min(count, len(index))).astype(int)]


def example_inputs(config: RunConfig, count: int = 8) -> dict[str, np.ndarray]:
    """A few backbone inputs of each kind, made exactly as `cache_features` makes them.

    Returns:
        Row title -> ``(count, S, S, 3)`` uint8 images: clean train images, their first augmented
        pass, clean test images, the first and last configured corruption at the highest severity,
        the class-subset sets and each OOD set. ImageNet sets whose folders are absent (features
        imported from the authors' files) are left out.
    """
    if config.data.dataset == "imagenet":
        return _folder_examples(config, count)
    size, seed = config.cache.image_size, config.data.seed
    rows = {}
    plans = {plan.name: plan for plan in plan_splits(config)}
    images, index = source_images(config, plans["train"])
    chosen = _spread(index, count)
    rows["train"] = to_model_input(images.images[chosen], size)
    rows["train, augmented"] = augment(rows["train"], seed, 0, chosen, scale=tuple(config.cache.augmentation_scale))
    images, index = source_images(config, plans["test"])
    chosen = _spread(index, count)
    rows["test"] = to_model_input(images.images[chosen], size)
    severity = max(config.data.severities)
    for corruption in dict.fromkeys((config.data.corruptions[0], config.data.corruptions[-1])):
        rows[f"{corruption} {severity}"] = corrupt_images(rows["test"], corruption, severity, seed, chosen)
    for name in config.data.ood_sets:
        images, index = source_images(config, plans[name])
        rows[name] = to_model_input(images.images[_spread(index, count)], size)
    return rows


def _folder_examples(config: RunConfig, count: int) -> dict[str, np.ndarray]:
    from sedlib.data.imagenet import FolderImages

    cache, seed = config.cache, config.data.seed
    severity = max(config.data.severities)
    corruptions = dict.fromkeys((config.data.corruptions[0], config.data.corruptions[-1]))
    wanted = {"train": SplitPlan("train", "train"), "train, augmented": SplitPlan("train", "train")}
    wanted["test"] = SplitPlan("test", "test")
    for corruption in corruptions:
        wanted[f"{corruption} {severity}"] = SplitPlan(
            corruption_split(corruption, severity), "corruption", corruption=corruption, severity=severity
        )
    wanted.update({name: SplitPlan(name, "subset") for name in config.data.subset_sets})
    wanted.update({name: SplitPlan(name, "ood") for name in config.data.ood_sets})
    rows = {}
    for title, plan in wanted.items():
        try:
            images, index = source_images(config, plan)
        except FileNotFoundError:
            continue
        transform = "eval" if title == "train" else _transform(config, plan)
        dataset = FolderImages(
            images, _spread(index, count), transform, cache.image_size, seed, 0, tuple(cache.augmentation_scale)
        )
        rows[title] = np.stack([dataset[i][0].permute(1, 2, 0).numpy() for i in range(len(dataset))])
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m sedlib.cache``: stage 01 without the notebook, also the entry point for torchrun."""
    parser = argparse.ArgumentParser(
        prog="python -m sedlib.cache",
        description="Cache the features of every split of a params file (stage 01, as notebooks/01_cache does) "
        "into <run dir>/features/, and write <run dir>/results/splits.csv. Under torchrun every process caches its "
        "share of each split and rank 0 joins them; the notebook then reuses the finished files.",
        epilog="examples:\n  python -m sedlib.cache params/smoke.yaml\n"
        "  torchrun --nproc-per-node 4 -m sedlib.cache params/imagenet_deit3b.yaml\n"
        "  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 "
        "-m sedlib.cache params/imagenet_deit3b.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("params_file", help="e.g. params/default.yaml")
    parser.add_argument("--run-dir", help="run directory (default runs/<run_name>); on several nodes, a shared one")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params value, e.g. --set cache.chunk_rows=4096 (YAML value)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    prefix = ""
    try:
        ranks = Ranks.from_env()
        prefix = f"[rank {ranks.rank} of {ranks.world_size}] " if ranks.world_size > 1 else ""
        logging.basicConfig(format=f"{prefix}%(message)s")
        logging.getLogger("sedlib").setLevel(logging.INFO)  # what is reused, resumed, rebuilt or written
        config = load_config(args.params_file, parse_overrides(args.set))
        with process_group(ranks, config.cache.rank_timeout_minutes):
            located = RunDir.locate(config, args.run_dir)
            launcher = f"torchrun x{ranks.world_size}: " if ranks.world_size > 1 else ""
            with run_lock(located, ranks, f"{launcher}python -m sedlib.cache {args.params_file}"):
                run = ranks.from_main(lambda: RunDir.open(config, args.run_dir))
                splits = cache_features(config, run, progress=not args.no_progress, ranks=ranks)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError, OSError) as error:
        print(f"{prefix}error: {error}", file=sys.stderr)
        return 1
    if ranks.is_main:
        print(splits.drop(columns=["file"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
