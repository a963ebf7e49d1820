"""The entries ``train``, ``models.<name>`` and ``sweeps.<parameter>`` of a params file.

`ModelSpec` is one ensemble to train, `ModelRun` one trained replica of it (a model and a seed), and
`Sweep` a model trained at several values of one parameter: the resolved values the code receives.
A file's entries are checked by `ModelEntry` (`ModelKeys` and the training settings of
`sedlib.config.training.TrainSettings`) and `Sweeps`, whose values take the type of the swept setting, so
a setting's range is declared once, in `TrainSettings`.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass

from pydantic import ConfigDict, Field, create_model

from sedlib.config.fields import CHECKED, Count, Str, described, settings
from sedlib.config.messages import bare
from sedlib.config.training import TrainConfig, TrainSettings


@dataclass(frozen=True)
class ModelSpec:
    """One ensemble to train: its display label, size and training settings.

    Attributes:
        name: the model's name (its key in ``models``).
        label: how tables and figures name it; empty for its name.
        num_members: M, the ensemble's size.
        train: its training settings: the ``train`` section with the entry's own keys over it.
    """

    name: str
    label: str
    num_members: int
    train: TrainConfig


@dataclass(frozen=True)
class ModelRun:
    """One trained replica of a model: the model trained with one seed.

    Attributes:
        name: the replica's name, used for its files: the model's name, or ``<model>-seed<s>`` when
            the run has several ``seeds``.
        model: the model's name (a key of ``models``), shared by its replicas.
        label: the model's label (tables average its replicas under it).
        seed: the seed of ``seeds`` (else ``train.seed``); None for the backbone's pretrained head.
        spec: what to train (with ``seeds``, ``train.seed`` = ``seed`` x `sedlib.config.study.SEED_SPACING`;
            its label names the seed when there are several).
    """

    name: str
    model: str
    label: str
    seed: int | None
    spec: ModelSpec


@dataclass(frozen=True)
class Sweep:
    """One parameter of one model varied over values (``sweeps`` in a params file).

    Attributes:
        parameter: ``num_members`` or a numeric `sedlib.config.TrainConfig` key (``lam``, ``kappa``,
            ``lr``, ...).
        model: the model whose other settings every point shares (a key of ``models``).
        values: the parameter's values, in the file's order (distinct).
        points: the model trained for each value: an existing model with exactly those settings
            (the base model itself, or e.g. the deep ensemble for ``lam`` 0), else one made for the
            sweep, named ``<model>-<parameter><value>`` (``<model>-M<value>`` for ``num_members``).
    """

    parameter: str
    model: str
    values: tuple[float, ...]
    points: tuple[str, ...]


SWEEP_SYMBOLS = {"lam": "λ", "kappa": "κ", "num_members": "M", "lr": "lr", "weight_decay": "wd"}
"""How a sweep's parameter is written in labels and figures (other parameters by their key)."""

PRETRAINED_HEAD_MODEL = "pretrained_head"
"""Name of the "row zero" model: the frozen backbone's own head, evaluated like the ensembles."""


@settings(kw_only=True)
class ModelKeys:
    """The keys of a ``models`` entry beside the training settings."""

    label: Str = ""
    """how tables and figures name it; empty for its name."""
    num_members: Count
    """M, the ensemble's size."""


MODEL_KEYS = tuple(ModelKeys.__pydantic_fields__)


def _without_train_defaults(schema: dict, cls: type) -> None:
    """A model entry's train keys default to the ``train`` section's values, not to TrainConfig's."""
    described(schema, cls)
    for name in TrainSettings.__pydantic_fields__:
        schema["properties"][name].pop("default")


@settings(config=CHECKED | {"json_schema_extra": _without_train_defaults})
class ModelEntry(TrainSettings, ModelKeys):
    """One ensemble to train: its label, its size, and any `train` key it sets for itself."""


#: What a sweep can vary: the ensemble size and the float settings of TrainSettings.
SWEPT = {"num_members": ModelKeys.__pydantic_fields__["num_members"]} | {
    name: field for name, field in TrainSettings.__pydantic_fields__.items() if bare(field.annotation) is float
}


def _values(field) -> object:
    """The type of a swept setting's values: the setting's own (its bounds included), without None."""
    kind = field.rebuild_annotation()
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        (kind,) = (arg for arg in typing.get_args(kind) if arg is not type(None))
    return kind


SWEEP_ENTRIES = {
    name: create_model(
        f"{name.title().replace('_', '')}Sweep",
        __config__=ConfigDict(extra="forbid", json_schema_extra=described),
        __doc__=f"A model trained at several values of {name}, all else equal.",
        model=(Str, Field(description="the model whose other settings every point shares (a key of ``models``).")),
        # not empty and distinct: checked by `_resolve_sweeps` (pydantic's min_length also fires when an item is
        # invalid, with a misleading message), stated here for the schema
        values=(
            tuple[_values(field), ...],
            Field(
                description="the parameter's values, in the file's order (distinct).",
                json_schema_extra={"minItems": 1, "uniqueItems": True},
            ),
        ),
    )
    for name, field in SWEPT.items()
}
Sweeps = create_model(
    "Sweeps",
    __config__=ConfigDict(extra="forbid", json_schema_extra=described),
    __doc__="Parameter -> the model trained at several of its values, all else equal (the trade-off of stage 05).",
    **{
        name: (entry | None, Field(None, description=f"{name}: {SWEPT[name].description}"))
        for name, entry in SWEEP_ENTRIES.items()
    },
)
