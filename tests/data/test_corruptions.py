import os
import sys

import numpy as np
import pytest
from PIL import Image

from sedlib._compat import import_imagecorruptions
from sedlib.config import CORRUPTIONS
from sedlib.data import corrupt_images
from sedlib.data.corruptions import _to_uint8, glass_blur


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_every_corruption_keeps_shape_and_dtype_and_is_reproducible(images, corruption, severity):
    out = corrupt_images(images, corruption, severity, seed=0)
    assert out.shape == images.shape and out.dtype == np.uint8
    # on random images every corruption changes every image, even at severity 1
    assert all(not np.array_equal(a, b) for a, b in zip(out, images))
    np.testing.assert_array_equal(corrupt_images(images, corruption, severity, seed=0), out)


def test_gaussian_noise_follows_the_documented_seeding(images):
    # image 3, seed 7, gaussian_noise (position 0), severity 5 (scale 0.38), by hand
    sequence = np.random.SeedSequence([7, 0, 5, 3])
    rng = np.random.RandomState(np.random.MT19937(sequence))
    expected = np.clip(images[3] / 255 + rng.normal(size=images[3].shape, scale=0.38), 0, 1) * 255
    out = corrupt_images(images, "gaussian_noise", 5, seed=7)
    np.testing.assert_array_equal(out[3], np.rint(expected).astype(np.uint8))


@pytest.mark.parametrize("corruption", ["gaussian_noise", "impulse_noise", "frost", "glass_blur"])
def test_seed_and_index_change_the_draws(images, corruption):
    out = corrupt_images(images, corruption, 3, seed=0)
    assert not np.array_equal(corrupt_images(images, corruption, 3, seed=1), out)
    shifted = corrupt_images(images, corruption, 3, seed=0, indices=np.arange(4) + 10)
    assert not np.array_equal(shifted, out)


@pytest.mark.parametrize("corruption", ["shot_noise", "impulse_noise", "snow", "elastic_transform"])
def test_a_sample_gets_the_same_corruption_in_any_batch(images, corruption):
    together = corrupt_images(images, corruption, 4, seed=3)
    alone = corrupt_images(images[2:], corruption, 4, seed=3, indices=np.array([2, 3]))
    np.testing.assert_array_equal(alone, together[2:])
    reordered = corrupt_images(images[[3, 2]], corruption, 4, seed=3, indices=np.array([3, 2]))
    np.testing.assert_array_equal(reordered, together[[3, 2]])


def test_the_callers_global_rng_is_left_alone(images):
    np.random.seed(123)
    expected = np.random.RandomState(123).random_sample(3)
    corrupt_images(images[:2], "fog", 2, seed=0)
    np.testing.assert_array_equal(np.random.random_sample(3), expected)


def test_bad_arguments_are_refused(images):
    with pytest.raises(ValueError, match="at least 32x32 pixels.*got 16x16"):
        corrupt_images(np.zeros((2, 16, 16, 3), np.uint8), "fog", 1, seed=0)
    with pytest.raises(ValueError, match="at least 32x32 pixels.*got 32x31"):
        corrupt_images(np.zeros((2, 32, 31, 3), np.uint8), "fog", 1, seed=0)
    with pytest.raises(ValueError, match="unknown corruption 'blur'; valid names: gaussian_noise, shot_noise.*jpeg"):
        corrupt_images(images, "blur", 1, seed=0)
    for severity in (0, 6, True, 2.5):
        with pytest.raises(ValueError, match="severity must be an integer from 1 to 5"):
            corrupt_images(images, "fog", severity, seed=0)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        corrupt_images(images[..., 0], "fog", 1, seed=0)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        corrupt_images(images.astype(np.float32), "fog", 1, seed=0)
    with pytest.raises(ValueError, match=r"indices must be \(4,\) integers"):
        corrupt_images(images, "fog", 1, seed=0, indices=np.arange(3))
    with pytest.raises(ValueError, match="non-negative sample ids"):
        corrupt_images(images, "fog", 1, seed=0, indices=np.array([0, 1, -2, 3]))
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        corrupt_images(images, "fog", 1, seed=-1)


def test_outputs_are_clipped_rounded_and_made_rgb():
    floats = np.array([[-3.0, 254.6], [300.0, 12.5]])
    out = _to_uint8(np.repeat(floats[..., None], 3, axis=-1), (2, 2, 3), "fog", 1)
    assert out.dtype == np.uint8 and out[..., 0].tolist() == [[0, 255], [255, 12]]  # 12.5 rounds to even
    np.testing.assert_array_equal(_to_uint8(floats, (2, 2, 3), "fog", 1), out)  # grey output is repeated
    with pytest.raises(RuntimeError, match="frost \\(severity 2\\) returned shape \\(2, 2, 3\\)"):
        _to_uint8(out, (3, 3, 3), "frost", 2)
    with pytest.raises(RuntimeError, match="NaN"):
        _to_uint8(np.full((2, 2, 3), np.nan), (2, 2, 3), "fog", 1)


def test_import_imagecorruptions_is_idempotent_and_patches_only_the_package():
    had_pkg_resources = "pkg_resources" in sys.modules
    package = import_imagecorruptions()
    assert import_imagecorruptions() is package
    assert ("pkg_resources" in sys.modules) == had_pkg_resources  # the stand-in is gone again
    corruptions = sys.modules["imagecorruptions.corruptions"]
    assert corruptions.np.float_ is np.float64 and corruptions.np.random is np.random
    assert not hasattr(np, "float_")  # numpy itself is not touched
    frost = corruptions.resource_filename("imagecorruptions.corruptions", "./frost/frost1.png")
    assert os.path.isfile(frost) and frost.endswith(os.path.join("imagecorruptions", "frost", "frost1.png"))
    assert sorted(CORRUPTIONS) == sorted(package.get_corruption_names("common"))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [32, 48])
def test_glass_blur_equals_the_imagecorruptions_loop(severity, size):
    reference = import_imagecorruptions().corruption_dict["glass_blur"]
    image = np.random.default_rng(size + severity).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    saved = np.random.get_state()
    try:
        np.random.seed(severity)
        expected = reference(Image.fromarray(image), severity)
        np.random.seed(severity)
        fast = glass_blur(Image.fromarray(image), severity)
    finally:
        np.random.set_state(saved)
    np.testing.assert_array_equal(fast, expected)
