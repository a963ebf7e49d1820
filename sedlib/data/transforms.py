"""The images a backbone sees: grey images to RGB at the backbone's resolution, and their augmentation.

Resolution: Fashion-MNIST's 28x28 grey images are replicated to RGB and upsampled (`to_model_input`).
A logistic-regression probe on the pooled features (6,000 train / 2,000 test images) reached
79 % at 32 px, 83 % at 48 px, 84 % at 64 px and 86 % at 96 px, at 2.1, 1.4, 2.5 and 6.1 ms per image
on a 2-core CPU. Measured again with `extract_features` (batch 256, torch's default two threads, best
of three runs on a shared 2-core machine): 32 px about 600 images/s (1.7 ms), 48 px about 1,000 images/s
(1.0 ms), 64 px about 480 images/s (2.1 ms); both measurements find 32 px slower than 48 px on this CPU.
``DEFAULT_IMAGE_SIZE = 48`` takes most of the accuracy gain (+4 points over 32 px, 3 points short of
96 px) at a quarter of the cost of 96 px, so the ~100k images of the default run cache in a few minutes
on a laptop. EfficientNet accepts any input size, so its `FrozenBackbone.image_size` is ``None`` unless
`load_backbone` is given one.

Augmentation (`augment`) is torchvision's ``RandomResizedCrop`` + ``RandomHorizontalFlip``
(https://pytorch.org/vision/stable/generated/torchvision.transforms.RandomResizedCrop.html) in numpy,
with one random generator per image seeded by ``(seed, pass_index, index)``: an image's augmented copy
never depends on which batch it was computed in, so an interrupted cache can resume bit-identically.

Example:
    >>> to_model_input(np.zeros((2, 28, 28), dtype=np.uint8), DEFAULT_IMAGE_SIZE).shape
    (2, 48, 48, 3)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_IMAGE_SIZE = 48
"""Side of the square RGB input of the default run (see the module docstring for the trade-off)."""


_CHUNK_VALUES = 1 << 24  # float values per resize chunk (64 MiB)


def check_uint8_images(images: np.ndarray, name: str = "images") -> None:
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
    check_uint8_images(images)
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
    check_uint8_images(images)
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
