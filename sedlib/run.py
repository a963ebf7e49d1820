"""Run a whole study: execute the five notebooks with papermill, then render the report.

::

    python -m sedlib.run params/default.yaml            # every stage that needs it, then the report
    python -m sedlib.run params/default.yaml --stages 03_eval_ood_gen 04_eval_ood_det
    python -m sedlib.run params/smoke.yaml --force       # rerun even unchanged stages
    python -m sedlib.run params/smoke.yaml --set train.lr=1e-3 --set eval.batch_size=1024

The params file (and every ``--set``) is validated completely before any stage starts. Each
notebook (`notebooks/NN_name.py`, the jupytext source of truth) is then executed with the parameters
``params_file``, ``run_dir`` and ``overrides`` into ``runs/<run>/notebooks/NN_name.ipynb``.

A stage runs again only when it needs to (`why_run`), and the line it prints says why: it never ran,
what it reads changed (its own code: the notebook and the `sedlib` modules it imports, transitively,
`sedlib.rundir.closure`, named file by file; its params sections; or the content of a file it reads,
`sedlib.rundir.declaration.declared_reads`), or one of the files it writes
(`sedlib.rundir.declaration.declared_outputs`) is missing or changed since it wrote them. What a stage ran with
and wrote is recorded in ``runs/<run>/stages/NN_name.json`` when it completes.

A stage that fails keeps everything complete from before: its executed notebook goes to
``notebooks/NN_name.failed.ipynb``, the last lines in the terminal say which stage failed, why, and
what to do, and running the same command again continues where it stopped. Ctrl-C and SIGTERM stop
the notebook's kernel with the runner; after ``kill -9`` the next run stops it
(`sedlib.rundir.lock.stop_leftovers`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import logging
import os
import resource
import signal
import sys
import time
from pathlib import Path

from sedlib import progress
from sedlib.config import (
    PROJECT_ROOT,
    ConfigError,
    RunConfig,
    format_overrides,
    from_working_directory,
    load_config,
    parse_overrides,
    project_relative,
    resolve_path,
)
from sedlib.data.splits import check_sources
from sedlib.errors import (
    MissingFileError,
    StageFailedError,
    UserError,
    almost_full,
    is_disk_full,
    mount_point,
    user_error_class,
)
from sedlib.report.publish import publish
from sedlib.report.render import render_report
from sedlib.rundir.closure import changed_files, code_fingerprint, import_closure
from sedlib.rundir.declaration import STAGE_NAMES, STAGES, Stage, declared_outputs, declared_reads, owner
from sedlib.rundir.directory import RunDir
from sedlib.rundir.provenance import record_stage


def notebook_source(stage_name: str) -> Path:
    """The jupytext source of a stage's notebook."""
    return PROJECT_ROOT / "notebooks" / f"{stage_name}.py"


def stage_code(stage_name: str) -> dict[str, str]:
    """A stage's code: its notebook and the `sedlib` modules it imports, transitively (`sedlib.rundir.closure`).

    Returns:
        ``{file: sha256}``, e.g. ``{"notebooks/01_cache.py": ..., "sedlib/features/store.py": ..., ...}``.
    """
    return code_fingerprint(import_closure(notebook_source(stage_name)))


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class _Hashes:
    """Content hashes of the run directory's files, each computed once per run of the runner."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.known: dict[str, str | None] = {}

    def __call__(self, relative: str) -> str | None:
        if relative not in self.known:
            self.known[relative] = self.run.content_hash(relative)
        return self.known[relative]

    def forget(self, relatives) -> None:
        for relative in relatives:
            self.known.pop(relative, None)


def stage_inputs(config: RunConfig, step: Stage, hashes: _Hashes) -> dict:
    """Everything a stage's results depend on, in parts that `why_run` can name.

    The stage's own code enters file by file (`stage_code`); the params through the sections the stage
    reads (plus ``device`` and ``run_name``); what it reads of earlier stages through the content hashes
    of the files it reads.
    """
    resolved = config.to_dict()
    sections = list(resolved) if step.sections == ("all",) else ["run_name", "device", *step.sections]
    return {
        "code": stage_code(step.name),
        "params": {section: _digest(resolved[section]) for section in sections},
        "files": {relative: hashes(relative) for relative in declared_reads(config, step.name)},
    }


def why_run(run: RunDir, step: Stage, inputs: dict, outputs: list[str], hashes: _Hashes) -> str | None:
    """Why a stage has to run, in a few words, or None when its recorded run still holds.

    Args:
        run: the run directory.
        step: the stage.
        inputs: `stage_inputs` now.
        outputs: its declared outputs now (`sedlib.rundir.declaration.declared_outputs`).
        hashes: content hashes of the run directory's files.
    """
    record = run.stage_record(step.name)
    if record is None:
        return "never completed in this run directory"
    previous = record.get("inputs", {})
    if previous != inputs:
        changed = []
        if "code" not in previous:
            changed.append("its record predates per-stage code fingerprints")
        else:
            changed += _few(changed_files(previous["code"], inputs["code"]), "files of its code")
        sections = [s for s in inputs["params"] if previous.get("params", {}).get(s) != inputs["params"][s]]
        if sections:
            changed.append(f"params {', '.join(sections)}")
        changed += _few([f for f in inputs["files"] if previous.get("files", {}).get(f) != inputs["files"][f]], "files")
        return f"changed since it last ran: {'; '.join(changed) or 'what it reads'}"
    recorded = record.get("outputs", {})
    for relative in outputs:
        current = hashes(relative)
        if current is None:
            return f"{relative} is missing"
        if relative not in recorded:
            return f"{relative} is new in this run's outputs"
        if current != recorded[relative]:
            return f"{relative} changed since the stage wrote it"
    return None


def _few(names: list[str], what: str) -> list[str]:
    """At most three names and how many more, as one entry of `why_run`'s list (none for no names)."""
    if not names:
        return []
    return [", ".join(names[:3]) + (f" and {len(names) - 3} more {what}" if len(names) > 3 else "")]


#: What the terminal shows while a stage runs (`execute_stage`).
TERMINAL_MODES = ("progress", "quiet", "verbose")


def execute_stage(step: Stage, run: RunDir, params_file: str, overrides: dict, output: Path, terminal: str) -> None:
    """Execute one notebook with papermill into ``output`` (the executed notebook, written as it runs).

    ``terminal`` (one of `TERMINAL_MODES`): ``progress`` streams what the notebook prints, its progress
    bars included, to the terminal as it runs; ``quiet`` shows nothing; ``verbose`` also logs every
    result the notebook displays (tables as text).
    """
    import jupytext
    import papermill

    notebook = jupytext.read(notebook_source(step.name))
    with _text_progress():
        papermill.execute_notebook(
            notebook,
            str(output),
            parameters={"params_file": params_file, "run_dir": str(run.root), "overrides": overrides},
            cwd=str(PROJECT_ROOT),
            kernel_name="python3",
            progress_bar=False,
            log_output=terminal == "verbose",
            stdout_file=sys.stdout if terminal == "progress" else None,
            stderr_file=sys.stderr if terminal == "progress" else None,
            # ipykernel's own log is noise in a terminal: a warning on every start that its local TCP sockets are
            # unencrypted, and an error when the interrupt jupyter_client sends every kernel it shuts down lands
            # mid-cycle. A cell's errors reach the runner through the notebook, not through this log.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )
    _record_paths(output, notebook_source(step.name), run.path("notebook", step.name))


def _record_paths(executed: Path, source: Path, final: Path) -> None:
    """Name the real notebook source and the executed notebook's final place in its papermill metadata.

    papermill records what it was given: the notebook read by jupytext (no path: it would store the whole
    JSON) and the temporary file that `RunDir.writing` moves into place.
    """
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    notebook.metadata.papermill["input_path"] = project_relative(source)
    notebook.metadata.papermill["output_path"] = project_relative(final)
    nbformat.write(notebook, executed)


@contextlib.contextmanager
def _text_progress():
    """``SED_PROGRESS=text`` while a kernel starts (it inherits text bars, kept in the notebook); then as before."""
    previous = os.environ.get(progress.ENVIRONMENT_VARIABLE)
    os.environ[progress.ENVIRONMENT_VARIABLE] = "text"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[progress.ENVIRONMENT_VARIABLE]
        else:
            os.environ[progress.ENVIRONMENT_VARIABLE] = previous


def rerun_command(params_file: str, run_dir: str | None = None, overrides: dict | None = None) -> str:
    """The command line that runs a study again with the same params file, run directory and ``--set`` values.

    Example:
        >>> rerun_command("params/smoke.yaml", "runs/x", {"train": {"lr": 0.001}, "models": {"de": {"lam": 0}}})
        'python -m sedlib.run params/smoke.yaml --run-dir runs/x --set train.lr=0.001 --set models.de.lam=0'
    """
    parts = ["python -m sedlib.run", _shown_path(params_file)]
    parts += [f"--run-dir {_shown_path(run_dir)}"] if run_dir else []
    return " ".join(parts + [f"--set {assignment}" for assignment in format_overrides(overrides or {})])


def failure_message(step: Stage, error: BaseException, notebook: Path, command: str, run_root: Path) -> str:
    """The lines a user reads when a stage fails: the stage, what failed in plain words, what to do, where.

    A `sedlib.errors.UserError` (recognised by its type, also when a notebook's kernel raised it) is shown as
    its message says; a full disk as one line naming the device; anything else with its class name, as a bug.
    """
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        name, message = error.ename, str(error.evalue).strip()
        where = f"cell [{error.exec_count}]" if error.exec_count else f"cell {error.cell_index}"
        user, disk_full = user_error_class(name) is not None, f"[Errno {errno.ENOSPC}]" in message
    else:
        name, message, where = type(error).__name__, str(error).strip(), "the kernel"
        user, disk_full = isinstance(error, UserError), is_disk_full(error)
    if disk_full or almost_full(run_root):
        return (
            f"[{step.name}] failed: no space left on the device mounted at {mount_point(run_root)}, which holds "
            f"{_shown_path(run_root)}: "
            f"free space there; everything completed before is kept, and `{command}` continues from here."
        )
    what = (
        message
        if user
        else (
            f"{name}: {message}\n  This is not an error sedlib expects, so it is probably a bug: the traceback "
            "shows where it happened."
        )
    )
    return (
        f"[{step.name}] failed: {what}\n"
        f"  The executed notebook, with the traceback in {where}, is {_shown_path(notebook)}\n"
        f"  Everything completed before is kept; after the fix, `{command}` continues from here."
    )


def _shown_path(path: Path | str) -> str:
    """A path relative to the working directory when it lies under it (shorter to read and to copy)."""
    path = Path(path)
    return os.path.relpath(path) if path.is_absolute() and path.is_relative_to(Path.cwd()) else str(path)


def run_study(
    params_file: str,
    stages: list[str] | None = None,
    overrides: dict | None = None,
    run_dir: str | None = None,
    force: bool = False,
    report: bool = True,
    engine: str = "auto",
    terminal: str = "progress",
) -> RunDir:
    """Execute the study's stages in order (skipping those that need not run) and render the report.

    The run directory's lock (`RunDir.lock`) is held throughout: a second run of the same directory
    is refused, and the notebooks executed here work under this lock.

    Args:
        params_file: the run's YAML file (relative to the project root or absolute; `main` makes a path typed
            on the command line absolute from the working directory).
        stages: names of the stages to consider (all by default); the others are not run, and the
            files of theirs that a chosen stage reads must be in place.
        overrides: nested mapping merged over the params file (passed on to every notebook).
        run_dir: the run directory (by default ``runs/<run_name>``, or with overrides their own
            ``runs/<run_name>+<overrides>``, `sedlib.rundir.directory.RunDir.locate`).
        force: run the chosen stages even when they need not run.
        report: render ``report/index.html`` and ``index.pdf`` after the stages.
        engine: report engine, ``auto``, ``quarto`` or ``pandoc`` (see `sedlib.report.render`).
        terminal: what the terminal shows while a stage runs, one of `TERMINAL_MODES` (see `execute_stage`).

    Returns:
        The `RunDir`.

    Raises:
        ConfigError: the params file or an override is invalid (nothing has run).
        StageFailedError: a stage failed; earlier complete artefacts are kept.
        sedlib.rundir.directory.RunDirError: the run directory is another study's, locked by another run, or a
            file a chosen stage needs from an unchosen one is missing.
    """
    overrides = overrides or {}
    config = load_config(params_file, overrides)
    unknown = sorted(set(stages or []) - set(STAGE_NAMES))
    if unknown:
        raise ConfigError(f"--stages: unknown stage(s) {unknown}; the stages are {list(STAGE_NAMES)}")
    command = rerun_command(params_file, run_dir, overrides)
    located = RunDir.locate(config, run_dir, overrides)
    chosen = [step for step in STAGES if stages is None or step.name in stages]
    _check_unchosen_inputs(config, located, chosen, command)  # before anything is created
    with located.lock(command):
        run = RunDir.open(config, run_dir, overrides)
        _run_stages(config, run, project_relative(params_file), chosen, overrides, force, terminal, command)
        _note_undeclared(config, run)
        if report:
            _render_report(run, engine)
    return run


def _check_unchosen_inputs(config: RunConfig, run: RunDir, chosen: list[Stage], command: str) -> None:
    """Before anything runs: every file a chosen stage reads from a stage that is not chosen is in place."""
    names = {step.name for step in chosen}
    for step in chosen:
        for relative in declared_reads(config, step.name):
            writer = owner(relative)
            if writer in names or (run.root / relative).is_file():
                continue
            stages = " ".join(sorted({writer, *names}))
            raise StageFailedError(
                f"[{step.name}] cannot run: it reads {relative}, which is missing. Stage {writer} writes it: run "
                f"`{command} --stages {stages}`, or leave out --stages."
            )


def _run_stages(
    config: RunConfig,
    run: RunDir,
    params_file: str,
    chosen: list[Stage],
    overrides: dict,
    force: bool,
    terminal: str,
    command: str,
) -> None:
    """The stage loop of `run_study`, under the run directory's lock."""
    hashes, base = _Hashes(run), run.base()
    for step in chosen:
        inputs = stage_inputs(config, step, hashes)
        outputs = declared_outputs(config, step.name)
        if base is not None and not force and _take_over(base, run, step, inputs, outputs, hashes):
            print(
                f"[{step.name}] skipped: taken over from {_shown_path(base.root)} (the same code, settings and inputs)"
            )
            continue
        reason = why_run(run, step, inputs, outputs, hashes)
        if reason is None and not force:
            print(f"[{step.name}] skipped: up to date", flush=True)
            continue
        _check_source_data(config, step)
        print(f"[{step.name}] running: {reason or 'forced (--force)'}", flush=True)
        started, cpu_started = time.perf_counter(), _children_cpu_seconds()
        notebook = run.path("notebook", step.name)
        failed = notebook.with_suffix(".failed.ipynb")
        try:
            with run.writing(notebook) as (executed,):
                try:
                    execute_stage(step, run, params_file, overrides, executed, terminal)
                except BaseException:
                    if executed.is_file():
                        failed.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(executed, failed)
                    raise
        except Exception as error:
            run.remove_stale_staging()  # the stopped kernel's unfinished writes: space a full disk needs back
            raise StageFailedError(failure_message(step, error, failed, command, run.root)) from error
        failed.unlink(missing_ok=True)
        hashes.forget(outputs)
        missing = [relative for relative in outputs if hashes(relative) is None]
        if missing:
            raise StageFailedError(
                f"[{step.name}] completed but did not write {missing}, which sedlib.rundir.declaration declares as its "
                "outputs; the declaration and the notebook disagree (a bug): fix one of them"
            )
        run.write_stage_record(
            step.name,
            {"inputs": inputs, "outputs": {r: hashes(r) for r in outputs}},
        )
        seconds = time.perf_counter() - started
        record_stage(run, step.name, seconds, _children_cpu_seconds() - cpu_started)
        print(f"[{step.name}] done in {seconds:.0f} s", flush=True)


def _children_cpu_seconds() -> float:
    """User and system CPU seconds of this process's finished children (a stage's kernel and its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _take_over(base: RunDir, run: RunDir, step: Stage, inputs: dict, outputs: list[str], hashes: _Hashes) -> bool:
    """In a variant that has not run a stage: take its outputs from the base run when they would be the same.

    They would be when the base run's stage ran with exactly these inputs (code, params sections and the
    content of what it read). Its outputs come in by hard link with their recorded hashes
    (`sedlib.rundir.directory.RunDir.adopt`), and must hash as the stage recorded them.
    """
    record = base.stage_record(step.name)
    if run.stage_record(step.name) is not None or record is None or record.get("inputs") != inputs:
        return False
    taken = run.adopt(base, outputs)
    hashes.forget(outputs)
    if taken != sorted(outputs) or any(hashes(r) != record.get("outputs", {}).get(r) for r in outputs):
        return False
    run.write_stage_record(step.name, record)
    return True


def _check_source_data(config: RunConfig, step: Stage) -> None:
    """Before the caching stage starts a kernel: the source data and the backbone are in place.

    The embedded study's Fashion-MNIST files; your folders or feature files and a ``timm:`` backbone's weights:
    the study's data source checks them (`sedlib.data.splits.check_sources`).
    """
    if step.name != "01_cache":
        return
    try:
        check_sources(config)
    except UserError as error:
        raise StageFailedError(f"[{step.name}] cannot run: {error}") from error


def _note_undeclared(config: RunConfig, run: RunDir) -> None:
    """Say which artefacts of the run directory this params file no longer makes (they are kept)."""
    declared = {path for step in STAGES for path in declared_outputs(config, step.name)}
    leftovers = sorted(
        run.relative(path)
        for path in run.root.rglob("*")
        if path.is_file() and owner(run.relative(path)) and run.relative(path) not in declared
    )
    leftovers = [path for path in leftovers if not path.endswith(".failed.ipynb")]
    if leftovers:
        shown = ", ".join(leftovers[:4]) + (f" and {len(leftovers) - 4} more" if len(leftovers) > 4 else "")
        print(
            f"[run] note: {shown}: made by earlier settings, not by this params file; kept (delete them to "
            "reclaim the space)",
            flush=True,
        )


def _render_report(run: RunDir, engine: str) -> None:
    notebooks = [run.path("notebook", name) for name in STAGE_NAMES]
    missing = [run.relative(path) for path in notebooks if not path.is_file()]
    if missing:
        print(f"[report] not rendered: {', '.join(missing)} missing (run every stage first)", flush=True)
        return
    for path in notebooks:
        run.verified(path)
    started = time.perf_counter()
    outputs = render_report(run.root, PROJECT_ROOT, engine=engine)
    print(f"[report] {', '.join(str(p) for p in outputs.values())} ({time.perf_counter() - started:.0f} s)")


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so a terminated runner stops its kernel as Ctrl-C does."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sedlib.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("params_file", help="e.g. params/default.yaml (from the working directory)")
    parser.add_argument("--stages", nargs="+", metavar="STAGE", help=f"among {list(STAGE_NAMES)}")
    parser.add_argument(
        "--run-dir", help="run directory, from the working directory (default runs/<run_name>, with --set its own)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params value, e.g. --set train.lr=1e-3 (YAML value)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="rerun the chosen stages even if up to date")
    parser.add_argument("--no-report", action="store_true", help="do not render the report")
    parser.add_argument("--engine", default="auto", choices=["auto", "quarto", "pandoc"])
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_const", dest="terminal", const="quiet", default="progress",
                       help="show only a line per stage, not the notebooks' progress bars and messages")  # fmt: skip
    shown.add_argument("--verbose", action="store_const", dest="terminal", const="verbose",
                       help="also show every table and result the notebooks display, as text")  # fmt: skip
    parser.add_argument(
        "--publish", action="store_true", help="then copy the headline results into results/<run_name>/ (the README's)"
    )
    args = parser.parse_args(argv)
    if args.publish and args.set:
        parser.error("--publish copies the results of the params file as it is; run it without --set")
    _stop_on_sigterm()
    logging.basicConfig(format="[run] %(message)s")
    params_file = project_relative(from_working_directory(args.params_file))
    run_dir = from_working_directory(args.run_dir) if args.run_dir else None
    try:
        if not resolve_path(params_file).is_file():
            available = sorted(path.name for path in PROJECT_ROOT.glob("params/*.yaml"))
            raise MissingFileError(
                f"params file {args.params_file} not found from the working directory {Path.cwd()}; the project's "
                f"are in {_shown_path(PROJECT_ROOT / 'params')}: {available}"
            )
        overrides = parse_overrides(args.set)
        run = run_study(
            params_file, args.stages, overrides, run_dir, args.force, not args.no_report, args.engine, args.terminal
        )
        if args.publish:
            written = publish(load_config(params_file), run)
            print(f"[publish] {len(written)} files into {written[0].parent}", flush=True)
    except KeyboardInterrupt as interrupt:
        # The event loop's tasks that the interrupt cut short would each log a traceback as they are collected.
        logging.getLogger("asyncio").disabled = True
        sys.stdout.flush()
        cause = f" ({interrupt})" if str(interrupt) else ""
        print(
            f"\n[run] interrupted{cause}: the notebook kernel was stopped, and everything completed before is kept; "
            f"`{rerun_command(params_file, run_dir, parse_overrides(args.set))}` continues from here.",
            file=sys.stderr,
        )
        return 130
    except UserError as error:
        sys.stdout.flush()  # the stage's own output first
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
