"""Run a whole study: execute the five notebooks with papermill, then render the report.

::

    python -m sedlib.run params/default.yaml            # every stage, then the report
    python -m sedlib.run params/default.yaml --stages 03_eval_ood_gen 04_eval_ood_det
    python -m sedlib.run params/smoke.yaml --force       # rerun even unchanged stages

Each notebook (`notebooks/NN_name.py`, the jupytext source of truth) is executed with the parameters
``params_file``, ``run_dir`` and ``overrides`` into ``runs/<run>/notebooks/NN_name.ipynb``. A stage
is skipped when its inputs are unchanged since it last succeeded: the notebook's source, the resolved
params, the `sedlib` source and the content hashes of the files the earlier stages wrote. What a
stage wrote is recorded with content hashes in ``runs/<run>/stages/NN_name.json``; a recorded file
that is missing or changed makes the stage run again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sedlib import progress, source_hash
from sedlib.config import PROJECT_ROOT, RunConfig, load_config
from sedlib.rundir import RunDir


@dataclass(frozen=True)
class Stage:
    """A notebook, the params sections it reads and the files (globs relative to the run directory) it writes."""

    name: str
    sections: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def source(self) -> Path:
        return PROJECT_ROOT / "notebooks" / f"{self.name}.py"


STAGES = (
    Stage(
        "01_cache",
        ("protocol", "data", "cache"),
        ("features/*.h5", "features/pretrained_head.*", "results/splits.csv", "results/figures/examples.png"),
    ),
    Stage("02_train_a2d", ("seeds", "head", "train", "models"), ("models/*", "results/figures/training_curves.png")),
    Stage(
        "03_eval_ood_gen",
        ("protocol", "eval"),
        ("results/ood_gen*.csv", "results/calibration.csv", "results/figures/corruptions.png"),
    ),
    Stage(
        "04_eval_ood_det",
        ("protocol", "eval"),
        ("results/ood_det*.csv", "results/diversity.csv", "results/figures/ood_det_*.png"),
    ),
    Stage("05_tables", ("description",), ("results/tables/*", "results/figures/summary.png", "results/summary.md")),
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_hash() -> str:
    """Hash of the `sedlib` sources: a change to the library reruns the stages that use it."""
    return source_hash(PROJECT_ROOT, sorted((PROJECT_ROOT / "sedlib").rglob("*.py")))


def stage_outputs(run: RunDir, stage: Stage) -> dict[str, str]:
    """Relative path -> sha256 of every file a stage wrote (its globs, plus the executed notebook)."""
    files = {path for pattern in stage.outputs for path in run.root.glob(pattern) if path.is_file()}
    files.add(run.notebooks / f"{stage.name}.ipynb")
    return {path.relative_to(run.root).as_posix(): _sha256(path) for path in sorted(files) if path.is_file()}


def _record_path(run: RunDir, stage: Stage) -> Path:
    return run.root / "stages" / f"{stage.name}.json"


def input_key(config: RunConfig, stage: Stage, upstream: list[dict[str, str]]) -> str:
    """Hash of everything a stage's results depend on.

    The params enter through the sections the stage reads (plus ``device`` and ``run_name``); what it
    reads of earlier sections reaches it through the upstream stages' output hashes.
    """
    resolved = config.to_dict()
    payload = {
        "notebook": hashlib.sha256(stage.source.read_bytes()).hexdigest(),
        "params": {key: resolved[key] for key in ("run_name", "device", *stage.sections)},
        "library": library_hash(),
        "upstream": upstream,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def up_to_date(run: RunDir, stage: Stage, key: str) -> tuple[bool, str]:
    """Whether a stage can be skipped, and why (or why not)."""
    path = _record_path(run, stage)
    if not path.is_file():
        return False, "never run"
    record = json.loads(path.read_text())
    if record.get("input_key") != key:
        return False, "inputs changed"
    current = stage_outputs(run, stage)
    for name, digest in record.get("outputs", {}).items():
        if current.get(name) != digest:
            return False, f"{name} is missing or changed"
    return True, "inputs unchanged"


def execute_stage(
    stage: Stage, config: RunConfig, run: RunDir, params_file: str, overrides: dict, verbose: bool
) -> Path:
    """Execute one notebook with papermill into the run directory; returns the executed notebook."""
    import jupytext
    import papermill

    run.notebooks.mkdir(parents=True, exist_ok=True)
    output = run.notebooks / f"{stage.name}.ipynb"
    os.environ[progress.ENVIRONMENT_VARIABLE] = "text"  # the kernel inherits it: text bars, kept in the notebook
    notebook = jupytext.read(stage.source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    papermill.execute_notebook(
        notebook,
        str(output),
        parameters={"params_file": params_file, "run_dir": str(run.root), "overrides": overrides},
        cwd=str(PROJECT_ROOT),
        kernel_name="python3",
        progress_bar=not verbose,
        log_output=verbose,
    )
    return output


def run_study(
    params_file: str,
    stages: list[str] | None = None,
    overrides: dict | None = None,
    run_dir: str | None = None,
    force: bool = False,
    report: bool = True,
    engine: str = "auto",
    verbose: bool = False,
) -> RunDir:
    """Execute the study's stages in order (skipping unchanged ones) and render the report.

    The run directory's lock (`RunDir.lock`) is held throughout: a second run of the same directory
    is refused, and the notebooks executed here work under this lock.

    Args:
        params_file: the run's YAML file (relative to the project root or absolute).
        stages: names of the stages to consider (all by default); the others are neither run nor checked.
        overrides: nested mapping merged over the params file (passed on to every notebook).
        run_dir: the run directory (``runs/<run_name>`` by default).
        force: run the chosen stages even when their inputs are unchanged.
        report: render ``report/index.html`` and ``index.pdf`` after the stages.
        engine: report engine, ``auto``, ``quarto`` or ``pandoc`` (see `sedlib.report`).
        verbose: stream the notebooks' outputs to the terminal.

    Returns:
        The `RunDir`.
    """
    overrides = overrides or {}
    config = load_config(params_file, overrides)
    unknown = sorted(set(stages or []) - {stage.name for stage in STAGES})
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; the stages are {[stage.name for stage in STAGES]}")
    with RunDir.locate(config, run_dir).lock(f"python -m sedlib.run {params_file}"):
        run = RunDir.open(config, run_dir)
        _run_stages(config, run, params_file, stages, overrides, force, verbose)
        if report:
            from sedlib.report import render_report

            started = time.perf_counter()
            outputs = render_report(run.root, PROJECT_ROOT, engine=engine)
            print(f"[report] {', '.join(str(p) for p in outputs.values())} ({time.perf_counter() - started:.0f} s)")
    return run


def _run_stages(
    config: RunConfig,
    run: RunDir,
    params_file: str,
    stages: list[str] | None,
    overrides: dict,
    force: bool,
    verbose: bool,
) -> None:
    """The stage loop of `run_study`, under the run directory's lock."""
    upstream: list[dict[str, str]] = []
    for stage in STAGES:
        record_path = _record_path(run, stage)
        chosen = stages is None or stage.name in stages
        key = input_key(config, stage, upstream)
        if chosen:
            skip, reason = up_to_date(run, stage, key)
            if skip and not force:
                print(f"[{stage.name}] skipped: {reason}", flush=True)
            else:
                print(f"[{stage.name}] running ({'forced' if force and skip else reason}) ...", flush=True)
                started = time.perf_counter()
                record_path.unlink(missing_ok=True)
                try:
                    execute_stage(stage, config, run, str(params_file), overrides, verbose)
                except Exception as error:
                    executed = run.notebooks / f"{stage.name}.ipynb"
                    raise RuntimeError(
                        f"[{stage.name}] failed: {type(error).__name__}: {str(error).strip().splitlines()[-1]}\n"
                        f"The executed notebook, with the error in place, is {executed}"
                    ) from error
                record_path.parent.mkdir(exist_ok=True)
                record = {"input_key": key, "outputs": stage_outputs(run, stage)}
                record_path.write_text(json.dumps(record, indent=2) + "\n")
                print(f"[{stage.name}] done in {time.perf_counter() - started:.0f} s", flush=True)
        if record_path.is_file():
            upstream.append(json.loads(record_path.read_text())["outputs"])
        else:
            upstream.append({})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sedlib.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("params_file", help="e.g. params/default.yaml")
    parser.add_argument("--stages", nargs="+", metavar="STAGE", help=f"among {[s.name for s in STAGES]}")
    parser.add_argument("--run-dir", help="run directory (default runs/<run_name>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params value, e.g. --set train.epochs=3 (YAML value)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="rerun the chosen stages even if unchanged")
    parser.add_argument("--no-report", action="store_true", help="do not render the report")
    parser.add_argument("--engine", default="auto", choices=["auto", "quarto", "pandoc"])
    parser.add_argument("--verbose", action="store_true", help="stream the notebooks' outputs")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
        run_study(
            args.params_file, args.stages, overrides, args.run_dir, args.force, not args.no_report, args.engine,
            args.verbose,
        )  # fmt: skip
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def parse_overrides(assignments: list[str]) -> dict:
    """``["train.epochs=3", "models.sed_a2d.kappa=2"]`` -> nested mapping (values parsed as YAML)."""
    import yaml

    overrides: dict = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {assignment!r}")
        *parents, leaf = key.split(".")
        node = overrides
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(value)
    return overrides


if __name__ == "__main__":
    sys.exit(main())
