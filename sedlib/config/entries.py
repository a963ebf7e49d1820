"""The entries ``train``, ``models.<name>`` and ``sweeps.<parameter>`` of a params file.

`ModelSpec` is one ensemble to train, `ModelRun` one trained replica of it (a model and a seed), and
`Sweep` a model trained at several values of one parameter. The pydantic models that check the
entries are made from `sedlib.config.training.TrainConfig`'s fields (their types, and the choices and
bounds of their metadata), so TrainConfig stays a plain dataclass that checks itself when code builds
it, and the JSON Schema shows each train key's range and choices.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import ConfigDict, Field, create_model

from sedlib.config.fields import Bool, Count, Str, attribute_docs, number
from sedlib.config.training import TrainConfig


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

MODEL_KEYS = ("label", "num_members")
PRETRAINED_HEAD_MODEL = "pretrained_head"
"""Name of the "row zero" model: the frozen backbone's own head, evaluated like the ensembles."""


def _checked_type(hint, metadata: Mapping) -> object:
    """The strict annotation of a `TrainConfig` field of type ``hint`` with the choices and bounds of its metadata."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _checked_type(inner, metadata) | None
    if typing.get_origin(hint) is tuple:
        return tuple[tuple(arg if arg is Ellipsis else _checked_type(arg, metadata) for arg in typing.get_args(hint))]
    if hint is str and "choices" in metadata:
        return Literal[tuple(metadata["choices"])]
    if hint in (int, float):
        return number(hint, **metadata.get("bounds", {}))
    return {str: Str, bool: Bool}[hint]


_TRAIN_HINTS = typing.get_type_hints(TrainConfig)
_TRAIN_DOCS = attribute_docs(TrainConfig)
_TRAIN_TYPES = {
    item.name: _checked_type(_TRAIN_HINTS[item.name], item.metadata) for item in dataclasses.fields(TrainConfig)
}


def _train_fields() -> dict:
    """Field definitions of TrainConfig's keys for `create_model`: type, default and description."""
    return {
        item.name: (_TRAIN_TYPES[item.name], Field(item.default, description=_TRAIN_DOCS[item.name]))
        for item in dataclasses.fields(TrainConfig)
    }


TrainSettings = create_model(
    "TrainSettings",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Training defaults of every model (the keys of `sedlib.config.TrainConfig`).",
    **_train_fields(),
)


def _without_train_defaults(schema: dict) -> None:
    """A model entry's train keys default to the ``train`` section's values, not to TrainConfig's."""
    for name in _TRAIN_TYPES:
        schema["properties"][name].pop("default")


_MODEL_DOCS = attribute_docs(ModelSpec)
ModelEntry = create_model(
    "ModelEntry",
    __config__=ConfigDict(extra="forbid", json_schema_extra=_without_train_defaults),
    __doc__="One ensemble to train: its label, its size, and any `train` key it sets for itself.",
    label=(Str, Field("", description=_MODEL_DOCS["label"])),
    num_members=(Count, Field(description=_MODEL_DOCS["num_members"])),
    **_train_fields(),
)

#: What a sweep can vary: the ensemble size or a float setting of TrainConfig, with the type of its values.
_SWEEP_VALUES = {"num_members": Count} | {
    item.name: _checked_type(float, item.metadata)
    for item in dataclasses.fields(TrainConfig)
    if _TRAIN_HINTS[item.name] in (float, float | None)
}
_SWEEP_DOCS = attribute_docs(Sweep)
SWEEP_ENTRIES = {
    name: create_model(
        f"{name.title().replace('_', '')}Sweep",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"A model trained at several values of {name}, all else equal.",
        model=(Str, Field(description=_SWEEP_DOCS["model"])),
        # not empty and distinct: checked by `_resolve_sweeps` (pydantic's min_length also fires when an item is
        # invalid, with a misleading message), stated here for the schema
        values=(
            tuple[kind, ...],
            Field(description=_SWEEP_DOCS["values"], json_schema_extra={"minItems": 1, "uniqueItems": True}),
        ),
    )
    for name, kind in _SWEEP_VALUES.items()
}
Sweeps = create_model(
    "Sweeps",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Parameter -> the model trained at several of its values, all else equal (the trade-off of stage 05).",
    **{
        name: (entry | None, Field(None, description=f"{name}: {_MODEL_DOCS.get(name) or _TRAIN_DOCS[name]}"))
        for name, entry in SWEEP_ENTRIES.items()
    },
)
