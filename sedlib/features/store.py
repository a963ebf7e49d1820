"""The HDF5 feature store's format and its read side: manifests, reading a split, and checking a file.

One split is one HDF5 file (`sedlib.features` describes the layout). A file is read only when it is
complete and made with the expected manifest; HDF5 verifies a Fletcher-32 checksum on every chunk it
reads, so a damaged chunk fails instead of returning wrong numbers. `sedlib.features.writing` writes
files through the same checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from sedlib.errors import CorruptFeaturesError, FeatureStoreError, MissingFileError, StaleFeaturesError

FORMAT_VERSION = 1


DTYPES = ("float32", "float16")


PARTIAL_SUFFIX = ".partial"


STATES = ("missing", "partial", "complete", "stale", "corrupt")


_CHUNK_BYTES = 1 << 20  # storage chunk of `features`: about 1 MiB of rows


_VECTOR_CHUNK = 1 << 16  # storage chunk of `labels` / `index`, in rows


_SCAN_BYTES = 64 << 20  # rows read at once when verifying a whole file


_CHUNK_CACHE_BYTES = 16 << 20


logger = logging.getLogger("sedlib.features")


@dataclass(frozen=True)
class SplitManifest:
    """Everything that determines the content of one split's feature file.

    Two files with equal manifests hold the same features; the creation time is kept apart (the
    ``created`` attribute) and is not part of this identity.

    Attributes:
        split: name of the split and of its file (``train``, ``test``, ``gaussian_noise-5``, ...).
        source: where the images come from, e.g. ``"fashion_mnist_test rows 0..4999"``.
        backbone: the backbone's name and a description of its weights.
        transform: what was done to the images, e.g. ``"grey->rgb 48px; gaussian_noise severity 5 seed 0"``.
        passes: P >= 1, the number of (augmented) passes over the rows.
        rows: N >= 1, the number of images.
        feature_dim: d, the width of one feature.
        dtype: storage type of the features, ``"float32"`` or ``"float16"``.
        params_hash: hash of all parameters that determine the content.
    """

    split: str
    source: str
    backbone: str
    transform: str
    passes: int
    rows: int
    feature_dim: int
    dtype: str
    params_hash: str

    def __post_init__(self) -> None:
        for name in ("split", "source", "backbone", "transform", "params_hash"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"SplitManifest.{name} must be a non-empty string, got {value!r}")
        for name in ("passes", "rows", "feature_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SplitManifest.{name} must be a positive integer, got {value!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"SplitManifest.dtype must be one of {DTYPES}, got {self.dtype!r}")

    def to_dict(self) -> dict[str, str | int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping, source_path: str | Path) -> SplitManifest:
        """Rebuild a manifest from `to_dict`'s output read from ``source_path``.

        Raises:
            CorruptFeaturesError: a key is missing or unknown, or a value is invalid; the message
                names ``source_path`` and the key.
        """
        if not isinstance(d, Mapping):
            raise CorruptFeaturesError(f"{source_path}: the manifest is a {type(d).__name__}, not a mapping")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in d]
        unknown = sorted(str(key) for key in d if key not in names)
        if missing or unknown:
            problems = ([f"missing key(s) {missing}"] if missing else []) + (
                [f"unknown key(s) {unknown}"] if unknown else []
            )
            raise CorruptFeaturesError(
                f"{source_path}: the manifest has {' and '.join(problems)}; "
                f"a SplitManifest has exactly the keys {names}"
            )
        try:
            return cls(**d)
        except ValueError as error:
            raise CorruptFeaturesError(f"{source_path}: invalid manifest ({error})") from error

    def differences(self, other: SplitManifest) -> dict[str, tuple]:
        """Fields that differ: name -> (this value, the other's value)."""
        return {
            name: (value, getattr(other, name))
            for name, value in self.to_dict().items()
            if value != getattr(other, name)
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass
class FeatureSplit:
    """One split read back from its file.

    Attributes:
        features: ``(passes, rows, d)`` when ``manifest.passes > 1``, else ``(rows, d)``; the stored dtype.
        labels: ``(rows,)`` int64.
        index: ``(rows,)`` int64, each row's position in its source set.
        manifest: what the file was made from.
        created: when the file was completed (ISO 8601, UTC).
        path: the file.
    """

    features: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    index: np.ndarray = field(repr=False)
    manifest: SplitManifest
    created: str
    path: Path


def partial_path(path: str | Path) -> Path:
    """Where `write_split` writes ``path`` until it is complete (``train.h5`` -> ``train.h5.partial``)."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _advice(path: Path) -> str:
    return (
        f"To recompute it, set `cache.rebuild: true` in the params file (or add `--set cache.rebuild=true` to the "
        f"`python -m sedlib.run` command) and run stage 01 again, or delete {path}. "
        "(From code: write_split(..., rebuild=True).)"
    )


def _missing_message(path: Path) -> str:
    message = f"{path}: no such feature file; run notebooks/01_cache (the cache stage) to make it"
    if partial_path(path).exists():
        message += f" ({partial_path(path).name} is an interrupted write; rerunning the cache stage resumes it)"
    return message


@contextlib.contextmanager
def _corrupt_on_error(path: Path, doing: str) -> Iterator[None]:
    """Turn the errors h5py raises for damaged files into `CorruptFeaturesError` naming ``path``."""
    try:
        yield
    except FeatureStoreError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise CorruptFeaturesError(
            f"{path}: {doing} failed ({type(error).__name__}: {error}); the file is damaged. {_advice(path)}"
        ) from error


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


def _system_errno(error: BaseException) -> int | None:
    """The operating system's error number behind ``error``; HDF5 reports it only inside its message."""
    number = getattr(error, "errno", None)
    if isinstance(number, int):
        return number
    found = re.search(r"errno = (\d+)", str(error))
    return int(found.group(1)) if found else None


def _storage_problem(
    path: Path, error: BaseException, manifest: SplitManifest | None = None
) -> FeatureStoreError | None:
    """A `FeatureStoreError` saying what to do when ``error`` is a full disk or a missing permission, else None."""
    number = _system_errno(error)
    if number in _DISK_FULL:
        needed = ""
        if manifest is not None:
            size = manifest.passes * manifest.rows * manifest.feature_dim * np.dtype(manifest.dtype).itemsize
            needed = f" The finished file takes about {size / 1e9:.2g} GB."
        return FeatureStoreError(
            f"{path}: the disk is full (or the disk quota is used up) while writing features "
            f"({os.strerror(number)}: {error}).{needed} Free space in {path.parent}, or point run_dir at a larger "
            "disk, then rerun the cache stage: it resumes after the last complete chunk."
        )
    if number in _NO_PERMISSION:
        return FeatureStoreError(
            f"{path}: not allowed to write here ({os.strerror(number)}: {error}). Make {path.parent} and the files "
            "in it writable by this user, or point run_dir at a directory you can write, then rerun the cache stage."
        )
    return None


@contextlib.contextmanager
def _storage_errors(path: Path, manifest: SplitManifest) -> Iterator[None]:
    """Turn a full disk or a missing permission while writing ``path`` into a `FeatureStoreError`.

    Only file operations run inside: an error of ``compute`` (e.g. an unreadable image) passes as it is.
    """
    try:
        yield
    except FeatureStoreError:
        raise
    except (OSError, RuntimeError) as error:
        problem = _storage_problem(path, error, manifest)
        if problem is None:
            raise
        raise problem from error


def _open(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file; a file that another process is writing is an error, an unreadable one corrupt."""
    try:
        return h5py.File(path, mode, rdcc_nbytes=_CHUNK_CACHE_BYTES)
    except OSError as error:
        problem = _storage_problem(path, error)
        if problem is not None:
            raise problem from error
        if isinstance(error, BlockingIOError) or "unable to lock" in str(error).lower():
            raise FeatureStoreError(
                f"{path}: is locked by another process, probably another cache run writing it ({error}); "
                "wait for that run to finish"
            ) from error
        raise CorruptFeaturesError(
            f"{path}: cannot be opened as HDF5 (truncated or not an HDF5 file: {error}). {_advice(path)}"
        ) from error


def _stored_manifest(handle: h5py.File, path: Path) -> SplitManifest:
    """The manifest stored in ``handle``; checks the format version first."""
    with _corrupt_on_error(path, "reading the attributes"):
        attrs = dict(handle.attrs)
    if "format_version" not in attrs or "manifest" not in attrs:
        raise CorruptFeaturesError(
            f"{path}: attribute 'format_version' or 'manifest' is missing; not a file written by "
            f"sedlib.features.write_split. {_advice(path)}"
        )
    version = attrs["format_version"]
    version = version.item() if isinstance(version, np.generic) else version
    if version != FORMAT_VERSION:
        raise StaleFeaturesError(
            f"{path}: written in feature format version {version!r}, this sedlib reads version {FORMAT_VERSION}. "
            + _advice(path)
        )
    text = attrs["manifest"]
    try:
        stored = json.loads(text)
    except (TypeError, ValueError) as error:
        raise CorruptFeaturesError(
            f"{path}: attribute 'manifest' is not valid JSON ({error}). {_advice(path)}"
        ) from error
    return SplitManifest.from_dict(stored, path)


def _check_layout(handle: h5py.File, path: Path, manifest: SplitManifest) -> None:
    """The datasets exist with the shapes and dtypes of ``manifest``, chunked and checksummed."""
    passes, rows, d = manifest.passes, manifest.rows, manifest.feature_dim
    layout = {
        "features": ((passes, rows, d), np.dtype(manifest.dtype)),
        "labels": ((rows,), np.dtype(np.int64)),
        "index": ((rows,), np.dtype(np.int64)),
    }
    with _corrupt_on_error(path, "reading the dataset headers"):
        for name, (shape, dtype) in layout.items():
            dataset = handle.get(name)
            if not isinstance(dataset, h5py.Dataset):
                raise CorruptFeaturesError(f"{path}: dataset {name!r} is missing. {_advice(path)}")
            if dataset.shape != shape or dataset.dtype != dtype:
                raise CorruptFeaturesError(
                    f"{path}: dataset {name!r} is {dataset.dtype} of shape {dataset.shape}, but the manifest "
                    f"describes {dtype} of shape {shape}. {_advice(path)}"
                )
            if dataset.chunks is None or not dataset.fletcher32:
                raise CorruptFeaturesError(
                    f"{path}: dataset {name!r} has no checksums; not a file written by "
                    f"sedlib.features.write_split. {_advice(path)}"
                )


def _inspect_complete(handle: h5py.File, path: Path) -> tuple[SplitManifest, str]:
    """Manifest and creation time of a finished file; raises if it is not one."""
    manifest = _stored_manifest(handle, path)
    with _corrupt_on_error(path, "reading the attributes"):
        complete = bool(handle.attrs.get("complete", False))
        created = handle.attrs.get("created")
    if not complete or not isinstance(created, str):
        raise CorruptFeaturesError(
            f"{path}: is not complete (its write did not finish: no 'complete' / 'created' attribute). " + _advice(path)
        )
    _check_layout(handle, path, manifest)
    return manifest, created


def _describe_differences(stored: SplitManifest, expected: SplitManifest) -> str:
    return "; ".join(
        f"{name}: file has {old!r}, requested {new!r}" for name, (old, new) in stored.differences(expected).items()
    )


def _check_expected(path: Path, stored: SplitManifest, expected: SplitManifest) -> None:
    if stored != expected:
        raise StaleFeaturesError(
            f"{path}: stale, made with another manifest ({_describe_differences(stored, expected)}). {_advice(path)}"
        )


def _first_bad(finite: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(~finite)[0])


def _scan(handle: h5py.File, path: Path, manifest: SplitManifest) -> None:
    """Read every stored value once: HDF5 checks each chunk's checksum, and features must be finite."""
    with _corrupt_on_error(path, "reading the data (checksum verification)"):
        handle["labels"][...]
        handle["index"][...]
        features = handle["features"]
        storage_rows = features.chunks[1]
        row_bytes = manifest.feature_dim * features.dtype.itemsize
        block = max(storage_rows, _SCAN_BYTES // row_bytes // storage_rows * storage_rows)
        for p in range(manifest.passes):
            for start in range(0, manifest.rows, block):
                values = features[p, start : start + block]
                finite = np.isfinite(values)
                if not finite.all():
                    row = start + _first_bad(finite)[0]
                    raise CorruptFeaturesError(
                        f"{path}: features of pass {p}, row {row} are not finite (NaN or inf). {_advice(path)}"
                    )


def _verify_existing(path: Path, manifest: SplitManifest) -> None:
    """``path`` is complete, made with ``manifest`` and passes every checksum; raises otherwise."""
    with _open(path, "r") as handle:
        stored, _ = _inspect_complete(handle, path)
        _check_expected(path, stored, manifest)
        _scan(handle, path, manifest)


class PassReader:
    """The features of a finished split, read one pass at a time (for training on paper-scale caches).

    ``reader[p]`` reads pass ``p`` as a ``(rows, d)`` tensor of the stored dtype; HDF5 verifies the
    checksum of every chunk read, and non-finite values raise `CorruptFeaturesError`. ``shape`` is
    ``(passes, rows, d)``, so `sedlib.method.train` treats it like an array of passes without loading them all.

    Attributes:
        path: the split's file.
        shape: ``(passes, rows, d)``.
    """

    def __init__(self, path: Path, manifest: SplitManifest) -> None:
        self.path = Path(path)
        self.shape = (manifest.passes, manifest.rows, manifest.feature_dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, pass_index: int) -> torch.Tensor:
        if not 0 <= pass_index < self.shape[0]:
            raise IndexError(f"{self.path} has {self.shape[0]} pass(es), asked for pass {pass_index}")
        with _open(self.path, "r") as handle, _corrupt_on_error(self.path, f"reading pass {pass_index}"):
            features = handle["features"][pass_index]
        finite = np.isfinite(features)
        if not finite.all():
            row, _ = np.argwhere(~finite)[0]
            raise CorruptFeaturesError(
                f"{self.path}: features of pass {pass_index}, row {row} are not finite (NaN or inf). "
                f"{_advice(self.path)}"
            )
        return torch.from_numpy(features)


def read_split(
    path: str | Path, expected: SplitManifest | None = None, verify: bool = True, lazy: bool = False
) -> FeatureSplit:
    """Read a finished split.

    The file must be complete and its datasets must have the shapes of its manifest; HDF5 checks the
    checksum of every chunk read.

    Args:
        path: the split's file, e.g. ``runs/<run>/features/test.h5``.
        expected: if given, the stored manifest must equal it.
        verify: also check that every feature is finite.
        lazy: leave the features on disk: ``features`` is a `PassReader` (``(passes, rows, d)``, one
            pass read per access, checked then), and only labels and index are read now.

    Returns:
        The features (``(passes, rows, d)``, or ``(rows, d)`` for one pass), labels, index and manifest.

    Raises:
        FileNotFoundError: there is no such file (the cache stage has not made it).
        StaleFeaturesError: ``expected`` is given and the file was made with another manifest.
        CorruptFeaturesError: the file is unreadable, truncated, unfinished, disagrees with its
            manifest or fails a checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(_missing_message(path))
    with _open(path, "r") as handle:
        manifest, created = _inspect_complete(handle, path)
        if expected is not None:
            _check_expected(path, manifest, expected)
        with _corrupt_on_error(path, "reading the data (checksum verification)"):
            features = None if lazy else handle["features"][...]
            labels = handle["labels"][...]
            index = handle["index"][...]
    if lazy:
        return FeatureSplit(PassReader(path, manifest), labels, index, manifest, created, path)
    if verify:
        finite = np.isfinite(features)
        if not finite.all():
            p, row, _ = _first_bad(finite)
            raise CorruptFeaturesError(
                f"{path}: features of pass {p}, row {row} are not finite (NaN or inf). {_advice(path)}"
            )
    if manifest.passes == 1:
        features = features[0]
    return FeatureSplit(features, labels, index, manifest, created, path)


def split_status(path: str | Path, expected: SplitManifest, verify: bool = False) -> str:
    """State of a split's cache, for a table: one of `STATES`.

    ``missing``: neither the file nor a partial write exist; ``partial``: only an interrupted write
    exists (whether `write_split` will resume it depends on its manifest); ``complete``: the file is
    finished and made with ``expected``; ``stale``: finished with another manifest or format
    version; ``corrupt``: unreadable, truncated, unfinished or inconsistent.

    Args:
        path: the split's file.
        expected: the manifest the run would write.
        verify: also read all data to check every checksum (a full read; `write_split` and
            `read_split` always do this before using a file).
    """
    path = Path(path)
    if not path.exists():
        return "partial" if partial_path(path).exists() else "missing"
    try:
        with _open(path, "r") as handle:
            stored, _ = _inspect_complete(handle, path)
            if stored != expected:
                return "stale"
            if verify:
                _scan(handle, path, expected)
    except StaleFeaturesError:
        return "stale"
    except CorruptFeaturesError:
        return "corrupt"
    return "complete"
