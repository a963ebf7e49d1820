"""Stage 04 and the detection side of stage 05: OOD sets, detection metrics, diversity and the post-hoc detectors.

* `ood_sets`: the run's OOD sets and the cached splits pooled into each (``C-<s>`` pools the corruptions at
  severity s, each semantic-OOD set is its own).
* `detection_table`: the Table-3 analog: every score of `sedlib.eval.scores` separates the clean test split
  (ID, negative) from each OOD set (positive); AUROC, FPR@95 and AUPR (OOD and ID positive) follow
  `sedlib.eval.metrics` (`ood_set_metrics`).
* `diversity_table`: mean #unique member predictions and mean PDS per split, the signature SED aims at
  (members agree on ID data and disagree off it).
* `detector_table`: the post-hoc detectors of `sedlib.eval.detectors`, fitted on the first training pass,
  on every OOD set, in the layout of `detection_table`; their per-sample scores are kept for stage 05's
  paired bootstrap (`save_detector_scores`, `stored_detector_scores`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from sedlib.config import RunConfig
from sedlib.data.splits import corruption_split
from sedlib.device import resolve_device
from sedlib.eval.detectors import DETECTORS, KNN, ViM, linear_head, penultimate_features
from sedlib.eval.metrics import detection_metrics
from sedlib.eval.scores import SCORES
from sedlib.progress import tqdm
from sedlib.rundir.directory import RunDir
from sedlib.study.cached import load_split, training_data
from sedlib.study.models import TrainedModel
from sedlib.study.predictions import Evaluations, replica_columns


def ood_sets(config: RunConfig) -> dict[str, list[str]]:
    """OOD set name -> the cached splits pooled into it (``C-<s>`` pools the corruptions at severity s)."""
    sets = {f"C-{s}": [corruption_split(c, s) for c in config.data.corruptions] for s in config.data.severities}
    sets.update({name: [name] for name in config.data.ood_sets})
    return sets


def pooled_samples(evaluations: Evaluations, replica: str, splits: list[str], column: str) -> np.ndarray:
    """One per-sample column (a score, the label, a prediction) of a replica over several splits, concatenated."""
    return np.concatenate([evaluations[replica, split].samples[column].to_numpy() for split in splits])


def detection_table(evaluations: Evaluations, config: RunConfig, id_split: str = "test") -> pd.DataFrame:
    """Detection metrics of every score, model and OOD set (ID = ``id_split``, OOD positive).

    Returns:
        Long format: ``model``, ``label``, ``score``, ``score_label``, ``ood_set``, ``auroc``,
        ``fpr95``, ``aupr_out``, ``aupr_in``.
    """
    rows = []
    for model_run in config.model_runs(pretrained_head=True):
        name, ids = model_run.name, replica_columns(model_run)
        id_samples = evaluations[name, id_split].samples
        single = len(evaluations[name, id_split].member_accuracy) == 1
        scores = [s for s in SCORES if s in id_samples.columns and not (single and SCORES[s].needs_members)]
        for score in scores:
            values = {split: evaluations[name, split].samples[score].to_numpy() for split in detection_splits(config)}
            for ood_set, metrics in ood_set_metrics(config, id_samples[score].to_numpy(), values, score).items():
                rows.append(
                    {
                        **ids,
                        "score": score,
                        "score_label": SCORES[score].label,
                        "ood_set": ood_set,
                        **metrics,
                    }
                )
    return pd.DataFrame(rows)


def detection_splits(config: RunConfig) -> list[str]:
    """Every split of every OOD set (the corrupted copies and the semantic-OOD sets)."""
    return [split for splits in ood_sets(config).values() for split in splits]


def ood_set_metrics(
    config: RunConfig, id_values: np.ndarray, split_values: Mapping[str, np.ndarray], score: str
) -> dict[str, dict[str, float]]:
    """AUROC, FPR@95, AUPR-out and AUPR-in of one score for each OOD set of the run.

    Under the faithful protocol a C-s value is the mean of the per-corruption values (the published
    tables); under the standard one the corrupted copies are pooled into one detection problem.

    Args:
        config: the run (its OOD sets and protocol).
        id_values: ``(N_id,)`` the score on the ID split.
        split_values: split name -> ``(N_split,)`` the score on every split of every OOD set.
        score: a key of `sedlib.eval.scores.SCORES` or `sedlib.eval.detectors.DETECTORS` (its direction).

    Returns:
        OOD set -> metric name -> value.
    """
    higher = SCORES[score].higher_is_ood if score in SCORES else True  # every detector: higher = more OOD
    results = {}
    for ood_set, splits in ood_sets(config).items():
        groups = [[split] for split in splits] if config.protocol == "faithful" else [splits]
        metrics = [
            detection_metrics(id_values, np.concatenate([split_values[split] for split in group]), higher)
            for group in groups
        ]
        results[ood_set] = {key: float(np.mean([m[key] for m in metrics])) for key in metrics[0]}
    return results


def diversity_table(evaluations: Evaluations, config: RunConfig, id_split: str = "test") -> pd.DataFrame:
    """Mean #unique predictions and mean PDS per model on the ID split and each OOD set.

    Returns:
        Columns ``model``, ``label``, ``split``, ``num_unique``, ``pds``.
    """
    rows = []
    for model_run in config.model_runs(pretrained_head=True):
        name, ids = model_run.name, replica_columns(model_run)
        for split, splits in {id_split: [id_split], **ood_sets(config)}.items():
            rows.append(
                {
                    **ids,
                    "split": split,
                    "num_unique": float(pooled_samples(evaluations, name, splits, "num_unique").mean()),
                    "pds": float(pooled_samples(evaluations, name, splits, "pds").mean()),
                }
            )
    return pd.DataFrame(rows)


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
    """Post-hoc detectors (`sedlib.eval.detectors`) on the run's OOD sets, in the layout of `detection_table`.

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
