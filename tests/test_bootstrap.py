import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sedlib.bootstrap import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    Difference,
    combined_verdict,
    difference,
    resample_indices,
    resampled_auroc,
    resampled_means,
    verdict,
)


def test_resample_indices_are_seeded_rows_drawn_with_replacement():
    first = resample_indices(7, 50, np.random.default_rng(3))
    assert first.shape == (50, 7) and first.min() >= 0 and first.max() < 7
    assert np.array_equal(first, resample_indices(7, 50, np.random.default_rng(3)))
    assert any(len(set(row)) < 7 for row in first)  # some rows repeat: drawn with replacement
    with pytest.raises(ValueError, match="at least one row"):
        resample_indices(0, 5, np.random.default_rng(0))


@pytest.mark.parametrize("higher_is_ood", [True, False])
def test_resampled_auroc_is_sklearns_auroc_on_the_resampled_rows(higher_is_ood):
    generator = np.random.default_rng(0)
    # rounded scores: many ties, which count one half
    id_scores = np.round(generator.normal(0.0, 1.0, 60), 1)
    ood_scores = np.round(generator.normal(0.7, 1.0, 45), 1)
    id_index, ood_index = resample_indices(60, 20, generator), resample_indices(45, 20, generator)
    resampled = resampled_auroc(id_scores, ood_scores, id_index, ood_index, higher_is_ood)
    sign = 1 if higher_is_ood else -1
    for b in (0, 7, 19):
        truth = np.r_[np.zeros(60), np.ones(45)]
        expected = roc_auc_score(truth, sign * np.r_[id_scores[id_index[b]], ood_scores[ood_index[b]]])
        assert resampled[b] == pytest.approx(expected, abs=1e-12)


def test_resampled_auroc_counts_by_hand():
    # ID {0, 1}, OOD {1, 2}: pairs (OOD > ID) = 1 (1>0) + 0.5 (1=1) + 1 (2>0) + 1 (2>1) = 3.5 of 4
    identity = np.array([[0, 1]])
    assert resampled_auroc(np.array([0.0, 1.0]), np.array([1.0, 2.0]), identity, identity)[0] == pytest.approx(0.875)
    # resample that takes the ID row 1 twice and the OOD row 2 twice: every pair 2 > 1 -> 1.0
    assert resampled_auroc(np.array([0.0, 1.0]), np.array([1.0, 2.0]), np.array([[1, 1]]), np.array([[1, 1]]))[0] == 1


def test_resampled_means_average_the_chosen_rows():
    values = np.array([0.0, 1.0, 2.0, 3.0])
    assert resampled_means(values, np.array([[0, 0, 3, 3], [1, 2, 1, 2]])).tolist() == [1.5, 1.5]


def test_identical_models_give_a_difference_of_exactly_zero():
    generator = np.random.default_rng(1)
    correct = (generator.random(300) < 0.7).astype(float)
    scores_id, scores_ood = generator.random(200), generator.random(150) + 0.2
    rows, id_rows, ood_rows = (resample_indices(n, 400, generator) for n in (300, 200, 150))
    accuracy = difference(np.array([0.0]), resampled_means(correct - correct, rows)[None])
    auroc = resampled_auroc(scores_id, scores_ood, id_rows, ood_rows)
    detection = difference(np.array([0.0]), (auroc - resampled_auroc(scores_id, scores_ood, id_rows, ood_rows))[None])
    for evidence in (accuracy, detection):
        assert (evidence.estimate, evidence.low, evidence.high) == (0.0, 0.0, 0.0)
        assert verdict(evidence) == INCONCLUSIVE


def test_pairing_removes_the_variation_both_models_share():
    # two models right on the same 600 of 1000 rows; the second is also right on 30 more. Paired, the
    # difference is the mean of a 0/1 indicator of those 30 rows: p = 0.03, standard error
    # sqrt(p (1 - p) / 1000) = 0.0054. Unpaired (each model its own resample) it adds both accuracies'
    # variances, sqrt(2 * 0.6 * 0.4 / 1000) = 0.0219, and the interval includes zero.
    correct_b = np.r_[np.ones(600), np.zeros(400)]
    correct_a = correct_b.copy()
    correct_a[600:630] = 1
    generator = np.random.default_rng(0)
    rows, other_rows = resample_indices(1000, 2000, generator), resample_indices(1000, 2000, generator)
    paired = difference(np.array([0.03]), resampled_means(correct_a - correct_b, rows)[None])
    unpaired = difference(
        np.array([0.03]), (resampled_means(correct_a, rows) - resampled_means(correct_b, other_rows))[None]
    )
    assert paired.high - paired.low == pytest.approx(2 * 1.96 * 0.0054, rel=0.15)
    assert unpaired.high - unpaired.low == pytest.approx(2 * 1.96 * 0.0219, rel=0.15)
    assert verdict(paired) == HOLDS and verdict(unpaired) == INCONCLUSIVE


def test_verdict_flips_to_inconclusive_when_the_interval_includes_zero():
    clear = Difference(estimate=0.02, low=0.01, high=0.03, seed_std=float("nan"), seeds=1)
    assert verdict(clear) == HOLDS
    assert verdict(Difference(0.02, -0.001, 0.03, float("nan"), 1)) == INCONCLUSIVE
    assert verdict(Difference(-0.02, -0.03, -0.01, float("nan"), 1)) == DOES_NOT_HOLD
    assert verdict(Difference(-0.02, -0.03, 0.001, float("nan"), 1)) == INCONCLUSIVE


def test_verdict_needs_the_seed_spread_clear_of_zero_too():
    assert verdict(Difference(0.02, 0.01, 0.03, seed_std=0.015, seeds=3)) == HOLDS
    assert verdict(Difference(0.02, 0.01, 0.03, seed_std=0.025, seeds=3)) == INCONCLUSIVE  # 0.02 - 0.025 < 0
    assert verdict(Difference(-0.02, -0.03, -0.01, seed_std=0.025, seeds=3)) == INCONCLUSIVE


def test_difference_averages_seeds_and_keeps_their_spread():
    # two seeds: differences 0.1 and 0.3 on all rows; resampled, each seed moves by the same +-0.01
    resampled = np.array([[0.09, 0.1, 0.11], [0.29, 0.3, 0.31]])
    evidence = difference(np.array([0.1, 0.3]), resampled, level=1.0)
    assert evidence.estimate == pytest.approx(0.2)
    assert (evidence.low, evidence.high) == pytest.approx((0.19, 0.21))
    assert evidence.seed_std == pytest.approx(np.sqrt(0.02))  # sample std of (0.1, 0.3)
    assert evidence.seeds == 2
    with pytest.raises(ValueError, match="one row of resamples per seed"):
        difference(np.array([0.1, 0.3]), resampled[:1])


def test_combined_verdict_needs_every_split_to_agree():
    assert combined_verdict([HOLDS, HOLDS]) == HOLDS
    assert combined_verdict([DOES_NOT_HOLD]) == DOES_NOT_HOLD
    assert combined_verdict([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert combined_verdict([HOLDS, DOES_NOT_HOLD]) == INCONCLUSIVE
    with pytest.raises(ValueError, match="unknown verdicts"):
        combined_verdict(["maybe"])
