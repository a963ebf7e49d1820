"""Any timm model as the frozen backbone: ``cache.backbone: timm:<model name>``.

The feature is the model's pre-logits feature, ``forward_head(forward_features(x), pre_logits=True)``
(`sedlib.backbones.spec.pooled_pre_logits`): what its own classifier reads, ``model.num_features`` wide
(pooled for a CNN, the CLS token or the pooled tokens after the final norm for a ViT). SED's heads are
trained on it. The paper's DeiT-3-B (``deit3_base``) is cut earlier, inside its last block, so that the
last MLP block, the final norm and the classifier can be trained per member and start from the model's own
(`sedlib.backbones.deit3`); a ``timm:`` backbone gives the heads the finished feature instead, and has no
pretrained head of the SED head's form.

Input size, interpolation and normalisation come from the model's pretrained configuration
(``timm.data.resolve_model_data_config``); ``cache.image_size`` overrides the size, and a model built
for one input size (a ViT's ``fixed_input_size``) is then built for the other (timm resamples its
position embedding).

Weights: a local file (``cache.weights``: a timm state dict, ``.safetensors``, ``.pth`` or ``.bin``),
loaded by timm itself (``pretrained_cfg_overlay={"file": ...}``, through the architecture's own
checkpoint filter, strictly); else timm's hub weights, offline only when they are already in the
Hugging Face cache; or, with ``pretrained=False``, timm's random initialisation (for tests).

Example:
    >>> timm_model_name("timm:resnet18.a1_in1k")
    'resnet18.a1_in1k'
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from sedlib import file_sha256
from sedlib.backbones.spec import RANDOM_INIT_SEED, create_empty, create_random, hub_pretrained, import_timm
from sedlib.config import TIMM_PREFIX
from sedlib.errors import SedlibError


class TimmBackboneError(SedlibError, ValueError):
    """A ``timm:`` backbone cannot be built: an unknown model, or a weights file that does not fit it."""


@dataclass(frozen=True)
class TimmInput:
    """What a timm model expects of its input, from its pretrained configuration.

    Attributes:
        image_size: side S of the square input it was trained at.
        mean: per-channel mean subtracted from inputs in [0, 1].
        std: per-channel standard deviation the centred inputs are divided by.
        fixed_input_size: the model is built for one input size (a ViT's position embedding).
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fixed_input_size: bool


def timm_model_name(backbone: str) -> str:
    """The timm model name of a ``timm:<model name>`` backbone.

    Raises:
        ValueError: ``backbone`` does not start with ``timm:``.
        TimmBackboneError: the name is not a timm model (the message says how to list them).
    """
    if not backbone.startswith(TIMM_PREFIX):
        raise ValueError(f"{backbone!r} is not a timm backbone ({TIMM_PREFIX}<model name>)")
    name = backbone[len(TIMM_PREFIX) :]
    timm = import_timm()
    if not timm.is_model(name):
        raise TimmBackboneError(
            f"cache.backbone: {backbone!r} names no timm {timm.__version__} model; list them with "
            f"python -c \"import timm; print(timm.list_models('*{name.split('.')[0][:8]}*'))\""
        )
    return name


def _input_of(model: nn.Module) -> TimmInput:
    timm = import_timm()
    config = timm.data.resolve_model_data_config(model)
    return TimmInput(
        image_size=int(config["input_size"][-1]),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        fixed_input_size=bool(model.pretrained_cfg.get("fixed_input_size", False)),
    )


@functools.cache  # stage 01 asks once per split; the answer depends on the name alone
def timm_input(backbone: str) -> TimmInput:
    """The input a ``timm:<model name>`` backbone expects, read from a weightless (meta-device) build of it."""
    return _input_of(create_empty(timm_model_name(backbone), {}))


def load_timm_model(
    backbone: str, pretrained: bool, weights: str | Path | None, image_size: int | None
) -> tuple[nn.Module, TimmInput, str]:
    """Build a ``timm:<model name>`` backbone's model.

    Args:
        backbone: ``timm:<model name>``, the name optionally with its pretrained tag (``resnet18.a1_in1k``).
        pretrained: load weights (``weights`` or the hub's); ``False``: timm's random initialisation, seeded.
        weights: a local state dict file, or None for the hub weights.
        image_size: input side; None for the model's pretrained one.

    Returns:
        ``(model, input, description)``: the model (eval mode not yet set), what it expects of its input
        (``input.image_size`` is the side the model is used at), and a deterministic description of the weights.

    Raises:
        TimmBackboneError: an unknown model, or a weights file that does not fit it.
        ValueError: ``weights`` with ``pretrained=False``.
        FileNotFoundError: ``weights`` names no file.
        RuntimeError: no weights file and the hub weights are not in the Hugging Face cache.
    """
    name = timm_model_name(backbone)
    native = timm_input(backbone)
    create_kwargs: dict[str, Any] = {}
    if native.fixed_input_size and image_size is not None and image_size != native.image_size:
        create_kwargs["img_size"] = image_size  # timm resamples the position embedding of the weights
    if weights and not pretrained:
        raise ValueError(f"cache.weights={str(weights)!r} given with cache.pretrained: false; set one or the other")
    if not pretrained:
        model = create_random(name, create_kwargs)
        description = f"random init (timm {name}, torch seed {RANDOM_INIT_SEED}) -- no pretrained weights"
    elif weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"cache.weights: {path} is not a file; give the path of {name}'s weights")
        timm = import_timm()
        try:
            overlay = {"file": str(path)}  # timm loads it through the architecture's own checkpoint filter
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **create_kwargs)
        except (RuntimeError, KeyError, ValueError, OSError) as error:
            raise TimmBackboneError(
                f"cache.weights: {path} does not load into timm's {name} ({type(error).__name__}: {error}); "
                "give a state dict of that architecture (as timm.create_model(...).state_dict() saves it)"
            ) from error
        description = f"file {path.name} sha256:{file_sha256(path)[:16]} (timm {name})"
    else:
        advice = f"or save the weights of {name} to a file and set cache.weights to its path."
        model, description = hub_pretrained(name, create_kwargs, advice)
    used = _input_of(model)
    if image_size is not None:
        used = TimmInput(image_size, used.mean, used.std, used.fixed_input_size)
    return model, used, description
