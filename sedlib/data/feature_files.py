"""Features you already have (``data.dataset: features``): one file per set, checked before it is used.

Each set the params name (``data.train_path``, ``val_path``, ``test_path`` and ``ood_paths``) is one file:

- ``.npz`` (``numpy.savez``) or ``.h5``/``.hdf5`` (HDF5, read with h5py) holding the arrays
  ``features`` ``(N, d)`` (any float or integer type; stored as ``cache.dtype``) and ``labels`` ``(N,)``
  integers, optionally ``class_names`` ``(C,)`` strings (read from the training set's file only);
- ``.npy`` (``numpy.save``): the features alone, for a semantic-OOD set (which has no labels).

A semantic-OOD set's labels, if any, are ignored (every row becomes -1). Stage 01 copies the rows into the
run's feature store (`sedlib.features`) as it does for a backbone's features, so stages 02-05 run
unchanged; no backbone runs, and there are no corruption splits (no images to corrupt).

`FeatureFilesSource` is the study's `sedlib.data.datasource.DataSource` (``form: features``): its source
sets are the files' arrays, and it has no images, no backbone and no corruption.

`check_feature_sets` checks the sets together: one feature width, finite values, labels in
``[0, C)`` where ``C`` is the number of ``class_names`` or else one more than the largest training label.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "train.npz"
    >>> np.savez(path, features=np.ones((4, 3), np.float32), labels=np.array([0, 1, 1, 0]))
    >>> train = read_feature_file(path, "train")
    >>> train.features.shape, train.labels.tolist(), check_feature_sets({"train": train})
    ((4, 3), [0, 1, 1, 0], ('0', '1'))
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sedlib.config import resolve_path
from sedlib.data.datasource import OwnDataSource
from sedlib.data.plan import SplitPlan
from sedlib.errors import ConfigError, FeatureFileError, MissingFileError

SUFFIXES = (".npz", ".h5", ".hdf5", ".npy")
"""The file types read (``.npy``: features only, for semantic-OOD sets)."""
_ARRAYS = ("features", "labels", "class_names")


@dataclass(frozen=True, eq=False)
class FeatureArrays:
    """The arrays of one feature file.

    Attributes:
        name: the set, e.g. ``train`` or an OOD set's name.
        path: the file read.
        features: ``(N, d)`` features, as stored.
        labels: ``(N,)`` int64 class indices; -1 for every row of a semantic-OOD set.
        class_names: the file's ``class_names``; ``()`` when it has none.
    """

    name: str
    path: Path
    features: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``_ARRAYS`` that a file holds, read into memory."""
    try:
        if path.suffix == ".npy":
            return {"features": np.load(path, allow_pickle=False)}
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in _ARRAYS if key in archive.files}
        with h5py.File(path, "r") as handle:
            found = {key: handle[key] for key in _ARRAYS if isinstance(handle.get(key), h5py.Dataset)}
            arrays = {key: dataset[()] for key, dataset in found.items()}
    except (OSError, ValueError, EOFError) as error:
        raise FeatureFileError(f"{path}: cannot be read ({type(error).__name__}: {error}); write it again") from error
    if "class_names" in arrays:  # HDF5 stores strings as bytes
        names = arrays["class_names"]
        arrays["class_names"] = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in names])
    return arrays


def read_feature_file(path: str | os.PathLike, name: str, labelled: bool = True) -> FeatureArrays:
    """Read and check one feature file.

    Args:
        path: a ``.npz``, ``.h5``/``.hdf5`` or (``labelled=False`` only) ``.npy`` file.
        name: the set it is, for messages.
        labelled: the set has class labels (train, validation, test); ``False`` for a semantic-OOD set.

    Returns:
        The `FeatureArrays`.

    Raises:
        FileNotFoundError: no such file.
        FeatureFileError: another file type, a missing array, wrong shapes or types, non-finite features,
            negative labels.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"feature file {path} of set {name!r} does not exist; check its data.*_path key")
    allowed = SUFFIXES if not labelled else SUFFIXES[:-1]
    if path.suffix not in allowed:
        hint = " (.npy holds no labels: save features and labels with numpy.savez)" if path.suffix == ".npy" else ""
        raise FeatureFileError(f"{path}: set {name!r} must be one of {'/'.join(allowed)}{hint}")
    arrays = _load_arrays(path)
    needed = ("features", "labels") if labelled else ("features",)
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise FeatureFileError(f"{path}: has no array {' or '.join(map(repr, missing))} (set {name!r}); it needs "
                               f"{' and '.join(needed)}")  # fmt: skip
    features = arrays["features"]
    if features.ndim != 2 or len(features) == 0 or not np.issubdtype(features.dtype, np.number):
        raise FeatureFileError(
            f"{path}: features must be a non-empty (N, d) numeric array, got {features.dtype} {features.shape}"
        )
    if not np.isfinite(features).all():
        row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
        raise FeatureFileError(f"{path}: features of row {row} are not finite (NaN or inf)")
    if not labelled:
        labels = np.full(len(features), -1, dtype=np.int64)
    else:
        labels = arrays["labels"]
        if labels.shape != (len(features),) or not np.issubdtype(labels.dtype, np.integer):
            raise FeatureFileError(
                f"{path}: labels must be ({len(features)},) integers, one per feature row, got {labels.dtype} "
                f"{labels.shape}"
            )
        if labels.min() < 0:
            raise FeatureFileError(f"{path}: labels must be class indices >= 0, found {labels.min()}")
        labels = labels.astype(np.int64)
    class_names = tuple(str(v) for v in arrays.get("class_names", ()))
    return FeatureArrays(name, path, features, labels, class_names)


def check_feature_sets(sets: dict[str, FeatureArrays]) -> tuple[str, ...]:
    """Check that the sets of one study fit together, and name its classes.

    Args:
        sets: the sets by name; ``train`` is required, and the labelled ones are those with labels >= 0.

    Returns:
        The class names: the training file's ``class_names``, else ``"0"``, ``"1"``, ... up to its largest label.

    Raises:
        FeatureFileError: feature widths differ, a label is not a class, duplicate class names, a single class in
            the training set, or (without
            ``class_names``) a class between 0 and the largest label that the training set lacks.
    """
    train = sets["train"]
    width = train.features.shape[1]
    for arrays in sets.values():
        if arrays.features.shape[1] != width:
            raise FeatureFileError(
                f"{arrays.path}: features are {arrays.features.shape[1]} wide but the training set's "
                f"({train.path}) are {width}; every set must come from the same feature extractor"
            )
    names = train.class_names
    if names:
        if len(set(names)) != len(names):
            raise FeatureFileError(f"{train.path}: class_names has duplicates")
    else:
        present = np.unique(train.labels)
        names = tuple(str(k) for k in range(int(present.max()) + 1))
        absent = sorted(set(range(len(names))) - set(present.tolist()))
        if absent:
            raise FeatureFileError(
                f"{train.path}: the training labels skip the classes {absent[:10]} below the largest, "
                f"{len(names) - 1}; relabel them 0..C-1, or store the C class names as class_names"
            )
    if len(names) < 2:
        raise FeatureFileError(
            f"{train.path}: the training set has a single class ({names[0]!r}); the ensembles are classifiers and "
            "need at least two: add rows of another class"
        )
    for arrays in sets.values():
        if len(arrays.labels) and arrays.labels.max() >= len(names):
            raise FeatureFileError(
                f"{arrays.path}: label {arrays.labels.max()} is not one of the {len(names)} classes of the training "
                f"set ({train.path}: labels 0..{len(names) - 1})"
            )
    return names


class FeatureFilesSource(OwnDataSource):
    """Your feature files (``data.dataset: features``): one file per set, copied row by row into the run's cache."""

    name = "features"
    description = "your features"
    form = "features"
    corruption = "none"

    def feature_sets(self) -> dict[str, FeatureArrays]:
        """Your feature files by set name, read and checked together (`check_feature_sets`).

        Raises:
            FileNotFoundError: a file is missing.
            FeatureFileError: a file cannot be used (named in the message).
        """
        data = self.config.data
        named = {"train": data.train_path, "val": data.val_path, "test": data.test_path}
        files = [(name, str(resolve_path(path)), True) for name, path in named.items() if path]
        files += [(name, str(resolve_path(path)), False) for name, path in data.ood_paths.items()]
        stamps = tuple(Path(path).stat().st_mtime_ns if Path(path).is_file() else 0 for _, path, _ in files)
        return _read_feature_sets(tuple(files), stamps)

    def source_set(self, plan: SplitPlan) -> FeatureArrays:
        return self.feature_sets()[self.set_name(plan)]

    def class_names(self) -> tuple[str, ...]:
        return check_feature_sets(self.feature_sets())

    def check(self, plans: Sequence[SplitPlan]) -> None:
        """Every file read (`read_feature_file`), every split's rows drawn, no feature beyond ``cache.dtype``."""
        super().check(plans)
        if self.config.cache.dtype == "float16":
            limit = float(np.finfo(np.float16).max)
            for arrays in self.feature_sets().values():
                largest = float(np.abs(arrays.features).max(initial=0))
                if largest > limit:
                    raise ConfigError(
                        f"{self.config.source}: {arrays.path} holds features up to {largest:.4g} in magnitude, "
                        f"beyond float16 ({limit:g}): set cache.dtype: float32"
                    )

    def describe_source(self, plan: SplitPlan, arrays: FeatureArrays, index: np.ndarray) -> str:
        return f"{arrays.name}: {len(index)} of {len(arrays)} rows of {arrays.path.name}, seed {self.config.data.seed}"

    def describe_transform(self, plan: SplitPlan) -> str:
        return "none: the rows of the feature file as given"


@functools.lru_cache(maxsize=1)
def _read_feature_sets(files: tuple[tuple[str, str, bool], ...], stamps: tuple[int, ...]) -> dict:
    """The files read once per process while unchanged (``stamps``: their modification times)."""
    sets = {name: read_feature_file(path, name, labelled) for name, path, labelled in files}
    check_feature_sets(sets)
    return sets
