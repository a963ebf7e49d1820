"""Your own image folders (``data.dataset: folder``): class-per-subfolder train, validation and test sets.

The layout is torchvision's ``ImageFolder``'s::

    <train_path>/<class>/<image>        e.g. train/cat/001.png, train/dog/017.jpg
    <test_path>/<class>/<image>         the same class folders
    <val_path>/<class>/<image>          optional; else data.val_rows are held out of train
    <ood path>/<image> or <ood path>/<any folder>/<image>     each of data.ood_paths

Labels index the sorted class folder names of the training set (``cat`` 0, ``dog`` 1), which must
be at least two, and the other labelled sets must have exactly those class folders. Class names are
compared in Unicode NFC (macOS writes ``é`` decomposed, Linux composed). Files are listed as in
`sedlib.data.imagenet` (torchvision's order and image extensions; hidden files and folders such as
``.DS_Store``, ``._*`` and ``.ipynb_checkpoints`` are skipped, and counted in the log) and read,
transformed and corrupted by the same code as the ImageNet study's (`sedlib.data.imagenet.FolderImages`);
an image that cannot be decoded fails when it is read, naming its file.

`FolderSource` is the study's `sedlib.data.datasource.DataSource`: read as the ImageNet study's folders
(`sedlib.data.imagenet.ImageFolderSource`), named set by set as your feature files
(`sedlib.data.datasource.OwnDataSource`), with the test images corrupted at cache time as Fashion-MNIST's.

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

from sedlib.config import resolve_path
from sedlib.data.datasource import OwnDataSource
from sedlib.data.imagenet import (
    OWN_FOLDERS,
    ImageFolderSet,
    ImageFolderSource,
    class_name,
    layout_advice,
    list_class_folders,
    ood_folder,
    require_dir,
    visible,
)
from sedlib.data.plan import SplitPlan
from sedlib.errors import FolderLayoutError


def folder_classes(path: str | os.PathLike, split: str = "train") -> tuple[str, ...]:
    """The sorted names (NFC, `sedlib.data.imagenet.class_name`) of the class folders directly under ``path``.

    Hidden folders are not classes.

    Raises:
        FileNotFoundError: ``path`` is missing or not a directory.
        FolderLayoutError: two folders have the same name in different Unicode forms.
    """
    path = Path(path)
    require_dir(path, OWN_FOLDERS, f"{split} folder")
    with os.scandir(path) as entries:
        folders = [entry.name for entry in entries if entry.is_dir() and visible(entry.name)]
    names = sorted(class_name(folder) for folder in folders)
    twins = sorted({name for name in names if names.count(name) > 1})
    if twins:
        raise FolderLayoutError(
            f"the {split} folder {path} has class folders whose names differ only in their Unicode form "
            f"(accents written composed and decomposed): {twins}; merge each pair into one folder"
        )
    return tuple(names)


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
        FolderLayoutError: the class folders differ from ``class_names``, images lie outside class folders, or
            a training set has a single class.
    """
    path = Path(path)
    present = folder_classes(path, split)
    if class_names is None and len(present) == 1:
        raise FolderLayoutError(
            f"the {split} folder {path} has a single class folder {present[0]!r}; the ensembles are classifiers and "
            f"need at least two classes: add a class folder. {layout_advice(OWN_FOLDERS)}"
        )
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


class FolderSource(OwnDataSource, ImageFolderSource):
    """Your image folders (``data.dataset: folder``)."""

    name = "folder"
    description = "your image folders"
    corruption = "at_cache"

    def source_set(self, plan: SplitPlan) -> ImageFolderSet:
        data = self.config.data
        name = self.set_name(plan)
        if name not in ("train", "val", "test"):
            return ood_folder_set(resolve_path(data.ood_paths[name]), name)
        path = resolve_path(getattr(data, f"{name}_path"))
        classes = None if name == "train" else self.class_names()
        return class_folder_set(path, name, classes)

    def class_names(self) -> tuple[str, ...]:
        """The training set's class folders (`folder_classes`)."""
        return folder_classes(resolve_path(self.config.data.train_path))

    def describe_transform(self, plan: SplitPlan) -> str:
        described = super().describe_transform(plan)
        if plan.kind == "corruption":
            described += f"; {self.describe_corruption(plan)}"
        return described
