"""The run directory: where one params file's study keeps everything it makes.

::

    runs/<run>/
        run.json            which params file made this directory (checked on every open)
        params.yaml         the resolved configuration (defaults filled in)
        features/           01_cache: one HDF5 file per split
        models/             02_train_a2d: <model>.safetensors (+ .json) and <model>_log.csv
        results/            03-05: CSV tables; results/tables/*.md; results/figures/*.png
        notebooks/          the executed notebooks (papermill)
        report/             index.html, index.pdf

A directory made by one params file is never reused by another: `RunDir.open` refuses it with a
message, so two studies cannot overwrite each other's results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from sedlib.config import PROJECT_ROOT, RunConfig, resolve_path


class RunDirError(RuntimeError):
    """The run directory belongs to another params file, or its record is unreadable."""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (see the module docstring for the layout)."""

    root: Path

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def tables(self) -> Path:
        return self.results / "tables"

    @property
    def figures(self) -> Path:
        return self.results / "figures"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def model_path(self, name: str) -> Path:
        return self.models / f"{name}.safetensors"

    def log_path(self, name: str) -> Path:
        return self.models / f"{name}_log.csv"

    @classmethod
    def open(cls, config: RunConfig, run_dir: str | Path | None = None) -> RunDir:
        """Create or reopen the run directory of ``config``, refusing one made by another params file.

        Args:
            config: the run's configuration (``config.source`` names its params file).
            run_dir: the directory; ``runs/<run_name>`` under the project root when None. A relative
                path is taken relative to the project root.

        Raises:
            RunDirError: ``run.json`` names another params file or run name, or cannot be read.
        """
        root = resolve_path(run_dir if run_dir is not None else Path("runs") / config.run_name)
        record_path = root / "run.json"
        params_file = resolve_path(config.source)
        if params_file.is_relative_to(PROJECT_ROOT):
            params_file = params_file.relative_to(PROJECT_ROOT)
        record = {"run_name": config.run_name, "params_file": params_file.as_posix()}
        if record_path.exists():
            try:
                existing = json.loads(record_path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise RunDirError(f"{record_path} is unreadable ({error}); delete it to reclaim {root}") from error
            if {key: existing.get(key) for key in record} != record:
                raise RunDirError(
                    f"{root} was made by params file {existing.get('params_file')!r} "
                    f"(run {existing.get('run_name')!r}), not by {record['params_file']!r} (run {config.run_name!r}). "
                    "Its results are kept: give this study another run_name (or run_dir), or delete that directory "
                    "to start over."
                )
        root.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        (root / "params.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        run = cls(root)
        for directory in (run.features, run.models, run.tables, run.figures):
            directory.mkdir(parents=True, exist_ok=True)
        return run
