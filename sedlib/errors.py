"""The errors a user can meet in a run, in one hierarchy under `UserError`.

An error of `sedlib` that a user can cause or fix (a bad params file, image folders of the wrong layout,
an unreadable image or weights file, a damaged artefact, a run directory held by another run, a
diverged training run, a full disk) is a `UserError` and says, in plain words, which file, params key
or folder is concerned and what to do. Every such class is defined here, so that the runner
(`sedlib.run`) recognises one by its type: in its own process with ``isinstance``, and from
a notebook's kernel, which reports only the class name, with `user_error_class`. The runner shows a
user error's message as it is, and the class name of any other error beside its message, since that
one is likely a bug.

The modules that raise these errors import them from here (``sedlib.data.folders.FolderLayoutError`` is
this module's `FolderLayoutError`).

Example:
    >>> user_error_class("FolderLayoutError") is FolderLayoutError
    True
    >>> user_error_class("ValueError") is None, user_error_class("UserError") is UserError
    (True, True)
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class UserError(Exception):
    """An error whose message names what failed (file, params key, folder) and what to do about it."""


# --- params, data and backbones: found before or while stage 01 reads them ---------------------------


class ConfigError(UserError, ValueError):
    """A params file (or an override) has an unknown key, a wrong type or an invalid value.

    The message names the file, then the problems, one per line (a single problem on the same line).

    Attributes:
        problems: one line per problem, ``<key path>: <what is wrong>``.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    @classmethod
    def listing(cls, source: str, problems: list[str]) -> ConfigError:
        """The error of ``source`` with ``problems`` (one line each, in the order found)."""
        if len(problems) == 1:
            return cls(f"{source}: {problems[0]}", problems)
        return cls("\n  ".join([f"{source}: {len(problems)} problems", *problems]), problems)


class SettingError(UserError, ValueError):
    """An invalid setting of a configuration object built in code (`sedlib.config.TrainConfig`, a section).

    The message names the object and the setting (``TrainConfig.lam must lie in [0, 1], got 2.0``); ``key`` and
    ``reason`` let a params file report it under the key path its user wrote (``models.sed.lam: must lie in ...``).

    Attributes:
        key: the setting (a field of the object, with the index of a list item: ``member_lr[1]``).
        reason: what is wrong with it, starting with a verb (``must lie in [0, 1], got 2.0``).
    """

    def __init__(self, owner: str, key: str, reason: str) -> None:
        super().__init__(f"{owner}.{key} {reason}")
        self.key = key
        self.reason = reason


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the params name (or a stage needs) does not exist; the message says where it comes from."""


class FolderLayoutError(UserError, ValueError):
    """Image folders do not have the expected layout (the message names the folder and what is wrong)."""


class ImageReadError(UserError, ValueError):
    """An image file cannot be decoded (the message names the file)."""


class FeatureFileError(UserError, ValueError):
    """A feature file cannot be used (the message names the file and says what to change)."""


class PublishedFeaturesError(UserError, ValueError):
    """A file of the authors' feature caches does not have the layout it should."""


class TimmBackboneError(UserError, ValueError):
    """A ``timm:`` backbone cannot be built: an unknown model, or a weights file that does not fit it."""


class MissingWeightsError(UserError, RuntimeError):
    """A backbone's pretrained weights are not on this machine (runs are offline); the message says how to get them."""


# --- the run directory and its artefacts ------------------------------------------------------------


class RunDirError(UserError, RuntimeError):
    """The run directory belongs to another params file, or its records are unreadable."""


class ArtefactError(RunDirError):
    """An artefact a stage reads is missing, was never recorded, or changed since it was written."""


class LockError(UserError, RuntimeError):
    """The run directory's lock file cannot be created or locked (permissions, file system)."""


class RunDirLockedError(LockError):
    """Another process is writing the run directory (it holds ``.lock``)."""


class FeatureStoreError(UserError, RuntimeError):
    """A feature file cannot be used as it is."""


class StaleFeaturesError(FeatureStoreError):
    """The file was made with another manifest (other images, backbone, transform or parameters)."""


class CorruptFeaturesError(FeatureStoreError):
    """The file is unreadable, truncated, unfinished, inconsistent with its manifest or fails a checksum."""


class StaleEvaluationsError(UserError, RuntimeError):
    """A file of stored evaluations was made from other models, features or settings than asked for."""


class ReportError(UserError, RuntimeError):
    """The report cannot be rendered from what the run directory holds; the message says why."""


# --- what happens while a stage runs ----------------------------------------------------------------


class TrainingDivergedError(UserError, FloatingPointError):
    """A model's training loss became non-finite; the message names the model and the params key to change."""


class StageFailedError(UserError, RuntimeError):
    """A stage's notebook raised; the message says which stage, why, what to do and where the traceback is."""


class DiskFullError(UserError, OSError):
    """No space was left on the device a file was being written to (``errno.ENOSPC``)."""


def user_error_class(name: str) -> type[UserError] | None:
    """The `UserError` class called ``name`` (as a notebook kernel reports an error), or None for any other name.

    The classes are found by their type, among the subclasses of `UserError`, not among this module's names.
    """
    classes, found = [UserError], {}
    while classes:
        cls = classes.pop()
        found.setdefault(cls.__name__, cls)
        classes += cls.__subclasses__()
    return found.get(name)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is "no space left on device"."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        error = error.__cause__ or error.__context__
    return False


def almost_full(path: str | Path) -> bool:
    """Whether the file system holding ``path`` has less than a mebibyte free (a process died writing there)."""
    try:
        return shutil.disk_usage(path).free < 1 << 20
    except OSError:
        return False


def mount_point(path: str | Path) -> Path:
    """The mount point of the file system holding ``path``: the device a "no space left" message names."""
    path = Path(path).resolve()
    device = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == device:
        path = path.parent
    return path
