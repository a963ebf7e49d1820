"""An ensemble of M classification heads stored as stacked parameters.

Each member is the trainable head of SED (Rubinstein et al., arXiv:2409.16797,
https://arxiv.org/abs/2409.16797): the MLP half of DeiT-3-B's last block, the final LayerNorm and
the linear classifier, applied to a cached backbone feature ``h``::

    h = h + gamma * fc2(GELU(fc1(LN2(h))))
    logits = W_head · LN(h) + b_head

Every parameter carries a leading member axis (``mlp.fc1.weight`` is ``(M, hidden, d)``), so all
members, or any subset of them, run in one batched matrix product. Parameter names follow timm's
ViT (``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``ls2.gamma``, ``norm``, ``head``), which makes loading
the pretrained block a renaming. Initialisation follows the published code: Linear weights
truncated normal with std 0.02, zero biases, LayerNorm (1, 0), ``gamma = 1e-4``, drawn per member.

Example:
    >>> ens = HeadEnsemble(HeadConfig(num_members=3, feature_dim=8, hidden_dim=16, num_classes=4))
    >>> ens(torch.randn(5, 8)).shape
    torch.Size([3, 5, 4])
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sedlib.errors import MissingFileError

FORMAT = "sedlib.HeadEnsemble/1"


@dataclass(frozen=True)
class HeadConfig:
    """Shape and initialisation of the heads.

    Attributes:
        num_members: M, the number of heads.
        feature_dim: d, the width of the cached feature (768 for DeiT-3-B).
        hidden_dim: width of the MLP's hidden layer (3072 for DeiT-3-B).
        num_classes: C, the number of classes (1000 for ImageNet).
        layer_scale_init: initial value of the LayerScale ``gamma`` (1e-4 in DeiT-3).
        norm_eps: epsilon of both LayerNorms (1e-6 in DeiT-3).
    """

    num_members: int
    feature_dim: int = 768
    hidden_dim: int = 3072
    num_classes: int = 1000
    layer_scale_init: float = 1e-4
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("num_members", "feature_dim", "hidden_dim", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"HeadConfig.{name} must be a positive integer, got {value!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"HeadConfig.norm_eps must be positive, got {self.norm_eps!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _stacked(**shapes: tuple[int, ...]) -> nn.Module:
    module = nn.Module()
    for name, shape in shapes.items():
        module.register_parameter(name, nn.Parameter(torch.empty(shape)))
    return module


def head_forward(params: Mapping[str, Tensor], features: Tensor, norm_eps: float = 1e-6) -> Tensor:
    """Run k heads given their stacked parameters; the functional core of `HeadEnsemble`.

    Args:
        params: name -> tensor with a leading member axis of size k (names as in
            `HeadEnsemble.named_parameters`).
        features: ``(B, d)``, shared by all k heads, or ``(k, B, d)``, one batch per head.
        norm_eps: LayerNorm epsilon.

    Returns:
        logits: ``(k, B, C)``.
    """
    k, d = params["norm2.weight"].shape
    h = features.expand(k, -1, -1) if features.dim() == 2 else features
    if h.shape[0] != k or h.shape[-1] != d:
        raise ValueError(f"features of shape {tuple(features.shape)} do not fit {k} heads of input width {d}")
    # shared features are normalised once, not once per head
    normalised = F.layer_norm(features if features.dim() == 2 else h, (d,), eps=norm_eps)
    u = normalised * params["norm2.weight"][:, None] + params["norm2.bias"][:, None]
    u = _linear(params["mlp.fc1.weight"], params["mlp.fc1.bias"], u)
    u = _linear(params["mlp.fc2.weight"], params["mlp.fc2.bias"], F.gelu(u))
    h = h + params["ls2.gamma"][:, None] * u
    h = F.layer_norm(h, (d,), eps=norm_eps) * params["norm.weight"][:, None] + params["norm.bias"][:, None]
    return _linear(params["head.weight"], params["head.bias"], h)


def _linear(weight: Tensor, bias: Tensor, x: Tensor) -> Tensor:
    """``(k, B, out)`` = x W^T + b for k stacked ``(out, in)`` weights and ``(k, B, in)`` inputs.

    When the weight's gradient is wanted this is computed as ``(W x^T + b)^T``, so that the gradient
    comes out of the backward matmul in the weight's own ``(out, in)`` layout; ``x @ W^T`` would hand
    it back transposed, and the optimiser would then copy every updated member's gradients into
    place. Without a gradient ``x @ W^T`` gives the contiguous result the next layers read fastest.
    """
    if weight.requires_grad and torch.is_grad_enabled():
        return torch.baddbmm(bias[:, :, None], weight, x.transpose(1, 2)).transpose(1, 2)
    return torch.baddbmm(bias[:, None], x, weight.transpose(1, 2))


class HeadEnsemble(nn.Module):
    """M SED heads with stacked parameters and a batched forward.

    Args:
        config: shapes and initialisation (see `HeadConfig`).
        generator: random generator for the initialisation; members are drawn one after the other,
            so the same generator state gives the same ensemble.
    """

    def __init__(self, config: HeadConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        m, d, hidden, c = config.num_members, config.feature_dim, config.hidden_dim, config.num_classes
        self.norm2 = _stacked(weight=(m, d), bias=(m, d))
        self.mlp = nn.Module()
        self.mlp.fc1 = _stacked(weight=(m, hidden, d), bias=(m, hidden))
        self.mlp.fc2 = _stacked(weight=(m, d, hidden), bias=(m, d))
        self.ls2 = _stacked(gamma=(m, d))
        self.norm = _stacked(weight=(m, d), bias=(m, d))
        self.head = _stacked(weight=(m, c, d), bias=(m, c))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise every member as the published code does (timm ViT ``_init_weights``)."""
        for member in range(self.config.num_members):
            for linear in (self.mlp.fc1, self.mlp.fc2, self.head):
                nn.init.trunc_normal_(linear.weight[member], std=0.02, generator=generator)
        for linear in (self.mlp.fc1, self.mlp.fc2, self.head):
            linear.bias.zero_()
        for norm in (self.norm2, self.norm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        self.ls2.gamma.fill_(self.config.layer_scale_init)

    @property
    def num_members(self) -> int:
        return self.config.num_members

    def member_params(self, members: Tensor | None = None) -> dict[str, Tensor]:
        """Stacked parameters of all members, or of ``members`` (a ``(k,)`` index tensor) in that order."""
        params = dict(self.named_parameters())
        if members is None:
            return params
        return {name: p.index_select(0, members.to(p.device)) for name, p in params.items()}

    def forward(self, features: Tensor, members: Tensor | None = None) -> Tensor:
        """Logits of all members, or of the members listed in ``members``.

        Args:
            features: ``(B, d)`` shared by the selected members, or ``(k, B, d)`` one batch each.
            members: optional ``(k,)`` member indices; all M members when omitted.

        Returns:
            logits: ``(k, B, C)``.
        """
        return head_forward(self.member_params(members), features, self.config.norm_eps)

    @torch.no_grad()
    def soup(self, members: Tensor | list[int] | None = None) -> HeadEnsemble:
        """The uniform weight average of all members, or of ``members``, as a one-member ensemble (a "model soup").

        Args:
            members: indices of the members to average (e.g. a greedy soup's); all when omitted.
        """
        soup = HeadEnsemble._uninitialised(dataclasses.replace(self.config, num_members=1)).to(self.head.weight.device)
        chosen = None if members is None else torch.as_tensor(members, dtype=torch.long)
        for name, p in soup.named_parameters():
            stacked = self.get_parameter(name)
            if chosen is not None:
                stacked = stacked.index_select(0, chosen.to(stacked.device))
            p.copy_(stacked.mean(dim=0, keepdim=True))
        return soup

    @classmethod
    @torch.no_grad()
    def from_member_state(cls, state: Mapping[str, Tensor], num_members: int, norm_eps: float = 1e-6) -> HeadEnsemble:
        """M identical members that all start from one head's parameters (e.g. a pretrained head).

        Args:
            state: one head's parameters, named as this class's parameters without the member axis
                (``norm2.weight`` ``(d,)``, ``mlp.fc1.weight`` ``(hidden, d)``, ..., ``head.weight``
                ``(C, d)``).
            num_members: M.
            norm_eps: LayerNorm epsilon of the head.

        Raises:
            ValueError: a parameter is missing or unknown, or the shapes do not form one head.
        """
        if "head.weight" not in state or "mlp.fc1.weight" not in state:
            raise ValueError(f"a head state needs head.weight and mlp.fc1.weight, got keys {sorted(state)}")
        classes, dim = state["head.weight"].shape
        config = HeadConfig(
            num_members=num_members,
            feature_dim=int(dim),
            hidden_dim=int(state["mlp.fc1.weight"].shape[0]),
            num_classes=int(classes),
            norm_eps=norm_eps,
        )
        ensemble = cls._uninitialised(config)
        names = dict(ensemble.named_parameters())
        if set(names) != set(state):
            raise ValueError(
                f"head state keys differ from a head's: missing {sorted(set(names) - set(state))}, "
                f"unknown {sorted(set(state) - set(names))}"
            )
        for name, parameter in names.items():
            value = torch.as_tensor(state[name], dtype=parameter.dtype)
            if tuple(value.shape) != tuple(parameter.shape[1:]):
                raise ValueError(
                    f"head state {name} has shape {tuple(value.shape)}, expected {tuple(parameter.shape[1:])}"
                )
            parameter.copy_(value.expand_as(parameter))
        return ensemble

    @classmethod
    def _uninitialised(cls, config: HeadConfig) -> HeadEnsemble:
        """An ensemble whose weights are about to be overwritten; leaves the global RNG alone."""
        return cls(config, generator=torch.Generator())

    def save(self, path: str | Path) -> Path:
        """Write the weights to ``path`` (``.safetensors``) and the config to a JSON sidecar beside it.

        Returns:
            The path of the sidecar (``<path without suffix>.json``).
        """
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: ensemble files end in .safetensors (the JSON sidecar takes the .json name)")
        description = self._description()
        tensors = {name: p.detach().cpu().contiguous() for name, p in self.named_parameters()}
        save_file(tensors, str(path), metadata={"sedlib": json.dumps(description, sort_keys=True)})
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
        return sidecar

    @classmethod
    def load(
        cls, path: str | Path, expected: HeadConfig | None = None, device: str | torch.device = "cpu"
    ) -> HeadEnsemble:
        """Load an ensemble written by `save`.

        Args:
            path: the ``.safetensors`` file; its JSON sidecar must lie beside it.
            expected: if given, the stored config must equal it.
            device: where to put the weights.

        Raises:
            FileNotFoundError: the weights or the sidecar are missing.
            ValueError: the sidecar does not describe the weights, a tensor has the wrong shape, or the
                config differs from ``expected``; the message names the file and the key.
        """
        path = Path(path)
        sidecar = path.with_suffix(".json")
        for required in (path, sidecar):
            if not required.is_file():
                raise MissingFileError(f"{required}: no such file; write the ensemble with HeadEnsemble.save first")
        description = json.loads(sidecar.read_text())
        if description.get("format") != FORMAT:
            raise ValueError(f"{sidecar}: format is {description.get('format')!r}, expected {FORMAT!r}")
        try:
            config = HeadConfig(**description["config"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{sidecar}: invalid config ({error})") from error
        if expected is not None and config != expected:
            differences = {
                key: (value, getattr(expected, key))
                for key, value in config.to_dict().items()
                if value != getattr(expected, key)
            }
            raise ValueError(
                f"{path}: stored config differs from the expected one in "
                + ", ".join(f"{key} (stored {got!r}, expected {want!r})" for key, (got, want) in differences.items())
            )
        ensemble = cls._uninitialised(config)
        if description != ensemble._description():
            raise ValueError(f"{sidecar}: the sidecar is inconsistent (shapes do not follow from its config)")
        try:
            tensors = load_file(str(path))
        except SafetensorError as error:
            raise ValueError(
                f"{path}: not a readable safetensors file ({error}); it is damaged or truncated. Write it again "
                "(in a run directory: rerun the stage that trains it)"
            ) from error
        for name, p in ensemble.named_parameters():
            if name not in tensors:
                raise ValueError(f"{path}: tensor {name!r} is missing; the file was not written by HeadEnsemble.save")
            if tuple(tensors[name].shape) != tuple(p.shape):
                raise ValueError(
                    f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                    f"but the sidecar {sidecar.name} describes {tuple(p.shape)}"
                )
        extra = sorted(set(tensors) - set(dict(ensemble.named_parameters())))
        if extra:
            raise ValueError(f"{path}: unexpected tensors {extra}")
        with safe_open(str(path), framework="pt") as handle:
            stored = (handle.metadata() or {}).get("sedlib")
        if stored is None or json.loads(stored) != description:
            raise ValueError(
                f"{sidecar}: does not belong to {path.name} (the weights were written with another config)"
            )
        ensemble.load_state_dict(tensors)
        return ensemble.to(device)

    def _description(self) -> dict:
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "shapes": {name: list(p.shape) for name, p in self.named_parameters()},
        }
