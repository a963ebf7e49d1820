"""What SED treats as "OOD-like": the hardness weights alpha of the training rows, and their images.

Models trained with hardness weights keep ``models/<name>_alpha.npz``: the alpha every training row was
weighted by in every epoch (`alpha_record`). Stage 02 draws their distribution (`alpha_overview`), a
gallery of the rows with the largest alpha as the backbone saw them (`alpha_gallery`,
`training_images`), and how the classes are represented among them (`alpha_class_shares`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sedlib.config import RunConfig
from sedlib.data.imagenet import FolderImages
from sedlib.data.registry import data_source
from sedlib.data.splits import SplitPlan, class_names, image_size, source_images
from sedlib.data.transforms import augment, to_model_input
from sedlib.errors import MissingFileError
from sedlib.rundir.directory import RunDir
from sedlib.study.models import TrainedModel


@dataclass(frozen=True)
class AlphaRecord:
    """The hardness weights of one trained replica, per epoch and training row.

    Attributes:
        alpha: ``(E, N)`` alpha of each training row in each epoch (float32; NaN for a row no step read).
        row_id: ``(N,)`` the rows' ids in the source set (e.g. the Fashion-MNIST train index).
        label: ``(N,)`` class ids.
        frozen: ``(E,)`` whether the epoch was the frozen, measuring-only first one.
        pass_index: ``(E,)`` the augmentation pass each epoch read.
    """

    alpha: np.ndarray
    row_id: np.ndarray
    label: np.ndarray
    frozen: np.ndarray
    pass_index: np.ndarray


def alpha_record(run: RunDir, name: str) -> AlphaRecord:
    """Read a replica's hardness weights written by `train_models`.

    Raises:
        FileNotFoundError: the replica was trained without hardness weights, or not trained yet.
    """
    path = run.path("model_alpha", name)
    if not path.is_file():
        raise MissingFileError(
            f"{path}: no hardness weights for {name!r}; only models trained with a repulsion weighted by alpha "
            "(lam > 0, kappa > 0, hardness: true) have them; run notebooks/02_train_a2d first"
        )
    with np.load(run.verified(path)) as stored:
        kept = {key: stored[key] for key in ("row_id", "label", "frozen", "pass_index")}
        return AlphaRecord(alpha=stored["alpha"].astype(np.float32), **kept)


def highest_alpha(config: RunConfig, record: AlphaRecord, count: int = 16, epoch: int = -1) -> pd.DataFrame:
    """The training rows with the largest alpha in one epoch: the samples SED treats as most OOD-like.

    Args:
        config: the run (class names).
        record: from `alpha_record`.
        count: how many rows.
        epoch: which epoch (default the last).

    Returns:
        ``count`` rows, largest alpha first: ``position`` (into the training rows), ``row_id``,
        ``label``, ``class``, ``alpha``, ``pass``.
    """
    alpha = record.alpha[epoch]
    order = np.argsort(-np.nan_to_num(alpha, nan=-np.inf), kind="stable")[:count]
    names = class_names(config)
    return pd.DataFrame(
        {
            "position": order,
            "row_id": record.row_id[order],
            "label": record.label[order],
            "class": [names[k] for k in record.label[order]],
            "alpha": alpha[order],
            "pass": int(record.pass_index[epoch]),
        }
    )


def alpha_classes(config: RunConfig, run: RunDir, top_fraction: float = 0.01) -> tuple[str, pd.DataFrame]:
    """`alpha_class_shares` of the last epoch of the first model of `hardness_weighted`.

    Returns:
        ``(label, shares)``; ``("", empty)`` when no model has hardness weights.
    """
    label, name = _first_hardness_weighted(config)
    if not name:
        return "", pd.DataFrame()
    return label, alpha_class_shares(config, alpha_record(run, name), top_fraction)


def alpha_class_shares(config: RunConfig, record: AlphaRecord, top_fraction: float = 0.01, epoch: int = -1):
    """How the classes are represented among the top ``top_fraction`` of alpha, against the training set.

    Returns:
        One row per class: ``class``, ``share_all`` (fraction of the training rows), ``share_top``
        (fraction of the top rows) and ``ratio`` (top over all; > 1: over-represented), largest
        ratio first.
    """
    alpha = np.nan_to_num(record.alpha[epoch], nan=-np.inf)
    top = np.argsort(-alpha, kind="stable")[: max(1, round(top_fraction * len(alpha)))]
    names = class_names(config)
    classes = len(names)
    share_all = np.bincount(record.label, minlength=classes) / len(record.label)
    share_top = np.bincount(record.label[top], minlength=classes) / len(top)
    frame = pd.DataFrame({"class": names, "share_all": share_all, "share_top": share_top})
    frame["ratio"] = frame["share_top"] / frame["share_all"].where(frame["share_all"] > 0)
    return frame.sort_values("ratio", ascending=False, kind="stable").reset_index(drop=True)


def hardness_weighted(config: RunConfig) -> dict[str, str]:
    """Label -> replica name (first seed) of every main model trained with hardness weights."""
    return {run.label: run.name for run in config.first_replicas() if run.spec.train.records_alpha()}


def _first_hardness_weighted(config: RunConfig) -> tuple[str, str]:
    """``(label, replica)`` of the first `hardness_weighted` model, or ``("", "")`` when there is none."""
    return next(iter(hardness_weighted(config).items()), ("", ""))


def alpha_overview(config: RunConfig, run: RunDir, models: dict[str, TrainedModel]) -> dict:
    """Label -> ``(log, last epoch alpha)`` of each `hardness_weighted` model (for `sedlib.study.plots`)."""
    return {
        label: (models[name].log, alpha_record(run, name).alpha[-1])
        for label, name in hardness_weighted(config).items()
    }


def alpha_gallery(config: RunConfig, run: RunDir, count: int = 24) -> tuple[str, pd.DataFrame, np.ndarray | None]:
    """The highest-alpha training rows of the first model of `hardness_weighted`, with their images.

    Returns:
        ``(label, rows, images)``: the model's label, `highest_alpha` of its last epoch with a
        ``caption`` column, and the images as the backbone saw them in that epoch's pass
        (`training_images`); ``("", empty, None)`` when no model has hardness weights.
    """
    label, name = _first_hardness_weighted(config)
    if not name:
        return "", pd.DataFrame(), None
    rows = highest_alpha(config, alpha_record(run, name), count)
    rows["caption"] = [f"{c}\nα = {a:.3g}" for c, a in zip(rows["class"], rows["alpha"])]
    return label, rows, training_images(config, rows["row_id"].to_numpy(), int(rows["pass"].iloc[0]))


def training_images(config: RunConfig, row_ids: np.ndarray, pass_index: int) -> np.ndarray | None:
    """Training images as the backbone saw them in one augmentation pass (``(K, S, S, 3)`` uint8).

    Returns None when the images are not at hand (ImageNet features imported from the authors' files
    without the image folders, or a study on your own features).
    """
    cache, source = config.cache, data_source(config)
    if not source.has_images:
        return None
    size = image_size(config)
    plan = SplitPlan("train", "train", passes=cache.augmentation_passes)
    try:
        images, _ = source_images(config, plan)
    except FileNotFoundError:
        return None
    row_ids = np.asarray(row_ids, dtype=np.int64)
    scale = tuple(cache.augmentation_scale)
    if source.form == "arrays":
        clean = to_model_input(images.images[row_ids], size)
        return augment(clean, config.data.seed, pass_index, row_ids, scale=scale)
    dataset = FolderImages(images, row_ids, "train", size, config.data.seed, pass_index, scale)
    return np.stack([dataset[i][0].permute(1, 2, 0).numpy() for i in range(len(dataset))])
