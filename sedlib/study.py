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

import pandas as pd
import torch

from sedlib import source_hash
from sedlib.cache import load_split, plan_splits, resolve_device
from sedlib.config import ModelSpec, RunConfig
from sedlib.ensemble import HeadConfig, HeadEnsemble
from sedlib.evaluate import SplitEvaluation, evaluate_split
from sedlib.progress import tqdm
from sedlib.rundir import RunDir
from sedlib.train import train_ensemble


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
        "train": json.loads(json.dumps(spec.train.to_dict())),
        "features": {"train": train_hash, "val": val_hash},
        "code": training_code_hash(),
    }


def train_models(config: RunConfig, run: RunDir, progress: bool = True) -> dict[str, TrainedModel]:
    """Train (or reload, when unchanged) every model of the run.

    Returns:
        name -> `TrainedModel`, in the params file's order.
    """
    device = resolve_device(config.device)
    train, val = load_split(config, run, "train"), load_split(config, run, "val")
    num_classes = int(train.labels.max()) + 1
    feature_dim = train.features.shape[-1]
    train_features = torch.from_numpy(train.features)
    train_labels = torch.from_numpy(train.labels)
    val_features = torch.from_numpy(val.features.astype("float32"))
    trained = {}
    for name, spec in config.models.items():
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
            heads, spec.train, train_features, train_labels, val_features, val.labels, device=device, progress=progress
        )
        ensemble.save(run.model_path(name))
        log.to_csv(run.log_path(name), index=False)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        trained[name] = TrainedModel(spec, ensemble, log, reused=False)
    return trained


def load_models(config: RunConfig, run: RunDir) -> dict[str, TrainedModel]:
    """Load the models stage 02 wrote, checking that each was trained with the current settings."""
    device = resolve_device(config.device)
    models = {}
    for name, spec in config.models.items():
        record_path = run.models / f"{name}_train.json"
        if not record_path.is_file():
            raise FileNotFoundError(f"{record_path}: model {name!r} was not trained; run notebooks/02_train_a2d first")
        record = json.loads(record_path.read_text())
        if record.get("train") != json.loads(json.dumps(spec.train.to_dict())) or record.get("label") != spec.label:
            raise ValueError(
                f"{run.model_path(name)} was trained with other settings than {config.source} now gives for "
                f"models.{name}; rerun notebooks/02_train_a2d"
            )
        if record.get("code") != training_code_hash():
            raise ValueError(
                f"{run.model_path(name)} was trained by another version of the training code "
                f"({', '.join(TRAINING_CODE)}); rerun notebooks/02_train_a2d"
            )
        ensemble = HeadEnsemble.load(run.model_path(name), expected=HeadConfig(**record["heads"]), device=device)
        models[name] = TrainedModel(spec, ensemble, pd.read_csv(run.log_path(name)), reused=True)
    return models


def evaluate_models(
    config: RunConfig,
    run: RunDir,
    models: dict[str, TrainedModel],
    splits: list[str] | None = None,
    progress: bool = True,
) -> dict[tuple[str, str], SplitEvaluation]:
    """Evaluate every model on every split (all cached splits but ``train`` by default).

    Returns:
        ``(model, split) -> SplitEvaluation`` with per-sample predictions and scores.
    """
    if splits is None:
        splits = [plan.name for plan in plan_splits(config) if plan.kind != "train"]
    scores = list(config.eval.scores) or None
    results = {}
    bar = tqdm(total=len(splits) * len(models), desc="evaluate", disable=not progress)
    for split_name in splits:
        split = load_split(config, run, split_name)
        features = torch.from_numpy(split.features.astype("float32"))
        labels = split.labels
        for name, model in models.items():
            bar.set_postfix_str(f"{name} on {split_name}", refresh=False)
            results[name, split_name] = evaluate_split(
                model.ensemble, features, labels, config.eval.batch_size, scores, progress=False
            )
            bar.update()
    bar.close()
    return results
