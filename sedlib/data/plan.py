"""A split's plan (`SplitPlan`) and which rows of its source set it holds (`split_rows`).

The bottom of the data layer: the data sources (`sedlib.data.datasource`) and the study's split plan
(`sedlib.data.splits`) both build on it. The rows are drawn with seeded permutations of the source set's
size, so they depend on the settings and the set's length only, never on what the set holds.

Example:
    >>> from sedlib.config import load_config
    >>> config = load_config("params/smoke.yaml")
    >>> len(split_rows(config, SplitPlan("test", "test"), 10_000)) == config.data.test_rows
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sedlib.backbones.timm_models import timm_input
from sedlib.config import ConfigError, RunConfig


@dataclass(frozen=True)
class SplitPlan:
    """One split to cache.

    Attributes:
        name: file stem, e.g. ``train``, ``test``, ``fog-5``, ``imagenet_a``, ``digits``.
        kind: ``train``, ``val``, ``test``, ``corruption``, ``subset`` (a labelled class subset such
            as ImageNet-A), ``ood`` or ``disagreement`` (the unlabelled images of the naive A2D / DivDis baselines).
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


def corruption_split(corruption: str, severity: int) -> str:
    """File stem of a corrupted copy of the test split, e.g. ``fog-5``."""
    return f"{corruption}-{severity}"


DISAGREEMENT_SPLIT = "disagreement"
"""The split of unlabelled images the naive A2D / DivDis baselines disagree on (``data.disagreement_set``)."""


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


def image_size(config: RunConfig) -> int:
    """The side of the backbone's input: ``cache.image_size``, else a ``timm:`` model's pretrained input size."""
    if config.cache.image_size is not None:
        return config.cache.image_size
    return timm_input(config.cache.backbone).image_size
