"""SGD and AdamW over stacked member parameters that can update a subset of members.

In the published SED code every member is a separate module and only the two members of a step
receive gradients; PyTorch's SGD and AdamW skip parameters whose gradient is None, so the other
members get no weight decay, no momentum and no Adam step (their bias correction runs on their own
update count). `torch.optim` cannot do that for rows of one stacked tensor, so these optimisers
reproduce `torch.optim.SGD` (dampening 0, no Nesterov) and `torch.optim.AdamW` row-wise: the rows
named by ``members`` move, all other rows and their optimiser state stay bit-identical. The tests
check both against `torch.optim` on per-member modules.

Both subclass `torch.optim.Optimizer`, so `torch.optim.lr_scheduler` schedules work unchanged.

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
    """Shared step logic: update the selected rows of every parameter in place, run by run."""

    _state_names: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Tensor], defaults: dict) -> None:
        super().__init__(params, defaults)
        for group in self.param_groups:
            members = {p.shape[0] for p in group["params"]}
            if len(members) != 1:
                raise ValueError(f"all parameters must share the leading member axis, got sizes {sorted(members)}")

    def _state(self, p: Tensor) -> dict[str, Tensor]:
        state = self.state[p]
        if not state:
            for name in self._state_names:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
        return state

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor], members: Tensor | Sequence[int] | None = None) -> None:  # type: ignore[override]
        """Update the rows ``members`` of every parameter with ``grads``.

        The rows are updated in place through views, so nothing of the size of a member is copied;
        the gradients are used as scratch space and are overwritten.

        Args:
            grads: one gradient per parameter (in ``param_groups`` order), shaped ``(k, ...)`` for
                ``k`` selected members, or ``(M, ...)`` when ``members`` is None.
            members: ``(k,)`` distinct member indices in increasing order (a CPU tensor or a
                sequence: they are read on the host), or None for all members. Consecutive members
                are updated together, so a step costs kernels per run of members, not per member.
        """
        params = [p for group in self.param_groups for p in group["params"]]
        if len(grads) != len(params):
            raise ValueError(f"got {len(grads)} gradients for {len(params)} parameters")
        runs = None if members is None else _contiguous_runs(members)
        grads_left = iter(grads)
        for group in self.param_groups:
            for p in group["params"]:
                grad, state = next(grads_left), self._state(p)
                if runs is None:
                    targets = [(p, grad, state)]
                else:
                    targets = [
                        (
                            p.narrow(0, row, length),
                            grad.narrow(0, position, length),
                            {name: value.narrow(0, row, length) for name, value in state.items()},
                        )
                        for position, row, length in runs
                    ]
                for values, run_grad, run_state in targets:
                    run_state["step"] += 1
                    self._update(group, values, run_grad, run_state)

    def _update(self, group: dict, p: Tensor, grad: Tensor, state: dict[str, Tensor]) -> None:
        raise NotImplementedError


def _contiguous_runs(members: Tensor | Sequence[int]) -> list[tuple[int, int, int]]:
    """``(position in members, first row, length)`` of each run of consecutive member indices."""
    rows = members.tolist() if isinstance(members, Tensor) else [int(member) for member in members]
    if any(later <= earlier for earlier, later in zip(rows, rows[1:])):
        raise ValueError(f"members must be distinct and increasing, got {rows}")
    runs: list[tuple[int, int, int]] = []
    for position, row in enumerate(rows):
        if runs and runs[-1][1] + runs[-1][2] == row:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((position, row, 1))
    return runs


def _per_member(values: Tensor, like: Tensor) -> Tensor:
    """``(k,)`` -> ``(k, 1, ..., 1)`` broadcastable against ``like``."""
    return values.reshape((-1,) + (1,) * (like.dim() - 1))


class MemberSGD(_MemberOptimizer):
    """`torch.optim.SGD` (momentum, weight decay; dampening 0, no Nesterov), row-wise over members.

    Args:
        params: stacked parameters, each ``(M, ...)``.
        lr: learning rate.
        momentum: momentum factor (0.9 in the published 50-model run).
        weight_decay: L2 penalty added to the gradient (1e-4 published).
    """

    _state_names = ("momentum_buffer",)

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def _update(self, group: dict, p: Tensor, grad: Tensor, state: dict[str, Tensor]) -> None:
        if group["weight_decay"]:
            grad.add_(p, alpha=group["weight_decay"])
        if group["momentum"]:
            # A zero buffer times momentum plus the gradient equals torch's first-step clone exactly.
            grad = state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
        p.add_(grad, alpha=-group["lr"])


class MemberAdamW(_MemberOptimizer):
    """`torch.optim.AdamW` row-wise over members, with a step count (bias correction) per member.

    Args:
        params: stacked parameters, each ``(M, ...)``.
        lr: learning rate.
        betas: (beta1, beta2).
        eps: denominator epsilon.
        weight_decay: decoupled weight decay (0.01 is torch's default, 0.1 in two published runs).
    """

    _state_names = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"invalid AdamW settings lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def _update(self, group: dict, p: Tensor, grad: Tensor, state: dict[str, Tensor]) -> None:
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        p.mul_(1 - lr * group["weight_decay"])
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        # Bias corrections in float64, as torch computes them from a Python float.
        steps = state["step"].double()
        correction1 = _per_member((1 - beta1**steps).to(p.dtype), p)
        correction2_sqrt = _per_member((1 - beta2**steps).sqrt().to(p.dtype), p)
        step_size = lr / correction1
        update = state["exp_avg_sq"].sqrt().div_(correction2_sqrt).add_(group["eps"])
        p.sub_(update.reciprocal_().mul_(state["exp_avg"]).mul_(step_size))
