"""The embedded default study's data (``data.dataset: fashion_mnist``): `FashionMNISTSource`.

Fashion-MNIST's train split gives the train and val splits, its test split the test split and its
corrupted copies (corrupted by stage 01, per image, `sedlib.data.corruptions`); the semantic-OOD sets are
`sedlib.data.sources.SOURCES` (Animal-MNIST, digits). The images are held in memory (``form: arrays``).

Example:
    >>> from sedlib.config import load_config
    >>> source = FashionMNISTSource(load_config("params/smoke.yaml"))
    >>> source.class_names()[:2], source.describe_transform(SplitPlan("test", "test"))
    (('T-shirt/top', 'Trouser'), 'grey->RGB 32px bilinear; clean')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sedlib.data.datasource import DataSource
from sedlib.data.get_fashion_mnist import find_fashion_mnist, how_to_get
from sedlib.data.plan import SplitPlan, image_size
from sedlib.data.sources import FASHION_MNIST_CLASSES, SOURCES, ImageSet, load_fashion_mnist
from sedlib.errors import MissingFileError


class FashionMNISTSource(DataSource):
    """Fashion-MNIST in distribution, Animal-MNIST and digits out of it."""

    name = "fashion_mnist"
    description = "Fashion-MNIST"
    form = "arrays"
    corruption = "at_cache"

    def source_set(self, plan: SplitPlan) -> ImageSet:
        if plan.kind in ("train", "val"):
            return load_fashion_mnist("train")
        if plan.kind in ("test", "corruption"):
            return load_fashion_mnist("test")
        return SOURCES[self.ood_set(plan)]()

    def class_names(self) -> tuple[str, ...]:
        return FASHION_MNIST_CLASSES

    def check(self, plans: Sequence[SplitPlan]) -> None:
        """The four idx files are found (`sedlib.data.get_fashion_mnist`), then the backbone."""
        if find_fashion_mnist() is None:
            raise MissingFileError(f"the Fashion-MNIST files were not found. {how_to_get()}")
        super().check(plans)

    def describe_source(self, plan: SplitPlan, images: ImageSet, index: np.ndarray) -> str:
        return f"{images.name} ({images.origin}), {len(index)} rows, seed {self.config.data.seed}"

    def describe_transform(self, plan: SplitPlan) -> str:
        if plan.kind == "train":
            what = f"augmented: random resized crop scale {list(self.config.cache.augmentation_scale)} + flip"
        elif plan.kind == "corruption":
            what = self.describe_corruption(plan)
        else:
            what = "clean"
        return f"grey->RGB {image_size(self.config)}px bilinear; {what}"
