import numpy as np
import pandas as pd
import pytest

from sedlib.config import RunConfig
from sedlib.errors import StaleEvaluationsError
from sedlib.eval.bootstrap import BETTER, EQUIVALENT, WORSE, ClaimCount
from sedlib.eval.evaluate import SplitEvaluation
from sedlib.study.detection import FEATURE_DETECTORS_MODEL, detector_key
from sedlib.study.findings import (
    TEST_IMAGES,
    abstract,
    claim_evidence,
    claim_verdicts,
    cluster_ids,
    evidence_table,
    judged_models,
    key_findings,
    value_intervals,
)

ROWS = 400  # rows per split: enough for clear intervals where the hand-made effect is large


def config(seeds=()) -> RunConfig:
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


def evaluations(run: RunConfig, sed_pds: float, sed_correct: float, same: bool = False, sed_level: float = 0.0):
    """Every replica on test / fog-1 / digits. The deep ensemble's OOD PDS is shifted by 0.3 over ID, SED's by
    ``sed_pds``; SED's PDS is ``sed_level`` higher everywhere. The deep ensemble is right on half the fog rows,
    SED on ``sed_correct`` of them. With ``same`` SED's evaluations are the deep ensemble's, row for row (but for
    ``sed_level``)."""
    result = {}
    for index, model_run in enumerate(run.model_runs()):
        generator = np.random.default_rng(0 if same else index)
        sed = model_run.model == "sed" and not same
        level = sed_level if model_run.model == "sed" else 0.0
        result[model_run.name, "test"] = split(generator, True, level, 0.9)
        result[model_run.name, "fog-1"] = split(
            generator, True, level + (sed_pds if sed else 0.3), sed_correct if sed else 0.5
        )
        result[model_run.name, "digits"] = split(
            generator, False, level + (sed_pds if sed else 0.3), 0.0, bma_shift=0.3
        )
    return result


CLUSTERS = {"test": np.arange(ROWS), "fog-1": np.arange(ROWS), "digits": np.arange(ROWS) + 1000}
"""Row positions: fog-1 holds corrupted copies of the test images."""


NO_DETECTION = pd.DataFrame(columns=["model", "score", "score_label", "ood_set", "auroc"])


def test_the_sed_model_is_the_diversified_one_and_the_reference_the_deep_ensemble():
    assert judged_models(config()) == ("sed", "de")


def test_identical_models_differ_by_exactly_zero_on_the_same_resamples():
    # SED's rows are the deep ensemble's: had the two sides of a difference been resampled apart,
    # the differences on the resamples would scatter around zero instead of being zero
    run = config()
    evidence = claim_evidence(evaluations(run, 0.0, 0.5, same=True), {}, CLUSTERS, NO_DETECTION, run)
    compared = evidence[evidence["claim"] != "pds_vs_bma"]  # PDS vs BMA compares two scores of one model
    assert set(compared["claim"]) == {"diversity", "pds_vs_reference", "accuracy_ensemble", "accuracy_soup"}
    assert (compared[["difference", "low", "high"]].to_numpy() == 0).all()
    assert set(compared["verdict"]) == {EQUIVALENT}  # an interval of exactly zero lies inside every margin
    assert (compared["improvement"] == 0.5).all()


def test_clear_effects_hold_and_clear_reverses_do_not():
    run = config()
    better = claim_evidence(evaluations(run, 0.8, 0.7), {}, CLUSTERS, NO_DETECTION, run)
    verdicts = claim_verdicts(better)
    # PDS rises by 0.8 from test (U(0, 1)) to OOD for SED, by 0.3 for the deep ensemble: +0.5 on every OOD set,
    # up to the noise of four means of 400 uniform values (standard deviation 0.029 for the difference)
    assert better.set_index(["claim", "split"]).loc[("diversity", "C-1"), "difference"] == pytest.approx(0.5, abs=0.1)
    assert verdicts["diversity"] == verdicts["pds_vs_reference"] == ClaimCount(holds=2, contradicted=0, splits=2)
    # 70 % against 50 % of the fog rows right: +20 points, as ensemble and as soup
    row = better.set_index(["claim", "split"]).loc[("accuracy_ensemble", "C-1")]
    assert row["difference"] == pytest.approx(0.2) and row["ours_value"] == pytest.approx(0.7)
    assert verdicts["accuracy_ensemble"] == verdicts["accuracy_soup"] == ClaimCount(1, 0, 1)
    assert set(better["verdict"]) - {EQUIVALENT} == {BETTER}
    worse = claim_evidence(evaluations(run, -0.2, 0.3), {}, CLUSTERS, NO_DETECTION, run)
    counted = claim_verdicts(worse)
    assert counted["diversity"] == counted["pds_vs_reference"] == ClaimCount(0, 2, 2)
    assert counted["accuracy_ensemble"] == ClaimCount(0, 1, 1)
    assert worse.set_index(["claim", "split"]).loc[("accuracy_ensemble", "C-1"), "verdict"] == WORSE


def test_diversity_is_the_increase_off_distribution_not_the_level():
    # SED's PDS is the deep ensemble's plus 0.5 on every row (the same draws): both rise by 0.3 off-distribution
    run = config()
    evidence = claim_evidence(evaluations(run, 0.3, 0.5, same=True, sed_level=0.5), {}, CLUSTERS, NO_DETECTION, run)
    diversity = evidence[evidence["claim"] == "diversity"]
    assert diversity["difference"].to_numpy() == pytest.approx([0.0, 0.0], abs=1e-12)  # the level's +0.5 cancels
    assert diversity["ours_value"].to_numpy() == pytest.approx([0.3, 0.3], abs=0.1)
    assert set(diversity["verdict"]) == {EQUIVALENT}


def test_corrupted_rows_share_the_cluster_of_their_test_image():
    ids = cluster_ids(config(), {"test": np.array([4, 7, 9]), "fog-1": np.array([7, 4]), "digits": np.array([3, 8])})
    assert ids["test"][0] == ids["fog-1"][0] == TEST_IMAGES and ids["digits"][0] == "digits"
    assert ids["test"][1].tolist() == [0, 1, 2] and ids["fog-1"][1].tolist() == [1, 0]
    assert ids["digits"][1].tolist() == [0, 1]


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
    # a second detector, weaker on digits (AUROC below 1): the strongest is chosen per resample
    for split in ("test", "fog-1", "digits"):
        scores[detector_key(FEATURE_DETECTORS_MODEL, "mahalanobis", split)] = generator.random(ROWS)
    detection = pd.concat([detection, detection.assign(score="mahalanobis", score_label="Mahalanobis", auroc=0.5)])
    evidence = claim_evidence(evals, scores, CLUSTERS, detection, run).set_index(["claim", "split"])
    assert evidence.loc[("pds_vs_detectors", "digits"), "theirs_value"] == 1.0
    assert evidence.loc[("pds_vs_detectors", "digits"), "verdict"] == WORSE
    assert evidence.loc[("pds_vs_detectors", "C-1"), "verdict"] == BETTER


def test_seeds_add_their_spread():
    run = config(seeds=(0, 1))
    evidence = claim_evidence(evaluations(run, 0.8, 0.7), {}, CLUSTERS, NO_DETECTION, run)
    assert (evidence["seeds"] == 2).all() and evidence["seed_std"].notna().all()
    text = key_findings(evidence, run)
    assert "over 2 training seeds" in text
    # 70 % against 50 % of the fog rows right in both seeds: SED is better in all four pairs of seeds
    assert "C-1 +20.0 [" in text and "better (P(better) 1.00 [1.00, 1.00])" in text
    one = claim_evidence(evaluations(config(), 0.8, 0.7), {}, CLUSTERS, NO_DETECTION, config())
    # the seeds' PDS differ (other random draws): where that spread exceeds what each seed's row noise explains,
    # Student's t with 1 degree of freedom widens the interval (the diversity rows here); both seeds are right on
    # the same fog rows, so the accuracy intervals keep their width
    width, width_one = evidence["high"] - evidence["low"], one["high"] - one["low"]
    diversity, accuracy = evidence["claim"] == "diversity", evidence["claim"].str.startswith("accuracy")
    assert (width[diversity] > 3 * width_one[diversity]).all()
    assert (evidence.loc[accuracy, "seed_std"] == 0).all()
    assert width[accuracy].to_numpy() == pytest.approx(width_one[accuracy].to_numpy(), rel=0.1)


def test_findings_text_states_verdicts_numbers_and_links():
    run = config()
    evidence = claim_evidence(evaluations(run, 0.8, 0.7), {}, CLUSTERS, NO_DETECTION, run)
    text = key_findings(evidence, run)
    assert (
        "**Members disagree more off-distribution than a deep ensemble's: holds on 2 of 2, contradicted on 0.**" in text
    )
    assert "(@tbl-diversity)" in text and "(@tbl-ood-gen)" in text
    row = evidence.set_index(["claim", "split"]).loc[("accuracy_ensemble", "C-1")]
    assert f"C-1 +20.0 [{100 * row['low']:+.1f}, {100 * row['high']:+.1f}] better (@tbl-ood-gen)" in text
    assert "P(better)" not in text  # one seed: no pairs of seeds to compare
    summary = abstract(evidence, run)
    assert "against DE" in summary and "members disagree more off-distribution than a deep ensemble's: holds" in summary
    # the headline in words: SED's fog accuracy 70 % against 50 %
    assert "its accuracy under corruption is 20.0 points above that of DE" in summary
    assert "_" not in summary  # no code identifiers
    table = evidence_table(evidence)
    assert table.set_index(["Claim", "Split"]).loc[("Acc. (ensemble)", "C-1"), "Values"] == "70.0 / 50.0"


def test_a_run_without_a_diversified_model_says_so():
    run = RunConfig.from_dict({"run_name": "t", "models": {"de": {"label": "DE", "num_members": 2, "lam": 0.0}}})
    evidence = claim_evidence({}, {}, CLUSTERS, NO_DETECTION, run)
    assert evidence.empty
    assert "No claim can be judged" in key_findings(evidence, run)
    assert "none of the paper's claims is judged" in abstract(evidence, run)


def test_scores_left_out_of_the_evaluation_are_named():
    run = config()
    evals = evaluations(run, 0.8, 0.7)
    for key, evaluation in evals.items():
        evals[key] = SplitEvaluation(evaluation.member_accuracy, evaluation.samples.drop(columns=["bma"]))
    with pytest.raises(ValueError, match=r"leaves \['bma'\] out of eval.scores"):
        claim_evidence(evals, {}, CLUSTERS, NO_DETECTION, run)


def test_value_intervals_are_degenerate_where_every_resample_agrees():
    run = config()
    intervals = value_intervals(evaluations(run, 2.0, 1.0), CLUSTERS, run).set_index(["label", "measure", "split"])
    # SED is right on every fog row: accuracy 1 on every resample
    assert tuple(intervals.loc[("SED", "accuracy", "C-1"), ["low", "high"]]) == (1.0, 1.0)
    # SED's OOD PDS ~ U(2, 3) lies above every test PDS ~ U(0, 1): AUROC 1 on every resample
    assert tuple(intervals.loc[("SED", "auroc_pds", "digits"), ["low", "high"]]) == (1.0, 1.0)
    # the deep ensemble's fog accuracy is 1/2: its interval holds it
    low, high = intervals.loc[("DE", "accuracy", "C-1"), ["low", "high"]]
    assert low < 0.5 < high


def test_two_runs_of_a_study_give_the_same_text():
    # seeded resamples and no wall-clock time: the abstract and key findings are reproducible to the character
    run = config(seeds=(0, 1))
    texts = []
    for _ in range(2):
        evidence = claim_evidence(evaluations(run, 0.8, 0.7), {}, CLUSTERS, NO_DETECTION, run)
        texts.append((abstract(evidence, run), key_findings(evidence, run), evidence.to_csv()))
    assert texts[0] == texts[1]


def test_row_positions_must_match_the_evaluated_rows():
    run = config()
    short = {**CLUSTERS, "fog-1": np.arange(ROWS - 1)}
    with pytest.raises(StaleEvaluationsError, match="split fog-1: the feature file has 399 rows, its evaluation 400"):
        claim_evidence(evaluations(run, 0.8, 0.7), {}, short, NO_DETECTION, run)
