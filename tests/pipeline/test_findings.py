import numpy as np
import pandas as pd
import pytest

from sedlib.bootstrap import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from sedlib.config import RunConfig
from sedlib.evaluate import SplitEvaluation
from sedlib.pipeline.evaluation import FEATURE_DETECTORS_MODEL, detector_key
from sedlib.pipeline.findings import (
    COST_EXPONENT_TOLERANCE,
    abstract,
    claim_evidence,
    claim_verdicts,
    evidence_table,
    growth_exponent,
    judged_models,
    key_findings,
    value_intervals,
)

ROWS = 400  # rows per split: enough for clear intervals where the hand-made effect is large


def config(seeds=(), sweep=False) -> RunConfig:
    values = {
        "run_name": "t",
        "data": {"corruptions": ["fog"], "severities": [1], "ood_sets": ["digits"]},
        "models": {
            "de": {"label": "DE", "num_members": 2, "lam": 0.0},
            "sed": {"label": "SED", "num_members": 2, "lam": 0.5, "kappa": 1.0},
        },
        "eval": {"reference_model": "de", "bootstrap_resamples": 300, "detectors": []},
    }
    if seeds:
        values["seeds"] = list(seeds)
    if sweep:
        values["sweeps"] = {"num_members": {"model": "sed", "values": [2, 4, 8]}}
    return RunConfig.from_dict(values)


def split(generator, labelled: bool, pds_shift: float, correct: float, bma_shift: float = 0.0) -> SplitEvaluation:
    """ROWS rows: PDS ~ U(0, 1) + pds_shift, BMA ~ U(0, 1) - bma_shift, a fraction ``correct`` of right predictions."""
    labels = np.zeros(ROWS, dtype=int) if labelled else np.full(ROWS, -1)
    right = np.arange(ROWS) < correct * ROWS
    samples = pd.DataFrame(
        {
            "label": labels,
            "ensemble_prediction": np.where(right, 0, 1),
            "soup_prediction": np.where(right, 0, 1),
            "pds": generator.random(ROWS) + pds_shift,
            "bma": generator.random(ROWS) - bma_shift,
        }
    )
    return SplitEvaluation(member_accuracy=np.array([0.5, 0.5]), samples=samples)


def evaluations(run: RunConfig, sed_pds: float, sed_correct: float, same: bool = False):
    """Every replica on test / fog-1 / digits. The deep ensemble's OOD PDS is shifted by 0.3 over ID, SED's by
    ``sed_pds``; the deep ensemble is right on half the fog rows, SED on ``sed_correct`` of them. With
    ``same`` SED's evaluations are the deep ensemble's, row for row."""
    result = {}
    for index, model_run in enumerate(run.model_runs()):
        generator = np.random.default_rng(0 if same else index)
        sed = model_run.model == "sed" and not same
        result[model_run.name, "test"] = split(generator, True, 0.0, 0.9)
        result[model_run.name, "fog-1"] = split(generator, True, sed_pds if sed else 0.3, sed_correct if sed else 0.5)
        result[model_run.name, "digits"] = split(generator, False, sed_pds if sed else 0.3, 0.0, bma_shift=0.3)
    return result


NO_DETECTION = pd.DataFrame(columns=["model", "score", "score_label", "ood_set", "auroc"])


def test_the_sed_model_is_the_diversified_one_and_the_reference_the_deep_ensemble():
    assert judged_models(config()) == ("sed", "de")


def test_identical_models_differ_by_exactly_zero_on_the_same_resamples():
    # SED's rows are the deep ensemble's: had the two sides of a difference been resampled apart,
    # the differences on the resamples would scatter around zero instead of being zero
    run = config()
    evidence = claim_evidence(evaluations(run, 0.0, 0.5, same=True), {}, {}, NO_DETECTION, run)
    compared = evidence[evidence["claim"] != "pds_vs_bma"]  # PDS vs BMA compares two scores of one model
    assert set(compared["claim"]) == {"diversity", "pds_vs_reference", "accuracy_ensemble", "accuracy_soup"}
    assert (compared[["difference", "low", "high"]].to_numpy() == 0).all()
    assert set(compared["verdict"]) == {INCONCLUSIVE}


def test_clear_effects_hold_and_clear_reverses_do_not():
    run = config()
    better = claim_evidence(evaluations(run, 0.8, 0.7), {}, {}, NO_DETECTION, run)
    verdicts = claim_verdicts(better)
    # OOD PDS ~ U(0.8, 1.8) against the deep ensemble's U(0.3, 1.3): mean PDS +0.5 on every OOD set
    assert better.set_index(["claim", "split"]).loc[("diversity", "C-1"), "difference"] == pytest.approx(0.5, abs=0.05)
    assert verdicts["diversity"] == verdicts["pds_vs_reference"] == HOLDS
    # 70 % against 50 % of the fog rows right: +20 points, as ensemble and as soup
    row = better.set_index(["claim", "split"]).loc[("accuracy_ensemble", "C-1")]
    assert row["difference"] == pytest.approx(0.2) and row["ours_value"] == pytest.approx(0.7)
    assert verdicts["accuracy_ensemble"] == verdicts["accuracy_soup"] == HOLDS
    worse = claim_verdicts(claim_evidence(evaluations(run, -0.2, 0.3), {}, {}, NO_DETECTION, run))
    assert worse["diversity"] == worse["pds_vs_reference"] == worse["accuracy_ensemble"] == DOES_NOT_HOLD


def test_pds_is_judged_against_the_strongest_detector():
    run = config()
    evals = evaluations(run, 0.8, 0.5)
    generator = np.random.default_rng(5)
    # a detector that separates digits perfectly (ID below 1, OOD above) and fog not at all
    scores = {
        detector_key(FEATURE_DETECTORS_MODEL, "knn", "test"): generator.random(ROWS),
        detector_key(FEATURE_DETECTORS_MODEL, "knn", "fog-1"): generator.random(ROWS),
        detector_key(FEATURE_DETECTORS_MODEL, "knn", "digits"): generator.random(ROWS) + 1,
    }
    detection = pd.DataFrame(
        [
            {"model": FEATURE_DETECTORS_MODEL, "score": "knn", "score_label": "KNN", "ood_set": s, "auroc": a}
            for s, a in (("C-1", 0.5), ("digits", 1.0))
        ]
    )
    evidence = claim_evidence(evals, scores, {}, detection, run).set_index(["claim", "split"])
    assert evidence.loc[("pds_vs_detectors", "digits"), "theirs_value"] == 1.0
    assert evidence.loc[("pds_vs_detectors", "digits"), "verdict"] == DOES_NOT_HOLD
    assert evidence.loc[("pds_vs_detectors", "C-1"), "verdict"] == HOLDS


def test_seeds_add_their_spread():
    run = config(seeds=(0, 1))
    evidence = claim_evidence(evaluations(run, 0.8, 0.7), {}, {}, NO_DETECTION, run)
    assert (evidence["seeds"] == 2).all() and evidence["seed_std"].notna().all()
    assert "± the standard deviation over 2 seeds" in key_findings(evidence, run)


def logs(run: RunConfig, seconds_per_step) -> dict[str, pd.DataFrame]:
    """Five epochs per sweep point (the first frozen), 100 steps each, ``seconds_per_step(M)`` with a 1 % jitter."""
    generator = np.random.default_rng(0)
    result = {}
    for members, model in zip(run.sweeps["num_members"].values, run.sweeps["num_members"].points):
        step = seconds_per_step(members) * (1 + 0.01 * generator.standard_normal(5))
        result[model] = pd.DataFrame(
            {"epoch": range(5), "frozen": [True, False, False, False, False], "steps": 100, "steps_seconds": 100 * step}
        )
    return result


def test_growth_exponent_of_a_power_law():
    members = np.array([2.0, 4.0, 8.0])
    assert growth_exponent(members, np.log(3 * members**0.5)) == pytest.approx(0.5)
    assert growth_exponent(members, np.log(np.full(3, 0.01))) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("seconds_per_step", "expected"),
    [(lambda m: 0.01, HOLDS), (lambda m: 0.01 * m, DOES_NOT_HOLD), (lambda m: 0.01 * m**COST_EXPONENT_TOLERANCE, None)],
)
def test_step_cost_is_flat_only_below_the_tolerance(seconds_per_step, expected):
    run = config(sweep=True)
    cost = claim_evidence(evaluations(run, 0.8, 0.7), {}, logs(run, seconds_per_step), NO_DETECTION, run)
    row = cost.set_index("claim").loc["cost_flat"]
    assert row["split"] == "M = 2, 4, 8"
    # exactly at the tolerance the interval straddles it: neither verdict can be given
    assert row["verdict"] == (expected or INCONCLUSIVE)


def test_findings_text_states_verdicts_numbers_and_links():
    run = config()
    evidence = claim_evidence(evaluations(run, 0.8, 0.7), {}, {}, NO_DETECTION, run)
    text = key_findings(evidence, run)
    assert "**Members disagree more off-distribution than a deep ensemble's: holds.**" in text
    assert "(@tbl-diversity)" in text and "(@tbl-ood-gen)" in text
    row = evidence.set_index(["claim", "split"]).loc[("accuracy_ensemble", "C-1")]
    assert f"C-1 +20.0 [{100 * row['low']:+.1f}, {100 * row['high']:+.1f}]" in text
    summary = abstract(evidence, run)
    assert "SED against DE" in summary and "hold (members disagree more" in summary
    table = evidence_table(evidence)
    assert table.set_index(["Claim", "Split"]).loc[("Acc. (ensemble)", "C-1"), "Values"] == "70.0 / 50.0"


def test_a_run_without_a_diversified_model_says_so():
    run = RunConfig.from_dict({"run_name": "t", "models": {"de": {"label": "DE", "num_members": 2, "lam": 0.0}}})
    evidence = claim_evidence({}, {}, {}, NO_DETECTION, run)
    assert evidence.empty
    assert "No claim can be judged" in key_findings(evidence, run)
    assert "none of the paper's claims is judged" in abstract(evidence, run)


def test_scores_left_out_of_the_evaluation_are_named():
    run = config()
    evals = evaluations(run, 0.8, 0.7)
    for key, evaluation in evals.items():
        evals[key] = SplitEvaluation(evaluation.member_accuracy, evaluation.samples.drop(columns=["bma"]))
    with pytest.raises(ValueError, match=r"leaves \['bma'\] out of eval.scores"):
        claim_evidence(evals, {}, {}, NO_DETECTION, run)


def test_value_intervals_are_degenerate_where_every_resample_agrees():
    run = config()
    intervals = value_intervals(evaluations(run, 2.0, 1.0), run).set_index(["label", "measure", "split"])
    # SED is right on every fog row: accuracy 1 on every resample
    assert tuple(intervals.loc[("SED", "accuracy", "C-1"), ["low", "high"]]) == (1.0, 1.0)
    # SED's OOD PDS ~ U(2, 3) lies above every test PDS ~ U(0, 1): AUROC 1 on every resample
    assert tuple(intervals.loc[("SED", "auroc_pds", "digits"), ["low", "high"]]) == (1.0, 1.0)
    # the deep ensemble's fog accuracy is 1/2: its interval holds it
    low, high = intervals.loc[("DE", "accuracy", "C-1"), ["low", "high"]]
    assert low < 0.5 < high
