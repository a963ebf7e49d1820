"""End to end: the own-data example (image folders, a timm checkpoint from a file), then a study on its features.

The example of docs/own-data.md runs at small sizes (``--set``-style overrides): its folders and weights are
written by `sedlib.data.own_data_example`, the five notebooks run on them. A second study then reads the
features that run cached, saved as the user's own ``.npz`` / ``.npy`` / ``.h5`` files (``data.dataset:
features``), through stages 01-05 without a backbone or corruption splits. Both run their notebooks in this
process (`tests.helpers.executors.run_in_process`); kernels, executed notebooks and the report are the smoke
run's to test (`conftest.smoke_run`).
"""

import h5py
import numpy as np
import pandas as pd
import pytest

from sedlib.config import load_config
from sedlib.data.own_data_example import (
    EXAMPLE_CLASSES,
    WEIGHTS_FILE,
    folder_name,
    write_example_folders,
    write_lite0_weights,
)
from sedlib.features import read_split
from sedlib.rundir.declaration import declared_files
from sedlib.rundir.directory import RunDir
from tests.helpers.executors import run_in_process

pytestmark = pytest.mark.e2e  # runs a whole study's notebooks, in-process (make test-fast leaves it out)

PARAMS = "params/own_data_example.yaml"
SMALL = {  # small enough for the test suite: the whole pipeline, a few seconds of work per stage
    "cache": {"image_size": 32, "batch_size": 64, "chunk_rows": 64},
    "data": {"corruption_rows": 20, "val_rows": 40, "corruptions": ["gaussian_noise"]},
    "train": {"epochs": 2},
    "models": {"deep_ensemble": {"num_members": 2}, "sed_a2d": {"num_members": 2}},
    "eval": {"detectors": ["knn"]},
}


def files_of(run: RunDir) -> set[str]:
    return {path.relative_to(run.root).as_posix() for path in run.root.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example study on folders written by its own command, at small sizes: (overrides, run directory)."""
    root = tmp_path_factory.mktemp("own_data")
    images = write_example_folders(root / "images", train=30, val=10, test=20, ood=20)
    write_lite0_weights(images / WEIGHTS_FILE)
    data = {
        **{f"{split}_path": str(images / split) for split in ("train", "val", "test")},
        "ood_paths": {"digits": str(images / "digits"), "animals": str(images / "animals")},
    }
    overrides = {
        **SMALL,
        "data": {**SMALL["data"], **data},
        "cache": {**SMALL["cache"], "weights": str(images / WEIGHTS_FILE)},
    }
    run = run_in_process(PARAMS, overrides, str(root / "run"))
    return overrides, run


@pytest.fixture(scope="module")
def given_features(example, tmp_path_factory):
    """The example run's features saved as your own files, and a features study run on them (no report)."""
    _, example_run = example
    folder = tmp_path_factory.mktemp("my_features")
    split = {
        name: read_split(example_run.path("features", name)) for name in ("train", "val", "test", "digits", "animals")
    }
    class_names = np.array(sorted(folder_name(name) for name in EXAMPLE_CLASSES))
    train = split["train"]
    np.savez(folder / "train.npz", features=train.features[0], labels=train.labels, class_names=class_names)
    for name in ("val", "test"):
        np.savez(folder / f"{name}.npz", features=split[name].features, labels=split[name].labels)
    np.save(folder / "digits.npy", split["digits"].features)
    with h5py.File(folder / "animals.h5", "w") as handle:
        handle["features"] = split["animals"].features
    data = {
        "dataset": "features",
        **{f"{name}_path": str(folder / f"{name}.npz") for name in ("train", "val", "test")},
        "ood_paths": {"digits": str(folder / "digits.npy"), "animals": str(folder / "animals.h5")},
    }
    overrides = {**SMALL, "data": {**SMALL["data"], **data}}
    run = run_in_process(PARAMS, overrides, str(folder / "run"))
    return overrides, run, split


def test_the_example_runs_every_stage_on_its_folders(example):
    overrides, run = example
    config = load_config(PARAMS, overrides)
    assert files_of(run) == declared_files(config)
    train = read_split(run.path("features", "train"))
    assert train.features.shape == (2, 120, 1280)  # 4 classes x 30 images, two augmented passes
    assert "timm:tf_efficientnet_lite0 [file tf_efficientnet_lite0.safetensors sha256:" in train.manifest.backbone
    # labels index the sorted folder names: bag, sneaker, t-shirt_top, trouser, 30 images each in that order
    assert train.labels.tolist() == [0] * 30 + [1] * 30 + [2] * 30 + [3] * 30
    assert "gaussian_noise severity 5" in read_split(run.path("features", "gaussian_noise-5")).manifest.transform
    ood_gen = pd.read_csv(run.path("ood_gen"))
    ensemble = ood_gen[ood_gen["aggregation"] == "ensemble"].set_index("model")
    assert (ensemble["test"] > 0.6).all(), ensemble  # four easy classes; chance is 0.25
    assert set(pd.read_csv(run.path("ood_det"))["ood_set"]) == {"C-1", "C-5", "digits", "animals"}
    assert "|   animals |" in run.path("table_markdown", "table3_ood_detection").read_text()  # a column of table 3


def test_a_study_on_given_features_runs_without_backbone_or_corruptions(given_features):
    overrides, run, example_split = given_features
    config = load_config(PARAMS, overrides)
    assert config.data.severities == ()
    assert files_of(run) == declared_files(config)
    test = read_split(run.path("features", "test"))
    np.testing.assert_array_equal(test.features, example_split["test"].features)  # copied as given
    assert test.manifest.backbone.startswith("none: features given")
    assert set(pd.read_csv(run.path("splits"))["source"]) == {"given"}
    assert list(pd.read_csv(run.path("ood_gen")).filter(like="C-").columns) == []
    assert set(pd.read_csv(run.path("ood_det"))["ood_set"]) == {"digits", "animals"}
    table1 = run.path("table_markdown", "table1_ood_generalisation").read_text()
    assert "This study has no corruption splits (data.dataset is features" in table1
    assert "(the study has no corruption splits)" in run.path("summary").read_text()
