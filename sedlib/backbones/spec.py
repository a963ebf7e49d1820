"""What a backbone is made of (`BackboneSpec`, `HeadShape`) and the timm helpers its loaders share.

Adding a backbone is one `BackboneSpec` entry in `BACKBONES` (a timm name, the input normalisation, the
feature function, how pretrained weights are obtained and described, and optionally the model's own
trainable head).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sedlib import file_sha256
from sedlib._compat import import_torchvision
from sedlib.errors import MissingWeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


RANDOM_INIT_SEED = 0


HEAD_PARAMETER_NAMES = (
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
    "ls2.gamma",
    "norm.weight",
    "norm.bias",
    "head.weight",
    "head.bias",
)
"""Names of a pretrained head's tensors, those of `sedlib.method.ensemble.HeadEnsemble` (without its member axis)."""


@dataclass(frozen=True)
class HeadShape:
    """Shape of a backbone's own trainable head, the function `sedlib.method.ensemble.head_forward` computes.

    Together they fill a `sedlib.method.ensemble.HeadConfig`:
    ``HeadConfig(num_members, feature_dim, hidden_dim, num_classes, norm_eps=norm_eps)``.

    Attributes:
        feature_dim: d, width of the cut feature and of the head's input (768 for DeiT-3-B).
        hidden_dim: width of the MLP's hidden layer (3072 for DeiT-3-B).
        num_classes: C, outputs of the linear classifier (1000).
        norm_eps: epsilon of both LayerNorms (1e-6 for DeiT-3-B).
    """

    feature_dim: int
    hidden_dim: int
    num_classes: int
    norm_eps: float


def _no_create_kwargs(image_size: int | None) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one frozen backbone.

    Attributes:
        timm_name: architecture name (with pretrained tag, if any) for ``timm.create_model``.
        mean: per-channel mean subtracted from inputs in [0, 1].
        std: per-channel standard deviation the centred inputs are divided by.
        load_pretrained: ``(timm_name, create_kwargs) -> (model, description)``: builds the timm model
            with its pretrained weights and describes the weights deterministically (for cache manifests).
        features: ``(model, x) -> (B, d)`` feature of normalised ``(B, 3, H, W)`` images.
        default_image_size: input side used when `load_backbone` gets no ``image_size``; ``None`` when
            the network accepts any size.
        fixed_input_size: the model is built for one input size (a ViT's position embedding), which
            `FrozenBackbone.forward` then requires; ``False``: any size is accepted, whatever ``image_size``.
        create_kwargs: ``image_size -> kwargs`` for ``timm.create_model`` (``image_size`` may be ``None``).
        filter_checkpoint: ``(state_dict, model) -> state_dict`` converting a local checkpoint to the
            model's key names and shapes; ``None`` when the backbone takes no ``weights`` file.
        head_params: ``model -> {name: tensor}``, the model's own trainable head named as in
            `HEAD_PARAMETER_NAMES`; ``None`` when the model's classifier is not of that form.
        head_shape: shape of that head (`HeadShape`); given exactly when ``head_params`` is.
    """

    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    load_pretrained: Callable[[str, dict[str, Any]], tuple[nn.Module, str]]
    features: Callable[[nn.Module, Tensor], Tensor]
    default_image_size: int | None = None
    fixed_input_size: bool = False
    create_kwargs: Callable[[int | None], dict[str, Any]] = field(default=_no_create_kwargs)
    filter_checkpoint: Callable[[Mapping[str, Any], nn.Module], dict[str, Tensor]] | None = None
    head_params: Callable[[nn.Module], dict[str, Tensor]] | None = None
    head_shape: HeadShape | None = None

    def __post_init__(self) -> None:
        if (self.head_params is None) != (self.head_shape is None):
            raise ValueError("BackboneSpec: give both head_params and head_shape, or neither")


def map_state_dict_by_order(source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the tensors of ``source`` to the keys of ``target``, pairing them by position.

    Args:
        source: the state dict to load (for example from another implementation of the same network).
        target: the state dict of the model to load into; only its keys, shapes and dtypes are used.

    Returns:
        ``{target_key: source_tensor}`` in target order.

    Raises:
        ValueError: if the two hold different numbers of tensors, or if a pair differs in shape or
            dtype; the message names the first mismatching pair (source key and target key).
    """
    problems = []
    if len(source) != len(target):
        problems.append(f"source has {len(source)} tensors, target {len(target)}")
    for index, ((source_key, tensor), (target_key, expected)) in enumerate(
        zip(source.items(), target.items(), strict=False)
    ):
        if tensor.shape != expected.shape or tensor.dtype != expected.dtype:
            problems.append(
                f"first mismatch at position {index}: source {source_key!r} {tuple(tensor.shape)} {tensor.dtype} "
                f"vs target {target_key!r} {tuple(expected.shape)} {expected.dtype}"
            )
            break
    if problems:
        raise ValueError("cannot map state dicts by order: " + "; ".join(problems))
    return dict(zip(target.keys(), source.values(), strict=True))


def import_timm():
    """The ``timm`` module, imported after the torchvision fix of `sedlib._compat` that it needs here."""
    import_torchvision()  # timm imports torchvision, which needs the compatibility fix first
    import timm

    return timm


def create_random(timm_name: str, create_kwargs: Mapping[str, Any]) -> nn.Module:
    """A timm model with random weights, made deterministic by a private fork of torch's random state."""
    timm = import_timm()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return timm.create_model(timm_name, pretrained=False, **create_kwargs)


def create_empty(timm_name: str, create_kwargs: Mapping[str, Any]) -> nn.Module:
    """A timm model on the meta device (no memory, no initialisation), to be filled with ``assign=True``."""
    timm = import_timm()
    with torch.device("meta"):
        return timm.create_model(timm_name, pretrained=False, **create_kwargs)


def hub_weight_file(model: nn.Module) -> Path | None:
    """The weight file timm read from the Hugging Face cache for ``model``, if it can be found."""
    repo = getattr(model, "pretrained_cfg", {}).get("hf_hub_id")
    if not repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):  # timm prefers the safetensors file
        found = try_to_load_from_cache(repo_id=repo, filename=filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def hub_pretrained(timm_name: str, create_kwargs: Mapping[str, Any], advice: str) -> tuple[nn.Module, str]:
    """A timm model with its hub weights (offline: from the Hugging Face cache), and their description.

    Args:
        timm_name: model name with its pretrained tag, if any.
        create_kwargs: further arguments of ``timm.create_model``.
        advice: the other way to get the weights, appended to the error (starts with ``or``).

    Raises:
        MissingWeightsError: the weights cannot be loaded (not cached and offline, or a hub error); says what to do.
    """
    timm = import_timm()
    try:
        with torch.random.fork_rng(devices=[]):
            model = timm.create_model(timm_name, pretrained=True, **create_kwargs)
    except Exception as error:  # offline and not cached, network or hub errors: all mean "no weights here"
        raise MissingWeightsError(
            f"cannot load the pretrained weights {timm_name} through timm ({type(error).__name__}: {error}). "
            "Either run once with network access (HF_HUB_OFFLINE unset) so that timm stores them in the "
            f"Hugging Face cache, {advice}"
        ) from error
    path = hub_weight_file(model)
    if path is None:
        version = importlib.metadata.version("timm")
        return model, f"timm hub {timm_name} (timm {version}; weight file not found in the Hugging Face cache)"
    return model, f"timm hub {timm_name} ({path.name} sha256:{file_sha256(path)[:16]})"


def pooled_pre_logits(model: nn.Module, x: Tensor) -> Tensor:
    """The pooled pre-logit feature of a timm model: ``forward_head(forward_features(x), pre_logits=True)``.

    Args:
        model: a timm model.
        x: ``(B, 3, H, W)`` normalised images.

    Returns:
        ``(B, model.num_features)``.
    """
    return model.forward_head(model.forward_features(x), pre_logits=True)
