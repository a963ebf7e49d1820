"""The four training runs of the published SED code, as `HeadConfig` + `TrainConfig`.

Source: ``configs/training/*.yaml`` of ``AlexanderRubinstein/diverse-universe-public`` (branch
``share_code``), audited in the project's reference notes (original code §4.4). The values are
those the code *effectively* uses:

* ``50_models`` never computes the repulsion (no unlabelled loader and ``use_always_labeled:
  false``), so its effective ``kappa`` is 0, although the file says ``manual_lambda: 0.0002``.
  Its NaN-checking SGD skipped steps with NaN gradients; `sedlib.method.train` stops with an error instead.
* ``ood_gen`` multiplies the repulsion by ``manual_lambda: 0.0``.
* ``ood_det_sem`` has no ``adamW:`` block, so AdamW's default weight decay 0.01 applies.

All four: DeiT-3-B heads (768 -> 3072 -> 768, 1000 classes), 4 augmentation passes, 11 epochs of
which the first is frozen, seed 42, ``iid`` pairs (``random_select: 2``).

The numbers those runs published (``result_tables/filled_ood_{gen,det}_df.csv``, original code §7)
are in `PUBLISHED_RESULTS`, a long-format CSV described in ``params/reference/README.md``;
`published_results` reads and checks it and `compare_with_published` puts our numbers next to
them.

Example:
    >>> table = published_results()
    >>> float(table.query("run == '50_models' and metric == 'ensemble' and split == 'test'")["value"].iloc[0])
    83.638
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sedlib import PROJECT_ROOT
from sedlib.config.training import TrainConfig
from sedlib.errors import MissingFileError
from sedlib.method.ensemble import HeadConfig

IMAGENET_TRAIN_ROWS = 1_281_167
AUGMENTATION_PASSES = 4


@dataclass(frozen=True)
class PublishedRun:
    """One published training run."""

    name: str
    heads: HeadConfig
    train: TrainConfig

    @property
    def steps_per_epoch(self) -> int:
        return -(-IMAGENET_TRAIN_ROWS // self.train.batch_size)

    @property
    def pair_steps(self) -> int:
        """Pair-steps of the updating epochs (one pair per step under the published ``iid`` schedule)."""
        return self.steps_per_epoch * (self.train.epochs - int(self.train.freeze_first_epoch))


def _adamw(**overrides) -> TrainConfig:
    defaults = dict(
        schedule="iid", epochs=11, freeze_first_epoch=True, lam=0.5, optimizer="adamw", lr=1e-3,
        weight_decay=0.1, lr_schedule="cosine", cosine_t_max=15, seed=42,
    )  # fmt: skip
    return TrainConfig(**{**defaults, **overrides})


PUBLISHED: dict[str, PublishedRun] = {
    run.name: run
    for run in (
        PublishedRun(
            "50_models",
            HeadConfig(num_members=50),
            TrainConfig(
                schedule="iid",
                batch_size=16,
                epochs=11,
                freeze_first_epoch=True,
                lam=0.5,
                kappa=0.0,
                optimizer="sgd",
                lr=1e-3,
                momentum=0.9,
                weight_decay=1e-4,
                lr_schedule="constant",
                seed=42,
            ),  # fmt: skip
        ),
        PublishedRun("ood_gen", HeadConfig(num_members=5), _adamw(batch_size=32, kappa=0.0, label_smoothing=0.5)),
        PublishedRun("ood_det_cov", HeadConfig(num_members=5), _adamw(batch_size=32, kappa=5.0, label_smoothing=0.5)),
        PublishedRun(
            "ood_det_sem", HeadConfig(num_members=5), _adamw(batch_size=256, kappa=0.5, lr=1e-4, weight_decay=0.01)
        ),
    )
}


#: The published SED numbers (original code §7.1 / §7.2) in long format; see its README.
PUBLISHED_RESULTS = PROJECT_ROOT / "params/reference/sed_published.csv"

RESULT_COLUMNS = ("table", "run", "metric", "split", "value", "unit")
TABLES = ("ood_gen", "ood_det")
#: unit -> the range its values must lie in.
UNITS = {"%": (0.0, 100.0), "auroc": (0.0, 1.0), "count": (0.0, math.inf)}
COMPARISON_COLUMNS = ("run", "metric", "split", "published", "ours", "difference")


def _malformed(path: Path, line: int, column: str, problem: str) -> ValueError:
    return ValueError(
        f"{path}: line {line}, column {column!r}: {problem}. The file is typed in from the audit "
        "(params/reference/README.md); fix that line"
    )


def published_results(path: str | Path = PUBLISHED_RESULTS) -> pd.DataFrame:
    """The published SED numbers, checked.

    Args:
        path: the long-format CSV (default `PUBLISHED_RESULTS`).

    Returns:
        One row per published number, in the file's order: ``table`` (``ood_gen`` or ``ood_det``),
        ``run`` (a key of `PUBLISHED`), ``metric``, ``split``, ``value`` (float) and ``unit``
        (``%``, ``auroc`` in [0, 1] or ``count``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a missing column, an unknown table, run or unit, a value that is not a finite
            number in its unit's range, or a repeated ``(table, run, metric, split)``; the message
            names the file, the line and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no published-results file; it ships with the project (params/reference/)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as error:
        raise ValueError(f"{path}: not a readable CSV ({error}); expected columns {list(RESULT_COLUMNS)}") from error
    missing = [column for column in RESULT_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: line 1 (header), column(s) {missing} missing; expected columns {list(RESULT_COLUMNS)}"
        )
    frame = frame[list(RESULT_COLUMNS)].copy()
    values = []
    for row, record in enumerate(frame.itertuples(index=False)):
        line = row + 2  # 1-based, after the header
        if record.table not in TABLES:
            raise _malformed(path, line, "table", f"{record.table!r} is not one of {list(TABLES)}")
        if record.run not in PUBLISHED:
            raise _malformed(path, line, "run", f"{record.run!r} is not a published run {list(PUBLISHED)}")
        for column in ("metric", "split"):
            if not getattr(record, column):
                raise _malformed(path, line, column, "empty")
        if record.unit not in UNITS:
            raise _malformed(path, line, "unit", f"{record.unit!r} is not one of {list(UNITS)}")
        try:
            value = float(record.value)
        except ValueError:
            raise _malformed(path, line, "value", f"{record.value!r} is not a number") from None
        low, high = UNITS[record.unit]
        if not math.isfinite(value) or not low <= value <= high:
            raise _malformed(path, line, "value", f"{record.value!r} is not a finite number in [{low}, {high}]")
        values.append(value)
    frame["value"] = pd.Series(values, index=frame.index, dtype=float)
    repeated = frame.duplicated(["table", "run", "metric", "split"])
    if repeated.any():
        row = int(repeated.to_numpy().argmax())
        raise _malformed(path, row + 2, "split", "repeats the (table, run, metric, split) of an earlier line")
    return frame


def compare_with_published(ours: pd.DataFrame, table: str, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our numbers next to the published ones, for every published number of one table.

    Args:
        ours: long format with columns ``run``, ``metric``, ``split``, ``value``, in the units of
            the published file (accuracy in %, AUROC in [0, 1]), for this one table (``pds`` is a
            mean score in ``ood_gen`` and an AUROC in ``ood_det``); rows the table does not publish
            are ignored.
        table: ``ood_gen`` or ``ood_det``.
        published: the published numbers (`published_results` when omitted).

    Returns:
        Columns ``run``, ``metric``, ``split``, ``published``, ``ours`` and ``difference`` (ours -
        published), one row per published number of ``table`` in the file's order; ``ours`` and
        ``difference`` are NaN where we have no value.

    Raises:
        ValueError: unknown ``table``, missing columns in ``ours``, or two values of ours for the
            same ``(run, metric, split)``.

    Example:
        >>> ours = pd.DataFrame({"run": ["ood_det_sem"], "metric": ["pds"], "split": ["inaturalist"],
        ...                      "value": [0.95]})
        >>> row = compare_with_published(ours, "ood_det").dropna().iloc[0]
        >>> float(row["published"]), round(float(row["difference"]), 4)
        (0.9766, -0.0266)
    """
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose one of {list(TABLES)}")
    keys = ["run", "metric", "split"]
    missing = [column for column in (*keys, "value") if column not in ours.columns]
    if missing:
        raise ValueError(f"our results lack column(s) {missing}; expected long format with columns {keys + ['value']}")
    repeated = ours.duplicated(keys)
    if repeated.any():
        first = ours.loc[repeated, keys].iloc[0].tolist()
        raise ValueError(f"our results hold several values for (run, metric, split) = {first}; keep one")
    published = published_results() if published is None else published
    reference = published.loc[published["table"] == table, keys + ["value"]].rename(columns={"value": "published"})
    mine = ours[keys + ["value"]].rename(columns={"value": "ours"})
    mine = mine.astype({"run": str, "metric": str, "split": str, "ours": float})
    merged = reference.merge(mine, on=keys, how="left", validate="one_to_one")
    merged["difference"] = merged["ours"] - merged["published"]
    return merged[list(COMPARISON_COLUMNS)].reset_index(drop=True)
