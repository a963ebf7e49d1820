"""HDF5 feature store: the cache stage's output, one file per split, written atomically and resumably.

The cache stage (``notebooks/01_cache``) runs the frozen backbone over each image split once; every
later stage reads the features from here and never touches images. One split is one HDF5 file,
e.g. ``runs/<run>/features/train.h5``, holding

- ``features``: ``(passes, rows, d)`` float32 or float16; P augmented passes over the same rows for
  the train split, P = 1 for evaluation splits; chunked along rows;
- ``labels``: ``(rows,)`` int64 class labels (negative where a set has none);
- ``index``: ``(rows,)`` int64, each row's position in its source set, the same in every pass;
- attributes ``manifest`` (JSON of `SplitManifest`: everything that determines the content),
  ``format_version``, ``rows_done`` (progress of each pass) and, once finished, ``created`` (ISO
  8601, UTC; not part of the identity) and ``complete = True``.

Every dataset carries Fletcher-32 checksums, so a damaged chunk fails on read instead of returning
wrong numbers.

Writing (`write_split`) goes to ``<file>.partial`` and records its progress after every chunk; an
interrupted write resumes after its last finished chunk, and only a finished, re-read file is moved
onto the final name (``os.replace``), so the final name only ever holds complete files. A file
made with another manifest is *stale* and a damaged or unfinished one *corrupt*: both are refused
(`StaleFeaturesError`, `CorruptFeaturesError`) unless a rebuild is asked for, never silently reused
or overwritten. A partial file made with another manifest is discarded, and the log says so (logger
``sedlib.features``). Concurrent writers of one split are kept apart by HDF5's file locking. A
full disk or a missing write permission stops the write with a `FeatureStoreError` that names the
file and says what to do; the partial file keeps every chunk finished before it.

`join_splits` writes a split from finished files of consecutive row ranges of it (the shards that
several processes wrote, `sedlib.pipeline.distributed`), through `write_split`: the joined file is the file
one process would have written, with the same checks.

Example:
    >>> import tempfile
    >>> manifest = SplitManifest(split="toy", source="np.arange(5)", backbone="none", transform="none",
    ...                          passes=2, rows=5, feature_dim=3, dtype="float32", params_hash="0")
    >>> def compute(pass_index, start, stop):
    ...     rows = np.arange(start, stop)
    ...     return pass_index + rows[:, None] * np.ones(3), rows % 2, rows
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_split(Path(tmp) / "toy.h5", manifest, compute, chunk_rows=2, progress=False)
    ...     split = read_split(path, expected=manifest)
    ...     status = split_status(path, manifest)
    >>> split.features.shape, split.labels.tolist(), status
    ((2, 5, 3), [0, 1, 0, 1, 0], 'complete')
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import torch

from sedlib.errors import SedlibError
from sedlib.progress import tqdm

__all__ = [
    "FORMAT_VERSION",
    "CorruptFeaturesError",
    "FeatureSplit",
    "FeatureStoreError",
    "SplitManifest",
    "StaleFeaturesError",
    "join_splits",
    "read_split",
    "reusable",
    "split_status",
    "write_split",
]

FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
PARTIAL_SUFFIX = ".partial"
STATES = ("missing", "partial", "complete", "stale", "corrupt")

_CHUNK_BYTES = 1 << 20  # storage chunk of `features`: about 1 MiB of rows
_VECTOR_CHUNK = 1 << 16  # storage chunk of `labels` / `index`, in rows
_SCAN_BYTES = 64 << 20  # rows read at once when verifying a whole file
_CHUNK_CACHE_BYTES = 16 << 20

logger = logging.getLogger("sedlib.features")

Compute = Callable[[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


class FeatureStoreError(SedlibError, RuntimeError):
    """A feature file cannot be used as it is."""


class StaleFeaturesError(FeatureStoreError):
    """The file was made with another manifest (other images, backbone, transform or parameters)."""


class CorruptFeaturesError(FeatureStoreError):
    """The file is unreadable, truncated, unfinished, inconsistent with its manifest or fails a checksum."""


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
    ``(passes, rows, d)``, so `sedlib.train` treats it like an array of passes without loading them all.

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
        raise FileNotFoundError(_missing_message(path))
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


def _create_partial(partial: Path, manifest: SplitManifest) -> h5py.File:
    passes, rows, d = manifest.passes, manifest.rows, manifest.feature_dim
    storage_rows = max(1, min(rows, _CHUNK_BYTES // (d * np.dtype(manifest.dtype).itemsize)))
    handle = h5py.File(partial, "w-", rdcc_nbytes=_CHUNK_CACHE_BYTES)
    try:
        handle.create_dataset(
            "features", shape=(passes, rows, d), dtype=manifest.dtype, chunks=(1, storage_rows, d), fletcher32=True
        )
        for name in ("labels", "index"):
            handle.create_dataset(
                name, shape=(rows,), dtype=np.int64, chunks=(min(rows, _VECTOR_CHUNK),), fletcher32=True
            )
        handle.attrs["format_version"] = FORMAT_VERSION
        handle.attrs["manifest"] = manifest.to_json()
        handle.attrs["rows_done"] = np.zeros(passes, dtype=np.int64)
        handle.attrs["complete"] = False
        handle.flush()
    except BaseException:
        handle.close()
        raise
    return handle


def _rows_done(handle: h5py.File, partial: Path, manifest: SplitManifest) -> np.ndarray:
    """Progress of each pass, checked: passes fill in order, each at most ``rows``."""
    with _corrupt_on_error(partial, "reading the progress"):
        done = np.asarray(handle.attrs["rows_done"])
    if done.shape != (manifest.passes,) or not np.issubdtype(done.dtype, np.integer):
        raise CorruptFeaturesError(f"{partial}: attribute 'rows_done' is {done!r}, not {manifest.passes} integers")
    if (
        (done < 0).any()
        or (done > manifest.rows).any()
        or any(done[p] > 0 and done[p - 1] != manifest.rows for p in range(1, manifest.passes))
    ):
        raise CorruptFeaturesError(f"{partial}: attribute 'rows_done' = {done.tolist()} is not a valid progress")
    return done.astype(np.int64)


def _open_partial(partial: Path, manifest: SplitManifest) -> h5py.File:
    """Reopen an interrupted write of ``manifest`` to resume it, or start a new one.

    A partial file that cannot be read or was made with another manifest is deleted (and logged).
    """
    if partial.exists():
        try:
            handle = _open(partial, "r+")
        except CorruptFeaturesError as error:
            reason = str(error)
        else:
            try:
                stored = _stored_manifest(handle, partial)
                if stored != manifest:
                    raise StaleFeaturesError(f"made with another manifest ({_describe_differences(stored, manifest)})")
                _check_layout(handle, partial, manifest)
                done = _rows_done(handle, partial, manifest)
            except FeatureStoreError as error:
                reason = str(error)
                with contextlib.suppress(OSError, RuntimeError):
                    handle.close()
            else:
                logger.info(
                    "%s: resuming an interrupted write (%d of %d rows done)",
                    partial,
                    int(done.sum()),
                    manifest.passes * manifest.rows,
                )
                return handle
        logger.warning("%s: discarding this interrupted write and starting over: %s", partial, reason)
        partial.unlink()
    return _create_partial(partial, manifest)


def _as_array(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _checked(result, manifest: SplitManifest, p: int, start: int, stop: int) -> tuple[np.ndarray, ...]:
    """What ``compute(p, start, stop)`` returned, checked and converted to the stored dtypes."""
    where = f"split {manifest.split!r}, pass {p}, rows [{start}, {stop})"
    if not isinstance(result, tuple | list) or len(result) != 3:
        raise ValueError(f"compute for {where} returned {type(result).__name__}; expected (features, labels, index)")
    features, labels, index = (_as_array(value) for value in result)
    n, d = stop - start, manifest.feature_dim
    if features.shape != (n, d) or not (
        np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)
    ):
        raise ValueError(
            f"compute for {where} returned features of shape {features.shape} and dtype {features.dtype}; "
            f"expected real numbers of shape ({n}, {d}) (rows, manifest.feature_dim)"
        )
    finite = np.isfinite(features)
    if not finite.all():
        raise ValueError(
            f"compute for {where} returned non-finite features (NaN or inf) in row {start + _first_bad(finite)[0]}"
        )
    with np.errstate(over="ignore"):
        stored = features.astype(manifest.dtype)
    finite = np.isfinite(stored)
    if not finite.all():
        raise ValueError(
            f"compute for {where}: features in row {start + _first_bad(finite)[0]} overflow {manifest.dtype} "
            "(|x| > 65504 for float16); store float32"
        )
    for name, values in (("labels", labels), ("index", index)):
        if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(
                f"compute for {where} returned {name} of shape {values.shape} and dtype {values.dtype}; "
                f"expected integers of shape ({n},)"
            )
    return stored, labels.astype(np.int64), index.astype(np.int64)


def _check_same_rows(handle: h5py.File, manifest: SplitManifest, p: int, start: int, stop: int, **new) -> None:
    """Pass ``p`` must describe the same rows as pass 0 (stored labels and index)."""
    for name, values in new.items():
        first = handle[name][start:stop]
        differ = np.flatnonzero(first != values)
        if differ.size:
            row = start + int(differ[0])
            raise ValueError(
                f"compute for split {manifest.split!r}, pass {p}, rows [{start}, {stop}) returned {name} that differ "
                f"from pass 0 (row {row}: {int(values[differ[0]])} vs {int(first[differ[0]])}); every pass must "
                "cover the same rows in the same order"
            )


def _fill(
    handle: h5py.File, partial: Path, manifest: SplitManifest, compute: Compute, chunk_rows: int, progress: bool
) -> None:
    """Compute and store every chunk not yet done, recording the progress after each."""
    done = _rows_done(handle, partial, manifest)
    features, labels, index = handle["features"], handle["labels"], handle["index"]
    total = manifest.passes * manifest.rows
    with tqdm(total=total, initial=int(done.sum()), desc=manifest.split, unit="row", disable=not progress) as bar:
        for p in range(manifest.passes):
            for start in range(int(done[p]), manifest.rows, chunk_rows):
                stop = min(start + chunk_rows, manifest.rows)
                values, chunk_labels, chunk_index = _checked(compute(p, start, stop), manifest, p, start, stop)
                if p > 0:
                    _check_same_rows(handle, manifest, p, start, stop, labels=chunk_labels, index=chunk_index)
                with _storage_errors(partial, manifest):
                    if p == 0:
                        labels[start:stop] = chunk_labels
                        index[start:stop] = chunk_index
                    features[p, start:stop] = values
                    handle.flush()  # data first, then the progress that vouches for it
                    done[p] = stop
                    handle.attrs.modify("rows_done", done)
                    handle.flush()
                bar.update(stop - start)


def _fsync(path: Path, directory: bool = False) -> None:
    if directory and os.name != "posix":
        return  # directories cannot be opened (or synced) on Windows
    fd = os.open(path, os.O_RDONLY if directory else os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reusable(path: str | Path, manifest: SplitManifest, rebuild: bool = False) -> bool:
    """Whether ``path`` already holds ``manifest``'s features: what `write_split` checks before writing.

    Args:
        path: the split's file.
        manifest: what it must hold.
        rebuild: a stale or corrupt file is to be rebuilt (logged) instead of refused.

    Returns:
        True when the file is complete, made with ``manifest`` and passes every checksum (it is read in
        full); False when it is missing, or stale or corrupt and ``rebuild`` is set.

    Raises:
        StaleFeaturesError: the file holds another manifest's features and ``rebuild`` is false.
        CorruptFeaturesError: it is damaged or unfinished and ``rebuild`` is false.
    """
    path = Path(path)
    if not path.exists():
        return False
    try:
        _verify_existing(path, manifest)
    except (StaleFeaturesError, CorruptFeaturesError) as error:
        if not rebuild:
            raise
        logger.warning("%s: rebuilding (%s)", path, error)
        return False
    logger.info("%s: reusing the complete features (same manifest, checksums verified)", path)
    return True


def write_split(
    path: str | Path,
    manifest: SplitManifest,
    compute: Compute,
    chunk_rows: int = 2048,
    progress: bool = True,
    rebuild: bool = False,
) -> Path:
    """Compute a split's features chunk by chunk into ``path``; resume, reuse or refuse what is there.

    - ``path`` exists, is complete, made with ``manifest`` and passes its checksums: it is reused
      and ``compute`` is not called (`reusable`).
    - ``path`` exists but is stale (another manifest) or corrupt: `StaleFeaturesError` /
      `CorruptFeaturesError`, unless ``rebuild``; then it is rebuilt and stays in place until the
      new file replaces it.
    - ``<path>.partial`` exists with the same manifest: the write resumes after its last finished
      chunk. With another manifest, or unreadable, it is deleted (logged) and the write starts over.

    The finished partial file is read back in full (checksums, finite features), marked complete,
    synced to disk and renamed onto ``path``.

    Args:
        path: the split's file, e.g. ``runs/<run>/features/train.h5``; missing folders are created.
        manifest: what the file will hold.
        compute: ``compute(pass_index, start, stop) -> (features, labels, index)`` for rows
            ``[start, stop)`` of one pass: features ``(n, d)`` real numbers, labels ``(n,)`` and
            index ``(n,)`` integers, n = stop - start, d = ``manifest.feature_dim``. Every pass must
            return the labels and index of pass 0. Passes are computed in order.
        chunk_rows: rows per call of ``compute`` (and between two progress records).
        progress: show a tqdm bar over all rows of all passes.
        rebuild: replace a stale or corrupt file instead of raising (a file that verifies is still
            reused; delete it to force a recompute).

    Returns:
        ``path``.

    Raises:
        StaleFeaturesError: ``path`` holds another manifest's features and ``rebuild`` is false.
        CorruptFeaturesError: ``path`` is damaged or unfinished and ``rebuild`` is false.
        FeatureStoreError: another process holds the partial file open, the disk is full or the
            file may not be written (the message says what to do).
        ValueError: ``compute`` returned wrong shapes or types, non-finite values, values that
            overflow float16, or labels / index that differ from pass 0; the message names the
            split, the pass and the rows.
    """
    path = Path(path)
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    if reusable(path, manifest, rebuild):
        return path
    partial = partial_path(path)
    with _storage_errors(partial, manifest):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = _open_partial(partial, manifest)
    try:
        _fill(handle, partial, manifest, compute, chunk_rows, progress)
        _scan(handle, partial, manifest)
        with _storage_errors(partial, manifest):
            handle.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
            handle.attrs["complete"] = True
            handle.flush()
    finally:
        with _storage_errors(partial, manifest):  # closing flushes too, so it can find the disk full
            handle.close()
    with _storage_errors(path, manifest):
        _fsync(partial)
        os.replace(partial, path)
        _fsync(path.parent, directory=True)
    logger.info(
        "%s: wrote %d pass(es) x %d rows x %d features", path, manifest.passes, manifest.rows, manifest.feature_dim
    )
    return path


def join_splits(
    path: str | Path,
    manifest: SplitManifest,
    parts: Sequence[tuple[str | Path, SplitManifest]],
    chunk_rows: int = 2048,
    progress: bool = True,
    rebuild: bool = False,
) -> Path:
    """Write the split ``manifest`` describes from finished files of consecutive row ranges of it.

    The parts (e.g. the shards several processes wrote) hold, in order, the split's rows: each has
    the split's passes, feature width and dtype, and their rows add up to ``manifest.rows``. Their
    stored values are copied through `write_split` (resumable, verified, renamed when complete), so
    the joined file holds exactly what one process writing the split in ``chunk_rows`` chunks would
    store; only ``created`` differs.

    Args:
        path: the split's file.
        manifest: what it will hold.
        parts: ``(file, manifest)`` of each part, in row order; every file must be complete and made
            with its manifest.
        chunk_rows: rows copied per chunk.
        progress: show a tqdm bar.
        rebuild: replace a stale or corrupt file at ``path`` (as `write_split`).

    Returns:
        ``path``.

    Raises:
        ValueError: the parts do not cover the split's rows with its passes, width and dtype.
        FileNotFoundError: a part is missing.
        StaleFeaturesError, CorruptFeaturesError: a part is unfinished, made with another manifest,
            truncated or fails a checksum (the message names the part), or ``path`` is stale or
            corrupt and ``rebuild`` is false.
    """
    parts = [(Path(part), part_manifest) for part, part_manifest in parts]
    shapes = {(m.passes, m.feature_dim, m.dtype) for _, m in parts}
    if shapes != {(manifest.passes, manifest.feature_dim, manifest.dtype)} or sum(m.rows for _, m in parts) != (
        manifest.rows
    ):
        raise ValueError(
            f"{path}: the parts {[str(part) for part, _ in parts]} hold {sum(m.rows for _, m in parts)} rows of "
            f"(passes, feature_dim, dtype) {sorted(shapes)}, not the split's {manifest.rows} rows of "
            f"{(manifest.passes, manifest.feature_dim, manifest.dtype)}"
        )
    offsets = np.cumsum([0] + [m.rows for _, m in parts])
    with contextlib.ExitStack() as stack:
        handles = []
        for part, part_manifest in parts:
            if not part.is_file():
                raise FileNotFoundError(f"{part}: this part of {path} is missing; rerun the cache stage to make it")
            handle = stack.enter_context(_open(part, "r"))
            stored, _ = _inspect_complete(handle, part)
            _check_expected(part, stored, part_manifest)
            handles.append(handle)

        def compute(pass_index: int, start: int, stop: int) -> tuple[np.ndarray, ...]:
            pieces = []
            for (part, _), handle, low, high in zip(parts, handles, offsets[:-1], offsets[1:], strict=True):
                first, last = max(start, low) - low, min(stop, high) - low
                if first < last:
                    with _corrupt_on_error(
                        part, f"reading pass {pass_index}, rows [{first}, {last}) (checksum verification)"
                    ):
                        pieces.append(
                            (
                                handle["features"][pass_index, first:last],
                                handle["labels"][first:last],
                                handle["index"][first:last],
                            )
                        )
            return tuple(np.concatenate(column) for column in zip(*pieces, strict=True))

        return write_split(path, manifest, compute, chunk_rows=chunk_rows, progress=progress, rebuild=rebuild)
