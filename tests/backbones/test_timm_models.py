"""``cache.backbone: timm:<model name>``: any timm model's pre-logits feature, with its own input configuration.

The golden values are computed with timm directly (``timm.create_model``, ``resolve_model_data_config``,
``forward_features`` + ``forward_head(pre_logits=True)``), independently of `sedlib.backbones.timm_models`.
"""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sedlib.backbones import extract_features, load_backbone
from sedlib.backbones.spec import import_timm
from sedlib.backbones.timm_models import timm_input, timm_model_name
from tests.conftest import random_images

TINY = "test_resnet"  # timm's own tiny test model: 96 features, pretrained config 160 px, mean/std 0.5


@pytest.fixture(scope="module")
def timm():
    return import_timm()


def timm_pre_logits(timm, model_name: str, state: dict, images: np.ndarray) -> torch.Tensor:
    """The pre-logits feature of a fresh timm model with ``state``, normalised by its own data config."""
    model = timm.create_model(model_name, pretrained=False).eval()
    model.load_state_dict(state)
    data_config = timm.data.resolve_model_data_config(model)
    mean = torch.tensor(data_config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(data_config["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.inference_mode():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def test_random_weight_features_equal_timm_pre_logits(timm):
    backbone = load_backbone(f"timm:{TINY}", pretrained=False)
    assert (backbone.image_size, backbone.mean, backbone.std) == (160, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert backbone.feature_dim == 96 and backbone.pretrained_head() is None
    assert "random init" in backbone.weights and "no pretrained weights" in backbone.weights
    images = random_images(5, size=64)
    features = extract_features(backbone, images, batch_size=2)
    expected = timm_pre_logits(timm, TINY, backbone.model.state_dict(), images)
    assert features.shape == (5, 96)
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_weights_file_is_loaded_by_timm(timm, tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)  # other weights than load_backbone's random init
        source = timm.create_model(TINY, pretrained=False)
    path = tmp_path / "mine.safetensors"
    save_file({key: value.contiguous() for key, value in source.state_dict().items()}, str(path))
    backbone = load_backbone(f"timm:{TINY}", weights=path, image_size=64)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(backbone.model.state_dict()[key], value, msg=key)
    assert backbone.weights.startswith("file mine.safetensors sha256:") and backbone.image_size == 64
    images = random_images(3, size=64)
    expected = timm_pre_logits(timm, TINY, source.state_dict(), images)
    np.testing.assert_allclose(extract_features(backbone, images), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_a_fixed_size_model_is_built_for_the_asked_size():
    assert timm_input("timm:test_vit").fixed_input_size
    backbone = load_backbone("timm:test_vit", pretrained=False, image_size=64)
    assert backbone.image_size == 64 and backbone.fixed_input_size
    assert extract_features(backbone, random_images(2, size=64)).shape == (2, 64)
    with pytest.raises(ValueError, match="built for 64x64 inputs"):
        backbone(torch.rand(1, 3, 32, 32))


def test_bad_names_weights_and_missing_hub_weights(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="names no timm .* model; list them"):
        timm_model_name("timm:no_such_net")
    assert timm_model_name("timm:resnet18.a1_in1k") == "resnet18.a1_in1k"
    with pytest.raises(FileNotFoundError, match="cache.weights: .*absent.pth is not a file"):
        load_backbone(f"timm:{TINY}", weights=tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="given with cache.pretrained: false"):
        load_backbone(f"timm:{TINY}", pretrained=False, weights=tmp_path / "absent.pth")
    wrong = tmp_path / "wrong.safetensors"
    save_file({"fc.weight": torch.zeros(3, 3)}, str(wrong))
    with pytest.raises(ValueError, match="wrong.safetensors does not load into timm's test_resnet"):
        load_backbone(f"timm:{TINY}", weights=wrong)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="cannot load the pretrained weights resnet18.*set cache.weights"):
        load_backbone("timm:resnet18", pretrained=True)
