"""Stage 05: the paper's claims judged on this run, each difference with its uncertainty.

`claim_evidence` measures, for each claim of the SED paper, the differences it rests on from the
per-sample evaluations of stage 03 (`sedlib.pipeline.evaluation.stored_evaluations`), the post-hoc
detectors' per-sample scores of stage 04 and the training logs of the ensemble-size sweep. Every
difference carries a paired bootstrap interval over the evaluated rows (`sedlib.bootstrap`: one
resample of the rows for both models compared) and, with several seeds, the spread over seeds; a
verdict is *holds* only when both are clear of zero in the claim's direction. `key_findings` and
`abstract` turn the evidence into the report's opening text; `evidence_table` lays it out.

The claims (`CLAIMS`), each judged on the SED model against the deep ensemble (`judged_models`):

1. ``diversity``: the members disagree more off-distribution than a deep ensemble's (mean PDS on
   every OOD set).
2. ``pds_vs_bma`` / ``pds_vs_reference``: PDS detects OOD inputs better (AUROC) than the same
   ensemble's confidence (BMA), and than the deep ensemble's PDS.
3. ``accuracy_ensemble`` / ``accuracy_soup``: higher accuracy under distribution shift (C-s and the
   class-subset sets), as a prediction ensemble and as a weight soup.
4. ``cost_flat``: the cost of a stochastic-pair step does not grow with the ensemble size M (the
   growth exponent of the step time in M, from the ``num_members`` sweep; `COST_EXPONENT_TOLERANCE`).
5. ``pds_vs_detectors``: PDS beats the strongest post-hoc detector on each OOD set (when the run has
   ``eval.detectors``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sedlib.bootstrap import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    LEVEL,
    Difference,
    combined_verdict,
    difference,
    resample_indices,
    resampled_auroc,
    resampled_means,
    verdict,
)
from sedlib.config import RunConfig
from sedlib.detectors import DETECTORS
from sedlib.metrics import auroc
from sedlib.pipeline.evaluation import FEATURE_DETECTORS_MODEL, detector_key
from sedlib.pipeline.rundir import RunDir
from sedlib.pipeline.tables import SPLIT_TITLES, Evaluations, ood_sets
from sedlib.scores import SCORES

BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's resamples: the same run gives the same intervals."""

COST_EXPONENT_TOLERANCE = 0.25
"""Largest growth exponent b (step time ~ M^b) still called flat.

Training every member at every step costs in proportion to M (b = 1); 0.25 lets a ten times larger
ensemble cost up to 1.8 times as much per step. The margin is for the noise of a shared machine
(on the CPU, two models train side by side, one per core)."""


@dataclass(frozen=True)
class Claim:
    """One claim of the paper as this module judges it.

    Attributes:
        title: the claim in a few words.
        short: the claim in two or three words (the evidence table's first column).
        measure: what is compared (the difference is SED's value minus the other's).
        link: the report's table or figure with the detail (a Quarto cross reference).
        percent: the measure is a fraction shown in percentage points.
    """

    title: str
    short: str
    measure: str
    link: str
    percent: bool = True


CLAIMS = {
    "diversity": Claim(
        "Members disagree more off-distribution than a deep ensemble's",
        "Diversity",
        "mean PDS",
        "@tbl-diversity",
        False,
    ),
    "pds_vs_bma": Claim(
        "PDS detects OOD inputs better than the ensemble's confidence (BMA)", "PDS vs BMA", "AUROC", "@tbl-ood-det"
    ),
    "pds_vs_reference": Claim(
        "PDS detects OOD inputs better than a deep ensemble's PDS", "PDS vs deep ens.", "AUROC", "@tbl-ood-det"
    ),
    "accuracy_ensemble": Claim(
        "Higher accuracy under distribution shift than a deep ensemble (prediction ensemble)",
        "Acc. (ensemble)",
        "accuracy",
        "@tbl-ood-gen",
    ),
    "accuracy_soup": Claim(
        "Higher accuracy under distribution shift than a deep ensemble (weight soup)",
        "Acc. (soup)",
        "accuracy",
        "@tbl-ood-gen",
    ),
    "cost_flat": Claim(
        "The cost of a stochastic-pair step does not grow with the ensemble size M",
        "Step cost vs M",
        "growth exponent $b$ of the step time ($t \\propto M^b$)",
        "@tbl-sweeps",
        False,
    ),
    "pds_vs_detectors": Claim("PDS beats the post-hoc detectors", "PDS vs detectors", "AUROC", "@tbl-ood-det-all"),
}
"""The judged claims, by key, in the order the findings list them."""

EVIDENCE_COLUMNS = (
    "claim",
    "split",
    "ours",
    "theirs",
    "ours_value",
    "theirs_value",
    "difference",
    "low",
    "high",
    "seed_std",
    "seeds",
    "verdict",
)
"""The columns of `claim_evidence`'s table."""


def judged_models(config: RunConfig) -> tuple[str | None, str]:
    """``(sed, reference)``: the model the claims are judged on and the deep ensemble it is compared with.

    The reference is ``eval.reference_model``. The SED model is the first main model besides it that
    has a diversity term (``kappa * lam > 0``) and more than one member, preferring one with SED's
    hardness weights; None when the run has none.
    """
    reference = config.eval.reference_model
    diverse = [
        name
        for name in config.main_models()
        if name in config.models
        and name != reference
        and config.models[name].num_members > 1
        and config.models[name].train.lam * config.models[name].train.kappa > 0
    ]
    weighted = [name for name in diverse if config.models[name].train.hardness]
    return next(iter(weighted + diverse), None), reference


def replicas(config: RunConfig, model: str) -> list[str]:
    """The replica names of a model in seed order (one without ``seeds:``)."""
    return [model_run.name for model_run in config.model_runs() if model_run.model == model]


@dataclass
class _Resamples:
    """The rows of every resample, drawn once per row set so that every comparison on a set shares them."""

    resamples: int
    generator: np.random.Generator
    drawn: dict[str, np.ndarray] = field(default_factory=dict)

    def of(self, row_set: str, rows: int) -> np.ndarray:
        if row_set not in self.drawn:
            self.drawn[row_set] = resample_indices(rows, self.resamples, self.generator)
        return self.drawn[row_set]


def _pooled(evaluations: Evaluations, replica: str, splits: list[str], column: str) -> np.ndarray:
    return np.concatenate([evaluations[replica, split].samples[column].to_numpy() for split in splits])


def _detection_values(evaluations, detector_scores, replica: str, score: str, splits: list[str]) -> np.ndarray:
    """One score's values over ``splits`` (higher = more OOD): an ensemble score or a stored detector's."""
    if score in SCORES:
        values = _pooled(evaluations, replica, splits, score)
        return values if SCORES[score].higher_is_ood else -values
    return np.concatenate([detector_scores[detector_key(replica, score, split)] for split in splits])


def _row(claim: str, split: str, ours: str, theirs: str, values: tuple[float, float], evidence: Difference) -> dict:
    return {
        "claim": claim,
        "split": split,
        "ours": ours,
        "theirs": theirs,
        "ours_value": values[0],
        "theirs_value": values[1],
        "difference": evidence.estimate,
        "low": evidence.low,
        "high": evidence.high,
        "seed_std": evidence.seed_std,
        "seeds": evidence.seeds,
        "verdict": verdict(evidence),
    }


def claim_evidence(
    evaluations: Evaluations,
    detector_scores: Mapping[str, np.ndarray],
    logs: Mapping[str, pd.DataFrame],
    detection: pd.DataFrame,
    config: RunConfig,
    id_split: str = "test",
) -> pd.DataFrame:
    """Every difference a claim rests on, with its paired bootstrap interval, seed spread and verdict.

    Args:
        evaluations: ``(replica, split) -> SplitEvaluation`` of stage 03 for ``id_split``, every
            split of every OOD set and the class-subset sets.
        detector_scores: stage 04's per-sample detector scores by `detector_key`.
        logs: replica -> training log (`sedlib.train.EnsembleTrainer.fit`) of every point of the
            ``num_members`` sweep.
        detection: stage 04's detection table (which detector is strongest on each OOD set).
        config: the run (``eval.bootstrap_resamples`` resamples, seeded with `BOOTSTRAP_SEED`).
        id_split: the in-distribution split of the detection claims.

    Returns:
        One row per claim and split, columns `EVIDENCE_COLUMNS`: ``ours`` / ``theirs`` the labels
        compared, ``ours_value`` / ``theirs_value`` their values (means over seeds), ``difference``
        (ours minus theirs, mean over seeds; for ``cost_flat`` the growth exponent), ``low`` /
        ``high`` its bootstrap interval (`sedlib.bootstrap.LEVEL`), ``seed_std``, ``seeds``,
        ``verdict``. Empty when the run has no SED model (`judged_models`).
    """
    sed, reference = judged_models(config)
    if sed is None:
        return pd.DataFrame(columns=EVIDENCE_COLUMNS)
    draws = _Resamples(config.eval.bootstrap_resamples, np.random.default_rng(BOOTSTRAP_SEED))
    labels = config.evaluated_models()
    ours, theirs = replicas(config, sed), replicas(config, reference)
    missing = {"pds", "bma"} - set(evaluations[ours[0], id_split].samples.columns)
    if missing:
        raise ValueError(
            f"the key findings compare PDS and BMA, but {config.source} leaves {sorted(missing)} out of eval.scores; "
            "add them (or leave eval.scores empty for every score) and rerun from notebooks/03_eval_ood_gen"
        )
    pairs = list(zip(ours, theirs, strict=True))
    rows = []
    sets = ood_sets(config)

    def scored(owners: list[str], score: str, splits: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per seed, one score's ``(id_values, ood_values)`` on ``splits``, higher = more OOD."""
        return [
            tuple(_detection_values(evaluations, detector_scores, owner, score, rows) for rows in ([id_split], splits))
            for owner in owners
        ]

    id_index = draws.of(id_split, len(evaluations[ours[0], id_split].samples))
    for name, splits in sets.items():
        ood_index = draws.of(name, sum(len(evaluations[ours[0], split].samples) for split in splits))
        pds = [(_pooled(evaluations, s, splits, "pds"), _pooled(evaluations, r, splits, "pds")) for s, r in pairs]
        evidence, values = _mean_difference(pds, ood_index)
        rows.append(_row("diversity", name, labels[sed], labels[reference], values, evidence))
        compared = {
            "pds_vs_bma": (f"{labels[sed]} BMA", scored(ours, "bma", splits)),
            "pds_vs_reference": (f"{labels[reference]} PDS", scored(theirs, "pds", splits)),
        }
        strongest = _strongest_detector(detection, sed, name)
        if strongest is not None:
            score, model, label = strongest
            owners = replicas(config, model) if model in config.models else [model] * len(pairs)
            compared["pds_vs_detectors"] = (label, scored(owners, score, splits))
        sed_pds = _auroc_samples(scored(ours, "pds", splits), id_index, ood_index)
        for claim, (other, values) in compared.items():
            evidence, means = _auroc_difference(sed_pds, _auroc_samples(values, id_index, ood_index))
            rows.append(_row(claim, name, f"{labels[sed]} PDS", other, means, evidence))
    shifted = {name: splits for name, splits in sets.items() if name.startswith("C-")}
    shifted.update({name: [name] for name in config.data.subset_sets})
    for claim, column in (("accuracy_ensemble", "ensemble_prediction"), ("accuracy_soup", "soup_prediction")):
        for name, splits in shifted.items():
            correct = []
            for s, r in pairs:
                label = _pooled(evaluations, s, splits, "label")
                labelled = label >= 0
                correct.append(
                    tuple((_pooled(evaluations, m, splits, column) == label)[labelled].astype(float) for m in (s, r))
                )
            evidence, values = _mean_difference(correct, draws.of(f"{name} labelled", len(correct[0][0])))
            title = SPLIT_TITLES.get(name, name)
            rows.append(_row(claim, title, labels[sed], labels[reference], values, evidence))
    cost = _cost_evidence(logs, config, draws)
    if cost is not None:
        rows.append(cost)
    order = {claim: index for index, claim in enumerate(CLAIMS)}
    return pd.DataFrame(sorted(rows, key=lambda row: order[row["claim"]]), columns=EVIDENCE_COLUMNS)


def value_intervals(evaluations: Evaluations, config: RunConfig, id_split: str = "test") -> pd.DataFrame:
    """The bootstrap interval of every value the summary figure draws, for each main model.

    The rows are resampled as in `claim_evidence` (seeded, one resample of each row set for every
    model); with several seeds a resample's value is the mean over them.

    Args:
        evaluations: ``(replica, split) -> SplitEvaluation`` as for `claim_evidence`.
        config: the run.
        id_split: the in-distribution split.

    Returns:
        Columns ``label``, ``measure`` (``accuracy`` of the ensemble, ``auroc_bma``, ``auroc_pds``,
        ``num_unique``), ``split``, ``low``, ``high``: the percentile interval (`sedlib.bootstrap.LEVEL`).
    """
    draws = _Resamples(config.eval.bootstrap_resamples, np.random.default_rng(BOOTSTRAP_SEED))
    sets = ood_sets(config)
    first = config.model_runs()[0].name  # every model was evaluated on the same rows
    id_index = draws.of(id_split, len(evaluations[first, id_split].samples))
    accuracy_sets = {id_split: [id_split], **{n: s for n, s in sets.items() if n.startswith("C-")}}
    accuracy_sets.update({name: [name] for name in config.data.subset_sets})
    rows = []

    def add(label: str, measure: str, split: str, resampled: list[np.ndarray]) -> None:
        low, high = np.quantile(np.mean(resampled, axis=0), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        rows.append({"label": label, "measure": measure, "split": split, "low": low, "high": high})

    for model in (name for name in config.main_models() if name in config.models):
        label, names = config.models[model].label, replicas(config, model)
        columns = evaluations[names[0], id_split].samples.columns
        for name, splits in accuracy_sets.items():
            labels = _pooled(evaluations, names[0], splits, "label")
            labelled = labels >= 0
            index = draws.of(name if labelled.all() else f"{name} labelled", int(labelled.sum()))
            correct = [(_pooled(evaluations, r, splits, "ensemble_prediction") == labels)[labelled] for r in names]
            add(label, "accuracy", name, [resampled_means(c, index) for c in correct])
        if "num_unique" in columns:
            for name, splits in {id_split: [id_split], **sets}.items():
                index = (
                    id_index if name == id_split else draws.of(name, len(_pooled(evaluations, first, splits, "label")))
                )
                values = [_pooled(evaluations, r, splits, "num_unique") for r in names]
                add(label, "num_unique", name, [resampled_means(v, index) for v in values])
        for score in ("bma", "pds"):
            if score not in columns or (score == "pds" and config.models[model].num_members == 1):
                continue
            for name, splits in sets.items():
                index = draws.of(name, len(_pooled(evaluations, first, splits, "label")))
                resampled = [
                    resampled_auroc(
                        _detection_values(evaluations, {}, r, score, [id_split]),
                        _detection_values(evaluations, {}, r, score, splits),
                        id_index,
                        index,
                    )
                    for r in names
                ]
                add(label, f"auroc_{score}", name, resampled)
    return pd.DataFrame(rows, columns=["label", "measure", "split", "low", "high"])


def _mean_difference(pairs: list[tuple[np.ndarray, np.ndarray]], indices: np.ndarray):
    """The difference of two per-row means, per seed pair, on all rows and on every resample."""
    observed = np.array([ours.mean() - theirs.mean() for ours, theirs in pairs])
    resampled = np.stack([resampled_means(ours - theirs, indices) for ours, theirs in pairs])
    values = (float(np.mean([p[0].mean() for p in pairs])), float(np.mean([p[1].mean() for p in pairs])))
    return difference(observed, resampled), values


def _auroc_samples(values: list, id_index: np.ndarray, ood_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One detector's AUROC per seed on all rows ``(S,)`` and on every resample ``(S, B)``.

    Args:
        values: per seed, ``(id_values, ood_values)`` oriented so that higher means OOD.
        id_index: ``(B, N_id)`` the resamples' ID rows (`sedlib.bootstrap.resample_indices`).
        ood_index: ``(B, N_ood)`` the resamples' OOD rows.
    """
    full = np.array([auroc(id_values, ood_values, True) for id_values, ood_values in values])
    resampled = np.stack([resampled_auroc(*pair, id_index, ood_index) for pair in values])
    return full, resampled


def _auroc_difference(ours: tuple, theirs: tuple) -> tuple[Difference, tuple[float, float]]:
    """The AUROC difference of two detectors from their `_auroc_samples` (the same resamples), and their means."""
    return difference(ours[0] - theirs[0], ours[1] - theirs[1]), (float(ours[0].mean()), float(theirs[0].mean()))


def _strongest_detector(detection: pd.DataFrame, sed: str, ood_set: str) -> tuple[str, str, str] | None:
    """``(score, model, label)`` of the post-hoc detector with the highest mean AUROC on one OOD set.

    The candidates are the detectors on the backbone features and those on the SED model's own
    weight soup (ViM); None when the run has no detectors.
    """
    rows = detection[
        detection["score"].isin(DETECTORS)
        & detection["model"].isin((FEATURE_DETECTORS_MODEL, sed))
        & (detection["ood_set"] == ood_set)
    ]
    if rows.empty:
        return None
    means = rows.groupby(["score", "model", "score_label"], sort=False)["auroc"].mean()
    score, model, label = means.idxmax()
    return score, model, label


def sweep_logs(config: RunConfig, run: RunDir) -> dict[str, pd.DataFrame]:
    """Replica -> training log of every point of the ``num_members`` sweep (empty without it), verified."""
    sweep = config.sweeps.get("num_members")
    points = sweep.points if sweep else ()
    return {replica: run.read_csv("model_log", replica) for model in points for replica in replicas(config, model)}


def step_times(logs: Mapping[str, pd.DataFrame], config: RunConfig) -> pd.DataFrame:
    """Seconds per training step of every updating epoch of every point of the ``num_members`` sweep.

    The time is the log's ``steps_seconds``: the epoch's steps alone, without its validation pass
    (which runs every member, so grows with M).

    Returns:
        Columns ``members``, ``replica``, ``epoch``, ``step_seconds``; empty without that sweep.
    """
    sweep = config.sweeps.get("num_members")
    rows = []
    for members, model in zip(sweep.values if sweep else (), sweep.points if sweep else ()):
        for replica in replicas(config, model):
            log = logs[replica]
            updating = log[~log["frozen"].astype(bool)]
            rows += [
                {"members": int(members), "replica": replica, "epoch": int(epoch), "step_seconds": seconds / steps}
                for epoch, seconds, steps in zip(updating["epoch"], updating["steps_seconds"], updating["steps"])
            ]
    return pd.DataFrame(rows, columns=["members", "replica", "epoch", "step_seconds"])


def growth_exponent(members: np.ndarray, log_times: np.ndarray) -> np.ndarray:
    """The least-squares slope of log step time on log M, for each row of ``log_times``.

    Args:
        members: ``(P,)`` the ensemble size of each sweep point.
        log_times: ``(..., P)`` the mean log step time of each point.

    Returns:
        ``(...)`` the exponent b of ``time ~ M^b``.
    """
    x = np.log(members) - np.log(members).mean()
    return (log_times - log_times.mean(axis=-1, keepdims=True)) @ x / (x @ x)


def _cost_evidence(logs: Mapping[str, pd.DataFrame], config: RunConfig, draws: _Resamples) -> dict | None:
    """The ``cost_flat`` row: the growth exponent of the step time in M, its interval over resampled epochs."""
    times = step_times(logs, config)
    if times["members"].nunique() < 2:
        return None
    members = np.array(sorted(times["members"].unique()), dtype=float)
    observed, resampled = [], []
    for size in members:
        log_time = np.log(times.loc[times["members"] == size, "step_seconds"].to_numpy())
        observed.append(log_time.mean())
        resampled.append(resampled_means(log_time, draws.of(f"epochs at M {size:g}", len(log_time))))
    exponent = float(growth_exponent(members, np.array(observed)))
    low, high = np.quantile(growth_exponent(members, np.stack(resampled, axis=1)), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    if high < COST_EXPONENT_TOLERANCE:
        judged = HOLDS
    elif low > COST_EXPONENT_TOLERANCE:
        judged = DOES_NOT_HOLD
    else:
        judged = INCONCLUSIVE
    seconds = times.groupby("members")["step_seconds"].median()
    return {
        "claim": "cost_flat",
        "split": f"M = {', '.join(f'{m:g}' for m in members)}",
        "ours": f"step at M = {members[-1]:g}",
        "theirs": f"step at M = {members[0]:g}",
        "ours_value": float(seconds.iloc[-1]),
        "theirs_value": float(seconds.iloc[0]),
        "difference": exponent,
        "low": float(low),
        "high": float(high),
        "seed_std": float("nan"),
        "seeds": times["replica"].nunique() // len(members),
        "verdict": judged,
    }


def claim_verdicts(evidence: pd.DataFrame) -> dict[str, str]:
    """Claim -> one verdict over its splits (`sedlib.bootstrap.combined_verdict`), in `CLAIMS` order."""
    judged = evidence.groupby("claim", sort=False)["verdict"].agg(list).to_dict()
    return {claim: combined_verdict(judged[claim]) for claim in CLAIMS if claim in judged}


def _signed(value: float, percent: bool) -> str:
    return f"{100 * value:+.1f}" if percent else f"{value:+.2f}"


def _interval(row: pd.Series, percent: bool) -> str:
    """``+1.2 [−0.3, +2.6]`` (points for a percentage), with ``± std`` over seeds where there is a spread."""
    scale, digits = (100, 1) if percent else (1, 2)
    spread = "" if np.isnan(row["seed_std"]) else f" ± {scale * row['seed_std']:.{digits}f}"
    low, high = _signed(row["low"], percent), _signed(row["high"], percent)
    return f"{_signed(row['difference'], percent)}{spread} [{low}, {high}]"


def key_findings(evidence: pd.DataFrame, config: RunConfig) -> str:
    """Markdown: each claim of the paper, this run's evidence in numbers and its verdict.

    Every number is read from ``evidence`` (`claim_evidence`); each claim links to the table that
    holds its detail.
    """
    sed, reference = judged_models(config)
    if evidence.empty:
        return (
            "*No claim can be judged: the run has no diversified ensemble besides the reference model "
            f"`{reference}` (a model with `lam` and `kappa` above zero and more than one member).*"
        )
    labels = config.evaluated_models()
    seeds = int(evidence["seeds"].max())
    spread = f", ± the standard deviation over {seeds} seeds" if seeds > 1 else ""
    lines = [
        f"{labels[sed]} is judged against {labels[reference]}. Each difference is {labels[sed]} minus the "
        f"other, in points for percentages, with its paired bootstrap {100 * LEVEL:.0f}\u00a0% interval over the "
        f"evaluated samples ({config.eval.bootstrap_resamples} resamples{spread}). A claim **holds** where the interval"
        f"{' and the seed spread are' if seeds > 1 else ' is'} above zero on every split it is judged on, "
        "**does not hold** where below zero on every split, and is **inconclusive** otherwise.",
        "",
    ]
    verdicts = claim_verdicts(evidence)
    for claim, judged in verdicts.items():
        spec, rows = CLAIMS[claim], evidence[evidence["claim"] == claim]
        if claim == "cost_flat":
            row = rows.iloc[0]
            detail = (
                f"Growth exponent $b$ of the step time ($t \\propto M^b$) over {row['split']}: "
                f"{row['difference']:.2f} [{row['low']:.2f}, {row['high']:.2f}], from the seconds per step of every "
                f"updating epoch (median {1000 * row['theirs_value']:.1f} ms at the smallest M, "
                f"{1000 * row['ours_value']:.1f} ms at the largest). The claim holds when the interval lies "
                f"below {COST_EXPONENT_TOLERANCE} (a cost per member gives 1) and does not when it lies above; the "
                "time is that of the steps alone, without the validation pass"
            )
        else:
            compared = f"{rows['ours'].iloc[0]} vs {rows['theirs'].iloc[0]}"
            if claim == "pds_vs_detectors":
                compared = f"{rows['ours'].iloc[0]} vs the strongest detector per set"
            parts = [
                f"{row['split']} {_interval(row, spec.percent)}"
                + (f" ({row['theirs']})" if claim == "pds_vs_detectors" else "")
                for _, row in rows.iterrows()
            ]
            detail = f"{spec.measure[0].upper()}{spec.measure[1:]}, {compared}: " + "; ".join(parts)
        lines.append(f"- **{spec.title}: {judged}.** {detail} ({spec.link}).")
    return "\n".join(lines)


def abstract(evidence: pd.DataFrame, config: RunConfig) -> str:
    """A one-paragraph abstract of the run: what was trained on what, and the verdicts of the claims."""
    sed, reference = judged_models(config)
    labels = config.evaluated_models()
    seeds = f", {len(config.seeds)} seeds each" if len(config.seeds) > 1 else ""
    models = len(config.main_models())
    opening = (
        f"This report reproduces Scalable Ensemble Diversification (SED) at the scale of the params file "
        f"`{config.run_name}`: {models} main model{'s' if models > 1 else ''}{seeds} on frozen "
        f"{config.cache.backbone} features of {config.data.dataset}, evaluated on the clean test split, "
        f"{len(config.data.corruptions) or 15} corruptions at severities "
        f"{', '.join(str(s) for s in config.data.severities)} and {len(config.data.ood_sets)} semantic-OOD sets."
    )
    if evidence.empty:
        return opening + " The run has no diversified ensemble, so none of the paper's claims is judged."
    verdicts = claim_verdicts(evidence)
    seeds = f" and the spread over {len(config.seeds)} seeds" if len(config.seeds) > 1 else ""
    counted = []
    for judged, (one, many) in _VERDICT_PHRASES.items():
        titles = [_phrase(CLAIMS[claim].title) for claim, given in verdicts.items() if given == judged]
        if titles:
            counted.append(f"{len(titles)} {one if len(titles) == 1 else many} ({'; '.join(titles)})")
    return (
        f"{opening} Of the paper's claims, judged on {labels[sed]} against {labels[reference]} with paired "
        f"bootstrap {100 * LEVEL:.0f}\u00a0% intervals over the evaluated samples{seeds}, "
        f"{', '.join(counted[:-1])}{' and ' if len(counted) > 1 else ''}{counted[-1]}. "
        "The key findings below give the numbers."
    )


_VERDICT_PHRASES = {
    HOLDS: ("holds", "hold"),
    DOES_NOT_HOLD: ("does not hold", "do not hold"),
    INCONCLUSIVE: ("is inconclusive", "are inconclusive"),
}


def _phrase(title: str) -> str:
    """A claim's title inside a sentence: its first letter in lower case unless it starts an acronym (PDS)."""
    return title if title[1:2].isupper() else title[0].lower() + title[1:]


def evidence_table(evidence: pd.DataFrame) -> pd.DataFrame:
    """`claim_evidence` as a report table: one decimal for percentages, the interval and the verdict per row."""
    rows = []
    for _, row in evidence.iterrows():
        spec = CLAIMS[row["claim"]]
        if row["claim"] == "cost_flat":
            values = f"{1000 * row['ours_value']:.1f} / {1000 * row['theirs_value']:.1f} ms"
            shown = f"{row['difference']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"
        else:
            scale, digits = (100, 1) if spec.percent else (1, 2)
            values = f"{scale * row['ours_value']:.{digits}f} / {scale * row['theirs_value']:.{digits}f}"
            shown = _interval(row, spec.percent)
        rows.append(
            {
                "Claim": spec.short,
                "Split": row["split"],
                "Compared": f"{row['ours']} / {row['theirs']}",
                "Values": values,
                "Difference [95 % CI]": shown,
                "Verdict": row["verdict"],
            }
        )
    return pd.DataFrame(rows)
