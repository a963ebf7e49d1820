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
several processes wrote, `sedlib.study.distributed`), through `write_split`: the joined file is the file
one process would have written, with the same checks.

The read side is `sedlib.features.store`, the write side `sedlib.features.writing`; both are imported here.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
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

from sedlib.features.store import (
    DTYPES,
    FORMAT_VERSION,
    PARTIAL_SUFFIX,
    STATES,
    CorruptFeaturesError,
    FeatureSplit,
    FeatureStoreError,
    PassReader,
    SplitManifest,
    StaleFeaturesError,
    partial_path,
    read_split,
    split_status,
)
from sedlib.features.writing import Compute, join_splits, reusable, write_split

__all__ = [
    "DTYPES",
    "FORMAT_VERSION",
    "PARTIAL_SUFFIX",
    "STATES",
    "Compute",
    "CorruptFeaturesError",
    "FeatureSplit",
    "FeatureStoreError",
    "PassReader",
    "SplitManifest",
    "StaleFeaturesError",
    "join_splits",
    "partial_path",
    "read_split",
    "reusable",
    "split_status",
    "write_split",
]
