"""Stage 02: train every model of the run (each seed a replica), or reuse it when nothing changed.

Each model of ``config.models`` is fitted on the cached train passes with
`sedlib.train.train_ensemble`, validating on ``val`` every epoch. Its files are written at once through
`sedlib.pipeline.rundir.RunDir.writing`: ``models/<name>.safetensors`` (+ JSON sidecar),
``models/<name>_log.csv``, the hardness weights ``models/<name>_alpha.npz`` when it has them
(`sedlib.pipeline.hardness`) and, last, ``models/<name>_train.json`` (what it was trained from:
settings, features and a hash of the training code). A model whose record matches and whose files are
what was written (their content hashes) is loaded instead of retrained; any other is retrained, and
the reason is printed. A training run that fails replaces nothing: the model trained before it, and
its record, stay as they were. Later stages load the models with `load_models`, which verifies them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sedlib import source_hash
from sedlib.config import PRETRAINED_HEAD_MODEL, ModelSpec, RunConfig
from sedlib.device import resolve_device
from sedlib.ensemble import HeadConfig, HeadEnsemble
from sedlib.errors import SedlibError
from sedlib.pipeline.rundir import ArtefactError, RunDir
from sedlib.pipeline.splits import DISAGREEMENT_SPLIT, class_names, load_pretrained_head, load_split, training_data
from sedlib.pipeline.stages import MODEL_FILES
from sedlib.progress import tqdm
from sedlib.train import train_ensemble


class TrainingDivergedError(SedlibError, FloatingPointError):
    """A model's training loss became non-finite; the message names the model and the params key to change."""


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


TRAINING_CODE = ("ensemble.py", "losses.py", "optim.py", "schedules.py", "train.py")


def training_code_hash() -> str:
    """Hash of the modules that determine a trained model: a change to them retrains, not reuses."""
    package = Path(__file__).parents[1]  # the sedlib package
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
    num_classes = len(class_names(config))
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
