"""The report's tables: the numbers of stages 03-05 laid out and formatted, computing nothing new.

* `table1`, `table3`, `detection_wide`, `calibration_wide`: the Table-1 and Table-3 analogs and the calibration
  table of the results that `sedlib.study.predictions` and `sedlib.study.detection` compute, averaged over seeds
  (`over_seeds`) with their spread.
* `sweep_table`, `sweep_markdown`: the sweeps of stage 05 and their Pareto front.
* `published_comparison`: ours beside the paper's published numbers, read from their data file and labelled so.
* `protocol_note`, `no_shift_note`: the sentences every table carries about the protocol and missing shifts.

Tables are pandas DataFrames, their numbers formatted as text with one precision per column;
`markdown_table` renders them as pipe tables, which survive into both the HTML and the PDF report.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from sedlib.config import SWEEP_SYMBOLS, RunConfig
from sedlib.data.registry import data_source
from sedlib.method.published import PUBLISHED, compare_with_published
from sedlib.study.predictions import AGGREGATIONS, CALIBRATED

SUMMARY_KEYS = ("model", "label", "seed", "aggregation")
"""The columns of a generalisation summary that are not splits."""


def over_seeds(frame: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Mean and standard deviation of every numeric column over the seeds of each model.

    Args:
        frame: a result table with a ``seed`` column (one row per replica and ``keys``).
        keys: the columns besides ``model`` and ``label`` that identify a row (e.g. ``aggregation``).

    Returns:
        ``(mean, std, seeds)``: one row per ``(model, label, *keys)`` in first-seen order; ``std`` is
        the sample standard deviation (NaN with one seed); ``seeds`` is the largest number of seeds
        of any model.
    """
    group = ["model", "label", *keys]
    values = [c for c in frame.columns if c not in (*group, "seed") and pd.api.types.is_numeric_dtype(frame[c])]
    grouped = frame.groupby(group, sort=False, dropna=False)[values]
    seeds = int(frame.groupby(["model"], sort=False)["seed"].nunique().max()) if "seed" in frame else 1
    return grouped.mean().reset_index(), grouped.std().reset_index(), max(seeds, 1)


def _mean_std_cells(mean: pd.DataFrame, std: pd.DataFrame, columns: list[str], scale: float, digits: int):
    """``columns`` of ``mean`` as text with ``digits`` decimals throughout, ``"m ± s"`` where a model has several seeds.

    A missing value (a greedy soup that was not evaluated) reads "–".
    """
    table = mean.copy()
    for column in columns:
        m, d = scale * mean[column], scale * std[column]
        table[column] = [
            "–" if np.isnan(a) else f"{a:.{digits}f}" if np.isnan(b) else f"{a:.{digits}f} ± {b:.{digits}f}"
            for a, b in zip(m, d)
        ]
    return table


def calibration_wide(calibration: pd.DataFrame) -> pd.DataFrame:
    """Rows ``Model / aggregation``, one column per split holding ``ECE / NLL / Brier`` (ECE in %), means over seeds."""
    mean, _, _ = over_seeds(calibration, ["aggregation", "split"])
    cells = [
        f"{100 * ece:.1f} / {nll:.3f} / {brier:.3f}" for ece, nll, brier in mean[["ece", "nll", "brier"]].to_numpy()
    ]
    frame = mean.assign(cell=cells, Method=mean["label"] + " / " + mean["aggregation"].map(CALIBRATED))
    table = frame.pivot_table(index="Method", columns="split", values="cell", aggfunc="first", sort=False)
    table = table[list(dict.fromkeys(calibration["split"]))].reset_index()
    table.columns.name = None
    return table.rename(columns=SPLIT_TITLES)


def published_comparison(
    summary: pd.DataFrame, detection: pd.DataFrame, diversity: pd.DataFrame, config: RunConfig
) -> pd.DataFrame:
    """Our numbers beside the published ones, for the models named after a published run.

    Models whose name is a published run (``50_models``, ``ood_gen``, ``ood_det_cov``,
    ``ood_det_sem``; `sedlib.method.published.PUBLISHED`) are matched with the reference file
    ``params/reference/sed_published.csv`` (`sedlib.method.published.published_results`): accuracies in
    %, AUROC in [0, 1], diversity as counts. A published value we did not compute stays, with NaN.

    Returns:
        Columns ``table``, ``run``, ``metric``, ``split``, ``published``, ``ours``, ``difference``
        (ours - published); empty when no model is named after a published run.
    """
    summary, detection, diversity, _ = seed_means(summary, detection, diversity)
    runs = [name for name in config.models if name in PUBLISHED]
    accuracy = summary[summary["model"].isin(runs)].melt(
        id_vars=["model", "aggregation"], value_vars=[c for c in summary.columns if c not in SUMMARY_KEYS]
    )
    accuracy = accuracy.assign(value=100 * accuracy["value"]).rename(columns={"aggregation": "metric"})
    spread = diversity[diversity["model"].isin(runs)].melt(
        id_vars=["model", "split"], value_vars=["num_unique", "pds"], var_name="metric"
    )
    ood_gen = pd.concat([accuracy.rename(columns={"variable": "split"}), spread])
    chosen = detection[detection["model"].isin(runs) & detection["score"].isin(["bma", "pds"])]
    ood_det = chosen.rename(columns={"score": "metric", "ood_set": "split", "auroc": "value"})
    tables = []
    for table, ours in (("ood_gen", ood_gen), ("ood_det", ood_det)):
        ours = ours.rename(columns={"model": "run"})[["run", "metric", "split", "value"]]
        compared = compare_with_published(ours, table)
        tables.append(compared[compared["run"].isin(runs)].assign(table=table))
    frame = pd.concat(tables, ignore_index=True)
    return frame[["table", "run", "metric", "split", "published", "ours", "difference"]]


def percent(frame: pd.DataFrame, columns: list[str], digits: int = 1) -> pd.DataFrame:
    """A copy with ``columns`` (fractions) as percentage text with ``digits`` decimals throughout ("–" if missing)."""
    frame = frame.copy()
    for column in columns:
        frame[column] = ["–" if np.isnan(value) else f"{100 * value:.{digits}f}" for value in frame[column]]
    return frame


_NUMBER_CELL = re.compile(r"[-+–]?\d[\d.]*( ± [\d.]+)?|–")


def markdown_table(table: pd.DataFrame) -> str:
    """A table as a Markdown pipe table whose cells read exactly as formatted; numbers right-aligned.

    The result tables format their numbers as text (one decimal throughout a percentage column);
    ``to_markdown`` would otherwise parse "61.0" back into a number and print it as "61".
    """
    numeric = [all(_NUMBER_CELL.fullmatch(str(value)) for value in table[column]) for column in table.columns]
    align = ["right" if is_number else "left" for is_number in numeric]
    return table.to_markdown(index=False, disable_numparse=True, colalign=align)


SPLIT_TITLES = {"test": "Test", "imagenet_a": "IN-A", "imagenet_r": "IN-R"}


def protocol_note(config: RunConfig, short: bool = False) -> str:
    """One line naming the evaluation protocol (`sedlib.eval.protocols`), printed above every table.

    Args:
        config: the run.
        short: only the protocol's name (for the tables after the first one of a section).
    """
    if short:
        return f"*Protocol: **{config.protocol}**.*" + no_shift_note(config)
    shifted = bool(config.data.severities)
    effects = list(data_source(config).protocol_effects(config.protocol))  # e.g. ImageNet-A/R and -C
    if config.protocol == "faithful":
        parts = ["the published evaluation code, quirks included", *effects]
        parts += ["C-1/C-5 detection metrics averaged over the corruptions"] if shifted else []
    else:
        parts = ["standard protocols", *effects]
        parts += ["C-1/C-5 detection metrics on the pooled corruptions"] if shifted else []
    return (
        f"*Protocol: **{config.protocol}** ({'; '.join(parts)}). Both best-single rows are shown: the oracle "
        "(published) and the val-selected member (standard).*" + no_shift_note(config)
    )


def no_shift_note(config: RunConfig) -> str:
    """A sentence for a study without corruption splits (your own features, or no severities); else empty."""
    if config.data.severities:
        return ""
    why = (
        "data.dataset is features: there are no images to corrupt"
        if data_source(config).corruption == "none"
        else "data.severities is empty"
    )
    return (
        f" *This study has no corruption splits ({why}): no C-1/C-5 columns, and detection is measured on the "
        "semantic-OOD sets only.*"
    )


def table1(summary: pd.DataFrame) -> pd.DataFrame:
    """Table-1 layout: rows ``Model / aggregation``, columns Test, C-1, C-5, IN-A, IN-R (accuracy, %).

    With several seeds a cell reads ``mean ± std`` over them.
    """
    mean, std, _ = over_seeds(summary, ["aggregation"])
    columns = [c for c in mean.columns if c not in SUMMARY_KEYS]
    table = _mean_std_cells(mean, std, columns, 100, 1)
    table.insert(0, "Method", table["label"] + " / " + table["aggregation"].map(AGGREGATIONS))
    return table[["Method", *columns]].rename(columns=SPLIT_TITLES)


def table3(detection: pd.DataFrame, scores: tuple[str, ...] = ("bma", "pds")) -> pd.DataFrame:
    """Table-3 layout: rows ``Model / score``, one AUROC column (%) per OOD set (``mean ± std`` over seeds)."""
    table = detection_wide(detection[detection["score"].isin(scores)], ("auroc",))
    table.insert(0, "Method", table.pop("Model") + " / " + table.pop("Score"))
    return table


def detection_wide(detection: pd.DataFrame, metrics: tuple[str, ...] = ("auroc",)) -> pd.DataFrame:
    """Every score of every model in rows, one column per OOD set.

    With one metric a cell holds its value in % (``mean ± std`` when a model has several seeds);
    with several, their means joined by " / " in the order given (e.g. ``AUROC / FPR@95 / AUPR-out``).
    """
    mean, std, _ = over_seeds(detection, ["score", "score_label", "ood_set"])
    if len(metrics) > 1:
        cells = percent(mean, list(metrics))[list(metrics)].agg(" / ".join, axis=1)
    else:
        cells = _mean_std_cells(mean, std, list(metrics), 100, 1)[metrics[0]]
    frame = mean.assign(cell=cells)
    table = frame.pivot_table(
        index=["label", "score_label"], columns="ood_set", values="cell", aggfunc="first", sort=False
    )
    table = table[list(dict.fromkeys(detection["ood_set"]))].reset_index()
    table = table.rename(columns={"label": "Model", "score_label": "Score"})
    table.columns.name = None
    return table


def seed_means(
    summary: pd.DataFrame, detection: pd.DataFrame, diversity: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """The three result tables averaged over seeds (one row per model), and the number of seeds."""
    summary_mean, _, seeds = over_seeds(summary, ["aggregation"])
    detection_mean, _, _ = over_seeds(detection, ["score", "score_label", "ood_set"])
    diversity_mean, _, _ = over_seeds(diversity, ["split"])
    return summary_mean, detection_mean, diversity_mean, seeds


def published_comparison_markdown(comparison: pd.DataFrame) -> str:
    """`published_comparison` as Markdown tables (generalisation, detection), or a line saying why there is none."""
    if comparison.empty:
        return (
            "*No model of this study is named after a published run (`50_models`, `ood_gen`, `ood_det_cov`, "
            "`ood_det_sem`), so there are no published numbers to compare with: the paper's numbers are ImageNet "
            "numbers (`params/imagenet_deit3b.yaml`).*"
        )
    parts = []
    titles = {"ood_gen": "Generalisation (accuracy %, diversity counts)", "ood_det": "Detection (AUROC)"}
    for table, frame in comparison.groupby("table", sort=False):
        shown = frame.drop(columns=["table"]).round(3)
        parts.append(f"**{titles[table]}**, published (the authors' released numbers) vs ours:\n")
        parts.append(shown.to_markdown(index=False))
        parts.append("")
    return "\n".join(parts)


def main_rows(frame: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """The rows of a result table that belong in the main tables: models of the params file, not sweep points.

    Rows of models outside ``config.models`` (the detectors on the backbone features) are kept.
    """
    return frame[~frame["model"].isin(config.sweep_models)]


DIVERSITY_SCORES = ("pds", "num_unique", "mutual_information", "a2d")
"""Scores that read the members' disagreement (one-member models have none)."""


def sweep_table(summary: pd.DataFrame, detection: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """One row per point of every sweep (`sedlib.config.Sweep`): accuracy and detection, means over seeds.

    Args:
        summary: `sedlib.study.predictions.generalisation_tables` summary (all models, sweep points included).
        detection: `detection_table` rows (all models).
        config: the run and its ``sweeps``.

    Returns:
        Columns ``sweep``, ``symbol``, ``value``, ``model``, ``label``, ``base_label``, ``test`` and
        ``C-<s>`` (ensemble accuracy), ``mean_member_test`` (mean member accuracy on test),
        ``auroc_pds`` and ``auroc_bma`` (AUROC averaged over the OOD sets), ``pareto`` (no other
        point of any sweep is at least as good in test accuracy and PDS AUROC and better in one);
        empty when the run has no sweeps.
    """
    if not config.sweeps:
        return pd.DataFrame()
    accuracy = _model_means(summary, config)
    detection_means = _detection_means(detection)
    rows = []
    for name, sweep in config.sweeps.items():
        for value, model in zip(sweep.values, sweep.points):
            rows.append(
                {
                    "sweep": name,
                    "symbol": SWEEP_SYMBOLS.get(name, name),
                    "value": value,
                    "model": model,
                    "label": config.models[model].label,
                    "base_label": config.models[sweep.model].label,
                    **accuracy.loc[model].to_dict(),
                    "auroc_pds": detection_means.get((model, "pds"), np.nan),
                    "auroc_bma": detection_means.get((model, "bma"), np.nan),
                }
            )
    table = pd.DataFrame(rows)
    points = table.drop_duplicates("model")[["model", "test", "auroc_pds"]].to_numpy()
    dominated = {
        model
        for model, test, auroc in points
        for _, other_test, other_auroc in points
        if other_test >= test and other_auroc >= auroc and (other_test > test or other_auroc > auroc)
    }
    table["pareto"] = ~table["model"].isin(dominated) & table["auroc_pds"].notna()
    return table


def sweep_references(summary: pd.DataFrame, detection: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """The main models that are no sweep point, in `sweep_table`'s layout (``label``, ``test``, ``auroc_pds``, ...).

    Models without a PDS (one member) are left out. These are the reference markers of
    `sedlib.study.plots.sweep_figure`.
    """
    points = {model for sweep in config.sweeps.values() for model in sweep.points}
    if not points:
        return pd.DataFrame()
    accuracy = _model_means(summary, config)
    detection_means = _detection_means(detection)
    rows = [
        {"model": name, "label": config.models[name].label, **accuracy.loc[name].to_dict(),
         "auroc_pds": detection_means[name, "pds"], "auroc_bma": detection_means.get((name, "bma"), np.nan)}
        for name in config.main_models()
        if name in config.models and name not in points and (name, "pds") in detection_means
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _model_means(summary: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """Per model (index): ensemble accuracy on test and ``C-<s>``, and the mean member's on test; means over seeds."""
    mean, _, _ = over_seeds(summary, ["aggregation"])
    splits = ["test", *(f"C-{s}" for s in config.data.severities)]
    ensemble = mean[mean["aggregation"] == "ensemble"].set_index("model")[splits]
    members = mean[mean["aggregation"] == "mean_single"].set_index("model")["test"].rename("mean_member_test")
    return ensemble.join(members)


def _detection_means(detection: pd.DataFrame) -> dict[tuple[str, str], float]:
    """``(model, score) -> AUROC`` averaged over the OOD sets and the seeds."""
    mean, _, _ = over_seeds(detection, ["score", "score_label", "ood_set"])
    return mean.groupby(["model", "score"], sort=False)["auroc"].mean().to_dict()


def sweep_markdown(sweeps: pd.DataFrame) -> str:
    """`sweep_table` as one Markdown table (percentages), or a line saying the run has no sweeps."""
    if sweeps.empty:
        return "*This run has no sweeps (`sweeps:` in the params file).*"
    shown = sweeps.assign(parameter=sweeps["symbol"] + " = " + sweeps["value"].map("{:g}".format))
    columns = ["test", *[c for c in sweeps.columns if c.startswith("C-")], "mean_member_test", "auroc_pds", "auroc_bma"]
    shown = percent(shown, columns)
    shown["pareto"] = np.where(sweeps["pareto"], "yes", "")
    titles = {
        "base_label": "Model",
        "parameter": "Point",
        "test": "Test acc",
        "mean_member_test": "Mean member, test",
        "auroc_pds": "AUROC PDS",
        "auroc_bma": "AUROC BMA",
        "pareto": "Pareto",
    }
    return markdown_table(shown[["base_label", "parameter", *columns, "pareto"]].rename(columns=titles))


def generalisation_columns(config: RunConfig) -> list[str]:
    """The split columns of a generalisation summary: ``test``, ``C-<s>`` and the class-subset sets."""
    return ["test", *(f"C-{s}" for s in config.data.severities), *config.data.subset_sets]
