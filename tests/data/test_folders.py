"""Your own image folders (``data.dataset: folder``): layouts that work, and each kind that does not."""

import numpy as np
import pytest
from PIL import Image

from sedlib.data.folders import FolderLayoutError, class_folder_set, folder_classes, ood_folder_set
from sedlib.data.imagenet import FolderImages, _open_rgb


def write_images(folder, count, size=8, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(start, start + count):
        Image.fromarray(np.full((size, size), 10 * number, np.uint8)).save(folder / f"{number:03d}.png")


@pytest.fixture
def layout(tmp_path):
    """train/ and test/ with the classes zebra, ant, Moth (given out of order), digits/ OOD in sub-folders."""
    for split, count in (("train", 3), ("test", 2)):
        for name in ("zebra", "ant", "Moth"):
            write_images(tmp_path / split / name, count)
    write_images(tmp_path / "ood" / "a", 2)
    write_images(tmp_path / "ood" / "b" / "deeper", 1)
    write_images(tmp_path / "flat", 2)
    return tmp_path


def test_labels_index_the_sorted_class_names(layout):
    train = class_folder_set(layout / "train", "train")
    assert train.class_names == ("Moth", "ant", "zebra")  # sorted as strings: upper case first
    assert train.name == "folder/train" and len(train) == 9
    assert train.files[:4] == ("Moth/000.png", "Moth/001.png", "Moth/002.png", "ant/000.png")
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    test = class_folder_set(layout / "test", "test", folder_classes(layout / "train"))
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2] and test.class_names == train.class_names


def test_ood_folders_flat_or_in_sub_folders(layout):
    nested = ood_folder_set(layout / "ood", "mine")
    assert nested.files == ("a/000.png", "a/001.png", "b/deeper/000.png") and nested.name == "folder/mine"
    assert (nested.labels == -1).all() and nested.class_names == ()
    assert ood_folder_set(layout / "flat", "flat").files == ("000.png", "001.png")


def test_images_are_read_through_the_folder_transforms(layout):
    train = class_folder_set(layout / "train", "train")
    image, label, row = FolderImages(train, np.array([4]), "eval", image_size=16)[0]
    assert image.shape == (3, 16, 16) and int(label) == 1 and int(row) == 4
    assert int(image[0, 8, 8]) == 10  # ant/001.png, grey 10, as RGB


def test_mismatched_class_folders_name_both_sides(layout):
    (layout / "test" / "zebra").rename(layout / "test" / "horse")
    mismatch = r"test folder .*test has other class folders .*missing \['zebra'\]"
    with pytest.raises(FolderLayoutError, match=mismatch) as error:
        class_folder_set(layout / "test", "test", folder_classes(layout / "train"))
    assert "not in the training set ['horse']" in str(error.value) and "data.test_path" in str(error.value)


def test_an_empty_class_folder_is_named(layout):
    (layout / "train" / "bee").mkdir()
    with pytest.raises(FileNotFoundError, match=r"1 class folder\(s\) hold no image .*bee; every class needs images"):
        class_folder_set(layout / "train", "train")


def test_a_missing_or_empty_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train folder .*nowhere does not exist.*data.train_path"):
        class_folder_set(tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is empty .no class folders"):
        class_folder_set(tmp_path / "empty", "train")
    with pytest.raises(FileNotFoundError, match="holds no image file"):
        ood_folder_set(tmp_path / "empty", "mine")


def test_images_outside_class_folders_are_refused(tmp_path):
    write_images(tmp_path / "train", 2)
    with pytest.raises(FolderLayoutError, match="holds 2 image files but no class folders; images must be sorted"):
        class_folder_set(tmp_path / "train", "train")


def test_an_unreadable_image_is_named_when_read(layout):
    broken = layout / "train" / "ant" / "001.png"
    broken.write_bytes(b"not a png")
    train = class_folder_set(layout / "train", "train")
    images = FolderImages(train, np.arange(len(train)), "eval", image_size=16)
    unreadable = f"cannot read image {broken}.*corrupt or truncated. The params keys are data.train_path"
    with pytest.raises(ValueError, match=unreadable):
        images[4]


def test_hidden_files_and_folders_are_skipped_and_counted(layout, caplog):
    (layout / "train" / "ant" / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS on shared drives
    (layout / "train" / "ant" / ".DS_Store").write_bytes(b"\x00")
    (layout / "train" / "ant" / "README.txt").write_text("notes")
    write_images(layout / "train" / ".ipynb_checkpoints", 1)  # not a class
    write_images(layout / "train" / "zebra" / ".hidden", 2)  # nor images of a class
    write_images(layout / "ood" / ".cache", 1)
    with caplog.at_level("INFO", logger="sedlib.data"):
        train = class_folder_set(layout / "train", "train")
        nested = ood_folder_set(layout / "ood", "mine")
    assert train.class_names == ("Moth", "ant", "zebra") and len(train) == 9
    assert len(nested) == 3 and not any("/." in f or f.startswith(".") for f in nested.files)
    # train: .ipynb_checkpoints, the 3 files in ant/ and the 2 images in zebra/.hidden; ood: the image in .cache
    assert f"{layout / 'train'}: skipped 6 hidden or non-image files and folders" in caplog.text
    assert f"{layout / 'ood'}: skipped 1 hidden or non-image files and folders" in caplog.text


def test_class_names_in_either_unicode_form_are_the_same_class(tmp_path):
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # Linux writes the first, macOS the second
    write_images(tmp_path / "train" / composed, 2)
    write_images(tmp_path / "train" / "tea", 2)
    write_images(tmp_path / "test" / decomposed, 1)
    write_images(tmp_path / "test" / "tea", 1)
    train_classes = folder_classes(tmp_path / "train")
    test = class_folder_set(tmp_path / "test", "test", train_classes)
    assert train_classes == (composed, "tea") and test.labels.tolist() == [0, 1]
    assert test.files[0] == f"{decomposed}/000.png"  # the file keeps its name on disk
    write_images(tmp_path / "test" / composed, 1)
    with pytest.raises(FolderLayoutError, match="differ only in their Unicode form .*merge each pair"):
        folder_classes(tmp_path / "test")


def test_a_single_class_is_refused(tmp_path):
    write_images(tmp_path / "train" / "cat", 3)
    with pytest.raises(FolderLayoutError, match=r"train folder .*train has a single class folder 'cat'.*at least two"):
        class_folder_set(tmp_path / "train", "train")


def test_16_bit_images_are_scaled_not_saturated(tmp_path):
    values = np.array([[0, 257, 32896], [65535, 1000, 50000]], dtype=np.uint16)  # 257 = 65535 / 255
    Image.fromarray(values).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode.startswith("I")  # PIL reads it as 16-bit
    rgb = np.asarray(_open_rgb(tmp_path / "grey16.png", None))
    expected = np.round(values / 257).astype(np.uint8)  # 255 / 65535 per step
    assert rgb.shape == (2, 3, 3)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 2], expected)
