"""End to end on the paper's pipeline: fake ImageNet-family folders, a DeiT-3-B with random weights at
32 px, the five notebooks under the faithful protocol.

The notebooks run in this process (`tests.helpers.executors.InProcessExecutor`): the papermill kernels, the
executed notebooks and the report are the smoke run's to test (`conftest.smoke_run`), which makes this study
seconds instead of minutes. The trained heads are narrower than the published 3072 (``head.hidden_dim: 64``;
the backbone's own head keeps its width) and the only post-hoc detector is kNN: a 3072-wide head makes the
step-cost measurement and the weight soups of stages 02-03 the most of the run, and neither is what this tests."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from sedlib import run as runner
from sedlib.backbones import load_backbone
from sedlib.config import load_config
from sedlib.data.fake_imagenet import make_fake_imagenet
from sedlib.data.imagenet import FolderImages, imagenet_split
from sedlib.method.ensemble import HeadEnsemble
from sedlib.method.published import published_results
from sedlib.rundir.declaration import STAGE_NAMES, declared_files
from sedlib.rundir.directory import RunDir
from tests.helpers.executors import run_in_process

pytestmark = pytest.mark.e2e  # runs a whole study's notebooks, in-process (make test-fast leaves it out)
PARAMS = "params/smoke_imagenet.yaml"
SMALLER = {"head": {"hidden_dim": 64}, "eval": {"detectors": ["knn"]}}


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return make_fake_imagenet(tmp_path_factory.mktemp("data") / "fake")


@pytest.fixture(scope="module")
def imagenet_run(tmp_path_factory, fake_root):
    run_dir = tmp_path_factory.mktemp("smoke_imagenet") / "run"
    overrides = {"data": {"root": str(fake_root)}, **SMALLER}
    run_in_process(PARAMS, overrides, str(run_dir))
    return RunDir(run_dir), load_config(PARAMS, overrides)


def test_features_are_the_cut_and_the_saved_head_reproduces_the_full_model(imagenet_run, fake_root):
    run, config = imagenet_run
    with h5py.File(run.path("features", "train")) as handle:
        assert handle["features"].shape == (2, 12, 768)
    with h5py.File(run.path("features", "test")) as handle:
        cached, index = handle["features"][0], handle["index"][...]
    backbone = load_backbone("deit3_base", pretrained=False, image_size=32)
    images = FolderImages(imagenet_split(fake_root / "imagenet", "val"), index, "eval", image_size=32)
    batch = torch.stack([images[i][0] for i in range(len(images))]).float().div(255)
    with torch.no_grad():
        np.testing.assert_allclose(cached, backbone(batch).numpy(), atol=1e-5)
        head = HeadEnsemble.load(run.path("pretrained_head"))
        full = backbone.classify(batch)
        assert (head(torch.from_numpy(cached))[0] - full).abs().max() <= 1e-4


def test_tables_cover_imagenet_a_r_row_zero_and_the_published_numbers(imagenet_run):
    run, config = imagenet_run
    ood_gen = pd.read_csv(run.path("ood_gen"))
    assert {"test", "C-1", "C-5", "imagenet_a", "imagenet_r"} <= set(ood_gen.columns)
    assert list(dict.fromkeys(ood_gen["model"])) == ["pretrained_head", "ood_gen", "ood_det_sem"]
    ood_det = pd.read_csv(run.path("ood_det"))
    assert set(ood_det["ood_set"]) == {"C-1", "C-5", "inaturalist", "openimage_o"}
    row_zero = ood_det[ood_det["model"] == "pretrained_head"]
    assert "bma" in set(row_zero["score"]) and "pds" not in set(row_zero["score"])  # one member: no disagreement
    comparison = pd.read_csv(run.path("table_csv", "published_comparison"))
    assert set(comparison["run"]) == {"ood_gen", "ood_det_sem"}
    published = published_results()
    expected = published[published["run"].isin(["ood_gen", "ood_det_sem"])]
    assert len(comparison) == len(expected)
    merged = comparison.merge(expected, on=["table", "run", "metric", "split"])
    np.testing.assert_allclose(merged["published"], merged["value"])
    has_ours = comparison.dropna(subset=["ours"])
    np.testing.assert_allclose(has_ours["difference"], has_ours["ours"] - has_ours["published"])
    table1 = run.path("table_markdown", "table1_ood_generalisation").read_text()
    assert "Protocol: **faithful**" in table1 and "IN-A" in table1


def test_second_run_skips_every_stage_and_the_run_holds_the_declared_files(imagenet_run, fake_root, capsys):
    run, config = imagenet_run
    overrides = {"data": {"root": str(fake_root)}, **SMALLER}
    runner.run_study(PARAMS, overrides=overrides, run_dir=str(run.root), report=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert lines == [f"[{stage}] skipped: up to date" for stage in STAGE_NAMES]
    found = {path.relative_to(run.root).as_posix() for path in run.root.rglob("*") if path.is_file()}
    # with the backbone's own head, stage 01's extra artefact
    assert found == declared_files(config)
