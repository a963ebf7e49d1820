"""Compatibility fixes for the pinned environment, kept in one place.

torchvision 0.28.0 from PyPI is a CUDA build. Beside the CPU build of torch 2.13.0 its compiled
operators fail to load, and `import torchvision` (which timm needs) then dies with
``operator torchvision::nms does not exist`` while registering meta kernels. Declaring the two
operator schemas that torchvision looks up makes the import succeed; the detection operators stay
unusable, which nothing in this project needs.

imagecorruptions 1.1.2 (the ImageNet-C corruptions) predates setuptools 81, numpy 2 and
scikit-image 0.19; `import_imagecorruptions` imports it with the fixes listed in its docstring.
"""

import importlib
import importlib.util
import os
import sys
import warnings
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


# --- imagecorruptions 1.1.2 ---------------------------------------------------------------------

_IMAGECORRUPTIONS_PATCHED = "_sedlib_compat_patched"


def _resource_filename(package: str, name: str) -> str:
    """``pkg_resources.resource_filename`` for a package installed as plain files.

    Args:
        package: dotted name of a package or of a module inside one (``imagecorruptions.corruptions``).
        name: path relative to that package's directory (``./frost/frost1.png``).

    Returns:
        The absolute path of the file (whether or not it exists, as in pkg_resources).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"cannot locate package {package!r} to resolve the resource {name!r}")
    directory = spec.submodule_search_locations[0] if spec.submodule_search_locations else os.path.dirname(spec.origin)
    return os.path.normpath(os.path.join(directory, name))


def _numpy_with_float_() -> ModuleType:
    """A module that reads as numpy (PEP 562 ``__getattr__``) plus the alias ``float_ = float64``."""
    import numpy as np

    proxy = ModuleType("numpy", "numpy seen by imagecorruptions: every attribute delegates, plus float_")
    proxy.__getattr__ = lambda name: getattr(np, name)
    proxy.float_ = np.float64
    return proxy


def _gaussian_multichannel(image, sigma=1.0, *args, multichannel: bool | None = None, **kwargs):
    """``skimage.filters.gaussian`` that still understands the removed ``multichannel=True``."""
    import skimage.filters

    if multichannel:
        kwargs.setdefault("channel_axis", -1)
    return skimage.filters.gaussian(image, sigma, *args, **kwargs)


def _random_noise_from_global_rng(image, mode="gaussian", rng=None, clip=True, **kwargs):
    """``skimage.util.random_noise`` seeded from numpy's global RNG when no ``rng`` is given."""
    import numpy as np
    import skimage.util

    if rng is None:
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1, size=4))
    return skimage.util.random_noise(image, mode=mode, rng=rng, clip=clip, **kwargs)


def _skimage_with_seeded_noise() -> ModuleType:
    """A module that reads as skimage, whose ``util.random_noise`` draws from numpy's global RNG."""
    import skimage
    import skimage.util

    util = ModuleType("skimage.util", "skimage.util seen by imagecorruptions")
    util.__getattr__ = lambda name: getattr(skimage.util, name)
    util.random_noise = _random_noise_from_global_rng
    proxy = ModuleType("skimage", "skimage seen by imagecorruptions")
    proxy.__getattr__ = lambda name: getattr(skimage, name)
    proxy.util = util
    return proxy


def import_imagecorruptions() -> ModuleType:
    """Import ``imagecorruptions`` 1.1.2 and make its 15 ImageNet-C corruptions run on current libraries.

    The package (Michaelis et al. 2019, https://github.com/bethgelab/imagecorruptions) is the
    ImageNet-C code of Hendrycks & Dietterich (https://arxiv.org/abs/1903.12261) made size-agnostic.
    Its last release predates numpy 2, scikit-image 0.19+ and setuptools 81. Every fix lives here and
    touches only the ``imagecorruptions.corruptions`` module, never numpy, scipy or scikit-image:

    a. ``from pkg_resources import resource_filename``: setuptools >= 81 has no ``pkg_resources``, and
       older versions warn when it is imported. While the package imports, ``sys.modules`` holds a
       stand-in ``pkg_resources`` whose ``resource_filename`` resolves the package directory with
       `importlib.util.find_spec`; whatever was there before (nothing, or the real module) is put back
       afterwards. ``frost`` keeps calling the stand-in to find its bundled frost images.
    b. ``np.float_`` (``fog``'s plasma fractal) was removed in numpy 2. The module's ``np`` becomes a
       proxy that delegates every attribute to numpy (the global RNG included) and adds
       ``float_ = numpy.float64``.
    c. ``skimage.filters.gaussian(..., multichannel=True)`` (``glass_blur``), deprecated in
       scikit-image 0.19, is gone; the module's ``gaussian`` becomes a wrapper that maps it to
       ``channel_axis=-1``.
    d. ``from scipy.ndimage.interpolation import map_coordinates`` warns (DeprecationWarning, the
       namespace goes in SciPy 2.0); warnings are ignored around the import only, and the module's
       ``map_coordinates`` is then pointed at `scipy.ndimage.map_coordinates` (the same function).
    e. ``impulse_noise`` calls ``skimage.util.random_noise`` without ``rng``; since that function moved
       to numpy Generators (scikit-image 0.26 here) this draws from fresh OS entropy, ignoring numpy's
       global seed, so its output could not be reproduced. The module's ``sk`` becomes a skimage proxy
       whose ``util.random_noise`` seeds a generator from numpy's global RNG (the one every other
       corruption draws from).

    All 15 corruptions at severities 1-5 were run on 32x32 and 48x48 RGB uint8 images with numpy 2.4,
    scikit-image 0.26, scipy 1.17, opencv 5 and no other fix was needed: the outputs keep the input's
    height and width (float64 arrays, or PIL images for ``pixelate`` and ``jpeg_compression``), which
    `sedlib.data.corrupt_images` converts back to uint8.

    Calling it again returns the same, already patched module.

    Returns:
        The ``imagecorruptions`` package; its ``corruption_dict`` maps names to the patched functions.
    """
    package = sys.modules.get("imagecorruptions")
    if package is not None and getattr(package, _IMAGECORRUPTIONS_PATCHED, False):
        return package
    if importlib.util.find_spec("imagecorruptions") is None:
        raise ModuleNotFoundError(
            "imagecorruptions is not installed; install it with `pip install --no-deps imagecorruptions==1.1.2`"
        )
    stand_in = ModuleType("pkg_resources", "sedlib stand-in for pkg_resources while imagecorruptions imports")
    stand_in.resource_filename = _resource_filename
    missing = object()
    previous = sys.modules.get("pkg_resources", missing)
    sys.modules["pkg_resources"] = stand_in
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            package = importlib.import_module("imagecorruptions")
    finally:
        if previous is missing:
            del sys.modules["pkg_resources"]
        else:
            sys.modules["pkg_resources"] = previous
    import scipy.ndimage

    corruptions = importlib.import_module("imagecorruptions.corruptions")
    corruptions.resource_filename = _resource_filename
    corruptions.np = _numpy_with_float_()
    corruptions.gaussian = _gaussian_multichannel
    corruptions.map_coordinates = scipy.ndimage.map_coordinates
    corruptions.sk = _skimage_with_seeded_noise()
    setattr(package, _IMAGECORRUPTIONS_PATCHED, True)
    return package
