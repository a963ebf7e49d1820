"""The run directory: where one params file's study keeps everything it makes.

::

    runs/<run>/
        run.json            which params file made this directory (checked on every open)
        params.yaml         the resolved configuration (defaults filled in)
        .lock               held by the run writing here now (`RunDir.lock`)
        features/           01_cache: one HDF5 file per split
        features/shards/    01_cache under torchrun: each process's rows of a split, until joined
        models/             02_train_a2d: <model>.safetensors (+ .json) and <model>_log.csv
        results/            03-05: CSV tables; results/tables/*.md; results/figures/*.png
        notebooks/          the executed notebooks (papermill)
        report/             index.html, index.pdf

A directory made by one params file is never reused by another: `RunDir.open` refuses it with a
message, so two studies cannot overwrite each other's results. Two runs of the same study cannot
write it at once either: the runner (`sedlib.run`) and the cache stage hold its lock (`RunDir.lock`)
while they work, and a second one is refused with a message naming the holder. The notebooks the
runner starts work under the runner's lock: it hands them a token through the environment
(``SEDLIB_RUN_LOCK``), so they are not refused by their own runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from sedlib.config import PROJECT_ROOT, RunConfig, resolve_path

LOCK_FILE = ".lock"
LOCK_ENVIRONMENT_VARIABLE = "SEDLIB_RUN_LOCK"
"""Token of the lock this process works under; set while it holds one, so that its child processes inherit it."""

_held: set[Path] = set()  # lock files this process holds: taking one again is a no-op, not a refusal


class RunDirError(RuntimeError):
    """The run directory belongs to another params file, or its record is unreadable."""


class RunDirLockedError(RunDirError):
    """Another process is writing the run directory (it holds ``.lock``)."""


def _read_holder(path: Path) -> dict:
    """What the holder of a lock file wrote into it; empty while it is being written or unreadable."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


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

    @property
    def shards(self) -> Path:
        return self.features / "shards"

    @classmethod
    def locate(cls, config: RunConfig, run_dir: str | Path | None = None) -> RunDir:
        """The run directory of ``config``, neither created nor checked (`open` does both).

        Args:
            config: the run's configuration.
            run_dir: the directory; ``runs/<run_name>`` under the project root when None. A relative
                path is taken relative to the project root.
        """
        return cls(resolve_path(run_dir if run_dir is not None else Path("runs") / config.run_name))

    @classmethod
    def open(cls, config: RunConfig, run_dir: str | Path | None = None) -> RunDir:
        """Create or reopen the run directory of ``config``, refusing one made by another params file.

        Args:
            config: the run's configuration (``config.source`` names its params file).
            run_dir: the directory (see `locate`).

        Raises:
            RunDirError: ``run.json`` names another params file or run name, or cannot be read.
        """
        root = cls.locate(config, run_dir).root
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

    @contextlib.contextmanager
    def lock(self, holder: str) -> Iterator[None]:
        """Hold the run directory's lock (``.lock``, an exclusive ``flock``) while the block runs.

        The lock is released when the block ends or the process dies. Taking it again in the process
        that holds it, or in a process started by the holder (which inherits the
        ``SEDLIB_RUN_LOCK`` token, e.g. the notebooks the runner executes), works under the held lock.

        Args:
            holder: what is writing, for the message another run gets, e.g. ``python -m sedlib.run params/x.yaml``.

        Raises:
            RunDirLockedError: another process holds the lock; the message names its PID, host and command.
            RunDirError: the lock file cannot be created (e.g. no write permission).
        """
        import fcntl  # POSIX (Linux, macOS); imported here so that reading a run directory works anywhere

        path = self.root / LOCK_FILE
        key = path.resolve()
        if key in _held:
            yield
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise RunDirError(
                f"{path}: cannot create the run directory's lock file ({error}); make {self.root} writable, or "
                "choose another run_dir"
            ) from error
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_holder(path)
            except OSError as error:
                raise RunDirError(
                    f"{path}: cannot be locked ({error}); the file system of {self.root} may not support file "
                    "locks (some network file systems): put the run directory on one that does"
                ) from error
            else:
                owner = None
            if owner is not None:
                if not owner.get("token") or owner["token"] != os.environ.get(LOCK_ENVIRONMENT_VARIABLE):
                    raise RunDirLockedError(
                        f"{self.root} is being written by another run: {owner.get('holder', 'unknown')!r}, PID "
                        f"{owner.get('pid', '?')} on host {owner.get('host', '?')}, since {owner.get('since', '?')} "
                        f"(it holds {path}). Two runs writing one directory would mix their files, so this one "
                        "stops. Wait until that run has finished, or stop it, and start this one again; the lock "
                        "goes away by itself when its process ends."
                    )
                yield  # a process the holder started, e.g. a notebook executed by the runner
                return
            token = secrets.token_hex(16)
            record = {
                "holder": holder,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
                "token": token,
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            inherited = os.environ.get(LOCK_ENVIRONMENT_VARIABLE)
            os.environ[LOCK_ENVIRONMENT_VARIABLE] = token
            _held.add(key)
            try:
                yield
            finally:
                _held.discard(key)
                if inherited is None:
                    os.environ.pop(LOCK_ENVIRONMENT_VARIABLE, None)
                else:
                    os.environ[LOCK_ENVIRONMENT_VARIABLE] = inherited
                os.ftruncate(fd, 0)  # no stale holder for the next reader
        finally:
            os.close(fd)  # releases the flock
