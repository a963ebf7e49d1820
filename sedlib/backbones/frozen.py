"""The frozen backbone (`FrozenBackbone`), the registry of backbones (`BACKBONES`) and feature extraction.

A backbone maps images in [0, 1] to features; its weights never change. `load_backbone` builds one from
the registry (and, for DeiT-3-B, optionally from a local checkpoint), `extract_features` runs it over
images in batches.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sedlib import file_sha256
from sedlib.backbones.deit3 import (
    DEIT3_BASE_TIMM_NAME,
    deit3_create_kwargs,
    deit3_cut_features,
    deit3_head_params,
    deit3_hub_pretrained,
    filter_deit3_checkpoint,
)
from sedlib.backbones.efficientnet import efficientnet_lite0_pretrained
from sedlib.backbones.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_INIT_SEED,
    BackboneSpec,
    HeadShape,
    create_empty,
    create_random,
    pooled_pre_logits,
)
from sedlib.backbones.timm_models import load_timm_model
from sedlib.config import TIMM_PREFIX
from sedlib.data.transforms import check_uint8_images
from sedlib.errors import MissingFileError
from sedlib.progress import tqdm

BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        timm_name="tf_efficientnet_lite0",
        mean=(127 / 255, 127 / 255, 127 / 255),
        std=(128 / 255, 128 / 255, 128 / 255),
        load_pretrained=efficientnet_lite0_pretrained,
        features=pooled_pre_logits,
    ),
    "deit3_base": BackboneSpec(
        timm_name=DEIT3_BASE_TIMM_NAME,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        load_pretrained=deit3_hub_pretrained,
        features=deit3_cut_features,
        default_image_size=224,
        fixed_input_size=True,
        create_kwargs=deit3_create_kwargs,
        filter_checkpoint=filter_deit3_checkpoint,
        head_params=deit3_head_params,
        head_shape=HeadShape(feature_dim=768, hidden_dim=3072, num_classes=1000, norm_eps=1e-6),
    ),
}
"""Registered backbones by name; `load_backbone` accepts these keys."""


class FrozenBackbone(nn.Module):
    """A pretrained network with frozen weights that maps images in [0, 1] to features.

    The module stays in eval mode: `train` is overridden so that BatchNorm statistics and dropout never
    change, whatever a caller (or a parent module's ``.train()``) asks.

    Attributes:
        name: the `BACKBONES` key it was built from.
        feature_dim: length of the feature (1280 for EfficientNet-Lite0, 768 for DeiT-3-B).
        num_classes: outputs of `classify` (1000).
        image_size: input side the backbone was loaded for (224 for DeiT-3-B by default); ``None`` when
            none was given to a backbone that accepts any size (EfficientNet).
        fixed_input_size: `forward` and `classify` require ``image_size`` x ``image_size`` inputs (DeiT-3);
            ``False``: any size is accepted (EfficientNet, even with an ``image_size``).
        head_shape: `HeadShape` of the model's own trainable head, or ``None`` when it has none of the
            form of `sedlib.method.ensemble.head_forward` (EfficientNet); `head_hidden_dim` and `head_norm_eps`
            read it.
        mean: per-channel input mean, a 3-tuple.
        std: per-channel input standard deviation, a 3-tuple.
        weights: deterministic description of the weights (source, file, short sha256).
        model: the timm model.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        weights: str,
        *,
        features: Callable[[nn.Module, Tensor], Tensor] = pooled_pre_logits,
        image_size: int | None = None,
        fixed_input_size: bool = False,
        head_params: Callable[[nn.Module], dict[str, Tensor]] | None = None,
        head_shape: HeadShape | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.feature_dim = int(model.num_features)
        self.num_classes = int(model.num_classes)
        if fixed_input_size and image_size is None:
            raise ValueError("a fixed input size needs image_size")
        self.image_size = image_size
        self.fixed_input_size = fixed_input_size
        self.head_shape = head_shape
        self._features = features
        self._head_params = head_params
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self.weights = weights
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenBackbone:
        """Stay in eval mode whatever ``mode`` is (the backbone is frozen)."""
        return super().train(False)

    @property
    def head_hidden_dim(self) -> int | None:
        """Hidden width of the pretrained head's MLP (3072 for DeiT-3-B); ``None`` without such a head."""
        return None if self.head_shape is None else self.head_shape.hidden_dim

    @property
    def head_norm_eps(self) -> float | None:
        """LayerNorm epsilon of the pretrained head (1e-6 for DeiT-3-B); ``None`` without such a head."""
        return None if self.head_shape is None else self.head_shape.norm_eps

    def normalize(self, x: Tensor) -> Tensor:
        """Map ``(B, 3, H, W)`` floats in [0, 1] to the network's input scale."""
        if not torch.is_floating_point(x):
            raise TypeError(f"expected float images in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if self.fixed_input_size and tuple(x.shape[2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"{self.name} was built for {self.image_size}x{self.image_size} inputs, got "
                f"{x.shape[2]}x{x.shape[3]}; resize the images or load the backbone with image_size={x.shape[2]}"
            )
        return (x - self._mean) / self._std

    def forward(self, x: Tensor) -> Tensor:
        """The frozen feature the heads are trained on.

        Args:
            x: ``(B, 3, H, W)`` float images in [0, 1].

        Returns:
            ``(B, feature_dim)``: EfficientNet's pooled pre-logit feature (timm ``forward_features`` then
            ``forward_head(pre_logits=True)``); DeiT-3's CLS token after block 12's attention residual
            (`deit3_cut_features`).
        """
        return self._features(self.model, self.normalize(x))

    def classify(self, x: Tensor) -> Tensor:
        """Logits of the full pretrained ImageNet classifier.

        Args:
            x: ``(B, 3, H, W)`` float images in [0, 1].

        Returns:
            ``(B, num_classes)`` logits.
        """
        return self.model(self.normalize(x))

    def pretrained_head(self) -> dict[str, Tensor] | None:
        """The model's own trainable head, ready to initialise or compare `sedlib.method.ensemble.HeadEnsemble`.

        ``head_forward({k: v[None] for k, v in head.items()}, backbone(x), head_shape.norm_eps)[0]``
        equals ``classify(x)``.

        Returns:
            ``{name: tensor}`` named as `HeadEnsemble`'s parameters without the member axis
            (``mlp.fc1.weight`` is ``(hidden_dim, feature_dim)``), detached float32 copies on the CPU;
            ``None`` when the backbone has no such head (`head_shape` is ``None``).
        """
        if self._head_params is None:
            return None
        return {
            name: tensor.detach().to(device="cpu", dtype=torch.float32, copy=True)
            for name, tensor in self._head_params(self.model).items()
        }


def _load_checkpoint(model: nn.Module, path: Path, spec: BackboneSpec, name: str) -> str:
    """Load a local checkpoint strictly into a meta-device ``model``; describe it (file name, short sha256)."""
    if not path.is_file():
        raise MissingFileError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: not a plain tensor checkpoint (torch.load with weights_only=True: {error})"
        ) from error
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a state dict or a dict with key 'model', got {type(raw).__name__}")
    expected = model.state_dict()
    state = spec.filter_checkpoint(raw, model)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [
        f"{key} {tuple(state[key].shape)} (model {tuple(expected[key].shape)})"
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {len(keys)}: {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
            if keys
        ]
        raise ValueError(
            f"{path}: does not fit {name} ({spec.timm_name}) after timm's key conversion; " + "; ".join(parts)
        )
    # The model was built on the meta device: take the checkpoint's tensors, in the model's dtypes.
    model.load_state_dict({key: state[key].to(expected[key].dtype) for key in expected}, strict=True, assign=True)
    left = [key for key, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise RuntimeError(f"{path}: loading left tensors without values (non-persistent buffers?): {left[:5]}")
    description = f"file {path.name} sha256:{file_sha256(path)[:16]} (timm {spec.timm_name})"
    unwrapped = raw
    for wrapper in ("model", "state_dict"):  # the wrappers timm's filter removes
        unwrapped = unwrapped[wrapper] if isinstance(unwrapped.get(wrapper), Mapping) else unwrapped
    source, target = unwrapped.get("pos_embed"), expected.get("pos_embed")
    if isinstance(source, Tensor) and target is not None and source.shape != target.shape:
        description += f", pos_embed resampled {tuple(source.shape)} -> {tuple(target.shape)}"
    return description


def load_backbone(
    name: str = "efficientnet_lite0",
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
    image_size: int | None = None,
) -> FrozenBackbone:
    """Build a registered backbone, frozen and in eval mode.

    Args:
        name: a key of `BACKBONES`, or ``timm:<model name>`` for any timm model (`sedlib.backbones.timm_models`:
            its pre-logits feature, its pretrained input size and normalisation).
        pretrained: load the pretrained weights; ``False`` gives timm's random initialisation, made
            deterministic by seeding a private copy of torch's random state (for tests).
        device: where the module lives.
        weights: with ``pretrained``, a local checkpoint to load instead of the backbone's default source
            (``None`` or ``""``: the default, e.g. timm's hub weights for ``deit3_base``). For
            ``deit3_base``: FB's ``deit_3_base_224_21k.pth`` or a timm state dict (``.pth``, ``.bin``,
            ``.safetensors``), loaded strictly after timm's key conversion.
        image_size: input side to build the model for (``None``: the spec's default, 224 for
            ``deit3_base``; a timm model's pretrained input size). A ViT's position embedding is resampled
            from the checkpoint's grid, and inputs must have this size; EfficientNet only records it and
            accepts any size.

    Returns:
        A `FrozenBackbone`.

    Raises:
        ValueError: an unknown ``name``; ``weights`` given with ``pretrained=False`` or for a backbone
            that takes no weights file; a checkpoint that does not fit (the message names the file and the
            first missing or unexpected keys).
        FileNotFoundError: ``weights`` names no file.
        RuntimeError: the default pretrained weights cannot be obtained (the message says how to get them).
    """
    if name.startswith(TIMM_PREFIX):
        model, used, description = load_timm_model(name, pretrained, weights, image_size)
        backbone = FrozenBackbone(
            model,
            name=name,
            mean=used.mean,
            std=used.std,
            weights=description,
            image_size=used.image_size,
            fixed_input_size=used.fixed_input_size,
        )
        return backbone.to(device)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)} or {TIMM_PREFIX}<model name>")
    spec = BACKBONES[name]
    if image_size is None:
        image_size = spec.default_image_size
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    create_kwargs = spec.create_kwargs(image_size)
    weights = str(weights) if weights else None
    if weights is not None and not pretrained:
        raise ValueError(f"weights={weights!r} given with pretrained=False; pass one or the other")
    if weights is not None and spec.filter_checkpoint is None:
        raise ValueError(f"backbone {name!r} does not take a weights file; leave weights unset")

    if not pretrained:
        model = create_random(spec.timm_name, create_kwargs)
        settings = "".join(f", {key}={value}" for key, value in sorted(create_kwargs.items()))
        description = f"random init (timm {spec.timm_name}, torch seed {RANDOM_INIT_SEED}{settings})"
    elif weights is not None:
        model = create_empty(spec.timm_name, create_kwargs)
        description = _load_checkpoint(model, Path(weights).expanduser(), spec, name)
    else:
        model, description = spec.load_pretrained(spec.timm_name, create_kwargs)
    backbone = FrozenBackbone(
        model,
        name=name,
        mean=spec.mean,
        std=spec.std,
        weights=description,
        features=spec.features,
        image_size=image_size,
        fixed_input_size=spec.fixed_input_size,
        head_params=spec.head_params,
        head_shape=spec.head_shape,
    )
    return backbone.to(device)


def extract_features(
    backbone: FrozenBackbone,
    images: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool | str = False,
) -> np.ndarray:
    """Pooled backbone features of uint8 images, in batches, without autograd.

    Args:
        backbone: a `FrozenBackbone`; it is moved to ``device``.
        images: ``(N, S, S, 3)`` uint8 RGB (any sliceable array with ``shape`` and ``dtype``, e.g. h5py).
        batch_size: images per forward pass.
        device: where to compute.
        progress: show a tqdm bar; a string is used as its description.

    Returns:
        ``(N, feature_dim)`` float32.
    """
    check_uint8_images(images)
    if len(images.shape) != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, S, S, 3) RGB, got shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    backbone = backbone.to(device)
    n = images.shape[0]
    out = np.empty((n, backbone.feature_dim), dtype=np.float32)
    starts = tqdm(
        range(0, n, batch_size),
        desc=progress if isinstance(progress, str) else "features",
        disable=not progress,
        leave=False,
    )
    with torch.inference_mode():
        for start in starts:
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            x = batch.permute(0, 3, 1, 2).float().div_(255)
            out[start : start + len(batch)] = backbone(x).float().cpu().numpy()
    return out
