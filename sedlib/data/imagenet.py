"""ImageNet-family image folders for the paper-scale study: listing, labels and transforms.

SED (Rubinstein et al., *Scalable Ensemble Diversification for OOD Generalization and Detection*,
arXiv:2409.16797, https://arxiv.org/abs/2409.16797) trains its heads on cached features of a frozen
DeiT-3-B. The features come from these image folders:

- **ImageNet-1k** (ILSVRC2012, Russakovsky et al. 2015, https://image-net.org): ``train/<wnid>/`` and
  ``val/<wnid>/``. The raw validation tar is flat; sort it into wnid folders first (the widely used
  ``valprep.sh``, or `torchvision.datasets.ImageNet` once, which writes ``train/<wnid>/`` and
  ``val/<wnid>/``).
- **ImageNet-A** (Hendrycks et al., *Natural Adversarial Examples*, CVPR 2021,
  https://github.com/hendrycks/natural-adv-examples) and **ImageNet-R** (Hendrycks et al., *The Many
  Faces of Robustness*, ICCV 2021, https://github.com/hendrycks/imagenet-r): 200-class subsets,
  ``<wnid>/`` folders, labelled 0-199 in sorted-wnid order; `subset_mask` maps 1000-class logits to them.
- **ImageNet-C** (Hendrycks & Dietterich, ICLR 2019, https://zenodo.org/record/2235448):
  ``<corruption>/<severity>/<wnid>/``, 224x224 images of the validation set, labelled like ImageNet.
- **iNaturalist** OOD (Huang & Li, *MOS*, CVPR 2021, 10,000 images) and **OpenImage-O** (Wang et al.,
  *ViM*, CVPR 2022, 17,632 images of the OpenImages-v3 test set): plain folders of images, labels ``-1``.

Order: every class-folder set lists its files exactly as torchvision's ``ImageFolder`` does (class
folders sorted; inside each, ``sorted(os.walk(...))`` and sorted file names; torchvision's image
extensions, case-insensitive), so rows match feature files made with ``ImageFolder``. Labels are
positions in the full sorted wnid list of the dataset (1000 for ImageNet and ImageNet-C, 200 for A/R),
never positions among the folders present. Listing only walks the folders; images are opened when read.

Transforms (PIL, bilinear, antialiased; images converted to RGB as torchvision's ``pil_loader`` does):
``train`` is RandomResizedCrop + horizontal flip drawn per image from
``np.random.default_rng([seed, pass_index, index])``; ``eval`` is Resize(256) of the shorter side +
CenterCrop(224) (scaled as `resize_size` for other sizes); ``as_is`` keeps an S x S image unchanged
(the standard ImageNet-C protocol; the published code applies ``eval`` to ImageNet-C too).

`ImageNetSource` is the paper study's `sedlib.data.datasource.DataSource` (``data.dataset: imagenet``);
`ImageFolderSource`, its base, reads through `FolderImages` and is shared with your image folders.

The wnid lists in ``sedlib/data/wnids/`` are copies of timm 1.0.31's (Apache-2.0).

Example:
    >>> len(imagenet_wnids()), imagenet_wnids()[0], resize_size(224), resize_size(384)
    (1000, 'n01440764', 256, 439)
    >>> mask = subset_mask("imagenet_r")
    >>> mask.shape, imagenet_wnids()[mask[0]] == subset_wnids("imagenet_r")[0]
    ((200,), True)
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import os
import random
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image

from sedlib._compat import import_torchvision
from sedlib.backbones.timm_models import timm_eval_transform
from sedlib.config import TIMM_PREFIX, DataConfig, resolve_path
from sedlib.data.datasource import DataSource
from sedlib.data.plan import SplitPlan, image_size
from sedlib.data.transforms import random_resized_crop_box
from sedlib.errors import FolderLayoutError, ImageReadError, MissingFileError

OWN_FOLDERS = "folder"
"""The `LAYOUTS` key of your own image folders (``data.dataset: folder``, `sedlib.data.folders`)."""
DATASET_FOLDERS: dict[str, str] = {
    "imagenet": "imagenet",
    "imagenet_a": "imagenet-a",
    "imagenet_r": "imagenet-r",
    "imagenet_c": "imagenet-c",
    "inaturalist": "iNaturalist",
    "openimage_o": "openimage-o",
}
"""Default folder of each dataset under the data root (params ``data.root``)."""


def dataset_folder(data: DataConfig, name: str) -> Path:
    """The folder of an ImageNet-family dataset (``imagenet``, ``imagenet_a``, ..., ``openimage_o``).

    It is ``data.<name>_dir`` when set (relative to the root), else the dataset's default name
    (`DATASET_FOLDERS`) under the root: ``data.root``, else ``$SED_DATA``, else ``data/`` (relative paths
    relative to the project root).
    """
    if name not in DATASET_FOLDERS:
        raise KeyError(f"no ImageNet-family dataset {name!r}; known: {sorted(DATASET_FOLDERS)}")
    root = resolve_path(Path(data.root) if data.root else Path(os.environ.get("SED_DATA", "") or "data"))
    return root / (getattr(data, f"{name}_dir") or DATASET_FOLDERS[name])


SUBSET_SETS = ("imagenet_a", "imagenet_r")
"""The 200-class ImageNet subsets read by `subset_split`."""
OOD_FOLDER_SETS = ("inaturalist", "openimage_o")
"""The semantic-OOD sets read by `ood_folder`."""
LAYOUTS: dict[str, str] = {
    "imagenet": "<dir>/train/<wnid>/*.JPEG and <dir>/val/<wnid>/*.JPEG (1000 wnid folders each); ImageNet-1k "
    "(ILSVRC2012) from https://image-net.org, the flat val images sorted into wnid folders (valprep.sh, or "
    "torchvision.datasets.ImageNet once)",
    "imagenet_a": "<dir>/<wnid>/*.jpg (200 wnid folders); ImageNet-A from "
    "https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar (https://github.com/hendrycks/natural-adv-examples)",
    "imagenet_r": "<dir>/<wnid>/*.jpg (200 wnid folders); ImageNet-R from "
    "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar (https://github.com/hendrycks/imagenet-r)",
    "imagenet_c": "<dir>/<corruption>/<severity 1-5>/<wnid>/*.JPEG (224x224 images); ImageNet-C "
    "(Hendrycks & Dietterich 2019) from https://zenodo.org/record/2235448",
    "inaturalist": "<dir>/images/*.jpg (10,000 images, any folders below <dir>); iNaturalist OOD set (Huang & Li "
    "2021, MOS) from http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/iNaturalist.tar.gz",
    "openimage_o": "<dir>/*.jpg (17,632 images, any folders below <dir>); OpenImage-O (Wang et al. 2022, ViM): "
    "the OpenImages-v3 test images listed in datalists/openimage_o.txt of https://github.com/haoqiwang/vim",
}
"""Expected layout of each dataset and where to get it, as errors and docs/paper-scale.md state them."""
OWN_LAYOUT = (
    "<train_path>/<class>/*.png|jpg|... and <test_path>/<class>/... with the same class folders (val_path too, "
    "when given); each OOD folder flat or in sub-folders"
)
"""The layout of your own image folders, as errors and docs/own-data.md state it."""

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""torchvision's ``IMG_EXTENSIONS``: the files ``ImageFolder`` lists (compared lower-case)."""
TRANSFORMS = ("train", "eval", "as_is")
"""The transform names `FolderImages` accepts."""
SEVERITIES = (1, 2, 3, 4, 5)
"""ImageNet-C severity levels."""

_WNID_FILES = {"imagenet": "imagenet_1k.txt", "imagenet_a": "imagenet_a.txt", "imagenet_r": "imagenet_r.txt"}
_WNID_COUNTS = {"imagenet": 1000, "imagenet_a": 200, "imagenet_r": 200}
_DISPLAY = {
    "imagenet": "ImageNet-1k",
    "imagenet_a": "ImageNet-A",
    "imagenet_r": "ImageNet-R",
    "imagenet_c": "ImageNet-C",
    "inaturalist": "iNaturalist",
    "openimage_o": "OpenImage-O",
    OWN_FOLDERS: "your image folders",
}


# --- wnid lists -----------------------------------------------------------------------------------


@functools.cache
def _read_wnids(key: str) -> tuple[str, ...]:
    path = importlib.resources.files("sedlib.data").joinpath("wnids", _WNID_FILES[key])
    wnids = tuple(path.read_text(encoding="utf-8").split())
    expected = _WNID_COUNTS[key]
    if len(wnids) != expected or list(wnids) != sorted(set(wnids)):
        raise ValueError(f"{path}: expected {expected} sorted unique wnids, got {len(wnids)}; reinstall sedlib")
    return wnids


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids, sorted: class ``k`` of an ImageNet classifier is ``imagenet_wnids()[k]``."""
    return _read_wnids("imagenet")


def subset_wnids(name: str) -> tuple[str, ...]:
    """The 200 sorted wnids of ``"imagenet_a"`` or ``"imagenet_r"``: label ``k`` of the subset is entry ``k``."""
    if name not in SUBSET_SETS:
        raise ValueError(f"subset must be one of {SUBSET_SETS}, got {name!r}")
    return _read_wnids(name)


def subset_mask(name: str) -> np.ndarray:
    """Positions of a subset's wnids in `imagenet_wnids`, in the subset's sorted order.

    ``logits[:, subset_mask(name)]`` turns ``(N, 1000)`` ImageNet logits into the ``(N, 200)`` logits
    whose column ``k`` is subset label ``k`` (the authors' ``mask[k] = sorted_1000_wnids[k] in subset``
    used as a boolean index selects the same columns in the same order, both lists being sorted).

    Args:
        name: ``"imagenet_a"`` or ``"imagenet_r"``.

    Returns:
        ``(200,)`` int64, strictly increasing.
    """
    position = {wnid: k for k, wnid in enumerate(imagenet_wnids())}
    return np.array([position[wnid] for wnid in subset_wnids(name)], dtype=np.int64)


# --- errors ---------------------------------------------------------------------------------------


def _dataset_key(name: str) -> str | None:
    """The `LAYOUTS` key of a set name: ``imagenet_train`` -> ``imagenet``, ``imagenet_c/fog/5`` -> ``imagenet_c``."""
    head = name.split("/")[0]
    if head in LAYOUTS or head == OWN_FOLDERS:  # your folders' sets are named folder/<split>
        return head
    if head in ("imagenet_train", "imagenet_val"):
        return "imagenet"
    return None


def _params_keys(key: str | None) -> str:
    """The params keys that point at a dataset's folder."""
    if key == OWN_FOLDERS:
        return "data.train_path, data.val_path, data.test_path and data.ood_paths"
    return f"data.root and data.{key or '<name>'}_dir"


def layout_advice(key: str | None) -> str:
    """What the dataset should look like, where it comes from and which params keys point at it."""
    if key is None:
        return "Set data.root (the folder holding the dataset folders) in the params."
    if key == OWN_FOLDERS:
        return f"Expected layout: {OWN_LAYOUT}. The params keys are {_params_keys(key)}."
    return (
        f"Expected {_DISPLAY.get(key, key)} layout: {LAYOUTS[key]}. Point the params at it with data.root (the "
        f"folder holding {DATASET_FOLDERS[key]}/) or data.{key}_dir (the dataset folder itself)."
    )


def _layout_error(kind: type[Exception], key: str | None, problem: str) -> Exception:
    return kind(f"{problem}. {layout_advice(key)}")


# --- image folder sets ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageFolderSet:
    """The image files of one folder set and their labels; images are read by `FolderImages`.

    Equality is identity (``eq=False``).

    Attributes:
        name: identifier, e.g. ``imagenet_train``, ``imagenet_val``, ``imagenet_c/fog/5``, ``imagenet_a``,
            ``inaturalist``.
        root: the folder read.
        files: ``(N,)`` paths relative to ``root``, in torchvision ``ImageFolder`` order (sorted relative
            paths for an OOD folder).
        labels: ``(N,)`` int64 indices into ``class_names``; ``-1`` for every image of an OOD set.
        class_names: the wnids the labels index (1000 for ImageNet and ImageNet-C, 200 for A/R, ``()``
            for OOD sets).
    """

    name: str
    root: Path
    files: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        where = f"ImageFolderSet {self.name!r}"
        if not isinstance(self.files, tuple):
            raise ValueError(f"{where}: files must be a tuple of relative paths, got {type(self.files).__name__}")
        if not isinstance(self.labels, np.ndarray) or self.labels.ndim != 1 or self.labels.dtype != np.int64:
            raise ValueError(f"{where}: labels must be an (N,) int64 array")
        if len(self.labels) != len(self.files):
            raise ValueError(f"{where}: {len(self.files)} files but {len(self.labels)} labels")
        if not isinstance(self.class_names, tuple):
            raise ValueError(f"{where}: class_names must be a tuple of str")
        if not self.class_names:
            if (self.labels != -1).any():
                raise ValueError(f"{where}: a set without class_names is semantic OOD and needs every label -1")
        elif len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"{where}: labels must lie in [0, {len(self.class_names) - 1}]")

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        """The full path of image ``i``."""
        return self.root / self.files[i]

    def subset(self, index: np.ndarray) -> ImageFolderSet:
        """The rows ``index`` (``(K,)`` integers, in that order), with the same name, root and classes."""
        index = np.asarray(index)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(
                f"ImageFolderSet {self.name!r}: subset needs (K,) integer indices, got shape {index.shape}"
            )
        return replace(self, files=tuple(self.files[i] for i in index.tolist()), labels=self.labels[index])


logger = logging.getLogger("sedlib.data")


def _is_image(fname: str) -> bool:
    return fname.lower().endswith(IMG_EXTENSIONS)


def visible(name: str) -> bool:
    """Whether a file or folder name is data, not hidden.

    Hidden ones (``.DS_Store``, the ``._*`` files macOS writes onto shared drives, ``.ipynb_checkpoints``) are
    skipped, as users of torchvision's ``ImageFolder`` expect.
    """
    return not name.startswith(".")


def class_name(folder_name: str) -> str:
    """A class folder's name in Unicode NFC: macOS writes accents decomposed (NFD), Linux composed (NFC)."""
    return unicodedata.normalize("NFC", folder_name)


def _image_files(top: str, relative_to: str, prefix: str) -> tuple[list[str], int]:
    """Image files below ``top`` (following links), paths ``prefix/<path below top>``, and how many were skipped.

    Hidden files and folders (`visible`) and files of other extensions are skipped. The order is
    ``sorted(os.walk(top))`` with sorted file names (torchvision's ``make_dataset``).
    """
    files, skipped = [], 0
    for dirpath, _, fnames in sorted(os.walk(top, followlinks=True)):
        below = os.path.relpath(dirpath, relative_to)
        if not all(visible(part) for part in Path(below).parts if part != "."):
            skipped += len(fnames)
            continue
        relative = prefix if dirpath == top else os.path.join(prefix, os.path.relpath(dirpath, top))
        kept = [fname for fname in sorted(fnames) if visible(fname) and _is_image(fname)]
        skipped += len(fnames) - len(kept)
        files.extend(os.path.join(relative, fname) if relative else fname for fname in kept)
    return files, skipped


def _note_skipped(folder: Path, skipped: int) -> None:
    if skipped:
        logger.info("%s: skipped %d hidden or non-image files and folders", folder, skipped)


def require_dir(path: Path, key: str, what: str) -> None:
    if not path.is_dir():
        problem = f"{what} {path} is not a directory" if path.exists() else f"{what} {path} does not exist"
        raise _layout_error(MissingFileError, key, problem)


def list_class_folders(folder: Path, class_names: tuple[str, ...], key: str, title: str) -> tuple[tuple, np.ndarray]:
    """Files and labels of ``folder/<class>/...`` in torchvision ``make_dataset`` order.

    Every class folder must hold an image; the folders need not cover every class (ImageNet-A).

    Args:
        folder: the folder holding the wnid folders.
        class_names: the sorted class names (wnids) the labels index.
        key: the `LAYOUTS` key, for errors.
        title: what the folder is, for errors (e.g. ``ImageNet-1k train``).

    Returns:
        ``files`` (paths relative to ``folder``) and ``(N,)`` int64 labels.
    """
    require_dir(folder, key, f"{title} folder")
    with os.scandir(folder) as entries:
        entries = list(entries)
    classes = sorted((e.name for e in entries if e.is_dir() and visible(e.name)), key=class_name)
    folders = "class" if key == OWN_FOLDERS else "wnid"
    if not classes:
        images = sum(1 for entry in entries if entry.is_file() and visible(entry.name) and _is_image(entry.name))
        if images:
            problem = (
                f"{title} folder {folder} holds {images} image files but no {folders} folders; images must be "
                f"sorted into <{folders}>/ folders"
                + (
                    ""
                    if key == OWN_FOLDERS
                    else " (the raw ImageNet val tar is flat: sort it with valprep.sh or torchvision.datasets.ImageNet)"
                )
            )
            raise _layout_error(FolderLayoutError, key, problem)
        raise _layout_error(MissingFileError, key, f"{title} folder {folder} is empty (no {folders} folders)")
    position = {wnid: k for k, wnid in enumerate(class_names)}
    unknown = [name for name in classes if class_name(name) not in position]
    if unknown:
        shown = ", ".join(str(folder / name) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        problem = (
            f"{title} folder {folder} has {len(unknown)} folder(s) whose name is not one of the "
            f"{len(class_names)} {_DISPLAY['imagenet' if key == 'imagenet_c' else key]} wnids: {shown}"
        )
        raise _layout_error(FolderLayoutError, key, problem)
    files: list[str] = []
    counts: list[int] = []
    empty = []
    skipped = len(entries) - len(classes)
    for wnid in classes:
        class_dir = os.path.join(folder, wnid)
        found, ignored = _image_files(class_dir, class_dir, wnid)
        files += found
        skipped += ignored
        if not found:
            empty.append(class_dir)
        counts.append(len(found))
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        cause = "every class needs images" if key == OWN_FOLDERS else "the download or extraction is incomplete"
        problem = (
            f"{title} folder {folder}: {len(empty)} {folders} folder(s) hold no image "
            f"({'/'.join(IMG_EXTENSIONS)}): {shown}; {cause}"
        )
        raise _layout_error(MissingFileError, key, problem)
    _note_skipped(folder, skipped)
    class_labels = np.array([position[class_name(wnid)] for wnid in classes], dtype=np.int64)
    return tuple(files), np.repeat(class_labels, np.array(counts, dtype=np.int64))


def imagenet_split(root: str | os.PathLike, split: str) -> ImageFolderSet:
    """ImageNet-1k's ``train`` or ``val`` split: ``root/<split>/<wnid>/<image>``.

    Args:
        root: the ImageNet folder, holding ``train/`` and ``val/``.
        split: ``"train"`` or ``"val"``.

    Returns:
        ImageFolderSet ``imagenet_<split>`` rooted at ``root/<split>``; labels index the 1000 sorted wnids.

    Raises:
        FileNotFoundError: ``root`` or ``root/<split>`` is missing or empty, or a wnid folder has no image.
        ValueError: an unknown split, a flat (unsorted) folder, or a folder that is not an ImageNet wnid.
    """
    if split not in ("train", "val"):
        raise ValueError(f"ImageNet split must be 'train' or 'val', got {split!r}")
    root = Path(root)
    require_dir(root, "imagenet", "ImageNet-1k folder")
    files, labels = list_class_folders(root / split, imagenet_wnids(), "imagenet", f"ImageNet-1k {split}")
    return ImageFolderSet(f"imagenet_{split}", root / split, files, labels, imagenet_wnids())


def imagenet_c_split(root: str | os.PathLike, corruption: str, severity: int) -> ImageFolderSet:
    """One corruption and severity of ImageNet-C: ``root/<corruption>/<severity>/<wnid>/<image>``.

    Args:
        root: the ImageNet-C folder, holding one folder per corruption (``gaussian_noise``, ``fog``, ...).
        corruption: the corruption's folder name.
        severity: 1 to 5.

    Returns:
        ImageFolderSet ``imagenet_c/<corruption>/<severity>``; labels index the 1000 sorted ImageNet wnids.

    Raises:
        FileNotFoundError: ``root``, the corruption or the severity folder is missing (the message lists
            what is there), or a folder is empty.
        ValueError: a severity outside 1-5, wnid folders without severity folders, or an unknown wnid folder.
    """
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or int(severity) not in SEVERITIES:
        raise ValueError(f"ImageNet-C severity must be an integer 1-5, got {severity!r}")
    severity = int(severity)
    root = Path(root)
    key = "imagenet_c"
    require_dir(root, key, "ImageNet-C folder")
    corruption_dir = root / corruption
    if not corruption_dir.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        problem = (
            f"ImageNet-C corruption folder {corruption_dir} does not exist (found: {', '.join(present) or 'none'})"
        )
        raise _layout_error(MissingFileError, key, problem)
    severity_dir = corruption_dir / str(severity)
    if not severity_dir.is_dir():
        present = sorted(p.name for p in corruption_dir.iterdir() if p.is_dir())
        if present and not any(name in {str(s) for s in SEVERITIES} for name in present):
            problem = (
                f"ImageNet-C corruption folder {corruption_dir} holds {', '.join(present[:3])}"
                f"{' ...' if len(present) > 3 else ''} but no severity folders 1-5"
            )
            raise _layout_error(FolderLayoutError, key, problem)
        problem = f"ImageNet-C severity folder {severity_dir} does not exist (found: {', '.join(present) or 'none'})"
        raise _layout_error(MissingFileError, key, problem)
    title = f"ImageNet-C {corruption} severity {severity}"
    files, labels = list_class_folders(severity_dir, imagenet_wnids(), key, title)
    return ImageFolderSet(f"imagenet_c/{corruption}/{severity}", severity_dir, files, labels, imagenet_wnids())


def subset_split(root: str | os.PathLike, name: str) -> ImageFolderSet:
    """ImageNet-A or ImageNet-R: ``root/<wnid>/<image>``, labels 0-199 in sorted-wnid order.

    Args:
        root: the dataset folder (``imagenet-a/`` or ``imagenet-r/`` as extracted from its tarball).
        name: ``"imagenet_a"`` or ``"imagenet_r"``.

    Returns:
        ImageFolderSet ``name``; labels index `subset_wnids` ``(name)``.

    Raises:
        FileNotFoundError: ``root`` is missing or empty, or a wnid folder has no image.
        ValueError: an unknown name, or a folder that is not one of the subset's 200 wnids.
    """
    if name not in SUBSET_SETS:
        raise ValueError(f"subset must be one of {SUBSET_SETS}, got {name!r}")
    root = Path(root)
    files, labels = list_class_folders(root, subset_wnids(name), name, _DISPLAY[name])
    return ImageFolderSet(name, root, files, labels, subset_wnids(name))


def ood_folder(root: str | os.PathLike, name: str) -> ImageFolderSet:
    """A semantic-OOD set: every image file under ``root``, recursively, in sorted relative-path order.

    For a single folder of images (``iNaturalist/images/*.jpg``) this is also ``ImageFolder``'s order.

    Args:
        root: the dataset folder.
        name: the set's name, e.g. ``"inaturalist"`` or ``"openimage_o"`` (`OOD_FOLDER_SETS`), or
            ``folder/<name>`` for one of your own (`sedlib.data.folders`); other names are accepted, with
            generic error messages.

    Returns:
        ImageFolderSet ``name`` with labels all ``-1`` and no class names.

    Raises:
        FileNotFoundError: ``root`` is missing or holds no image file.
    """
    root = Path(root)
    key = _dataset_key(name)
    own = name.startswith(f"{OWN_FOLDERS}/")
    title = f"OOD folder {name.split('/', 1)[1]!r} (data.ood_paths)" if own else f"{_DISPLAY.get(name, name)} folder"
    if not root.is_dir():
        problem = f"{title} {root} is not a directory" if root.exists() else f"{title} {root} does not exist"
        raise _layout_error(MissingFileError, key, problem)
    files, skipped = _image_files(str(root), str(root), "")
    _note_skipped(root, skipped)
    if not files:
        problem = f"{title} {root} holds no image file ({'/'.join(IMG_EXTENSIONS)}, searched recursively)"
        raise _layout_error(MissingFileError, key, problem)
    files.sort()
    return ImageFolderSet(name, root, tuple(files), np.full(len(files), -1, dtype=np.int64), ())


# --- transforms -----------------------------------------------------------------------------------


@functools.cache
def _functional() -> ModuleType:
    """The module ``torchvision.transforms.functional``, imported through `sedlib._compat.import_torchvision`."""
    import_torchvision()
    import torchvision.transforms.functional

    return torchvision.transforms.functional


def _bilinear():
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BILINEAR


def resize_size(image_size: int) -> int:
    """Shorter side before the centre crop: ``round(image_size * 256 / 224)`` (256 at 224, 439 at 384)."""
    return int(round(image_size * 256 / 224))


_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""PIL's modes of 16-bit (and 32-bit integer) grey images: PNGs of microscopes and medical scanners."""


def _rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB; 16-bit grey scaled by 255/65535 (PIL's own conversion clips it at 255)."""
    if image.mode in _WIDE_GREY_MODES:
        values = np.asarray(image, dtype=np.float64) * (255 / 65535)
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def train_transform(
    image: Image.Image,
    seed: int,
    pass_index: int,
    index: int,
    image_size: int = 224,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """RandomResizedCrop (bilinear) and horizontal flip, reproducible per image.

    The generator ``np.random.default_rng([seed, pass_index, index])`` draws the crop box
    (`sedlib.data.transforms.random_resized_crop_box`, torchvision's sampling rule) and then the flip
    (``random() < 0.5``), so the result depends only on the image and ``(seed, pass_index, index)``.

    Args:
        image: a PIL image of any mode (converted to RGB).
        seed: run seed.
        pass_index: augmentation pass (the paper caches 4).
        index: the image's row in its `ImageFolderSet`.
        image_size: output side S.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).

    Returns:
        ``(3, S, S)`` uint8.
    """
    F = _functional()
    image = _rgb(image)
    width, height = image.size
    rng = np.random.default_rng([int(seed), int(pass_index), int(index)])
    top, left, h, w = random_resized_crop_box(rng, height, width, scale, ratio)
    image = F.resized_crop(image, top, left, h, w, [image_size, image_size], _bilinear(), antialias=True)
    if rng.random() < 0.5:
        image = F.hflip(image)
    return F.pil_to_tensor(image)


def eval_transform(image: Image.Image, image_size: int = 224) -> torch.Tensor:
    """Resize the shorter side to `resize_size` (bilinear) and centre-crop S x S: ``(3, S, S)`` uint8."""
    F = _functional()
    image = F.resize(_rgb(image), resize_size(image_size), _bilinear(), antialias=True)
    return F.pil_to_tensor(F.center_crop(image, [image_size, image_size]))


def as_is_transform(image: Image.Image, image_size: int = 224) -> torch.Tensor:
    """An S x S image unchanged (standard ImageNet-C); otherwise shorter side to S and centre crop (no zoom).

    Returns:
        ``(3, S, S)`` uint8.
    """
    F = _functional()
    image = _rgb(image)
    if image.size != (image_size, image_size):
        image = F.center_crop(F.resize(image, image_size, _bilinear(), antialias=True), [image_size, image_size])
    return F.pil_to_tensor(image)


def _open_rgb(path: Path, key: str | None) -> Image.Image:
    """Read an image file as RGB, as torchvision's ``pil_loader`` does (no EXIF rotation)."""
    try:
        with open(path, "rb") as file:
            image = Image.open(file)
            image.load()
            return _rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        where = f" of {_DISPLAY[key]}" if key in _DISPLAY else ""
        source = f"; download it again: {LAYOUTS[key]}" if key in LAYOUTS else ""
        raise ImageReadError(
            f"cannot read image {path}{where} ({type(error).__name__}: {error}); the file is corrupt or truncated"
            f"{source}. The params keys are {_params_keys(key)}"
        ) from error


class FolderImages(torch.utils.data.Dataset):
    """Rows of an `ImageFolderSet`, read and transformed: item ``i`` is row ``index[i]``.

    Items are ``(image, label, row)``: a ``(3, S, S)`` uint8 tensor and int64 scalar tensors. The
    ``train`` transform's randomness is keyed by the row, so an image's augmentation does not depend on
    ``index``, batching or worker count.

    Args:
        images: the set to read.
        index: ``(K,)`` rows of ``images``, in the order they are served.
        transform: one of `TRANSFORMS`.
        image_size: output side S.
        seed: run seed (``train`` only).
        pass_index: augmentation pass (``train`` only).
        scale: crop area range (``train`` only).
        model_eval: instead of `eval_transform` (``eval`` only): a callable from an RGB PIL image to a
            ``(3, S, S)`` uint8 tensor, such as a timm model's own
            (`sedlib.backbones.timm_models.timm_eval_transform`).
    """

    def __init__(
        self,
        images: ImageFolderSet,
        index: np.ndarray,
        transform: str,
        image_size: int = 224,
        seed: int = 0,
        pass_index: int = 0,
        scale: tuple[float, float] = (0.08, 1.0),
        model_eval: Callable[[Image.Image], torch.Tensor] | None = None,
    ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        index = np.asarray(index)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"index must be (K,) integers, got {index.dtype} of shape {index.shape}")
        if len(index) and (index.min() < 0 or index.max() >= len(images)):
            raise ValueError(f"index must lie in [0, {len(images) - 1}] for {images.name!r}")
        if seed < 0 or pass_index < 0:
            raise ValueError("seed and pass_index must be non-negative")
        self.images = images
        self.index = index.astype(np.int64)
        self.transform = transform
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.pass_index = int(pass_index)
        self.scale = tuple(scale)
        self.model_eval = model_eval
        self._key = _dataset_key(images.name)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row = int(self.index[i])
        image = _open_rgb(self.images.path(row), self._key)
        if self.transform == "train":
            tensor = train_transform(image, self.seed, self.pass_index, row, self.image_size, self.scale)
        elif self.transform == "eval" and self.model_eval is not None:
            tensor = self.model_eval(image)
        elif self.transform == "eval":
            tensor = eval_transform(image, self.image_size)
        else:
            tensor = as_is_transform(image, self.image_size)
        label = torch.tensor(int(self.images.labels[row]), dtype=torch.int64)
        return tensor, label, torch.tensor(row, dtype=torch.int64)


def _worker_init(worker_id: int) -> None:
    """Seed every worker's global generators alike; the transforms do not use them anyway."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def image_loader(
    dataset: FolderImages,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
    batches: Sequence[Sequence[int]] | None = None,
) -> torch.utils.data.DataLoader:
    """A loader that serves `FolderImages` in order, in batches of ``(B, 3, S, S)`` uint8, labels, rows.

    The order is ``dataset.index``'s (no shuffle, last batch kept); the results are the same for any
    ``workers`` and ``batch_size``. The loader draws its base seed from its own generator, so iterating
    it leaves torch's global generator untouched. ``pin_memory`` is ignored without CUDA.

    Args:
        dataset: the images to serve.
        batch_size: images per batch.
        workers: loader processes (0: read in the calling process).
        pin_memory: pin batches for faster copies to a CUDA device.
        batches: the items of each batch, in order, instead of consecutive batches of ``batch_size``.

    Returns:
        The DataLoader.
    """
    if workers < 0 or batch_size < 1:
        raise ValueError(f"need workers >= 0 and batch_size >= 1, got {workers} and {batch_size}")
    batching = (
        {"batch_size": batch_size, "shuffle": False, "drop_last": False}
        if batches is None
        else {"batch_sampler": batches}
    )
    return torch.utils.data.DataLoader(
        dataset,
        num_workers=workers,
        pin_memory=bool(pin_memory) and torch.cuda.is_available(),
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=torch.Generator().manual_seed(0),
        **batching,
    )


# --- the data sources ------------------------------------------------------------------------------


class ImageFolderSource(DataSource):
    """Images read from folders through `FolderImages`.

    ImageNet's (`ImageNetSource`) and your own (`sedlib.data.folders.FolderSource`).
    """

    form = "folders"

    def folder_transform(self, plan: SplitPlan) -> str:
        """The `FolderImages` transform of a split (`TRANSFORMS`): ``train`` for the train split, else ``eval``."""
        return "train" if plan.kind == "train" else "eval"

    def model_eval(self) -> tuple[Callable | None, str | None]:
        """``(transform, description)`` of a timm model's own eval transform, or ``(None, None)``.

        A timm model's own with ``cache.eval_transform: timm``; else the project's (`eval_transform`).
        """
        cache = self.config.cache
        if cache.eval_transform != "timm":
            return None, None
        return timm_eval_transform(cache.backbone, cache.image_size)

    def describe_transform(self, plan: SplitPlan) -> str:
        cache, data = self.config.cache, self.config.data
        size = image_size(self.config)
        return {
            "train": f"random resized crop {size} scale {list(cache.augmentation_scale)} + flip, seed {data.seed}",
            "eval": self.model_eval()[1] or f"resize {resize_size(size)} + centre crop {size} (bilinear)",
            "as_is": f"as stored ({size}x{size}; others resized to {size} and centre-cropped)",
        }[self.folder_transform(plan)]

    def hash_payload(self, plan: SplitPlan) -> dict:
        """A ``timm:`` backbone's evaluated splits: which eval transform (``cache.eval_transform``) made them."""
        payload = super().hash_payload(plan)
        if self.config.cache.backbone.startswith(TIMM_PREFIX) and plan.kind != "train":
            payload["eval_transform"] = self.config.cache.eval_transform
        return payload


class ImageNetSource(ImageFolderSource):
    """The paper's study: ImageNet-1k, ImageNet-C as distributed, ImageNet-A/R, iNaturalist and OpenImage-O."""

    name = "imagenet"
    description = "ImageNet-1k"
    corruption = "folders"

    def source_set(self, plan: SplitPlan) -> ImageFolderSet:
        data = self.config.data
        if plan.kind in ("train", "val"):
            return imagenet_split(dataset_folder(data, "imagenet"), "train")
        if plan.kind == "test":
            return imagenet_split(dataset_folder(data, "imagenet"), "val")
        if plan.kind == "corruption":
            return imagenet_c_split(dataset_folder(data, "imagenet_c"), plan.corruption, plan.severity)
        name = self.ood_set(plan)
        if name in data.subset_sets or plan.kind == "subset":
            return subset_split(dataset_folder(data, name), name)
        return ood_folder(dataset_folder(data, name), name)

    def class_names(self) -> tuple[str, ...]:
        return imagenet_wnids()

    def folder_transform(self, plan: SplitPlan) -> str:
        """ImageNet-C under the ``standard`` protocol: ``as_is`` (as distributed); ``faithful``: ``eval``."""
        if plan.kind == "corruption" and self.config.protocol == "standard":
            return "as_is"
        return super().folder_transform(plan)

    def hash_payload(self, plan: SplitPlan) -> dict:
        """The protocol decides the ImageNet-C splits' transform."""
        payload = super().hash_payload(plan)
        if plan.kind == "corruption":
            payload["protocol"] = self.config.protocol
        return payload

    def protocol_effects(self, protocol: str) -> tuple[str, ...]:
        if protocol == "faithful":
            return (
                "ImageNet-A/R by a 1000-way-argmax vote restricted to the 200 classes",
                "ImageNet-C resized to 256 and cropped",
            )
        return ("ImageNet-A/R logits restricted to the 200 classes before any argmax", "ImageNet-C as distributed")
