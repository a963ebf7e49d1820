"""The HDF5 feature store's write side: resumable, atomic writes of a split, and joining shards.

`write_split` writes to ``<file>.partial`` and records its progress after every chunk; an interrupted
write resumes after its last finished chunk, and only a finished, re-read file is moved onto the final
name, so the final name only ever holds complete files. `join_splits` writes a split from finished
files of consecutive row ranges of it (the shards several processes wrote).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from sedlib import fsync
from sedlib.errors import ConfigError, MissingFileError
from sedlib.features.store import (  # the store's checks, shared by reading and writing
    _CHUNK_BYTES,
    _CHUNK_CACHE_BYTES,
    _VECTOR_CHUNK,
    FORMAT_VERSION,
    CorruptFeaturesError,
    FeatureStoreError,
    SplitManifest,
    StaleFeaturesError,
    _check_expected,
    _check_layout,
    _corrupt_on_error,
    _describe_differences,
    _first_bad,
    _inspect_complete,
    _open,
    _scan,
    _storage_errors,
    _stored_manifest,
    _verify_existing,
    logger,
    partial_path,
)
from sedlib.progress import tqdm

Compute = Callable[[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


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
        largest = float(np.abs(features).max())
        raise ConfigError(
            f"{where}: the features of row {start + _first_bad(finite)[0]} overflow {manifest.dtype} (largest |x| "
            f"{largest:.4g}; float16 holds up to 65504): set cache.dtype: float32 in the params"
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
    with tqdm(total=total, initial=int(done.sum()), desc=manifest.split, unit="image", disable=not progress) as bar:
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
        fsync(partial)
        os.replace(partial, path)
        fsync(path.parent, directory=True)
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
                raise MissingFileError(f"{part}: this part of {path} is missing; rerun the cache stage to make it")
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
