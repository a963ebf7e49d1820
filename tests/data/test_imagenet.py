import importlib.util
import os
import re
import shutil
from importlib.resources import files as package_files
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sedlib._compat import import_torchvision
from sedlib.data import imagenet as inet
from sedlib.data.fake_imagenet import make_fake_imagenet
from sedlib.data.imagenet import (
    DATASET_FOLDERS,
    LAYOUTS,
    OOD_FOLDER_SETS,
    SUBSET_SETS,
    TRANSFORMS,
    FolderImages,
    ImageFolderSet,
    as_is_transform,
    eval_transform,
    image_loader,
    imagenet_c_split,
    imagenet_split,
    imagenet_wnids,
    ood_folder,
    resize_size,
    subset_mask,
    subset_split,
    subset_wnids,
    train_transform,
)
from sedlib.data.transforms import random_resized_crop_box

WNID_FILES = {"imagenet": "imagenet_1k.txt", "imagenet_a": "imagenet_a.txt", "imagenet_r": "imagenet_r.txt"}


def read_wnid_file(key: str) -> list[str]:
    """The wnid list straight from the packaged text file (independent of the module's cache)."""
    return package_files("sedlib.data").joinpath("wnids", WNID_FILES[key]).read_text().split()


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> Path:
    return make_fake_imagenet(tmp_path_factory.mktemp("fake"), classes=3)


def reference_torchvision():
    """torchvision, the reference these readers are checked against, imported by the tests that compare with it
    (2 s that every pytest-xdist worker would otherwise pay while collecting)."""
    import_torchvision()  # before any torchvision import
    import torchvision.datasets
    import torchvision.transforms

    return torchvision


def imagefolder_order(folder: Path) -> tuple[list[str], list[str]]:
    """torchvision's ImageFolder listing: relative paths and the wnid (class folder) of each."""
    dataset = reference_torchvision().datasets.ImageFolder(str(folder))
    paths = [os.path.relpath(path, folder) for path, _ in dataset.samples]
    return paths, [dataset.classes[target] for _, target in dataset.samples]


# --- wnid lists and masks -------------------------------------------------------------------------


def test_wnid_files_are_sorted_unique_wnids():
    for key, count in (("imagenet", 1000), ("imagenet_a", 200), ("imagenet_r", 200)):
        wnids = read_wnid_file(key)
        assert len(wnids) == count and wnids == sorted(set(wnids))
        assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert imagenet_wnids() == tuple(read_wnid_file("imagenet"))
    assert imagenet_wnids()[:2] == ("n01440764", "n01443537") and imagenet_wnids()[-1] == "n15075141"
    for name in SUBSET_SETS:
        assert subset_wnids(name) == tuple(read_wnid_file(name))
        assert set(subset_wnids(name)) <= set(imagenet_wnids())
    assert len(set(subset_wnids("imagenet_a")) & set(subset_wnids("imagenet_r"))) == 86


@pytest.mark.parametrize("name", SUBSET_SETS)
def test_subset_mask(name):
    mask = subset_mask(name)
    assert mask.shape == (200,) and mask.dtype == np.int64
    assert (np.diff(mask) > 0).all() and mask.min() >= 0 and mask.max() < 1000
    wnids = imagenet_wnids()
    assert tuple(wnids[k] for k in mask) == subset_wnids(name)
    # the authors' construction: a boolean mask over the sorted 1000 wnids
    boolean = np.array([wnid in set(subset_wnids(name)) for wnid in wnids])
    assert np.array_equal(np.flatnonzero(boolean), mask)
    # timm ships the same positions as an index file of its own
    timm_dir = importlib.util.find_spec("timm").submodule_search_locations[0]  # found, not imported
    timm_info = Path(timm_dir, "data", "_info", f"{name}_indices.txt")
    assert mask.tolist() == [int(v) for v in timm_info.read_text().split()]


def test_subset_mask_golden_values():
    assert subset_mask("imagenet_a")[:3].tolist() == [6, 11, 13]
    assert subset_mask("imagenet_r")[:3].tolist() == [1, 2, 4]
    with pytest.raises(ValueError, match="imagenet_a"):
        subset_mask("imagenet_b")


def test_constants():
    assert set(LAYOUTS) == set(DATASET_FOLDERS) and set(SUBSET_SETS) | set(OOD_FOLDER_SETS) < set(DATASET_FOLDERS)
    assert inet.IMG_EXTENSIONS == reference_torchvision().datasets.folder.IMG_EXTENSIONS
    assert TRANSFORMS == ("train", "eval", "as_is")
    assert resize_size(224) == 256 and resize_size(112) == 128 and resize_size(32) == 37


# --- listing: counts, order, labels ---------------------------------------------------------------


def test_imagenet_splits(fake):
    wnids = imagenet_wnids()
    for split, per_class in (("train", 4), ("val", 2)):
        images = imagenet_split(fake / "imagenet", split)
        assert images.name == f"imagenet_{split}" and images.root == fake / "imagenet" / split
        assert len(images) == 3 * per_class and images.class_names == wnids
        paths, classes = imagefolder_order(images.root)
        assert list(images.files) == paths
        assert images.labels.dtype == np.int64
        assert images.labels.tolist() == [wnids.index(c) for c in classes]
        assert images.labels.tolist() == [wnids.index(Path(f).parts[0]) for f in images.files]
        assert images.path(0) == images.root / images.files[0] and images.path(0).is_file()


def test_imagenet_c_split(fake):
    images = imagenet_c_split(fake / "imagenet-c", "fog", 5)
    assert images.name == "imagenet_c/fog/5" and images.root == fake / "imagenet-c" / "fog" / "5"
    assert len(images) == 6 and images.class_names == imagenet_wnids()
    paths, classes = imagefolder_order(images.root)
    assert list(images.files) == paths
    assert images.labels.tolist() == [imagenet_wnids().index(c) for c in classes]
    assert imagenet_c_split(fake / "imagenet-c", "gaussian_noise", np.int64(1)).name == "imagenet_c/gaussian_noise/1"


@pytest.mark.parametrize("name", SUBSET_SETS)
def test_subset_split(fake, name):
    images = subset_split(fake / DATASET_FOLDERS[name], name)
    assert images.name == name and len(images) == 6 and images.class_names == subset_wnids(name)
    paths, classes = imagefolder_order(images.root)  # README.txt at the top is ignored by both
    assert list(images.files) == paths
    assert images.labels.tolist() == [read_wnid_file(name).index(c) for c in classes]
    # the same images labelled in 1000 classes and mapped through the mask
    assert np.array_equal(subset_mask(name)[images.labels], [imagenet_wnids().index(c) for c in classes])


@pytest.mark.parametrize("name", OOD_FOLDER_SETS)
def test_ood_folder(fake, name):
    images = ood_folder(fake / DATASET_FOLDERS[name], name)
    assert images.name == name and len(images) == 6 and images.class_names == ()
    assert images.labels.dtype == np.int64 and (images.labels == -1).all()
    assert list(images.files) == sorted(images.files)
    on_disk = sorted(str(p.relative_to(images.root)) for p in images.root.rglob("*.jpg"))
    assert list(images.files) == on_disk


def test_ood_folder_order_equals_imagefolder_for_one_folder(fake):
    images = ood_folder(fake / "iNaturalist", "inaturalist")
    assert list(images.files) == imagefolder_order(fake / "iNaturalist")[0]


def test_order_matches_imagefolder_on_a_nested_tree(tmp_path):
    """Nested folders, mixed-case extensions, non-images and names that sort differently as paths."""
    wnids = imagenet_wnids()
    chosen = [wnids[999], wnids[0], wnids[500]]
    tiny = Image.new("RGB", (4, 4))
    names = ["b.JPEG", "a.jpg", "C.Png", "a-b.jpeg", "z.webp", "notes.txt", "x.JPG", "y.gif"]
    for wnid in chosen:
        for sub in ("", "sub", "sub/deeper", "sub-2", "Sub"):
            folder = tmp_path / "train" / wnid / sub
            folder.mkdir(parents=True, exist_ok=True)
            for name in names:
                (folder / name).write_bytes(b"")
    tiny.save(tmp_path / "train" / chosen[0] / "real.jpg")
    (tmp_path / "train" / "stray.JPEG").write_bytes(b"")  # a file beside the class folders: ignored
    images = imagenet_split(tmp_path, "train")
    paths, classes = imagefolder_order(tmp_path / "train")
    assert list(images.files) == paths and len(paths) == 3 * 5 * 6 + 1
    assert images.labels.tolist() == [wnids.index(c) for c in classes]
    assert images.labels[0] == 0 and images.labels[-1] == 999


def test_image_folder_set_subset_and_checks(fake):
    images = imagenet_split(fake / "imagenet", "train")
    part = images.subset(np.array([5, 0, 5]))
    assert part.files == (images.files[5], images.files[0], images.files[5])
    assert part.labels.tolist() == images.labels[[5, 0, 5]].tolist() and part.root == images.root
    with pytest.raises(ValueError, match="integer indices"):
        images.subset(np.array([0.5]))
    with pytest.raises(ValueError, match="int64"):
        ImageFolderSet("x", fake, ("a.jpg",), np.array([0], dtype=np.int32), ("n1",))
    with pytest.raises(ValueError, match="1 files but 2 labels"):
        ImageFolderSet("x", fake, ("a.jpg",), np.array([0, 0]), ("n1",))
    with pytest.raises(ValueError, match="-1"):
        ImageFolderSet("x", fake, ("a.jpg",), np.array([0]), ())
    with pytest.raises(ValueError, match=r"\[0, 0\]"):
        ImageFolderSet("x", fake, ("a.jpg",), np.array([1]), ("n1",))


# --- listing errors -------------------------------------------------------------------------------


def assert_actionable(error: pytest.ExceptionInfo, path, key: str) -> None:
    message = str(error.value)
    assert str(path) in message
    assert "data.root" in message and f"data.{key}_dir" in message
    assert LAYOUTS[key] in message


@pytest.mark.parametrize(
    "read, key",
    [
        (lambda root: imagenet_split(root, "train"), "imagenet"),
        (lambda root: imagenet_c_split(root, "fog", 1), "imagenet_c"),
        (lambda root: subset_split(root, "imagenet_a"), "imagenet_a"),
        (lambda root: subset_split(root, "imagenet_r"), "imagenet_r"),
        (lambda root: ood_folder(root, "inaturalist"), "inaturalist"),
        (lambda root: ood_folder(root, "openimage_o"), "openimage_o"),
    ],
)
def test_missing_and_empty_roots(tmp_path, read, key):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="does not exist") as error:
        read(missing)
    assert_actionable(error, missing, key)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as error:
        read(empty)
    assert_actionable(error, empty, key)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        read(a_file)


def test_imagenet_split_errors(tmp_path):
    root = tmp_path / "imagenet"
    (root / "train" / imagenet_wnids()[3]).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="val") as error:
        imagenet_split(root, "val")
    assert_actionable(error, root / "val", "imagenet")
    with pytest.raises(FileNotFoundError, match="hold no image") as error:  # an empty class folder
        imagenet_split(root, "train")
    assert_actionable(error, root / "train" / imagenet_wnids()[3], "imagenet")
    (root / "val").mkdir()
    for k in range(3):
        Image.new("RGB", (4, 4)).save(root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG")
    with pytest.raises(ValueError, match="3 image files but no wnid folders.*valprep.sh") as error:
        imagenet_split(root, "val")
    assert_actionable(error, root / "val", "imagenet")
    with pytest.raises(ValueError, match="'train' or 'val'"):
        imagenet_split(root, "test")


def test_unknown_wnid_folders(fake, tmp_path):
    root = tmp_path / "imagenet"
    shutil.copytree(fake / "imagenet", root)
    (root / "train" / "n99999999").mkdir()
    with pytest.raises(ValueError, match="not one of the 1000 ImageNet-1k wnids") as error:
        imagenet_split(root, "train")
    assert_actionable(error, root / "train" / "n99999999", "imagenet")
    subset = tmp_path / "imagenet-a"
    shutil.copytree(fake / "imagenet-a", subset)
    outside = next(w for w in imagenet_wnids() if w not in subset_wnids("imagenet_a"))
    (subset / outside).mkdir()
    with pytest.raises(ValueError, match="not one of the 200 ImageNet-A wnids") as error:
        subset_split(subset, "imagenet_a")
    assert_actionable(error, subset / outside, "imagenet_a")
    with pytest.raises(ValueError, match="imagenet_a"):
        subset_split(subset, "imagenet_o")


def test_imagenet_c_layout_errors(fake, tmp_path):
    root = tmp_path / "imagenet-c"
    shutil.copytree(fake / "imagenet-c", root)
    with pytest.raises(FileNotFoundError, match=r"severity folder .* does not exist \(found: 1, 5\)") as error:
        imagenet_c_split(root, "fog", 3)
    assert_actionable(error, root / "fog" / "3", "imagenet_c")
    with pytest.raises(FileNotFoundError, match=r"corruption folder .* \(found: fog, gaussian_noise\)") as error:
        imagenet_c_split(root, "snow", 1)
    assert_actionable(error, root / "snow", "imagenet_c")
    # wnid folders straight under the corruption: no severity level
    flat = root / "frost"
    shutil.copytree(root / "fog" / "1", flat)
    with pytest.raises(ValueError, match="no severity folders 1-5") as error:
        imagenet_c_split(root, "frost", 1)
    assert_actionable(error, flat, "imagenet_c")
    for bad in (0, 6, "1", True):
        with pytest.raises(ValueError, match="severity must be an integer 1-5"):
            imagenet_c_split(root, "fog", bad)


def test_unreadable_image_names_the_file(fake, tmp_path):
    root = tmp_path / "imagenet-r"
    shutil.copytree(fake / "imagenet-r", root)
    wnid = sorted(p.name for p in root.iterdir() if p.is_dir())[0]
    broken = root / wnid / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG")
    images = subset_split(root, "imagenet_r")  # listing never opens images
    row = images.files.index(str(broken.relative_to(root)))
    dataset = FolderImages(images, np.arange(len(images)), "eval", image_size=32)
    dataset[row - 1]
    with pytest.raises(ValueError, match="cannot read image") as error:
        dataset[row]
    assert_actionable(error, broken, "imagenet_r")
    truncated = root / wnid / "truncated.jpg"
    truncated.write_bytes(images.path(0).read_bytes()[:200])
    images = subset_split(root, "imagenet_r")
    dataset = FolderImages(images, np.arange(len(images)), "eval", image_size=32)
    with pytest.raises(ValueError, match=re.escape(str(truncated))):
        dataset[images.files.index(str(truncated.relative_to(root)))]


# --- transforms -----------------------------------------------------------------------------------


def photo(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth random image (noise would make resampling differences invisible)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    waves = [np.sin(x / rng.uniform(3, 20) + y / rng.uniform(3, 20) + rng.uniform(0, 6)) for _ in range(3)]
    pixels = (127.5 + 120 * np.stack(waves, axis=-1)).astype(np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def pixels(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (3, H, W) uint8 tensor, computed without torchvision."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def test_eval_transform_equals_torchvision():
    image = photo(300, 200)
    out = eval_transform(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
    T = reference_torchvision().transforms
    reference = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224)])
    assert torch.equal(out, T.functional.pil_to_tensor(reference(image)))
    from torchvision.transforms import v2

    reference_v2 = v2.Compose([v2.Resize(256, interpolation=v2.InterpolationMode.BILINEAR), v2.CenterCrop(224)])
    assert torch.equal(out, T.functional.pil_to_tensor(reference_v2(image)))
    small = eval_transform(photo(50, 70), image_size=32)
    assert small.shape == (3, 32, 32)
    grey = eval_transform(photo(300, 200, mode="L"))
    assert grey.shape == (3, 224, 224) and torch.equal(grey[0], grey[2])


def test_as_is_transform():
    square = photo(224, 224, seed=1)
    out = as_is_transform(square)
    assert torch.equal(out, pixels(square))
    other = photo(260, 240, seed=2)
    T = reference_torchvision().transforms
    reference = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224)])
    assert torch.equal(as_is_transform(other), T.functional.pil_to_tensor(reference(other)))
    assert as_is_transform(photo(40, 40), image_size=40).shape == (3, 40, 40)


def test_train_transform_is_reproducible_per_image():
    image = photo(120, 90)
    first = train_transform(image, seed=3, pass_index=0, index=7, image_size=64)
    assert first.shape == (3, 64, 64) and first.dtype == torch.uint8
    assert torch.equal(first, train_transform(image, seed=3, pass_index=0, index=7, image_size=64))
    for other in ((3, 1, 7), (3, 2, 7), (4, 0, 7), (3, 0, 8)):
        assert not torch.equal(first, train_transform(image, *other, image_size=64))


def test_train_transform_crop_box_then_flip():
    image = photo(120, 90, seed=5)
    flips = set()
    for index in range(12):
        rng = np.random.default_rng([1, 2, index])
        top, left, h, w = random_resized_crop_box(rng, 90, 120, (0.08, 1.0), (3 / 4, 4 / 3))
        flip = rng.random() < 0.5
        flips.add(flip)
        crop = image.crop((left, top, left + w, top + h)).resize((48, 48), Image.Resampling.BILINEAR)
        expected = pixels(crop)
        expected = expected.flip(-1) if flip else expected
        assert torch.equal(train_transform(image, 1, 2, index, image_size=48), expected)
    assert flips == {True, False}


# --- dataset and loader ---------------------------------------------------------------------------


def collect(loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return tuple(torch.cat([batch[k] for batch in batches]) for k in range(3))


def test_folder_images_and_loader_are_independent_of_batching_and_workers(fake):
    images = imagenet_split(fake / "imagenet", "train")
    index = np.array([11, 0, 5, 3, 7, 2, 9])
    dataset = FolderImages(images, index, "train", image_size=32, seed=1, pass_index=2)
    assert len(dataset) == 7
    image, label, row = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert label.dtype == row.dtype == torch.int64 and row.item() == 11 and label.item() == images.labels[11]
    state = torch.get_rng_state()
    reference = collect(image_loader(dataset, batch_size=7))
    assert torch.equal(torch.get_rng_state(), state)
    assert reference[0].shape == (7, 3, 32, 32)
    assert reference[1].tolist() == images.labels[index].tolist() and reference[2].tolist() == index.tolist()
    for batch_size, workers in ((1, 0), (3, 0), (2, 2), (5, 2)):
        got = collect(image_loader(dataset, batch_size=batch_size, workers=workers))
        assert all(torch.equal(a, b) for a, b in zip(got, reference))
    # an image's augmentation depends on its row, not on where it sits in the index
    alone = FolderImages(images, np.array([5]), "train", image_size=32, seed=1, pass_index=2)
    assert torch.equal(alone[0][0], reference[0][2])
    other_pass = FolderImages(images, index, "train", image_size=32, seed=1, pass_index=3)
    assert not torch.equal(other_pass[0][0], reference[0][0])


def test_folder_images_eval_and_as_is(fake):
    val = imagenet_split(fake / "imagenet", "val")
    dataset = FolderImages(val, np.arange(len(val)), "eval", image_size=32)
    with Image.open(val.path(4)) as image:
        assert torch.equal(dataset[4][0], eval_transform(image, 32))
    corrupted = imagenet_c_split(fake / "imagenet-c", "fog", 1)
    as_is = FolderImages(corrupted, np.arange(len(corrupted)), "as_is", image_size=40)
    with Image.open(corrupted.path(1)) as image:
        assert torch.equal(as_is[1][0], pixels(image.convert("RGB")))
    ood = ood_folder(fake / "openimage-o", "openimage_o")
    images, labels, rows = collect(image_loader(FolderImages(ood, np.arange(6), "eval", image_size=24), 4))
    assert images.shape == (6, 3, 24, 24) and (labels == -1).all() and rows.tolist() == list(range(6))


def test_folder_images_checks_its_arguments(fake):
    images = imagenet_split(fake / "imagenet", "val")
    with pytest.raises(ValueError, match="transform must be one of"):
        FolderImages(images, np.arange(2), "test")
    with pytest.raises(ValueError, match=r"index must lie in \[0, 5\]"):
        FolderImages(images, np.array([6]), "eval")
    with pytest.raises(ValueError, match="integers"):
        FolderImages(images, np.array([0.0]), "eval")
    with pytest.raises(ValueError, match="non-negative"):
        FolderImages(images, np.arange(2), "train", seed=-1)
    with pytest.raises(ValueError, match="batch_size"):
        image_loader(FolderImages(images, np.arange(2), "eval"), batch_size=0)
