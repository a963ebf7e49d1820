"""DeiT-3-B, the paper's backbone, cut inside its last block (``"deit3_base"``).

**DeiT-3-B** (``"deit3_base"``), the paper's backbone: timm's ``deit3_base_patch16_224`` with the
``fb_in22k_ft_in1k`` weights (Touvron, Cord & Jégou, *DeiT III: Revenge of the ViT*, ECCV 2022,
https://arxiv.org/abs/2204.07118; FB file ``deit_3_base_224_21k.pth``: pretrained on ImageNet-21k,
fine-tuned on ImageNet-1k at 224 px), inputs normalised with the ImageNet mean (0.485, 0.456, 0.406) and
std (0.229, 0.224, 0.225), built for 224 px unless `load_backbone` is given another ``image_size`` (the
position embedding is then resampled and the features are no longer the paper's). SED trains, per
member, only the MLP half of the last transformer block, the final LayerNorm and the linear classifier
(`sedlib.method.ensemble`), so the frozen extractor is cut *inside* block 12 (`deit3_cut_features`):

1. patch embedding; the position embedding is added to the patch tokens only and the CLS token is
   prepended afterwards (DeiT-3's ``no_embed_class``);
2. blocks 1-11 in full;
3. block 12's attention half, ``x = x + ls1(attn(norm1(x)))``;
4. the feature is the CLS token of that output, 768-d.

What remains of the network (block 12's ``x + ls2(mlp(norm2(x)))``, the final ``norm`` and ``head``)
acts on each token separately, and DeiT-3 classifies from the CLS token (``global_pool='token'``, no
``fc_norm``), so one cached vector per image loses nothing: `sedlib.method.ensemble.head_forward` with the
model's own block-12 MLP, norm and head (`FrozenBackbone.pretrained_head`, LayerNorm eps 1e-6, hidden
width 3072) gives the full model's logits (``tests/backbones/test_backbones.py`` checks this within 1e-4 in fp32).
Block 12's attention stays frozen because it mixes tokens: training it would need all 197 tokens of
every image cached instead of one.

DeiT-3 weights: ``pretrained=True`` loads timm's hub weights ``deit3_base_patch16_224.fb_in22k_ft_in1k``
(offline, only if they are already in the Hugging Face cache), or with ``weights=<path>`` a local
checkpoint: FB's ``.pth`` (a dict ``{"model": state_dict}`` with FB key names such as
``blocks.0.gamma_1``) or a timm state dict (``.pth``/``.bin``, or ``.safetensors``). Both go through
timm's own ``checkpoint_filter_fn`` with ``adapt_layer_scale=True``, as timm's ``deit.py`` applies it:
it unwraps ``"model"``, renames ``gamma_1``/``gamma_2`` to ``ls1.gamma``/``ls2.gamma`` and resamples the
position embedding (``resample_abs_pos_embed``, bicubic with antialiasing) to the model's patch grid;
without ``adapt_layer_scale`` the same filter leaves the ``gamma_*`` keys as they are. The result is loaded
strictly. The FB file is https://dl.fbaipublicfiles.com/deit/deit_3_base_224_21k.pth (listed in
https://github.com/facebookresearch/deit, ``README_revenge.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from sedlib.backbones.spec import HEAD_PARAMETER_NAMES, hub_pretrained, import_timm

DEIT3_BASE_TIMM_NAME = "deit3_base_patch16_224.fb_in22k_ft_in1k"
"""timm model name and pretrained tag of the paper's backbone."""


DEIT3_BASE_WEIGHTS_URL = "https://dl.fbaipublicfiles.com/deit/deit_3_base_224_21k.pth"
"""FB's release of the same weights (``README_revenge.md`` of https://github.com/facebookresearch/deit)."""


def _check_deit3_cut(model: nn.Module) -> None:
    """The cut assumes a pre-norm ViT that classifies from its single CLS token with an exact-GELU MLP."""
    block = model.blocks[-1]
    problems = []
    if getattr(model, "global_pool", None) != "token" or getattr(model, "attn_pool", None) is not None:
        problems.append(f"global_pool is {getattr(model, 'global_pool', None)!r}, not 'token'")
    if getattr(model, "num_prefix_tokens", None) != 1 or getattr(model, "cls_token", None) is None:
        problems.append("the model has not exactly one prefix token, the CLS token")
    if not isinstance(model.fc_norm, nn.Identity):
        problems.append("fc_norm is not Identity")
    if not isinstance(model.norm, nn.LayerNorm) or not isinstance(block.norm2, nn.LayerNorm):
        problems.append("norm or the last block's norm2 is not a LayerNorm")
    elif model.norm.eps != block.norm2.eps:
        problems.append(f"LayerNorm eps differ ({model.norm.eps} vs {block.norm2.eps})")
    act = getattr(block.mlp, "act", None)
    if not isinstance(act, nn.GELU) or act.approximate != "none" or not isinstance(block.mlp.norm, nn.Identity):
        problems.append("the last block's MLP is not fc1 -> exact GELU -> fc2")
    if problems:
        raise ValueError(f"{type(model).__name__} does not fit the DeiT-3 cut: " + "; ".join(problems))


def deit3_cut_features(model: nn.Module, x: Tensor) -> Tensor:
    """CLS token of a timm ViT cut after the attention half of its last block (eval mode).

    Computes what timm's ``VisionTransformer.forward_features`` computes up to the cut: ``patch_embed``,
    ``_pos_embed`` (with the CLS token), ``patch_drop``, ``norm_pre``, all blocks but the last, then
    ``x = x + drop_path1(ls1(attn(norm1(x))))`` of the last block.

    Args:
        model: a timm ``VisionTransformer`` such as ``deit3_base_patch16_224``.
        x: ``(B, 3, H, W)`` normalised images of the size the model was built for.

    Returns:
        ``(B, embed_dim)`` CLS token of the last block's attention residual (768 for DeiT-3-B).
    """
    _check_deit3_cut(model)
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for block in model.blocks[:-1]:
        x = block(x)
    last = model.blocks[-1]
    x = x + last.drop_path1(last.ls1(last.attn(last.norm1(x))))
    return x[:, 0]


def deit3_head_params(model: nn.Module) -> dict[str, Tensor]:
    """The part of a timm ViT after `deit3_cut_features`: last block's MLP half, final norm and head.

    Args:
        model: a timm ``VisionTransformer``.

    Returns:
        ``{name: tensor}`` with the names of `HEAD_PARAMETER_NAMES` (the model's own parameters, not copies).
    """
    _check_deit3_cut(model)
    block = model.blocks[-1]
    modules = {"norm2": block.norm2, "mlp.fc1": block.mlp.fc1, "mlp.fc2": block.mlp.fc2, "norm": model.norm}
    params = {
        f"{prefix}.{kind}": getattr(module, kind) for prefix, module in modules.items() for kind in ("weight", "bias")
    }
    params.update({"ls2.gamma": block.ls2.gamma, "head.weight": model.head.weight, "head.bias": model.head.bias})
    return {name: params[name] for name in HEAD_PARAMETER_NAMES}


def deit3_create_kwargs(image_size: int | None) -> dict[str, Any]:
    return {} if image_size is None else {"img_size": image_size}


def filter_deit3_checkpoint(state: Mapping[str, Any], model: nn.Module) -> dict[str, Tensor]:
    """Convert a checkpoint with the ViT filter as timm's ``deit.py`` applies it (FB ``gamma_1`` -> ``ls1.gamma``)."""
    import_timm()
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(dict(state), model, adapt_layer_scale=True)


def deit3_hub_pretrained(timm_name: str, create_kwargs: dict[str, Any]) -> tuple[nn.Module, str]:
    advice = (
        "or download deit_3_base_224_21k.pth from the DeiT repository "
        f"(https://github.com/facebookresearch/deit, README_revenge.md): {DEIT3_BASE_WEIGHTS_URL} "
        "and set cache.weights in the params file to its path (load_backbone(..., weights=path))."
    )
    model, description = hub_pretrained(timm_name, create_kwargs, advice)
    native = getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[-1]
    if create_kwargs.get("img_size", native) != native:  # timm resampled the position embedding
        description += f", pos_embed resampled {native} -> {create_kwargs['img_size']} px"
    return model, description
