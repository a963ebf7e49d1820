"""Metrics: accuracy, OOD detection (AUROC, FPR@95, AUPR), calibration, and the C-1/C-5 aggregation.

Detection metrics treat **OOD as the positive class** and take an explicit ``higher_is_ood``: a
score that is high for in-distribution samples (MSP, max logit) is negated before ranking. FPR@95 is
the fraction of ID samples flagged as OOD at the threshold that detects 95 % of the OOD samples
(the convention of OpenOOD v1.5, Zhang et al. 2023, https://arxiv.org/abs/2306.09301). AUROC and
AUPR come from scikit-learn; ties count one half.

Calibration: expected calibration error with equal-width confidence bins (Guo et al., *On
Calibration of Modern Neural Networks*, ICML 2017, https://arxiv.org/abs/1706.04599), negative
log-likelihood and the multi-class Brier score (Brier 1950), all from per-sample values so that
they can be accumulated over streamed batches.

C-1 / C-5 are the unweighted means over the 15 ImageNet-C corruptions at severity 1 / 5
(Hendrycks & Dietterich, ICLR 2019, https://arxiv.org/abs/1903.12261), as in the SED tables.

Example:
    >>> auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4]), higher_is_ood=True)
    1.0
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import Tensor


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``predictions == labels`` over samples with a label (``labels >= 0``); NaN if none."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    labelled = labels >= 0
    if not labelled.any():
        return float("nan")
    return float((predictions[labelled] == labels[labelled]).mean())


def _ood_labels_and_scores(id_scores, ood_scores, higher_is_ood: bool) -> tuple[np.ndarray, np.ndarray]:
    id_scores, ood_scores = np.asarray(id_scores, dtype=np.float64), np.asarray(ood_scores, dtype=np.float64)
    if id_scores.size == 0 or ood_scores.size == 0:
        raise ValueError(f"need ID and OOD samples, got {id_scores.size} ID and {ood_scores.size} OOD")
    scores = np.concatenate([id_scores, ood_scores])
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf; check the logits they were computed from")
    is_ood = np.concatenate([np.zeros(id_scores.size, dtype=int), np.ones(ood_scores.size, dtype=int)])
    return is_ood, scores if higher_is_ood else -scores


def auroc(id_scores, ood_scores, higher_is_ood: bool) -> float:
    """Area under the ROC curve for separating OOD (positive) from ID samples.

    Args:
        id_scores: ``(N_id,)`` scores of in-distribution samples.
        ood_scores: ``(N_ood,)`` scores of OOD samples.
        higher_is_ood: orientation of the score.
    """
    return float(roc_auc_score(*_ood_labels_and_scores(id_scores, ood_scores, higher_is_ood)))


def fpr_at_tpr(id_scores, ood_scores, higher_is_ood: bool, tpr: float = 0.95) -> float:
    """False-positive rate on ID samples at the first threshold that detects ``tpr`` of the OOD samples."""
    is_ood, scores = _ood_labels_and_scores(id_scores, ood_scores, higher_is_ood)
    false_positive, true_positive, _ = roc_curve(is_ood, scores, drop_intermediate=False)
    return float(false_positive[np.searchsorted(true_positive, tpr, side="left")])


def aupr(id_scores, ood_scores, higher_is_ood: bool, positive: str = "ood") -> float:
    """Area under the precision-recall curve (average precision).

    Args:
        id_scores: ``(N_id,)`` scores of in-distribution samples.
        ood_scores: ``(N_ood,)`` scores of OOD samples.
        higher_is_ood: orientation of the score.
        positive: ``"ood"`` for AUPR-out (OOD samples are the positives) or ``"id"`` for AUPR-in.
    """
    is_ood, scores = _ood_labels_and_scores(id_scores, ood_scores, higher_is_ood)
    if positive == "ood":
        return float(average_precision_score(is_ood, scores))
    if positive == "id":
        return float(average_precision_score(1 - is_ood, -scores))
    raise ValueError(f"positive must be 'ood' or 'id', got {positive!r}")


def detection_metrics(id_scores, ood_scores, higher_is_ood: bool) -> dict[str, float]:
    """AUROC, FPR@95, AUPR-out and AUPR-in in one dictionary, in the order of the detection tables' columns."""
    return {
        "auroc": auroc(id_scores, ood_scores, higher_is_ood),
        "fpr95": fpr_at_tpr(id_scores, ood_scores, higher_is_ood),
        "aupr_out": aupr(id_scores, ood_scores, higher_is_ood, positive="ood"),
        "aupr_in": aupr(id_scores, ood_scores, higher_is_ood, positive="id"),
    }


ECE_BINS = 15
"""The number of equal-width confidence bins of every ECE in the project."""


def ece_bins(confidence, num_bins: int = ECE_BINS):
    """The ECE bin of each confidence in [0, 1]: ``num_bins`` equal-width bins, an inner edge in the lower bin.

    Args:
        confidence: ``(...)`` a NumPy array or a tensor (the streamed per-member ECE of `sedlib.eval.evaluate`).
        num_bins: the number of bins.

    Returns:
        ``(...)`` bin indices in ``[0, num_bins)``, of the input's kind.

    Example:
        >>> ece_bins(np.array([0.0, 0.5, 0.51, 1.0]), num_bins=2).tolist()
        [0, 0, 1, 1]
    """
    if isinstance(confidence, Tensor):
        return (confidence * num_bins).ceil().long().sub(1).clamp(0, num_bins - 1)
    return np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)


def expected_calibration_error(confidence, correct, num_bins: int = ECE_BINS) -> float:
    """ECE: the sample-weighted mean over equal-width bins of ``|accuracy - mean confidence|``.

    Args:
        confidence: ``(N,)`` top-class probabilities in [0, 1].
        correct: ``(N,)`` whether the top class was right.
        num_bins: number of bins over [0, 1]; a confidence on an inner edge goes to the lower bin.
    """
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    bins = ece_bins(confidence, num_bins)
    counts = np.bincount(bins, minlength=num_bins)
    gaps = np.abs(np.bincount(bins, correct, num_bins) - np.bincount(bins, confidence, num_bins))
    return float(gaps.sum() / counts.sum())


def calibration_terms(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Confidence, negative log-likelihood and multi-class Brier score of each row of a prediction.

    Args:
        logits: ``(..., B, C)``, e.g. the ensemble's mean logits or each member's.
        target: ``(B,)`` class indices >= 0.

    Returns:
        ``(confidence, nll, brier)``, each ``(..., B)``: the top softmax probability, ``-log p[y]`` and
        ``sum_c (p[c] - 1[c == y])^2`` (in [0, 2]).
    """
    log_probs = logits.log_softmax(dim=-1)
    probs = log_probs.exp()
    nll = -log_probs.gather(-1, target.expand(*log_probs.shape[:-1])[..., None]).squeeze(-1)
    brier = (probs - torch.nn.functional.one_hot(target, probs.shape[-1]).to(probs.dtype)).square().sum(dim=-1)
    return probs.amax(dim=-1), nll, brier
