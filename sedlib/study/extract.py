"""Stage 01: images -> frozen backbone -> one HDF5 feature file per split.

The paper caches DeiT-3-B features of ImageNet (four augmented passes of the training set, the
validation set, ImageNet-C, ImageNet-A/R and the OOD sets) once, and trains every head on the cache.
Every study follows that plan (``data.dataset``; its `sedlib.data.datasource.DataSource` says how):

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

Your own data (docs/own-data.md): ``folder`` reads ``data.train_path`` / ``val_path`` / ``test_path`` /
``ood_paths`` as image folders, transformed as the ImageNet study's and with the test images corrupted
here as Fashion-MNIST's; ``features`` copies the rows of your feature files (one pass, no backbone, no
corruption splits).

A split whose settings match a finished file is reused; an interrupted one resumes after its last
complete chunk. Each split's manifest carries a hash of exactly the settings its content depends on
(`sedlib.data.splits.split_hash`), which a later stage checks when it reads the split
(`sedlib.study.cached.load_split`), so changing the number of OOD rows never invalidates the
training passes. With ``cache.import_dir``, splits found among the authors' released feature files
(`sedlib.data.published_features`) are imported instead of computed.

The features of a chunk of ``cache.chunk_rows`` rows depend on that chunk alone: augmentations and
corruptions are seeded per image (``(seed, pass, row)``), and backbone batches never cross a chunk
boundary. That is what lets several processes share the work (`sedlib.study.distributed`):

::

    python -m sedlib.cache params/<run>.yaml [--run-dir DIR] [--set KEY=VALUE ...]
    torchrun --nproc-per-node 4 -m sedlib.cache params/<run>.yaml       # one process per GPU

The run directory is locked while caching (`sedlib.rundir.directory.RunDir.lock`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sedlib.backbones import FrozenBackbone, extract_features, load_backbone
from sedlib.config import RunConfig, from_working_directory, load_config, parse_overrides
from sedlib.data import corrupt_images
from sedlib.data.imagenet import FolderImages, image_loader
from sedlib.data.published_features import PublishedFeatures
from sedlib.data.registry import data_source
from sedlib.data.splits import (
    SplitPlan,
    corruption_split,
    image_size,
    plan_splits,
    published_file,
    source_images,
    split_hash,
    split_rows,
)
from sedlib.data.transforms import augment, to_model_input
from sedlib.device import resolve_device
from sedlib.features import SplitManifest, reusable, split_status, write_split
from sedlib.method.ensemble import HeadEnsemble
from sedlib.rundir.declaration import has_pretrained_head
from sedlib.rundir.directory import RunDir
from sedlib.study.distributed import Ranks, process_group, run_lock, write_sharded

logger = logging.getLogger("sedlib.study.extract")


def _drop_if_changed(run: RunDir, path: Path, manifest: SplitManifest, rebuild: bool) -> None:
    """Remove a valid feature file whose content changed since this run recorded it, so that it is computed again.

    A file edited in place (for example through a hard link shared with another run directory) may still be a
    valid feature file of the same manifest, and would be reused: a derived file never becomes the new truth.
    A damaged or stale one is refused as before (`sedlib.features.reusable`, unless ``rebuild``). Only this
    run's name of the file is removed; another link keeps its content.
    """
    entry = run.recorded(path)
    current = run.content_hash(path) if entry is not None else None
    if current is not None and current != entry.get("sha256") and reusable(path, manifest, rebuild):
        logger.warning("%s changed since this run wrote it: computing it again from its source", run.relative(path))
        path.unlink(missing_ok=True)  # every rank of a distributed run may get here


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
        self.source = data_source(config)
        self.device = next(backbone.parameters()).device
        self.position: tuple[int, int] | None = None
        self.batches = None
        self.pending: list[np.ndarray] | None = None

    def _restart(self, pass_index: int, start: int) -> None:
        cache = self.config.cache
        dataset = FolderImages(
            self.images,
            self.index[start:],
            self.source.folder_transform(self.plan),
            image_size=image_size(self.config),
            seed=self.config.data.seed,
            pass_index=pass_index,
            scale=tuple(cache.augmentation_scale),
            model_eval=self.source.model_eval()[0],
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
            if self.plan.kind == "corruption" and self.source.corruption == "at_cache":  # your folders' test images
                nhwc = self.source.corrupt(self.plan, images.permute(0, 2, 3, 1).numpy(), index.numpy())
                images = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
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
    """Chunks of a split of images in memory (Fashion-MNIST's): resize, augment or corrupt, extract."""
    cache, data, source = config.cache, config.data, data_source(config)
    device = next(backbone.parameters()).device
    size = image_size(config)

    def compute(pass_index, start, stop):
        rows = index[start:stop]
        batch = to_model_input(images.images[rows], size)
        if plan.kind == "train":
            batch = augment(batch, data.seed, pass_index, rows, scale=tuple(cache.augmentation_scale))
        else:
            batch = source.corrupt(plan, batch, rows)
        return extract_features(backbone, batch, cache.batch_size, device=device), images.labels[rows], rows

    return compute


def _given_compute(arrays, index: np.ndarray):
    """Chunks of your feature file's rows (a source of ``form: features``)."""

    def compute(pass_index, start, stop):
        rows = index[start:stop]
        return arrays.features[rows], arrays.labels[rows], rows

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
    directory's lock is held throughout (`sedlib.rundir.directory.RunDir.lock`).

    Args:
        config: the run.
        run: its directory.
        progress: show a progress bar per split (rank 0's only, under torchrun).
        ranks: this process's place among several (`sedlib.study.distributed`; every rank calls this
            function); one process when None.

    Returns:
        One row per split: ``split``, ``kind``, ``rows``, ``passes``, ``source`` (``images``,
        ``imported`` or, for your own feature files, ``given``), ``status`` (what was found before:
        missing / partial / complete), ``seconds`` spent now, ``file``.
    """
    ranks = ranks or Ranks()
    with run_lock(run, ranks, f"stage 01 (feature caching) of {config.source}"):
        return _cache_splits(config, run, progress and ranks.is_main, ranks)


def _cache_splits(config: RunConfig, run: RunDir, progress: bool, ranks: Ranks) -> pd.DataFrame:
    cache, source = config.cache, data_source(config)
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
                image_size=cache.image_size,  # None: a timm model's pretrained input size
            )
        return backbone

    rows = []
    for plan in plan_splits(config):
        with contextlib.ExitStack() as stack:
            if plan.imported:
                path_in = published_file(config, plan)
                published = stack.enter_context(PublishedFeatures(path_in, passes=plan.passes))
                index = split_rows(config, plan, published.rows)
                compute = _imported_compute(published, index, plan)
                described = (
                    f"{plan.name} imported from the authors' {path_in.name}, {len(index)} of {published.rows} rows"
                )
                backbone_text = f"{cache.backbone} [as cached by the authors of arXiv:2409.16797]"
                transform = "the authors' caching transforms (sedlib.published_features)"
                feature_dim = published.feature_dim
            elif not source.has_images:
                arrays, index = source_images(config, plan)
                compute = _given_compute(arrays, index)
                described = source.describe_source(plan, arrays, index)
                backbone_text = "none: features given by the params (data.dataset: features)"
                transform = source.describe_transform(plan)
                feature_dim = arrays.features.shape[1]
            else:
                images, index = source_images(config, plan)
                net = get_backbone()
                stream = _FolderStream if source.form == "folders" else _array_compute
                compute = stream(net, images, index, config, plan)
                described = source.describe_source(plan, images, index)
                backbone_text = f"{net.name} [{net.weights}]"
                transform = source.describe_transform(plan)
                feature_dim = net.feature_dim
            manifest = SplitManifest(
                split=plan.name,
                source=described,
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
            _drop_if_changed(run, path, manifest, cache.rebuild)
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
                "source": "imported" if plan.imported else "images" if source.has_images else "given",
                "status": status,
                "seconds": round(time.perf_counter() - started, 1),
                "file": path.name,
            }
            # image folders: which resize and crop made the features (timm's own, or the project's)
            | ({"transform": transform} if source.form == "folders" else {})
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


def _spread(index: np.ndarray, count: int) -> np.ndarray:
    """``count`` row ids spread evenly over a split (sources are often sorted by class)."""
    return index[np.linspace(0, len(index) - 1, min(count, len(index))).astype(int)]


def example_inputs(config: RunConfig, count: int = 8) -> dict[str, np.ndarray]:
    """A few backbone inputs of each kind, made exactly as `cache_features` makes them.

    Returns:
        Row title -> ``(count, S, S, 3)`` uint8 images: clean train images, their first augmented
        pass, clean test images, the first and last configured corruption at the highest severity,
        the class-subset sets and each OOD set. ImageNet sets whose folders are absent (features
        imported from the authors' files) are left out; a study on your own features has none.
    """
    source = data_source(config)
    if not source.has_images:
        return {}
    if source.form == "folders":
        return _folder_examples(config, count)
    size, seed = image_size(config), config.data.seed
    rows = {}
    plans = {plan.name: plan for plan in plan_splits(config)}
    images, index = source_images(config, plans["train"])
    chosen = _spread(index, count)
    rows["train"] = to_model_input(images.images[chosen], size)
    rows["train, augmented"] = augment(rows["train"], seed, 0, chosen, scale=tuple(config.cache.augmentation_scale))
    images, index = source_images(config, plans["test"])
    chosen = _spread(index, count)
    rows["test"] = to_model_input(images.images[chosen], size)
    severity = max(config.data.severities, default=0)
    shown = (config.data.corruptions[0], config.data.corruptions[-1]) if severity else ()
    for corruption in dict.fromkeys(shown):
        rows[f"{corruption} {severity}"] = corrupt_images(rows["test"], corruption, severity, seed, chosen)
    for name in config.data.ood_sets:
        images, index = source_images(config, plans[name])
        rows[name] = to_model_input(images.images[_spread(index, count)], size)
    return rows


def _folder_examples(config: RunConfig, count: int) -> dict[str, np.ndarray]:
    cache, seed, size, source = config.cache, config.data.seed, image_size(config), data_source(config)
    severities = config.data.severities
    severity = max(severities, default=0)
    corruptions = dict.fromkeys((config.data.corruptions[0], config.data.corruptions[-1]) if severities else ())
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
        transform = "eval" if title == "train" else source.folder_transform(plan)
        chosen = _spread(index, count)
        scale = tuple(cache.augmentation_scale)
        dataset = FolderImages(images, chosen, transform, size, seed, 0, scale, source.model_eval()[0])
        shown = np.stack([dataset[i][0].permute(1, 2, 0).numpy() for i in range(len(dataset))])
        rows[title] = source.corrupt(plan, shown, chosen)
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
        overrides = parse_overrides(args.set)
        config = load_config(from_working_directory(args.params_file), overrides)
        run_dir = from_working_directory(args.run_dir) if args.run_dir else None
        with process_group(ranks, config.cache.rank_timeout_minutes):
            located = RunDir.locate(config, run_dir, overrides)
            launcher = f"torchrun x{ranks.world_size}: " if ranks.world_size > 1 else ""
            with run_lock(located, ranks, f"{launcher}python -m sedlib.cache {args.params_file}"):
                run = ranks.from_main(lambda: RunDir.open(config, run_dir, overrides))
                splits = cache_features(config, run, progress=not args.no_progress, ranks=ranks)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError, OSError) as error:
        print(f"{prefix}error: {error}", file=sys.stderr)
        return 1
    if ranks.is_main:
        print(splits.drop(columns=["file"]).to_string(index=False))
    return 0
