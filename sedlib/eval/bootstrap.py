"""Intervals over seeds and clustered rows for differences between models, and the verdicts they support.

A study trains every model with S seeds and evaluates every seed on the same rows, so a difference
between two models has two sources of uncertainty: which training runs happened (the seed, the unit
of replication) and which rows were evaluated. Rows are grouped into clusters that are resampled
together: a corrupted copy of a test image belongs to the cluster of that image, so the clean test
split and its 15 corruptions at one severity move together (`resampled_mean`, `resampled_auroc`
take per-row cluster ids and per-resample cluster counts, `cluster_counts`).

`difference` summarises a difference from each seed's value on all rows ``(S,)`` and on every
row resample ``(S, B)`` (one row resample serves every seed and both models compared: the seeds
saw the same rows):

- the estimate is the mean over seeds;
- the interval is ``estimate ± sqrt(z² v_rows + t² v_seeds)``: ``v_rows`` the bootstrap variance of
  the seed mean over row resamples; ``v_seeds`` the variance of the per-seed differences, less the
  part each seed's own row noise explains (already in ``v_rows``), divided by S, with the Student
  quantile ``t`` of S - 1 degrees of freedom (with 3 to 5 seeds a percentile bootstrap over seeds
  covers less than its nominal level: 92 % and 88 % where this interval covers 95 %, measured with the
  simulation of ``tests/eval/test_bootstrap.py``);
- the probability of improvement ``P(ours > theirs)`` over pairs of seeds (Agarwal et al. 2021,
  Bouthillier et al. 2021) with a hierarchical percentile interval: each resample draws S seeds
  with replacement (`seed_draws`), then its rows.

`verdict` reads one difference against the smallest difference that matters (the margin):
better, worse, equivalent or undetermined; `claim_count` counts the splits a claim holds and is
contradicted on with Holm's correction (the partial-conjunction count of Dror et al. 2017).

Example:
    >>> generator = np.random.default_rng(0)
    >>> counts = cluster_counts(4, 3, generator)
    >>> counts.shape, counts.sum(axis=1).tolist()
    ((3, 4), [4.0, 4.0, 4.0])
    >>> same = np.zeros((1, 3))
    >>> verdict(difference(np.array([0.0]), np.array([0.0]), same, same, seed_draws(1, 3, generator)), margin=0.01)
    'equivalent'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
"""The coverage of the intervals."""

BETTER, WORSE, EQUIVALENT, UNDETERMINED = "better", "worse", "equivalent", "undetermined"
VERDICTS = (BETTER, WORSE, EQUIVALENT, UNDETERMINED)


def cluster_counts(clusters: int, resamples: int, generator: np.random.Generator) -> np.ndarray:
    """How often each cluster is drawn in each of ``resamples`` bootstrap resamples of ``clusters`` clusters.

    Args:
        clusters: K, the number of clusters (rows, when every row is its own cluster).
        resamples: B.
        generator: the source of randomness (seed it for reproducible intervals).

    Returns:
        ``(B, K)`` counts, each row summing to K, as float64 (the weights of matrix products).
    """
    if clusters < 1 or resamples < 1:
        raise ValueError(f"need at least one cluster and one resample, got {clusters} and {resamples}")
    drawn = generator.integers(0, clusters, size=(resamples, clusters))
    counts = np.empty((resamples, clusters))
    for row, draw in enumerate(drawn):
        counts[row] = np.bincount(draw, minlength=clusters)
    return counts


def seed_draws(seeds: int, resamples: int, generator: np.random.Generator) -> np.ndarray:
    """``(B, S)`` the seeds (indices) each resample draws, with replacement, for the hierarchical interval."""
    if seeds < 1:
        raise ValueError(f"need at least one seed, got {seeds}")
    return generator.integers(0, seeds, size=(resamples, seeds))


def resampled_mean(values: np.ndarray, clusters: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean of per-row values over each resample, every row weighted by how often its cluster was drawn.

    Args:
        values: ``(N,)`` one value per row (1.0 where a prediction is right, a row's PDS, ...), or
            ``(N, C)``: C columns of values (e.g. one per seed) on the same rows, in one pass over ``counts``.
        clusters: ``(N,)`` each row's cluster, in ``[0, K)``.
        counts: ``(B, K)`` `cluster_counts`.

    Returns:
        ``(B,)`` (or ``(B, C)``) the weighted mean of each resample (on counts of all ones: the mean).
    """
    values = np.asarray(values, dtype=np.float64)
    columns = values.reshape(len(values), -1)
    width = counts.shape[1]
    sums = np.stack([np.bincount(clusters, weights=column, minlength=width) for column in columns.T], axis=1)
    sizes = np.bincount(clusters, minlength=width).astype(np.float64)
    totals = counts @ np.column_stack([sums, sizes])  # (B, C + 1): one pass over the counts
    means = totals[:, :-1] / totals[:, -1:]
    return means[:, 0] if values.ndim == 1 else means


def resampled_auroc(
    id_scores: np.ndarray,
    ood_scores: np.ndarray,
    id_clusters: np.ndarray,
    ood_clusters: np.ndarray,
    id_counts: np.ndarray,
    ood_counts: np.ndarray,
) -> np.ndarray:
    """AUROC of separating OOD (positive, higher scores) from ID rows on each resample, to first order.

    The AUROC is a two-sample U-statistic; its first-order (Hájek) projection is the mean of the
    placement values of DeLong et al. (1988): each OOD row's share of ID rows it outscores, and each
    ID row's share of OOD rows that outscore it (ties counting one half). On a resample, with each
    row weighted by how often its cluster was drawn, the AUROC is then
    ``mean_w(OOD placements) + mean_w(ID placements) - AUROC``: two weighted means, the cost of an
    accuracy. What it leaves out, the degenerate second-order term, shrinks as 1 / (N_id N_ood)
    against the 1 / N of what it keeps (a test measures both against the exact weighted AUROC). ID
    and OOD rows may share clusters (the clean test split and its corrupted copies): pass the same
    ``counts`` for both.

    Args:
        id_scores: ``(N_id,)`` the score of every ID row (higher = more OOD), or ``(N_id, C)``: C
            scores (e.g. one per seed) of the same rows.
        ood_scores: ``(N_ood,)`` (or ``(N_ood, C)``) the score of every OOD row.
        id_clusters: ``(N_id,)`` each ID row's cluster.
        ood_clusters: ``(N_ood,)`` each OOD row's cluster.
        id_counts: ``(B, K_id)`` `cluster_counts` of the ID clusters.
        ood_counts: ``(B, K_ood)`` of the OOD clusters.

    Returns:
        ``(B,)`` (or ``(B, C)``) the AUROC of each resample; on counts of all ones, the AUROC of all rows.
    """
    id_scores, ood_scores = np.asarray(id_scores, dtype=np.float64), np.asarray(ood_scores, dtype=np.float64)
    if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()):
        raise ValueError("scores contain NaN or inf; check the logits they were computed from")
    if id_counts.shape[0] != ood_counts.shape[0]:
        raise ValueError(f"ID and OOD counts need the same resamples, got {id_counts.shape} and {ood_counts.shape}")
    id_columns, ood_columns = id_scores.reshape(len(id_scores), -1), ood_scores.reshape(len(ood_scores), -1)
    ood_placement = np.column_stack(
        [_below(np.sort(i), o) / len(i) for i, o in zip(id_columns.T, ood_columns.T, strict=True)]
    )
    id_placement = np.column_stack(
        [1 - _below(np.sort(o), i) / len(o) for i, o in zip(id_columns.T, ood_columns.T, strict=True)]
    )
    resampled = (
        resampled_mean(ood_placement, ood_clusters, ood_counts)
        + resampled_mean(id_placement, id_clusters, id_counts)
        - ood_placement.mean(axis=0)
    )
    return resampled[:, 0] if id_scores.ndim == 1 else resampled


def _below(ordered: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, how many of ``ordered`` (sorted) lie below it, ties counting one half."""
    return (np.searchsorted(ordered, values, "left") + np.searchsorted(ordered, values, "right")) / 2


@dataclass(frozen=True)
class Difference:
    """A difference between two models (ours minus theirs), oriented so that a positive value supports the claim.

    Attributes:
        estimate: the difference on all rows, averaged over seeds.
        low: lower end of its interval (`LEVEL`) over seeds and rows.
        high: upper end.
        p_better: one-sided p-value of "the difference is not above zero" (from the same standard error).
        p_worse: one-sided p-value of "the difference is not below zero".
        seed_std: standard deviation of the per-seed differences (NaN with one seed).
        seeds: how many seeds were averaged.
        improvement: P(ours > theirs): the share of (our seed, their seed) pairs in which ours is
            higher on all rows, ties counting one half.
        improvement_low: lower end of its hierarchical percentile interval.
        improvement_high: upper end.
    """

    estimate: float
    low: float
    high: float
    p_better: float
    p_worse: float
    seed_std: float
    seeds: int
    improvement: float
    improvement_low: float
    improvement_high: float


def sampling_variance(resampled: np.ndarray) -> float:
    """The variance over row resamples of the mean over seeds: the uncertainty of the rows alone.

    Args:
        resampled: ``(S, B)`` a difference per seed on every row resample.
    """
    return float(np.var(np.atleast_2d(resampled).mean(axis=0), ddof=1))


def difference(
    ours: np.ndarray,
    theirs: np.ndarray,
    ours_resampled: np.ndarray,
    theirs_resampled: np.ndarray,
    seeds_drawn: np.ndarray,
    level: float = LEVEL,
) -> Difference:
    """Summarise ours minus theirs from each seed's value on all rows and on every row resample.

    Seed s of ours is paired with seed s of theirs (the same seed number; both saw the same row
    resamples).

    Args:
        ours: ``(S,)`` our value per seed on all rows.
        theirs: ``(S,)`` theirs.
        ours_resampled: ``(S, B)`` our value per seed on each row resample.
        theirs_resampled: ``(S, B)`` theirs on the same resamples.
        seeds_drawn: ``(B, S)`` `seed_draws`: the seeds resample b draws.
        level: the intervals' coverage.

    Returns:
        The `Difference`.
    """
    ours, theirs = np.atleast_1d(ours).astype(np.float64), np.atleast_1d(theirs).astype(np.float64)
    ours_resampled, theirs_resampled = np.atleast_2d(ours_resampled), np.atleast_2d(theirs_resampled)
    seeds = len(ours)
    if ours_resampled.shape != theirs_resampled.shape or ours_resampled.shape[0] != seeds or len(theirs) != seeds:
        raise ValueError(
            f"need (S,) values and (S, B) resamples of both sides, got {ours.shape}, {theirs.shape}, "
            f"{ours_resampled.shape} and {theirs_resampled.shape}"
        )
    if seeds_drawn.shape != (ours_resampled.shape[1], seeds):
        raise ValueError(f"seeds_drawn must be (B, S) = {(ours_resampled.shape[1], seeds)}, got {seeds_drawn.shape}")
    per_seed = ours - theirs
    estimate = float(per_seed.mean())
    resampled = ours_resampled - theirs_resampled
    z = stats.norm.ppf((1 + level) / 2)
    spread = float(np.std(per_seed, ddof=1)) if seeds > 1 else float("nan")
    seed_term = 0.0
    if seeds > 1:
        # the seeds' variance less the row noise of each seed's own value, which v_rows already holds
        row_noise = float(np.var(resampled - resampled.mean(axis=0), axis=1, ddof=1).mean()) * seeds / (seeds - 1)
        seed_variance = max(spread**2 - row_noise, 0.0)
        seed_term = stats.t.ppf((1 + level) / 2, seeds - 1) ** 2 * seed_variance / seeds
    half = float(np.sqrt(z**2 * sampling_variance(resampled) + seed_term))
    standard_error = half / z
    if standard_error > 0:
        p_better = float(stats.norm.sf(estimate / standard_error))
        p_worse = float(stats.norm.cdf(estimate / standard_error))
    else:  # every resample and seed agrees: the sign of the estimate is certain
        p_better, p_worse = float(estimate <= 0), float(estimate >= 0)
    columns = np.arange(ours_resampled.shape[1])[:, None]
    drawn_ours = ours_resampled.T[columns, seeds_drawn]  # (B, S): resample b's drawn seeds, ours
    drawn_theirs = theirs_resampled.T[columns, seeds_drawn]
    low, high = np.quantile(probability_of_improvement(drawn_ours, drawn_theirs), [(1 - level) / 2, (1 + level) / 2])
    return Difference(
        estimate,
        estimate - half,
        estimate + half,
        p_better,
        p_worse,
        spread,
        seeds,
        float(probability_of_improvement(ours[None], theirs[None])[0]),
        float(low),
        float(high),
    )


def probability_of_improvement(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """P(ours > theirs) over all pairs of a seed of ours and a seed of theirs, ties counting one half.

    Args:
        ours: ``(..., S)`` our value per seed.
        theirs: ``(..., S')`` theirs.

    Returns:
        ``(...)`` the share of the S x S' pairs in which ours is higher.
    """
    above = ours[..., :, None] - theirs[..., None, :]
    return ((above > 0) + 0.5 * (above == 0)).mean(axis=(-2, -1))


def verdict(evidence: Difference, margin: float) -> str:
    """`EQUIVALENT`, `BETTER`, `WORSE` or `UNDETERMINED`, checked in that order.

    Equivalent: the interval lies inside ``± margin`` (whatever its sign, the difference is smaller
    than what matters). Better: the interval lies above zero; worse: below. Undetermined otherwise:
    the data cannot tell (more seeds or rows would).

    Args:
        evidence: the difference.
        margin: the smallest difference that matters, in the difference's units (>= 0).
    """
    if margin < 0:
        raise ValueError(f"a margin is a distance, >= 0; got {margin}")
    if -margin < evidence.low and evidence.high < margin:
        return EQUIVALENT
    if evidence.low > 0:
        return BETTER
    if evidence.high < 0:
        return WORSE
    return UNDETERMINED


def holm_rejections(p_values: np.ndarray, alpha: float) -> int:
    """How many hypotheses Holm's step-down procedure rejects at family-wise error ``alpha``.

    The smallest p-value is compared with alpha / n, the next with alpha / (n - 1), ...; the count
    stops at the first that is not below its bound. With Bonferroni's combination this count is the
    partial-conjunction estimate of on how many of the n splits the effect is present (Dror et al. 2017).
    """
    ordered = np.sort(np.asarray(p_values, dtype=np.float64))
    bounds = alpha / (len(ordered) - np.arange(len(ordered)))
    failed = np.flatnonzero(ordered > bounds)
    return int(failed[0]) if len(failed) else len(ordered)


@dataclass(frozen=True)
class ClaimCount:
    """A claim judged on several splits.

    Attributes:
        holds: on how many splits the difference is above zero (Holm, family-wise `LEVEL`).
        contradicted: on how many it is below zero (Holm).
        splits: on how many it was judged.
    """

    holds: int
    contradicted: int
    splits: int

    def __str__(self) -> str:
        return f"holds on {self.holds} of {self.splits}, contradicted on {self.contradicted}"


def claim_count(p_better: np.ndarray, p_worse: np.ndarray, level: float = LEVEL) -> ClaimCount:
    """On how many splits a claim holds and on how many it is contradicted, each one-sided at (1 - level) / 2.

    With one split this agrees with the interval: it holds where the interval lies above zero.

    Args:
        p_better: ``(n,)`` each split's `Difference.p_better`.
        p_worse: ``(n,)`` each split's `Difference.p_worse`.
        level: the family-wise coverage.
    """
    if len(p_better) == 0 or len(p_better) != len(p_worse):
        raise ValueError(f"need one p_better and one p_worse per split, got {len(p_better)} and {len(p_worse)}")
    alpha = (1 - level) / 2
    return ClaimCount(holm_rejections(p_better, alpha), holm_rejections(p_worse, alpha), len(p_better))
