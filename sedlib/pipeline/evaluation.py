"""Stages 03-04: every split through every model once, kept for detection, and the post-hoc detectors.

`evaluate_models` streams each split through each model (`sedlib.evaluate.evaluate_split`), and
stage 03 keeps the per-sample results in ``results/evaluations.h5`` (`store_evaluations`) with a
fingerprint of the models, splits, settings and code it was made from; stage 04 reads them back
(`stored_evaluations`), refusing a file made from anything else. `detector_table` fits the post-hoc
detectors of `sedlib.detectors` on the first training pass and scores every OOD set.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sedlib import file_sha256
from sedlib.config import PRETRAINED_HEAD_MODEL, RunConfig
from sedlib.device import resolve_device
from sedlib.evaluate import (
    SplitEvaluation,
    StaleEvaluationsError,
    evaluate_split,
    greedy_soup_members,
    load_evaluations,
    save_evaluations,
    stored_splits,
)
from sedlib.pipeline.closure import module_code_hash
from sedlib.pipeline.rundir import RunDir
from sedlib.pipeline.splits import load_split, plan_splits, training_data
from sedlib.pipeline.training import TrainedModel
from sedlib.progress import tqdm


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


def detector_key(replica: str, score: str, split: str) -> str:
    """The key of one detector's per-sample scores on one split in stage 04's detector-score file.

    ``replica`` is the replica whose weight soup the detector reads (ViM), or
    `FEATURE_DETECTORS_MODEL` for the detectors on the backbone features.
    """
    return f"{replica}|{score}|{split}"


def detector_table(
    config: RunConfig, run: RunDir, models: dict[str, TrainedModel], progress: bool = True
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Post-hoc detectors (`sedlib.detectors`) on the run's OOD sets, in the layout of `detection_table`.

    Every detector is fitted on the first training pass (the rows training uses) and nothing else.
    Mahalanobis, relative Mahalanobis and KNN read the backbone features, shared by all members, so
    they give one row each (model ``backbone_features``); ViM reads a classifier's input, so it is
    fitted per model on the model's weight soup (the backbone's own head for row zero). Sweep points
    get no ViM: what the sweeps report is their ensemble scores, and a ViM fit (an eigendecomposition
    of the feature width, float64 projections of every split) costs more than the point's evaluation.

    Returns:
        ``(table, scores)``. ``table``: columns ``model``, ``label``, ``score``, ``score_label``,
        ``ood_set``, ``auroc``, ``fpr95``, ``aupr_out``, ``aupr_in``; empty when ``eval.detectors``
        is empty. ``scores``: every detector's per-sample scores on the test split and every split of
        every OOD set, by `detector_key` (replica, detector, split), for the
        paired bootstrap of stage 05.
    """
    from sedlib.detectors import DETECTORS, KNN, ViM, linear_head, penultimate_features
    from sedlib.pipeline.tables import detection_splits, ood_set_metrics

    names = list(config.eval.detectors)
    if not names:
        return pd.DataFrame(), {}
    device = resolve_device(config.device)
    _, train_features, fit_labels, _ = training_data(config, run)
    fit_features = train_features[0].float().numpy()
    splits = ["test", *detection_splits(config)]
    features = {split: load_split(config, run, split).features.astype(np.float32) for split in splits}
    rows, scores = [], {}

    def add(owner: str, model: str, label: str, detector, transform=lambda x: x, score_label=None, seed=None) -> None:
        values = {split: detector.score(transform(features[split])) for split in splits}
        scores.update({detector_key(owner, detector.name, split): value for split, value in values.items()})
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

    bar = tqdm(total=len(names), desc="detectors", unit="detector", disable=not progress)
    backbone_label = f"{config.cache.backbone} features"
    for name in names:
        bar.set_postfix_str(name, refresh=False)
        if name == "vim":
            for model_run in config.model_runs(pretrained_head=True):
                if model_run.model in config.sweep_models:
                    continue
                soup = models[model_run.name].ensemble.soup()
                vim = ViM(device=device).fit(penultimate_features(soup, fit_features), *linear_head(soup))
                transform = lambda x, soup=soup: penultimate_features(soup, x)  # noqa: E731
                add(
                    model_run.name,
                    model_run.model,
                    model_run.label,
                    vim,
                    transform,
                    "ViM (weight soup)",
                    model_run.seed,
                )
        elif name == "knn":
            knn = KNN(k=config.eval.knn_k, max_train_rows=config.eval.knn_train_rows, device=device)
            add(FEATURE_DETECTORS_MODEL, FEATURE_DETECTORS_MODEL, backbone_label, knn.fit(fit_features))
        else:
            detector = DETECTORS[name](device=device).fit(fit_features, fit_labels)
            add(FEATURE_DETECTORS_MODEL, FEATURE_DETECTORS_MODEL, backbone_label, detector)
        bar.update()
    bar.close()
    return pd.DataFrame(rows), scores


def save_detector_scores(run: RunDir, scores: dict[str, np.ndarray]) -> Path:
    """Keep stage 04's per-sample detector scores (`detector_table`) for stage 05's bootstrap; returns the file."""
    path = run.path("detector_scores")
    with run.writing(path) as (temporary,), open(temporary, "wb") as file:
        np.savez(file, **scores)
    return path


def stored_detector_scores(run: RunDir) -> dict[str, np.ndarray]:
    """The per-sample detector scores stage 04 kept, after checking the file's content hash."""
    with np.load(run.verified(run.path("detector_scores"))) as stored:
        return {key: stored[key] for key in stored.files}
