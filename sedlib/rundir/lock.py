"""The run directory's lock: one writer at a time, and nothing left running by a writer that was killed.

The runner (`sedlib.run`) and the cache stage hold ``runs/<run>/.lock`` (an exclusive
``flock``) while they work; a second one is refused with a message naming the holder. The notebooks the
runner starts work under the runner's lock: it hands them a token through the environment
(``SEDLIB_RUN_LOCK``). A runner killed outright (``kill -9``) cannot release anything; the next run that
takes the lock stops every process still carrying the dead run's token (its notebook kernel,
data-loader workers) before it starts (`stop_leftovers`), and says so. The lock file names its holder only
while it is held (`lock_holder`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from sedlib.errors import LockError, RunDirLockedError

LOCK_FILE = ".lock"
LOCK_ENVIRONMENT_VARIABLE = "SEDLIB_RUN_LOCK"
"""Token of the lock this process works under; set while it holds one, so that its child processes inherit it."""

logger = logging.getLogger("sedlib.rundir.lock")
_held: set[Path] = set()  # lock files this process holds: taking one again is a no-op, not a refusal


def _read_holder(path: Path) -> dict:
    """What the holder of a lock file wrote into it; empty while it is being written or unreadable."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def lock_holder(root: Path) -> dict | None:
    """Who holds the lock of run directory ``root`` now (``holder``, ``pid``, ``host``, ``since``), or None."""
    import fcntl

    path = root / LOCK_FILE
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return {key: value for key, value in _read_holder(path).items() if key != "token"}
    finally:
        os.close(fd)
    return None


@contextlib.contextmanager
def run_lock(root: Path, holder: str, before: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold the run directory's lock (``.lock``, an exclusive ``flock``) while the block runs.

    The lock is released when the block ends or the process dies. Taking it again in the process
    that holds it, or in a process started by the holder (which inherits the
    ``SEDLIB_RUN_LOCK`` token, e.g. the notebooks the runner executes), works under the held lock.
    Taking a lock whose last holder died without releasing it (``kill -9``) first stops the
    processes that holder started and left running (`stop_leftovers`), then calls ``before``.

    Args:
        root: the run directory.
        holder: what is writing, for the message another run gets, e.g. ``python -m sedlib.run params/x.yaml``.
        before: what to do once the lock is taken and before the block runs (the run directory removes
            the temporary folders of interrupted writes).

    Raises:
        RunDirLockedError: another process holds the lock; the message names its PID, host and command.
        LockError: the lock file cannot be created (e.g. no write permission).
    """
    import fcntl  # POSIX (Linux, macOS); imported here so that reading a run directory works anywhere

    path = root / LOCK_FILE
    key = path.resolve()
    if key in _held:
        yield
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise LockError(
            f"{path}: cannot create the run directory's lock file ({error}); make {root} writable, or "
            "choose another run_dir"
        ) from error
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner_record = _read_holder(path)
        except OSError as error:
            raise LockError(
                f"{path}: cannot be locked ({error}); the file system of {root} may not support file "
                "locks (some network file systems): put the run directory on one that does"
            ) from error
        else:
            owner_record = None
        if owner_record is not None:
            if not owner_record.get("token") or owner_record["token"] != os.environ.get(LOCK_ENVIRONMENT_VARIABLE):
                raise RunDirLockedError(
                    f"{root} is being written by another run: {owner_record.get('holder', 'unknown')!r}, PID "
                    f"{owner_record.get('pid', '?')} on host {owner_record.get('host', '?')}, since "
                    f"{owner_record.get('since', '?')} (it holds {path}). Two runs writing one directory would mix "
                    "their files, so this one stops. Wait until that run has finished, or stop it, and start this "
                    "one again; the lock goes away by itself when its process ends."
                )
            yield  # a process the holder started, e.g. a notebook executed by the runner
            return
        stop_leftovers(_read_holder(path), root)
        before()
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


def stop_leftovers(previous: dict, root: Path, grace_seconds: float = 5.0) -> list[int]:
    """Stop the processes a dead lock holder left running: those that carry its token in their environment.

    A runner killed outright cannot stop the notebook kernel it started (the kernel runs in a session
    of its own, and ipykernel notices a dead parent only at its next poll). Every process the runner
    started inherits its lock token (``SEDLIB_RUN_LOCK``), so this finds them all, on this host, and
    ends them: SIGTERM, then SIGKILL after ``grace_seconds``.

    Args:
        previous: what the dead holder wrote into the lock file (empty when it released the lock).
        root: the run directory (for the message).
        grace_seconds: how long a process has to end after SIGTERM.

    Returns:
        The PIDs stopped.
    """
    token = previous.get("token")
    if not token or previous.get("host") != socket.gethostname():
        return []
    import psutil

    wanted = f"{token}"
    found = []
    for process in psutil.process_iter(["pid"]):
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(LOCK_ENVIRONMENT_VARIABLE) == wanted:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(found, timeout=grace_seconds)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=grace_seconds)
    pids = [process.pid for process in found]
    logger.warning(
        "%s: the run that held it (%r, PID %s, since %s) ended without releasing it%s",
        root,
        previous.get("holder", "?"),
        previous.get("pid", "?"),
        previous.get("since", "?"),
        f"; stopped the {len(pids)} process(es) it had started and left running (PID {', '.join(map(str, pids))})"
        if pids
        else "",
    )
    return pids
