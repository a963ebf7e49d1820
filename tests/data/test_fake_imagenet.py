import time

import numpy as np
import pytest
from PIL import Image

from sedlib.data.fake_imagenet import fake_wnids, main, make_fake_imagenet, shared_subset_wnids
from sedlib.data.imagenet import (
    DATASET_FOLDERS,
    imagenet_c_split,
    imagenet_split,
    imagenet_wnids,
    ood_folder,
    subset_split,
    subset_wnids,
)


def all_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_defaults_write_every_layout_quickly(tmp_path):
    start = time.perf_counter()
    root = make_fake_imagenet(tmp_path / "data")
    assert time.perf_counter() - start < 1.0
    assert root == tmp_path / "data"
    assert sorted(p.name for p in root.iterdir()) == sorted(DATASET_FOLDERS.values())
    wnids = fake_wnids(3)
    assert len(wnids) == 3 and set(wnids) <= set(shared_subset_wnids())
    train = imagenet_split(root / "imagenet", "train")
    val = imagenet_split(root / "imagenet", "val")
    assert len(train) == 12 and len(val) == 6
    assert sorted(set(train.labels.tolist())) == [imagenet_wnids().index(w) for w in wnids]
    for name in ("imagenet_a", "imagenet_r"):
        images = subset_split(root / DATASET_FOLDERS[name], name)
        assert len(images) == 6
        assert [images.class_names[k] for k in sorted(set(images.labels.tolist()))] == list(wnids)
        assert (root / DATASET_FOLDERS[name] / "README.txt").is_file()
    for corruption in ("gaussian_noise", "fog"):
        for severity in (1, 5):
            images = imagenet_c_split(root / "imagenet-c", corruption, severity)
            assert len(images) == 6 and images.labels.tolist() == val.labels.tolist()
    assert sorted(p.name for p in (root / "imagenet-c" / "fog").iterdir()) == ["1", "5"]
    for name in ("inaturalist", "openimage_o"):
        assert len(ood_folder(root / DATASET_FOLDERS[name], name)) == 6
    assert all(f.startswith("images/") for f in ood_folder(root / "iNaturalist", "inaturalist").files)


def test_image_sizes_and_modes(tmp_path):
    root = make_fake_imagenet(tmp_path, image_size=40)
    sizes = {}
    for name, images in (
        ("train", imagenet_split(root / "imagenet", "train")),
        ("val", imagenet_split(root / "imagenet", "val")),
        ("c", imagenet_c_split(root / "imagenet-c", "fog", 1)),
        ("a", subset_split(root / "imagenet-a", "imagenet_a")),
    ):
        with Image.open(images.path(0)) as image:
            sizes[name] = image.size
            assert image.format == "JPEG" and image.mode == "RGB"
    assert sizes == {"train": (48, 40), "val": (40, 48), "c": (40, 40), "a": (48, 48)}
    modes = []
    for path in ood_folder(root / "openimage-o", "openimage_o").files:
        with Image.open(root / "openimage-o" / path) as image:
            modes.append(image.mode)
    assert sorted(set(modes)) == ["L", "RGB"]


def test_images_depend_on_their_class(tmp_path):
    root = make_fake_imagenet(tmp_path, classes=4, train_per_class=3)
    train = imagenet_split(root / "imagenet", "train")
    means = []
    for i in range(len(train)):
        with Image.open(train.path(i)) as image:
            means.append(np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0))
    means = np.array(means)
    labels = train.labels
    within = max(np.abs(means[labels == k] - means[labels == k].mean(axis=0)).max() for k in set(labels))
    centres = np.array([means[labels == k].mean(axis=0) for k in sorted(set(labels))])
    between = min(np.abs(a - b).max() for i, a in enumerate(centres) for b in centres[i + 1 :])
    assert within < 5 < between


def test_deterministic_from_seed(tmp_path):
    first = make_fake_imagenet(tmp_path / "a", seed=1)
    second = make_fake_imagenet(tmp_path / "b", seed=1)
    other = make_fake_imagenet(tmp_path / "c", seed=2)
    names = all_files(first)
    assert names == all_files(second)
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    shared = [n for n in names if "imagenet/" in n]
    assert shared and all((first / n).read_bytes() != (other / n).read_bytes() for n in shared)


def test_fake_wnids():
    shared = shared_subset_wnids()
    assert len(shared) == 86
    assert set(shared) == set(subset_wnids("imagenet_a")) & set(subset_wnids("imagenet_r"))
    assert fake_wnids(1) == (shared[0],)
    assert fake_wnids(2) == (shared[0], shared[-1])
    assert fake_wnids(86) == shared
    for bad in (0, 87):
        with pytest.raises(ValueError, match=r"\[1, 86\]"):
            fake_wnids(bad)


def test_refuses_existing_dataset_folders_and_bad_arguments(tmp_path):
    (tmp_path / "imagenet-a").mkdir()
    (tmp_path / "imagenet-a" / "keep.txt").write_text("real data")
    with pytest.raises(FileExistsError, match="imagenet-a"):
        make_fake_imagenet(tmp_path)
    assert all_files(tmp_path) == ["imagenet-a/keep.txt"]
    for kwargs, match in (
        ({"train_per_class": 0}, "train_per_class"),
        ({"severities": (0,)}, "severities"),
        ({"image_size": 4}, "image_size"),
        ({"corruptions": ("3",)}, "corruptions"),
        ({"classes": 100}, "classes"),
    ):
        with pytest.raises(ValueError, match=match):
            make_fake_imagenet(tmp_path / "new", **kwargs)


def test_command_line(tmp_path, capsys):
    main([str(tmp_path), "--classes", "2", "--corruptions", "snow", "--severities", "3", "--image-size", "24"])
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "imagenet-c/: 4 images" in out and "imagenet/: 12 images" in out
    assert len(imagenet_c_split(tmp_path / "imagenet-c", "snow", 3)) == 4
