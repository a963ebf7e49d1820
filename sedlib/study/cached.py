"""The read side of the feature store: the cached splits of a run directory, read back and checked.

Every stage after 01 reads features through this module and never touches images. `load_split` refuses a file
cached with other settings than the run's (`sedlib.data.splits.split_hash`); `training_data` is the rows training
uses: the cached train passes without the held-out validation rows (`sedlib.data.splits.training_rows`), read one
pass at a time; `load_pretrained_head` is the backbone's own head that stage 01 saved.
"""

from __future__ import annotations

import numpy as np
import torch

from sedlib.config import RunConfig
from sedlib.data.splits import plan_splits, split_hash, training_rows
from sedlib.features import StaleFeaturesError, read_split
from sedlib.method.ensemble import HeadEnsemble
from sedlib.rundir.directory import RunDir


def load_pretrained_head(run: RunDir, device: str | torch.device = "cpu") -> HeadEnsemble:
    """The backbone's head that stage 01 saved (`save_pretrained_head`), verified against its recorded hash."""
    run.verified(run.path("pretrained_head_config"))
    return HeadEnsemble.load(run.verified(run.path("pretrained_head")), device=device)


def load_split(config: RunConfig, run: RunDir, name: str, lazy: bool = False):
    """Read a cached split and check it was made with this run's settings.

    ``val`` with ``data.val_rows: 0`` is the test split (the published code validates on ImageNet val).

    Args:
        config: the run.
        run: its directory.
        name: the split, e.g. ``train``, ``test``, ``fog-5``.
        lazy: leave the features on disk and read one pass per access (`sedlib.features.PassReader`).

    Returns:
        A `sedlib.features.FeatureSplit`.

    Raises:
        FileNotFoundError: the split was never cached (run notebooks/01_cache).
        sedlib.features.StaleFeaturesError: it was cached with other settings.
    """
    if name == "val" and config.data.val_rows == 0:
        name = "test"
    plans = {plan.name: plan for plan in plan_splits(config)}
    if name not in plans:
        raise KeyError(f"{config.source}: no split {name!r} in this run; its splits are {list(plans)}")
    path = run.path("features", name)
    split = read_split(path, lazy=lazy)
    expected = split_hash(config, plans[name])
    if split.manifest.params_hash != expected:
        raise StaleFeaturesError(
            f"{path} was cached with other settings (params hash {split.manifest.params_hash}, this run's is "
            f"{expected}); rerun notebooks/01_cache (python -m sedlib.run {config.source})"
        )
    return split


class SelectedRows:
    """Some rows of every pass of a lazily read train split, one pass in memory at a time.

    Args:
        passes: ``(P, N, d)``, indexable by pass (a `sedlib.features.PassReader`).
        rows: ``(n,)`` sorted positions to keep.
    """

    def __init__(self, passes, rows: np.ndarray) -> None:
        self.passes = passes
        self.rows = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        self.shape = (passes.shape[0], len(rows), passes.shape[2])
        self.everything = len(rows) == passes.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, pass_index: int) -> torch.Tensor:
        features = self.passes[pass_index]
        return features if self.everything else features.index_select(0, self.rows)


def training_data(config: RunConfig, run: RunDir):
    """The rows training uses: the cached train split without the held-out val rows.

    Returns:
        ``(train, features, labels, val)``: the lazily read train split, its kept rows as
        `SelectedRows` ``(P, n, d)``, their labels ``(n,)`` and the val split (the test split when
        ``data.val_rows`` is 0).
    """
    train, val = load_split(config, run, "train", lazy=True), load_split(config, run, "val")
    keep = training_rows(train.index, val.index if config.data.val_held_out else None)
    return train, SelectedRows(train.features, keep), train.labels[keep], val
