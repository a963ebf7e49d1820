"""The 15 ImageNet-C corruptions, applied reproducibly per image.

The corruption functions are those of ImageNet-C (Hendrycks & Dietterich, *Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations*, ICLR 2019,
https://arxiv.org/abs/1903.12261) in the size-agnostic version of the ``imagecorruptions`` package
(Michaelis et al. 2019, https://github.com/bethgelab/imagecorruptions), imported through
`sedlib._compat.import_imagecorruptions`, which makes version 1.1.2 work on current numpy,
scikit-image and setuptools. The names and their order are `sedlib.config.CORRUPTIONS`.

Reproducibility: the corruptions draw from numpy's global RNG (``np.random``). Before each image,
`corrupt_images` sets that RNG to a state derived by `numpy.random.SeedSequence` from
``(seed, position of the corruption in CORRUPTIONS, severity, sample index)``, and restores the
caller's state afterwards. An image's corrupted version therefore depends only on the image and
those four numbers, not on which other images share the batch: a resumed run reproduces it.

``glass_blur`` runs as `glass_blur` here: the package's pixel loop, replayed on pixel positions
instead of pixel values, gives the same image about twenty times faster.

As in ``imagecorruptions.corrupt``, each corruption receives a PIL image and its float result is
clipped to 0-255; here it is rounded to the nearest integer (``imagecorruptions.corrupt`` and the
ImageNet-C scripts truncate, a difference below one grey level).

Example:
    >>> images = np.full((1, 32, 32, 3), 100, dtype=np.uint8)
    >>> corrupt_images(images, "brightness", severity=1, seed=0).shape
    (1, 32, 32, 3)
"""

from __future__ import annotations

import numpy as np

from sedlib._compat import import_imagecorruptions  # imports torch: only when corrupting
from sedlib.config import CORRUPTIONS
from sedlib.progress import tqdm

MIN_SIZE = 32
"""Smallest height and width the corruptions support (``imagecorruptions`` requires 32x32)."""
SEVERITIES = (1, 2, 3, 4, 5)


def image_seed(seed: int, corruption: str, severity: int, index: int) -> np.random.SeedSequence:
    """The seed sequence of one image: ``SeedSequence([seed, CORRUPTIONS.index(corruption), severity, index])``."""
    return np.random.SeedSequence([seed, CORRUPTIONS.index(corruption), severity, index])


def _set_global_rng(sequence: np.random.SeedSequence) -> None:
    """Put numpy's global (legacy MT19937) RNG into the state that ``MT19937(sequence)`` starts from."""
    state = np.random.MT19937(sequence).state["state"]
    np.random.set_state(("MT19937", state["key"], state["pos"], 0, 0.0))


#: Glass blur's (sigma, max_delta, iterations) per severity, as in ImageNet-C.
_GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))


def glass_blur(image, severity: int = 1) -> np.ndarray:
    """ImageNet-C's glass blur, equal to ``imagecorruptions.corruptions.glass_blur`` and about 20x faster.

    The reference blurs, then walks the pixels from the bottom right drawing an offset per pixel
    (``np.random.randint(-d, d, size=(2,))``) and runs ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``.
    Both sides are numpy views, so that line copies ``x[h', w']`` into ``x[h, w]`` and leaves
    ``x[h', w']`` as it was (a known quirk of ImageNet-C, kept for comparability). Here the same
    copies run on a list of pixel positions, with the offsets drawn in one call (the global RNG
    yields the same numbers either way), and the image is gathered once at the end.

    Args:
        image: ``(H, W, 3)`` uint8 image (array or PIL).
        severity: 1 to 5.

    Returns:
        ``(H, W, 3)`` float64 image in [0, 255], as the reference returns it.
    """
    import skimage.filters

    sigma, delta, iterations = _GLASS_BLUR[severity - 1]
    x = np.uint8(skimage.filters.gaussian(np.array(image) / 255.0, sigma=sigma, channel_axis=-1) * 255)
    height, width = x.shape[:2]
    rows, columns = range(height - delta, delta, -1), range(width - delta, delta, -1)
    offsets = np.random.randint(-delta, delta, size=(iterations * len(rows) * len(columns), 2)).tolist()
    source = list(range(height * width))  # the pixel whose value each position now holds
    steps = iter(offsets)
    for _ in range(iterations):
        for h in rows:
            for w in columns:
                dx, dy = next(steps)
                source[h * width + w] = source[(h + dy) * width + w + dx]
    x = x.reshape(height * width, -1)[source].reshape(x.shape)
    return np.clip(skimage.filters.gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def _to_uint8(result, shape: tuple[int, int, int], corruption: str, severity: int) -> np.ndarray:
    """Convert one corruption's output (float array, uint8 array or PIL image) to an ``(H, W, 3)`` uint8 array."""
    array = np.asarray(result)
    if array.ndim == 2:  # grey output of a grey-capable corruption
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.shape != shape:
        raise RuntimeError(
            f"imagecorruptions {corruption} (severity {severity}) returned shape {array.shape} for an input of "
            f"shape {shape}; see sedlib._compat.import_imagecorruptions for the fixes applied to the package"
        )
    if array.dtype == np.uint8:
        return array
    if not np.isfinite(array).all():
        raise RuntimeError(f"imagecorruptions {corruption} (severity {severity}) returned NaN or inf values")
    return np.rint(np.clip(array, 0, 255)).astype(np.uint8)


def _check_arguments(images: np.ndarray, corruption: str, severity: int, seed: int, indices: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        got = f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray) else type(images)
        raise ValueError(f"images must be an (N, H, W, 3) uint8 array of RGB images, got {got}")
    if min(images.shape[1:3]) < MIN_SIZE:
        raise ValueError(
            f"images must be at least {MIN_SIZE}x{MIN_SIZE} pixels for imagecorruptions, got "
            f"{images.shape[1]}x{images.shape[2]}; resize them before corrupting"
        )
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; valid names: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer from 1 to 5, got {severity!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if indices.shape != images.shape[:1] or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"indices must be ({len(images)},) integers, one per image, got {indices.dtype} {indices.shape}"
        )
    if len(indices) and indices.min() < 0:
        raise ValueError(f"indices must be non-negative sample ids, got minimum {indices.min()}")


def corrupt_images(
    images: np.ndarray,
    corruption: str,
    severity: int,
    seed: int,
    indices: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Apply one ImageNet-C corruption at one severity to every image, reproducibly per image.

    Args:
        images: ``(N, H, W, 3)`` uint8 RGB images, ``H, W >= 32``.
        corruption: one of `sedlib.config.CORRUPTIONS`.
        severity: 1 (mildest) to 5.
        seed: non-negative run seed.
        indices: ``(N,)`` non-negative sample ids (e.g. rows of the source split) that, with
            ``seed``, ``corruption`` and ``severity``, seed each image; default ``arange(N)``. Give
            the same ids to get the same images whatever the batch.
        progress: show a tqdm bar over the images.

    Returns:
        ``(N, H, W, 3)`` uint8 corrupted images. numpy's global RNG is left as it was.

    Raises:
        ValueError: bad images (wrong dtype or shape, smaller than 32x32), an unknown corruption
            (the message lists the valid names), a severity outside 1-5, or bad seed/indices.
    """
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    _check_arguments(images, corruption, severity, seed, indices)
    from PIL import Image

    function = glass_blur if corruption == "glass_blur" else import_imagecorruptions().corruption_dict[corruption]
    output = np.empty_like(images)
    saved = np.random.get_state()
    try:
        for row in tqdm(range(len(images)), desc=f"{corruption} {severity}", disable=not progress):
            _set_global_rng(image_seed(int(seed), corruption, int(severity), int(indices[row])))
            result = function(Image.fromarray(images[row]), int(severity))
            output[row] = _to_uint8(result, images.shape[1:], corruption, severity)
    finally:
        np.random.set_state(saved)
    return output
