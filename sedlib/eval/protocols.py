"""Two evaluation protocols for test sets that cover a subset of the classes (ImageNet-A / -R).

ImageNet-A and ImageNet-R (Hendrycks et al., arXiv:1907.07174 and arXiv:2006.16241) hold images of
K = 200 of the 1000 ImageNet classes; their labels are positions 0..K-1 in the sorted subset, and a
``mask`` of K sorted class indices says which of the C = 1000 logit columns they are. A classifier
trained on all C classes can be scored on them in two ways:

* ``"faithful"``: the protocol of the published SED code (Rubinstein et al., arXiv:2409.16797;
  ``local_models/wrappers.py::ImagenetARMapper``, reference notes on the original code §5.4 and §8
  items 9-12). Each member takes its argmax over **all C classes**; that class becomes a one-hot
  vector cut down to the K subset columns, so a prediction outside the subset is an all-zero
  vector and always wrong. The "ensemble" is the argmax of the mean of these one-hot vectors: a
  **plurality vote over the in-subset votes**, out-of-subset votes discarded, ties to the lowest
  subset position, and no prediction (``-1``, wrong) when no member votes in the subset. The soup
  is scored like a member. The vote can be right when most members are wrong, so the ensemble
  gains far more over its members than under the standard protocol (50 heads on ImageNet-A: 50.6
  ensemble vs 39.1 best single vs 39.4 soup), and the numbers are not comparable across the
  single / soup / ensemble rows. The published tables (§7.1) use this protocol.
* ``"standard"``: the protocol of Hendrycks et al.: restrict the logits to the K subset columns
  **before** any argmax or softmax; every member, the soup and the ensemble (mean of the
  restricted logits) then predict one of the K classes.

Without a class subset both protocols are the same.

Example:
    >>> logits = torch.tensor([[[0.0, 5.0, 1.0]], [[0.0, 1.0, 5.0]], [[5.0, 0.0, 1.0]]])  # M=3, B=1, C=3
    >>> mask = torch.tensor([0, 2])
    >>> faithful_member_predictions(logits, mask)
    tensor([[-1],
            [ 1],
            [ 0]])
    >>> faithful_vote(faithful_member_predictions(logits, mask), num_classes=2)
    tensor([0])
    >>> standard_logits(logits, mask).mean(dim=0).argmax(dim=-1)
    tensor([1])
"""

from __future__ import annotations

import torch
from torch import Tensor

PROTOCOLS: tuple[str, ...] = ("faithful", "standard")


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of `PROTOCOLS`; a ValueError naming the choices otherwise."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    return protocol


def check_class_subset(mask, num_classes: int) -> Tensor:
    """Validate a class subset and return it as a ``(K,)`` long tensor.

    Args:
        mask: ``(K,)`` class indices of the subset (tensor, array or list of whole numbers).
        num_classes: C, the number of logit columns.

    Raises:
        ValueError: the mask is empty, not 1-D, not whole numbers, not strictly increasing (sorted
            and unique), or has an index outside [0, C).
    """
    mask = torch.as_tensor(mask)
    if mask.dim() != 1 or mask.numel() == 0:
        raise ValueError(f"class_subset must be a non-empty 1-D list of class indices, got shape {tuple(mask.shape)}")
    if mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
        raise ValueError(f"class_subset must hold integer class indices, got dtype {mask.dtype}")
    mask = mask.to(torch.long)
    if not bool((mask[1:] > mask[:-1]).all()):
        first = int(torch.nonzero(mask[1:] <= mask[:-1])[0]) + 1
        raise ValueError(
            f"class_subset must be sorted and unique (the order of the subset's labels 0..K-1); "
            f"entry {first} ({int(mask[first])}) is not larger than entry {first - 1} ({int(mask[first - 1])})"
        )
    if int(mask[0]) < 0 or int(mask[-1]) >= num_classes:
        raise ValueError(f"class_subset indices must lie in [0, {num_classes}), got {int(mask[0])}..{int(mask[-1])}")
    return mask


def _positions(mask: Tensor, num_classes: int, device: torch.device) -> Tensor:
    """``(C,)`` lookup: class index -> its position in the subset, -1 outside it."""
    mask = mask.to(device=device, dtype=torch.long)
    lookup = torch.full((num_classes,), -1, dtype=torch.long, device=device)
    lookup[mask] = torch.arange(mask.numel(), device=device)
    return lookup


def faithful_member_predictions(logits: Tensor, mask: Tensor) -> Tensor:
    """Each member's argmax over all C classes, as a position in the subset (-1 outside it).

    Args:
        logits: ``(M, B, C)`` member logits over all classes.
        mask: ``(K,)`` sorted, unique class indices of the subset.

    Returns:
        ``(M, B)`` long: subset position 0..K-1 of each member's prediction, or -1 when its class is
        not in the subset (the published code's all-zero one-hot vector).
    """
    return _positions(mask, logits.shape[-1], logits.device)[logits.argmax(dim=-1)]


def faithful_vote(member_predictions: Tensor, num_classes: int) -> Tensor:
    """Plurality vote over the in-subset votes (the published IN-A/IN-R "ensemble").

    Args:
        member_predictions: ``(M, B)`` subset positions from `faithful_member_predictions`, -1 for a
            vote outside the subset (discarded).
        num_classes: K, the size of the subset.

    Returns:
        ``(B,)`` long: the subset position with the most votes, the lowest one on a tie (the first
        maximum, as argmax of the mean one-hot vector), or -1 when no member voted in the subset.
    """
    members, batch = member_predictions.shape
    in_subset = member_predictions >= 0
    counts = torch.zeros(batch, num_classes, dtype=torch.long, device=member_predictions.device)
    counts.scatter_add_(1, member_predictions.clamp_min(0).T, in_subset.T.to(torch.long))
    # argmax of integer counts returns the first maximum; build it explicitly so no backend can differ
    best = counts.amax(dim=1, keepdim=True)
    first = torch.where(counts == best, torch.arange(num_classes, device=counts.device), num_classes).amin(dim=1)
    return torch.where(in_subset.any(dim=0), first, -1)


def standard_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """The logits of the subset's classes only: ``(..., C) -> (..., K)``, columns in mask order."""
    return logits.index_select(-1, mask.to(device=logits.device, dtype=torch.long))
