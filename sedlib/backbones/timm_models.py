"""Any timm model as the frozen backbone: ``cache.backbone: timm:<model name>``.

The feature is the model's pre-logits feature, ``forward_head(forward_features(x), pre_logits=True)``
(`sedlib.backbones.spec.pooled_pre_logits`): what its own classifier reads, ``model.num_features`` wide
(pooled for a CNN, the CLS token or the pooled tokens after the final norm for a ViT). SED's heads are
trained on it. The paper's DeiT-3-B (``deit3_base``) is cut earlier, inside its last block, so that the
last MLP block, the final norm and the classifier can be trained per member and start from the model's own
(`sedlib.backbones.deit3`); a ``timm:`` backbone gives the heads the finished feature instead, and has no
pretrained head of the SED head's form.

Input size, interpolation and normalisation come from the model's pretrained configuration
(``timm.data.resolve_model_data_config``); ``cache.image_size`` overrides the size, and a model built
for one input size (a ViT's ``fixed_input_size``) is then built for the other (timm resamples its
position embedding). Images that are not augmented go through timm's own evaluation transform of the
model (`timm_eval_transform`: resize by its ``crop_pct`` with its interpolation, centre crop) unless
``cache.eval_transform: resize_crop`` asks for the project's fixed one.

Weights: a local file (``cache.weights``: a timm state dict, ``.safetensors``, ``.pth`` or ``.bin``),
loaded by timm itself (``pretrained_cfg_overlay={"file": ...}``, through the architecture's own
checkpoint filter, strictly); a fine-tuned checkpoint whose classifier has another number of classes
is taken as it is (the classifier is not used: the feature is read before it). A file that is not a
checkpoint is named with what it is (`describe_file`). Without a file: timm's hub weights, offline only
when they are already in the Hugging Face cache; or, with ``pretrained=False``, timm's random
initialisation (for tests). `check_timm_backbone` finds a wrong name or missing weights before any
work starts.

Example:
    >>> timm_model_name("timm:resnet18.a1_in1k")
    'resnet18.a1_in1k'
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from sedlib import file_sha256
from sedlib.backbones.spec import RANDOM_INIT_SEED, create_empty, create_random, hub_pretrained, import_timm
from sedlib.config import TIMM_PREFIX
from sedlib.errors import ConfigError, MissingFileError, MissingWeightsError, TimmBackboneError


@dataclass(frozen=True)
class TimmInput:
    """What a timm model expects of its input, from its pretrained configuration.

    Attributes:
        image_size: side S of the square input it was trained at.
        mean: per-channel mean subtracted from inputs in [0, 1].
        std: per-channel standard deviation the centred inputs are divided by.
        fixed_input_size: the model is built for one input size (a ViT's position embedding).
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fixed_input_size: bool


def timm_model_name(backbone: str) -> str:
    """The timm model name of a ``timm:<model name>`` backbone.

    Raises:
        ValueError: ``backbone`` does not start with ``timm:``.
        TimmBackboneError: the name is not a timm model (the message says how to list them).
    """
    if not backbone.startswith(TIMM_PREFIX):
        raise ValueError(f"{backbone!r} is not a timm backbone ({TIMM_PREFIX}<model name>)")
    name = backbone[len(TIMM_PREFIX) :]
    timm = import_timm()
    if not timm.is_model(name):
        architecture = name.split(".")[0]
        nearest = difflib.get_close_matches(architecture, timm.list_models(), n=3, cutoff=0.6)
        family = (re.match(r"[A-Za-z]+", architecture) or [architecture[:8]])[0]
        raise TimmBackboneError(
            f"cache.backbone: {backbone!r} names no timm {timm.__version__} model"
            + (f" (the nearest: {', '.join(nearest)})" if nearest else "")
            + '; list them with python -c "from sedlib.backbones import import_timm; '
            f"print(import_timm().list_models('*{family}*'))\""
        )
    return name


def _input_of(model: nn.Module) -> TimmInput:
    timm = import_timm()
    config = timm.data.resolve_model_data_config(model)
    return TimmInput(
        image_size=int(config["input_size"][-1]),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        fixed_input_size=bool(model.pretrained_cfg.get("fixed_input_size", False)),
    )


@functools.cache  # stage 01 asks once per split; the answer depends on the name alone
def timm_input(backbone: str) -> TimmInput:
    """The input a ``timm:<model name>`` backbone expects, read from a weightless (meta-device) build of it."""
    return _input_of(create_empty(timm_model_name(backbone), {}))


def load_timm_model(
    backbone: str, pretrained: bool, weights: str | Path | None, image_size: int | None
) -> tuple[nn.Module, TimmInput, str]:
    """Build a ``timm:<model name>`` backbone's model.

    Args:
        backbone: ``timm:<model name>``, the name optionally with its pretrained tag (``resnet18.a1_in1k``).
        pretrained: load weights (``weights`` or the hub's); ``False``: timm's random initialisation, seeded.
        weights: a local state dict file, or None for the hub weights.
        image_size: input side; None for the model's pretrained one.

    Returns:
        ``(model, input, description)``: the model (eval mode not yet set), what it expects of its input
        (``input.image_size`` is the side the model is used at), and a deterministic description of the weights.

    Raises:
        TimmBackboneError: an unknown model, or a weights file that does not fit it.
        ConfigError: ``weights`` with ``pretrained=False``.
        MissingFileError: ``weights`` names no file.
        MissingWeightsError: no weights file and the hub weights are not in the Hugging Face cache.
    """
    name = timm_model_name(backbone)
    native = timm_input(backbone)
    create_kwargs: dict[str, Any] = {}
    if native.fixed_input_size and image_size is not None and image_size != native.image_size:
        create_kwargs["img_size"] = image_size  # timm resamples the position embedding of the weights
    if weights and not pretrained:
        raise ConfigError(f"cache.weights={str(weights)!r} given with cache.pretrained: false; set one or the other")
    if not pretrained:
        model = create_random(name, create_kwargs)
        description = f"random init (timm {name}, torch seed {RANDOM_INIT_SEED}) -- no pretrained weights"
    elif weights:
        model, description = _from_file(name, Path(weights).expanduser(), create_kwargs)
    else:
        advice = f"or save the weights of {name} to a file and set cache.weights to its path."
        model, description = hub_pretrained(name, create_kwargs, advice)
    used = _input_of(model)
    if image_size is not None:
        used = TimmInput(image_size, used.mean, used.std, used.fixed_input_size)
    return model, used, description


def describe_file(path: Path) -> str:
    """What a file holds, judged from its first bytes: for errors about a file that is not what it should be.

    Example:
        >>> import tempfile
        >>> text = Path(tempfile.mkdtemp()) / "weights.pth"
        >>> _ = text.write_text("not weights")
        >>> describe_file(text)
        'a text file (11 bytes)'
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(512)
    if not head:
        return "an empty file (0 bytes)"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f"{kind} ({size} bytes)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a checkpoint format sedlib knows ({size} bytes starting {head[:8]!r})"
    return f"a text file ({size} bytes)"


_MAGIC = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"PK\x03\x04", "a zip archive (the format of torch.save, but not one torch can read)"),
    (b"\x80", "a Python pickle (not one torch can read as weights)"),
)


_MAYBE_WEIGHTS = ("a zip archive", "a Python pickle", "not a checkpoint format")
"""How `describe_file` begins for a file that may be damaged weights rather than another kind of file."""


def _read_checkpoint(path: Path) -> dict:
    """The tensors of a weights file (unwrapped from ``state_dict`` / ``model``), naming the file when it is none.

    Raises:
        MissingFileError: no such file.
        TimmBackboneError: the file is not a checkpoint (the message says what it is).
    """
    if not path.is_file():
        raise MissingFileError(f"cache.weights: {path} is not a file; give the path of the backbone's weights")
    timm = import_timm()
    try:
        return timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as error:  # safetensors, pickle and zip errors: all mean "not a checkpoint"
        expected = "a safetensors file" if path.suffix == ".safetensors" else "a PyTorch checkpoint (torch.save)"
        what = describe_file(path)
        # the reader's own words help only when the file could have been weights (a zip or a pickle)
        detail = f" ({type(error).__name__}: {str(error)[:200]})" if what.startswith(_MAYBE_WEIGHTS) else ""
        raise TimmBackboneError(
            f"cache.weights: {path} is not {expected} but {what}{detail}; give the file of the model's state "
            "dict, as safetensors.torch.save_file(model.state_dict(), ...) or torch.save(model.state_dict(), ...) "
            "writes it"
        ) from error


def _classifier_classes(name: str, state: dict) -> tuple[int | None, list[str]]:
    """The number of classes of a checkpoint's classifier when it differs from the model's, and its keys."""
    empty = create_empty(name, {})
    names = empty.pretrained_cfg.get("classifier") or ()
    keys = [f"{head}.{part}" for head in ([names] if isinstance(names, str) else names) for part in ("weight", "bias")]
    weight = state.get(keys[0]) if keys else None
    if weight is None or weight.ndim == 0 or weight.shape[0] == empty.num_classes:
        return None, []
    return int(weight.shape[0]), [key for key in keys if key in state]


def _from_file(name: str, path: Path, create_kwargs: dict[str, Any]) -> tuple[nn.Module, str]:
    """A timm model with the weights of a local file, loaded strictly by timm; and their description.

    A fine-tuned checkpoint's classifier of another number of classes is loaded into a classifier of that
    size, which is never used (the feature is read before it).

    Raises:
        MissingFileError: no such file.
        TimmBackboneError: the file is not a checkpoint, or not one of this architecture.
    """
    state = _read_checkpoint(path)
    classes, head_keys = _classifier_classes(name, state)
    overlay: dict[str, Any] = {"file": str(path)}  # timm loads it through the architecture's own checkpoint filter
    kwargs = dict(create_kwargs)
    if classes is not None:  # timm loads strictly only when the classifier has the configuration's classes
        overlay["num_classes"] = kwargs["num_classes"] = classes
    timm = import_timm()
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (RuntimeError, KeyError, ValueError, OSError) as error:
        raise TimmBackboneError(
            f"cache.weights: {path} does not load into timm's {name} ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]} {_key_differences(create_empty(name, kwargs).state_dict(), state)}); "
            "give a state dict of that architecture (as timm.create_model(...).state_dict() saves it), or set "
            "cache.backbone to the timm model the file was saved from"
        ) from error
    description = f"file {path.name} sha256:{file_sha256(path)[:16]} (timm {name})"
    if classes is not None:
        description += f"; its {classes}-class classifier ({', '.join(head_keys)}) is not used"
    return model, description


def _key_differences(expected: dict, state: dict) -> str:
    """How a checkpoint's tensors differ from a model's, in a few words (the first names of each kind)."""

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    parts = [
        f"{len(keys)} {what}: {some(keys)}"
        for what, keys in (("missing", missing), ("not in the model", unexpected), ("of other shapes", shapes))
        if keys
    ]
    return f"the model has {len(expected)} tensors and the file {len(state)}: " + "; ".join(parts or ["same names"])


@functools.cache  # built once per process; the transform keeps no state
def timm_eval_transform(backbone: str, image_size: int | None) -> tuple[Any, str]:
    """The model's own evaluation transform in timm, without its normalisation (the backbone applies that).

    ``timm.data.create_transform(**resolve_model_data_config(model), normalize=False)``: resize the shorter
    side to ``floor(S / crop_pct)`` with the model's interpolation, centre crop S x S.

    Args:
        backbone: ``timm:<model name>``.
        image_size: side S; None for the model's pretrained one.

    Returns:
        ``(transform, description)``: a callable from an RGB PIL image to a ``(3, S, S)`` uint8 tensor, and
        what it does in words.
    """
    timm = import_timm()
    config = timm.data.resolve_model_data_config(create_empty(timm_model_name(backbone), {}))
    if image_size is not None:
        config["input_size"] = (3, image_size, image_size)
    size, crop_pct = config["input_size"][-1], config["crop_pct"]
    transform = timm.data.create_transform(**config, is_training=False, normalize=False)
    description = (
        f"timm's eval transform of {timm_model_name(backbone)}: resize {math.floor(size / crop_pct)} "
        f"({config['interpolation']}, crop_pct {crop_pct}, crop mode {config.get('crop_mode') or 'center'}) "
        f"+ centre crop {size}"
    )
    return transform, description


def check_timm_backbone(backbone: str, pretrained: bool, weights: str | Path) -> None:
    """Before any work: the model name is timm's, and its weights are where the run will look for them.

    Args:
        backbone: ``timm:<model name>``.
        pretrained: ``cache.pretrained``.
        weights: ``cache.weights`` (a resolved path, or empty for the hub's).

    Raises:
        TimmBackboneError: an unknown model, or a weights file that is not a checkpoint.
        MissingWeightsError: no weights file, and the hub weights are not in the Hugging Face cache.
        MissingFileError: ``weights`` names no file.
    """
    name = timm_model_name(backbone)
    if not pretrained:
        return
    if weights:
        _read_checkpoint(Path(weights).expanduser())
        return
    hub_id = create_empty(name, {}).pretrained_cfg.get("hf_hub_id")
    if hub_id and not _in_hub_cache(hub_id):
        raise MissingWeightsError(
            f"cache.backbone: the weights of {backbone} ({hub_id}) are not in the local Hugging Face cache, and runs "
            "are offline. Run once with network access (HF_HUB_OFFLINE unset) so that timm stores them there, or "
            f"save the weights of {name} to a file and set cache.weights to its path"
        )


def _in_hub_cache(hub_id: str) -> bool:
    """Whether a timm hub repository's weights file is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    files = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
    return any(isinstance(try_to_load_from_cache(repo, file, revision=revision or None), str) for file in files)
