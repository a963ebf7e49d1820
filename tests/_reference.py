"""An independent, published-style implementation used as the reference in tests.

One `torch.nn` module per member (LayerNorm, Linear, GELU), `torch.optim` optimisers with
``zero_grad(set_to_none=True)`` and the SED objective written out from its formula, as in the
authors' code. `sedlib` must compute the same thing with stacked parameters.
"""

import math

import torch
from torch import nn

from sedlib.config import TrainConfig
from sedlib.method.ensemble import HeadEnsemble
from sedlib.method.schedules import StepPlan


class ReferenceHead(nn.Module):
    def __init__(self, ensemble: HeadEnsemble, member: int) -> None:
        super().__init__()
        c = ensemble.config
        self.norm2 = nn.LayerNorm(c.feature_dim, eps=c.norm_eps)
        self.fc1 = nn.Linear(c.feature_dim, c.hidden_dim)
        self.fc2 = nn.Linear(c.hidden_dim, c.feature_dim)
        self.gamma = nn.Parameter(torch.empty(c.feature_dim))
        self.norm = nn.LayerNorm(c.feature_dim, eps=c.norm_eps)
        self.head = nn.Linear(c.feature_dim, c.num_classes)
        with torch.no_grad():
            for name, p in self.stacked_names().items():
                p.copy_(ensemble.get_parameter(name)[member])

    def stacked_names(self) -> dict:
        return {
            "norm2.weight": self.norm2.weight, "norm2.bias": self.norm2.bias,
            "mlp.fc1.weight": self.fc1.weight, "mlp.fc1.bias": self.fc1.bias,
            "mlp.fc2.weight": self.fc2.weight, "mlp.fc2.bias": self.fc2.bias,
            "ls2.gamma": self.gamma, "norm.weight": self.norm.weight, "norm.bias": self.norm.bias,
            "head.weight": self.head.weight, "head.bias": self.head.bias,
        }  # fmt: skip

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.gamma * self.fc2(nn.functional.gelu(self.fc1(self.norm2(h))))
        return self.head(self.norm(h))


def reference_heads(ensemble: HeadEnsemble) -> nn.ModuleList:
    return nn.ModuleList(ReferenceHead(ensemble, m) for m in range(ensemble.num_members))


def reference_hardness(member_logits, labels):
    """alpha_n = e_n / mean(e)^2 with e_n the CE of the mean of the members' logits, sample by sample."""
    with torch.no_grad():
        mean_logits = sum(member_logits) / len(member_logits)
        errors = torch.stack([torch.logsumexp(row, 0) - row[y] for row, y in zip(mean_logits, labels)])
        return errors / errors.mean() ** 2


def reference_pair_loss(logits_a, logits_b, labels, alpha, lam, kappa, smoothing):
    """(1 - lam) T + kappa lam mean(alpha A2D), written out sample by sample from the formulas."""
    classes = logits_a.shape[-1]
    target = torch.full_like(logits_a, smoothing / classes)
    target[torch.arange(len(labels)), labels] += 1 - smoothing
    task = sum(-(target * torch.log_softmax(z, dim=-1)).sum(dim=-1).mean() for z in (logits_a, logits_b)) / 2
    p_a, p_b = torch.softmax(logits_a, -1), torch.softmax(logits_b, -1)
    a2d = []
    for n in range(len(labels)):
        c = int(torch.argmax(p_a[n]))
        a, b = p_a[n, c], p_b[n, c]
        a2d.append(-torch.log(a * (1 - b) + b * (1 - a) + 1e-9))
    repulsion = (alpha * torch.stack(a2d)).mean() if kappa * lam > 0 else torch.zeros(())
    return (1 - lam) * task + kappa * lam * repulsion


def reference_optimizer(heads: nn.ModuleList, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            heads.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(
        heads.parameters(), lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
    )


def reference_step(heads, optimizer, plan: StepPlan, features, labels, config: TrainConfig) -> None:
    """One planned step: every pair's loss on its own batch, summed / pairs per member, one update.

    The hardness weights of a batch come from all members that read it.
    """
    optimizer.zero_grad(set_to_none=True)
    members = plan.members.tolist()
    groups = plan.member_group.tolist()
    logits, alphas = {}, {}
    for group, rows in enumerate(plan.rows):
        readers = [position for position, g in enumerate(groups) if g == group]
        for position in readers:
            logits[position] = heads[members[position]](features[rows])
        alphas[group] = reference_hardness([logits[position] for position in readers], labels[rows])
    total = 0.0
    for a, b in plan.pairs.tolist():
        group = groups[a]
        total = total + reference_pair_loss(
            logits[a], logits[b], labels[plan.rows[group]], alphas[group],
            config.lam, config.kappa, config.label_smoothing,
        )  # fmt: skip
    (total / plan.pairs_per_member).backward()
    optimizer.step()


def cosine_lr(lr: float, epoch: int, period: int) -> float:
    return lr * (1 + math.cos(math.pi * epoch / period)) / 2


def reference_mutual_information(probs_a, probs_b, alpha=None):
    """mean(alpha) * KL(P_ab || P_a x P_b) of one pair, P weighted by alpha / sum(alpha), sample by sample."""
    batch = len(probs_a)
    alpha = torch.ones(batch, dtype=probs_a.dtype) if alpha is None else alpha
    weights = alpha / alpha.sum()
    joint = sum(weights[n] * torch.outer(probs_a[n], probs_b[n]) for n in range(batch))
    marginal_a = sum(weights[n] * probs_a[n] for n in range(batch))
    marginal_b = sum(weights[n] * probs_b[n] for n in range(batch))
    independent = torch.outer(marginal_a, marginal_b)
    return alpha.mean() * (joint * (torch.log(joint) - torch.log(independent))).sum()


def reference_baseline_step(heads, optimizer, plan: StepPlan, features, labels, config: TrainConfig, unlabelled=None):
    """One planned step of the baselines' settings, written out with one module per member.

    ``independent``: the sum over members of each member's own (smoothed) cross-entropy. Otherwise
    every pair's ``(1 - lam) T + kappa lam R`` summed and divided by the pairs per member, where R is
    A2D (mean over samples of alpha * A2D, roles from the plan) or the DivDis MI
    (`reference_mutual_information`), on the labelled batch or on the plan's unlabelled rows, and
    alpha is SED's hardness weight of the members reading the batch or 1 (``hardness: false``).
    """
    optimizer.zero_grad(set_to_none=True)
    members = plan.members.tolist()
    groups = plan.member_group.tolist()

    def task_loss(z, y):
        target = torch.full_like(z, config.label_smoothing / z.shape[-1])
        target[torch.arange(len(y)), y] += 1 - config.label_smoothing
        return -(target * torch.log_softmax(z, dim=-1)).sum(dim=-1).mean()

    if config.schedule == "independent":
        rows = plan.rows[0]
        total = sum(task_loss(heads[m](features[rows]), labels[rows]) for m in members)
        total.backward()
        optimizer.step()
        return
    logits, far_logits, alphas = {}, {}, {}
    for group, rows in enumerate(plan.rows):
        readers = [position for position, g in enumerate(groups) if g == group]
        for position in readers:
            logits[position] = heads[members[position]](features[rows])
            if unlabelled is not None:
                far_logits[position] = heads[members[position]](unlabelled[plan.disagreement_rows[group]])
        if config.hardness:
            alphas[group] = reference_hardness([logits[position] for position in readers], labels[rows])
        else:
            alphas[group] = None
    total = 0.0
    for a, b in plan.pairs.tolist():
        group = groups[a]
        y = labels[plan.rows[group]]
        task = (task_loss(logits[a], y) + task_loss(logits[b], y)) / 2
        z_a, z_b = (far_logits[a], far_logits[b]) if unlabelled is not None else (logits[a], logits[b])
        alpha = alphas[group] if alphas[group] is not None else torch.ones(len(z_a), dtype=z_a.dtype)
        p_a, p_b = torch.softmax(z_a, -1), torch.softmax(z_b, -1)
        if config.kernel == "divdis":
            repulsion = reference_mutual_information(p_a, p_b, alphas[group])
        else:
            a2d = []
            for n in range(len(z_a)):
                c = int(torch.argmax(p_a[n]))
                a2d.append(-torch.log(p_a[n, c] * (1 - p_b[n, c]) + p_b[n, c] * (1 - p_a[n, c]) + 1e-9))
            repulsion = (alpha * torch.stack(a2d)).mean()
        total = total + (1 - config.lam) * task + config.kappa * config.lam * repulsion
    (total / plan.pairs_per_member).backward()
    optimizer.step()


def divdis_repulsion(probs: torch.Tensor, pair_chunk: int = 32) -> torch.Tensor:
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
