"""End to end: the five notebooks on params/smoke.yaml with papermill, then the report (about a minute)."""

import json

import h5py
import nbformat
import pandas as pd
import pytest

from sedlib import run as runner
from sedlib.config import PROJECT_ROOT, load_config
from sedlib.rundir import RunDir
from sedlib.tables import AGGREGATIONS


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), engine="pandoc")
    return RunDir(run_dir)


def test_every_stage_wrote_its_results(smoke_run):
    config = load_config("params/smoke.yaml")
    for stage in runner.STAGES:
        notebook = nbformat.read(smoke_run.notebooks / f"{stage.name}.ipynb", as_version=4)
        assert notebook.metadata["papermill"]["exception"] is None
        parameters = notebook.metadata["papermill"]["parameters"]
        assert parameters["params_file"] == "params/smoke.yaml"
    with h5py.File(smoke_run.features / "train.h5") as handle:
        assert handle["features"].shape == (2, 300, 1280)
    ood_gen = pd.read_csv(smoke_run.results / "ood_gen.csv")
    assert set(ood_gen["aggregation"]) == set(AGGREGATIONS)
    assert set(ood_gen["model"]) == set(config.models)
    assert ood_gen[["test", "C-1", "C-5"]].apply(lambda column: column.between(0, 1)).all().all()
    ood_det = pd.read_csv(smoke_run.results / "ood_det.csv")
    assert set(ood_det["ood_set"]) == {"C-1", "C-5", "animal_mnist", "digits"}
    assert ood_det["auroc"].between(0, 1).all()
    assert {"mahalanobis", "relative_mahalanobis", "knn", "vim", "gen"} <= set(ood_det["score"])
    assert set(ood_det.loc[ood_det["score"] == "knn", "model"]) == {"backbone_features"}
    assert set(ood_det.loc[ood_det["score"] == "vim", "model"]) == set(config.models)
    log = pd.read_csv(smoke_run.log_path("sed_a2d"))
    assert len(log) == config.models["sed_a2d"].train.epochs and log["repulsion"].iloc[-1] > 0
    summary = (smoke_run.results / "summary.md").read_text()
    assert "SED-A2D vs Deep ensemble" in summary


def test_report_holds_the_tables_and_figures(smoke_run):
    html = (smoke_run.report / "index.html").read_text()
    assert "<table" in html and "data:image/png;base64" in html
    table1 = pd.read_csv(smoke_run.tables / "table1_ood_generalisation.csv")
    first_value = f"{table1.iloc[0]['Test']:.1f}"
    assert first_value in html  # a number computed by 03 reached the report through 05 and the embed
    assert (smoke_run.report / "index.pdf").read_bytes().startswith(b"%PDF")
    typst = (smoke_run.report / "index.typ").read_text()
    assert "table(" in typst and "Ensemble (mean logits)" in typst
    markdown = (smoke_run.report / "index.md").read_text()
    assert "PosixPath" not in markdown and str(smoke_run.root) not in markdown and str(PROJECT_ROOT) not in markdown


def test_second_run_skips_every_stage(smoke_run, capsys):
    runner.run_study("params/smoke.yaml", run_dir=str(smoke_run.root), report=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert lines == [f"[{stage.name}] skipped: inputs unchanged" for stage in runner.STAGES]


def test_truncated_feature_file_is_refused_with_advice(smoke_run, tmp_path):
    path = smoke_run.features / "digits.h5"
    backup = path.read_bytes()
    path.write_bytes(backup[: len(backup) // 2])
    try:
        with pytest.raises(RuntimeError, match=r"\[01_cache\] failed"):
            runner.run_study("params/smoke.yaml", stages=["01_cache"], run_dir=str(smoke_run.root), report=False)
        executed = nbformat.read(smoke_run.notebooks / "01_cache.ipynb", as_version=4)
        traceback = json.dumps([cell.get("outputs", []) for cell in executed.cells])
        assert "CorruptFeaturesError" in traceback and "digits.h5" in traceback and "rebuild" in traceback
    finally:
        path.write_bytes(backup)
