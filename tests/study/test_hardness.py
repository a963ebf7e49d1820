import numpy as np
import pytest

from sedlib.config import load_config
from sedlib.data.splits import plan_splits, source_images
from sedlib.rundir.directory import RunDir
from sedlib.study import hardness
from sedlib.study.extract import example_inputs


def hand_record():
    """Six training rows over two epochs; in the last one rows 4, 1 and 0 have the largest alpha."""
    alpha = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [2.0, 3.0, 0.5, np.nan, 9.0, 0.1]], dtype=np.float32)
    return hardness.AlphaRecord(
        alpha=alpha,
        row_id=np.array([10, 11, 12, 13, 14, 15]),
        label=np.array([0, 1, 1, 2, 1, 0]),
        frozen=np.array([True, False]),
        pass_index=np.array([0, 1]),
    )


def test_highest_alpha_ranks_the_last_epoch_and_names_the_classes():
    config = load_config("params/smoke.yaml")
    rows = hardness.highest_alpha(config, hand_record(), count=3)
    assert rows["row_id"].tolist() == [14, 11, 10]  # the NaN row (never read) is never ranked high
    assert rows["alpha"].tolist() == [9.0, 3.0, 2.0]
    assert rows["class"].tolist() == ["Trouser", "Trouser", "T-shirt/top"]
    assert rows["pass"].tolist() == [1, 1, 1]


def test_alpha_class_shares_compare_the_top_rows_with_all_rows():
    config = load_config("params/smoke.yaml")
    shares = hardness.alpha_class_shares(config, hand_record(), top_fraction=0.5).set_index("class")
    # the top half (3 rows: 14, 11, 10) holds labels 1, 1, 0; all six rows hold 0, 1, 1, 2, 1, 0
    assert shares.loc["Trouser", "share_top"] == pytest.approx(2 / 3)
    assert shares.loc["Trouser", "share_all"] == pytest.approx(3 / 6)
    assert shares.loc["Trouser", "ratio"] == pytest.approx(4 / 3)
    assert shares.loc["Pullover", "share_top"] == 0 and shares.loc["Pullover", "ratio"] == 0
    assert np.isnan(shares.loc["Dress", "ratio"])  # a class with no training rows has no ratio
    assert list(shares.index[:2]) == ["Trouser", "T-shirt/top"]


def test_training_images_are_the_augmented_inputs_the_cache_made():
    config = load_config("params/smoke.yaml")
    examples = example_inputs(config, count=4)
    plan = next(plan for plan in plan_splits(config) if plan.name == "train")
    _, index = source_images(config, plan)
    chosen = index[np.linspace(0, len(index) - 1, 4).astype(int)]  # the rows example_inputs shows
    np.testing.assert_array_equal(hardness.training_images(config, chosen, 0), examples["train, augmented"])
    assert not np.array_equal(hardness.training_images(config, chosen, 1), examples["train, augmented"])


def test_a_model_without_hardness_weights_has_no_record(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no hardness weights for 'deep_ensemble'.*lam > 0"):
        hardness.alpha_record(run, "deep_ensemble")
