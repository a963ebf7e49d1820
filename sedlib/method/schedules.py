"""The pair schedules of SED: which members meet on which rows in each training step (`StepPlan`).

Paper: Rubinstein et al., arXiv:2409.16797, Sec. 3.3 ("stochastic sum"). `plan_epoch` draws one epoch's
steps from the epoch's seed, so a run is reproducible and a plan can be made ahead of training (the
benchmark times steps on plans alone); `sedlib.method.train` executes them.

Pair schedules (what one *step* does; a *pair-step* is one pair of members on one mini-batch):

``iid`` (published)
    Two distinct members, drawn uniformly, run on the batch; only they are updated. The other
    members' weights and optimiser state stay bit-identical (no weight decay, no momentum).
``matching``
    Every round draws a random perfect matching of the members and runs its M/2 pairs in one
    batched step, each pair on its own mini-batch. Every member is updated once per round, the same
    number of updates as ``iid`` in expectation, with M/2 times the parallelism. With odd M one
    member, drawn at random each round, sits the round out. A round that meets the short last batch
    of an epoch runs it as a separate step with the next pair of the same matching.
``all``
    Every pair of members, each with random roles, on the same batch (the O(M^2) all-pairs
    schedule of naive A2D, here with SED's hardness weights). Each member's gradient is the mean over
    the M-1 pairs it belongs to, so its task term has the same scale as under the other schedules.

The baselines of the paper (Sec. 3) run in the same loop:

``independent`` (deep ensemble; with M = 1 a single model)
    Every member trains on every mini-batch with its own task loss and no repulsion (``lam`` must be
    0). The step minimises the sum over members of their mean cross-entropy, so each member's
    update is the one it would get training alone with the same learning rate. In a `StepPlan` each
    member forms a "pair" with itself, so the log's ``pair_steps`` counts member-steps.
Naive A2D / naive DivDis
    ``schedule: all``, ``disagreement_data: unlabelled``, ``hardness: false`` and ``kernel: a2d`` or
    ``divdis``: cross-entropy on the labelled batch plus the repulsion over all pairs on a batch of
    ``batch_size`` rows of an unlabelled disagreement set (`EnsembleTrainer.fit`'s
    ``unlabelled_features``), without hardness weights. Each step reads the next rows of a shuffle
    of the unlabelled set drawn per epoch (from the epoch seed, by its own generator, so the
    labelled shuffle and pairs are unchanged); it is reshuffled whenever it runs out.

``kernel: divdis`` replaces A2D by the pairwise mutual information of the members' predictions over
the batch (DivDis); with hardness weights the samples are reweighted by alpha inside the MI and it
is scaled by the batch mean of alpha (`sedlib.method.losses.divdis_pair_repulsion`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from sedlib.config.training import TRAIN_SCHEDULES


@dataclass(frozen=True)
class StepPlan:
    """What one training step does.

    Attributes:
        rows: ``(G, B)`` row indices into the current pass, one mini-batch per group.
        members: ``(k,)`` active members, sorted.
        member_group: ``(k,)`` the group (mini-batch) each active member reads.
        pairs: ``(P, 2)`` positions into ``members``; column 0 is the member whose argmax A2D uses.
            Under ``independent`` every member is paired with itself (``P = M`` member-steps).
        pairs_per_member: how many of the step's pairs each active member belongs to.
        member_ids: ``members`` as host integers, so that the optimiser never reads the device.
        disagreement_rows: ``(G, B_u)`` rows of the unlabelled disagreement set, one batch per group,
            or None (``disagreement_data: train``); see `plan_disagreement`.
    """

    rows: Tensor
    members: Tensor
    member_group: Tensor
    pairs: Tensor
    pairs_per_member: int
    member_ids: tuple[int, ...]
    disagreement_rows: Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return self.pairs.shape[0]

    def to(self, device: torch.device) -> StepPlan:
        """The same plan with its index tensors on ``device``."""
        return dataclasses.replace(
            self,
            rows=self.rows.to(device),
            members=self.members.to(device),
            member_group=self.member_group.to(device),
            pairs=self.pairs.to(device),
            disagreement_rows=None if self.disagreement_rows is None else self.disagreement_rows.to(device),
        )


_PLAN_TENSORS = ("rows", "members", "member_group", "pairs")


_OPTIONAL_PLAN_TENSORS = ("disagreement_rows",)


def plans_to(plans: list[StepPlan], device: torch.device) -> list[StepPlan]:
    """Move an epoch of plans to ``device`` in one transfer (an epoch has ~10^5 steps at paper scale).

    The index tensors of all plans are concatenated, copied once, and split back into views.
    """
    device = torch.device(device)
    if not plans or all(plan.rows.device == device for plan in plans):
        return plans
    return _map_plan_tensors(plans, lambda flat: flat.to(device))


def _map_plan_tensors(plans: list[StepPlan], function) -> list[StepPlan]:
    """Apply ``function`` once to all index tensors of ``plans``, concatenated; rebuild the plans from views."""
    names = [
        [name for name in _PLAN_TENSORS + _OPTIONAL_PLAN_TENSORS if getattr(plan, name) is not None] for plan in plans
    ]
    parts = [getattr(plan, name) for plan, plan_names in zip(plans, names) for name in plan_names]
    mapped = function(torch.cat([part.reshape(-1) for part in parts])).split([part.numel() for part in parts])
    views = iter(view.view(part.shape) for view, part in zip(mapped, parts))
    return [
        dataclasses.replace(plan, **{name: next(views) for name in plan_names})
        for plan, plan_names in zip(plans, names)
    ]


def _plan_step(rows: Tensor, pair_members: Tensor, pair_group: Tensor, pairs_per_member: int) -> StepPlan:
    members = pair_members.flatten().unique()
    positions = torch.searchsorted(members, pair_members)
    member_group = torch.empty_like(members)
    member_group[positions.flatten()] = pair_group.repeat_interleave(2)
    return StepPlan(rows, members, member_group, positions, pairs_per_member, tuple(members.tolist()))


def plan_epoch(
    schedule: str, num_rows: int, num_members: int, batch_size: int, generator: torch.Generator
) -> list[StepPlan]:
    """Draw the steps of one epoch: the shuffle, the pairs and their roles.

    Args:
        schedule: ``iid``, ``matching``, ``all`` or ``independent``.
        num_rows: rows in the pass.
        num_members: M >= 2 (M >= 1 for ``independent``).
        batch_size: rows per mini-batch.
        generator: CPU generator; the same state gives the same plan.

    Returns:
        The epoch's steps in order.
    """
    if schedule not in TRAIN_SCHEDULES:
        raise ValueError(f"schedule must be one of {TRAIN_SCHEDULES}, got {schedule!r}")
    if num_members < (1 if schedule == "independent" else 2):
        raise ValueError(
            f"the pair schedules need at least 2 members, got {num_members}; use schedule 'independent' for one model"
        )
    batches = torch.randperm(num_rows, generator=generator).split(batch_size)
    one_group = torch.zeros(1, dtype=torch.long)
    if schedule == "independent":
        selves = torch.arange(num_members)[:, None].repeat(1, 2)
        template = _plan_step(batches[0][None], selves, one_group.expand(num_members), 1)
        return [dataclasses.replace(template, rows=batch[None]) for batch in batches]
    if schedule == "iid":
        return [
            _plan_step(batch[None], torch.randperm(num_members, generator=generator)[:2][None], one_group, 1)
            for batch in batches
        ]
    if schedule == "all":
        first, second = torch.triu_indices(num_members, num_members, offset=1)
        plans = []
        for batch in batches:
            swap = torch.rand(first.numel(), generator=generator) < 0.5
            pair_members = torch.stack((torch.where(swap, second, first), torch.where(swap, first, second)), dim=1)
            plans.append(_plan_step(batch[None], pair_members, one_group.expand(first.numel()), num_members - 1))
        return plans
    pairs_per_round = num_members // 2
    plans = []
    for start in range(0, len(batches), pairs_per_round):
        round_batches = batches[start : start + pairs_per_round]
        matching = torch.randperm(num_members, generator=generator)[: 2 * pairs_per_round].view(-1, 2)
        full = [batch for batch in round_batches if len(batch) == batch_size]
        if full:
            plans.append(_plan_step(torch.stack(full), matching[: len(full)], torch.arange(len(full)), 1))
        if len(full) < len(round_batches):
            short = round_batches[len(full)]
            plans.append(_plan_step(short[None], matching[len(full) : len(full) + 1], one_group, 1))
    return plans


def plan_disagreement(
    plans: list[StepPlan], num_rows: int, batch_size: int, generator: torch.Generator
) -> list[StepPlan]:
    """Give every step ``batch_size`` rows of the unlabelled disagreement set per mini-batch (group).

    The rows are read in order from a stream of shuffles of the set (a new shuffle whenever the
    previous one runs out), so within a shuffle no row repeats.

    Args:
        plans: the epoch's steps from `plan_epoch`.
        num_rows: rows of the unlabelled set (>= 1).
        batch_size: rows per unlabelled batch.
        generator: CPU generator, separate from the one of `plan_epoch`.

    Returns:
        The plans with ``disagreement_rows`` set, ``(G, batch_size)`` each.
    """
    groups = [plan.rows.shape[0] for plan in plans]
    needed = sum(groups) * batch_size
    if not needed:
        return plans
    shuffles = -(-needed // num_rows)
    stream = torch.cat([torch.randperm(num_rows, generator=generator) for _ in range(shuffles)])[:needed]
    chunks = stream.split([g * batch_size for g in groups])
    return [
        dataclasses.replace(plan, disagreement_rows=chunk.view(g, batch_size))
        for plan, chunk, g in zip(plans, chunks, groups)
    ]
