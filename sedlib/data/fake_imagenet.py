"""Tiny fake ImageNet-family folders, in every layout `sedlib.data.imagenet` reads, for tests and dry runs.

`make_fake_imagenet` writes small JPEGs under one data root, in the folders of
`sedlib.data.imagenet.DATASET_FOLDERS`: ImageNet-1k ``train``/``val`` (Russakovsky et al. 2015),
ImageNet-A/R (Hendrycks et al. 2021), ImageNet-C (Hendrycks & Dietterich 2019), iNaturalist (Huang & Li
2021) and OpenImage-O (Wang et al. 2022), so that the paper-scale pipeline of SED (arXiv:2409.16797) can
run end to end without the real data. The classes are wnids shared by ImageNet-A and ImageNet-R (86 of
them), so every subset class is also a training class. Each image is its class's colour plus noise,
deterministic from ``seed``; train and val images are not square, so crops and resizes are exercised.

Command line: ``python -m sedlib.data.fake_imagenet DIR [--classes N] ...`` prints what it wrote.

Example:
    >>> import tempfile
    >>> from sedlib.data.imagenet import imagenet_split
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = make_fake_imagenet(tmp, classes=2, train_per_class=3)
    ...     len(imagenet_split(root / "imagenet", "train"))
    6
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

from sedlib.data.imagenet import DATASET_FOLDERS, SEVERITIES, subset_wnids

_QUALITY = 90


def shared_subset_wnids() -> tuple[str, ...]:
    """The sorted wnids that are in both ImageNet-A and ImageNet-R (86)."""
    return tuple(sorted(set(subset_wnids("imagenet_a")) & set(subset_wnids("imagenet_r"))))


def fake_wnids(classes: int) -> tuple[str, ...]:
    """``classes`` wnids spread evenly over `shared_subset_wnids` (first and last included), sorted."""
    shared = shared_subset_wnids()
    if not 1 <= classes <= len(shared):
        raise ValueError(f"classes must lie in [1, {len(shared)}] (wnids shared by ImageNet-A and -R), got {classes}")
    picks = np.linspace(0, len(shared) - 1, classes).round().astype(int) if classes > 1 else np.array([0])
    return tuple(shared[k] for k in picks)


def _image(rng: np.random.Generator, colour: np.ndarray, width: int, height: int) -> Image.Image:
    """The colour plus uniform noise of +-40 and a brighter top-left quarter (so flips show), as RGB."""
    pixels = colour[None, None, :] + rng.integers(-40, 41, size=(height, width, 3))
    pixels[: height // 2, : width // 2] += 50
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _write(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=_QUALITY)


def make_fake_imagenet(
    root: str | os.PathLike,
    classes: int = 3,
    train_per_class: int = 4,
    val_per_class: int = 2,
    subset_per_class: int = 2,
    ood_images: int = 6,
    corruptions: tuple[str, ...] = ("gaussian_noise", "fog"),
    severities: tuple[int, ...] = (1, 5),
    image_size: int = 40,
    seed: int = 0,
) -> Path:
    """Write tiny JPEGs in every ImageNet-family layout under ``root``.

    Layout (folder names from `DATASET_FOLDERS`; ``S = image_size``, ``S' = round(1.2 S)``)::

        imagenet/train/<wnid>/<wnid>_<k>.JPEG            S' x S (width x height), train_per_class each
        imagenet/val/<wnid>/ILSVRC2012_val_<n>.JPEG      S x S', val_per_class each
        imagenet-a/<wnid>/<k>.jpg, imagenet-r/<wnid>/art_<k>.jpg   S' x S', subset_per_class each,
                                                         plus README.txt (as in the real tarballs)
        imagenet-c/<corruption>/<severity>/<wnid>/ILSVRC2012_val_<n>.JPEG   S x S, val_per_class each
        iNaturalist/images/<hex>.jpg, openimage-o/<hex>.jpg   ood_images each, assorted sizes
                                                         (one grey-scale image in openimage-o)

    Args:
        root: the data root; created if missing. Its dataset folders must not exist yet, or be empty.
        classes: number of classes, 1 to 86 (wnids shared by ImageNet-A and -R, `fake_wnids`).
        train_per_class: training images per class.
        val_per_class: validation (and ImageNet-C) images per class.
        subset_per_class: ImageNet-A and ImageNet-R images per class.
        ood_images: images of each OOD set.
        corruptions: ImageNet-C corruption folder names.
        severities: ImageNet-C severities (1-5).
        image_size: side S of the square ImageNet-C images; the others are derived from it.
        seed: seed of all pixel values.

    Returns:
        ``root`` as a Path.

    Raises:
        FileExistsError: a dataset folder under ``root`` already holds something (nothing is written).
        ValueError: an argument out of range.
    """
    for label, count in (
        ("train_per_class", train_per_class),
        ("val_per_class", val_per_class),
        ("subset_per_class", subset_per_class),
        ("ood_images", ood_images),
    ):
        if count < 1:
            raise ValueError(f"{label} must be at least 1, got {count}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    if not set(severities) <= set(SEVERITIES) or not severities:
        raise ValueError(f"severities must be a non-empty subset of {SEVERITIES}, got {severities}")
    if not corruptions or any(not c or "/" in c or c.isdigit() for c in corruptions):
        raise ValueError(f"corruptions must be non-empty folder names, got {corruptions}")
    wnids = fake_wnids(classes)
    root = Path(root)
    for folder in DATASET_FOLDERS.values():
        target = root / folder
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise FileExistsError(
                f"{target} already exists and is not empty; make_fake_imagenet writes only new folders"
            )
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(len(wnids), 3))
    size, long = image_size, int(round(1.2 * image_size))

    imagenet = root / DATASET_FOLDERS["imagenet"]
    val_number = 0
    for c, wnid in enumerate(wnids):
        for k in range(train_per_class):
            _write(imagenet / "train" / wnid / f"{wnid}_{k + 1}.JPEG", _image(rng, colours[c], long, size))
        for _ in range(val_per_class):
            val_number += 1
            _write(
                imagenet / "val" / wnid / f"ILSVRC2012_val_{val_number:08d}.JPEG", _image(rng, colours[c], size, long)
            )
    for name, pattern in (("imagenet_a", "{k:06d}.jpg"), ("imagenet_r", "art_{k}.jpg")):
        folder = root / DATASET_FOLDERS[name]
        for c, wnid in enumerate(wnids):
            for k in range(subset_per_class):
                _write(folder / wnid / pattern.format(k=k), _image(rng, colours[c], long, long))
        (folder / "README.txt").write_text(f"Fake {name} written by sedlib.data.fake_imagenet (seed {seed}).\n")
    imagenet_c = root / DATASET_FOLDERS["imagenet_c"]
    for corruption in corruptions:
        for severity in severities:
            number = 0
            for c, wnid in enumerate(wnids):
                for _ in range(val_per_class):
                    number += 1
                    path = imagenet_c / corruption / str(severity) / wnid / f"ILSVRC2012_val_{number:08d}.JPEG"
                    _write(path, _image(rng, colours[c], size, size))
    for name, subfolder in (("inaturalist", "images"), ("openimage_o", "")):
        folder = root / DATASET_FOLDERS[name] / subfolder
        for k in range(ood_images):
            width, height = int(rng.integers(size, 2 * size)), int(rng.integers(size, 2 * size))
            image = _image(rng, rng.integers(0, 256, size=3), width, height)
            if name == "openimage_o" and k == 0:
                image = image.convert("L")
            _write(folder / f"{rng.bytes(8).hex()}.jpg", image)
    return root


def _counts(root: Path) -> list[tuple[str, int]]:
    """Images written under each dataset folder."""
    return [
        (folder, sum(1 for path in (root / folder).rglob("*") if path.suffix.lower() in (".jpeg", ".jpg")))
        for folder in DATASET_FOLDERS.values()
    ]


def main(argv: list[str] | None = None) -> None:
    """Command line: write the fake folders and print what was written."""
    parser = argparse.ArgumentParser(
        prog="python -m sedlib.data.fake_imagenet", description="Write tiny fake ImageNet-family folders under DIR."
    )
    parser.add_argument("dir", type=Path, help="data root to write into (its dataset folders must be new or empty)")
    parser.add_argument("--classes", type=int, default=3, help="classes, 1-86 (default 3)")
    parser.add_argument("--train-per-class", type=int, default=4)
    parser.add_argument("--val-per-class", type=int, default=2)
    parser.add_argument("--subset-per-class", type=int, default=2)
    parser.add_argument("--ood-images", type=int, default=6)
    parser.add_argument("--corruptions", nargs="+", default=["gaussian_noise", "fog"])
    parser.add_argument("--severities", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--image-size", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = make_fake_imagenet(
        args.dir,
        classes=args.classes,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        subset_per_class=args.subset_per_class,
        ood_images=args.ood_images,
        corruptions=tuple(args.corruptions),
        severities=tuple(args.severities),
        image_size=args.image_size,
        seed=args.seed,
    )
    print(f"fake ImageNet-family folders under {root} (classes: {', '.join(fake_wnids(args.classes))}):")
    for folder, count in _counts(root):
        print(f"  {folder}/: {count} images")


if __name__ == "__main__":
    main()
