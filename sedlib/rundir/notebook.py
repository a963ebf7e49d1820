"""The first cell of every stage's notebook: read its parameters, the study, and open the run directory.

Each notebook takes three parameters (its cell tagged ``parameters``, which ``papermill --help-notebook``
lists): ``params_file``, ``run_dir`` and ``overrides``. They arrive from the runner
(`sedlib.run`), from papermill (``-p params_file params/smoke.yaml``, ``-p overrides
'{"train": {"epochs": 1}}'``) or from an edit in JupyterLab; `open_stage` accepts each of these forms.
"""

from __future__ import annotations

from collections.abc import Mapping

from sedlib.config import ConfigError, RunConfig, load_config, read_overrides
from sedlib.rundir.directory import RunDir

#: A key every params file has, which no notebook defines: found among a notebook's variables, it came from
#: ``papermill -f <params file>``, which passes a file's keys as parameters rather than the file.
PARAMS_FILE_KEY = "run_name"


def open_stage(
    params_file: str, run_dir: str | None, overrides: Mapping | str | None, namespace: Mapping | None = None
) -> tuple[RunConfig, RunDir]:
    """Check a notebook's parameters, read the study and open its run directory; print where it writes.

    Args:
        params_file: the study's params file (relative to the project root, or absolute).
        run_dir: the run directory; empty or None: the study's own, or with overrides the variant's
            (`sedlib.rundir.directory.RunDir.locate`).
        overrides: a mapping merged over the params file, or its YAML/JSON text (``papermill -p``).
        namespace: the notebook's variables (``globals()``), to refuse ``papermill -f``.

    Returns:
        The configuration and the opened `RunDir`.

    Raises:
        ConfigError: ``papermill -f`` passed a params file's keys as parameters, or the overrides or the
            params file are invalid.
    """
    if namespace is not None and PARAMS_FILE_KEY in namespace:
        raise ConfigError(
            f"this notebook got the parameter {PARAMS_FILE_KEY}={namespace[PARAMS_FILE_KEY]!r}: `papermill -f "
            "<params file>` passes the file's keys as notebook parameters, which the notebooks do not take, and "
            f"would run {params_file} instead. Pass the file itself: `papermill <in> <out> -p params_file "
            "params/<study>.yaml` (and `-p overrides '{...}'` for changes)"
        )
    overrides = read_overrides(overrides)
    config = load_config(params_file, overrides)
    run = RunDir.open(config, run_dir or None, overrides)
    print(f"run directory: {run.root}" + (f" (a variant of {config.source} with overrides)" if overrides else ""))
    return config, run
