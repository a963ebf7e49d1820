"""Compatibility fixes for the pinned environment, kept in one place.

torchvision 0.28.0 from PyPI is a CUDA build. Beside the CPU build of torch 2.13.0 its compiled
operators fail to load, and `import torchvision` (which timm needs) then dies with
``operator torchvision::nms does not exist`` while registering meta kernels. Declaring the two
operator schemas that torchvision looks up makes the import succeed; the detection operators stay
unusable, which nothing in this project needs.
"""

import importlib
import sys
from types import ModuleType

import torch

_MISSING_OPERATOR = "torchvision::nms"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None


def import_torchvision() -> ModuleType:
    """Import torchvision, declaring its missing operator schemas only when the plain import fails.

    Where torchvision's compiled operators load (a matching CUDA torch), nothing is changed.

    Returns:
        The imported `torchvision` module.
    """
    global _library
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if _MISSING_OPERATOR not in str(error) or _library is not None:
            raise
    for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
        del sys.modules[name]
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    return importlib.import_module("torchvision")
