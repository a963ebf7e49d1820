import math

import numpy as np
import pandas as pd
import pytest

from sedlib.method.published import PUBLISHED, PUBLISHED_RESULTS, compare_with_published, published_results


@pytest.mark.parametrize(
    "name, members, batch, repulsion_weight, optimizer, lr, weight_decay, smoothing, steps_per_epoch",
    [
        ("50_models", 50, 16, 0.0, "sgd", 1e-3, 1e-4, 0.0, 80_073),
        ("ood_gen", 5, 32, 0.0, "adamw", 1e-3, 0.1, 0.5, 40_037),
        ("ood_det_cov", 5, 32, 2.5, "adamw", 1e-3, 0.1, 0.5, 40_037),
        ("ood_det_sem", 5, 256, 0.25, "adamw", 1e-4, 0.01, 0.0, 5_005),
    ],
)
def test_published_runs_match_the_audited_configs(
    name, members, batch, repulsion_weight, optimizer, lr, weight_decay, smoothing, steps_per_epoch
):
    run = PUBLISHED[name]
    assert run.heads.num_members == members and run.heads.num_classes == 1000
    assert run.train.batch_size == batch and run.train.schedule == "iid"
    assert run.train.lam == 0.5 and run.train.kappa * run.train.lam == pytest.approx(repulsion_weight)
    assert (run.train.optimizer, run.train.lr, run.train.weight_decay) == (optimizer, lr, weight_decay)
    assert run.train.label_smoothing == smoothing
    assert run.train.epochs == 11 and run.train.freeze_first_epoch and run.train.seed == 42
    assert run.steps_per_epoch == steps_per_epoch and run.pair_steps == 10 * steps_per_epoch


def test_fifty_model_schedule_has_the_published_length():
    assert PUBLISHED["50_models"].pair_steps == 800_730
    assert PUBLISHED["50_models"].train.lr_schedule == "constant"
    assert all(PUBLISHED[name].train.cosine_t_max == 15 for name in ("ood_gen", "ood_det_cov", "ood_det_sem"))


# --- the published numbers (params/reference/sed_published.csv) ---------------------------------

HEADER = "table,run,metric,split,value,unit\n"


def test_published_file_parses_with_the_expected_counts():
    table = published_results()
    assert list(table.columns) == ["table", "run", "metric", "split", "value", "unit"]
    gen, det = table[table["table"] == "ood_gen"], table[table["table"] == "ood_det"]
    # ood_gen: 4 runs x 3 accuracies x 5 splits (no iNat/OI accuracy) + 4 runs x 2 diversities x 7 splits
    assert len(gen) == 4 * 3 * 5 + 4 * 2 * 7 == 116
    # ood_det: 4 runs x 2 scores x 4 OOD sets
    assert len(det) == 4 * 2 * 4 == 32
    assert set(table["run"]) == set(PUBLISHED)
    assert set(gen["metric"]) == {"best_single_oracle", "ensemble", "soup", "num_unique", "pds"}
    assert set(det["metric"]) == {"bma", "pds"}
    assert set(gen["split"]) == {"test", "imagenet_a", "imagenet_r", "C-1", "C-5", "inaturalist", "openimage_o"}
    assert set(det["split"]) == {"C-1", "C-5", "inaturalist", "openimage_o"}
    accuracies = gen[gen["unit"] == "%"]
    assert not accuracies["split"].isin(["inaturalist", "openimage_o"]).any()
    assert set(accuracies["metric"]) == {"best_single_oracle", "ensemble", "soup"}
    assert (det["unit"] == "auroc").all() and det["value"].between(0, 1).all()
    assert set(gen.loc[gen["metric"].isin(["num_unique", "pds"]), "unit"]) == {"count"}


@pytest.mark.parametrize(
    "table, run, metric, split, value",
    [  # read off the audit's tables (original code §7.1 / §7.2)
        ("ood_gen", "50_models", "ensemble", "test", 83.638),
        ("ood_gen", "50_models", "ensemble", "imagenet_a", 50.573),
        ("ood_gen", "50_models", "best_single_oracle", "imagenet_a", 39.080),
        ("ood_gen", "ood_gen", "ensemble", "C-5", 40.657),
        ("ood_gen", "ood_det_cov", "best_single_oracle", "test", 0.570),
        ("ood_gen", "ood_det_cov", "soup", "test", 85.008),
        ("ood_gen", "ood_det_cov", "num_unique", "test", 4.999),
        ("ood_gen", "50_models", "pds", "imagenet_a", 0.955),
        ("ood_gen", "ood_gen", "num_unique", "openimage_o", 1.527),
        ("ood_det", "ood_det_sem", "pds", "inaturalist", 0.9766),
        ("ood_det", "ood_det_cov", "pds", "C-1", 0.6814),
        ("ood_det", "ood_det_cov", "bma", "C-5", 0.8324),
        ("ood_det", "ood_gen", "bma", "openimage_o", 0.9072),
    ],
)
def test_spot_values_equal_the_audit(table, run, metric, split, value):
    published = published_results()
    row = published[
        (published["table"] == table)
        & (published["run"] == run)
        & (published["metric"] == metric)
        & (published["split"] == split)
    ]
    assert row["value"].tolist() == [value]


def test_published_results_lives_under_params_reference():
    assert PUBLISHED_RESULTS.parts[-3:] == ("params", "reference", "sed_published.csv")


def test_compare_with_published_differences_and_missing_values():
    published = published_results()
    ours = pd.DataFrame(
        {
            "run": ["50_models", "ood_gen", "50_models"],
            "metric": ["ensemble", "pds", "ensemble"],
            "split": ["test", "inaturalist", "not_published"],
            "value": [83.0, 1.5, 1.0],
        }
    )
    gen = compare_with_published(ours, "ood_gen", published)
    assert list(gen.columns) == ["run", "metric", "split", "published", "ours", "difference"]
    assert len(gen) == 116  # every published row, none dropped, the unpublished one ignored
    expected_order = published.loc[published["table"] == "ood_gen", ["run", "metric", "split"]]
    assert gen[["run", "metric", "split"]].values.tolist() == expected_order.values.tolist()
    values = gen.set_index(["run", "metric", "split"])
    hit = values.loc[("50_models", "ensemble", "test")]
    assert hit["published"] == 83.638 and hit["ours"] == 83.0
    assert hit["difference"] == pytest.approx(83.0 - 83.638)
    assert values.loc[("ood_gen", "pds", "inaturalist"), "difference"] == pytest.approx(1.5 - 1.303)
    assert gen["ours"].notna().sum() == 2 and gen["difference"].notna().sum() == 2
    assert math.isnan(values.loc[("50_models", "soup", "test"), "ours"])

    ours_det = pd.DataFrame(
        {
            "run": ["ood_det_sem"] * 2,
            "metric": ["pds"] * 2,
            "split": ["inaturalist", "openimage_o"],
            "value": [0.9766, 0.95],
        }
    )
    det = compare_with_published(ours_det, "ood_det")  # reads the file itself
    assert len(det) == 32 and det["ours"].notna().sum() == 2
    values = det.set_index(["run", "metric", "split"])
    assert values.loc[("ood_det_sem", "pds", "inaturalist"), "difference"] == pytest.approx(0.0)
    assert values.loc[("ood_det_sem", "pds", "openimage_o"), "difference"] == pytest.approx(0.95 - 0.9414)
    assert math.isnan(values.loc[("ood_det_sem", "bma", "inaturalist"), "difference"])


def test_compare_with_published_rejects_bad_input():
    ours = pd.DataFrame({"run": ["ood_gen"], "metric": ["ensemble"], "split": ["test"], "value": [85.0]})
    with pytest.raises(ValueError, match=r"'ood_generalisation'.*\['ood_gen', 'ood_det'\]"):
        compare_with_published(ours, "ood_generalisation")
    with pytest.raises(ValueError, match=r"lack column\(s\) \['value'\]"):
        compare_with_published(ours.drop(columns="value"), "ood_gen")
    with pytest.raises(ValueError, match="several values"):
        compare_with_published(pd.concat([ours, ours]), "ood_gen")


def _write(tmp_path, body: str, header: str = HEADER):
    path = tmp_path / "published.csv"
    path.write_text(header + body)
    return path


GOOD = "ood_gen,ood_gen,ensemble,test,85.278,%\nood_det,ood_det_sem,pds,inaturalist,0.9766,auroc\n"


def test_a_small_valid_file_reads_as_typed(tmp_path):
    table = published_results(_write(tmp_path, GOOD))
    assert table["value"].tolist() == [85.278, 0.9766]
    assert table["value"].dtype == np.float64


@pytest.mark.parametrize(
    "body, line, column",
    [
        ("ood_gen,ood_gen,ensemble,test,85.278,%\nood_xyz,ood_gen,ensemble,test,1,%\n", 3, "table"),
        ("ood_gen,100_models,ensemble,test,85.278,%\n", 2, "run"),
        ("ood_gen,ood_gen,ensemble,test,85.2.78,%\n", 2, "value"),
        ("ood_gen,ood_gen,ensemble,test,nan,%\n", 2, "value"),
        ("ood_gen,ood_gen,ensemble,test,,%\n", 2, "value"),
        ("ood_det,ood_gen,pds,C-1,60.2,auroc\n", 2, "value"),
        ("ood_gen,ood_gen,ensemble,test,85.278,percent\n", 2, "unit"),
        ("ood_gen,ood_gen,,test,85.278,%\n", 2, "metric"),
        (GOOD + "ood_gen,ood_gen,ensemble,test,85.0,%\n", 4, "split"),
    ],
)
def test_malformed_files_name_the_file_line_and_column(tmp_path, body, line, column):
    path = _write(tmp_path, body)
    with pytest.raises(ValueError, match=rf"published\.csv: line {line}, column '{column}'"):
        published_results(path)


def test_missing_columns_and_files_are_reported(tmp_path):
    with pytest.raises(ValueError, match=r"published\.csv: line 1 \(header\), column\(s\) \['unit'\] missing"):
        published_results(_write(tmp_path, "ood_gen,ood_gen,ensemble,test,85.278\n", "table,run,metric,split,value\n"))
    with pytest.raises(ValueError, match=r"published\.csv: not a readable CSV"):
        published_results(_write(tmp_path, "", header=""))
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        published_results(tmp_path / "nowhere.csv")
