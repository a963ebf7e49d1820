"""Stages 02-04 on a run directory: train the configured ensembles, then evaluate them on every split.

Training (stage 02) fits each model of ``config.models`` on the cached train passes with
`sedlib.train.train_ensemble`, validating on ``val`` every epoch, and writes
``models/<name>.safetensors`` (+ JSON sidecar), ``models/<name>_log.csv`` and, last,
``models/<name>_train.json`` (what the model was trained from: settings, features and a hash of the
training code), all at once through `sedlib.rundir.RunDir.writing`. A model whose record matches and
whose files are what was written (their content hashes) is loaded instead of retrained; any other is
retrained, and the reason is printed. A training run that fails replaces nothing: the model trained
before it, and its record, stay as they were.

Models trained with hardness weights also keep ``models/<name>_alpha.npz``: the alpha every
training row was weighted by in every epoch (`alpha_record`), which stage 02 draws as a
distribution and as a gallery of the rows SED treats as most "OOD-like" (`highest_alpha`).

Evaluation (stages 03-04) streams every split through every model once (`sedlib.evaluate`), and
derives the generalisation and detection tables from the per-sample results (`sedlib.tables`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sedlib import source_hash
from sedlib.cache import (
    DISAGREEMENT_SPLIT,
    load_pretrained_head,
    load_split,
    plan_splits,
    resolve_device,
    training_rows,
)
from sedlib.config import DATASET_CLASSES, PRETRAINED_HEAD_MODEL, ModelSpec, RunConfig
from sedlib.ensemble import HeadConfig, HeadEnsemble
from sedlib.errors import SedlibError
from sedlib.evaluate import (
    SplitEvaluation,
    StaleEvaluationsError,
    evaluate_split,
    greedy_soup_members,
    load_evaluations,
    save_evaluations,
    stored_splits,
)
from sedlib.progress import tqdm
from sedlib.rundir import ArtefactError, RunDir
from sedlib.stages import MODEL_FILES
from sedlib.train import train_ensemble


class TrainingDivergedError(SedlibError, FloatingPointError):
    """A model's training loss became non-finite; the message names the model and the params key to change."""


class SelectedRows:
    """Some rows of every pass of a lazily read train split, one pass in memory at a time.

    Args:
        passes: ``(P, N, d)``, indexable by pass (a `sedlib.features.PassReader`).
        rows: ``(n,)`` sorted positions to keep.
    """

    def __init__(self, passes, rows: np.ndarray) -> None:
        self.passes = passes
        self.rows = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        self.shape = (passes.shape[0], len(rows), passes.shape[2])
        self.everything = len(rows) == passes.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, pass_index: int) -> torch.Tensor:
        features = self.passes[pass_index]
        return features if self.everything else features.index_select(0, self.rows)


def training_data(config: RunConfig, run: RunDir):
    """The rows training uses: the cached train split without the held-out val rows.

    Returns:
        ``(train, features, labels, val)``: the lazily read train split, its kept rows as
        `SelectedRows` ``(P, n, d)``, their labels ``(n,)`` and the val split (the test split when
        ``data.val_rows`` is 0).
    """
    train, val = load_split(config, run, "train", lazy=True), load_split(config, run, "val")
    keep = training_rows(train.index, val.index if config.data.val_rows > 0 else None)
    return train, SelectedRows(train.features, keep), train.labels[keep], val


@dataclass
class TrainedModel:
    """A trained ensemble with its spec and per-epoch training log (None when loaded by a later stage)."""

    spec: ModelSpec
    ensemble: HeadEnsemble
    log: pd.DataFrame | None
    reused: bool


def head_config(config: RunConfig, spec: ModelSpec, feature_dim: int, num_classes: int) -> HeadConfig:
    """The heads' shape: the params file's ``head`` section plus the cached features' width and classes."""
    head = config.head
    return HeadConfig(
        num_members=spec.num_members,
        feature_dim=feature_dim,
        hidden_dim=head.hidden_dim,
        num_classes=num_classes,
        layer_scale_init=head.layer_scale_init,
        norm_eps=head.norm_eps,
    )


TRAINING_CODE = ("ensemble.py", "losses.py", "optim.py", "train.py")


def training_code_hash() -> str:
    """Hash of the modules that determine a trained model: a change to them retrains, not reuses."""
    package = Path(__file__).parent
    return source_hash(package, [package / name for name in TRAINING_CODE])[:16]


def _training_record(config: RunConfig, spec: ModelSpec, heads: HeadConfig, train_hash: str, val_hash: str) -> dict:
    return {
        "model": spec.name,
        "label": spec.label,
        "heads": heads.to_dict(),
        "head_init": config.head.init,
        "train": json.loads(json.dumps(spec.train.to_dict())),
        "features": {"train": train_hash, "val": val_hash},
        "code": training_code_hash(),
    }


def model_files(run: RunDir, replica) -> list[Path]:
    """The files `train_models` writes for one trained replica, the record last."""
    kinds = ["model", "model_config", "model_log"]
    if replica.spec.train.records_alpha():
        kinds.append("model_alpha")
    kinds.append("model_record")  # last: it marks the replica complete
    return [run.path(kind, replica.name) for kind in kinds]


def train_models(config: RunConfig, run: RunDir, progress: bool = True) -> dict[str, TrainedModel]:
    """Train (or reload, when unchanged and intact) every model of the run, once per seed of ``seeds``.

    A replica is reused when its record (`_training_record`) equals what the params ask for and each of
    its files has the content recorded when it was written; otherwise it is trained, and the line
    printed says why (never trained, which settings changed, or which file is missing or damaged).

    Returns:
        replica name (`sedlib.config.ModelRun`) -> `TrainedModel`, in the params file's order.

    Raises:
        TrainingDivergedError: a model's loss became non-finite (the models trained before it are kept).
    """
    device = resolve_device(config.device)
    train, train_features, train_labels, val = training_data(config, run)
    num_classes = DATASET_CLASSES[config.data.dataset]
    feature_dim = train.features.shape[-1]
    train_labels = torch.from_numpy(train_labels)
    val_features = torch.from_numpy(val.features.astype("float32"))
    initial = load_pretrained_head(run) if config.head.init == "pretrained" else None
    unlabelled = None
    if config.data.disagreement_set:
        unlabelled = torch.from_numpy(load_split(config, run, DISAGREEMENT_SPLIT).features.astype("float32"))
    trained = {}
    for model_run in config.model_runs():
        name, spec = model_run.name, model_run.spec
        heads = head_config(config, spec, feature_dim, num_classes)
        record = _training_record(config, spec, heads, train.manifest.params_hash, val.manifest.params_hash)
        files = model_files(run, model_run)
        reason = _retrain_reason(run, files, record)
        if reason is None:
            ensemble = HeadEnsemble.load(run.path("model", name), expected=heads, device=device)
            trained[name] = TrainedModel(spec, ensemble, pd.read_csv(run.path("model_log", name)), reused=True)
            tqdm.write(f"{name}: reusing {run.relative(run.path('model', name))} (settings, features and files intact)")
            continue
        tqdm.write(f"{name}: training {spec.label} (M={spec.num_members}, {spec.train.schedule} pairs): {reason}")
        alpha_history = []
        try:
            ensemble, log = train_ensemble(
                heads,
                spec.train,
                train_features,
                train_labels,
                val_features,
                val.labels,
                device=device,
                progress=progress,
                initial=_replicated(initial, spec.num_members),
                unlabelled_features=unlabelled if spec.train.disagreement_data == "unlabelled" else None,
                alpha_history=alpha_history,
            )
        except FloatingPointError as error:
            raise TrainingDivergedError(
                f"model {name!r} ({spec.label}) diverged: {error} The learning rate is models.{model_run.model}.lr "
                f"(or train.lr) in {config.source}. Every model completed before it is kept"
                + (", and so is the earlier training of this one." if files[-1].is_file() else ".")
            ) from error
        with run.writing(*files) as written:
            temporary = dict(zip(files, written, strict=True))
            ensemble.save(temporary[run.path("model", name)])
            log.to_csv(temporary[run.path("model_log", name)], index=False)
            if alpha_history:
                np.savez_compressed(
                    temporary[run.path("model_alpha", name)],
                    alpha=np.stack(alpha_history).astype(np.float16),
                    row_id=train.index[train_features.rows.numpy()],
                    label=train_labels.numpy(),
                    frozen=log["frozen"].to_numpy(),
                    pass_index=log["pass"].to_numpy(),
                )
            temporary[run.path("model_record", name)].write_text(json.dumps(record, indent=2) + "\n")
        trained[name] = TrainedModel(spec, ensemble, log, reused=False)
    return trained


def _retrain_reason(run: RunDir, files: list[Path], record: dict) -> str | None:
    """Why a replica must be trained (never trained, changed settings, a missing or damaged file), or None."""
    record_file = files[-1]
    if not record_file.is_file():
        return "never trained in this run directory"
    try:
        previous = json.loads(record_file.read_text())
    except ValueError:
        previous = None
    if not isinstance(previous, dict):
        return f"{run.relative(record_file)} is unreadable"
    if previous != record:
        return f"changed since it was trained: {', '.join(sorted(k for k in record if record[k] != previous.get(k)))}"
    for path in files:
        problem = run.problem(path)
        if problem is not None:
            return problem
    return None


def training_overview(config: RunConfig, models: dict[str, TrainedModel]) -> pd.DataFrame:
    """One row per trained replica: size, schedule, diversity weights, final validation accuracy (%), time."""
    sweep_point = {run.name: run.model in config.sweep_models for run in config.model_runs()}
    return pd.DataFrame(
        [
            {
                "Model": model.spec.label,
                "M": model.spec.num_members,
                "schedule": model.spec.train.schedule,
                "λ": model.spec.train.lam,
                "κ": model.spec.train.kappa,
                "epochs": model.spec.train.epochs,
                "val acc ensemble": round(100 * model.log["val_acc_ensemble"].iloc[-1], 1),
                "val acc member mean": round(100 * model.log["val_acc_member_mean"].iloc[-1], 1),
                "train seconds": round(model.log["seconds"].sum(), 1),
                "sweep point": "yes" if sweep_point[name] else "",
            }
            for name, model in models.items()
        ]
    )


def main_logs(config: RunConfig, models: dict[str, TrainedModel]) -> dict[str, pd.DataFrame]:
    """Label -> training log of each main model's first seed (the curves stage 02 draws; no sweep points)."""
    return {model_run.label: models[model_run.name].log for model_run in config.first_replicas()}


def _replicated(head: HeadEnsemble | None, members: int) -> HeadEnsemble | None:
    """M copies of a one-member ensemble (``head.init: pretrained``), or None."""
    if head is None:
        return None
    state = {name: p[0] for name, p in head.named_parameters()}
    return HeadEnsemble.from_member_state(state, members, head.config.norm_eps)


def load_models(config: RunConfig, run: RunDir) -> dict[str, TrainedModel]:
    """Load the models stage 02 wrote, checking that each was trained with the current settings.

    With ``eval.pretrained_head`` the backbone's own head comes first, as a one-member model named
    ``pretrained_head`` ("row zero").

    Returns:
        replica name (`sedlib.config.ModelRun`) -> `TrainedModel`.
    """
    device = resolve_device(config.device)
    models = {}
    for model_run in config.model_runs(pretrained_head=True):
        name, spec = model_run.name, model_run.spec
        if name == PRETRAINED_HEAD_MODEL:
            models[name] = TrainedModel(spec, load_pretrained_head(run, device), None, True)
            continue
        record_path = run.path("model_record", name)
        if not record_path.is_file():
            raise ArtefactError(
                f"model {name!r} was not trained: {run.relative(record_path)} is missing. {run.remedy(record_path)}"
            )
        for kind in MODEL_FILES:
            run.verified(run.path(kind, name))
        record = json.loads(record_path.read_text())
        if record.get("train") != json.loads(json.dumps(spec.train.to_dict())) or record.get("label") != spec.label:
            raise ArtefactError(
                f"{run.relative(run.path('model', name))} was trained with other settings than {config.source} now "
                f"gives for models.{model_run.model}. {run.remedy(record_path)}"
            )
        if record.get("code") != training_code_hash():
            raise ArtefactError(
                f"{run.relative(run.path('model', name))} was trained by another version of the training code "
                f"({', '.join(TRAINING_CODE)}). {run.remedy(record_path)}"
            )
        ensemble = HeadEnsemble.load(run.path("model", name), expected=HeadConfig(**record["heads"]), device=device)
        models[name] = TrainedModel(spec, ensemble, None, reused=True)
    return models


def class_names(config: RunConfig) -> tuple[str, ...]:
    """The names of the run's classes: Fashion-MNIST's, or ImageNet's wnids."""
    if config.data.dataset == "fashion_mnist":
        from sedlib.data.sources import FASHION_MNIST_CLASSES

        return FASHION_MNIST_CLASSES
    from sedlib.data.imagenet import imagenet_wnids

    return imagenet_wnids()


@dataclass(frozen=True)
class AlphaRecord:
    """The hardness weights of one trained replica, per epoch and training row.

    Attributes:
        alpha: ``(E, N)`` alpha of each training row in each epoch (float32; NaN for a row no step read).
        row_id: ``(N,)`` the rows' ids in the source set (e.g. the Fashion-MNIST train index).
        label: ``(N,)`` class ids.
        frozen: ``(E,)`` whether the epoch was the frozen, measuring-only first one.
        pass_index: ``(E,)`` the augmentation pass each epoch read.
    """

    alpha: np.ndarray
    row_id: np.ndarray
    label: np.ndarray
    frozen: np.ndarray
    pass_index: np.ndarray


def alpha_record(run: RunDir, name: str) -> AlphaRecord:
    """Read a replica's hardness weights written by `train_models`.

    Raises:
        FileNotFoundError: the replica was trained without hardness weights, or not trained yet.
    """
    path = run.path("model_alpha", name)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no hardness weights for {name!r}; only models trained with a repulsion weighted by alpha "
            "(lam > 0, kappa > 0, hardness: true) have them; run notebooks/02_train_a2d first"
        )
    with np.load(run.verified(path)) as stored:
        kept = {key: stored[key] for key in ("row_id", "label", "frozen", "pass_index")}
        return AlphaRecord(alpha=stored["alpha"].astype(np.float32), **kept)


def highest_alpha(config: RunConfig, record: AlphaRecord, count: int = 16, epoch: int = -1) -> pd.DataFrame:
    """The training rows with the largest alpha in one epoch: the samples SED treats as most OOD-like.

    Args:
        config: the run (class names).
        record: from `alpha_record`.
        count: how many rows.
        epoch: which epoch (default the last).

    Returns:
        ``count`` rows, largest alpha first: ``position`` (into the training rows), ``row_id``,
        ``label``, ``class``, ``alpha``, ``pass``.
    """
    alpha = record.alpha[epoch]
    order = np.argsort(-np.nan_to_num(alpha, nan=-np.inf), kind="stable")[:count]
    names = class_names(config)
    return pd.DataFrame(
        {
            "position": order,
            "row_id": record.row_id[order],
            "label": record.label[order],
            "class": [names[k] for k in record.label[order]],
            "alpha": alpha[order],
            "pass": int(record.pass_index[epoch]),
        }
    )


def alpha_classes(config: RunConfig, run: RunDir, top_fraction: float = 0.01) -> tuple[str, pd.DataFrame]:
    """`alpha_class_shares` of the last epoch of the first model of `hardness_weighted`.

    Returns:
        ``(label, shares)``; ``("", empty)`` when no model has hardness weights.
    """
    label, name = _first_hardness_weighted(config)
    if not name:
        return "", pd.DataFrame()
    return label, alpha_class_shares(config, alpha_record(run, name), top_fraction)


def alpha_class_shares(config: RunConfig, record: AlphaRecord, top_fraction: float = 0.01, epoch: int = -1):
    """How the classes are represented among the top ``top_fraction`` of alpha, against the training set.

    Returns:
        One row per class: ``class``, ``share_all`` (fraction of the training rows), ``share_top``
        (fraction of the top rows) and ``ratio`` (top over all; > 1: over-represented), largest
        ratio first.
    """
    alpha = np.nan_to_num(record.alpha[epoch], nan=-np.inf)
    top = np.argsort(-alpha, kind="stable")[: max(1, round(top_fraction * len(alpha)))]
    names = class_names(config)
    classes = len(names)
    share_all = np.bincount(record.label, minlength=classes) / len(record.label)
    share_top = np.bincount(record.label[top], minlength=classes) / len(top)
    frame = pd.DataFrame({"class": names, "share_all": share_all, "share_top": share_top})
    frame["ratio"] = frame["share_top"] / frame["share_all"].where(frame["share_all"] > 0)
    return frame.sort_values("ratio", ascending=False, kind="stable").reset_index(drop=True)


def hardness_weighted(config: RunConfig) -> dict[str, str]:
    """Label -> replica name (first seed) of every main model trained with hardness weights."""
    return {run.label: run.name for run in config.first_replicas() if run.spec.train.records_alpha()}


def _first_hardness_weighted(config: RunConfig) -> tuple[str, str]:
    """``(label, replica)`` of the first `hardness_weighted` model, or ``("", "")`` when there is none."""
    return next(iter(hardness_weighted(config).items()), ("", ""))


def alpha_overview(config: RunConfig, run: RunDir, models: dict[str, TrainedModel]) -> dict:
    """Label -> ``(log, last epoch's alpha)`` of each `hardness_weighted` model (`sedlib.plots.alpha_distribution`)."""
    return {
        label: (models[name].log, alpha_record(run, name).alpha[-1])
        for label, name in hardness_weighted(config).items()
    }


def alpha_gallery(config: RunConfig, run: RunDir, count: int = 24) -> tuple[str, pd.DataFrame, np.ndarray | None]:
    """The highest-alpha training rows of the first model of `hardness_weighted`, with their images.

    Returns:
        ``(label, rows, images)``: the model's label, `highest_alpha` of its last epoch with a
        ``caption`` column, and the images as the backbone saw them in that epoch's pass
        (`training_images`); ``("", empty, None)`` when no model has hardness weights.
    """
    label, name = _first_hardness_weighted(config)
    if not name:
        return "", pd.DataFrame(), None
    rows = highest_alpha(config, alpha_record(run, name), count)
    rows["caption"] = [f"{c}\nα = {a:.3g}" for c, a in zip(rows["class"], rows["alpha"])]
    return label, rows, training_images(config, rows["row_id"].to_numpy(), int(rows["pass"].iloc[0]))


def training_images(config: RunConfig, row_ids: np.ndarray, pass_index: int) -> np.ndarray | None:
    """Training images as the backbone saw them in one augmentation pass (``(K, S, S, 3)`` uint8).

    Returns None when the images are not at hand (ImageNet features imported from the authors' files
    without the image folders).
    """
    from sedlib.backbones import augment, to_model_input
    from sedlib.cache import SplitPlan, source_images

    cache = config.cache
    plan = SplitPlan("train", "train", passes=cache.augmentation_passes)
    try:
        images, _ = source_images(config, plan)
    except FileNotFoundError:
        return None
    row_ids = np.asarray(row_ids, dtype=np.int64)
    scale = tuple(cache.augmentation_scale)
    if config.data.dataset == "fashion_mnist":
        clean = to_model_input(images.images[row_ids], cache.image_size)
        return augment(clean, config.data.seed, pass_index, row_ids, scale=scale)
    from sedlib.data.imagenet import FolderImages

    dataset = FolderImages(images, row_ids, "train", cache.image_size, config.data.seed, pass_index, scale)
    return np.stack([dataset[i][0].permute(1, 2, 0).numpy() for i in range(len(dataset))])


def class_subset(config: RunConfig, split: str):
    """The classes (indices into the model's classes) of a class-subset split such as ImageNet-A, else None."""
    if split not in config.data.subset_sets:
        return None
    from sedlib.data.imagenet import subset_mask

    return subset_mask(split)


def evaluate_models(
    config: RunConfig,
    run: RunDir,
    models: dict[str, TrainedModel],
    splits: list[str] | None = None,
    progress: bool = True,
) -> dict[tuple[str, str], SplitEvaluation]:
    """Evaluate every model on every split (by default ``val`` and every cached split but ``train``).

    Each model's greedy soup (`sedlib.evaluate.greedy_soup_members`) is chosen once, on the val
    split, and evaluated everywhere beside the uniform soup.

    Returns:
        ``(model, split) -> SplitEvaluation`` with per-sample predictions and scores.
    """
    if splits is None:  # "val" is the test split when data.val_rows is 0 (`load_split`), so name it always
        splits = ["val"] + [
            plan.name for plan in plan_splits(config) if plan.kind not in ("train", "val", "disagreement")
        ]
    scores = list(config.eval.scores) or None
    val = load_split(config, run, "val")
    val_features = torch.from_numpy(val.features.astype("float32"))
    greedy = {
        name: greedy_soup_members(model.ensemble, val_features, val.labels, config.eval.batch_size)
        for name, model in models.items()
    }
    results = {}
    bar = tqdm(total=len(splits) * len(models), desc="evaluate", disable=not progress)
    for split_name in splits:
        split = load_split(config, run, split_name)
        features = torch.from_numpy(split.features.astype("float32"))
        subset = class_subset(config, split_name)
        for name, model in models.items():
            bar.set_postfix_str(f"{name} on {split_name}", refresh=False)
            results[name, split_name] = evaluate_split(
                model.ensemble,
                features,
                split.labels,
                config.eval.batch_size,
                scores,
                progress=False,
                class_subset=subset,
                protocol=config.protocol,
                greedy_members=greedy[name],
            )
            bar.update()
    bar.close()
    return results


EVALUATION_CODE = ("ensemble.py", "evaluate.py", "metrics.py", "protocols.py", "scores.py")


def evaluation_fingerprint(config: RunConfig, run: RunDir, splits: list[str]) -> str:
    """Hash of what an evaluation depends on: the model files, the splits' settings, the eval settings and code."""
    import hashlib

    package = Path(__file__).parent
    digest = hashlib.sha256(source_hash(package, [package / name for name in EVALUATION_CODE]).encode())
    payload = {"eval": config.to_dict()["eval"], "protocol": config.protocol, "splits": {}}
    for split in splits:
        payload["splits"][split] = load_split(config, run, split, lazy=True).manifest.params_hash
    digest.update(json.dumps(payload, sort_keys=True).encode())
    for model_run in config.model_runs(pretrained_head=True):
        name = model_run.name
        path = run.path("pretrained_head") if name == PRETRAINED_HEAD_MODEL else run.path("model", name)
        digest.update(name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def store_evaluations(config: RunConfig, run: RunDir, evaluations: dict[tuple[str, str], SplitEvaluation]) -> Path:
    """Keep stage 03's evaluations of every split (`evaluate_models`) for stage 04; returns the file."""
    splits = list(dict.fromkeys(split for _, split in evaluations))
    path = run.path("evaluations")
    with run.writing(path) as (temporary,):
        save_evaluations(temporary, evaluations, evaluation_fingerprint(config, run, splits))
    return path


def stored_evaluations(config: RunConfig, run: RunDir, splits: list[str]) -> dict[tuple[str, str], SplitEvaluation]:
    """The evaluations stage 03 kept, checked against the current models, features and settings.

    Raises:
        FileNotFoundError: stage 03 has not run.
        sedlib.evaluate.StaleEvaluationsError: the models, features or settings changed since, or a
            split in ``splits`` was not evaluated.
    """
    path = run.verified(run.path("evaluations"))
    stored = stored_splits(path)
    missing = sorted(set(splits) - set(stored))
    if missing:
        raise StaleEvaluationsError(f"{path} has no evaluations of {missing}; rerun notebooks/03_eval_ood_gen")
    evaluations = load_evaluations(path, evaluation_fingerprint(config, run, stored))
    return {key: value for key, value in evaluations.items() if key[1] in splits}


FEATURE_DETECTORS_MODEL = "backbone_features"
"""Model name of the rows of the detectors that read the backbone features alone (no heads)."""


def detector_table(
    config: RunConfig, run: RunDir, models: dict[str, TrainedModel], progress: bool = True
) -> pd.DataFrame:
    """Post-hoc detectors (`sedlib.detectors`) on the run's OOD sets, in the layout of `detection_table`.

    Every detector is fitted on the first training pass (the rows training uses) and nothing else.
    Mahalanobis, relative Mahalanobis and KNN read the backbone features, shared by all members, so
    they give one row each (model ``backbone_features``); ViM reads a classifier's input, so it is
    fitted per model on the model's weight soup (the backbone's own head for row zero).

    Returns:
        Columns ``model``, ``label``, ``score``, ``score_label``, ``ood_set``, ``auroc``, ``fpr95``,
        ``aupr_out``, ``aupr_in``; empty when ``eval.detectors`` is empty.
    """
    from sedlib.detectors import DETECTORS, KNN, ViM, linear_head, penultimate_features
    from sedlib.tables import detection_splits, ood_set_metrics

    names = list(config.eval.detectors)
    if not names:
        return pd.DataFrame()
    device = resolve_device(config.device)
    _, train_features, fit_labels, _ = training_data(config, run)
    fit_features = train_features[0].float().numpy()
    splits = ["test", *detection_splits(config)]
    features = {split: load_split(config, run, split).features.astype(np.float32) for split in splits}
    rows = []

    def add(model: str, label: str, detector, transform=lambda x: x, score_label=None, seed=None) -> None:
        values = {split: detector.score(transform(features[split])) for split in splits}
        metrics = ood_set_metrics(config, values["test"], values, detector.name)
        for ood_set, row in metrics.items():
            rows.append(
                {
                    "model": model,
                    "label": label,
                    "seed": seed,
                    "score": detector.name,
                    "score_label": score_label or detector.label,
                    "ood_set": ood_set,
                    **row,
                }
            )

    bar = tqdm(total=len(names), desc="detectors", disable=not progress)
    backbone_label = f"{config.cache.backbone} features"
    for name in names:
        bar.set_postfix_str(name, refresh=False)
        if name == "vim":
            for model_run in config.model_runs(pretrained_head=True):
                soup = models[model_run.name].ensemble.soup()
                vim = ViM(device=device).fit(penultimate_features(soup, fit_features), *linear_head(soup))
                transform = lambda x, soup=soup: penultimate_features(soup, x)  # noqa: E731
                add(model_run.model, model_run.label, vim, transform, "ViM (weight soup)", model_run.seed)
        elif name == "knn":
            knn = KNN(k=config.eval.knn_k, max_train_rows=config.eval.knn_train_rows, device=device)
            add(FEATURE_DETECTORS_MODEL, backbone_label, knn.fit(fit_features))
        else:
            add(FEATURE_DETECTORS_MODEL, backbone_label, DETECTORS[name](device=device).fit(fit_features, fit_labels))
        bar.update()
    bar.close()
    return pd.DataFrame(rows)
