"""Per-sample OOD scores from the logits of an ensemble's members.

Every score takes member logits ``(M, N, C)`` and returns ``(N,)``; its direction is documented and
recorded in `SCORES` (``higher_is_ood``), which `sedlib.eval.metrics` uses to orient AUROC and FPR@95.
The ensemble prediction is the mean of the members' logits, as in the published SED code.

Scores and sources:

* PDS, the predictive diversity score of SED (Rubinstein et al., arXiv:2409.16797, Eq. 6).
* BMA / MSP: Hendrycks & Gimpel, *A Baseline for Detecting Misclassified and Out-of-Distribution
  Examples*, ICLR 2017 (https://arxiv.org/abs/1610.02136).
* Predictive entropy, expected entropy and mutual information (BALD): Depeweg et al., ICML 2018
  (https://arxiv.org/abs/1710.07283); Lakshminarayanan et al., *Deep Ensembles*, NeurIPS 2017.
* Energy: Liu et al., *Energy-based Out-of-distribution Detection*, NeurIPS 2020
  (https://arxiv.org/abs/2010.03759). Max logit: Hendrycks et al., *Scaling Out-of-Distribution
  Detection for Real-World Settings*, ICML 2022 (https://arxiv.org/abs/1911.11132).
* A2D score: the negated A2D loss of Pagliardini et al., ICLR 2023, averaged over member pairs as
  in the SED code.
* GEN: Liu, Lochman & Zach, *GEN: Pushing the Limits of Softmax-Based Out-of-Distribution
  Detection*, CVPR 2023 (code: https://github.com/XixiLiu95/GEN; paper:
  https://openaccess.thecvf.com/content/CVPR2023/html/Liu_GEN_Pushing_the_Limits_of_Softmax-Based_Out-of-Distribution_Detection_CVPR_2023_paper.html).

Example:
    >>> logits = torch.tensor([[[4.0, 0.0]], [[0.0, 4.0]]])   # 2 members, 1 sample, 2 classes
    >>> num_unique(logits)
    tensor([2.])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sedlib.method.losses import A2D_EPS


def _entropy(probs: Tensor) -> Tensor:
    return -torch.xlogy(probs, probs).sum(dim=-1)


def pds(logits: Tensor) -> Tensor:
    """Predictive diversity score ``sum_c max_m p_m[c]``, in [1, M]. Higher = more OOD.

    It is 1 when all members give the same distribution and M when they put all their mass on M
    different classes (Rubinstein et al. 2024, Eq. 6, without the 1/C factor the paper prints but
    its code and tables do not use).
    """
    return logits.softmax(dim=-1).amax(dim=0).sum(dim=-1)


def num_unique(logits: Tensor) -> Tensor:
    """Number of distinct top-1 classes among the members, in [1, M]. Higher = more OOD."""
    predictions = logits.argmax(dim=-1).sort(dim=0).values
    return 1.0 + (predictions[1:] != predictions[:-1]).sum(dim=0).to(logits.dtype)


def bma_confidence(logits: Tensor) -> Tensor:
    """MSP of the ensemble: ``max_c softmax(mean_m z_m)[c]`` (the published "BMA"). Higher = more ID."""
    return logits.mean(dim=0).softmax(dim=-1).amax(dim=-1)


def mean_probability_confidence(logits: Tensor) -> Tensor:
    """MSP of the mean probability ``max_c mean_m p_m[c]``. Higher = more ID."""
    return logits.softmax(dim=-1).mean(dim=0).amax(dim=-1)


def mean_member_confidence(logits: Tensor) -> Tensor:
    """Mean over members of each member's MSP ``mean_m max_c p_m[c]``. Higher = more ID."""
    return logits.softmax(dim=-1).amax(dim=-1).mean(dim=0)


def predictive_entropy(logits: Tensor) -> Tensor:
    """Entropy of the mean probability ``H(mean_m p_m)`` in nats. Higher = more OOD."""
    return _entropy(logits.softmax(dim=-1).mean(dim=0))


def expected_entropy(logits: Tensor) -> Tensor:
    """Mean member entropy ``mean_m H(p_m)`` in nats (aleatoric part). Higher = more OOD."""
    return _entropy(logits.softmax(dim=-1)).mean(dim=0)


def mutual_information(logits: Tensor) -> Tensor:
    """Mutual information (BALD) ``H(mean_m p_m) - mean_m H(p_m)`` per sample, >= 0. Higher = more OOD.

    Computed per sample; the published code subtracts a batch mean instead (its MI is a bug that
    ``faithful`` evaluation may reproduce elsewhere, never here).
    """
    probs = logits.softmax(dim=-1)
    return (_entropy(probs.mean(dim=0)) - _entropy(probs).mean(dim=0)).clamp_min(0.0)


def average_energy(logits: Tensor) -> Tensor:
    """Mean member energy ``mean_m -logsumexp_c z_m[c]``. Higher = more OOD."""
    return (-torch.logsumexp(logits, dim=-1)).mean(dim=0)


def average_max_logit(logits: Tensor) -> Tensor:
    """Mean member max logit ``mean_m max_c z_m[c]``. Higher = more ID."""
    return logits.amax(dim=-1).mean(dim=0)


def a2d_score(logits: Tensor) -> Tensor:
    """Mean pairwise A2D disagreement, as the published ``a2d_score_per_sample``. Higher = more OOD.

    ``mean_m mean_{i != m} log(p_i[c_i](1 - p_m[c_i]) + p_m[c_i](1 - p_i[c_i]) + 1e-9)`` with
    ``c_i = argmax p_i``: the log-probability that members i and m disagree about i's top class.
    Zero for a single member.
    """
    members = logits.shape[0]
    if members < 2:
        return logits.new_zeros(logits.shape[1])
    probs = logits.softmax(dim=-1)
    top, classes = probs.max(dim=-1)  # (M, N)
    # others[m, i, n] = p_m[n, c_i[n]]
    index = classes.unsqueeze(0).expand(members, -1, -1).unsqueeze(-1)
    others = probs.unsqueeze(1).expand(-1, members, -1, -1).gather(-1, index).squeeze(-1)
    own = top.unsqueeze(0)
    disagreement = torch.log(own * (1 - others) + others * (1 - own) + A2D_EPS)
    off_diagonal = ~torch.eye(members, dtype=torch.bool, device=logits.device)
    return disagreement[off_diagonal].reshape(members, members - 1, -1).mean(dim=(0, 1))


GEN_GAMMA = 0.1
GEN_TOP_M = 100


def generalized_entropy(logits: Tensor, gamma: float = GEN_GAMMA, top_m: int = GEN_TOP_M) -> Tensor:
    """GEN, ``sum_{top-M c} p[c]^gamma (1 - p[c])^gamma`` with ``p = softmax(mean_m z_m)``. Higher = more OOD.

    The generalized entropy of Liu, Lochman & Zach (CVPR 2023, Eq. 6) applied to the ensemble
    prediction (the softmax of the mean logit, as `bma_confidence`), with the paper's defaults
    ``gamma = 0.1`` and ``M = 100`` (M is clipped to the number of classes C). It is largest for a
    flat prediction; the official code returns its negation as an ID score.

    Args:
        logits: ``(M, N, C)`` member logits.
        gamma: exponent, in (0, 1).
        top_m: number of largest probabilities summed.

    Returns:
        ``(N,)`` scores in ``(0, min(M, C) * 4^-gamma]``.

    Example:
        >>> flat, peaked = torch.zeros(1, 1, 4), torch.tensor([[[9.0, 0.0, 0.0, 0.0]]])
        >>> bool(generalized_entropy(flat) > generalized_entropy(peaked))
        True
    """
    if not 0 < gamma < 1:
        raise ValueError(f"GEN needs 0 < gamma < 1, got {gamma!r}")
    if top_m < 1:
        raise ValueError(f"GEN needs top_m >= 1, got {top_m!r}")
    probs = logits.mean(dim=0).softmax(dim=-1)
    top = probs.topk(min(top_m, probs.shape[-1]), dim=-1).values
    return (top.pow(gamma) * (1 - top).pow(gamma)).sum(dim=-1)


@dataclass(frozen=True)
class Score:
    """A per-sample score and its orientation.

    Attributes:
        name: key in `SCORES`.
        function: member logits ``(M, N, C)`` -> ``(N,)``.
        higher_is_ood: the direction of the score.
        label: name in tables.
        needs_members: the score measures disagreement between members, so a one-member model (the
            backbone's own head) has none: it is constant there and left out of its tables.
    """

    name: str
    function: Callable[[Tensor], Tensor]
    higher_is_ood: bool
    label: str
    needs_members: bool = False


SCORES: dict[str, Score] = {
    score.name: score
    for score in (
        Score("pds", pds, True, "PDS", needs_members=True),
        Score("num_unique", num_unique, True, "#unique", needs_members=True),
        Score("bma", bma_confidence, False, "BMA (MSP of mean logit)"),
        Score("mean_prob_msp", mean_probability_confidence, False, "MSP of mean probability"),
        Score("member_msp", mean_member_confidence, False, "mean member MSP"),
        Score("predictive_entropy", predictive_entropy, True, "predictive entropy"),
        Score("expected_entropy", expected_entropy, True, "expected entropy"),
        Score("mutual_information", mutual_information, True, "mutual information", needs_members=True),
        Score("energy", average_energy, True, "mean energy"),
        Score("max_logit", average_max_logit, False, "mean max logit"),
        Score("a2d", a2d_score, True, "A2D score", needs_members=True),
        Score("gen", generalized_entropy, True, "GEN"),
    )
}


def compute_scores(logits: Tensor, names: list[str] | None = None) -> dict[str, Tensor]:
    """Evaluate several scores on the same member logits.

    Args:
        logits: ``(M, N, C)``.
        names: keys of `SCORES`; all of them when omitted.

    Returns:
        name -> ``(N,)`` scores.
    """
    names = list(SCORES) if names is None else names
    unknown = [name for name in names if name not in SCORES]
    if unknown:
        raise KeyError(f"unknown scores {unknown}; choose from {list(SCORES)}")
    return {name: SCORES[name].function(logits) for name in names}
