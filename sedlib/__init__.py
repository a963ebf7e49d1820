"""sedlib: Scalable Ensemble Diversification (SED) for OOD generalisation and detection.

A small library behind the project's notebooks. It implements the method of

    Rubinstein, Scimeca, Teney, Oh. *Scalable Ensemble Diversification for OOD
    Generalization and Detection*. arXiv:2409.16797, https://arxiv.org/abs/2409.16797

on cached features of a frozen backbone: an ensemble of small heads (`sedlib.method.ensemble`),
the SED objective (`sedlib.method.losses`), the pair schedules and training loop (`sedlib.method.train`),
per-sample OOD scores (`sedlib.eval.scores`), metrics (`sedlib.eval.metrics`) and streamed evaluation
(`sedlib.eval.evaluate`). `python -m sedlib.bench` measures training speed.
"""

import hashlib
import os
from pathlib import Path

__version__ = "0.1.0"


def is_checkout(folder: Path) -> bool:
    """Whether a folder is a project checkout: it holds the notebooks and the params files."""
    return (folder / "notebooks" / "01_cache.py").is_file() and (folder / "params").is_dir()


def find_project_root() -> Path:
    """The checkout whose params/, notebooks/ and runs/ the commands use.

    An editable install (``make setup``) lives in its checkout. An installed copy (``pip install .``) does not:
    then the checkout is the working directory or the nearest folder above it that is one.
    """
    package_parent = Path(__file__).resolve().parent.parent
    if is_checkout(package_parent):
        return package_parent
    here = Path.cwd().resolve()
    return next((folder for folder in (here, *here.parents) if is_checkout(folder)), package_parent)


#: The checkout: params/, notebooks/, runs/, _quarto.yml (`find_project_root`).
PROJECT_ROOT = find_project_root()


def file_sha256(path: Path) -> str:
    """sha256 of a file's content, read in 1 MiB blocks (what every recorded content hash is)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync(path: Path, directory: bool = False) -> None:
    """Flush a file, or a folder's entries, to disk, so that a rename after it cannot outrun the content."""
    if directory and os.name != "posix":
        return  # directories cannot be opened (or synced) on Windows
    fd = os.open(path, os.O_RDONLY if directory else os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
