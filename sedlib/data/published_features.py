"""Read the feature files released with the SED code (Rubinstein et al., arXiv:2409.16797).

The authors cache DeiT-3-B features (the CLS token after the attention half of block 12) once per
image set and train and evaluate every head on them (reference notes on the original code, §3.1,
§3.3 and §6). Their HDF5 files hold three datasets and no attributes:

=========  ==============  =========  =====================================================
key        shape           dtype      meaning
=========  ==============  =========  =====================================================
``embed``  ``(N*E, 768)``  float32    the feature
``label``  ``(N*E, 1)``    float32    class id stored as a float
``index``  ``(N*E, 1)``    float32    position of the row within its pass, 0..N-1
=========  ==============  =========  =====================================================

Rows are pass-major: pass j is rows ``[j*N, (j+1)*N)``; E = 4 augmentation passes for the train
file, 1 for every evaluation file. The order is torchvision's (sorted wnid folders, sorted files).
`PublishedFeatures` checks, for every row it returns, that the stored ``index`` equals the row's
position, which catches a file whose order differs from the one assumed. Labels of ImageNet-A / -R
are subset positions 0..199; iNaturalist and OpenImage-O store label 0 for every image and are
returned as stored (the caller maps them to -1).

`find_published_file` finds a split's file in a directory holding the authors' caches
(``scripts/download_cached_data.py`` fetches all evaluation caches; the 15.7 GB train cache is not
released and must be made with their caching stage).

These files are not a `sedlib.data.datasource.DataSource` but a substitute for single splits of an ImageNet
study (``cache.import_dir``): they hold some of its splits (never the val or disagreement split, and the train
split only if you made it), while the study's classes, its other splits, its checks and every split's hash
remain the ImageNet source's. A source per study would have to fall back on ImageNet's for everything but
reading rows; instead `sedlib.data.splits.plan_splits` marks each split found here ``imported``
(`sedlib.data.splits.published_file`), and stage 01 reads those rows through `PublishedFeatures`.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / PUBLISHED_FEATURE_FILES["test"]
    ...     with h5py.File(path, "w") as f:
    ...         _ = f.create_dataset("embed", data=np.ones((3, 2), np.float32))
    ...         _ = f.create_dataset("label", data=np.array([[7.0], [0.0], [999.0]], np.float32))
    ...         _ = f.create_dataset("index", data=np.array([[0.0], [1.0], [2.0]], np.float32))
    ...     with PublishedFeatures(find_published_file(tmp, "test")) as cache:
    ...         features, labels, index = cache.read(0, np.array([0, 2]))
    >>> features.shape, labels.tolist(), index.tolist()
    ((2, 2), [7, 999], [0, 2])
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from sedlib.errors import MissingFileError, PublishedFeaturesError

__all__ = [
    "PUBLISHED_FEATURE_FILES",
    "TRAIN_PASSES",
    "PublishedFeatures",
    "PublishedFeaturesError",
    "find_published_file",
]

#: Our split name -> the authors' file name (``result_sheets/caching.csv``).
PUBLISHED_FEATURE_FILES: dict[str, str] = {
    "train": "in_train_deit3b_-1_4_epochs.hdf5",
    "test": "in_val_deit3b_-1.hdf5",
    "imagenet_a": "in_a_deit3b_-1_.hdf5",
    "imagenet_r": "in_r_deit3b_-1_.hdf5",
    "inaturalist": "inat_deit3b_-1_.hdf5",
    "openimage_o": "oi_deit3b_-1_.hdf5",
}

#: Augmentation passes in the authors' train cache (every other file has one).
TRAIN_PASSES = 4

_CORRUPTION_SPLIT = re.compile(r"^(?P<corruption>[a-z_]+)-(?P<severity>[1-5])$", re.IGNORECASE)
_CORRUPTION_SUFFIX = "_{corruption}_{severity}_dataset_1_epochs_50000_samples.hdf5"
_READ_BLOCK_ROWS = 8192  # rows read at once; a selection is read block by block


def _download_hint(directory: Path) -> str:
    return (
        f"put the authors' caches in {directory}: their scripts/download_cached_data.py tarball holds every "
        "evaluation cache (ImageNet val, -A, -R, -C, iNaturalist, OpenImage-O) but not the 15.7 GB train cache "
        f"{PUBLISHED_FEATURE_FILES['train']}, which only their caching stage makes"
    )


def _corruption_file(directory: Path, split: str, corruption: str, severity: str) -> Path:
    folder_name = f"{corruption}_{severity}".lower()
    suffix = _CORRUPTION_SUFFIX.format(corruption=corruption, severity=severity).lower()
    expected = f"<Corruption>_{severity}/<hash>" + _CORRUPTION_SUFFIX.format(corruption=corruption, severity=severity)
    folders = (
        [p for p in directory.iterdir() if p.is_dir() and p.name.lower() == folder_name] if directory.is_dir() else []
    )
    matches = sorted(
        f for folder in folders for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(suffix)
    )
    if not matches:
        raise MissingFileError(
            f"{directory}: no feature file for split {split!r} (expected {expected}, corruption name in any case); "
            + _download_hint(directory)
        )
    if len(matches) > 1:
        raise PublishedFeaturesError(
            f"{directory}: several feature files for split {split!r}: {[str(m) for m in matches]}; "
            "keep the one made with the released checkpoint path (its hash is in the authors' configs/eval/eval.yaml)"
        )
    return matches[0]


def find_published_file(directory: str | Path, split: str) -> Path:
    """The authors' feature file of one split.

    Args:
        directory: the folder holding the authors' caches (their ``data/datasets/cached``).
        split: a key of `PUBLISHED_FEATURE_FILES`, or an ImageNet-C split ``<corruption>-<severity>``
            (e.g. ``gaussian_noise-5``), found as ``<Corruption>_<sev>/<hash>_..._<Corruption>_<sev>
            _dataset_1_epochs_50000_samples.hdf5`` with the corruption name in any case.

    Returns:
        The file's path.

    Raises:
        ValueError: ``split`` is neither a known split nor ``<corruption>-<severity>``.
        FileNotFoundError: the file is not there; the message names the directory and the expected
            name and says where the authors' files come from.
        PublishedFeaturesError: several files match a corruption split.
    """
    directory = Path(directory)
    if split in PUBLISHED_FEATURE_FILES:
        path = directory / PUBLISHED_FEATURE_FILES[split]
        if not path.is_file():
            raise MissingFileError(
                f"{directory}: no feature file for split {split!r} (expected {path.name}); " + _download_hint(directory)
            )
        return path
    match = _CORRUPTION_SPLIT.match(split)
    if match is None:
        raise ValueError(
            f"unknown split {split!r}; choose one of {list(PUBLISHED_FEATURE_FILES)} or an ImageNet-C split "
            "'<corruption>-<severity>' such as 'gaussian_noise-5'"
        )
    return _corruption_file(directory, split, match["corruption"], match["severity"])


class PublishedFeatures:
    """One of the authors' HDF5 feature caches, opened read-only; use as a context manager.

    Args:
        path: the ``.hdf5`` file.
        passes: E, the number of passes stored one after the other (`TRAIN_PASSES` for the train
            cache, 1 for every evaluation cache).

    Attributes:
        path: the file.
        rows: N, the rows of one pass.
        passes: E.
        feature_dim: the width of ``embed`` (768).

    Raises:
        PublishedFeaturesError: a dataset is missing or has the wrong shape or dtype, or the row
            count is not a multiple of ``passes``.
        OSError: the file cannot be opened as HDF5.
    """

    def __init__(self, path: str | Path, passes: int = 1) -> None:
        self.path = Path(path)
        if not isinstance(passes, int) or isinstance(passes, bool) or passes < 1:
            raise ValueError(f"passes must be a positive integer, got {passes!r}")
        self.passes = passes
        self._file = h5py.File(self.path, "r")
        try:
            self._embed, self._label, self._index = self._check_layout()
        except BaseException:
            self._file.close()
            raise
        self.rows = self._embed.shape[0] // passes
        self.feature_dim = self._embed.shape[1]

    def _dataset(self, key: str) -> h5py.Dataset:
        dataset = self._file.get(key)
        if not isinstance(dataset, h5py.Dataset):
            raise PublishedFeaturesError(
                f"{self.path}: dataset {key!r} is missing (found {sorted(self._file.keys())}); the authors' caches "
                "hold 'embed', 'label' and 'index'"
            )
        return dataset

    def _check_layout(self) -> tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset]:
        embed, label, index = (self._dataset(key) for key in ("embed", "label", "index"))
        if embed.ndim != 2 or embed.dtype != np.float32:
            raise PublishedFeaturesError(
                f"{self.path}: dataset 'embed' is {embed.dtype} of shape {embed.shape}, expected float32 of shape "
                "(rows * passes, feature_dim)"
            )
        total = embed.shape[0]
        for name, dataset in (("label", label), ("index", index)):
            if dataset.shape != (total, 1):
                raise PublishedFeaturesError(
                    f"{self.path}: dataset {name!r} has shape {dataset.shape}, expected ({total}, 1) to match 'embed'"
                )
            if dataset.dtype.kind not in "fiu":
                raise PublishedFeaturesError(
                    f"{self.path}: dataset {name!r} is {dataset.dtype}, expected numbers "
                    "(float32 in the authors' files)"
                )
        if total % self.passes:
            raise PublishedFeaturesError(
                f"{self.path}: {total} rows are not a multiple of passes={self.passes}; the authors' train cache has "
                f"{TRAIN_PASSES} passes, every evaluation cache 1"
            )
        return embed, label, index

    def read(self, pass_index: int, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, labels and stored index of some rows of one pass.

        Args:
            pass_index: which pass, 0..E-1.
            rows: ``(n,)`` strictly increasing row positions within the pass, in [0, N).

        Returns:
            ``features (n, d)`` float32, ``labels (n,)`` int64 and ``index (n,)`` int64 (equal to
            ``rows``, checked).

        Raises:
            ValueError: ``pass_index`` or ``rows`` out of range, or ``rows`` not sorted and unique.
            PublishedFeaturesError: a label is not a whole number, or a stored index differs from
                its row's position (the file's order is not the one assumed); the message names the
                file, the pass and the first bad row.
        """
        if not 0 <= pass_index < self.passes:
            raise ValueError(f"pass_index {pass_index} is outside [0, {self.passes}) for {self.path}")
        rows = np.asarray(rows)
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise ValueError(f"rows must be a 1-D array of integer row positions, got {rows.dtype} {rows.shape}")
        rows = rows.astype(np.int64)
        if rows.size and (rows[0] < 0 or rows[-1] >= self.rows or not (np.diff(rows) > 0).all()):
            raise ValueError(f"rows must be strictly increasing positions in [0, {self.rows}) of {self.path}")
        features = np.empty((rows.size, self.feature_dim), dtype=np.float32)
        labels = np.empty(rows.size, dtype=np.float64)
        index = np.empty(rows.size, dtype=np.float64)
        offset = pass_index * self.rows
        blocks = rows // _READ_BLOCK_ROWS
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]]) if rows.size else np.array([], int)
        for begin, end in zip(starts, np.r_[starts[1:], rows.size]):
            chosen = rows[begin:end]
            span = slice(offset + int(chosen[0]), offset + int(chosen[-1]) + 1)
            within = chosen - chosen[0]
            features[begin:end] = self._embed[span][within]
            labels[begin:end] = self._label[span][within, 0]
            index[begin:end] = self._index[span][within, 0]
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            bad = int(np.argmin(whole))
            raise PublishedFeaturesError(
                f"{self.path}: pass {pass_index}, row {int(rows[bad])}: label {float(labels[bad])!r} is not a whole "
                "number; labels must be class ids"
            )
        in_order = index == rows
        if not in_order.all():
            bad = int(np.argmin(in_order))
            raise PublishedFeaturesError(
                f"{self.path}: pass {pass_index}, row {int(rows[bad])}: stored index is {float(index[bad])!r}, "
                f"expected {int(rows[bad])}; the rows of this file are not in the order assumed (pass-major, each "
                "pass in dataset order)"
            )
        return features, labels.astype(np.int64), index.astype(np.int64)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> PublishedFeatures:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PublishedFeatures({str(self.path)!r}, passes={self.passes}, rows={self.rows})"
