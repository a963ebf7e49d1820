import numpy as np
import pandas as pd
import pytest
import torch

from sedlib.config import RunConfig
from sedlib.eval.evaluate import SplitEvaluation, evaluate_split
from sedlib.study.detection import detection_table, diversity_table, ood_sets
from sedlib.study.findings import EVIDENCE_COLUMNS
from sedlib.study.predictions import calibration_table, generalisation_tables
from sedlib.study.summary import method_comparison, results_summary
from sedlib.study.tables import calibration_wide, detection_wide, main_rows, sweep_markdown, sweep_table, table1, table3

CONFIG = RunConfig.from_dict(
    {
        "run_name": "t",
        "data": {"corruptions": ["fog", "snow"], "severities": [1, 5], "ood_sets": ["digits"]},
        "models": {"de": {"label": "DE", "num_members": 2, "lam": 0.0}, "sed": {"label": "SED", "num_members": 2}},
        "eval": {"reference_model": "de"},
    }
)


def hand_evidence(verdicts: dict[tuple[str, str], str]) -> pd.DataFrame:
    """Evidence rows by hand: (claim, split) -> verdict, with p-values that Holm's count reads the same way."""
    rows = []
    for (claim, split), verdict in verdicts.items():
        p_better = {"better": 1e-6, "worse": 1 - 1e-6}.get(verdict, 0.5)
        rows.append({"claim": claim, "split": split, "verdict": verdict, "p_better": p_better, "p_worse": 1 - p_better})
    return pd.DataFrame(rows).reindex(columns=EVIDENCE_COLUMNS)


NO_EVIDENCE = pd.DataFrame(columns=EVIDENCE_COLUMNS)


def evaluation(labels, ensemble, soup, members, pds, unique, bma):
    samples = pd.DataFrame(
        {
            "label": labels,
            "ensemble_prediction": ensemble,
            "soup_prediction": soup,
            "pds": pds,
            "num_unique": unique,
            "bma": bma,
        }
    )
    return SplitEvaluation(member_accuracy=np.array(members, dtype=float), samples=samples)


def fake_evaluations(shift: float):
    """Every split has 4 labelled samples (label 0); OOD scores are shifted by ``shift`` per model."""
    evaluations = {}
    for model, bonus in (("de", 0.0), ("sed", shift)):

        def add(split, ensemble, soup, members, pds, unique, bma, labels=(0, 0, 0, 0), model=model):
            evaluations[model, split] = evaluation(list(labels), ensemble, soup, members, pds, unique, bma)

        add("val", [0, 0, 0, 1], [0, 0, 0, 0], [0.5, 0.75], [1, 1, 1, 1], [1, 1, 1, 1], [0.9] * 4)
        add("test", [0, 0, 0, 1], [0, 0, 1, 1], [0.9, 0.6], [1.0, 1.1, 1.2, 1.3], [1, 1, 1, 2], [0.9, 0.8, 0.7, 0.6])
        for corruption, correct in (("fog", 2), ("snow", 1)):
            for severity in (1, 5):
                ensemble = [0] * correct + [1] * (4 - correct)
                ood = [1.5 + bonus] * 4
                add(f"{corruption}-{severity}", ensemble, [1] * 4, [0.25, 0.5], ood, [2 + bonus] * 4, [0.5] * 4)
        add("digits", [1] * 4, [1] * 4, [np.nan, np.nan], [1.15 + bonus] * 4, [1 + bonus] * 4, [0.95] * 4,
            labels=(-1, -1, -1, -1))  # fmt: skip
    return evaluations


def test_generalisation_table_hand_computed():
    summary, per_corruption = generalisation_tables(fake_evaluations(0.5), CONFIG)
    de = summary[summary["model"] == "de"].set_index("aggregation")
    assert de.loc["ensemble", "test"] == pytest.approx(0.75)
    assert de.loc["soup", "test"] == pytest.approx(0.5)
    assert de.loc["best_single_oracle", "test"] == pytest.approx(0.9)
    # member 1 is best on val (0.75 > 0.5), so the val-selected member reports member 1 everywhere
    assert de.loc["best_single_val", "test"] == pytest.approx(0.6)
    assert de.loc["best_single_val", "C-5"] == pytest.approx(0.5)
    # fog 2/4 and snow 1/4 correct: C-1 = mean(0.5, 0.25)
    assert de.loc["ensemble", "C-1"] == pytest.approx(0.375)
    assert de.loc["best_single_oracle", "C-5"] == pytest.approx(0.5)
    assert de.loc["mean_single", "C-1"] == pytest.approx(0.375)
    assert len(per_corruption) == 2 * 6 * 2 * 2  # models x aggregations x corruptions x severities
    assert np.isnan(de.loc["greedy_soup", "test"])  # no greedy soup was evaluated
    assert list(table1(summary).columns) == ["Method", "Test", "C-1", "C-5"]
    assert table1(summary).iloc[0]["Test"] == "75.0"


def test_ood_sets_pool_corruptions_by_severity():
    assert ood_sets(CONFIG) == {"C-1": ["fog-1", "snow-1"], "C-5": ["fog-5", "snow-5"], "digits": ["digits"]}


def test_detection_table_directions_and_pooling():
    detection = detection_table(fake_evaluations(0.5), CONFIG).set_index(["model", "score", "ood_set"])
    # PDS: test 1.0..1.3 vs corrupted 1.5 -> perfectly separated, higher = OOD
    assert detection.loc[("de", "pds", "C-1"), "auroc"] == pytest.approx(1.0)
    assert detection.loc[("de", "pds", "C-1"), "fpr95"] == pytest.approx(0.0)
    # BMA: test 0.6..0.9 vs corrupted 0.5; low confidence = OOD, so also perfect
    assert detection.loc[("de", "bma", "C-5"), "auroc"] == pytest.approx(1.0)
    # digits: PDS 1.15 for the deep ensemble; beats 1.0 and 1.1 only -> AUROC = 2/4
    assert detection.loc[("de", "pds", "digits"), "auroc"] == pytest.approx(0.5)
    # with the +0.5 shift SED's digits PDS (1.65) is above every test value
    assert detection.loc[("sed", "pds", "digits"), "auroc"] == pytest.approx(1.0)
    # BMA on digits (0.95) is above every test confidence: the detector is inverted
    assert detection.loc[("de", "bma", "digits"), "auroc"] == pytest.approx(0.0)
    wide = table3(detection.reset_index())
    assert list(wide.columns) == ["Method", "C-1", "C-5", "digits"]
    assert wide.set_index("Method").loc["SED / PDS", "digits"] == "100.0"


def test_diversity_and_summary_report_the_signature():
    evaluations = fake_evaluations(0.5)
    diversity = diversity_table(evaluations, CONFIG).set_index(["model", "split"])
    assert diversity.loc[("de", "test"), "num_unique"] == pytest.approx(1.25)
    assert diversity.loc[("sed", "C-1"), "num_unique"] == pytest.approx(2.5)
    assert diversity.loc[("sed", "digits"), "pds"] == pytest.approx(1.65)
    summary, _ = generalisation_tables(evaluations, CONFIG)
    evidence = hand_evidence(
        {("diversity", "C-1"): "better", ("diversity", "digits"): "worse", ("pds_vs_bma", "digits"): "undetermined"}
    )
    text = results_summary(summary, detection_table(evaluations, CONFIG), diversity.reset_index(), evidence, CONFIG)
    assert "Disagreement (SED vs DE)" in text and "test 75.0 %" in text
    assert "- digits: #unique" in text and "PDS 1.65 vs" in text
    # whether the claims hold is said only in the key findings' words
    assert (
        "Members disagree more off-distribution than a deep ensemble's: holds on 1 of 2, contradicted on 1 "
        "(C-1 better; digits worse)" in text
    )
    assert "PDS detects OOD inputs better than the ensemble's confidence (BMA): holds on 0 of 1" in text
    assert "appears" not in text and "beats" not in text


def test_summary_without_evidence_states_numbers_only():
    evaluations = fake_evaluations(-0.1)
    summary, _ = generalisation_tables(evaluations, CONFIG)
    detection, diversity = detection_table(evaluations, CONFIG), diversity_table(evaluations, CONFIG)
    text = results_summary(summary, detection, diversity, NO_EVIDENCE, CONFIG)
    assert "Disagreement (SED vs DE)" in text and "holds on" not in text and "verdicts" not in text


def test_detection_wide_joins_metrics_per_cell():
    detection = detection_table(fake_evaluations(0.5), CONFIG)
    one = detection_wide(detection, ("auroc",)).set_index(["Model", "Score"])
    assert list(one.columns) == ["C-1", "C-5", "digits"]
    assert one.loc[("DE", "PDS"), "digits"] == "50.0"
    joined = detection_wide(detection, ("auroc", "fpr95")).set_index(["Model", "Score"])
    # digits, DE, PDS: OOD 1.15 everywhere; detecting 95 % of it needs threshold 1.15, which flags the ID
    # values 1.2 and 1.3 -> FPR 2/4
    assert joined.loc[("DE", "PDS"), "digits"] == "50.0 / 50.0"


def test_seeds_are_averaged_with_their_spread():
    config = RunConfig.from_dict(
        {
            "run_name": "t",
            "seeds": [3, 4],
            "data": {"corruptions": ["fog", "snow"], "severities": [1, 5], "ood_sets": ["digits"]},
            "models": {"de": {"label": "DE", "num_members": 2, "lam": 0.0}},
        }
    )
    assert [run.name for run in config.model_runs()] == ["de-seed3", "de-seed4"]
    # the "sed" entries of fake_evaluations carry the shift: each replica gets its own OOD values
    splits = {split for _, split in fake_evaluations(0.0)}
    evaluations = {
        (replica, split): fake_evaluations(shift)["sed", split]
        for replica, shift in (("de-seed3", 0.0), ("de-seed4", 1.0))
        for split in splits
    }
    summary, _ = generalisation_tables(evaluations, config)
    assert summary["seed"].tolist().count(3) == summary["seed"].tolist().count(4) == len(summary) // 2
    shown = table1(summary).set_index("Method")
    # identical accuracies in both seeds: the spread is 0
    assert shown.loc["DE / Ensemble (mean logits)", "Test"] == "75.0 ± 0.0"
    diversity = diversity_table(evaluations, config)
    mean_unique = diversity[diversity["split"] == "digits"].groupby("model")["num_unique"]
    # #unique on digits is 1 + shift: 1.0 and 2.0 -> mean 1.5, sample std 0.707
    assert mean_unique.mean().loc["de"] == pytest.approx(1.5) and mean_unique.std().loc["de"] == pytest.approx(2**-0.5)
    detection = detection_table(evaluations, config)
    auroc = detection_wide(detection, ("auroc",)).set_index(["Model", "Score"])
    assert " ± " in auroc.loc[("DE", "PDS"), "digits"]
    assert "means over 2 seeds" in results_summary(summary, detection, diversity, NO_EVIDENCE, config)


def test_seeds_must_be_distinct():
    with pytest.raises(Exception, match="seeds must be distinct non-negative integers"):
        RunConfig.from_dict({"run_name": "t", "seeds": [1, 1], "models": {"de": {"num_members": 2}}})


def test_calibration_table_averages_the_corruptions(tiny_ensemble):
    generator = torch.Generator().manual_seed(0)
    evaluations = {}
    for model in ("de", "sed"):
        for split in ("test", "fog-1", "snow-1", "fog-5", "snow-5"):
            features = torch.randn(30, 12, generator=generator)
            labels = torch.randint(0, 5, (30,), generator=generator).numpy()
            evaluations[model, split] = evaluate_split(tiny_ensemble, features, labels, progress=False)
    table = calibration_table(evaluations, CONFIG).set_index(["model", "aggregation", "split"])
    assert set(table.index.get_level_values("split")) == {"test", "C-1", "C-5"}
    fog, snow = (evaluations["sed", f"{c}-5"].calibration()["soup"]["nll"] for c in ("fog", "snow"))
    assert table.loc[("sed", "soup", "C-5"), "nll"] == pytest.approx((fog + snow) / 2)
    member = evaluations["de", "test"].member_calibration["ece"].mean()
    assert table.loc[("de", "mean_member", "test"), "ece"] == pytest.approx(member)
    wide = calibration_wide(calibration_table(evaluations, CONFIG))
    assert list(wide.columns) == ["Method", "Test", "C-1", "C-5"] and len(wide) == 6


def test_summary_leaves_one_member_models_out_of_the_disagreement_comparisons():
    detection = detection_table(fake_evaluations(0.5), CONFIG)
    detection = detection[~((detection["model"] == "sed") & (detection["score"] == "pds"))]  # as for M = 1
    summary, _ = generalisation_tables(fake_evaluations(0.5), CONFIG)
    text = results_summary(summary, detection, diversity_table(fake_evaluations(0.5), CONFIG), NO_EVIDENCE, CONFIG)
    assert "- SED: test" in text and "Disagreement (SED" not in text and "- SED: C-1" not in text


SWEEP_CONFIG = RunConfig.from_dict(
    {
        "run_name": "t",
        "data": {"corruptions": ["fog"], "severities": [5], "ood_sets": ["digits"]},
        "train": {"kappa": 1.0},
        "models": {"de": {"label": "DE", "num_members": 2, "lam": 0.0}, "sed": {"label": "SED", "num_members": 2}},
        "sweeps": {"lam": {"model": "sed", "values": [0.0, 0.5, 0.9]}},
    }
)


def hand_frames(points: dict[str, tuple[float, float, float]], stds: dict | None = None, seeds=(0,)):
    """Summary and detection rows by hand: model -> (test accuracy, C-5 accuracy, PDS AUROC); BMA is 0.5."""
    summary, detection = [], []
    for seed in seeds:
        for model, (test, shifted, auroc) in points.items():
            wobble = (stds or {}).get(model, 0.0) * (1 if seed == seeds[0] else -1)
            for aggregation in ("ensemble", "soup", "mean_single", "best_single_oracle"):
                bonus = 0.5 if aggregation == "best_single_oracle" else 0.0  # an oracle must never win
                value = test + wobble + bonus - 0.01 * (aggregation != "ensemble")
                summary.append({"model": model, "label": model.upper(), "seed": seed, "aggregation": aggregation,
                                "test": value, "C-5": shifted})  # fmt: skip
            for score, value in (("pds", auroc), ("bma", 0.5)):
                detection.append({"model": model, "label": model.upper(), "seed": seed, "score": score,
                                  "score_label": score.upper(), "ood_set": "digits", "auroc": value})  # fmt: skip
    return pd.DataFrame(summary), pd.DataFrame(detection)


def test_sweep_table_reads_each_point_and_marks_the_pareto_front():
    # lam 0 is "de" (0.80 test, 0.60 AUROC), 0.5 is "sed" (0.78, 0.70), 0.9 dominated by sed (0.70, 0.65)
    summary, detection = hand_frames(
        {"de": (0.80, 0.4, 0.60), "sed": (0.78, 0.5, 0.70), "sed-lam0.9": (0.70, 0.3, 0.65)}
    )
    table = sweep_table(summary, detection, SWEEP_CONFIG)
    assert table["model"].tolist() == ["de", "sed", "sed-lam0.9"]
    assert table["value"].tolist() == [0.0, 0.5, 0.9]
    assert table["test"].tolist() == pytest.approx([0.80, 0.78, 0.70])
    assert table["C-5"].tolist() == pytest.approx([0.4, 0.5, 0.3])
    assert table["mean_member_test"].tolist() == pytest.approx([0.79, 0.77, 0.69])
    assert table["auroc_pds"].tolist() == pytest.approx([0.60, 0.70, 0.65])
    assert table["pareto"].tolist() == [True, True, False]
    assert "λ = 0.9" in sweep_markdown(table)


def test_main_rows_leave_the_sweep_points_out():
    summary, _ = hand_frames({"de": (0.8, 0.4, 0.6), "sed": (0.78, 0.5, 0.7), "sed-lam0.9": (0.7, 0.3, 0.65)})
    assert set(main_rows(summary, SWEEP_CONFIG)["model"]) == {"de", "sed"}


def test_method_comparison_names_the_winners_and_quotes_the_key_findings():
    config = RunConfig.from_dict(
        {**{k: v for k, v in SWEEP_CONFIG.to_dict().items() if k != "sweeps"}, "seeds": [0, 1]}
    )
    summary, detection = hand_frames(
        {"de": (0.80, 0.40, 0.60), "sed": (0.78, 0.50, 0.70)}, stds={"de": 0.05}, seeds=(0, 1)
    )
    evidence = hand_evidence(
        {
            ("accuracy_ensemble", "C-5"): "undetermined",
            ("accuracy_soup", "C-5"): "better",
            ("pds_vs_reference", "digits"): "equivalent",
        }
    )
    text = method_comparison(summary, detection, evidence, config)
    test_line = next(line for line in text.splitlines() if line.startswith("- Test"))
    assert test_line.startswith("- Test: DE [ensemble (mean logits)], 80.0 %")
    # the test split is judged by no claim: the lead is stated, no verdict
    assert test_line.endswith("SED [ensemble (mean logits)], 78.0 %: a lead of 2.0 points.")
    shifted = next(line for line in text.splitlines() if line.startswith("- C-5"))
    assert shifted.startswith("- C-5: SED [") and "a lead of 10.0 points" in shifted
    # a 10-point lead, but the key findings call it undetermined for the ensemble: the text says so, not "beyond"
    assert shifted.endswith("; key findings (prediction ensemble undetermined, weight soup better).")
    assert "oracle" not in text and "mean single" not in text and "spread" not in text
    assert (
        "- digits: best is SED, PDS (70.0 %); the best disagreement score is SED, PDS (70.0 %), rank 1 of 4; "
        "key findings (PDS vs the deep ensemble's PDS equivalent)." in text
    )
