"""End to end: the five notebooks on params/smoke.yaml with papermill, then the report (about a minute)."""

import h5py
import nbformat
import numpy as np
import pandas as pd
import pytest

from sedlib.config import PROJECT_ROOT, load_config
from sedlib.eval.bootstrap import VERDICTS
from sedlib.report.render import report_files
from sedlib.rundir.declaration import STAGE_NAMES, declared_files, declared_outputs
from sedlib.study.findings import CLAIMS
from sedlib.study.predictions import AGGREGATIONS
from sedlib.study.verdicts import run_verdicts, verdict_differences

pytestmark = pytest.mark.e2e  # runs the notebooks with papermill (make test-fast leaves it out)


def test_every_stage_wrote_its_results(smoke_run):
    config = load_config("params/smoke.yaml")
    for stage in STAGE_NAMES:
        notebook = nbformat.read(smoke_run.path("notebook", stage), as_version=4)
        assert notebook.metadata["papermill"]["exception"] is None
        parameters = notebook.metadata["papermill"]["parameters"]
        assert parameters["params_file"] == "params/smoke.yaml"
        assert notebook.metadata["papermill"]["input_path"] == f"notebooks/{stage}.py"  # not the notebook's JSON
        assert notebook.metadata["papermill"]["output_path"] == str(smoke_run.path("notebook", stage))
    with h5py.File(smoke_run.path("features", "train")) as handle:
        assert handle["features"].shape == (2, 300, 1280)
    ood_gen = pd.read_csv(smoke_run.path("ood_gen"))
    assert set(ood_gen["aggregation"]) == set(AGGREGATIONS)
    assert set(ood_gen["model"]) == set(config.models)
    assert ood_gen[["test", "C-1", "C-5"]].apply(lambda column: column.between(0, 1)).all().all()
    ood_det = pd.read_csv(smoke_run.path("ood_det"))
    assert set(ood_det["ood_set"]) == {"C-1", "C-5", "animal_mnist", "digits"}
    assert ood_det["auroc"].between(0, 1).all()
    assert {"mahalanobis", "relative_mahalanobis", "knn", "vim", "gen"} <= set(ood_det["score"])
    assert set(ood_det.loc[ood_det["score"] == "knn", "model"]) == {"backbone_features"}
    assert set(ood_det.loc[ood_det["score"] == "vim", "model"]) == set(config.models) - set(config.sweep_models)
    log = pd.read_csv(smoke_run.path("model_log", "sed_a2d"))
    assert len(log) == config.models["sed_a2d"].train.epochs and log["repulsion"].iloc[-1] > 0
    summary = smoke_run.path("summary").read_text()
    assert "SED-A2D vs Deep ensemble" in summary


def test_sweeps_hardness_weights_and_the_method_comparison_are_written(smoke_run):
    config = load_config("params/smoke.yaml")
    sweeps = pd.read_csv(smoke_run.path("table_csv", "sweeps"))
    assert list(zip(sweeps["sweep"], sweeps["model"])) == [
        ("lam", "deep_ensemble"), ("lam", "sed_a2d"), ("lam", "sed_a2d-lam0.9"),
        ("num_members", "sed_a2d-M2"), ("num_members", "sed_a2d"),
    ]  # fmt: skip
    ood_gen = pd.read_csv(smoke_run.path("ood_gen"))
    ensemble = ood_gen[ood_gen["aggregation"] == "ensemble"].set_index("model")
    assert sweeps.set_index("model")["test"].to_dict() == pytest.approx(ensemble.loc[sweeps["model"], "test"].to_dict())
    table1 = pd.read_csv(smoke_run.path("table_csv", "table1_ood_generalisation"))
    assert not table1["Method"].str.contains("λ 0.9|M 2").any()  # sweep points stay out of the main tables
    for name in ("sed_a2d", "sed_a2d-lam0.9", "sed_a2d-M2"):
        with np.load(smoke_run.path("model_alpha", name)) as record:
            assert record["alpha"].shape == (config.models[name].train.epochs, config.data.train_rows)
    assert not smoke_run.path("model_alpha", "deep_ensemble").exists()
    assert smoke_run.path("figure", "alpha_gallery").is_file() and smoke_run.path("figure", "sweeps").is_file()
    comparison = smoke_run.path("method_comparison").read_text()
    assert "Which method wins where" in comparison and "digits: best is" in comparison
    diverse = pd.read_csv(smoke_run.path("model_log", "deep_ensemble_diverse"))
    assert diverse["task_loss"].iloc[-1] < diverse["task_loss"].iloc[0]


def test_report_holds_the_tables_and_figures(smoke_run):
    html = (smoke_run.report / "index.html").read_text()
    assert "<table" in html and "data:image/png;base64" in html
    table1 = pd.read_csv(smoke_run.path("table_csv", "table1_ood_generalisation"))
    first_value = f"{table1.iloc[0]['Test']:.1f}"
    assert first_value in html  # a number computed by 03 reached the report through 05 and the embed
    assert (smoke_run.report / "index.pdf").read_bytes().startswith(b"%PDF")
    assert "Which method wins where" in html and "What SED treats as OOD-like" in html
    typst = (smoke_run.report / "index.typ").read_text()
    assert "table(" in typst and "Ensemble (mean logits)" in typst
    markdown = (smoke_run.report / "index.md").read_text()
    assert "PosixPath" not in markdown and str(smoke_run.root) not in markdown and str(PROJECT_ROOT) not in markdown


def test_the_report_opens_with_the_key_findings(smoke_run):
    evidence = pd.read_csv(smoke_run.path("evidence"))
    # every claim: smoke.yaml has post-hoc detectors
    assert set(evidence["claim"]) == set(CLAIMS)
    assert set(evidence["verdict"]) <= set(VERDICTS) and (evidence["low"] <= evidence["high"]).all()
    assert evidence["improvement"].between(0, 1).all() and "holds on" in smoke_run.path("key_findings").read_text()
    html = (smoke_run.report / "index.html").read_text()
    assert html.index("Key findings") < html.index("Introduction") and "@tbl-" not in html
    typst = (smoke_run.report / "index.typ").read_text()
    assert typst.index("Key findings") < typst.index("#outline(") < typst.index("Introduction")
    assert "C-1" in smoke_run.path("key_findings").read_text()


def test_the_run_directory_holds_exactly_the_declared_files(smoke_run):
    found = {path.relative_to(smoke_run.root).as_posix() for path in smoke_run.root.rglob("*") if path.is_file()}
    declared = declared_files(load_config("params/smoke.yaml")) | set(report_files())
    assert found - declared == set(), "written but not declared in sedlib.rundir.declaration"
    assert declared - found == set(), "declared in sedlib.stages but not written"


def test_every_artefact_verifies_against_its_recorded_hash(smoke_run):
    config = load_config("params/smoke.yaml")
    recorded = {path for stage in STAGE_NAMES for path in declared_outputs(config, stage)}
    for relative in sorted(recorded):
        assert smoke_run.problem(relative) is None, relative


def test_the_committed_smoke_verdicts_are_what_the_code_produces(smoke_run):
    # after a change that moves a verdict on purpose, rewrite them (module docstring of sedlib.study.verdicts):
    # python -m sedlib.study.verdicts params/smoke.yaml --write results/smoke/verdicts.csv
    committed = pd.read_csv(PROJECT_ROOT / "results" / "smoke" / "verdicts.csv")
    assert verdict_differences(run_verdicts(smoke_run), committed) == []
