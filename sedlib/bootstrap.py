"""Paired bootstrap intervals for differences between models evaluated on the same rows, and verdicts.

Two models compared on a split saw the same rows in the same order, so one resample of the rows
(`resample_indices`) serves both: the difference is recomputed on the same resampled rows for each
model, which cancels the variation the two share (which rows are easy) and keeps what differs. A
resample is a row of an index matrix of shape ``(B, N)``; accuracy differences are means of
per-row values over it (`resampled_means`) and AUROC is recomputed per resample from the resampled
ID and OOD scores (`resampled_auroc`), all of it vectorised over the ``B`` resamples.

With several training seeds the difference is taken per seed (each seed's models on the same
resample) and averaged; `Difference` keeps both uncertainties, the bootstrap's percentile interval
of that mean and the standard deviation over seeds, and `verdict` calls a difference clear of zero
only when both are.

Example:
    >>> generator = np.random.default_rng(0)
    >>> rows = resample_indices(4, 3, generator)
    >>> rows.shape
    (3, 4)
    >>> correct = np.array([1.0, 1.0, 0.0, 1.0])
    >>> verdict(difference(np.array([0.0]), resampled_means(correct - correct, rows)[None]))
    'inconclusive'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
"""The coverage of the percentile intervals."""

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)

_CELLS_PER_CHUNK = 1 << 22  # resamples x distinct scores held at once by `resampled_auroc` (32 MiB of int64)


def resample_indices(rows: int, resamples: int, generator: np.random.Generator) -> np.ndarray:
    """Row indices of ``resamples`` bootstrap resamples of ``rows`` rows, drawn with replacement.

    Args:
        rows: N, the number of rows resampled.
        resamples: B.
        generator: the source of randomness (seed it for reproducible intervals).

    Returns:
        ``(B, N)`` integer indices into the rows.
    """
    if rows < 1 or resamples < 1:
        raise ValueError(f"need at least one row and one resample, got {rows} rows and {resamples} resamples")
    return generator.integers(0, rows, size=(resamples, rows))


def resampled_means(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The mean of per-row values over each resample's rows.

    Args:
        values: ``(N,)`` one value per row (e.g. 1.0 where a prediction is right, or the difference
            of two models' per-row values).
        indices: ``(B, N')`` rows of each resample (`resample_indices`).

    Returns:
        ``(B,)`` the mean of ``values`` over each resample.
    """
    return np.take(np.asarray(values, dtype=np.float64), indices).mean(axis=1)


def resampled_auroc(
    id_scores: np.ndarray,
    ood_scores: np.ndarray,
    id_indices: np.ndarray,
    ood_indices: np.ndarray,
    higher_is_ood: bool = True,
) -> np.ndarray:
    """AUROC of separating OOD (positive) from ID rows on each resample, ties counting one half.

    The AUROC of a resample is the Mann-Whitney statistic: the fraction of (OOD, ID) pairs of
    resampled rows in which the OOD row scores higher, plus half the ties. Each score is replaced by
    its rank among the distinct scores once; a resample then only counts its ID rows per rank
    (``(B, U)`` counts, U distinct scores), so nothing is sorted per resample.

    Args:
        id_scores: ``(N_id,)`` the score of every ID row.
        ood_scores: ``(N_ood,)`` the score of every OOD row.
        id_indices: ``(B, N_id)`` the ID rows of each resample.
        ood_indices: ``(B, N_ood)`` the OOD rows of each resample.
        higher_is_ood: the score's orientation.

    Returns:
        ``(B,)`` the AUROC of each resample (`sedlib.metrics.auroc` on the resampled rows).
    """
    scores = np.concatenate([np.asarray(id_scores, dtype=np.float64), np.asarray(ood_scores, dtype=np.float64)])
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf; check the logits they were computed from")
    if id_indices.shape[0] != ood_indices.shape[0]:
        raise ValueError(f"ID and OOD indices need the same resamples, got {id_indices.shape} and {ood_indices.shape}")
    distinct, rank = np.unique(scores if higher_is_ood else -scores, return_inverse=True)
    id_rank, ood_rank = rank[: len(id_scores)], rank[len(id_scores) :]
    width = len(distinct)
    result = np.empty(id_indices.shape[0])
    step = max(1, _CELLS_PER_CHUNK // width)
    for start in range(0, id_indices.shape[0], step):
        chunk = slice(start, start + step)
        resampled_id = id_rank[id_indices[chunk]]  # (b, N_id) ranks
        offsets = np.arange(resampled_id.shape[0])[:, None] * width
        counts = np.bincount((resampled_id + offsets).ravel(), minlength=offsets.size * width)
        counts = counts.reshape(-1, width)  # (b, U): resampled ID rows per distinct score
        below = np.cumsum(counts, axis=1) - counts  # ID rows scoring strictly lower
        credit = below + 0.5 * counts
        result[chunk] = np.take_along_axis(credit, ood_rank[ood_indices[chunk]], axis=1).sum(axis=1)
    return result / (id_indices.shape[1] * ood_indices.shape[1])


@dataclass(frozen=True)
class Difference:
    """A difference between two models, oriented so that a positive value supports the claim.

    Attributes:
        estimate: the difference on all rows, averaged over seeds.
        low: lower end of the bootstrap's percentile interval (`LEVEL`) of that mean.
        high: upper end.
        seed_std: standard deviation of the per-seed differences (NaN with one seed).
        seeds: how many seeds were averaged.
    """

    estimate: float
    low: float
    high: float
    seed_std: float
    seeds: int


def difference(observed: np.ndarray, resampled: np.ndarray, level: float = LEVEL) -> Difference:
    """Summarise a difference measured per seed on all rows and on every resample.

    Args:
        observed: ``(S,)`` the difference of each seed on all rows.
        resampled: ``(S, B)`` the difference of each seed on each resample; resample b must be the
            same rows for every seed and both models.
        level: the interval's coverage.

    Returns:
        The `Difference`: the mean over seeds, the percentile interval of the mean over seeds of
        the resampled differences, and the seeds' standard deviation.
    """
    observed, resampled = np.atleast_1d(observed), np.atleast_2d(resampled)
    if resampled.shape[0] != observed.shape[0]:
        raise ValueError(f"need one row of resamples per seed, got {observed.shape[0]} seeds and {resampled.shape}")
    low, high = np.quantile(resampled.mean(axis=0), [(1 - level) / 2, (1 + level) / 2])
    seeds = len(observed)
    spread = float(np.std(observed, ddof=1)) if seeds > 1 else float("nan")
    return Difference(float(observed.mean()), float(low), float(high), spread, seeds)


def verdict(evidence: Difference) -> str:
    """`HOLDS` when the interval and the seed spread are above zero, `DOES_NOT_HOLD` when below, else `INCONCLUSIVE`.

    The seed spread is clear of zero when ``estimate ± seed_std`` does not contain it; with one seed
    there is no spread and the interval alone decides.
    """
    spread = 0.0 if evidence.seeds < 2 else evidence.seed_std
    if evidence.low > 0 and evidence.estimate - spread > 0:
        return HOLDS
    if evidence.high < 0 and evidence.estimate + spread < 0:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def combined_verdict(verdicts: list[str]) -> str:
    """One verdict for a claim judged on several splits: the same verdict on every split, else `INCONCLUSIVE`."""
    if not verdicts:
        raise ValueError("no verdicts to combine")
    unknown = set(verdicts) - set(VERDICTS)
    if unknown:
        raise ValueError(f"unknown verdicts {sorted(unknown)}; expected {VERDICTS}")
    return verdicts[0] if len(set(verdicts)) == 1 else INCONCLUSIVE
