"""Stage 05: the paper's claims judged on this run, each difference with its uncertainty over seeds and rows.

`claim_evidence` measures, for each claim of the SED paper, the differences it rests on from the
per-sample evaluations of stage 03 (`sedlib.study.predictions.stored_evaluations`) and the post-hoc
detectors' per-sample scores of stage 04. Every difference is measured per seed and carries an
interval over seeds and rows and the probability of improvement over seeds (`sedlib.eval.bootstrap`):
the rows are resampled in clusters, a corrupted copy of a test image with that image
(`split_clusters`), one resample of the rows for every seed and both models compared. Each split
reads *better*, *worse*, *equivalent* (inside ± the margin of ``eval.margins``) or *undetermined*;
a claim over several splits reads "holds on k of n, contradicted on m" (Holm's correction,
`sedlib.eval.bootstrap.claim_count`). `key_findings` and `abstract` turn the evidence into the report's
opening text; `evidence_table` lays it out.

The claims (`CLAIMS`), each judged on the SED model against the deep ensemble (`judged_models`):

1. ``diversity``: the members disagree more off-distribution than a deep ensemble's: the increase of
   mean PDS from the clean test split to each OOD set, SED's minus the deep ensemble's (the level is
   higher in-distribution too, so the level alone says nothing about off-distribution).
2. ``pds_vs_bma`` / ``pds_vs_reference``: PDS detects OOD inputs better (AUROC) than the same
   ensemble's confidence (BMA), and than the deep ensemble's PDS.
3. ``accuracy_ensemble`` / ``accuracy_soup``: higher accuracy under distribution shift (C-s and the
   class-subset sets), as a prediction ensemble and as a weight soup.
4. ``pds_vs_detectors``: PDS beats the strongest post-hoc detector on each OOD set (when the run has
   ``eval.detectors``); the strongest is chosen again in every resample and seed, never once on the
   rows being judged, so the choice's luck counts against the claim.

Timing is no claim here: a wall-clock time differs between two runs of the same study, and the
text this module writes must not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sedlib.config import RunConfig
from sedlib.data.registry import data_source
from sedlib.data.splits import plan_splits
from sedlib.errors import ConfigError, StaleEvaluationsError
from sedlib.eval.bootstrap import (
    EQUIVALENT,
    LEVEL,
    ClaimCount,
    Difference,
    claim_count,
    cluster_counts,
    difference,
    resampled_auroc,
    resampled_mean,
    seed_draws,
    verdict,
)
from sedlib.eval.detectors import DETECTORS
from sedlib.eval.scores import SCORES
from sedlib.rundir.directory import RunDir
from sedlib.study.cached import load_split
from sedlib.study.detection import FEATURE_DETECTORS_MODEL, detector_key, ood_sets, pooled_samples
from sedlib.study.predictions import Evaluations
from sedlib.study.tables import SPLIT_TITLES

BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's resamples: the same run gives the same intervals."""

TEST_IMAGES = "test"
"""The cluster universe of the clean test split and its corrupted copies (`split_clusters`)."""


@dataclass(frozen=True)
class Claim:
    """One claim of the paper as this module judges it.

    Attributes:
        title: the claim in a few words.
        short: the claim in two or three words (the evidence table's first column).
        measure: what is compared (the difference is SED's value minus the other's).
        link: the report's table or figure with the detail (a Quarto cross reference).
        margin: the key of ``eval.margins`` (`sedlib.config.MarginConfig`) that holds its smallest
            difference that matters.
        percent: the measure is a fraction shown in percentage points.
    """

    title: str
    short: str
    measure: str
    link: str
    margin: str
    percent: bool = True


CLAIMS = {
    "diversity": Claim(
        "Members disagree more off-distribution than a deep ensemble's",
        "Diversity",
        "increase of mean PDS from the clean test split",
        "@tbl-diversity",
        "pds",
        False,
    ),
    "pds_vs_bma": Claim(
        "PDS detects OOD inputs better than the ensemble's confidence (BMA)",
        "PDS vs BMA",
        "AUROC",
        "@tbl-ood-det",
        "auroc",
    ),
    "pds_vs_reference": Claim(
        "PDS detects OOD inputs better than a deep ensemble's PDS",
        "PDS vs deep ens.",
        "AUROC",
        "@tbl-ood-det",
        "auroc",
    ),
    "accuracy_ensemble": Claim(
        "Higher accuracy under distribution shift than a deep ensemble (prediction ensemble)",
        "Acc. (ensemble)",
        "accuracy",
        "@tbl-ood-gen",
        "accuracy",
    ),
    "accuracy_soup": Claim(
        "Higher accuracy under distribution shift than a deep ensemble (weight soup)",
        "Acc. (soup)",
        "accuracy",
        "@tbl-ood-gen",
        "accuracy",
    ),
    "pds_vs_detectors": Claim(
        "PDS beats the post-hoc detectors", "PDS vs detectors", "AUROC", "@tbl-ood-det-all", "auroc"
    ),
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
    "p_better",
    "p_worse",
    "seed_std",
    "seeds",
    "improvement",
    "improvement_low",
    "improvement_high",
    "margin",
    "verdict",
)
"""The columns of `claim_evidence`'s table."""

STRONGEST_DETECTOR = "strongest detector"
"""The ``theirs`` of the ``pds_vs_detectors`` rows: the detector is chosen in every resample."""


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


def split_clusters(config: RunConfig, run: RunDir, splits: list[str]) -> dict[str, np.ndarray]:
    """Each split's rows' positions in their source set, read from the cached feature files (verified).

    A corrupted split's rows are copies of test images at the same positions, so a position is the
    cluster a row is resampled with (`cluster_ids`).

    Returns:
        Split -> ``(N,)`` int64 source positions, in the order of the split's evaluated rows.
    """
    return {split: np.asarray(load_split(config, run, split, lazy=True).index) for split in splits}


def cluster_ids(config: RunConfig, clusters: Mapping[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """Split -> ``(universe, ids)``: the clusters its rows are resampled in, as indices into the universe.

    The clean test split and every corrupted split share the universe `TEST_IMAGES` (a corrupted row
    is a copy of the test image at its source position); every other split is its own universe with
    one cluster per source row.

    Args:
        config: the run (which splits are corrupted copies of the test split).
        clusters: `split_clusters`.
    """
    kinds = {plan.name: plan.kind for plan in plan_splits(config)}
    shared = [split for split in clusters if kinds.get(split) in ("test", "corruption")]
    images = np.unique(np.concatenate([clusters[split] for split in shared])) if shared else np.zeros(0, int)
    result = {}
    for split, positions in clusters.items():
        if split in shared:
            result[split] = (TEST_IMAGES, np.searchsorted(images, positions))
        else:
            result[split] = (split, np.unique(positions, return_inverse=True)[1].reshape(-1))
    return result


def _checked(clusters: Mapping[str, np.ndarray], evaluations: Evaluations) -> Mapping[str, np.ndarray]:
    """``clusters``, after checking that each split has as many row positions as evaluated rows."""
    evaluated = {split: len(evaluation.samples) for (_, split), evaluation in evaluations.items()}
    for split, positions in clusters.items():
        if split in evaluated and len(positions) != evaluated[split]:
            raise StaleEvaluationsError(
                f"split {split}: the feature file has {len(positions)} rows, its evaluation {evaluated[split]}; "
                "rerun from notebooks/03_eval_ood_gen"
            )
    return clusters


@dataclass
class _Draws:
    """The resamples of one study: the seeds each resample draws, and the cluster counts of each universe.

    Drawn once and shared by every comparison, so that two differences on the same rows use the same
    resamples.
    """

    resamples: int
    seeds: int
    ids: dict[str, tuple[str, np.ndarray]]
    generator: np.random.Generator = field(default_factory=lambda: np.random.default_rng(BOOTSTRAP_SEED))
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seed_choice = seed_draws(self.seeds, self.resamples, self.generator)

    def rows(self, splits: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, counts)``: the pooled rows' cluster ids ``(N,)`` and their universe's counts ``(B, K)``."""
        universes = {self.ids[split][0] for split in splits}
        if len(universes) != 1:
            raise ValueError(f"splits {splits} are resampled in different universes {sorted(universes)}")
        universe = universes.pop()
        if universe not in self.counts:
            size = 1 + max(
                int(self.ids[split][1].max(initial=-1)) for split, (u, _) in self.ids.items() if u == universe
            )
            self.counts[universe] = cluster_counts(size, self.resamples, self.generator)
        return np.concatenate([self.ids[split][1] for split in splits]), self.counts[universe]


@dataclass(frozen=True)
class _Measured:
    """One side of a comparison: its value per seed on all rows ``(S,)`` and on every resample ``(S, B)``."""

    full: np.ndarray
    resampled: np.ndarray

    def __sub__(self, other: _Measured) -> _Measured:
        return _Measured(self.full - other.full, self.resampled - other.resampled)


def _detection_values(evaluations, detector_scores, replica: str, score: str, splits: list[str]) -> np.ndarray:
    """One score's values over ``splits`` (higher = more OOD): an ensemble score or a stored detector's."""
    if score in SCORES:
        values = pooled_samples(evaluations, replica, splits, score)
        return values if SCORES[score].higher_is_ood else -values
    return np.concatenate([detector_scores[detector_key(replica, score, split)] for split in splits])


def _means(values: list[np.ndarray], rows: tuple[np.ndarray, np.ndarray]) -> _Measured:
    """Per seed, the mean of per-row values on all rows and on every resample of ``rows`` (`_Draws.rows`)."""
    stacked = np.column_stack(values)  # (N, S)
    return _Measured(stacked.mean(axis=0), resampled_mean(stacked, *rows).T)


def _aurocs(values: list[tuple[np.ndarray, np.ndarray]], id_rows: tuple, ood_rows: tuple) -> _Measured:
    """Per seed, the AUROC of ``(id_values, ood_values)`` (higher = more OOD) on all rows and every resample."""
    id_values, ood_values = (np.column_stack([pair[side] for pair in values]) for side in (0, 1))
    once = (np.ones((1, id_rows[1].shape[1])), np.ones((1, ood_rows[1].shape[1])))  # every row once: exact
    return _Measured(
        resampled_auroc(id_values, ood_values, id_rows[0], ood_rows[0], *once)[0],
        resampled_auroc(id_values, ood_values, id_rows[0], ood_rows[0], id_rows[1], ood_rows[1]).T,
    )


def claim_evidence(
    evaluations: Evaluations,
    detector_scores: Mapping[str, np.ndarray],
    clusters: Mapping[str, np.ndarray],
    detection: pd.DataFrame,
    config: RunConfig,
    id_split: str = "test",
) -> pd.DataFrame:
    """Every difference a claim rests on, with its interval over seeds and rows, P(improvement) and verdict.

    Args:
        evaluations: ``(replica, split) -> SplitEvaluation`` of stage 03 for ``id_split``, every
            split of every OOD set and the class-subset sets.
        detector_scores: stage 04's per-sample detector scores by `detector_key`.
        clusters: `split_clusters` of the same splits.
        detection: stage 04's detection table (which post-hoc detectors ran on each OOD set).
        config: the run (``eval.bootstrap_resamples`` resamples seeded with `BOOTSTRAP_SEED`,
            ``eval.margins``).
        id_split: the in-distribution split of the detection and diversity claims.

    Returns:
        One row per claim and split, columns `EVIDENCE_COLUMNS`: ``ours`` / ``theirs`` the labels
        compared, ``ours_value`` / ``theirs_value`` their values (means over seeds), ``difference``
        (ours minus theirs, mean over seeds), ``low`` / ``high`` its interval
        (`sedlib.eval.bootstrap.difference`), ``p_better`` / ``p_worse`` its one-sided p-values,
        ``seed_std``, ``seeds``, ``improvement`` P(ours > theirs) over seeds with its interval
        ``improvement_low`` / ``improvement_high``, ``margin`` and ``verdict``
        (`sedlib.eval.bootstrap.verdict`). Empty when the run has no SED model (`judged_models`).
    """
    sed, reference = judged_models(config)
    if sed is None:
        return pd.DataFrame(columns=EVIDENCE_COLUMNS)
    labels = config.evaluated_models()
    ours, theirs = replicas(config, sed), replicas(config, reference)
    missing = {"pds", "bma"} - set(evaluations[ours[0], id_split].samples.columns)
    if missing:
        raise ConfigError(
            f"the key findings compare PDS and BMA, but {config.source} leaves {sorted(missing)} out of eval.scores; "
            "add them (or leave eval.scores empty for every score) and rerun from notebooks/03_eval_ood_gen"
        )
    draws = _Draws(config.eval.bootstrap_resamples, len(ours), cluster_ids(config, _checked(clusters, evaluations)))
    rows = []

    def add(claim: str, split: str, names: tuple[str, str], measured: tuple[_Measured, _Measured]) -> None:
        margin = getattr(config.eval.margins, CLAIMS[claim].margin)
        evidence = difference(
            measured[0].full, measured[1].full, measured[0].resampled, measured[1].resampled, draws.seed_choice
        )
        values = (float(measured[0].full.mean()), float(measured[1].full.mean()))
        rows.append(_row(claim, split, names, values, evidence, margin))

    def scored(owners: list[str], score: str, splits: list[str]) -> _Measured:
        """One score's AUROC per seed, ID = ``id_split``, OOD = ``splits`` (a detector on the features: once)."""
        distinct = list(dict.fromkeys(owners))
        values = [
            tuple(_detection_values(evaluations, detector_scores, owner, score, part) for part in ([id_split], splits))
            for owner in distinct
        ]
        measured = _aurocs(values, draws.rows([id_split]), draws.rows(splits))
        seeds = [distinct.index(owner) for owner in owners]
        return _Measured(measured.full[seeds], measured.resampled[seeds])

    for name, splits in ood_sets(config).items():
        increase = [
            _means([pooled_samples(evaluations, r, splits, "pds") for r in owners], draws.rows(splits))
            - _means([pooled_samples(evaluations, r, [id_split], "pds") for r in owners], draws.rows([id_split]))
            for owners in (ours, theirs)
        ]
        add("diversity", name, (labels[sed], labels[reference]), tuple(increase))
        sed_pds = scored(ours, "pds", splits)
        add("pds_vs_bma", name, (f"{labels[sed]} PDS", f"{labels[sed]} BMA"), (sed_pds, scored(ours, "bma", splits)))
        add(
            "pds_vs_reference",
            name,
            (f"{labels[sed]} PDS", f"{labels[reference]} PDS"),
            (sed_pds, scored(theirs, "pds", splits)),
        )
        candidates = _detectors(detection, sed, name)
        if candidates:
            measured = [
                scored(replicas(config, model) if model in config.models else [model] * len(ours), score, splits)
                for score, model in candidates
            ]
            strongest = _Measured(
                np.max([m.full for m in measured], axis=0), np.max([m.resampled for m in measured], axis=0)
            )
            add("pds_vs_detectors", name, (f"{labels[sed]} PDS", STRONGEST_DETECTOR), (sed_pds, strongest))
    shifted = {name: splits for name, splits in ood_sets(config).items() if name.startswith("C-")}
    shifted.update({name: [name] for name in config.data.subset_sets})
    for claim, column in (("accuracy_ensemble", "ensemble_prediction"), ("accuracy_soup", "soup_prediction")):
        for name, splits in shifted.items():
            label = pooled_samples(evaluations, ours[0], splits, "label")
            labelled = label >= 0
            ids, counts = draws.rows(splits)
            measured = tuple(
                _means(
                    [(pooled_samples(evaluations, r, splits, column) == label)[labelled].astype(float) for r in owners],
                    (ids[labelled], counts),
                )
                for owners in (ours, theirs)
            )
            add(claim, SPLIT_TITLES.get(name, name), (labels[sed], labels[reference]), measured)
    order = {claim: index for index, claim in enumerate(CLAIMS)}
    return pd.DataFrame(sorted(rows, key=lambda row: order[row["claim"]]), columns=EVIDENCE_COLUMNS)


def _row(claim: str, split: str, names: tuple[str, str], values, evidence: Difference, margin: float) -> dict:
    return {
        "claim": claim,
        "split": split,
        "ours": names[0],
        "theirs": names[1],
        "ours_value": values[0],
        "theirs_value": values[1],
        "difference": evidence.estimate,
        "low": evidence.low,
        "high": evidence.high,
        "p_better": evidence.p_better,
        "p_worse": evidence.p_worse,
        "seed_std": evidence.seed_std,
        "seeds": evidence.seeds,
        "improvement": evidence.improvement,
        "improvement_low": evidence.improvement_low,
        "improvement_high": evidence.improvement_high,
        "margin": margin,
        "verdict": verdict(evidence, margin),
    }


def _detectors(detection: pd.DataFrame, sed: str, ood_set: str) -> list[tuple[str, str]]:
    """``(score, model)`` of every post-hoc detector run on one OOD set: on the backbone features and on SED's soup."""
    rows = detection[
        detection["score"].isin(DETECTORS)
        & detection["model"].isin((FEATURE_DETECTORS_MODEL, sed))
        & (detection["ood_set"] == ood_set)
    ]
    return list(dict.fromkeys(zip(rows["score"], rows["model"])))


def value_intervals(
    evaluations: Evaluations, clusters: Mapping[str, np.ndarray], config: RunConfig, id_split: str = "test"
) -> pd.DataFrame:
    """The interval of every value the summary figure draws, for each main model, over seeds and rows.

    The rows are resampled as in `claim_evidence` (seeded, clustered, one resample of each universe
    for every model); the interval is `sedlib.eval.bootstrap.difference`'s, of the value against zero.

    Args:
        evaluations: ``(replica, split) -> SplitEvaluation`` as for `claim_evidence`.
        clusters: `split_clusters` of the same splits.
        config: the run.
        id_split: the in-distribution split.

    Returns:
        Columns ``label``, ``measure`` (``accuracy`` of the ensemble, ``auroc_bma``, ``auroc_pds``,
        ``num_unique``), ``split``, ``low``, ``high``.
    """
    sets = ood_sets(config)
    ids = cluster_ids(config, _checked(clusters, evaluations))
    draws = _Draws(config.eval.bootstrap_resamples, len(config.seeds) or 1, ids)
    accuracy_sets = {id_split: [id_split], **{n: s for n, s in sets.items() if n.startswith("C-")}}
    accuracy_sets.update({name: [name] for name in config.data.subset_sets})
    rows = []

    def add(label: str, measure: str, split: str, measured: _Measured) -> None:
        zero = np.zeros_like(measured.resampled)
        evidence = difference(measured.full, zero[:, 0], measured.resampled, zero, draws.seed_choice)
        rows.append({"label": label, "measure": measure, "split": split, "low": evidence.low, "high": evidence.high})

    for model in (name for name in config.main_models() if name in config.models):
        label, names = config.models[model].label, replicas(config, model)
        columns = evaluations[names[0], id_split].samples.columns
        for name, splits in accuracy_sets.items():
            labels = pooled_samples(evaluations, names[0], splits, "label")
            labelled = labels >= 0
            ids, counts = draws.rows(splits)
            correct = [
                (pooled_samples(evaluations, r, splits, "ensemble_prediction") == labels)[labelled] for r in names
            ]
            add(label, "accuracy", name, _means([c.astype(float) for c in correct], (ids[labelled], counts)))
        if "num_unique" in columns:
            for name, splits in {id_split: [id_split], **sets}.items():
                values = [pooled_samples(evaluations, r, splits, "num_unique") for r in names]
                add(label, "num_unique", name, _means(values, draws.rows(splits)))
        for score in ("bma", "pds"):
            if score not in columns or (score == "pds" and config.models[model].num_members == 1):
                continue
            for name, splits in sets.items():
                values = [
                    tuple(_detection_values(evaluations, {}, r, score, part) for part in ([id_split], splits))
                    for r in names
                ]
                add(label, f"auroc_{score}", name, _aurocs(values, draws.rows([id_split]), draws.rows(splits)))
    return pd.DataFrame(rows, columns=["label", "measure", "split", "low", "high"])


def claim_verdicts(evidence: pd.DataFrame) -> dict[str, ClaimCount]:
    """Claim -> on how many of its splits it holds and is contradicted (`sedlib.eval.bootstrap.claim_count`).

    In `CLAIMS` order, the claims ``evidence`` judges.
    """
    counted = {}
    for claim in CLAIMS:
        rows = evidence[evidence["claim"] == claim]
        if not rows.empty:
            counted[claim] = claim_count(rows["p_better"].to_numpy(), rows["p_worse"].to_numpy())
    return counted


def signed(value: float, percent: bool) -> str:
    """A difference as the report writes it: points with one decimal for a fraction, else two decimals."""
    return f"{100 * value:+.1f}" if percent else f"{value:+.2f}"


def interval_text(row: pd.Series, percent: bool) -> str:
    """``+1.2 [−0.3, +2.6]``: a difference of `claim_evidence` and its interval, rounded by `signed`."""
    return f"{signed(row['difference'], percent)} [{signed(row['low'], percent)}, {signed(row['high'], percent)}]"


def _improvement(row: pd.Series) -> str:
    """``0.80 [0.40, 1.00]``: P(better) over pairs of seeds with its interval; a dash with one seed (no pairs)."""
    if row["seeds"] < 2:
        return "\u2013"
    return f"{row['improvement']:.2f} [{row['improvement_low']:.2f}, {row['improvement_high']:.2f}]"


def _margins(config: RunConfig) -> str:
    """The margins in words: ``1 point of accuracy, 1 point of AUROC and 0.05 of PDS``."""
    margins = config.eval.margins

    def points(value: float) -> str:
        return f"{100 * value:g} point{'' if 100 * value == 1 else 's'}"

    return f"{points(margins.accuracy)} of accuracy, {points(margins.auroc)} of AUROC and {margins.pds:g} of PDS"


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
    over = (
        f"over {seeds} training seeds and the evaluated samples"
        if seeds > 1
        else "over the evaluated samples of one training seed, which leaves out the training randomness"
    )
    lines = [
        f"{labels[sed]} is judged against {labels[reference]}. Each difference is {labels[sed]} minus the other, "
        f"in points for percentages, with its {100 * LEVEL:.0f}\u00a0% interval {over} (a corrupted copy of a "
        f"test image is resampled with it; {config.eval.bootstrap_resamples} resamples)"
        + (f", and the probability that {labels[sed]} is better, P(better), over pairs of seeds" if seeds > 1 else "")
        + ". A split reads **better** or **worse** where "
        f"the interval lies above or below zero, **equivalent** where it lies inside ± the smallest difference "
        f"that matters ({_margins(config)}; `eval.margins`), **undetermined** otherwise. A claim holds on the "
        f"splits where the difference is above zero after Holm's correction over its splits, and is "
        "contradicted where below.",
        "",
    ]
    for claim, counted in claim_verdicts(evidence).items():
        spec, rows = CLAIMS[claim], evidence[evidence["claim"] == claim]
        compared = f"{rows['ours'].iloc[0]} vs {rows['theirs'].iloc[0]}"
        if claim == "pds_vs_detectors":
            compared = f"{rows['ours'].iloc[0]} vs the strongest post-hoc detector, chosen in every resample"
        parts = [
            f"{row['split']} {interval_text(row, spec.percent)} {row['verdict']}"
            + (f" (P(better) {_improvement(row)})" if seeds > 1 else "")
            for _, row in rows.iterrows()
        ]
        detail = f"{spec.measure[0].upper()}{spec.measure[1:]}, {compared}: " + "; ".join(parts)
        lines.append(f"- **{spec.title}: {counted}.** {detail} ({spec.link}).")
    return "\n".join(lines)


_BACKBONES = {"efficientnet_lite0": "EfficientNet-Lite0", "deit3_base": "DeiT III Base"}


def _listed(items: list[str]) -> str:
    """``1, 2 and 5``."""
    return " and ".join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else items[0]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def abstract(evidence: pd.DataFrame, config: RunConfig) -> str:
    """A one-paragraph abstract: what was trained on what, the headline differences in words, and the verdicts.

    It names no code identifier: datasets and backbones by their names, claims by their titles.
    """
    sed, reference = judged_models(config)
    labels = config.evaluated_models()
    seeds = len(config.seeds) or 1
    data = data_source(config).description
    backbone = _BACKBONES.get(config.cache.backbone, config.cache.backbone.removeprefix("timm:"))
    severities = config.data.severities
    shift = (
        f"{_count(len(config.data.corruptions) or 15, 'corruption')} at "
        f"severit{'y' if len(severities) == 1 else 'ies'} {_listed([str(s) for s in severities])}, and "
        if severities
        else ""
    )
    opening = (
        f"This report reproduces Scalable Ensemble Diversification (SED) at a small scale: "
        f"{_count(len(config.main_models()), 'main model')}, each trained with {_count(seeds, 'seed')}, on frozen "
        f"{backbone} features of {data}, evaluated on the clean test split, {shift}"
        f"{_count(len(config.data.ood_sets), 'set')} of unfamiliar (out-of-distribution) images."
    )
    if evidence.empty:
        return opening + " The run has no diversified ensemble, so none of the paper's claims is judged."
    sentences = [opening]
    headline = {
        "pds_vs_reference": f"as a detector of unfamiliar images (AUROC), the disagreement of {labels[sed]}'s members "
        f"is {{}} the disagreement of {labels[reference]}'s members",
        "pds_vs_detectors": "its members' disagreement is {} the strongest post-hoc detector (AUROC)",
        "accuracy_ensemble": f"its accuracy under corruption is {{}} that of {labels[reference]}",
    }
    said = []
    for claim, phrase in headline.items():
        rows = evidence[evidence["claim"] == claim]
        if not rows.empty:
            over = f" (mean of {len(rows)} splits)" if len(rows) > 1 else ""
            said.append(phrase.format(_distance(rows["difference"].mean())) + over)
    if said:
        sentences.append(f"Averaged over the splits, {'; '.join(said)}.")
    verdicts = "; ".join(
        f"{_phrase(CLAIMS[claim].title)}: {counted}" for claim, counted in claim_verdicts(evidence).items()
    )
    sentences.append(
        f"Judged split by split against {labels[reference]}, with {100 * LEVEL:.0f}\u00a0% intervals over "
        f"{'seeds and ' if seeds > 1 else ''}test images and the smallest differences that matter set to "
        f"{_margins(config)}: {verdicts}. The key findings below give the numbers."
    )
    return " ".join(sentences)


def _distance(value: float) -> str:
    """``2.5 points below`` (or ``level with``): a difference in points, rounded as `signed` rounds it."""
    points = float(signed(value, True))
    if points == 0:
        return "level with"
    return f"{abs(points):.1f} points {'above' if points > 0 else 'below'}"


def _phrase(title: str) -> str:
    """A claim's title inside a sentence: its first letter in lower case unless it starts an acronym (PDS)."""
    return title if title[1:2].isupper() else title[0].lower() + title[1:]


def split_verdicts(evidence: pd.DataFrame, claim: str) -> dict[str, str]:
    """Split -> the verdict of one claim there, e.g. ``{"C-1": "worse"}`` (empty when the claim was not judged)."""
    rows = evidence[evidence["claim"] == claim]
    return dict(zip(rows["split"], rows["verdict"]))


def evidence_table(evidence: pd.DataFrame) -> pd.DataFrame:
    """`claim_evidence` as a report table: one decimal for percentages, the interval, P(better) and the verdict."""
    rows = []
    for _, row in evidence.iterrows():
        spec = CLAIMS[row["claim"]]
        scale, digits = (100, 1) if spec.percent else (1, 2)
        rows.append(
            {
                "Claim": spec.short,
                "Split": row["split"],
                "Compared": f"{row['ours']} / {row['theirs']}",
                "Values": f"{scale * row['ours_value']:.{digits}f} / {scale * row['theirs_value']:.{digits}f}",
                "Difference [95 % CI]": interval_text(row, spec.percent),
                "P(better) [95 % CI]": _improvement(row),
                "Verdict": row["verdict"] + (f" (± {scale * row['margin']:g})" if row["verdict"] == EQUIVALENT else ""),
            }
        )
    return pd.DataFrame(rows)
