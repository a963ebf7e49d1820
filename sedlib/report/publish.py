"""Copying a run's headline results into the repository's ``results/<run_name>/``, where the README shows them.

`publish` copies the files of `PUBLISHED` (the abstract, the key findings and their evidence, the
generated texts, the result tables and the summary figure the README embeds, the step-cost measurement)
and the run's provenance, each after verifying it against the content hash recorded when it was
written, into one flat folder. ``python -m sedlib.run
params/<run>.yaml --publish`` runs the study, renders the report, then publishes; ``make results`` does
it for ``params/default.yaml`` and ``params/full_cpu.yaml``. The folder's hand-written ``README.md``
stays as it is.

Example:
    >>> from sedlib.config import load_config
    >>> published_names(load_config("params/smoke.yaml"))[:3]
    ['abstract.md', 'key_findings.md', 'evidence.csv']
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sedlib import PROJECT_ROOT
from sedlib.config import RunConfig
from sedlib.rundir.declaration import ARTEFACTS, TABLES, artefact_paths
from sedlib.rundir.directory import RunDir
from sedlib.rundir.provenance import PROVENANCE_FILE

PUBLISHED = (
    ("abstract", ""),
    ("key_findings", ""),
    ("evidence", ""),
    ("summary", ""),
    ("method_comparison", ""),
    ("ood_gen", ""),
    ("ood_det", ""),
    ("diversity", ""),
    ("calibration", ""),
    ("alpha_class_shares", ""),
    ("step_cost", ""),
    *((kind, table) for table in TABLES if table != "published_comparison" for kind in ("table_markdown", "table_csv")),
    ("figure", "summary"),
    ("figure", "sweeps"),
    ("figure", "alpha_distribution"),
    ("figure", "alpha_gallery"),
)
"""``(artefact kind, name)`` of every published file; the published comparison is left out (the default
studies have no published run), and so are the sweeps of a run without sweeps."""


def _published(config: RunConfig) -> list[str]:
    """The run-directory paths of the files `publish` copies for ``config`` (those the run declares).

    The run's provenance (`sedlib.rundir.provenance`) comes last: the machine, versions and commit
    that made the published files.
    """
    paths = []
    for kind, name in PUBLISHED:
        relative = ARTEFACTS[kind].template.format(name=name)
        if relative in artefact_paths(config, kind) and not (name == "sweeps" and not config.sweeps):
            paths.append(relative)
    return [*paths, PROVENANCE_FILE]


def published_names(config: RunConfig) -> list[str]:
    """The names the published files of ``config`` get in ``results/<run_name>/``, in `PUBLISHED` order."""
    return [Path(relative).name for relative in _published(config)]


def publish(config: RunConfig, run: RunDir, target: Path | None = None) -> list[Path]:
    """Copy the run's published files (`PUBLISHED`) into ``target``, each verified first.

    Args:
        config: the run.
        run: its run directory, after a complete run.
        target: the folder; ``results/<run_name>`` in the project by default.

    Returns:
        The files written.

    Raises:
        sedlib.rundir.directory.ArtefactError: a file is missing or differs from what was recorded (the
            message says which stage to rerun).
    """
    target = PROJECT_ROOT / "results" / config.run_name if target is None else Path(target)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for relative in _published(config):
        source = run.verified(run.root / relative)
        temporary = target / f".{source.name}.partial"
        shutil.copyfile(source, temporary)
        written.append(temporary.replace(target / source.name))
    return written
