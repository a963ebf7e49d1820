"""The generated prose of stage 05: the results summary and "which method wins where".

Every number in these texts is read from the result tables (`sedlib.study.tables`); the texts only
say what the numbers are. Whether a claim holds is said only with the key findings' verdicts
(`sedlib.study.findings`), in the same words and the same rounding.
"""

from __future__ import annotations

import pandas as pd

from sedlib.config import RunConfig
from sedlib.study.findings import CLAIMS, claim_verdicts, judged_models, split_verdicts
from sedlib.study.tables import (
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


def judged_text(evidence: pd.DataFrame, claim: str) -> str:
    """``<claim>: holds on k of n, contradicted on m (C-1 better; ...)``: a claim's verdicts as the key findings say.

    Empty when ``evidence`` does not judge the claim.
    """
    counted = claim_verdicts(evidence).get(claim)
    if counted is None:
        return ""
    splits = "; ".join(f"{split} {judged}" for split, judged in split_verdicts(evidence, claim).items())
    return f"{CLAIMS[claim].title}: {counted} ({splits})"


def results_summary(
    summary: pd.DataFrame,
    detection: pd.DataFrame,
    diversity: pd.DataFrame,
    evidence: pd.DataFrame,
    config: RunConfig,
    id_split: str = "test",
) -> str:
    """A short Markdown results section whose every number is read from the result tables and the evidence.

    It lays out the accuracies, each diversified model's disagreement (#unique, PDS) beside the
    reference model's (``eval.reference_model``, the deep ensemble) and PDS beside BMA as a detector;
    whether the paper's claims hold is said only with the key findings' verdicts
    (`sedlib.study.findings.claim_evidence`), in their words.
    """
    frames = (main_rows(frame, config) for frame in (summary, detection, diversity))
    summary, detection, diversity, seeds = seed_means(*frames)
    reference = config.eval.reference_model
    labels = {name: label for name, label in config.evaluated_models().items() if name in config.main_models()}
    # one-member models (a single model, the pretrained head) have no disagreement to compare
    diverse = set(detection.loc[detection["score"] == "pds", "model"])
    trained = {name: label for name, label in labels.items() if name in config.models and name in diverse}
    judged, _ = judged_models(config)
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
        lines += ["", f"**Disagreement ({label} vs {labels[reference]}).** Mean #unique and mean PDS{over}:", ""]
        for s in [id_split, *sets]:
            lines.append(
                f"- {s}: #unique {ours.loc[s, 'num_unique']:.2f} vs {base.loc[s, 'num_unique']:.2f}; "
                f"PDS {ours.loc[s, 'pds']:.2f} vs {base.loc[s, 'pds']:.2f}."
            )
        verdicts = [judged_text(evidence, claim) for claim in ("diversity", "pds_vs_reference")]
        if name == judged and any(verdicts):
            lines += ["", "The key findings' verdicts: " + "; ".join(v for v in verdicts if v) + "."]
    lines.append("")
    lines.append(f"**Detection.** AUROC of PDS against BMA (ID = clean test split; OOD positive){over}:")
    lines.append("")
    auroc_of = detection.set_index(["model", "score", "ood_set"])["auroc"]
    for name, label in trained.items():
        parts = [f"{s} {_pct(auroc_of[name, 'pds', s])} vs {_pct(auroc_of[name, 'bma', s])}" for s in sets]
        verdict = judged_text(evidence, "pds_vs_bma") if name == judged else ""
        verdict = f" {verdict}." if verdict else ""
        lines.append(f"- {label}: {'; '.join(parts)}.{verdict}")
    return "\n".join(lines)


def _method(row: pd.Series) -> str:
    return f"{row['label']} [{AGGREGATIONS[row['aggregation']].lower()}]"


_ACCURACY_CLAIMS = {"accuracy_ensemble": "prediction ensemble", "accuracy_soup": "weight soup"}
_DETECTION_CLAIMS = {
    "pds_vs_bma": "PDS vs BMA",
    "pds_vs_reference": "PDS vs the deep ensemble's PDS",
    "pds_vs_detectors": "PDS vs the strongest post-hoc detector",
}


def _verdicts_on(evidence: pd.DataFrame, split: str, claims: dict[str, str]) -> str:
    """``; the key findings: prediction ensemble worse, ...``: the verdicts of ``claims`` on one split, if judged."""
    found = [
        f"{words} {split_verdicts(evidence, claim)[split]}"
        for claim, words in claims.items()
        if split in split_verdicts(evidence, claim)
    ]
    return f"; key findings ({', '.join(found)})" if found else ""


def method_comparison(summary: pd.DataFrame, detection: pd.DataFrame, evidence: pd.DataFrame, config: RunConfig) -> str:
    """Markdown: which method and aggregation wins each split, and which score wins each OOD set.

    Every number is read from the two result tables (the main models only; sweep points are left
    out). A lead is only stated here; whether SED beats the deep ensemble on a split is said with the
    key findings' verdict for that split (``evidence``, `sedlib.study.findings.claim_evidence`), so
    the report speaks with one voice.
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
            lead = f"a lead of {100 * gap:.1f} points" if round(100 * gap, 1) > 0 else "a tie at this precision"
            text += f"; the best other model is {_method(mean.loc[rival])}, {_pct(mean.loc[rival, split])}: {lead}"
        lines.append(text + _verdicts_on(evidence, SPLIT_TITLES.get(split, split), _ACCURACY_CLAIMS) + ".")
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
        lines.append(text + _verdicts_on(evidence, ood_set, _DETECTION_CLAIMS) + ".")
    return "\n".join(lines)
