"""The run directory: where one params file's study keeps everything it makes, and what it may trust.

::

    runs/<run>/
        run.json            which params file made this directory (checked on every open), and a
                            variant's overrides and the run it started from (``base``)
        params.yaml         the resolved configuration (defaults filled in)
        artefacts.json      the content hash (sha256) of every artefact, recorded when it was written
        stages/<stage>.json what each stage last ran with and wrote (`sedlib.run`)
        .lock               held by the run writing here now (`RunDir.lock`)
        features/           01_cache: one HDF5 file per split
        models/             02_train_a2d: per replica <name>.safetensors, .json, _log.csv, _train.json
        results/            03-05: CSV tables; results/tables/*; results/figures/*.png
        notebooks/          the executed notebooks (papermill)
        report/             index.html, index.pdf

`sedlib.rundir.declaration` declares every file of this layout, per stage; `RunDir.path` turns a declared kind
into its path, so no other code types a file name.

**Every artefact is verified on read.** Artefacts are written through `RunDir.writing` (or the
helpers built on it, `save_csv`, `save_text`, `save_figure`): into a temporary folder first, then
moved into place only when complete, and their sha256 recorded in ``artefacts.json``. A reader
takes a path from `RunDir.verified`, which refuses a file that is missing, was never recorded or
whose content changed since, with an `ArtefactError` naming the file and the command that remakes
it. The feature files are the exception: they are large, and HDF5 verifies a Fletcher-32 checksum,
recorded when the chunk was written, on every chunk it reads (`sedlib.features`), so a second,
whole-file hash would only re-read gigabytes; their hashes are still recorded, for the runner.

**Nothing completed is lost.** A failed or interrupted write leaves the earlier file and its record
as they were; a temporary folder an interrupted write left behind is removed by the next run.

**Variants never overwrite a run.** A run with overrides (``--set``, a notebook's or papermill's
``overrides``) goes to its own directory, ``runs/<run_name>+<key>=<value>...`` (`variant_name`), so
``runs/<run_name>`` changes only when its params file does. A new variant starts from that run: its
feature files and trained models are hard-linked in with their recorded hashes (`RunDir.adopt`), and
the runner takes over whole stages whose code, settings and inputs are unchanged.

**One writer at a time.** A directory made by one params file is never reused by another:
`RunDir.open` refuses it. Two runs of the same study cannot write it at once either: `RunDir.lock`
(`sedlib.rundir.lock`) keeps them apart, and stops what a killed run left running.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from sedlib import file_sha256, fsync
from sedlib.config import (
    ParamsDumper,
    RunConfig,
    format_overrides,
    parse_overrides,
    project_relative,
    resolve_path,
)
from sedlib.errors import ArtefactError, RunDirError
from sedlib.rundir.declaration import ARTEFACTS, fixed_names, kind_of, owner, record_path
from sedlib.rundir.lock import alive, lock_holder, run_lock

LEDGER_FILE = "artefacts.json"
LEDGER_FORMAT = "sedlib.artefacts/1"
STAGING_DIR = ".staging"
RUNS_DIR = "runs"  # under the project root: the default run directories

logger = logging.getLogger("sedlib.rundir.directory")


def _write_json(path: Path, value) -> None:
    """Write JSON to ``path`` through a temporary file and a rename: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(temporary, path)


@dataclass(frozen=True)
class RunDir:
    """One run directory (see the module docstring for the layout and the guarantees)."""

    root: Path

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def shards(self) -> Path:
        """Under torchrun: each process's rows of a split, until rank 0 joins them (`sedlib.study.distributed`)."""
        return self.features / "shards"

    def path(self, kind: str, name: str = "") -> Path:
        """The path of a declared artefact (`sedlib.rundir.declaration.ARTEFACTS`).

        Args:
            kind: e.g. ``model``, ``ood_gen``, ``figure``.
            name: which one, for the kinds with one file each (a split, a replica, a table, a figure).

        Example:
            >>> RunDir(Path("runs/x")).path("model", "sed_a2d").as_posix()
            'runs/x/models/sed_a2d.safetensors'
        """
        if kind not in ARTEFACTS:
            raise KeyError(
                f"no artefact kind {kind!r}; sedlib.rundir.declaration.ARTEFACTS declares {sorted(ARTEFACTS)}"
            )
        artefact = ARTEFACTS[kind]
        if bool(artefact.each) != bool(name):
            needs = f"a name (one of the {artefact.each}s)" if artefact.each else "no name"
            raise ValueError(f"artefact kind {kind!r} takes {needs}, got {name!r}")
        allowed = fixed_names(artefact.each)
        if allowed is not None and name not in allowed:
            declared = f"the declared ones (sedlib.rundir.declaration) are {allowed}"
            raise KeyError(f"no {artefact.each} {name!r} is declared; {declared}")
        return self.root / artefact.template.format(name=name)

    def relative(self, path: Path | str) -> str:
        """``path`` relative to the run directory, as the records write it (``models/x.safetensors``)."""
        path = Path(path)
        return (path.relative_to(self.root) if path.is_absolute() else path).as_posix()

    # --- opening ----------------------------------------------------------------------------------------

    @classmethod
    def locate(cls, config: RunConfig, run_dir: str | Path | None = None, overrides: Mapping | None = None) -> RunDir:
        """The run directory of ``config``, neither created nor checked (`open` does both).

        Args:
            config: the run's configuration.
            run_dir: the directory; when None, ``runs/<run_name>`` under the project root, or with overrides
                their own ``runs/<run_name>+<key>=<value>...`` (`variant_name`). A relative path is taken
                relative to the project root (the rule for notebook parameters; command lines make their
                paths absolute from the working directory first).
            overrides: what was merged over the params file (``--set``, a notebook's ``overrides``).

        Raises:
            RunDirError: ``run_dir`` is the params file's own ``runs/<run_name>`` and there are overrides.
        """
        canonical = resolve_path(Path(RUNS_DIR) / config.run_name)
        if run_dir is None:
            return cls(canonical.with_name(variant_name(config.run_name, overrides)) if overrides else canonical)
        root = resolve_path(run_dir)
        if overrides and root.resolve() == canonical.resolve():
            raise RunDirError(
                f"{root} is the run of {config.source} as the file stands; a run with overrides "
                f"({' '.join(format_overrides(overrides))}) goes to its own directory, "
                f"runs/{variant_name(config.run_name, overrides)}: leave out the run directory"
            )
        return cls(root)

    @classmethod
    def open(cls, config: RunConfig, run_dir: str | Path | None = None, overrides: Mapping | None = None) -> RunDir:
        """Create or reopen the run directory of ``config``, refusing one made by another params file.

        A variant (overrides, no ``run_dir``) created here starts from the params file's own run: its
        feature files and trained models are hard-linked in with their records (`adopt`), and the stages
        reuse what their settings still match.

        Args:
            config: the run's configuration (``config.source`` names its params file).
            run_dir: the directory (see `locate`).
            overrides: what was merged over the params file (see `locate`).

        Raises:
            RunDirError: ``run.json`` names another params file or run name, or cannot be read.
        """
        root = cls.locate(config, run_dir, overrides).root
        record_file = root / "run.json"
        record = {"run_name": config.run_name, "params_file": project_relative(config.source)}
        if record_file.exists():
            try:
                existing = json.loads(record_file.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise RunDirError(f"{record_file} is unreadable ({error}); delete it to reclaim {root}") from error
            if {key: existing.get(key) for key in record} != record:
                raise RunDirError(
                    f"{root} was made by params file {existing.get('params_file')!r} "
                    f"(run {existing.get('run_name')!r}), not by {record['params_file']!r} (run {config.run_name!r}). "
                    "Its results are kept: give this study another run_name (or run_dir), or delete that directory "
                    "to start over."
                )
        else:
            if overrides:
                record["overrides"] = format_overrides(overrides)
            base = cls.locate(config)
            if run_dir is None and overrides and base._made_by(record):
                record["base"] = base.root.name
                cls(root).adopt(base, [r for r in base._read_ledger() if r.startswith(("features/", "models/"))])
            _write_json(record_file, record)
        params = yaml.dump(config.to_dict(), Dumper=ParamsDumper, sort_keys=False)
        params_path = root / "params.yaml"
        if not params_path.is_file() or params_path.read_text() != params:
            temporary = params_path.with_name(f".params.yaml.{os.getpid()}.tmp")
            temporary.write_text(params)
            os.replace(temporary, params_path)
        return cls(root)

    def _made_by(self, record: dict) -> bool:
        """Whether this directory exists and was made by the run name and params file of ``record``."""
        try:
            existing = json.loads((self.root / "run.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(existing, dict) and all(
            existing.get(key) == record[key] for key in ("run_name", "params_file")
        )

    def base(self) -> RunDir | None:
        """The params file's own run that this variant started from (``run.json``'s ``base``), or None."""
        try:
            base = json.loads((self.root / "run.json").read_text()).get("base")
        except (OSError, ValueError, AttributeError):
            return None
        return RunDir(self.root.parent / base) if isinstance(base, str) and (self.root.parent / base).is_dir() else None

    def adopt(self, source: RunDir, relatives: list[str]) -> list[str]:
        """Take files of another run directory in, by hard link (a copy across file systems), with their records.

        Only files whose size and modification time are still those ``source`` recorded are taken; their
        content hash comes with them, so every read verifies them as it verifies this run's own
        (`verified`). Every writer replaces a file through a rename (`writing`), never in place, so a later
        write here leaves ``source``'s file as it is.

        Returns:
            The files taken (relative paths).
        """
        ledger, taken = source._read_ledger(), {}
        for relative in relatives:
            origin, entry = source.root / relative, ledger.get(relative)
            if entry is None or not origin.is_file():
                continue
            stat = origin.stat()
            if (entry.get("bytes"), entry.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
                continue
            target = self.root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            try:
                os.link(origin, target)
            except OSError:
                shutil.copy2(origin, target)
            taken[relative] = {**entry, "mtime_ns": target.stat().st_mtime_ns}
        if taken:
            self._update_ledger(taken)
        return sorted(taken)

    def params_file(self) -> str:
        """The params file that made this directory, as ``run.json`` names it (for the commands in messages)."""
        try:
            return json.loads((self.root / "run.json").read_text())["params_file"]
        except (OSError, ValueError, KeyError, TypeError):
            return "params/<run>.yaml"

    def command(self) -> str:
        """The command that runs this directory's study: ``python -m sedlib.run <params file>`` (+ ``--set``).

        ``--run-dir`` is given only when the directory is not the default ``runs/<run_name>`` (or the
        variant's own, for a run with overrides).
        """
        try:
            run_name = json.loads((self.root / "run.json").read_text())["run_name"]
        except (OSError, ValueError, KeyError, TypeError):
            run_name = None
        try:
            overrides = json.loads((self.root / "run.json").read_text()).get("overrides", [])
        except (OSError, ValueError, AttributeError):
            overrides = []
        sets = "".join(f" --set {assignment}" for assignment in overrides)
        default = resolve_path(Path(RUNS_DIR) / str(run_name))
        default = default.with_name(variant_name(str(run_name), parse_overrides(overrides))) if overrides else default
        where = "" if self.root.resolve() == default.resolve() else f" --run-dir {self.root}"
        return f"python -m sedlib.run {self.params_file()}{where}{sets}"

    # --- the record of content hashes ----------------------------------------------------------------

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER_FILE

    def _read_ledger(self) -> dict[str, dict]:
        if not self.ledger.is_file():
            return {}
        try:
            ledger = json.loads(self.ledger.read_text())
            files = ledger["files"] if ledger.get("format") == LEDGER_FORMAT else None
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            files = None
        if not isinstance(files, dict):
            raise RunDirError(
                f"{self.ledger} is unreadable, so no artefact of {self.root} can be verified. Delete it: the next "
                f"`{self.command()}` then recomputes what it cannot trust (the feature "
                "files, which carry their own checksums, are kept)"
            )
        return files

    @contextlib.contextmanager
    def _ledger_locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the run directory's folder while the ledger is read and rewritten."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _update_ledger(self, entries: dict[str, dict]) -> None:
        with self._ledger_locked():
            files = self._read_ledger()
            files.update(entries)
            _write_json(self.ledger, {"format": LEDGER_FORMAT, "files": dict(sorted(files.items()))})

    def recorded(self, path: Path | str) -> dict | None:
        """The record of an artefact (``sha256``, ``bytes``, ``written``), or None when it has none."""
        return self._read_ledger().get(self.relative(path))

    def record(self, *paths: Path | str) -> None:
        """Record the content hashes of files completed in place by their own atomic writer (the features).

        A file whose record still holds (same content and modification time) keeps it; a self-checked one
        with its recorded size and time is not even read again (`content_hash`).
        """
        entries = {}
        for relative in map(self.relative, paths):
            current, recorded = self.content_hash(relative), self.recorded(relative) or {}
            mtime = (self.root / relative).stat().st_mtime_ns
            if (recorded.get("sha256"), recorded.get("mtime_ns")) != (current, mtime):
                entries[relative] = _entry(self.root / relative, current)
        if entries:
            self._update_ledger(entries)

    def content_hash(self, path: Path | str) -> str | None:
        """The sha256 of a file of the run directory now (None when it is missing).

        A self-checked artefact (`sedlib.rundir.declaration.Artefact.self_checked`: the feature files) whose size and
        modification time are the recorded ones gets its recorded hash without being read again.
        """
        relative = self.relative(path)
        full = self.root / relative
        if not full.is_file():
            return None
        kind = kind_of(relative)
        if kind is not None and ARTEFACTS[kind].self_checked:
            entry, stat = self.recorded(relative), full.stat()
            if entry and (entry.get("bytes"), entry.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
                return entry["sha256"]
        return file_sha256(full)

    def problem(self, path: Path | str) -> str | None:
        """Why an artefact cannot be trusted (missing, never recorded, changed since written), or None."""
        relative = self.relative(path)
        full = self.root / relative
        if not full.is_file():
            return f"{relative} is missing"
        entry = self.recorded(relative)
        if entry is None:
            return f"{relative} has no content hash in {LEDGER_FILE} (it was not written by this run's code)"
        if entry.get("bytes") != full.stat().st_size or entry.get("sha256") != file_sha256(full):
            return f"{relative} changed since it was written (its content hash differs from the one recorded)"
        return None

    def verified(self, path: Path | str) -> Path:
        """The path of an artefact whose content is what was recorded when it was written.

        Raises:
            ArtefactError: the file is missing, was never recorded, or changed since; the message says
                which stage writes it and the command that remakes it.
        """
        problem = self.problem(path)
        if problem is not None:
            raise ArtefactError(f"{problem}. {self.remedy(path)}")
        return self.root / self.relative(path)

    def remedy(self, path: Path | str) -> str:
        """What to do about a file that cannot be trusted: the stage that writes it, and the command."""
        stage = owner(self.relative(path))
        command = f"`{self.command()}`"
        if stage is None:
            return f"Run {command} to remake what this run needs."
        return f"Stage {stage} writes it: {command} reruns that stage and every stage after it that needs it."

    # --- writing ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, *paths: Path | str) -> Iterator[list[Path]]:
        """Write artefacts atomically: yields temporary paths (same names) that replace ``paths`` once complete.

        The block writes each temporary file. When it ends without an error, the files are flushed to
        disk, moved onto their final names in the order given (put the file that marks a group as
        complete last) and their content hashes recorded in ``artefacts.json``. When it raises, or the
        process dies, the final files and their records stay as they were.

        Args:
            paths: the final paths (absolute, or relative to the run directory).

        Raises:
            RunDirError: the block did not write one of the files, or wrote a file it did not name.

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     run = RunDir(Path(tmp))
            ...     with run.writing("results/note.txt") as (note,):
            ...         _ = note.write_text("done")
            ...     run.verified("results/note.txt").read_text()
            'done'
        """
        relatives = [self.relative(path) for path in paths]
        staging = self.root / STAGING_DIR / f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        temporaries = [staging / relative for relative in relatives]
        for temporary in temporaries:
            temporary.parent.mkdir(parents=True, exist_ok=True)
        try:
            yield temporaries
            written = {p for p in staging.rglob("*") if p.is_file()}
            unnamed = sorted(p.relative_to(staging).as_posix() for p in written - set(temporaries))
            missing = [relative for relative, p in zip(relatives, temporaries, strict=True) if p not in written]
            problems = [f"{missing} were not written"] if missing else []
            if unnamed:
                problems.append(f"{unnamed} were written but not named (declare them in sedlib.rundir.declaration)")
            if problems:
                raise RunDirError(f"writing {relatives} into {self.root}: {'; '.join(problems)}")
            entries = {}
            for relative, temporary in zip(relatives, temporaries, strict=True):
                fsync(temporary)
                entries[relative] = _entry(temporary)
            for relative, temporary in zip(relatives, temporaries, strict=True):
                final = self.root / relative
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary, final)
                fsync(final.parent, directory=True)
            self._update_ledger(entries)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.parent.rmdir()  # only when no other write is under way

    def save_csv(self, kind: str, frame, name: str = "") -> Path:
        """Write a DataFrame as the declared CSV artefact ``kind`` (without its index); returns the path."""
        with self.writing(self.path(kind, name)) as (temporary,):
            frame.to_csv(temporary, index=False)
        return self.path(kind, name)

    def save_text(self, kind: str, text: str, name: str = "") -> Path:
        """Write text (ending in one newline) as the declared artefact ``kind``; returns the path."""
        with self.writing(self.path(kind, name)) as (temporary,):
            temporary.write_text(text.rstrip("\n") + "\n")
        return self.path(kind, name)

    def save_figure(self, name: str, figure) -> Path:
        """Write a matplotlib figure as ``results/figures/<name>.png`` (150 dpi); returns the path.

        ``name`` must be one of the figures a stage declares (`sedlib.rundir.declaration.Stage.figures`).
        """
        path = self.path("figure", name)
        with self.writing(path) as (temporary,):
            figure.savefig(temporary, dpi=150, bbox_inches="tight")
        return path

    def read_csv(self, kind: str, name: str = ""):
        """Read a declared CSV artefact after verifying it (`verified`)."""
        import pandas as pd

        return pd.read_csv(self.verified(self.path(kind, name)))

    def stage_record(self, stage: str) -> dict | None:
        """What the runner recorded for a stage when it last completed (`sedlib.run`), or None."""
        path = self.root / record_path(stage)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def write_stage_record(self, stage: str, record: dict) -> None:
        _write_json(self.root / record_path(stage), record)

    def remove_stale_staging(self) -> None:
        """Remove the temporary folders of writes that a dead process left unfinished on this host."""
        staging = self.root / STAGING_DIR
        if not staging.is_dir():
            return
        host = socket.gethostname()
        for folder in staging.iterdir():
            folder_host, pid, _ = (folder.name.rsplit("-", 2) + ["", ""])[:3]
            if folder_host == host and pid.isdigit() and not alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
                logger.info("removed %s, left by an interrupted write", folder)
        with contextlib.suppress(OSError):
            staging.rmdir()

    # --- the lock ---------------------------------------------------------------------------------------

    def holder(self) -> dict | None:
        """Who holds the run directory's lock now (``holder``, ``pid``, ``host``, ``since``), or None."""
        return lock_holder(self.root)

    def lock(self, holder: str):
        """Hold the run directory's lock while a ``with`` block runs (`sedlib.rundir.lock.run_lock`)."""
        return run_lock(self.root, holder, before=self.remove_stale_staging)


#: The longest variant directory name kept readable; a longer one ends in a hash of the overrides instead.
VARIANT_NAME_MAX = 120


def variant_name(run_name: str, overrides: Mapping | None) -> str:
    """The folder name of a run with overrides: the run name and each ``KEY=VALUE``, joined by ``+``.

    Characters other than letters, digits and ``._=,-`` become ``_``; a name longer than `VARIANT_NAME_MAX`
    is cut and ends in a hash of the overrides, so different overrides never share a name by accident.

    Example:
        >>> variant_name("default", {"models": {"sed_a2d": {"lam": 0.7}}})
        'default+models.sed_a2d.lam=0.7'
        >>> variant_name("smoke", {"train": {"epochs": 1}, "seeds": [0, 1]})
        'smoke+train.epochs=1+seeds=_0,1_'
    """
    assignments = format_overrides(overrides or {})
    name = re.sub(r"[^\w.=,+-]", "_", "+".join([run_name, *assignments]))
    if len(name) > VARIANT_NAME_MAX:
        digest = hashlib.sha256(json.dumps(assignments).encode()).hexdigest()[:12]
        name = f"{name[: VARIANT_NAME_MAX - 13]}~{digest}"
    return name


def _entry(path: Path, sha256: str | None = None) -> dict:
    """A file's record: its content hash (``sha256`` when already known), size and modification time."""
    stat = path.stat()
    return {
        "sha256": sha256 or file_sha256(path),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
    }
