"""Small helpers around run directories: the runner's status lines, private copies, file contents."""

from __future__ import annotations

import shutil
from pathlib import Path

from sedlib.rundir.directory import RunDir


def status_lines(capsys) -> list[str]:
    """The runner's status lines (``[stage] ...``) printed since the last call."""
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]


def private_copy(run: RunDir, target: Path) -> RunDir:
    """A copy of ``run`` at ``target`` that a test may change (the shared smoke run stays as it is)."""
    shutil.copytree(run.root, target)
    return RunDir(target)


def contents(run: RunDir, kinds) -> dict[str, bytes]:
    """The bytes of each artefact kind (one file each, e.g. ``ood_gen``) of ``run``."""
    return {kind: run.path(kind).read_bytes() for kind in kinds}


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the lock, by its path relative to ``root``."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"
    }
