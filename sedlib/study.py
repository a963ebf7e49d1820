"""Stages 02-04 on a run directory: train the configured ensembles, then evaluate them on every split.

Training (stage 02) fits each model of ``config.models`` on the cached train passes with
`sedlib.train.train_ensemble`, validating on ``val`` every epoch, and writes
``models/<name>.safetensors`` (+ JSON sidecar), ``models/<name>_log.csv`` and
``models/<name>_train.json`` (what the model was trained from: settings, features and a hash of the
training code). A model whose record matches is loaded instead of retrained; one that does not is
retrained, and the reason is printed.

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
from sedlib.evaluate import SplitEvaluation, evaluate_split, greedy_soup_members
from sedlib.progress import tqdm
from sedlib.rundir import RunDir
from sedlib.train import train_ensemble


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
    """A trained ensemble with its spec and per-epoch training log."""

    spec: ModelSpec
    ensemble: HeadEnsemble
    log: pd.DataFrame
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


def train_models(config: RunConfig, run: RunDir, progress: bool = True) -> dict[str, TrainedModel]:
    """Train (or reload, when unchanged) every model of the run, once per seed of ``seeds``.

    Returns:
        replica name (`sedlib.config.ModelRun`) -> `TrainedModel`, in the params file's order.
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
        record_path = run.models / f"{name}_train.json"
        previous = json.loads(record_path.read_text()) if record_path.is_file() else None
        if previous == record and run.model_path(name).is_file() and run.log_path(name).is_file():
            ensemble = HeadEnsemble.load(run.model_path(name), expected=heads, device=device)
            trained[name] = TrainedModel(spec, ensemble, pd.read_csv(run.log_path(name)), reused=True)
            tqdm.write(f"{name}: reusing {run.model_path(name)} (settings and features unchanged)")
            continue
        if previous is not None:
            changed = sorted(k for k in record if record[k] != previous.get(k))
            tqdm.write(f"{name}: retraining and replacing {run.model_path(name)} (changed: {', '.join(changed)})")
        record_path.unlink(missing_ok=True)
        tqdm.write(f"{name}: training {spec.label} (M={spec.num_members}, {spec.train.schedule} pairs)")
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
        )
        ensemble.save(run.model_path(name))
        log.to_csv(run.log_path(name), index=False)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        trained[name] = TrainedModel(spec, ensemble, log, reused=False)
    return trained


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
            models[name] = TrainedModel(spec, load_pretrained_head(run, device), pd.DataFrame(), True)
            continue
        record_path = run.models / f"{name}_train.json"
        if not record_path.is_file():
            raise FileNotFoundError(f"{record_path}: model {name!r} was not trained; run notebooks/02_train_a2d first")
        record = json.loads(record_path.read_text())
        if record.get("train") != json.loads(json.dumps(spec.train.to_dict())) or record.get("label") != spec.label:
            raise ValueError(
                f"{run.model_path(name)} was trained with other settings than {config.source} now gives for "
                f"models.{model_run.model}; rerun notebooks/02_train_a2d"
            )
        if record.get("code") != training_code_hash():
            raise ValueError(
                f"{run.model_path(name)} was trained by another version of the training code "
                f"({', '.join(TRAINING_CODE)}); rerun notebooks/02_train_a2d"
            )
        ensemble = HeadEnsemble.load(run.model_path(name), expected=HeadConfig(**record["heads"]), device=device)
        models[name] = TrainedModel(spec, ensemble, pd.read_csv(run.log_path(name)), reused=True)
    return models


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
    """Evaluate every model on every split (all cached splits but ``train`` by default).

    Each model's greedy soup (`sedlib.evaluate.greedy_soup_members`) is chosen once, on the val
    split, and evaluated everywhere beside the uniform soup.

    Returns:
        ``(model, split) -> SplitEvaluation`` with per-sample predictions and scores.
    """
    if splits is None:
        splits = [plan.name for plan in plan_splits(config) if plan.kind not in ("train", "disagreement")]
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
