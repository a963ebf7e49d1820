"""Where and with what a run was made: ``runs/<run>/provenance.json``, shown in the report.

The runner (`sedlib.run`) calls `record_stage` each time a stage completes. The file
keeps, per stage, its wall-clock and CPU seconds (CPU: every process of the stage together: the
notebook's kernel and its training workers) and the environment it ran in (`environment`): the commit
and whether the tree had uncommitted changes, the versions of Python, torch, timm and numpy, the CPU
model and the instruction-set level torch dispatches to, the thread counts and the GPU. The report's
"Reproducing this report" section shows it (`markdown`, written next to the article by
`sedlib.report.render.render_report`).

Why it matters (docs/design.md, "What is bit-identical"): two runs with the same code, environment and
CPU give bit-identical results; another CPU (another instruction-set level, another BLAS kernel) gives
slightly different floating-point sums, which SED's training amplifies, so only the seeds' spread makes
verdicts comparable across machines.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from sedlib import PROJECT_ROOT
from sedlib.device import cpu_cores
from sedlib.rundir.declaration import PROVENANCE
from sedlib.rundir.directory import RunDir

PROVENANCE_FILE = PROVENANCE
PROVENANCE_FORMAT = "sedlib.provenance/1"
#: The report's rendering of `PROVENANCE_FILE`, written beside the staged article (`report/index.qmd` includes it).
PROVENANCE_MARKDOWN = "provenance.md"
PACKAGES = ("torch", "timm", "numpy")
#: Environment keys whose difference between two stages is worth a line in the report.
_COMPARED = ("commit", "uncommitted_changes", "python", *PACKAGES, "cpu_model", "cpu_capability", "gpu")


def git_state(root: Path | str = PROJECT_ROOT) -> tuple[str | None, bool | None]:
    """``(commit, uncommitted changes)`` of the checkout at ``root``; ``(None, None)`` outside git or without it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS), else `platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        return subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or platform.machine()


def environment(root: Path | str = PROJECT_ROOT) -> dict:
    """What a stage ran with: code, versions, CPU, threads and GPU, as plain JSON values.

    Keys: ``commit`` and ``uncommitted_changes`` (`git_state`; None outside git), ``python``, one per
    `PACKAGES` (None when not installed), ``platform``, ``cpu_model``, ``cpu_capability`` (the
    instruction-set level torch's CPU kernels use, e.g. ``AVX2``, ``AVX512``), ``cpu_cores`` (those
    this process may use), ``torch_threads`` and ``torch_interop_threads`` (this process's: a training
    worker uses one thread, `sedlib.study.models.training_workers`), ``omp_num_threads`` (the
    environment variable, None when unset), ``gpu`` (the CUDA device's name, None without one).
    """
    import torch

    commit, dirty = git_state(root)
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "commit": commit,
        "uncommitted_changes": dirty,
        "python": platform.python_version(),
        **versions,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_cores": cpu_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def read_provenance(run: RunDir) -> dict | None:
    """The run's provenance record, verified against its recorded content hash; None when never written.

    Raises:
        sedlib.rundir.directory.ArtefactError: the file exists but changed since the runner wrote it.
    """
    if not (run.root / PROVENANCE_FILE).is_file():
        return None
    return json.loads(run.verified(PROVENANCE_FILE).read_text())


def record_stage(run: RunDir, stage: str, seconds: float, cpu_seconds: float, root: Path | str = PROJECT_ROOT) -> dict:
    """Add (or replace) a completed stage's times and environment in ``runs/<run>/provenance.json``.

    Args:
        run: the run directory.
        stage: the stage's name, e.g. ``02_train_a2d``.
        seconds: its wall-clock time.
        cpu_seconds: the CPU time of every process of the stage (user and system).
        root: the checkout whose commit is recorded.

    Returns:
        The whole record as written.
    """
    record = read_provenance(run) or {"format": PROVENANCE_FORMAT, "stages": {}}
    record["stages"][stage] = {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "completed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "environment": environment(root),
    }
    with run.writing(PROVENANCE_FILE) as (temporary,):
        temporary.write_text(json.dumps(record, indent=2) + "\n")
    return record


def _shown(value) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def markdown(record: Mapping | None, stage_names: list[str] | None = None) -> str:
    """The report's view of a provenance record: the environment, then one row per stage with its times.

    The environment shown is that of the stage that completed last; a stage that ran with another
    commit, version, CPU or GPU gets a line saying which values differed.

    Args:
        record: `read_provenance`'s value (None: a note that the run recorded none).
        stage_names: the order of the stages' rows (default: as recorded).
    """
    if not record or not record.get("stages"):
        return f"*No provenance record (`{PROVENANCE_FILE}`): this run's stages ran before sedlib kept one.*\n"
    stages = record["stages"]
    names = [name for name in stage_names or list(stages) if name in stages]
    latest = max(names, key=lambda name: stages[name]["completed"])
    env = stages[latest]["environment"]
    commit = _shown(env["commit"]) + (" (with uncommitted changes)" if env["uncommitted_changes"] else "")
    rows = [
        ("commit", commit),
        ("Python", env["python"]),
        *((package, _shown(env[package])) for package in PACKAGES),
        ("platform", env["platform"]),
        ("CPU", f"{env['cpu_model']}, {env['cpu_cores']} cores; torch's kernels: {_shown(env['cpu_capability'])}"),
        (
            "threads",
            f"torch {env['torch_threads']} (inter-op {env['torch_interop_threads']}), "
            f"OMP_NUM_THREADS {env['omp_num_threads'] or 'unset'}",
        ),
        ("GPU", env["gpu"] or "none"),
    ]
    lines = [f"Recorded in `{PROVENANCE_FILE}` (the environment of stage {latest}, the last to complete):", ""]
    lines += ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows), ""]
    lines += ["| stage | wall-clock (s) | CPU (s) | completed (UTC) |", "|---|---:|---:|---|"]
    for name in names:
        stage = stages[name]
        lines.append(f"| {name} | {stage['seconds']:.0f} | {stage['cpu_seconds']:.0f} | {stage['completed']} |")
    total_wall = sum(stages[name]["seconds"] for name in names)
    total_cpu = sum(stages[name]["cpu_seconds"] for name in names)
    lines += [f"| all | {total_wall:.0f} | {total_cpu:.0f} | |", ""]
    for name in names:
        differing = [key for key in _COMPARED if stages[name]["environment"].get(key) != env.get(key)]
        if differing and name != latest:
            shown = ", ".join(f"{key} {_shown(stages[name]['environment'].get(key))}" for key in differing)
            lines.append(f"* Stage {name} ran in another environment: {shown}.")
    lines.append(
        "\nThe times are of the stages' last runs and vary from run to run; nothing else in this report depends on "
        "them. The same code and environment on the same CPU give bit-identical results; another CPU may not "
        '(docs/design.md, "What is bit-identical").'
    )
    return "\n".join(lines) + "\n"


def write_markdown(run_dir: Path | str, stage_names: list[str] | None = None) -> Path:
    """Write `markdown` of the run's record to ``<run_dir>/provenance.md`` (a staged report source)."""
    run_dir = Path(run_dir)
    target = run_dir / PROVENANCE_MARKDOWN
    target.write_text(markdown(read_provenance(RunDir(run_dir)), stage_names))
    return target
