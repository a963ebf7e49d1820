"""Stage 03: every split through every model once, kept for the stages after it.

`evaluate_models` streams each split through each model (`sedlib.eval.evaluate.evaluate_split`), and
stage 03 keeps the per-sample results in ``results/evaluations.h5`` (`store_evaluations`) with a
fingerprint of the models, splits, settings and code it was made from; stages 04 and 05 read them back
(`stored_evaluations`), refusing a file made from anything else. The post-hoc detectors are stage 04's
(`sedlib.study.detection`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from sedlib import file_sha256
from sedlib.config import PRETRAINED_HEAD_MODEL, RunConfig
from sedlib.data.imagenet import subset_mask
from sedlib.data.splits import plan_splits
from sedlib.eval.evaluate import (
    SplitEvaluation,
    StaleEvaluationsError,
    evaluate_split,
    greedy_soup_members,
    load_evaluations,
    save_evaluations,
    stored_splits,
)
from sedlib.progress import tqdm
from sedlib.rundir.closure import module_code_hash
from sedlib.rundir.directory import RunDir
from sedlib.study.cached import load_split
from sedlib.study.models import TrainedModel

Evaluations = Mapping[tuple[str, str], SplitEvaluation]
"""Stored evaluations: (replica, split) -> its per-sample `SplitEvaluation`."""


def replica_columns(model_run) -> dict:
    """The identifying columns of a replica's rows: its model, label and seed (NaN for the pretrained head)."""
    return {"model": model_run.model, "label": model_run.label, "seed": model_run.seed}


def class_subset(config: RunConfig, split: str):
    """The classes (indices into the model's classes) of a class-subset split such as ImageNet-A, else None."""
    if split not in config.data.subset_sets:
        return None
    return subset_mask(split)


def evaluate_models(
    config: RunConfig,
    run: RunDir,
    models: dict[str, TrainedModel],
    splits: list[str] | None = None,
    progress: bool = True,
) -> dict[tuple[str, str], SplitEvaluation]:
    """Evaluate every model on every split (by default ``val`` and every cached split but ``train``).

    Each model's greedy soup (`sedlib.eval.evaluate.greedy_soup_members`) is chosen once, on the val
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
    rows = {name: load_split(config, run, name, lazy=True).manifest.rows for name in splits}
    bar = tqdm(total=sum(rows.values()) * len(models), desc="evaluate", unit="row", disable=not progress)
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
            bar.update(rows[split_name])
    bar.close()
    return results


def evaluation_fingerprint(config: RunConfig, run: RunDir, splits: list[str]) -> str:
    """Hash of what an evaluation depends on: the model files, the splits' settings, the eval settings and code."""
    digest = hashlib.sha256(module_code_hash(Path(__file__)).encode())  # this module's import closure
    payload = {"eval": config.to_dict()["eval"], "protocol": config.protocol, "splits": {}}
    for split in splits:
        payload["splits"][split] = load_split(config, run, split, lazy=True).manifest.params_hash
    digest.update(json.dumps(payload, sort_keys=True).encode())
    for model_run in config.model_runs(pretrained_head=True):
        name = model_run.name
        path = run.path("pretrained_head") if name == PRETRAINED_HEAD_MODEL else run.path("model", name)
        digest.update(name.encode())
        digest.update(file_sha256(path).encode())
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
        sedlib.eval.evaluate.StaleEvaluationsError: the models, features or settings changed since, or a
            split in ``splits`` was not evaluated.
    """
    path = run.verified(run.path("evaluations"))
    stored = stored_splits(path)
    missing = sorted(set(splits) - set(stored))
    if missing:
        raise StaleEvaluationsError(f"{path} has no evaluations of {missing}; rerun notebooks/03_eval_ood_gen")
    evaluations = load_evaluations(path, evaluation_fingerprint(config, run, stored))
    return {key: value for key, value in evaluations.items() if key[1] in splits}
