import pytest

from sedlib.config import load_config
from sedlib.report.render import report_files
from sedlib.rundir import declaration as stages
from sedlib.rundir.declaration import (
    ARTEFACTS,
    STAGES,
    artefact_paths,
    declared_files,
    declared_outputs,
    declared_reads,
    owner,
)


def test_every_kind_is_written_by_one_stage_and_read_only_after_it():
    per_stage_kinds = {"figure", "notebook"}
    writers = {}
    for position, stage in enumerate(STAGES):
        for kind in stage.writes:
            assert kind in ARTEFACTS and kind not in per_stage_kinds
            assert kind not in writers, f"{kind} is written by {writers[kind]} and {stage.name}"
            writers[kind] = position
        for kind in stage.reads:
            assert writers[kind] < position, f"{stage.name} reads {kind} before it is written"
    assert set(writers) | per_stage_kinds == set(ARTEFACTS)


def test_declared_paths_are_distinct_and_owned_by_their_stage():
    config = load_config("params/smoke.yaml")
    seen = set()
    for stage in STAGES:
        outputs = declared_outputs(config, stage.name)
        assert len(outputs) == len(set(outputs))
        for path in outputs:
            assert owner(path) == stage.name, path
            assert path not in seen
            seen.add(path)


def test_the_smoke_run_declares_its_replicas_splits_and_hardness_weights():
    config = load_config("params/smoke.yaml")
    replicas = [run.name for run in config.model_runs()]
    assert artefact_paths(config, "model") == [f"models/{name}.safetensors" for name in replicas]
    # hardness weights only for the models trained with them: not the deep ensembles
    assert artefact_paths(config, "model_alpha") == [
        "models/sed_a2d_alpha.npz", "models/sed_a2d-lam0.9_alpha.npz", "models/sed_a2d-M2_alpha.npz",
    ]  # fmt: skip
    assert artefact_paths(config, "pretrained_head") == []  # EfficientNet-Lite0 has no head of the SED form
    assert "features/fog-5.h5" in artefact_paths(config, "features")
    assert artefact_paths(config, "figure", "04_eval_ood_det") == [
        "results/figures/ood_det_roc.png",
        "results/figures/ood_det_histograms.png",
    ]
    assert "features/train.h5" in declared_reads(config, "02_train_a2d")
    assert "results/evaluations.h5" in declared_reads(config, "04_eval_ood_det")
    results = ["results/ood_gen.csv", "results/ood_det.csv", "results/diversity.csv"]
    # the key findings' intervals read the per-sample evaluations and detector scores, and each row's test
    # image from the feature files; no training log (timing is no claim)
    bootstrap = ["results/evaluations.h5", "results/detector_scores.npz", "features/fog-1.h5", "features/test.h5"]
    assert set(results + bootstrap) <= set(declared_reads(config, "05_tables"))
    assert "models/sed_a2d-M2_log.csv" not in declared_reads(config, "05_tables")


def test_the_paper_run_declares_the_pretrained_head():
    config = load_config("params/smoke_imagenet.yaml")
    assert artefact_paths(config, "pretrained_head") == ["features/pretrained_head.safetensors"]
    assert "features/pretrained_head.safetensors" in declared_reads(config, "03_eval_ood_gen")


def test_declared_files_hold_the_bookkeeping_and_the_report_declares_its_own():
    files = declared_files(load_config("params/smoke.yaml"))
    assert {"run.json", "params.yaml", "artefacts.json", ".lock", "stages/05_tables.json"} <= files
    assert not files & {"report/index.html", "index.qmd", "_quarto.yml"}
    report = set(report_files())
    assert {"report/index.html", "report/index.pdf", "index.qmd", "_quarto.yml"} <= report
    assert "report/figures/fig-summary-1.png" in report


def test_owner_prefers_the_most_specific_template():
    assert owner("models/sed_a2d_train.json") == "02_train_a2d"
    assert owner("models/sed_a2d.json") == "02_train_a2d"
    assert owner("results/figures/examples.png") == "01_cache"
    assert owner("results/figures/unknown.png") is None
    assert owner("notebooks/03_eval_ood_gen.ipynb") == "03_eval_ood_gen"
    assert owner("notebooks/03_eval_ood_gen.failed.ipynb") is None


def test_unknown_names_are_errors():
    with pytest.raises(KeyError, match="no stage '06_extra'"):
        stages.stage("06_extra")
    with pytest.raises(KeyError, match="no artefact kind 'modle'"):
        artefact_paths(load_config("params/smoke.yaml"), "modle")
