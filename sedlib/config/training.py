"""Training settings (`TrainConfig`): the hyperparameters of one run, checked when it is built.

`TrainSettings` declares every training setting once (its type, range or choices, default and description);
it is what a params file's ``train`` section and each ``models`` entry are checked against
(`sedlib.config.entries`). `TrainConfig` is the same fields with the rules that tie several of them together:
the training loop (`sedlib.method.train`), the benchmark and the tests build it directly, and it raises
`sedlib.errors.SettingError` naming the setting (``TrainConfig.lam must lie in [0, 1], got 2.0``); a params
file reports the same problem under the key as its user wrote it. Reading a params file does not load torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from sedlib.config.fields import Bool, Count, Natural, number, settings
from sedlib.errors import SettingError

#: The pair schedules of SED (what `sedlib.bench` times).
SCHEDULES = ("iid", "matching", "all")
#: Every schedule `TrainConfig` accepts: the pair schedules and the deep-ensemble baseline.
TRAIN_SCHEDULES = SCHEDULES + ("independent",)
DISAGREEMENT_DATA = ("train", "unlabelled")
#: The disagreement kernels of `sedlib.method.losses.sed_pair_loss`.
KERNELS = ("a2d", "divdis")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("fp32", "tf32", "bf16")
PUBLISHED_WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 0.1}
#: Per-member hyperparameters of a deep ensemble with diverse hyperparameters.
MEMBER_SETTINGS = ("member_lr", "member_weight_decay", "member_label_smoothing")

NonNegative = number(float, ge=0)
Fraction = number(float, ge=0, lt=1)


@settings
class TrainSettings:
    """Training defaults of every model (the keys of `sedlib.config.TrainConfig`)."""

    schedule: Literal[TRAIN_SCHEDULES] = "iid"
    """pair schedule, one of ``iid``, ``matching``, ``all``; or ``independent``: every member trains on every
    batch with its own task loss (a deep ensemble, or with one member a single model; needs ``lam`` 0)."""
    batch_size: Count = 32
    """rows per mini-batch (per pair for ``matching``); also the rows of each unlabelled disagreement batch."""
    epochs: Count = 11
    """passes over the training data, the frozen first epoch included (11 published)."""
    freeze_first_epoch: Bool = True
    """epoch 0 only measures the losses (published: True)."""
    lam: number(float, ge=0, le=1) = 0.5
    """lambda, the convex weight between the task and diversity terms."""
    kappa: NonNegative = 1.0
    """the published ``manual_lambda``; the repulsion weight is ``kappa * lam``."""
    label_smoothing: Fraction = 0.0
    """eps of the task term's smoothed targets."""
    optimizer: Literal[OPTIMIZERS] = "adamw"
    """``sgd`` or ``adamw``."""
    lr: NonNegative = 1e-3
    """initial learning rate."""
    momentum: NonNegative = 0.9
    """SGD momentum."""
    weight_decay: NonNegative | None = None
    """L2 (SGD) or decoupled (AdamW) weight decay, on every parameter; None for the published value of the
    optimiser (SGD 1e-4, AdamW 0.1)."""
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    """AdamW betas."""
    eps: NonNegative = 1e-8
    """AdamW epsilon."""
    lr_schedule: Literal[LR_SCHEDULES] = "cosine"
    """``constant`` or ``cosine`` (``CosineAnnealingLR``, eta_min 0)."""
    cosine_t_max: Count | None = 15
    """cosine period in updating epochs (15 published, so the rate ends at 35 %); None for the number of
    updating epochs."""
    seed: Natural = 42
    """seeds the initialisation and, per epoch, the shuffles, pairs and roles."""
    eval_batch_size: Count = 1024
    """rows per batch for the per-epoch validation."""
    check_every: Count = 100
    """steps between checks for a non-finite loss (and progress bar updates)."""
    precision: Literal[PRECISIONS] = "fp32"
    """``fp32`` (default); ``tf32`` lets CUDA matmuls use TensorFloat-32 (no effect on the CPU); ``bf16`` runs
    the heads' forward and backward under bfloat16 autocast (weights, optimiser state and the loss's softmax
    stay fp32)."""
    kernel: Literal[KERNELS] = "a2d"
    """the disagreement kernel, ``a2d`` (published) or ``divdis`` (the pairwise mutual information of DivDis,
    weighted by the hardness weights as described in `sedlib.method.losses.divdis_pair_repulsion`)."""
    disagreement_data: Literal[DISAGREEMENT_DATA] = "train"
    """the samples of the repulsion: ``train`` (published: the labelled batch itself) or ``unlabelled`` (a batch
    of ``batch_size`` rows of the ``unlabelled_features`` given to `EnsembleTrainer.fit`, as in naive A2D /
    DivDis; needs ``hardness`` false)."""
    hardness: Bool = True
    """weight the repulsion's samples by SED's hardness weights alpha (published: True); False gives every
    sample alpha = 1."""
    member_lr: tuple[NonNegative, ...] = ()
    """one learning rate per member (a deep ensemble with diverse hyperparameters); each member's rate follows
    the same schedule as ``lr``. Empty: every member uses ``lr``."""
    member_weight_decay: tuple[NonNegative, ...] = ()
    """one weight decay per member; empty: every member uses ``weight_decay``."""
    member_label_smoothing: tuple[Fraction, ...] = ()
    """one label-smoothing eps per member (``independent`` schedule only: the pair losses share one eps);
    empty: every member uses ``label_smoothing``."""


@settings
class TrainConfig(TrainSettings):
    """Hyperparameters of one training run: the settings of `TrainSettings`, checked together.

    The defaults follow the published 5-member runs (AdamW, lr 1e-3, batch 32, lambda 0.5, 11 epochs
    with a frozen first one, cosine period 15); `sedlib.method.published` holds the four runs exactly. Built
    directly, it checks each setting, then the rules that tie several together, and raises
    `sedlib.errors.SettingError` naming the setting.
    """

    def __post_init__(self) -> None:
        if self.weight_decay is None:
            object.__setattr__(self, "weight_decay", PUBLISHED_WEIGHT_DECAY.get(self.optimizer))
        rules = (
            (
                self.freeze_first_epoch and self.epochs < 2,
                "epochs",
                f"must be >= 2 when freeze_first_epoch is set (epoch 0 does not update), got {self.epochs}",
            ),
            (
                self.schedule == "independent" and self.lam != 0,
                "lam",
                "must be 0 with schedule 'independent' (every member trains alone on its task loss, there is no "
                f"repulsion), got {self.lam!r}",
            ),
            (
                self.member_lr and not self.lr > 0,
                "lr",
                f"must be > 0 with member_lr (the schedule scales every member's rate), got {self.lr!r}",
            ),
            (
                self.member_label_smoothing and self.schedule != "independent",
                "member_label_smoothing",
                "needs schedule 'independent' (a pair's task term has one smoothing eps), got schedule "
                f"{self.schedule!r}",
            ),
            (
                self.disagreement_data == "unlabelled" and self.hardness,
                "hardness",
                "must be false with disagreement_data 'unlabelled': the hardness weights are the ensemble's loss on "
                "labelled samples (naive A2D / DivDis use none)",
            ),
        )
        for broken, key, reason in rules:
            if broken:
                raise SettingError("TrainConfig", key, reason)

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "TrainConfig") -> TrainConfig:
        """Build from a mapping (e.g. a params file section); unknown keys are an error naming them."""
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check_members(self, num_members: int) -> None:
        """Raise `SettingError` unless every ``member_*`` list is empty or gives one value per member."""
        for name in MEMBER_SETTINGS:
            values = getattr(self, name)
            if values and len(values) != num_members:
                raise SettingError("TrainConfig", name, f"gives {len(values)} values for {num_members} members")

    def records_alpha(self) -> bool:
        """Whether the run weights its repulsion by hardness weights alpha (so `EnsembleTrainer` records them)."""
        return self.kappa * self.lam > 0 and self.hardness
