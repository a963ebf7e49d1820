"""Stage 03: every split through every model once, kept for the stages after it.

`evaluate_models` streams each split through each model (`sedlib.eval.evaluate.evaluate_split`), and
stage 03 keeps the per-sample results in ``results/evaluations.h5`` (`store_evaluations`) with a
fingerprint of the models, splits, settings and code it was made from; stages 04 and 05 read them back
(`stored_evaluations`), refusing a file made from anything else. From them, `generalisation_tables` computes the
Table-1 analog (SED paper, Table 1): accuracy of the prediction ensemble (mean logits), the uniform soup, the best
single member and the mean member on the clean test split and its corrupted copies, with C-1 / C-5 = unweighted means
over the corruptions at severity 1 / 5. The best member is given twice: as the published code picks it (an oracle,
chosen on each test split and each corruption separately) and as a standard protocol picks it (the member with the
best validation accuracy, then evaluated everywhere). `calibration_table` gives ECE, NLL and Brier score. The
post-hoc detectors are stage 04's (`sedlib.study.detection`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sedlib import file_sha256
from sedlib.config import PRETRAINED_HEAD_MODEL, RunConfig
from sedlib.data.imagenet import subset_mask
from sedlib.data.splits import corruption_split, plan_splits
from sedlib.errors import ArtefactError
from sedlib.eval.evaluate import (
    SplitEvaluation,
    StaleEvaluationsError,
    evaluate_split,
    greedy_soup_members,
    load_evaluations,
    save_evaluations,
    stored_splits,
)
from sedlib.eval.metrics import accuracy
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
    if splits is None:
        splits = evaluated_splits(config)
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


def evaluated_splits(config: RunConfig) -> list[str]:
    """The splits stage 03 evaluates: ``val`` and every cached split but ``train`` and the disagreement set.

    ``val`` is the test split when ``data.val_rows`` is 0 (`sedlib.study.cached.load_split`), so it is named always.
    """
    return ["val"] + [plan.name for plan in plan_splits(config) if plan.kind not in ("train", "val", "disagreement")]


def evaluations_of(
    config: RunConfig, run: RunDir, models: dict[str, TrainedModel], progress: bool = True
) -> dict[tuple[str, str], SplitEvaluation]:
    """Stage 03's evaluations: the kept ones when nothing they depend on changed, else computed again and kept.

    The file ``results/evaluations.h5`` is reused, after its content hash is verified, when its fingerprint
    (`evaluation_fingerprint`: the model files, the splits' settings, the eval settings and this module's code)
    is the current one and it holds exactly the splits the study evaluates; so an edit of a figure or a table
    reruns the notebook without evaluating again. Otherwise every split goes through every model
    (`evaluate_models`) and the file is replaced (`store_evaluations`). One printed line says which, and why.
    """
    splits = evaluated_splits(config)
    path = run.path("evaluations")
    try:
        if path.is_file() and sorted(stored_splits(run.verified(path))) == sorted(splits):
            evaluations = stored_evaluations(config, run, splits)
            print(f"evaluations: kept {run.relative(path)} (same models, features, settings and code)", flush=True)
            return evaluations
        reason = "never evaluated in this run directory" if not path.is_file() else "the study's splits changed"
    except (ArtefactError, StaleEvaluationsError) as error:
        reason = str(error).split("; ")[0]
    print(f"evaluations: evaluating every split ({reason})", flush=True)
    evaluations = evaluate_models(config, run, models, splits, progress)
    store_evaluations(config, run, evaluations)
    return evaluations


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


AGGREGATIONS = {
    "ensemble": "Ensemble (mean logits)",
    "soup": "Soup (uniform)",
    "greedy_soup": "Soup (greedy, val)",
    "best_single_oracle": "Best single (oracle per split)",
    "best_single_val": "Best single (val-selected)",
    "mean_single": "Mean single",
}


def _accuracies(evaluation: SplitEvaluation, val_member: int) -> dict[str, float]:
    samples = evaluation.samples
    greedy = samples.get("greedy_soup_prediction")
    return {
        "ensemble": accuracy(samples["ensemble_prediction"], samples["label"]),
        "soup": accuracy(samples["soup_prediction"], samples["label"]),
        "greedy_soup": float("nan") if greedy is None else accuracy(greedy, samples["label"]),
        "best_single_oracle": evaluation.best_single,
        "best_single_val": float(evaluation.member_accuracy[val_member]),
        "mean_single": evaluation.mean_single,
    }


def generalisation_tables(evaluations: Evaluations, config: RunConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy of every model and aggregation on the clean and corrupted test splits.

    Args:
        evaluations: ``(model, split) -> SplitEvaluation`` covering ``val``, ``test``, every
            corruption split and every class-subset split (ImageNet-A/R) of the run.
        config: the run (models, corruptions, severities, subset sets).

    Returns:
        ``(summary, per_corruption)``. ``summary``: one row per (model, aggregation) with columns
        ``model``, ``label``, ``aggregation``, ``test``, ``C-<s>`` for each severity and one column
        per class-subset set (accuracy in [0, 1], under the run's protocol). ``per_corruption``:
        long format, columns ``model``, ``label``, ``aggregation``, ``corruption``, ``severity``,
        ``accuracy``.
    """
    summary, per_corruption = [], []
    for model_run in config.model_runs(pretrained_head=True):
        name, ids = model_run.name, replica_columns(model_run)
        val_member = int(np.argmax(evaluations[name, "val"].member_accuracy))
        test = _accuracies(evaluations[name, "test"], val_member)
        rows = {aggregation: {"test": value} for aggregation, value in test.items()}
        for severity in config.data.severities:
            for corruption in config.data.corruptions:
                values = _accuracies(evaluations[name, corruption_split(corruption, severity)], val_member)
                for aggregation, value in values.items():
                    per_corruption.append(
                        {
                            **ids,
                            "aggregation": aggregation,
                            "corruption": corruption,
                            "severity": severity,
                            "accuracy": value,
                        }
                    )
        long = pd.DataFrame(
            [r for r in per_corruption if (r["model"], r["seed"]) == (ids["model"], ids["seed"])],
            columns=[*ids, "aggregation", "corruption", "severity", "accuracy"],
        )
        for (aggregation, severity), group in long.groupby(["aggregation", "severity"]):
            rows[aggregation][f"C-{severity}"] = float(group["accuracy"].mean())
        for subset in config.data.subset_sets:
            for aggregation, value in _accuracies(evaluations[name, subset], val_member).items():
                rows[aggregation][subset] = value
        for aggregation in AGGREGATIONS:
            summary.append({**ids, "aggregation": aggregation, **rows[aggregation]})
    columns = [*replica_columns(config.model_runs()[0]), "aggregation", "corruption", "severity", "accuracy"]
    return pd.DataFrame(summary), pd.DataFrame(per_corruption, columns=columns)


CALIBRATED = {"ensemble": "Ensemble (mean logits)", "soup": "Soup (uniform)", "mean_member": "Mean member"}


def calibration_table(evaluations: Evaluations, config: RunConfig) -> pd.DataFrame:
    """ECE, NLL and Brier score of the ensemble, the uniform soup and the mean member.

    Splits: the clean test split and ``C-<s>`` (the mean of the values over the corruptions at
    severity s), as in the generalisation table.

    Returns:
        Columns ``model``, ``label``, ``seed``, ``aggregation`` (a key of `CALIBRATED`), ``split``,
        ``ece``, ``nll``, ``brier``.
    """
    groups = {"test": ["test"]}
    groups.update({f"C-{s}": [corruption_split(c, s) for c in config.data.corruptions] for s in config.data.severities})
    rows = []
    for model_run in config.model_runs(pretrained_head=True):
        for split, splits in groups.items():
            values = [evaluations[model_run.name, name].calibration() for name in splits]
            for aggregation in CALIBRATED:
                metrics = {
                    key: float(np.mean([v[aggregation][key] for v in values])) for key in ("ece", "nll", "brier")
                }
                rows.append({**replica_columns(model_run), "aggregation": aggregation, "split": split, **metrics})
    return pd.DataFrame(rows)
