"""Find the Fashion-MNIST files of the embedded default study, or get them: ``make setup`` runs this first.

    python3 sedlib/data/get_fashion_mnist.py

It looks where `sedlib.data.load_fashion_mnist` reads (`fashion_mnist_dirs`). When the four idx files
are not there and this runs as root on Debian or Ubuntu, it installs the package
``dataset-fashion-mnist`` with apt (into ``/usr/share/datasets/fashion-mnist``); otherwise it stops
with the exact commands that get them, before anything else is set up. It uses the standard library
only, because it runs before the project's environment exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: The checkout that holds the ``sedlib`` package (as `sedlib.PROJECT_ROOT`; this file runs without sedlib).
_CHECKOUT = Path(__file__).resolve().parents[2]

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the idx files."""

APT_PACKAGE = "dataset-fashion-mnist"

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The four idx files (each may be gzipped, with ``.gz``)."""

DOWNLOAD_PAGE = "https://github.com/zalandoresearch/fashion-mnist"


def fashion_mnist_dirs() -> list[Path]:
    """Directories searched for Fashion-MNIST when no root is given, in order.

    ``$SED_DATA/fashion-mnist`` (when ``SED_DATA`` is set), ``<project root>/data/fashion-mnist``
    (the project root holds the ``sedlib`` package) and the Debian/Ubuntu package's
    ``/usr/share/datasets/fashion-mnist``.
    """
    dirs = []
    if os.environ.get("SED_DATA"):
        dirs.append(Path(os.environ["SED_DATA"]) / "fashion-mnist")
    dirs.append(_CHECKOUT / "data" / "fashion-mnist")
    dirs.append(FASHION_MNIST_SYSTEM_DIR)
    return dirs


def find_idx(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` if it exists, else ``directory/stem.gz`` if that does, else None."""
    return next((path for path in (directory / stem, directory / f"{stem}.gz") if path.is_file()), None)


def holds_fashion_mnist(directory: Path) -> bool:
    """Whether ``directory`` has all four idx files (plain or ``.gz``)."""
    return all(find_idx(directory, stem) is not None for stem in FASHION_MNIST_FILES)


def find_fashion_mnist(dirs: list[Path] | None = None) -> Path | None:
    """The first of ``dirs`` (default `fashion_mnist_dirs`) that holds the four files, or None."""
    return next((d for d in (fashion_mnist_dirs() if dirs is None else dirs) if holds_fashion_mnist(d)), None)


def how_to_get() -> str:
    """The commands that get the files, for a message."""
    return (
        f"Get them with `sudo apt-get install {APT_PACKAGE}` (Debian/Ubuntu), or download the four files "
        f"{', '.join(f'{stem}.gz' for stem in FASHION_MNIST_FILES)} from {DOWNLOAD_PAGE} into "
        "data/fashion-mnist/ under the project root (or into $SED_DATA/fashion-mnist/), then run the same command "
        "again."
    )


def _can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def main(dirs: list[Path] | None = None) -> int:
    """Report where the files are, install them with apt as root, or say how to get them (exit status 1)."""
    found = find_fashion_mnist(dirs)
    if found is None and _can_apt():
        print(f"Fashion-MNIST: not found; installing the Debian package {APT_PACKAGE} with apt-get", flush=True)
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", APT_PACKAGE]):
            subprocess.run(command, check=False, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = find_fashion_mnist(dirs)
    if found is None:
        tried = "\n".join(f"  {d}" for d in (fashion_mnist_dirs() if dirs is None else dirs))
        print(f"error: the Fashion-MNIST files were not found. Looked in:\n{tried}\n{how_to_get()}", file=sys.stderr)
        return 1
    print(f"Fashion-MNIST: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
