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
by the pair schedule (`sedlib.method.train`), which symmetrises A2D in expectation.

With the DivDis kernel (``kernel="divdis"``) the per-pair repulsion is the mutual information of the
pair's predictions over the batch instead (`divdis_pair_repulsion`). The hardness weights are
per-sample and MI is a batch statistic; SED-DivDis applies them the way the A2D term does: since
``mean_n(alpha_n A2D_n) = mean(alpha) * sum_n (alpha_n / sum(alpha)) A2D_n``, the batch's samples are
reweighted by ``alpha_n / sum(alpha)`` when forming the joint and the marginals of the MI, and the
MI is scaled by the batch mean of alpha (``1 / mean(e)``, the paper's "trust the ensemble more as
it converges" strength). With ``alpha = 1`` this is plain DivDis (Lee et al. 2023). The published
code cannot combine DivDis with the hardness weights, so this is this library's definition.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from sedlib.config.training import KERNELS

A2D_EPS = 1e-9


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float | Tensor = 0.0) -> Tensor:
    """Per-sample cross-entropy, optionally against label-smoothed targets.

    With smoothing eps the target is ``(1 - eps) * onehot(y) + eps / C``, as in the published code
    (and `torch.nn.functional.cross_entropy`).

    Args:
        logits: ``(..., C)``.
        labels: ``(...)`` integer class ids.
        label_smoothing: eps in [0, 1), or a tensor of eps broadcastable to ``labels`` (e.g.
            ``(M, 1)`` for one eps per member of ``(M, B)`` labels).

    Returns:
        ``(...)`` losses.
    """
    if isinstance(label_smoothing, Tensor):
        log_probs = F.log_softmax(logits.float(), dim=-1)
        nll = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        return (1 - label_smoothing) * nll - label_smoothing * log_probs.mean(dim=-1)
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


def divdis_pair_repulsion(
    logits_a: Tensor, logits_b: Tensor, alpha: Tensor | None = None, pair_chunk: int = 32
) -> Tensor:
    """DivDis repulsion of P pairs of members, each pair on its own batch, optionally hardness-weighted.

    For a pair (a, b) on a batch with sample weights ``q_n = alpha_n / sum(alpha)`` (uniform without
    ``alpha``): ``P_ab(c, c') = sum_n q_n p_a[n, c] p_b[n, c']``, marginals ``P_a = sum_n q_n p_a[n]``,
    and the repulsion is ``mean_n(alpha_n) * KL(P_ab || P_a ⊗ P_b)`` (nats). Without ``alpha`` it is
    the mutual information of Lee et al. 2023 (Eq. 2), the per-pair term of their all-pairs repulsion; with
    SED's hardness weights the samples the ensemble gets wrong dominate the distributions and the
    strength follows ``mean(alpha)`` as the A2D term's does (see the module docstring). The pair is
    symmetric (no roles). The MI is computed in at least float32 with autocast off; logarithms are
    clamped at the smallest normal number so that underflowed probabilities give finite gradients.

    Args:
        logits_a: ``(P, B, C)``.
        logits_b: ``(P, B, C)``.
        alpha: ``(P, B)`` non-negative sample weights (no gradient), or None for uniform ones.
        pair_chunk: pairs whose ``C x C`` joints are formed at once.

    Returns:
        ``(P,)`` repulsions; a pair whose weights are all 0 gets 0.
    """
    with torch.autocast(logits_a.device.type, enabled=False):
        dtype = torch.promote_types(logits_a.dtype, torch.float32)
        probs_a = logits_a.to(dtype).softmax(dim=-1)
        probs_b = logits_b.to(dtype).softmax(dim=-1)
        if alpha is None:
            strength = probs_a.new_ones(probs_a.shape[0])
            weights = probs_a.new_full(probs_a.shape[:2], 1.0 / probs_a.shape[1])
        else:
            alpha = alpha.detach().to(dtype)
            strength = alpha.mean(dim=-1)
            weights = alpha / alpha.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        tiny = torch.finfo(dtype).tiny
        values = []
        for start in range(0, probs_a.shape[0], pair_chunk):
            part = slice(start, start + pair_chunk)
            weighted_a = probs_a[part] * weights[part, :, None]
            joint = torch.bmm(weighted_a.transpose(1, 2), probs_b[part])  # (p, C, C)
            marginal_a = weighted_a.sum(dim=1)
            marginal_b = (probs_b[part] * weights[part, :, None]).sum(dim=1)
            independent = marginal_a[:, :, None] * marginal_b[:, None, :]
            # the log of the ratio, not a difference of logs: a small MI of many classes stays accurate in float32
            ratio = joint.clamp_min(tiny) / independent.clamp_min(tiny)
            values.append((joint * ratio.log()).sum(dim=(1, 2)))
        return strength * torch.cat(values)


def pair_repulsion(logits_a: Tensor, logits_b: Tensor, alpha: Tensor, kernel: str = "a2d") -> Tensor:
    """Per-pair repulsion R of P pairs, each on its own batch, weighted by the hardness weights.

    Args:
        logits_a: ``(P, B, C)``, for A2D the member of each pair in the argmax role.
        logits_b: ``(P, B, C)``.
        alpha: ``(P, B)`` sample weights (ones for unweighted repulsion).
        kernel: ``a2d`` (``mean_n(alpha_n A2D_n)``) or ``divdis`` (`divdis_pair_repulsion`).

    Returns:
        ``(P,)`` repulsions.
    """
    if kernel == "a2d":
        return (alpha * a2d_disagreement(logits_a, logits_b)).mean(dim=-1)
    if kernel == "divdis":
        return divdis_pair_repulsion(logits_a, logits_b, alpha)
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


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
    kernel: str = "a2d",
    repulsion_logits: tuple[Tensor, Tensor] | None = None,
) -> PairLoss:
    """The SED objective for P pairs of members, each pair on its own batch.

    ``L = (1 - lam) * T + kappa * lam * R`` per pair with ``R = mean_n(alpha_n * A2D_n)`` (see the
    module docstring), or the weighted DivDis MI with ``kernel="divdis"``. The repulsion is not
    computed when its weight ``kappa * lam`` is 0 (it is reported as 0); the published code skips it
    for ``lam == 0`` and multiplies it by 0 for ``kappa == 0``.

    Args:
        logits_a: ``(P, B, C)``, the member of each pair in the argmax role.
        logits_b: ``(P, B, C)``.
        labels: ``(P, B)`` hard labels.
        lam: the convex weight lambda in [0, 1].
        kappa: the published ``manual_lambda`` (>= 0).
        label_smoothing: eps for the task term only.
        alpha: ``(P, B)`` hardness weights (``(P, B')`` with ``repulsion_logits``) when more members
            than the pair see the batch, or ones for no weighting; by default they come from the
            pair's own mean logit.
        kernel: ``a2d`` or ``divdis`` (see `pair_repulsion`).
        repulsion_logits: ``(P, B', C)`` logits of the pair members on other samples (e.g. an
            unlabelled disagreement batch) on which the repulsion is computed instead; ``alpha``
            must then be given, since the hardness weights need labels.

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
    if repulsion_logits is not None:
        if alpha is None:
            raise ValueError("sed_pair_loss: repulsion_logits need explicit alpha (the hardness weights need labels)")
        logits_a, logits_b = repulsion_logits
    elif alpha is None:
        alpha = hardness_weights(torch.stack((logits_a, logits_b)), labels)
    repulsion = pair_repulsion(logits_a, logits_b, alpha, kernel)
    return PairLoss((1 - lam) * task + kappa * lam * repulsion, task, repulsion)
