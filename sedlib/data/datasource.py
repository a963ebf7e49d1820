"""One interface for every dataset a study reads (``data.dataset``): `DataSource`.

A source knows its splits' source sets (`DataSource.source_set`: the images, or features, a split's rows
are drawn from), its class names, what its corruption splits are made of, what it checks before stage 01
starts, what a split's hash covers beyond the settings every dataset shares, and how its manifests describe
the transform. The stages (`sedlib.study`) ask the source and never name a dataset; `sedlib.data.registry`
is the one place that maps ``data.dataset`` to its class:

=================  ===============================  ======================  ============================
``data.dataset``   class (module)                   ``form`` (source sets)  ``corruption``
=================  ===============================  ======================  ============================
``fashion_mnist``  `FashionMNISTSource`             ``arrays``              ``at_cache``
                   (`sedlib.data.fashion_mnist`)
``imagenet``       `ImageNetSource`                 ``folders``             ``folders`` (ImageNet-C)
                   (`sedlib.data.imagenet`)
``folder``         `FolderSource`                   ``folders``             ``at_cache``
                   (`sedlib.data.folders`)
``features``       `FeatureFilesSource`             ``features``            ``none``
                   (`sedlib.data.feature_files`)
=================  ===============================  ======================  ============================

The authors' published features (``cache.import_dir``) are not a source: they replace single splits of an
ImageNet study (`sedlib.data.published_features` says why).

Adding a dataset: a subclass with the four abstract members, its name in `sedlib.data.registry`, and its
name among ``sedlib.config``'s datasets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from sedlib.backbones.timm_models import check_timm_backbone
from sedlib.config import TIMM_PREFIX, RunConfig, resolve_path
from sedlib.data.corruptions import corrupt_images
from sedlib.data.plan import SplitPlan, split_rows


class DataSource(ABC):
    """The data of one study, as the stages need it.

    Attributes:
        name: the ``data.dataset`` value; it enters every split's hash.
        description: the data in a few words, for the report's prose (``Fashion-MNIST``).
        form: what `source_set` returns: ``arrays`` (a `sedlib.data.ImageSet` in memory), ``folders``
            (a `sedlib.data.imagenet.ImageFolderSet`, read through `sedlib.data.imagenet.FolderImages`)
            or ``features`` (a `sedlib.data.feature_files.FeatureArrays`: no images, no backbone).
        corruption: where the corruption splits come from: ``folders`` (read corrupted, ImageNet-C),
            ``at_cache`` (the test images corrupted by stage 01, `corrupt`) or ``none`` (no images).
        config: the study.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    form: ClassVar[str]
    corruption: ClassVar[str]

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    @property
    def has_images(self) -> bool:
        """Whether the splits are images (a backbone makes their features) rather than given features."""
        return self.form != "features"

    def ood_set(self, plan: SplitPlan) -> str:
        """The set an ``ood`` or ``subset`` split is read from (its own name), or the ``disagreement`` split's."""
        return self.config.data.disagreement_set if plan.kind == "disagreement" else plan.name

    @abstractmethod
    def source_set(self, plan: SplitPlan):
        """The whole set a split's rows are drawn from (`sedlib.data.plan.split_rows` draws them)."""

    @abstractmethod
    def class_names(self) -> tuple[str, ...]:
        """The names of the study's classes, in label order."""

    @abstractmethod
    def describe_transform(self, plan: SplitPlan) -> str:
        """How a split's images become backbone inputs, for its feature file's manifest."""

    def describe_source(self, plan: SplitPlan, images, index: np.ndarray) -> str:
        """Where a split's rows come from, for its feature file's manifest."""
        return f"{images.name}, {len(index)} of {len(images)} rows, seed {self.config.data.seed}"

    def check(self, plans: Sequence[SplitPlan]) -> None:
        """Before stage 01 computes anything: what listing the data and reading the params can find.

        Here: a ``timm:`` backbone's name and weights (`sedlib.backbones.timm_models.check_timm_backbone`).

        Raises:
            sedlib.errors.UserError: the first problem found, naming its folder, file or params key.
        """
        cache = self.config.cache
        if self.has_images and cache.backbone.startswith(TIMM_PREFIX):
            check_timm_backbone(cache.backbone, cache.pretrained, resolve_path(cache.weights) if cache.weights else "")

    def hash_payload(self, plan: SplitPlan) -> dict:
        """What a split's hash (`sedlib.data.splits.split_hash`) covers beyond the settings of every dataset."""
        return {}

    def corrupt(self, plan: SplitPlan, images: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """A corruption split's images corrupted at cache time (``corruption: at_cache``); others unchanged.

        Args:
            plan: the split (a corruption split: its corruption and severity).
            images: ``(B, S, S, 3)`` uint8 backbone inputs of the rows ``rows``.
            rows: ``(B,)`` their row ids, which seed each image's corruption.
        """
        if plan.kind != "corruption" or self.corruption != "at_cache":
            return images
        return corrupt_images(images, plan.corruption, plan.severity, self.config.data.seed, rows)

    def describe_corruption(self, plan: SplitPlan) -> str:
        """A corruption split's corruption as `corrupt` applies it, for the manifest."""
        return f"{plan.corruption} severity {plan.severity} (imagecorruptions), seed {self.config.data.seed}"

    def protocol_effects(self, protocol: str) -> tuple[str, ...]:
        """What the evaluation protocol (``faithful`` or ``standard``) changes for this dataset, in words."""
        return ()


class OwnDataSource(DataSource):
    """Data the user names set by set (``data.train_path``, ``val_path``, ``test_path``, ``ood_paths``)."""

    def set_name(self, plan: SplitPlan) -> str:
        """Which of your sets a split is read from: ``train``, ``val``, ``test`` or an OOD set's name."""
        data = self.config.data
        if plan.kind in ("train", "val"):
            return "val" if plan.kind == "val" and data.val_path else "train"
        if plan.kind in ("test", "corruption"):
            return "test"
        return self.ood_set(plan)

    def hash_payload(self, plan: SplitPlan) -> dict:
        """The data paths (``data.*_path``) a split is read from (the training set names the classes)."""
        data = self.config.data
        if plan.kind in ("train", "val"):
            paths = [data.train_path, data.val_path]
        elif plan.kind in ("test", "corruption"):
            paths = [data.train_path, data.test_path]
        else:
            paths = [data.ood_paths[self.ood_set(plan)]]
        return super().hash_payload(plan) | {"paths": paths}

    def check(self, plans: Sequence[SplitPlan]) -> None:
        """Every set listed or read once (missing, empty or inconsistent sets), then every split's rows drawn."""
        sizes: dict[str, int] = {}
        for plan in plans:
            name = self.set_name(plan)
            if name not in sizes:
                sizes[name] = len(self.source_set(plan))
            split_rows(self.config, plan, sizes[name])
        super().check(plans)
