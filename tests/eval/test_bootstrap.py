import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sedlib.eval.bootstrap import (
    BETTER,
    EQUIVALENT,
    UNDETERMINED,
    WORSE,
    ClaimCount,
    Difference,
    claim_count,
    cluster_counts,
    difference,
    holm_rejections,
    probability_of_improvement,
    resampled_auroc,
    resampled_mean,
    seed_draws,
    verdict,
)


def test_cluster_counts_are_seeded_draws_with_replacement():
    first = cluster_counts(7, 50, np.random.default_rng(3))
    assert first.shape == (50, 7) and (first.sum(axis=1) == 7).all()
    assert np.array_equal(first, cluster_counts(7, 50, np.random.default_rng(3)))
    assert (first > 1).any()  # some clusters repeat: drawn with replacement
    with pytest.raises(ValueError, match="at least one cluster"):
        cluster_counts(0, 5, np.random.default_rng(0))


def test_resampled_mean_weights_each_row_by_its_clusters_draws():
    values, clusters = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 0, 1, 2])
    counts = np.array([[1, 1, 1], [2, 0, 1], [0, 3, 0]])
    # resample 1: rows 0, 1 twice and row 3 once -> (0 + 0 + 1 + 1 + 3) / 5
    expected = [np.average(values, weights=counts[b, clusters]) for b in range(3)]
    assert resampled_mean(values, clusters, counts) == pytest.approx(expected)
    assert resampled_mean(values, clusters, counts)[1] == pytest.approx(5 / 5)


def test_resampled_auroc_is_sklearns_weighted_auroc_to_first_order():
    generator = np.random.default_rng(0)
    # rounded scores: many ties, which count one half; 600 ID and 450 OOD rows in shared clusters of 3
    id_scores = np.round(generator.normal(0.0, 1.0, 600), 1)
    ood_scores = np.round(generator.normal(0.7, 1.0, 450), 1)
    id_clusters, ood_clusters = np.arange(600) // 3, np.arange(450) // 3
    counts = cluster_counts(200, 200, generator)
    resampled = resampled_auroc(id_scores, ood_scores, id_clusters, ood_clusters, counts, counts)
    truth = np.r_[np.zeros(600), np.ones(450)]
    scores = np.r_[id_scores, ood_scores]
    exact = np.array(
        [roc_auc_score(truth, scores, sample_weight=np.r_[row[id_clusters], row[ood_clusters]]) for row in counts]
    )
    # the left-out second-order term is small against the spread over resamples (about 0.015 here)
    assert np.abs(resampled - exact).max() < 0.003
    assert resampled.std() == pytest.approx(exact.std(), rel=0.05)
    ones = np.ones((1, 200))
    everything = resampled_auroc(id_scores, ood_scores, id_clusters, ood_clusters, ones, ones)[0]
    assert everything == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)  # all rows once: exact


def test_resampled_auroc_by_hand():
    # ID {0, 1}, OOD {1, 2}: pairs (OOD > ID) = 1 (1>0) + 0.5 (1=1) + 1 (2>0) + 1 (2>1) = 3.5 of 4
    rows, ones = np.arange(2), np.ones((1, 2))
    assert resampled_auroc(np.array([0.0, 1.0]), np.array([1.0, 2.0]), rows, rows, ones, ones)[0] == 0.875
    # placements: OOD 1 outscores 1.5 of 2 ID rows, OOD 2 both; ID 0 is outscored by both, ID 1 by 1.5.
    # ID row 1 and OOD row 2 drawn twice: OOD mean 1, ID mean 0.75, so 1 + 0.75 - 0.875 (exactly: 1)
    twice = np.array([[0.0, 2.0]])
    assert resampled_auroc(np.array([0.0, 1.0]), np.array([1.0, 2.0]), rows, rows, twice, twice)[0] == 0.875


def test_columns_are_resampled_in_one_call():
    generator = np.random.default_rng(2)
    id_scores, ood_scores, values = generator.random((50, 3)), generator.random((40, 3)), generator.random((50, 3))
    id_clusters, ood_clusters, counts = np.arange(50) // 2, np.arange(40) // 2, cluster_counts(25, 30, generator)
    together = resampled_auroc(id_scores, ood_scores, id_clusters, ood_clusters, counts, counts)
    means = resampled_mean(values, id_clusters, counts)
    for c in range(3):
        alone = resampled_auroc(id_scores[:, c], ood_scores[:, c], id_clusters, ood_clusters, counts, counts)
        assert together[:, c] == pytest.approx(alone)
        assert means[:, c] == pytest.approx(resampled_mean(values[:, c], id_clusters, counts))


def test_identical_models_give_a_difference_of_exactly_zero():
    generator = np.random.default_rng(1)
    correct = (generator.random((3, 300)) < 0.7).astype(float)
    counts = cluster_counts(300, 400, generator)
    per_seed = np.stack([resampled_mean(c, np.arange(300), counts) for c in correct])
    evidence = difference(correct.mean(axis=1), correct.mean(axis=1), per_seed, per_seed, seed_draws(3, 400, generator))
    assert (evidence.estimate, evidence.low, evidence.high) == (0.0, 0.0, 0.0)
    assert evidence.improvement == 0.5  # every pair of equal seeds a tie, and the unequal ones cancel
    assert verdict(evidence, margin=0.0) == UNDETERMINED and verdict(evidence, margin=0.01) == EQUIVALENT


def test_pairing_removes_the_variation_both_models_share():
    # two models right on the same 600 of 1000 rows; the first is also right on 30 more. Paired, the
    # difference is the mean of a 0/1 indicator of those 30 rows: p = 0.03, standard error
    # sqrt(p (1 - p) / 1000) = 0.0054, so the half-width is 1.96 * 0.0054.
    theirs = np.r_[np.ones(600), np.zeros(400)]
    ours = theirs.copy()
    ours[600:630] = 1
    generator = np.random.default_rng(0)
    counts, rows = cluster_counts(1000, 2000, generator), np.arange(1000)
    resampled = [resampled_mean(values, rows, counts)[None] for values in (ours, theirs)]
    paired = difference(np.array([0.63]), np.array([0.6]), *resampled, seed_draws(1, 2000, generator))
    assert paired.high - paired.low == pytest.approx(2 * 1.96 * 0.0054, rel=0.1)
    assert verdict(paired, margin=0.01) == BETTER and paired.improvement == 1.0


def test_seed_spread_widens_the_interval_with_students_quantile():
    # two seeds, differences 0.1 and 0.3 on all rows and on every resample (no row uncertainty):
    # the half-width is t(1 df, 0.975) * std / sqrt(2) = 12.706 * 0.1414 / 1.414 = 1.2706
    ours = np.array([0.1, 0.3])
    resampled = np.repeat(ours[:, None], 5, axis=1)
    evidence = difference(ours, np.zeros(2), resampled, np.zeros((2, 5)), seed_draws(2, 5, np.random.default_rng(0)))
    assert evidence.estimate == pytest.approx(0.2)
    assert (evidence.low, evidence.high) == pytest.approx((0.2 - 1.2706, 0.2 + 1.2706), abs=1e-4)
    assert evidence.seed_std == pytest.approx(np.sqrt(0.02)) and evidence.seeds == 2
    with pytest.raises(ValueError, match="resamples of both sides"):
        difference(ours, np.zeros(2), resampled[:1], np.zeros((1, 5)), np.zeros((5, 2), dtype=int))


def test_probability_of_improvement_counts_pairs_of_seeds():
    # ours (1, 3), theirs (2, 3): pairs 1>2 no, 1>3 no, 3>2 yes, 3=3 half -> 1.5 of 4
    assert probability_of_improvement(np.array([1.0, 3.0]), np.array([2.0, 3.0])) == 0.375


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.02, 0.05, BETTER), (-0.05, -0.02, WORSE), (-0.005, 0.008, EQUIVALENT), (0.002, 0.008, EQUIVALENT),
     (-0.02, 0.05, UNDETERMINED), (-0.005, 0.015, UNDETERMINED)],
)  # fmt: skip
def test_verdict_reads_the_interval_against_the_margin(low, high, expected):
    evidence = Difference((low + high) / 2, low, high, 0.5, 0.5, float("nan"), 1, 0.5, 0.0, 1.0)
    assert verdict(evidence, margin=0.01) == expected


def test_holm_counts_by_hand():
    # alpha 0.05, sorted: 0.001 <= 0.05/4, 0.0125 <= 0.05/3, then 0.03 > 0.05/2 stops the count
    assert holm_rejections(np.array([0.03, 0.001, 0.0125, 0.9]), 0.05) == 2
    assert holm_rejections(np.array([0.02, 0.001, 0.0125, 0.9]), 0.05) == 3  # 0.02 <= 0.05/2, 0.9 > 0.05
    assert holm_rejections(np.array([0.2, 0.3]), 0.05) == 0
    assert holm_rejections(np.array([0.001, 0.001]), 0.05) == 2


def test_a_claim_counts_holding_and_contradicting_splits_apart():
    p_better = np.array([1e-6, 1e-5, 1 - 1e-6, 0.3])
    count = claim_count(p_better, 1 - p_better)
    assert count == ClaimCount(holds=2, contradicted=1, splits=4)
    assert str(count) == "holds on 2 of 4, contradicted on 1"
    # one split: the count agrees with the interval, p_better < 0.025 where the interval lies above zero
    assert claim_count(np.array([0.02]), np.array([0.98])).holds == 1
    assert claim_count(np.array([0.03]), np.array([0.97])).holds == 0


def _coverage(
    studies: int, seeds: int, clusters: int, copies: int, seed_sd: float, cluster_sd: float, by_cluster: bool = True
) -> tuple[float, float]:
    """Coverage of the 95 % interval and of the rows-only interval over simulated studies.

    Each study: every seed s of "ours" has per-row differences to "theirs" of
    ``0.3 + tau_s + u_c + e_(s, row)``, tau_s ~ N(0, seed_sd^2) the training run, u_c ~ N(0, cluster_sd^2)
    shared by the ``copies`` rows of a cluster (an image and its corrupted copies) and by every seed, and
    e ~ N(0, 1). The truth is 0.3.
    """
    generator = np.random.default_rng(12345)
    resamples, truth, rows = 300, 0.3, clusters * copies
    cluster_of_row = np.arange(rows) // copies
    drawn_as = cluster_of_row if by_cluster else np.arange(rows)
    covered = sampling_covered = 0
    for _ in range(studies):
        values = (
            truth
            + generator.normal(0, seed_sd, (seeds, 1))
            + generator.normal(0, cluster_sd, clusters)[cluster_of_row]
            + generator.normal(0, 1, (seeds, rows))
        )
        counts = cluster_counts(drawn_as.max() + 1, resamples, generator)
        resampled = np.stack([resampled_mean(v, drawn_as, counts) for v in values])
        zeros = np.zeros_like(resampled)
        evidence = difference(
            values.mean(axis=1), zeros[:, 0], resampled, zeros, seed_draws(seeds, resamples, generator)
        )
        covered += evidence.low <= truth <= evidence.high
        half = 1.96 * np.sqrt(np.var(resampled.mean(axis=0), ddof=1))
        sampling_covered += abs(evidence.estimate - truth) <= half
    return covered / studies, sampling_covered / studies


def test_intervals_cover_the_truth_over_seeds_where_rows_alone_do_not():
    # 5 seeds of 300 rows: the seed standard error 0.2 / sqrt(5) = 0.089 exceeds the rows' 0.063
    coverage, sampling_only = _coverage(studies=600, seeds=5, clusters=300, copies=1, seed_sd=0.2, cluster_sd=1.0)
    assert 0.93 <= coverage <= 0.985
    assert sampling_only < 0.85


def test_clustered_rows_are_resampled_together():
    # 3 seeds, 40 images with 15 copies each that share most of their variation
    clustered, _ = _coverage(studies=400, seeds=3, clusters=40, copies=15, seed_sd=0.02, cluster_sd=1.0)
    by_row, _ = _coverage(studies=400, seeds=3, clusters=40, copies=15, seed_sd=0.02, cluster_sd=1.0, by_cluster=False)
    assert 0.92 <= clustered <= 0.985
    assert by_row < 0.75
