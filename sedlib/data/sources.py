"""Image sources of the embedded default run: Fashion-MNIST, Animal-MNIST silhouettes and sklearn digits.

Every loader returns an `ImageSet`: grey ``uint8`` images with the object bright on a dark
background (the polarity of Fashion-MNIST), ``int64`` labels (``-1`` for every sample of a
semantic-OOD set) and a deterministic description of where the images were read from.

- **Fashion-MNIST** (Xiao, Rasul, Vollgraf 2017, https://arxiv.org/abs/1708.07747; MIT): the
  in-distribution data, read from the four idx files
  (http://yann.lecun.com/exdb/mnist/ describes the format) that the Debian/Ubuntu package
  ``dataset-fashion-mnist`` installs under ``/usr/share/datasets/fashion-mnist``.
- **Animal-MNIST** (PyPI ``animal-mnist`` 0.4, MIT): 28x28 animal silhouettes, a far-OOD set. The
  package's own loader imports TensorFlow, so the gzip-pickled arrays it ships are read directly,
  through an unpickler that only builds numpy arrays.
- **digits** (scikit-learn's copy of the UCI optical handwritten digits, Alpaydin & Kaynak 1998):
  8x8 images, a far-OOD set that needs no download.

Example:
    >>> toy = ImageSet("toy", np.zeros((3, 2, 2), np.uint8), np.array([0, 1, 0]), ("a", "b"), "doctest")
    >>> len(toy.subset(np.array([2, 0]))), toy.subset(np.array([1])).labels.tolist()
    (2, [1])
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sedlib.data.get_fashion_mnist import fashion_mnist_dirs, find_idx, how_to_get
from sedlib.errors import MissingFileError

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_MNIST_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

ANIMAL_MNIST_VERSION = "0.4"
_ANIMAL_MNIST_DIR = ("data", "Animal_MNIST")
_ANIMAL_MNIST_IMAGES = "animal_data_version_3.gz"
_ANIMAL_MNIST_LABELS = "animal_label_version_3.gz"


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A set of grey images with labels, as every loader of this module returns it.

    Equality is identity (``eq=False``): comparing arrays element-wise is the caller's business.

    Attributes:
        name: identifier of the set, e.g. ``fashion_mnist_test``.
        images: ``(N, H, W)`` uint8 grey images, the object bright on a dark background.
        labels: ``(N,)`` int64 class indices into ``class_names``; ``-1`` for every sample of a
            semantic-OOD set.
        class_names: names of the classes; the empty tuple for a semantic-OOD set.
        origin: deterministic, human-readable description of where the images were read from.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    origin: str

    def __post_init__(self) -> None:
        where = f"ImageSet {self.name!r}"
        if not isinstance(self.images, np.ndarray) or self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"{where}: images must be an (N, H, W) uint8 array, got {_describe(self.images)}")
        if not isinstance(self.labels, np.ndarray) or self.labels.ndim != 1 or self.labels.dtype != np.int64:
            raise ValueError(
                f"{where}: labels must be an (N,) int64 array (convert with .astype(np.int64)), "
                f"got {_describe(self.labels)}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{where}: {len(self.images)} images but {len(self.labels)} labels")
        if not isinstance(self.class_names, tuple) or not all(isinstance(c, str) for c in self.class_names):
            raise ValueError(f"{where}: class_names must be a tuple of str, got {self.class_names!r}")
        if not self.class_names:
            if (self.labels != -1).any():
                raise ValueError(f"{where}: a set without class_names is semantic OOD and needs every label -1")
        elif len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(
                f"{where}: labels must lie in [0, {len(self.class_names) - 1}] for {len(self.class_names)} "
                f"class names, got [{self.labels.min()}, {self.labels.max()}]"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> ImageSet:
        """The rows ``indices`` (``(K,)`` integers, in that order), with the same name and origin."""
        indices = np.asarray(indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"ImageSet {self.name!r}: subset needs (K,) integer indices, got {_describe(indices)}")
        return replace(self, images=self.images[indices], labels=self.labels[indices])


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


# --- Fashion-MNIST --------------------------------------------------------------------------------


def _open_idx(path: Path) -> BinaryIO:
    """Open an idx file, plain or gzipped (recognised by its first two bytes, not by its name)."""
    with open(path, "rb") as file:
        gzipped = file.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str | os.PathLike, magic: int, ndim: int) -> np.ndarray:
    """Read an idx file of unsigned bytes (the MNIST format), plain or gzipped.

    The header is a big-endian int32 magic number (``0x0800 + ndim``: unsigned bytes, ``ndim``
    dimensions) followed by ``ndim`` big-endian int32 sizes; the data follow in C order.

    Args:
        path: the file.
        magic: expected magic number: 2051 for images, 2049 for labels.
        ndim: expected number of dimensions: 3 for images, 1 for labels.

    Returns:
        The uint8 array of the sizes given in the header.

    Raises:
        ValueError: naming the file, when the magic number or the data length is wrong.
    """
    path = Path(path)
    try:
        with _open_idx(path) as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot read as an idx file ({error}); download it again") from error
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise ValueError(f"{path}: {len(raw)} bytes is shorter than an idx header; the file is truncated")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: idx magic number {found}, expected {magic}; wrong or corrupted file")
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], dtype=">i4"))
    if len(raw) - header != int(np.prod(shape)):
        raise ValueError(
            f"{path}: header says shape {shape} ({int(np.prod(shape))} bytes) but {len(raw) - header} bytes "
            "follow; the file is truncated or corrupted"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> ImageSet:
    """Fashion-MNIST's train (60,000) or test (10,000) split from its idx files.

    Args:
        split: ``"train"`` or ``"test"``.
        root: directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or with ``.gz``;
            None searches `fashion_mnist_dirs` in order.

    Returns:
        ImageSet ``fashion_mnist_<split>``: ``(N, 28, 28)`` uint8 images, white garment on black
        (as stored), labels 0-9 naming `FASHION_MNIST_CLASSES`.

    Raises:
        ValueError: an unknown split, or a bad file (named in the message).
        FileNotFoundError: no directory holds both files of the split; lists every one tried.
    """
    if split not in _FASHION_MNIST_PREFIX:
        raise ValueError(f"Fashion-MNIST split must be one of {sorted(_FASHION_MNIST_PREFIX)}, got {split!r}")
    prefix = _FASHION_MNIST_PREFIX[split]
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    candidates = [Path(root)] if root is not None else fashion_mnist_dirs()
    tried = []
    for directory in candidates:
        images_path, labels_path = (find_idx(directory, stem) for stem in stems)
        if images_path is not None and labels_path is not None:
            break
        missing = [f"{stem}[.gz]" for stem, path in zip(stems, (images_path, labels_path)) if path is None]
        tried.append(f"  {directory} (missing {', '.join(missing)})")
    else:
        tried = "\n".join(tried)
        raise MissingFileError(f"Fashion-MNIST {split} split not found. Tried:\n{tried}\n{how_to_get()}")
    images = read_idx(images_path, _IDX_IMAGES_MAGIC, ndim=3)
    labels = read_idx(labels_path, _IDX_LABELS_MAGIC, ndim=1)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{labels_path}: label {labels.max()} is not a Fashion-MNIST class (0-9)")
    return ImageSet(
        name=f"fashion_mnist_{split}",
        images=images.copy(),  # writable, independent of the read buffer
        labels=labels.astype(np.int64),
        class_names=FASHION_MNIST_CLASSES,
        origin=f"Fashion-MNIST idx files {images_path.name}, {labels_path.name} in {images_path.parent}",
    )


# --- Animal-MNIST ---------------------------------------------------------------------------------


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and refuses every other global.

    Pickles written by numpy 1 name ``numpy.core.multiarray``; numpy 2 moved it to
    ``numpy._core`` and warns when the old name is imported, so the name is mapped. Only the few
    globals an array pickle needs are allowed: unpickling cannot call anything else.
    """

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
        }
    )

    def find_class(self, module: str, name: str):  # noqa: D102
        if module == "numpy.core" or module.startswith("numpy.core."):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed "
                f"({', '.join(sorted(f'{m}.{n}' for m, n in self.ALLOWED))})"
            )
        return super().find_class(module, name)


def load_numpy_pickle(path: str | os.PathLike) -> np.ndarray:
    """Read a gzip-compressed pickle of one numpy array with `NumpyOnlyUnpickler`.

    Raises:
        ValueError: naming the file, when it does not hold a single numpy array.
        pickle.UnpicklingError: naming the file, when it references anything but numpy arrays.
    """
    try:
        with gzip.open(path, "rb") as file:
            value = NumpyOnlyUnpickler(file).load()
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(f"{path}: {error}") from error
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path}: expected a pickled numpy array, got {type(value).__name__}")
    return value


def animal_mnist_dir() -> Path:
    """The directory of the Animal-MNIST arrays inside the installed ``animal_mnist`` package.

    Found with `importlib.util.find_spec`, which does not run the package's code.
    """
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the Animal-MNIST data come from the PyPI package animal-mnist, which is not installed: "
            f"`pip install --no-deps animal-mnist=={ANIMAL_MNIST_VERSION}` (--no-deps: it would pull TensorFlow)"
        )
    return Path(spec.submodule_search_locations[0]).joinpath(*_ANIMAL_MNIST_DIR)


def load_animal_mnist() -> ImageSet:
    """Animal-MNIST silhouettes (PyPI ``animal-mnist`` 0.4) as a semantic-OOD set.

    What the package ships (``animal_mnist/data/Animal_MNIST/``): ``animal_data_version_3.gz``, a
    gzip-pickled ``(10000, 28, 28)`` uint8 array with values spanning 0-255, and
    ``animal_label_version_3.gz``, a ``(10000,)`` int64 array of 10 animal classes, 1,000 each
    (unnamed in the package). The images are filled silhouettes, bright (mostly 255) on a black
    background, with a few grey anti-aliased edge pixels: about 39 % of the pixels are non-zero,
    the mean border pixel is about 4 and the mean of the central 8x8 about 193. That is already
    the polarity and range of Fashion-MNIST, so the images are used as stored; a file that does
    not match this description raises instead of being silently converted. The animal classes are
    dropped: every label is -1.

    Returns:
        ImageSet ``animal_mnist``: ``(10000, 28, 28)`` uint8 images, labels all -1, no class names.

    Raises:
        ModuleNotFoundError: the package is not installed (says how to install it).
        ValueError: the arrays are not as described above (names the file).
    """
    directory = animal_mnist_dir()
    images_path, labels_path = directory / _ANIMAL_MNIST_IMAGES, directory / _ANIMAL_MNIST_LABELS
    for path in (images_path, labels_path):
        if not path.is_file():
            raise MissingFileError(
                f"{path} is missing from the animal_mnist package; reinstall it with "
                f"`pip install --no-deps --force-reinstall animal-mnist=={ANIMAL_MNIST_VERSION}`"
            )
    images, labels = load_numpy_pickle(images_path), load_numpy_pickle(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected (N, 28, 28) uint8 images, got {_describe(images)}")
    if labels.shape != (len(images),):
        raise ValueError(f"{labels_path}: {labels.shape} labels for {len(images)} images in {images_path}")
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    if border.mean() >= images[:, 10:18, 10:18].mean():
        raise ValueError(f"{images_path}: the border is not darker than the centre; expected bright objects on black")
    return ImageSet(
        name="animal_mnist",
        images=np.ascontiguousarray(images),
        labels=np.full(len(images), -1, dtype=np.int64),
        class_names=(),
        origin=f"PyPI animal-mnist {_package_version('animal-mnist')}: {'/'.join(_ANIMAL_MNIST_DIR)}/"
        f"{_ANIMAL_MNIST_IMAGES}",
    )


def _package_version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(version unknown)"


# --- scikit-learn digits --------------------------------------------------------------------------


def load_digits() -> ImageSet:
    """scikit-learn's 1,797 handwritten digits (8x8, values 0-16, ink high) as a semantic-OOD set.

    Values are scaled to 0-255 by ``round(v * 255 / 16)``, rounding halves up (only ``v = 8``,
    127.5 -> 128, has a half), and the images stay 8x8: resizing is the backbone's business. Ink is
    high, so the polarity already matches Fashion-MNIST.

    Returns:
        ImageSet ``digits``: ``(1797, 8, 8)`` uint8 images, labels all -1, no class names.
    """
    import sklearn
    from sklearn.datasets import load_digits as sklearn_load_digits

    values = sklearn_load_digits().images  # (1797, 8, 8) float64 in 0..16
    images = np.floor(values * 255 / 16 + 0.5).astype(np.uint8)
    return ImageSet(
        name="digits",
        images=images,
        labels=np.full(len(images), -1, dtype=np.int64),
        class_names=(),
        origin=f"scikit-learn {sklearn.__version__} sklearn.datasets.load_digits (bundled UCI optical digits)",
    )


SOURCES: dict[str, Callable[[], ImageSet]] = {
    "animal_mnist": load_animal_mnist,
    "digits": load_digits,
}
"""The semantic-OOD sets by name; Fashion-MNIST is loaded by split with `load_fashion_mnist`."""
