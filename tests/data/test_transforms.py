import numpy as np
import pytest

from sedlib.data.transforms import augment, random_resized_crop_box, to_model_input
from tests.conftest import random_images


def test_to_model_input_shapes_grey_and_identity():
    grey = np.full((3, 2, 2), 137, dtype=np.uint8)
    out = to_model_input(grey, 7)
    assert out.shape == (3, 7, 7, 3) and out.dtype == np.uint8 and (out == 137).all()
    varied = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    rgb = to_model_input(varied, 48)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    np.testing.assert_array_equal(to_model_input(varied, 28), np.repeat(varied[..., None], 3, axis=-1))
    colour = random_images(2, size=16)
    np.testing.assert_array_equal(to_model_input(colour, 16), colour)


def test_to_model_input_golden_values():
    # Upsampling 2 -> 4: output pixel i samples input coordinate (i + 0.5) / 2 - 0.5, clamped to [0, 1].
    ramp = np.array([[[0, 100], [0, 100]]], dtype=np.uint8)
    np.testing.assert_array_equal(to_model_input(ramp, 4)[0, :, :, 0], np.tile([0, 25, 75, 100], (4, 1)))
    # Downsampling 2 -> 1 with antialiasing averages the four pixels: 138.75 -> 139.
    square = np.array([[[0, 100], [200, 255]]], dtype=np.uint8)
    assert to_model_input(square, 1)[0, 0, 0, 0] == 139


def test_to_model_input_rejects_bad_inputs():
    with pytest.raises(TypeError, match="uint8"):
        to_model_input(np.zeros((1, 4, 4), dtype=np.float32), 8)
    with pytest.raises(ValueError, match="grey or"):
        to_model_input(np.zeros((1, 4, 4, 4), dtype=np.uint8), 8)


def test_random_resized_crop_box_golden_values():
    rng = np.random.default_rng(0)
    # A 2:1 box of the whole area never fits a square: 10 failed tries, then the centre crop clipped to 2:1.
    assert random_resized_crop_box(rng, 8, 8, scale=(1.0, 1.0), ratio=(2.0, 2.0)) == (2, 0, 4, 8)
    for _ in range(20):
        top, left, h, w = random_resized_crop_box(rng, 8, 8, scale=(0.25, 0.25), ratio=(1.0, 1.0))
        assert (h, w) == (4, 4) and 0 <= top <= 4 and 0 <= left <= 4


def test_augment_is_deterministic_per_seed_pass_and_index():
    images = random_images(6, size=24)
    indices = np.arange(100, 106)
    first = augment(images, seed=3, pass_index=0, indices=indices)
    assert first.shape == images.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, augment(images, seed=3, pass_index=0, indices=indices))
    np.testing.assert_array_equal(first[3:5], augment(images[3:5], seed=3, pass_index=0, indices=indices[3:5]))
    other_pass = augment(images, seed=3, pass_index=1, indices=indices)
    assert all(not np.array_equal(a, b) for a, b in zip(first, other_pass))
    assert not np.array_equal(first, images)


def test_augment_flips_about_half_of_the_images():
    images = random_images(200, size=12, seed=2)
    out = augment(images, seed=0, pass_index=0, indices=np.arange(200), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    same = [np.array_equal(o, i) for o, i in zip(out, images)]
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    assert all(s != m for s, m in zip(same, mirrored))  # each is exactly one of the two
    assert 60 <= sum(mirrored) <= 140


def test_augment_rejects_mismatched_indices():
    with pytest.raises(ValueError, match="indices"):
        augment(random_images(3, size=8), seed=0, pass_index=0, indices=np.arange(2))
