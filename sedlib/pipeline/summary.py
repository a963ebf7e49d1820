"""The generated prose of stage 05: the results summary and "which method wins where".

Every number in these texts is read from the result tables (`sedlib.pipeline.tables`); the texts only
say what the numbers are and how they compare.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sedlib.config import RunConfig
from sedlib.pipeline.tables import (
    AGGREGATIONS,
    DIVERSITY_SCORES,
    SPLIT_TITLES,
    generalisation_columns,
    main_rows,
    over_seeds,
    seed_means,
)


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def results_summary(
    summary: pd.DataFrame, detection: pd.DataFrame, diversity: pd.DataFrame, config: RunConfig, id_split: str = "test"
) -> str:
    """A short Markdown results section whose every number is read from the three result tables.

    It states plainly whether the paper's qualitative signature appears: each diversified model's
    members disagree more (#unique, PDS) than the reference model's (``eval.reference_model``, the
    deep ensemble) on the OOD sets, and how PDS compares with BMA as a detector.
    """
    frames = (main_rows(frame, config) for frame in (summary, detection, diversity))
    summary, detection, diversity, seeds = seed_means(*frames)
    reference = config.eval.reference_model
    labels = {name: label for name, label in config.evaluated_models().items() if name in config.main_models()}
    # one-member models (a single model, the pretrained head) have no disagreement to compare
    diverse = set(detection.loc[detection["score"] == "pds", "model"])
    trained = {name: label for name, label in labels.items() if name in config.models and name in diverse}
    ensemble = summary[summary["aggregation"] == "ensemble"].set_index("model")
    severities = [c for c in summary.columns if c.startswith("C-")]
    over = f" (means over {seeds} seeds)" if seeds > 1 else ""
    shift = " and under corruption" if severities else " (the study has no corruption splits)"
    lines = [f"**Generalisation.** Ensemble accuracy (mean logits) on the clean test split{shift}{over}:", ""]
    for name, label in labels.items():
        shifted = "; " + ", ".join(f"{s} {_pct(ensemble.loc[name, s])}" for s in severities) if severities else ""
        lines.append(f"- {label}: test {_pct(ensemble.loc[name, 'test'])}{shifted}.")
    sets = list(dict.fromkeys(detection["ood_set"]))
    for name, label in trained.items():
        if name == reference:
            continue
        ours = diversity[diversity["model"] == name].set_index("split")
        base = diversity[diversity["model"] == reference].set_index("split")
        higher = [s for s in sets if ours.loc[s, "num_unique"] > base.loc[s, "num_unique"]]
        pds_higher = [s for s in sets if ours.loc[s, "pds"] > base.loc[s, "pds"]]
        holds = len(higher) == len(sets) and len(pds_higher) == len(sets)
        verdict = "appears" if holds else "does not fully appear"
        lines.append("")
        lines.append(
            f"**Diversity signature ({label} vs {labels[reference]}).** The paper's signature (members that "
            f"disagree more off-distribution) {verdict}: mean #unique is higher on {len(higher)} of {len(sets)} "
            f"OOD sets and mean PDS on {len(pds_higher)} of {len(sets)}. On the clean test split: #unique "
            f"{ours.loc[id_split, 'num_unique']:.2f} vs {base.loc[id_split, 'num_unique']:.2f}, PDS "
            f"{ours.loc[id_split, 'pds']:.2f} vs {base.loc[id_split, 'pds']:.2f}."
        )
        auroc_of = detection.set_index(["model", "score", "ood_set"])["auroc"]
        better = [s for s in sets if auroc_of[name, "pds", s] > auroc_of[reference, "pds", s]]
        lines.append(
            f"Whether that disagreement separates OOD from ID better is a separate question: {label}'s PDS has "
            f"the higher AUROC on {len(better)} of {len(sets)} OOD sets"
            + (f" ({', '.join(better)})." if better else ".")
        )
        lines.append("")
        for s in sets:
            lines.append(
                f"- {s}: #unique {ours.loc[s, 'num_unique']:.2f} vs {base.loc[s, 'num_unique']:.2f}; "
                f"PDS {ours.loc[s, 'pds']:.2f} vs {base.loc[s, 'pds']:.2f}."
            )
    lines.append("")
    lines.append("**Detection.** AUROC of PDS against BMA (ID = clean test split; OOD positive):")
    lines.append("")
    auroc_of = detection.set_index(["model", "score", "ood_set"])["auroc"]
    for name, label in trained.items():
        parts = []
        wins = 0
        for s in sets:
            pds_value, bma_value = auroc_of[name, "pds", s], auroc_of[name, "bma", s]
            wins += pds_value > bma_value
            parts.append(f"{s} {_pct(pds_value)} vs {_pct(bma_value)}")
        lines.append(f"- {label}: PDS beats BMA on {wins} of {len(sets)} sets ({'; '.join(parts)}).")
    return "\n".join(lines)


def _method(row: pd.Series) -> str:
    return f"{row['label']} [{AGGREGATIONS[row['aggregation']].lower()}]"


def _spread_note(gap: float, spread: float, seeds: int) -> str:
    if seeds < 2 or np.isnan(spread):
        return "one seed, so no spread to compare with"
    verdict = "beyond" if gap > spread else "within"
    return f"{verdict} the seed spread (largest std of the two: {100 * spread:.1f} points)"


def method_comparison(summary: pd.DataFrame, detection: pd.DataFrame, config: RunConfig) -> str:
    """Markdown: which method and aggregation wins each split, and which score wins each OOD set.

    Every number is read from the two result tables (the main models only; sweep points are left
    out). A lead is called beyond the seed spread only when it exceeds the larger standard deviation
    over seeds of the two entries compared.
    """
    summary, detection = main_rows(summary, config), main_rows(detection, config)
    mean, std, seeds = over_seeds(summary, ["aggregation"])
    # the oracle is picked on the test split itself, and the mean member is no predictor one can use
    mean = mean[~mean["aggregation"].isin(("best_single_oracle", "mean_single"))]
    std = std.loc[mean.index]
    splits = [c for c in mean.columns if c in generalisation_columns(config)]
    over = f" (means over {seeds} seeds)" if seeds > 1 else ""
    lines = [f"**Which method wins where: generalisation**{over}. Best model and aggregation per split:", ""]
    for split in splits:
        order = mean[split].sort_values(ascending=False, kind="stable").index
        best = order[0]
        rival = next((k for k in order[1:] if mean.loc[k, "model"] != mean.loc[best, "model"]), None)
        text = f"- {SPLIT_TITLES.get(split, split)}: {_method(mean.loc[best])}, {_pct(mean.loc[best, split])}"
        if rival is not None:
            gap = mean.loc[best, split] - mean.loc[rival, split]
            spread = np.fmax(std.loc[best, split], std.loc[rival, split])  # NaN with one seed, without a warning
            lead = f"a lead of {100 * gap:.1f} points" if round(100 * gap, 1) > 0 else "a tie at this precision"
            text += (
                f"; the best other model is {_method(mean.loc[rival])}, {_pct(mean.loc[rival, split])}: "
                f"{lead}, {_spread_note(gap, spread, seeds)}"
            )
        lines.append(text + ".")
    det_mean, det_std, _ = over_seeds(detection, ["score", "score_label", "ood_set"])
    lines += ["", f"**Which method wins where: detection** (AUROC, ID = clean test split){over}:", ""]
    for ood_set in dict.fromkeys(det_mean["ood_set"]):
        rows = det_mean[det_mean["ood_set"] == ood_set].sort_values("auroc", ascending=False, kind="stable")
        best = rows.iloc[0]
        diverse = rows[rows["score"].isin(DIVERSITY_SCORES)]
        text = f"- {ood_set}: best is {best['label']}, {best['score_label']} ({_pct(best['auroc'])})"
        if not diverse.empty:
            top = diverse.iloc[0]
            rank = int((rows["auroc"] > top["auroc"]).sum()) + 1
            text += (
                f"; the best disagreement score is {top['label']}, {top['score_label']} ({_pct(top['auroc'])}), "
                f"rank {rank} of {len(rows)}"
            )
        lines.append(text + ".")
    return "\n".join(lines)
