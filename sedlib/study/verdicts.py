"""The committed verdicts of a study, and the check that the code still produces them.

A run's verdicts are the ``claim``, ``split`` and ``verdict`` columns of its evidence
(`sedlib.study.findings.claim_evidence`, ``results/evidence.csv``, read after verifying its content
hash). The smoke study's are committed as ``results/smoke/verdicts.csv`` (a test runs the smoke study
and compares); a published study's are in its ``results/<study>/evidence.csv``. From the project root::

    python -m sedlib.study.verdicts params/smoke.yaml --write results/smoke/verdicts.csv
    python -m sedlib.study.verdicts params/default.yaml --check results/default/evidence.csv

``--check`` exits with status 1 and lists every split whose verdict differs (or that only one side has).
Both read the run of the params file under ``runs/<run_name>`` (``--run-dir`` for another).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from sedlib.config import load_config, resolve_path
from sedlib.rundir.directory import RunDir

VERDICT_COLUMNS = ["claim", "split", "verdict"]


def run_verdicts(run: RunDir) -> pd.DataFrame:
    """The verdict of every claim and split of a run: its verified evidence's `VERDICT_COLUMNS`."""
    return run.read_csv("evidence")[VERDICT_COLUMNS]


def verdict_differences(produced: pd.DataFrame, committed: pd.DataFrame) -> list[str]:
    """One line per claim and split whose verdict differs between two verdict tables; empty when they agree.

    Args:
        produced: the verdicts the code produced (`run_verdicts`).
        committed: the committed ones (any table with `VERDICT_COLUMNS`, e.g. a published evidence.csv).
    """
    keys = ["claim", "split"]
    joined = produced[VERDICT_COLUMNS].merge(
        committed[VERDICT_COLUMNS], on=keys, how="outer", suffixes=("_produced", "_committed")
    )
    differing = joined.fillna("(none)")
    differing = differing[differing["verdict_produced"] != differing["verdict_committed"]]
    return [
        f"{row.claim} on {row.split}: committed {row.verdict_committed}, produced {row.verdict_produced}"
        for row in differing.itertuples()
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m sedlib.study.verdicts PARAMS (--write FILE | --check FILE) [--run-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m sedlib.study.verdicts", description=__doc__.split("\n\n")[0])
    parser.add_argument("params", help="the study's params file, e.g. params/smoke.yaml")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", metavar="FILE", help="write the run's verdicts to FILE (CSV)")
    action.add_argument("--check", metavar="FILE", help="compare the run's verdicts with FILE; exit 1 if they differ")
    parser.add_argument("--run-dir", help="the run directory (default: runs/<run_name>)")
    arguments = parser.parse_args(argv)
    config = load_config(arguments.params)
    produced = run_verdicts(RunDir.locate(config, arguments.run_dir))
    if arguments.write:
        target = resolve_path(arguments.write)
        target.parent.mkdir(parents=True, exist_ok=True)
        produced.to_csv(target, index=False)
        print(f"{len(produced)} verdicts written to {arguments.write}")
        return 0
    committed_path = Path(resolve_path(arguments.check))
    if not committed_path.is_file():
        parser.error(f"{arguments.check} does not exist; write it with --write, or publish the study")
    differences = verdict_differences(produced, pd.read_csv(committed_path))
    for line in differences:
        print(line)
    print(
        f"{arguments.check}: {len(differences)} of the verdicts differ from the code's"
        if differences
        else f"{arguments.check}: the {len(produced)} verdicts agree with the code's"
    )
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
