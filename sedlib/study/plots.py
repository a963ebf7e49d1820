"""Figures of stages 02-05: training curves, hardness weights, corruption breakdown, ROC curves, scores, sweeps.

Each function returns a matplotlib Figure and leaves showing or saving it to the caller
(`sedlib.rundir.directory.RunDir.save_figure` writes it into the run directory), so a notebook cell both
displays and keeps it. Stage 01's figure of the inputs is `sedlib.study.input_plots.image_rows`, apart, so that
an edit here does not rerun stage 01 (`sedlib.rundir.closure`).
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from sklearn.metrics import roc_curve

from sedlib.eval.scores import SCORES
from sedlib.study.detection import ood_sets, pooled_samples
from sedlib.study.input_plots import note_figure
from sedlib.study.predictions import AGGREGATIONS, Evaluations
from sedlib.study.tables import SUMMARY_KEYS, over_seeds, seed_means


def training_curves(logs: Mapping[str, pd.DataFrame]) -> Figure:
    """Validation accuracy (ensemble and mean member), task loss and repulsion per epoch.

    Args:
        logs: model label -> the log of `sedlib.method.train.EnsembleTrainer.fit`.
    """
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    for (label, log), colour in zip(logs.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        axes[0].plot(log["epoch"], 100 * log["val_acc_ensemble"], color=colour, label=f"{label}: ensemble")
        axes[0].plot(log["epoch"], 100 * log["val_acc_member_mean"], color=colour, ls="--", label=f"{label}: members")
        axes[1].plot(log["epoch"], log["task_loss"], color=colour, label=label)
        axes[2].plot(log["epoch"], log["repulsion"], color=colour, label=label)
    for axis, title in zip(axes, ("validation accuracy (%)", "task loss (CE)", "repulsion (weighted A2D)")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return figure


def corruption_breakdown(per_corruption: pd.DataFrame, aggregation: str = "ensemble") -> Figure:
    """Accuracy per corruption, one panel per severity, one bar per model."""
    if per_corruption.empty:
        return note_figure("no corruption splits in this study (data.severities is empty, or data.dataset is features)")
    chosen, _, _ = over_seeds(per_corruption[per_corruption["aggregation"] == aggregation], ["corruption", "severity"])
    severities = sorted(chosen["severity"].unique())
    figure, axes = plt.subplots(len(severities), 1, figsize=(12, 2.8 * len(severities)), layout="constrained")
    axes = np.atleast_1d(axes)
    labels = list(dict.fromkeys(chosen["label"]))
    width = 0.8 / len(labels)
    for axis, severity in zip(axes, severities):
        at_severity = chosen[chosen["severity"] == severity]
        corruptions = list(dict.fromkeys(at_severity["corruption"]))
        for k, label in enumerate(labels):
            values = at_severity[at_severity["label"] == label].set_index("corruption").loc[corruptions, "accuracy"]
            axis.bar(np.arange(len(corruptions)) + k * width, 100 * values, width, label=label)
        axis.set_xticks(np.arange(len(corruptions)) + width * (len(labels) - 1) / 2)
        axis.set_xticklabels([c.replace("_", " ") for c in corruptions], rotation=30, ha="right", fontsize=8)
        axis.set_ylabel("accuracy (%)")
        axis.set_title(f"severity {severity}: {AGGREGATIONS[aggregation].lower()}")
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=len(labels))
    return figure


def _first_replicas(config) -> list[tuple[str, str]]:
    """``(replica name, model label)`` of each main model's first seed (`sedlib.config.RunConfig.first_replicas`)."""
    return [(model_run.name, model_run.label) for model_run in config.first_replicas()]


def roc_curves(
    evaluations: Evaluations, config, scores: tuple[str, ...] = ("bma", "pds"), id_split: str = "test"
) -> Figure:
    """ROC curves (OOD positive) of ``scores`` for every model (its first seed), one panel per OOD set."""
    sets = ood_sets(config)
    figure, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets), 3.3), layout="constrained", squeeze=False)
    styles = ("-", "--", ":", "-.")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (ood_set, splits) in zip(axes[0], sets.items()):
        for colour, (name, label) in zip(colours, _first_replicas(config)):
            for style, score in zip(styles, scores):
                sign = 1 if SCORES[score].higher_is_ood else -1
                id_values = evaluations[name, id_split].samples[score].to_numpy()
                ood_values = pooled_samples(evaluations, name, splits, score)
                truth = np.r_[np.zeros(len(id_values)), np.ones(len(ood_values))]
                fpr, tpr, _ = roc_curve(truth, sign * np.r_[id_values, ood_values])
                axis.plot(fpr, tpr, color=colour, ls=style, label=f"{label}: {SCORES[score].label}")
        axis.plot([0, 1], [0, 1], color="grey", lw=0.5)
        axis.set_title(f"{id_split} vs {ood_set}")
        axis.set_xlabel("false positive rate")
        axis.set_aspect("equal")
    axes[0, 0].set_ylabel("true positive rate")
    axes[0, -1].legend(fontsize=6, loc="lower right")
    return figure


def score_histograms(evaluations: Evaluations, config, scores: tuple[str, ...], id_split: str = "test") -> Figure:
    """Histograms of each score on the ID split and every OOD set; rows = scores, columns = models (first seed)."""
    models = _first_replicas(config)
    figure, axes = plt.subplots(
        len(scores), len(models), figsize=(4 * len(models), 2.4 * len(scores)), layout="constrained", squeeze=False
    )
    sets = {id_split: [id_split], **ood_sets(config)}
    for row, score in enumerate(scores):
        for column, (name, model_label) in enumerate(models):
            axis = axes[row, column]
            values = {label: pooled_samples(evaluations, name, splits, score) for label, splits in sets.items()}
            pooled = np.concatenate(list(values.values()))
            low, high = float(np.nanmin(pooled)), float(np.nanmax(pooled))
            if high - low <= 1e-6 * max(1.0, abs(high)):  # a constant score, e.g. PDS of a one-member model
                edges = np.array([low - 0.5, high + 0.5])
            else:
                edges = np.histogram_bin_edges(pooled, bins=30)
            for label, data in values.items():
                axis.hist(
                    data, bins=edges, density=True, histtype="step", lw=1.4 if label == id_split else 1, label=label
                )
            axis.set_title(f"{model_label}: {SCORES[score].label}", fontsize=9)
            axis.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=6)
    return figure


def summary_figure(
    table1: pd.DataFrame, detection: pd.DataFrame, diversity: pd.DataFrame, intervals: pd.DataFrame | None = None
) -> Figure:
    """Three panels: ensemble accuracy per split, PDS vs BMA AUROC per OOD set, #unique per split.

    Models without a PDS row (one member) show BMA only.

    Args:
        table1: `sedlib.study.predictions.generalisation_tables` summary.
        detection: `sedlib.study.detection.detection_table`.
        diversity: `sedlib.study.detection.diversity_table`.
        intervals: `sedlib.study.findings.value_intervals`, drawn as error bars on the bars; none when None.
    """
    bounds = None if intervals is None else intervals.set_index(["label", "measure", "split"])[["low", "high"]]

    def error_bars(axis, x, heights, label: str, measure: str, splits: list[str], scale: float) -> None:
        keys = [(label, measure, split) for split in splits]
        if bounds is None or not all(key in bounds.index for key in keys):
            return
        low, high = (scale * bounds.loc[keys, end].to_numpy() for end in ("low", "high"))
        heights = np.asarray(heights, dtype=float)
        axis.errorbar(x, heights, yerr=[heights - low, high - heights], fmt="none", ecolor="black", lw=0.7, capsize=2)

    table1, detection, diversity, _ = seed_means(table1, detection, diversity)
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.4), layout="constrained")
    labels = list(dict.fromkeys(table1["label"]))
    width = 0.8 / len(labels)
    ensemble = table1[table1["aggregation"] == "ensemble"].set_index("label")
    splits = [c for c in table1.columns if c not in SUMMARY_KEYS]
    for k, label in enumerate(labels):
        x, heights = np.arange(len(splits)) + k * width, 100 * ensemble.loc[label, splits].astype(float)
        axes[0].bar(x, heights, width, label=label)
        error_bars(axes[0], x, heights, label, "accuracy", splits, 100)
    axes[0].set_xticks(np.arange(len(splits)) + width * (len(labels) - 1) / 2, splits)
    axes[0].set_title("ensemble accuracy (%)")
    sets = list(dict.fromkeys(detection["ood_set"]))
    for k, label in enumerate(labels):
        for score, hatch in (("bma", ""), ("pds", "//")):
            chosen = detection[(detection["label"] == label) & (detection["score"] == score)].set_index("ood_set")
            if chosen.empty:  # PDS of a one-member model (the backbone's own head)
                continue
            x, heights = (
                np.arange(len(sets)) + k * width + (0 if score == "bma" else width / 2),
                100 * chosen.loc[sets, "auroc"],
            )
            axes[1].bar(x, heights, width / 2, hatch=hatch, color=f"C{k}", label=f"{label}: {SCORES[score].label}")
            error_bars(axes[1], x, heights, label, f"auroc_{score}", sets, 100)
    axes[1].axhline(50, color="grey", lw=0.5)
    axes[1].set_xticks(np.arange(len(sets)) + width * (len(labels) - 1) / 2, sets)
    axes[1].set_title("detection AUROC (%): BMA vs PDS (hatched)")
    split_names = list(dict.fromkeys(diversity["split"]))
    for k, label in enumerate(labels):
        chosen = diversity[diversity["label"] == label].set_index("split")
        x, heights = np.arange(len(split_names)) + k * width, chosen.loc[split_names, "num_unique"]
        axes[2].bar(x, heights, width, label=label)
        error_bars(axes[2], x, heights, label, "num_unique", split_names, 1)
    axes[2].set_xticks(np.arange(len(split_names)) + width * (len(labels) - 1) / 2, split_names)
    axes[2].set_title("mean #unique member predictions")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    for axis in axes:
        axis.tick_params(axis="x", labelsize=8)
        axis.grid(axis="y", alpha=0.3)
    return figure


def alpha_distribution(records: Mapping[str, tuple[pd.DataFrame, np.ndarray]]) -> Figure:
    """How SED's hardness weights alpha are spread: quantiles per epoch, and the last epoch's histogram.

    Args:
        records: model label -> ``(log, alpha)``: the training log of `sedlib.method.train.EnsembleTrainer.fit`
            (with its ``alpha_q*`` columns) and the ``(N,)`` alpha of the last epoch's rows.
    """
    if not records:
        return note_figure("no model of this run was trained with hardness weights")
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"alpha_q50": ":", "alpha_q90": "-.", "alpha_q99": "--", "alpha_max": "-"}
    for (label, (log, alpha)), colour in zip(records.items(), colours):
        for column, style in styles.items():
            name = "max" if column == "alpha_max" else f"{column[len('alpha_q') :]} %"
            axes[0].plot(log["epoch"], log[column], color=colour, ls=style, label=f"{label}: {name}")
        finite = alpha[np.isfinite(alpha) & (alpha > 0)]
        edges = np.geomspace(finite.min(), finite.max(), 60) if finite.max() > finite.min() else 30
        axes[1].hist(finite, bins=edges, histtype="step", color=colour, lw=1.3, label=label)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_title("alpha per epoch: median, 90th, 99th percentile, max")
    axes[1].set_xscale("log")
    axes[1].xaxis.set_minor_formatter(NullFormatter())
    axes[1].set_yscale("log")
    axes[1].set_xlabel("alpha (last epoch)")
    axes[1].set_ylabel("training rows")
    axes[1].axvline(1.0, color="grey", lw=0.5)
    axes[1].set_title("alpha over the training rows, last epoch")
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    axes[1].legend(fontsize=7)
    return figure


def image_grid(images: np.ndarray | None, captions: list[str], columns: int = 8, title: str = "") -> Figure:
    """Images (``(K, H, W, 3)`` uint8) in a grid with a caption above each; a note when there are none."""
    if images is None or not len(images):
        return note_figure("no images available: the training images are not at hand")
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.35 * columns, 1.6 * rows), squeeze=False)
    for k, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if k < len(images):
            axis.imshow(images[k])
            axis.set_title(captions[k], fontsize=6.5)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.subplots_adjust(wspace=0.08, hspace=0.35)
    return figure


def sweep_figure(sweeps: pd.DataFrame, reference: pd.DataFrame | None = None) -> Figure:
    """Each sweep's trade-off: accuracy and detection against the swept value, and the Pareto view.

    Args:
        sweeps: `sedlib.study.tables.sweep_table` (means over seeds).
        reference: the main models' rows in the same layout (e.g. the deep ensemble), drawn as
            labelled markers in the Pareto panel; None for none.
    """
    if sweeps.empty:
        return note_figure("this run has no sweeps (sweeps: in the params file)")
    names = list(dict.fromkeys(sweeps["sweep"]))
    figure, axes = plt.subplots(1, len(names) + 1, figsize=(4.2 * (len(names) + 1), 3.6), layout="constrained")
    axes = np.atleast_1d(axes)
    for axis, name in zip(axes, names):
        rows = sweeps[sweeps["sweep"] == name]
        axis.plot(rows["value"], 100 * rows["test"], "o-", label="accuracy: test")
        shifted = [c for c in rows.columns if c.startswith("C-")]
        if shifted:
            axis.plot(rows["value"], 100 * rows[shifted[-1]], "s-", label=f"accuracy: {shifted[-1]}")
        twin = axis.twinx()
        for column, style, colour in (("auroc_pds", "^--", "C3"), ("auroc_bma", "v:", "C4")):
            twin.plot(
                rows["value"],
                100 * rows[column],
                style,
                color=colour,
                label=f"AUROC: {column[len('auroc_') :].upper()}",
            )
        twin.set_ylabel("mean detection AUROC (%)")
        axis.set_xlabel(rows["symbol"].iloc[0])
        axis.set_ylabel("ensemble accuracy (%)")
        if name == "num_members":
            axis.set_xscale("log")
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.set_xticks(rows["value"], [f"{v:g}" for v in rows["value"]])
        axis.set_title(f"sweep of {rows['symbol'].iloc[0]} ({rows['base_label'].iloc[0]})", fontsize=9)
        axis.grid(alpha=0.3)
        lines = axis.get_legend_handles_labels()
        twin_lines = twin.get_legend_handles_labels()
        axis.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], fontsize=6, loc="lower left")
    pareto = axes[-1]
    for k, name in enumerate(names):
        rows = sweeps[sweeps["sweep"] == name]
        pareto.plot(
            100 * rows["test"], 100 * rows["auroc_pds"], "o-", color=f"C{k}", label=f"sweep of {rows['symbol'].iloc[0]}"
        )
        for _, row in rows.iterrows():
            pareto.annotate(f"{row['value']:g}", (100 * row["test"], 100 * row["auroc_pds"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
    front = sweeps[sweeps["pareto"]]
    pareto.scatter(100 * front["test"], 100 * front["auroc_pds"], s=90, facecolors="none", edgecolors="k",
                   label="Pareto front")  # fmt: skip
    if reference is not None:
        for _, row in reference.iterrows():
            pareto.scatter(100 * row["test"], 100 * row["auroc_pds"], marker="*", s=80, color="k")
            pareto.annotate(row["label"], (100 * row["test"], 100 * row["auroc_pds"]), fontsize=6,
                            xytext=(3, -8), textcoords="offset points")  # fmt: skip
    pareto.set_xlabel("ensemble accuracy, test (%)")
    pareto.set_ylabel("mean PDS AUROC over the OOD sets (%)")
    pareto.set_title("accuracy vs detection (up and right is better)", fontsize=9)
    pareto.grid(alpha=0.3)
    pareto.legend(fontsize=6)
    return figure
