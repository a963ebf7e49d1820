"""SGD and AdamW over stacked member parameters that can update a subset of members.

In the published SED code every member is a separate module and only the two members of a step
receive gradients; PyTorch's SGD and AdamW skip parameters whose gradient is None, so the other
members get no weight decay, no momentum and no Adam step (their bias correction runs on their own
update count). `torch.optim` cannot do that for rows of one stacked tensor, so these optimisers
reproduce `torch.optim.SGD` (dampening 0, no Nesterov) and `torch.optim.AdamW` row-wise: the rows
named by ``members`` move, all other rows and their optimiser state stay bit-identical. The tests
check both against `torch.optim` on per-member modules.

Both subclass `torch.optim.Optimizer`, so `torch.optim.lr_scheduler` schedules work unchanged.
Members may have their own learning rate and weight decay (a deep ensemble with diverse
hyperparameters): ``lr_scale`` multiplies the group's (scheduled) rate per member, and
``member_weight_decay`` replaces the group's decay per member.

Example:
    >>> weight = torch.nn.Parameter(torch.zeros(4, 3))          # 4 members
    >>> opt = MemberSGD([weight], lr=0.1)
    >>> opt.step([torch.ones(2, 3)], members=torch.tensor([0, 2]))
    >>> weight.detach()[:, 0]
    tensor([-0.1000,  0.0000, -0.1000,  0.0000])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


class _MemberOptimizer(torch.optim.Optimizer):
    """Shared step logic: update the selected rows of every parameter in place, run by run.

    A *run* is a block of consecutive selected members; each run is updated by one call of torch's
    fused multi-tensor kernel (``torch._fused_sgd_`` / ``torch._fused_adamw_``, the kernels behind
    ``fused=True`` in `torch.optim`) over the run's views of all parameters, so a step costs one
    kernel per run, reads and writes every element once, and copies nothing.
    """

    _state_names: tuple[str, ...] = ()
    #: AdamW's bias correction reads one step count per kernel call, so its runs must share it.
    _runs_share_step_count = False

    def __init__(
        self,
        params: Iterable[Tensor],
        defaults: dict,
        lr_scale: Sequence[float] | None = None,
        member_weight_decay: Sequence[float] | None = None,
    ) -> None:
        super().__init__(params, defaults)
        sizes = {p.shape[0] for group in self.param_groups for p in group["params"]}
        if len(sizes) != 1:
            raise ValueError(f"all parameters must share the leading member axis, got sizes {sorted(sizes)}")
        (members,) = sizes
        self._lr_scale = self._per_member("lr_scale", lr_scale, members, 1.0)
        self._weight_decay = self._per_member("member_weight_decay", member_weight_decay, members, None)
        self._host_steps: dict[int, list[int]] = {}

    @staticmethod
    def _per_member(name: str, values: Sequence[float] | None, members: int, default) -> list:
        if values is None:
            return [default] * members
        values = [float(v) for v in values]
        if len(values) != members or any(not v >= 0 for v in values):
            raise ValueError(f"{name} must give one value >= 0 per member ({members}), got {values}")
        return values

    def _state(self, p: Tensor) -> dict[str, Tensor]:
        state = self.state[p]
        if not state:
            for name in self._state_names:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
        return state

    def _step_counts(self, index: int, group: dict) -> list[int]:
        """Host copy of the group's per-member step counts (read once from the state, then kept)."""
        if index not in self._host_steps:
            self._host_steps[index] = self._state(group["params"][0])["step"].long().tolist()
        return self._host_steps[index]

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor], members: Tensor | Sequence[int] | None = None) -> None:  # type: ignore[override]
        """Update the rows ``members`` of every parameter with ``grads``.

        The rows are updated in place through views, so nothing of the size of a member is copied;
        the gradients may be used as scratch space.

        Args:
            grads: one gradient per parameter (in ``param_groups`` order), shaped ``(k, ...)`` for
                ``k`` selected members, or ``(M, ...)`` when ``members`` is None.
            members: ``(k,)`` distinct member indices in increasing order (a CPU tensor or a
                sequence: they are read on the host), or None for all members.
        """
        params = [p for group in self.param_groups for p in group["params"]]
        if len(grads) != len(params):
            raise ValueError(f"got {len(grads)} gradients for {len(params)} parameters")
        grads_left = iter(grads)
        for index, group in enumerate(self.param_groups):
            # The fused kernels walk memory in the parameters' layout; autograd may hand back
            # transposed gradients (e.g. of a weight used as w.T), so make them dense first.
            group_grads = [next(grads_left).contiguous() for _ in group["params"]]
            states = [self._state(p) for p in group["params"]]
            rows = list(range(group["params"][0].shape[0])) if members is None else _increasing(members)
            counts = self._step_counts(index, group)
            settings = {
                row: (
                    self._lr_scale[row],
                    group["weight_decay"] if self._weight_decay[row] is None else self._weight_decay[row],
                )
                for row in rows
            }
            keys = {row: (counts[row] if self._runs_share_step_count else 0, *settings[row]) for row in rows}
            for position, row, length in _contiguous_runs(rows, keys.__getitem__):
                for state in states:
                    state["step"].narrow(0, row, length).add_(1)
                scale, decay = settings[row]
                self._update(
                    group,
                    [p.narrow(0, row, length) for p in group["params"]],
                    [g.narrow(0, position, length) for g in group_grads],  # made dense above
                    [{name: value.narrow(0, row, length) for name, value in state.items()} for state in states],
                    lr=group["lr"] * scale,
                    weight_decay=decay,
                )
            for row in rows:
                counts[row] += 1

    def _update(self, group, params, grads, states, lr: float, weight_decay: float):
        """Update one run of members (views) with its learning rate and weight decay."""
        raise NotImplementedError


def _increasing(members: Tensor | Sequence[int]) -> list[int]:
    rows = members.tolist() if isinstance(members, Tensor) else [int(member) for member in members]
    if any(later <= earlier for earlier, later in zip(rows, rows[1:])):
        raise ValueError(f"members must be distinct and increasing, got {rows}")
    return rows


def _contiguous_runs(rows: Sequence[int], key) -> list[tuple[int, int, int]]:
    """``(position in rows, first row, length)`` of each run of consecutive rows with equal ``key(row)``."""
    runs: list[tuple[int, int, int]] = []
    for position, row in enumerate(rows):
        last = runs[-1] if runs else None
        if last and last[1] + last[2] == row and key(row) == key(last[1]):
            runs[-1] = (last[0], last[1], last[2] + 1)
        else:
            runs.append((position, row, 1))
    return runs


class MemberSGD(_MemberOptimizer):
    """`torch.optim.SGD` (momentum, weight decay; dampening 0, no Nesterov), row-wise over members.

    Args:
        params: stacked parameters, each ``(M, ...)``.
        lr: learning rate.
        momentum: momentum factor (0.9 in the published 50-model run).
        weight_decay: L2 penalty added to the gradient (1e-4 published).
        lr_scale: ``(M,)`` per-member factors of ``lr`` (None: all 1).
        member_weight_decay: ``(M,)`` per-member weight decay replacing ``weight_decay`` (None: shared).
    """

    _state_names = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        lr_scale: Sequence[float] | None = None,
        member_weight_decay: Sequence[float] | None = None,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        super().__init__(params, defaults, lr_scale, member_weight_decay)

    def _update(self, group, params, grads, states, lr: float, weight_decay: float):
        # Zero-initialised buffers make every step a plain momentum step: momentum * 0 + grad is
        # exactly torch's first-step clone of the gradient.
        torch._fused_sgd_(
            params,
            grads,
            [state["momentum_buffer"] for state in states] if group["momentum"] else [],
            weight_decay=weight_decay,
            momentum=group["momentum"],
            lr=lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
            is_first_step=False,
        )


class MemberAdamW(_MemberOptimizer):
    """`torch.optim.AdamW` row-wise over members, with a step count (bias correction) per member.

    Args:
        params: stacked parameters, each ``(M, ...)``.
        lr: learning rate.
        betas: (beta1, beta2).
        eps: denominator epsilon.
        weight_decay: decoupled weight decay (0.01 is torch's default, 0.1 in two published runs).
        lr_scale: ``(M,)`` per-member factors of ``lr`` (None: all 1).
        member_weight_decay: ``(M,)`` per-member weight decay replacing ``weight_decay`` (None: shared).
    """

    _state_names = ("exp_avg", "exp_avg_sq")
    _runs_share_step_count = True

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        lr_scale: Sequence[float] | None = None,
        member_weight_decay: Sequence[float] | None = None,
    ):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"invalid AdamW settings lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults, lr_scale, member_weight_decay)

    def _update(self, group, params, grads, states, lr: float, weight_decay: float):
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(
            params,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],
            [state["step"][0] for state in states],  # the run shares one count (see _runs_share_step_count)
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=weight_decay,
            eps=group["eps"],
            amsgrad=False,
            maximize=False,
        )
