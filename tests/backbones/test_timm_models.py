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


@pytest.mark.parametrize(
    "name, content, what",
    [
        ("notes.pth", b"these are not weights\n", "is not a PyTorch checkpoint .* but a text file"),
        ("photo.safetensors", b"\xff\xd8\xff\xe0" + bytes(100), "is not a safetensors file but a JPEG image"),
        ("empty.bin", b"", "is not a PyTorch checkpoint .* but an empty file"),
    ],
)
def test_a_weights_file_that_is_no_checkpoint_is_named_with_what_it_is(tmp_path, name, content, what):
    from sedlib.backbones.timm_models import check_timm_backbone
    from sedlib.errors import TimmBackboneError

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TimmBackboneError, match=f"cache.weights: .*{name} {what}"):
        load_backbone(f"timm:{TINY}", weights=path)
    with pytest.raises(TimmBackboneError, match=f"{name} {what}"):  # found before any work starts
        check_timm_backbone(f"timm:{TINY}", True, path)


def test_a_fine_tuned_checkpoint_gives_its_backbone_features_and_its_classifier_is_named(timm, tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        tuned = timm.create_model(TINY, pretrained=False, num_classes=4)  # what a researcher fine-tunes
    path = tmp_path / "tuned.pth"
    torch.save(tuned.state_dict(), path)
    backbone = load_backbone(f"timm:{TINY}", weights=path, image_size=64)
    assert backbone.weights.endswith("its 4-class classifier (fc.weight, fc.bias) is not used")
    images = random_images(3, size=64)
    model = timm.create_model(TINY, pretrained=False, num_classes=4).eval()
    model.load_state_dict(tuned.state_dict())
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.5)  # test_resnet's data config
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.inference_mode():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
    np.testing.assert_allclose(extract_features(backbone, images), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_the_params_check_finds_an_unknown_model_and_missing_hub_weights(tmp_path, monkeypatch):
    from sedlib.backbones.timm_models import check_timm_backbone
    from sedlib.errors import MissingWeightsError, TimmBackboneError

    with pytest.raises(TimmBackboneError, match="names no timm .* model; list them with python -c"):
        check_timm_backbone("timm:no_such_net", True, "")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingWeightsError, match=r"timm/resnet18.a1_in1k\) are not in the local Hugging Face cache"):
        check_timm_backbone("timm:resnet18.a1_in1k", True, "")
    check_timm_backbone("timm:resnet18.a1_in1k", False, "")  # random weights need none


def test_the_advice_to_list_models_runs(tmp_path):
    import subprocess
    import sys

    from sedlib.backbones.timm_models import timm_model_name
    from sedlib.errors import TimmBackboneError

    with pytest.raises(TimmBackboneError) as error:
        timm_model_name("timm:resnet_18")
    command = str(error.value).split("list them with python -c ")[1].strip('"')
    listed = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "'resnet18'" in listed.stdout and "(the nearest: resnet18" in str(error.value)


def test_images_get_the_models_own_eval_transform(timm, tmp_path):
    from PIL import Image

    from sedlib.backbones.timm_models import timm_eval_transform
    from sedlib.data.imagenet import FolderImages, ImageFolderSet

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    images = ImageFolderSet("folder/test", tmp_path, ("a.png",), np.zeros(1, dtype=np.int64), ("x", "y"))
    transform, description = timm_eval_transform(f"timm:{TINY}", None)
    served = FolderImages(images, np.array([0]), "eval", 160, model_eval=transform)[0][0]
    # timm's own transform, with its normalisation, built directly from the model's configuration
    config = timm.data.resolve_model_data_config(timm.create_model(TINY, pretrained=False))
    expected = timm.data.create_transform(**config, is_training=False)(Image.open(tmp_path / "a.png").convert("RGB"))
    mean, std = torch.tensor(config["mean"]).view(3, 1, 1), torch.tensor(config["std"]).view(3, 1, 1)
    assert served.dtype == torch.uint8 and served.shape == (3, 160, 160)
    torch.testing.assert_close((served.float() / 255 - mean) / std, expected, atol=1e-6, rtol=0)
    assert config["crop_pct"] == 0.95 and description.startswith(f"timm's eval transform of {TINY}: resize 168 (")


def test_weights_of_another_architecture_are_summarised(timm, tmp_path):
    from sedlib.errors import TimmBackboneError

    vit = timm.create_model("test_vit", pretrained=False).state_dict()
    torch.save(vit, tmp_path / "vit.pth")
    ours = len(timm.create_model(TINY, pretrained=False).state_dict())
    with pytest.raises(TimmBackboneError) as error:
        load_backbone(f"timm:{TINY}", weights=tmp_path / "vit.pth")
    message = str(error.value)
    assert f"the model has {ours} tensors and the file {len(vit)}: {ours} missing: conv1.0.weight" in message
    assert f"{len(vit)} not in the model: cls_token, pos_embed" in message and "\n" not in message
    assert message.endswith("or set cache.backbone to the timm model the file was saved from")
