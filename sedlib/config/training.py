"""Training settings (`TrainConfig`): the hyperparameters of one run, checked when it is built.

`TrainConfig` is a plain dataclass: the training loop (`sedlib.method.train`), the benchmark and the tests
build it directly, and each field's metadata declares what it accepts (``choices``, or ``bounds``,
`range_violation`), which the constructor checks before the rules that tie several fields together.
A params file's ``train`` and ``models`` entries are checked against the same declarations
(`sedlib.config.entries`), so an error names the key as the user wrote it (`SettingError` carries the
key). This module imports nothing but the standard library: reading a params file does not load torch.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field

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


class SettingError(ValueError):
    """An invalid setting of a configuration object (`TrainConfig`, the sections of `sedlib.config`).

    The message names the object and the setting (``TrainConfig.lam must lie in [0, 1], got 2.0``); ``key`` and
    ``reason`` let a params file report it under the key path its user wrote (``models.sed.lam: must lie in ...``).

    Attributes:
        key: the setting (a field of the object).
        reason: what is wrong with it, starting with a verb (``must lie in [0, 1], got 2.0``).
    """

    def __init__(self, owner: str, key: str, reason: str) -> None:
        super().__init__(f"{owner}.{key} {reason}")
        self.key = key
        self.reason = reason


_BOUND_TESTS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def range_violation(value, bounds: Mapping) -> str | None:
    """What is wrong with a number, or a tuple of numbers, outside ``bounds``; None when it lies inside.

    Args:
        value: a number, or a tuple of numbers that must each lie inside.
        bounds: a mapping with any of ``ge``, ``gt``, ``le``, ``lt`` (e.g. a `TrainConfig` field's).

    Returns:
        ``must be >= 1, got 0``, ``must lie in [0, 1), got 1.0``, ``must hold values >= 0, got [0.1, -1.0]``,
        or None. NaN lies outside every bound.
    """
    limits = {name: bounds[name] for name in _BOUND_TESTS if name in bounds}
    values = value if isinstance(value, tuple) else (value,)
    if all(_BOUND_TESTS[name](item, limit) for item in values for name, limit in limits.items()):
        return None
    low = next((f"{'[' if name == 'ge' else '('}{limits[name]:g}" for name in ("ge", "gt") if name in limits), None)
    high = next((f"{limits[name]:g}{']' if name == 'le' else ')'}" for name in ("le", "lt") if name in limits), None)
    if low and high:
        relation = f"lie in {low}, {high}"
    else:
        (name, limit), symbols = next(iter(limits.items())), {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        relation = f"{'hold values' if isinstance(value, tuple) else 'be'} {symbols[name]} {limit:g}"
    return f"must {relation}, got {list(value) if isinstance(value, tuple) else repr(value)}"


def _type_problem(value, annotation: str) -> str | None:
    """What is wrong with the type of a `TrainConfig` value given its annotation (a string); None if nothing."""
    if value is None and annotation.endswith(" | None"):
        return None
    kind = annotation.removesuffix(" | None")
    if kind.startswith("tuple["):
        length = None if kind.endswith("...]") else kind.count(",") + 1
        numbers = isinstance(value, tuple | list) and all(_type_problem(item, "float") is None for item in value)
        if numbers and length in (None, len(value)):
            return None
        return f"must be a list of {f'{length} ' if length else ''}numbers, got {value!r}"
    if kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if kind in ("int", "float"):
        number = isinstance(value, int) or (kind == "float" and isinstance(value, float))
        if number and not isinstance(value, bool):
            return None
        return f"must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}"
    return None if isinstance(value, str) else f"must be a string, got {value!r}"


def _setting(default, *, choices: tuple | None = None, **bounds: float):
    """A `TrainConfig` field whose metadata declares what it accepts: ``choices``, or ``bounds`` (`range_violation`)."""
    return field(default=default, metadata={"choices": choices} if choices else {"bounds": bounds})


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run.

    The defaults follow the published 5-member runs (AdamW, lr 1e-3, batch 32, lambda 0.5, 11 epochs
    with a frozen first one, cosine period 15); `sedlib.method.published` holds the four runs exactly.

    Each field's metadata declares what it accepts: ``choices`` (a string setting), or ``bounds``, a mapping
    with any of ``ge``, ``gt``, ``le``, ``lt`` (a number, or each value of a tuple). The constructor checks them,
    then the rules that tie several fields together, and raises `SettingError` naming the field; `sedlib.config`
    reads the same metadata to check a params file's ``train`` keys and to describe them in its JSON Schema.

    Attributes:
        schedule: pair schedule, one of ``iid``, ``matching``, ``all``; or ``independent``: every
            member trains on every batch with its own task loss (a deep ensemble, or with one member
            a single model; needs ``lam`` 0).
        batch_size: rows per mini-batch (per pair for ``matching``); also the rows of each
            unlabelled disagreement batch.
        epochs: passes over the training data, the frozen first epoch included (11 published).
        freeze_first_epoch: epoch 0 only measures the losses (published: True).
        lam: lambda, the convex weight between the task and diversity terms.
        kappa: the published ``manual_lambda``; the repulsion weight is ``kappa * lam``.
        label_smoothing: eps of the task term's smoothed targets.
        optimizer: ``sgd`` or ``adamw``.
        lr: initial learning rate.
        momentum: SGD momentum.
        weight_decay: L2 (SGD) or decoupled (AdamW) weight decay, on every parameter; None for the
            published value of the optimiser (SGD 1e-4, AdamW 0.1).
        betas: AdamW betas.
        eps: AdamW epsilon.
        lr_schedule: ``constant`` or ``cosine`` (``CosineAnnealingLR``, eta_min 0).
        cosine_t_max: cosine period in updating epochs (15 published, so the rate ends at 35 %);
            None for the number of updating epochs.
        seed: seeds the initialisation and, per epoch, the shuffles, pairs and roles.
        eval_batch_size: rows per batch for the per-epoch validation.
        check_every: steps between checks for a non-finite loss (and progress bar updates).
        precision: ``fp32`` (default); ``tf32`` lets CUDA matmuls use TensorFloat-32 (no effect on the
            CPU); ``bf16`` runs the heads' forward and backward under bfloat16 autocast (weights,
            optimiser state and the loss's softmax stay fp32).
        kernel: the disagreement kernel, ``a2d`` (published) or ``divdis`` (the pairwise mutual
            information of DivDis, weighted by the hardness weights as described in
            `sedlib.method.losses.divdis_pair_repulsion`).
        disagreement_data: the samples of the repulsion: ``train`` (published: the labelled batch
            itself) or ``unlabelled`` (a batch of ``batch_size`` rows of the ``unlabelled_features``
            given to `EnsembleTrainer.fit`, as in naive A2D / DivDis; needs ``hardness`` false).
        hardness: weight the repulsion's samples by SED's hardness weights alpha (published: True);
            False gives every sample alpha = 1.
        member_lr: one learning rate per member (a deep ensemble with diverse hyperparameters); each
            member's rate follows the same schedule as ``lr``. Empty: every member uses ``lr``.
        member_weight_decay: one weight decay per member; empty: every member uses ``weight_decay``.
        member_label_smoothing: one label-smoothing eps per member (``independent`` schedule only:
            the pair losses share one eps); empty: every member uses ``label_smoothing``.
    """

    schedule: str = _setting("iid", choices=TRAIN_SCHEDULES)
    batch_size: int = _setting(32, ge=1)
    epochs: int = _setting(11, ge=1)
    freeze_first_epoch: bool = True
    lam: float = _setting(0.5, ge=0, le=1)
    kappa: float = _setting(1.0, ge=0)
    label_smoothing: float = _setting(0.0, ge=0, lt=1)
    optimizer: str = _setting("adamw", choices=OPTIMIZERS)
    lr: float = _setting(1e-3, ge=0)
    momentum: float = _setting(0.9, ge=0)
    weight_decay: float | None = _setting(None, ge=0)
    betas: tuple[float, float] = _setting((0.9, 0.999), ge=0, lt=1)
    eps: float = _setting(1e-8, ge=0)
    lr_schedule: str = _setting("cosine", choices=LR_SCHEDULES)
    cosine_t_max: int | None = _setting(15, ge=1)
    seed: int = _setting(42, ge=0)
    eval_batch_size: int = _setting(1024, ge=1)
    check_every: int = _setting(100, ge=1)
    precision: str = _setting("fp32", choices=PRECISIONS)
    kernel: str = _setting("a2d", choices=KERNELS)
    disagreement_data: str = _setting("train", choices=DISAGREEMENT_DATA)
    hardness: bool = True
    member_lr: tuple[float, ...] = _setting((), ge=0)
    member_weight_decay: tuple[float, ...] = _setting((), ge=0)
    member_label_smoothing: tuple[float, ...] = _setting((), ge=0, lt=1)

    def __post_init__(self) -> None:
        if self.weight_decay is None:
            object.__setattr__(self, "weight_decay", PUBLISHED_WEIGHT_DECAY.get(self.optimizer))
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            problem = _type_problem(value, item.type)
            if problem is None and item.type.startswith("tuple["):
                value = tuple(float(number) for number in value)
                object.__setattr__(self, item.name, value)
            choices = item.metadata.get("choices")
            if problem is None and choices is not None and value not in choices:
                problem = f"must be one of {list(choices)}, got {value!r}"
            if problem is None and value is not None:
                problem = range_violation(value, item.metadata.get("bounds", {}))
            if problem:
                raise SettingError("TrainConfig", item.name, problem)
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
        values = dict(values)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
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
