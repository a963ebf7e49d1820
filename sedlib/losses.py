"""Losses of SED: task term, hardness weights, A2D disagreement, the DivDis repulsion, the objective.

Paper: Rubinstein, Scimeca, Teney, Oh. *Scalable Ensemble Diversification for OOD Generalization
and Detection*, arXiv:2409.16797 (https://arxiv.org/abs/2409.16797), Sec. 3; the formulas follow
the authors' code (``train/losses.py``: ``DivDisLossWrapper``, ``budget_modifier``,
``a2d_loss_impl``). A2D: Pagliardini et al., *Agree to Disagree*, ICLR 2023
(https://arxiv.org/abs/2202.04414). DivDis: Lee, Yao, Finn, *Diversify and Disambiguate*, ICLR 2023
(https://arxiv.org/abs/2202.03418).

For one pair of members (a, b) on a batch of B samples with labels y, SED minimises::

    L = (1 - lam) * T + kappa * lam * mean_n(alpha_n * A2D_n)
    T       = mean over {a, b} of CE(z_m, y~)              (y~ optionally label-smoothed)
    e_n     = CE((z_a + z_b) / 2, y_n)                     (hard labels, no gradient)
    alpha_n = e_n / (mean_b e_b)^2
    A2D_n   = -log(p_a[c] (1 - p_b[c]) + p_b[c] (1 - p_a[c]) + 1e-9),   c = argmax p_a

``kappa`` is the published ``manual_lambda``. The roles of a and b are drawn at random every step
by the pair schedule (`sedlib.train`), which symmetrises A2D in expectation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

A2D_EPS = 1e-9


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Per-sample cross-entropy, optionally against label-smoothed targets.

    With smoothing eps the target is ``(1 - eps) * onehot(y) + eps / C``, as in the published code
    (and `torch.nn.functional.cross_entropy`).

    Args:
        logits: ``(..., C)``.
        labels: ``(...)`` integer class ids.
        label_smoothing: eps in [0, 1).

    Returns:
        ``(...)`` losses.
    """
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none", label_smoothing=label_smoothing
    )
    return flat.reshape(labels.shape)


@torch.no_grad()
def hardness_weights(member_logits: Tensor, labels: Tensor) -> Tensor:
    """SED's dynamic weights alpha_n: samples the ensemble gets wrong weigh more.

    ``e_n = CE(mean_m z_m, y_n)`` (the ensemble is the mean of logits) and
    ``alpha_n = e_n / (mean_b e_b)^2``, so the batch mean of alpha is ``1 / mean(e)`` (not 1). No
    gradient flows through the weights. Where every ``e_n`` of a batch is exactly 0 the weights are
    0 (the published code has no guard and returns NaN).

    Args:
        member_logits: ``(k, ..., B, C)``, member axis first.
        labels: ``(..., B)``.

    Returns:
        alpha: ``(..., B)``.
    """
    errors = cross_entropy(member_logits.mean(dim=0), labels)
    # A batch the ensemble gets exactly right (every e_n == 0 in float) would give 0/0; it gets alpha = 0.
    squared_mean = errors.mean(dim=-1, keepdim=True).square().clamp_min(torch.finfo(errors.dtype).tiny)
    return errors / squared_mean


def a2d_disagreement(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Per-sample A2D disagreement loss of member b against member a (Pagliardini et al. 2023).

    With ``c = argmax p_a`` the loss is ``-log(p_a[c](1 - p_b[c]) + p_b[c](1 - p_a[c]) + 1e-9)``:
    small when exactly one of the two members puts its mass on c. Gradients reach both members
    (through ``p_a[c]`` and ``p_b[c]``); the roles are not symmetric.

    Args:
        logits_a: ``(..., B, C)``, the member whose argmax defines c.
        logits_b: ``(..., B, C)``.

    Returns:
        ``(..., B)`` losses.
    """
    probs_a = logits_a.softmax(dim=-1)
    probs_b = logits_b.softmax(dim=-1)
    top_a, classes = probs_a.max(dim=-1, keepdim=True)
    top_b = probs_b.gather(-1, classes)
    disagreement = top_a * (1 - top_b) + top_b * (1 - top_a)
    return -torch.log(disagreement + A2D_EPS).squeeze(-1)


def divdis_repulsion(probs: Tensor, pair_chunk: int = 32) -> Tensor:
    """DivDis repulsion: mean over member pairs of the mutual information of their predictions.

    For members i < j on a batch, ``P_ij(c, c') = mean_n p_i[n, c] p_j[n, c']`` and
    ``MI_ij = KL(P_ij || P_i ⊗ P_j)`` with the batch marginals ``P_i = mean_n p_i[n]`` (Lee et al.
    2023, Eq. 2). Minimising it makes the members' predictions statistically independent. Pairs are
    processed ``pair_chunk`` at a time: memory is ``pair_chunk * C * C``, never ``B * M * M * C * C``.

    Args:
        probs: ``(M, B, C)`` member probabilities, M >= 2.
        pair_chunk: number of pairs whose joint distributions are formed at once.

    Returns:
        Scalar mean mutual information (nats).
    """
    members, batch, _ = probs.shape
    if members < 2:
        raise ValueError(f"divdis_repulsion needs at least 2 members, got {members}")
    first, second = torch.triu_indices(members, members, offset=1, device=probs.device)
    marginals = probs.mean(dim=1)
    total = probs.new_zeros(())
    for start in range(0, first.numel(), pair_chunk):
        i, j = first[start : start + pair_chunk], second[start : start + pair_chunk]
        joint = torch.bmm(probs[i].transpose(1, 2), probs[j]) / batch
        independent = marginals[i][:, :, None] * marginals[j][:, None, :]
        total = total + (torch.xlogy(joint, joint) - torch.xlogy(joint, independent)).sum()
    return total / first.numel()


class PairLoss(NamedTuple):
    """Per-pair parts of the SED objective, each ``(P,)``."""

    total: Tensor
    task: Tensor
    repulsion: Tensor


def sed_pair_loss(
    logits_a: Tensor,
    logits_b: Tensor,
    labels: Tensor,
    lam: float,
    kappa: float,
    label_smoothing: float = 0.0,
    alpha: Tensor | None = None,
) -> PairLoss:
    """The SED objective for P pairs of members, each pair on its own batch.

    ``L = (1 - lam) * T + kappa * lam * mean_n(alpha_n * A2D_n)`` per pair (see the module docstring).
    The repulsion is not computed when its weight ``kappa * lam`` is 0 (it is reported as 0); the
    published code skips it for ``lam == 0`` and multiplies it by 0 for ``kappa == 0``.

    Args:
        logits_a: ``(P, B, C)``, the member of each pair in the argmax role.
        logits_b: ``(P, B, C)``.
        labels: ``(P, B)`` hard labels.
        lam: the convex weight lambda in [0, 1].
        kappa: the published ``manual_lambda`` (>= 0).
        label_smoothing: eps for the task term only.
        alpha: ``(P, B)`` hardness weights when more members than the pair see the batch; by
            default they come from the pair's own mean logit.

    Returns:
        `PairLoss` with ``total``, ``task`` (T) and ``repulsion`` (R, after the alpha weighting,
        before scaling), each ``(P,)``.
    """
    task = (
        cross_entropy(logits_a, labels, label_smoothing).mean(dim=-1)
        + cross_entropy(logits_b, labels, label_smoothing).mean(dim=-1)
    ) / 2
    if kappa * lam == 0:
        return PairLoss((1 - lam) * task, task, torch.zeros_like(task))
    if alpha is None:
        alpha = hardness_weights(torch.stack((logits_a, logits_b)), labels)
    repulsion = (alpha * a2d_disagreement(logits_a, logits_b)).mean(dim=-1)
    return PairLoss((1 - lam) * task + kappa * lam * repulsion, task, repulsion)
