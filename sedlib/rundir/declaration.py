"""The study's stages and every file each one writes and reads: the one declaration of a run directory.

A study is five notebooks run in order, then the report. Each stage (`Stage`) names the params
sections it reads, the artefacts (`ARTEFACTS`) it writes and the artefacts of earlier stages it
reads. Everything else follows from this declaration:

- where a file lives: `sedlib.rundir.directory.RunDir.path` (``run.path("model", "sed_a2d")``); notebooks and
  library functions take their paths from there and type no file name;
- which files one params file's run directory holds: `declared_files` (a test runs the smoke study
  and checks that the run directory holds exactly these);
- when a stage must run again (`sedlib.run`): one of its declared outputs is missing or changed, or
  what it reads (its params sections, the notebook, the library, the content hashes of the files
  it reads) changed;
- what a later stage may trust: every artefact's content hash is recorded when it is written and
  checked when it is read (`sedlib.rundir.directory.RunDir.verified`).

Example:
    >>> from sedlib.config import load_config
    >>> config = load_config("params/smoke.yaml")
    >>> sorted(declared_outputs(config, "03_eval_ood_gen"))[:3]
    ['notebooks/03_eval_ood_gen.ipynb', 'results/calibration.csv', 'results/evaluations.h5']
    >>> owner("models/sed_a2d_train.json")
    '02_train_a2d'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from sedlib.config import RunConfig, backbone_head_width
from sedlib.data.splits import plan_splits


@dataclass(frozen=True)
class Artefact:
    """One kind of file a stage writes.

    Attributes:
        template: path relative to the run directory; ``{name}`` stands for each name of ``each``.
        what: what the file holds, in a few words (for messages and the docs).
        each: what ``{name}`` runs over: ``split`` (the cached splits), ``replica`` (every trained
            model and seed), ``hardness_replica`` (those trained with hardness weights), ``table``
            (`TABLES`), ``figure`` (the stage's `Stage.figures`); empty for one file.
        only_with_pretrained_head: written only for a backbone with a pretrained head of the SED
            head's form (DeiT-3-B).
        self_checked: the file verifies itself on every read (the HDF5 feature files: a checksum per
            chunk), so the runner takes its recorded hash while its size and modification time are
            unchanged instead of reading gigabytes again.
    """

    template: str
    what: str
    each: str = ""
    only_with_pretrained_head: bool = False
    self_checked: bool = False


ARTEFACTS: dict[str, Artefact] = {
    "features": Artefact("features/{name}.h5", "the backbone features of one split", each="split", self_checked=True),
    "pretrained_head": Artefact(
        "features/pretrained_head.safetensors", "the backbone's own head", only_with_pretrained_head=True
    ),
    "pretrained_head_config": Artefact(
        "features/pretrained_head.json", "the shape of the backbone's own head", only_with_pretrained_head=True
    ),
    "splits": Artefact("results/splits.csv", "what was cached, per split"),
    "model": Artefact("models/{name}.safetensors", "a trained ensemble's weights", each="replica"),
    "model_config": Artefact("models/{name}.json", "a trained ensemble's shape", each="replica"),
    "model_log": Artefact("models/{name}_log.csv", "a trained ensemble's per-epoch log", each="replica"),
    "model_record": Artefact("models/{name}_train.json", "what a trained ensemble was trained from", each="replica"),
    "model_alpha": Artefact(
        "models/{name}_alpha.npz", "the hardness weights of every training row and epoch", each="hardness_replica"
    ),
    "models_overview": Artefact("models/overview.csv", "the trained ensembles at a glance"),
    "step_cost": Artefact("results/step_cost.csv", "the measured time of a training step at two ensemble sizes"),
    "alpha_class_shares": Artefact("results/alpha_class_shares.csv", "the classes among the largest hardness weights"),
    "evaluations": Artefact("results/evaluations.h5", "per-sample predictions and scores of every model and split"),
    "ood_gen": Artefact("results/ood_gen.csv", "accuracy per model, aggregation and split"),
    "ood_gen_per_corruption": Artefact("results/ood_gen_per_corruption.csv", "accuracy per corruption"),
    "calibration": Artefact("results/calibration.csv", "ECE, NLL and Brier score"),
    "ood_det": Artefact("results/ood_det.csv", "detection metrics of every score and detector"),
    "diversity": Artefact("results/diversity.csv", "mean #unique and PDS per split"),
    "detector_scores": Artefact(
        "results/detector_scores.npz", "per-sample scores of the post-hoc detectors on the test and OOD splits"
    ),
    "table_markdown": Artefact("results/tables/{name}.md", "a table of the report", each="table"),
    "table_csv": Artefact("results/tables/{name}.csv", "a table of the report", each="table"),
    "method_comparison": Artefact("results/method_comparison.md", "which method wins where"),
    "summary": Artefact("results/summary.md", "the generated summary"),
    "evidence": Artefact("results/evidence.csv", "the differences each claim rests on, with intervals and verdicts"),
    "key_findings": Artefact("results/key_findings.md", "the generated key findings"),
    "abstract": Artefact("results/abstract.md", "the generated abstract"),
    "figure": Artefact("results/figures/{name}.png", "a figure", each="figure"),
    "notebook": Artefact("notebooks/{name}.ipynb", "the executed notebook", each="stage"),
}
"""Every kind of file a stage writes, by the name code uses for it (`sedlib.rundir.directory.RunDir.path`)."""

TABLES = (
    "table1_ood_generalisation",
    "table3_ood_detection",
    "ood_detection_auroc_all_scores",
    "ood_detection_fpr95_all_scores",
    "ood_detection_aupr_out_all_scores",
    "published_comparison",
    "sweeps",
)
"""The tables stage 05 writes under ``results/tables/``, each as Markdown and CSV."""

MODEL_FILES = ("model", "model_config", "model_record")
"""The files of one trained replica that later stages read (its log and hardness weights are stage 02's own)."""
FEATURE_FILES = ("features", "pretrained_head", "pretrained_head_config")


@dataclass(frozen=True)
class Stage:
    """One notebook of the study.

    Attributes:
        name: the notebook, ``notebooks/<name>.py``.
        title: what it does, in a few words.
        sections: the params sections whose values it reads directly (``all`` for every one).
        writes: the kinds of `ARTEFACTS` it writes (its executed notebook besides).
        figures: the names of the figures it draws (``results/figures/<name>.png``).
        reads: the kinds of `ARTEFACTS` of earlier stages it reads.
    """

    name: str
    title: str
    sections: tuple[str, ...]
    writes: tuple[str, ...]
    figures: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()


STAGES = (
    Stage(
        "01_cache",
        "caching the backbone's features",
        ("protocol", "data", "cache"),
        ("features", "pretrained_head", "pretrained_head_config", "splits"),
        figures=("examples",),
    ),
    Stage(
        "02_train_a2d",
        "training the ensembles",
        ("data", "seeds", "head", "train", "models", "sweeps"),
        (*MODEL_FILES, "model_log", "model_alpha", "models_overview", "alpha_class_shares", "step_cost"),
        figures=("training_curves", "alpha_distribution", "alpha_gallery"),
        reads=FEATURE_FILES,
    ),
    Stage(
        "03_eval_ood_gen",
        "evaluating every split",
        ("protocol", "eval"),
        ("evaluations", "ood_gen", "ood_gen_per_corruption", "calibration"),
        figures=("corruptions",),
        reads=(*FEATURE_FILES, *MODEL_FILES),
    ),
    Stage(
        "04_eval_ood_det",
        "OOD detection",
        ("protocol", "eval"),
        ("ood_det", "diversity", "detector_scores"),
        figures=("ood_det_roc", "ood_det_histograms"),
        reads=(*FEATURE_FILES, *MODEL_FILES, "evaluations"),
    ),
    Stage(
        "05_tables",
        "tables and summary",
        ("all",),
        ("table_markdown", "table_csv", "method_comparison", "summary", "evidence", "key_findings", "abstract"),
        figures=("sweeps", "summary"),
        reads=(
            *FEATURE_FILES,
            *MODEL_FILES,
            "evaluations",
            "ood_gen",
            "ood_det",
            "diversity",
            "detector_scores",
        ),
    ),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
PROVENANCE = "provenance.json"
"""What each stage ran with and how long it took (`sedlib.rundir.provenance`), written by the runner."""

BOOKKEEPING = ("run.json", "params.yaml", "artefacts.json", ".lock", PROVENANCE)
"""The run directory's own files (`sedlib.rundir.directory`), besides each stage's record ``stages/<stage>.json``."""


def stage(name: str) -> Stage:
    """The stage called ``name``; a `KeyError` lists the stages."""
    for candidate in STAGES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no stage {name!r}; the stages are {list(STAGE_NAMES)}")


def fixed_names(each: str) -> list[str] | None:
    """The names an artefact kind's ``{name}`` may take when they are fixed (tables, figures, stages), else None."""
    if each == "table":
        return list(TABLES)
    if each == "figure":
        return [figure for writer in STAGES for figure in writer.figures]
    if each == "stage":
        return list(STAGE_NAMES)
    return None


def _stage_of_kind(kind: str) -> Stage | None:
    return next((candidate for candidate in STAGES if kind in candidate.writes), None)


def _names(config: RunConfig, kind: str, writer: Stage | None) -> list[str]:
    """The values ``{name}`` takes for an artefact kind in this run."""
    artefact = ARTEFACTS[kind]
    if artefact.only_with_pretrained_head and not has_pretrained_head(config):
        return []
    if artefact.each == "split":
        return [plan.name for plan in plan_splits(config)]
    if artefact.each == "replica":
        return [replica.name for replica in config.model_runs()]
    if artefact.each == "hardness_replica":
        return [replica.name for replica in config.model_runs() if replica.spec.train.records_alpha()]
    if artefact.each == "table":
        return list(TABLES)
    if artefact.each == "figure":
        return list(writer.figures)
    if artefact.each == "stage":
        return [writer.name]
    return [""]


def has_pretrained_head(config: RunConfig) -> bool:
    """Whether stage 01 saves the backbone's own head (a backbone whose head has the SED head's form)."""
    return backbone_head_width(config.cache.backbone) is not None


def artefact_paths(config: RunConfig, kind: str, stage_name: str | None = None) -> list[str]:
    """The relative paths of one kind of artefact in this run (e.g. every replica's ``model``).

    Args:
        config: the run.
        kind: a key of `ARTEFACTS`.
        stage_name: the writing stage, for the kinds every stage has (``figure``, ``notebook``);
            every stage's when None.
    """
    if kind not in ARTEFACTS:
        raise KeyError(f"no artefact kind {kind!r}; the kinds are {sorted(ARTEFACTS)}")
    template = ARTEFACTS[kind].template
    if ARTEFACTS[kind].each in ("figure", "stage"):
        writers = [stage(stage_name)] if stage_name else list(STAGES)
        return [template.format(name=name) for writer in writers for name in _names(config, kind, writer)]
    return [template.format(name=name) for name in _names(config, kind, _stage_of_kind(kind))]


def declared_outputs(config: RunConfig, stage_name: str) -> list[str]:
    """Every file a stage writes in this run: its artefacts, its figures and its executed notebook."""
    writer = stage(stage_name)
    paths = [path for kind in writer.writes for path in artefact_paths(config, kind)]
    paths += artefact_paths(config, "figure", stage_name) + artefact_paths(config, "notebook", stage_name)
    return paths


def declared_reads(config: RunConfig, stage_name: str) -> list[str]:
    """Every file of an earlier stage that a stage reads in this run."""
    return [path for kind in stage(stage_name).reads for path in artefact_paths(config, kind)]


def declared_files(config: RunConfig) -> set[str]:
    """Every file the stages leave in the run directory of ``config`` (`sedlib.run.run_study`).

    The report adds its own (`sedlib.report.render.report_files`), declared there so that the stages' code
    (`sedlib.rundir.closure`) does not hold the report's.
    """
    files = set(BOOKKEEPING)
    for writer in STAGES:
        files.update(declared_outputs(config, writer.name))
        files.add(record_path(writer.name))
    return files


def record_path(stage_name: str) -> str:
    """Where the runner records what a stage last ran with and wrote."""
    return f"stages/{stage_name}.json"


@cache
def _patterns() -> list[tuple[re.Pattern, str, str]]:
    """A regular expression per artefact kind and writing stage, most specific first."""
    patterns = []
    for writer in STAGES:
        for kind in (*writer.writes, "figure", "notebook"):
            template = ARTEFACTS[kind].template
            if kind in ("figure", "notebook"):
                name = "|".join(re.escape(n) for n in (writer.figures if kind == "figure" else (writer.name,)))
                name = f"(?:{name})"
            else:
                name = r"[^/]+"
            regex = re.escape(template).replace(re.escape("{name}"), name)
            patterns.append((re.compile(regex + r"\Z"), writer.name, kind, len(template)))
    return [(regex, name, kind) for regex, name, kind, _ in sorted(patterns, key=lambda entry: -entry[3])]


def owner(relative_path: str) -> str | None:
    """The stage that writes a file of the run directory (by its path), or None for another file.

    Example:
        >>> owner("results/figures/summary.png"), owner("features/fog-5.h5"), owner("notes.txt")
        ('05_tables', '01_cache', None)
    """
    return next((name for regex, name, _ in _patterns() if regex.match(relative_path)), None)


def kind_of(relative_path: str) -> str | None:
    """The artefact kind of a file of the run directory (by its path), or None for another file.

    Example:
        >>> kind_of("models/sed_a2d_train.json"), kind_of("features/fog-5.h5")
        ('model_record', 'features')
    """
    return next((kind for regex, _, kind in _patterns() if regex.match(relative_path)), None)
