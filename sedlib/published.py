"""The four training runs of the published SED code, as `HeadConfig` + `TrainConfig`.

Source: ``configs/training/*.yaml`` of ``AlexanderRubinstein/diverse-universe-public`` (branch
``share_code``), audited in the project's reference notes (original code §4.4). The values are
those the code *effectively* uses:

* ``50_models`` never computes the repulsion (no unlabelled loader and ``use_always_labeled:
  false``), so its effective ``kappa`` is 0, although the file says ``manual_lambda: 0.0002``.
  Its NaN-checking SGD skipped steps with NaN gradients; `sedlib.train` stops with an error instead.
* ``ood_gen`` multiplies the repulsion by ``manual_lambda: 0.0``.
* ``ood_det_sem`` has no ``adamW:`` block, so AdamW's default weight decay 0.01 applies.

All four: DeiT-3-B heads (768 -> 3072 -> 768, 1000 classes), 4 augmentation passes, 11 epochs of
which the first is frozen, seed 42, ``iid`` pairs (``random_select: 2``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sedlib.ensemble import HeadConfig
from sedlib.train import TrainConfig

IMAGENET_TRAIN_ROWS = 1_281_167
AUGMENTATION_PASSES = 4


@dataclass(frozen=True)
class PublishedRun:
    """One published training run."""

    name: str
    heads: HeadConfig
    train: TrainConfig

    @property
    def steps_per_epoch(self) -> int:
        return -(-IMAGENET_TRAIN_ROWS // self.train.batch_size)

    @property
    def pair_steps(self) -> int:
        """Pair-steps of the updating epochs (one pair per step under the published ``iid`` schedule)."""
        return self.steps_per_epoch * (self.train.epochs - int(self.train.freeze_first_epoch))


def _adamw(**overrides) -> TrainConfig:
    defaults = dict(
        schedule="iid", epochs=11, freeze_first_epoch=True, lam=0.5, optimizer="adamw", lr=1e-3,
        weight_decay=0.1, lr_schedule="cosine", cosine_t_max=15, seed=42,
    )  # fmt: skip
    return TrainConfig(**{**defaults, **overrides})


PUBLISHED: dict[str, PublishedRun] = {
    run.name: run
    for run in (
        PublishedRun(
            "50_models",
            HeadConfig(num_members=50),
            TrainConfig(
                schedule="iid",
                batch_size=16,
                epochs=11,
                freeze_first_epoch=True,
                lam=0.5,
                kappa=0.0,
                optimizer="sgd",
                lr=1e-3,
                momentum=0.9,
                weight_decay=1e-4,
                lr_schedule="constant",
                seed=42,
            ),  # fmt: skip
        ),
        PublishedRun("ood_gen", HeadConfig(num_members=5), _adamw(batch_size=32, kappa=0.0, label_smoothing=0.5)),
        PublishedRun("ood_det_cov", HeadConfig(num_members=5), _adamw(batch_size=32, kappa=5.0, label_smoothing=0.5)),
        PublishedRun(
            "ood_det_sem", HeadConfig(num_members=5), _adamw(batch_size=256, kappa=0.5, lr=1e-4, weight_decay=0.01)
        ),
    )
}
