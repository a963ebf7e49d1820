"""Your own image folders (``data.dataset: folder``): class-per-subfolder train, validation and test sets.

The layout is torchvision's ``ImageFolder``'s::

    <train_path>/<class>/<image>        e.g. train/cat/001.png, train/dog/017.jpg
    <test_path>/<class>/<image>         the same class folders
    <val_path>/<class>/<image>          optional; else data.val_rows are held out of train
    <ood path>/<image> or <ood path>/<any folder>/<image>     each of data.ood_paths

Labels index the sorted class folder names of the training set (``cat`` 0, ``dog`` 1), and the other
labelled sets must have exactly those class folders. Files are listed as in `sedlib.data.imagenet`
(torchvision's order and image extensions) and read, transformed and corrupted by the same code as the
ImageNet study's (`sedlib.data.imagenet.FolderImages`); an image that cannot be decoded fails when it is
read, naming its file.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("dog/1.png", "cat/1.png", "cat/2.png"):
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     Image.new("L", (8, 8)).save(root / name)
    >>> images = class_folder_set(root, "train")
    >>> images.class_names, images.files, images.labels.tolist()
    (('cat', 'dog'), ('cat/1.png', 'cat/2.png', 'dog/1.png'), [0, 0, 1])
"""

from __future__ import annotations

import os
from pathlib import Path

from sedlib.data.imagenet import (
    OWN_FOLDERS,
    ImageFolderSet,
    layout_advice,
    list_class_folders,
    ood_folder,
    require_dir,
)
from sedlib.errors import SedlibError


class FolderLayoutError(SedlibError, ValueError):
    """Your image folders do not have the expected layout (the message names the folder and what is wrong)."""


def folder_classes(path: str | os.PathLike, split: str = "train") -> tuple[str, ...]:
    """The sorted names of the class folders directly under ``path``.

    Raises:
        FileNotFoundError: ``path`` is missing or not a directory.
    """
    path = Path(path)
    require_dir(path, OWN_FOLDERS, f"{split} folder")
    with os.scandir(path) as entries:
        return tuple(sorted(entry.name for entry in entries if entry.is_dir()))


def class_folder_set(path: str | os.PathLike, split: str, class_names: tuple[str, ...] | None = None) -> ImageFolderSet:
    """A labelled set of your own: ``path/<class>/<image>``.

    Args:
        path: the set's folder.
        split: ``train``, ``val`` or ``test``: names the set (``folder/<split>``) and the errors.
        class_names: the classes the set must have exactly (the training set's, sorted); None for the
            set's own (the training set).

    Returns:
        ImageFolderSet ``folder/<split>`` rooted at ``path``; labels index ``class_names``.

    Raises:
        FileNotFoundError: the folder is missing or empty, or a class folder holds no image.
        FolderLayoutError: the class folders differ from ``class_names``, or images lie outside class folders.
    """
    path = Path(path)
    present = folder_classes(path, split)
    if class_names is not None and present != tuple(class_names):
        missing = sorted(set(class_names) - set(present))
        extra = sorted(set(present) - set(class_names))
        problem = (
            f"the {split} folder {path} has other class folders than the training set's {list(class_names)}: "
            + "; ".join(
                text
                for text in (
                    f"missing {missing}" if missing else "",
                    f"not in the training set {extra}" if extra else "",
                )
                if text
            )
        )
        raise FolderLayoutError(f"{problem}. {layout_advice(OWN_FOLDERS)}")
    try:
        files, labels = list_class_folders(path, present, OWN_FOLDERS, split)
    except ValueError as error:  # images beside the class folders
        raise FolderLayoutError(str(error)) from error
    return ImageFolderSet(f"{OWN_FOLDERS}/{split}", path, files, labels, present)


def ood_folder_set(path: str | os.PathLike, name: str) -> ImageFolderSet:
    """A semantic-OOD set of your own: every image under ``path`` (flat or in sub-folders), labels -1.

    Returns:
        ImageFolderSet ``folder/<name>``.

    Raises:
        FileNotFoundError: ``path`` is missing or holds no image.
    """
    return ood_folder(path, f"{OWN_FOLDERS}/{name}")
