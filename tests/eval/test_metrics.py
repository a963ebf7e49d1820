import math

import numpy as np
import pytest
import torch

from sedlib.eval.metrics import (
    accuracy,
    aupr,
    auroc,
    calibration_terms,
    detection_metrics,
    expected_calibration_error,
    fpr_at_tpr,
)  # fmt: skip

ID = np.array([0.1, 0.4, 0.35, 0.8])
OOD = np.array([0.9, 0.4, 0.7])


def test_auroc_by_counting_pairs_in_both_directions():
    # OOD > ID pairs: 0.9 beats all 4; 0.4 beats 0.1 and 0.35 and ties 0.4 (1/2); 0.7 beats 3 -> 9.5 of 12
    assert auroc(ID, OOD, higher_is_ood=True) == pytest.approx(9.5 / 12)
    assert auroc(ID, OOD, higher_is_ood=False) == pytest.approx(2.5 / 12)


def test_fpr_at_95_tpr_by_hand():
    # detecting 95 % of 3 OOD samples means all 3: threshold 0.4 -> ID flagged: 0.4 and 0.8 -> 2 / 4
    assert fpr_at_tpr(ID, OOD, higher_is_ood=True) == pytest.approx(0.5)
    # reversed: OOD scores become -0.9, -0.4, -0.7, the lowest -0.9 needs every ID sample flagged
    assert fpr_at_tpr(ID, OOD, higher_is_ood=False) == pytest.approx(1.0)
    # a perfect separation has no false positives
    assert fpr_at_tpr([0.1, 0.2], [0.5, 0.6], higher_is_ood=True) == 0.0


def test_aupr_out_and_in_by_hand():
    id_scores, ood_scores = [0.1, 0.6], [0.8, 0.3]
    # OOD positive, ranked 0.8 (OOD), 0.6 (ID), 0.3 (OOD), 0.1: AP = (1/1 + 2/3) / 2
    assert aupr(id_scores, ood_scores, True, positive="ood") == pytest.approx((1 + 2 / 3) / 2)
    # ID positive, ranked by -score: 0.1 (ID), 0.3 (OOD), 0.6 (ID), 0.8: AP = (1/1 + 2/3) / 2
    assert aupr(id_scores, ood_scores, True, positive="id") == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="positive"):
        aupr(id_scores, ood_scores, True, positive="both")


def test_detection_metrics_refuse_nan_scores():
    with pytest.raises(ValueError, match="NaN"):
        detection_metrics([0.1, float("nan")], [0.3], higher_is_ood=True)


def test_accuracy_ignores_unlabelled_samples():
    assert accuracy([1, 2, 3, 0], [1, 0, -1, 0]) == pytest.approx(2 / 3)
    assert math.isnan(accuracy([1, 2], [-1, -1]))


def test_ece_by_hand():
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 0, 1, 1])
    # two occupied bins: |0.5 - 0.95| and |1.0 - 0.55|, each holding half of the samples
    assert expected_calibration_error(confidence, correct, num_bins=10) == pytest.approx((0.45 + 0.45) / 2)
    assert expected_calibration_error([1.0, 0.0], [1, 0], num_bins=10) == pytest.approx(0.0)


def test_confidence_nll_and_brier_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.5, 0.25]], dtype=torch.float64)
    confidence, nll, brier = calibration_terms(probs.log(), torch.tensor([0, 2]))
    np.testing.assert_allclose(confidence, [0.7, 0.5])
    np.testing.assert_allclose(nll, [-math.log(0.7), -math.log(0.25)])
    np.testing.assert_allclose(brier, [0.09 + 0.04 + 0.01, 0.0625 + 0.25 + 0.5625])
    members = torch.stack([probs, probs.flip(-1)]).log()  # (M, B, C): one value per member and row
    assert calibration_terms(members, torch.tensor([0, 2]))[1].shape == (2, 2)
