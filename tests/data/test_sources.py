import gzip
import operator
import pickle

import numpy as np
import pytest

from sedlib.data import (
    SOURCES,
    ImageSet,
    get_fashion_mnist,
    load_animal_mnist,
    load_digits,
    load_fashion_mnist,
    sources,
)

# 3 images of 2x3 pixels and their labels: small enough to check every value
IMAGES = np.arange(18, dtype=np.uint8).reshape(3, 2, 3) * 14
LABELS = np.array([9, 0, 4], dtype=np.uint8)


def write_idx(path, magic: int, array: np.ndarray, gzipped: bool) -> None:
    """An idx file by hand: big-endian int32 magic and sizes, then the bytes."""
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gzipped:
        with gzip.open(f"{path}.gz", "wb") as file:
            file.write(raw)
    else:
        path.write_bytes(raw)


def write_split(directory, prefix: str, gzipped: bool, images=IMAGES, labels=LABELS, magics=(2051, 2049)) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / f"{prefix}-images-idx3-ubyte", magics[0], images, gzipped)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", magics[1], labels, gzipped)


@pytest.fixture
def no_default_dirs(tmp_path, monkeypatch):
    """Point every default Fashion-MNIST location at empty temporary directories."""
    monkeypatch.delenv("SED_DATA", raising=False)
    monkeypatch.setattr(get_fashion_mnist, "_CHECKOUT", tmp_path / "project")
    monkeypatch.setattr(get_fashion_mnist, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")


@pytest.mark.parametrize("gzipped", [True, False], ids=["gzip", "plain"])
def test_fashion_mnist_reads_idx_files(tmp_path, gzipped):
    write_split(tmp_path, "t10k", gzipped)
    write_split(tmp_path, "train", gzipped, images=IMAGES[::-1], labels=LABELS[::-1])
    test = load_fashion_mnist("test", root=tmp_path)
    assert test.name == "fashion_mnist_test" and len(test) == 3
    assert test.images.dtype == np.uint8 and test.images.shape == (3, 2, 3)
    assert test.images[1].tolist() == [[84, 98, 112], [126, 140, 154]]  # 6..11 times 14
    assert test.labels.dtype == np.int64 and test.labels.tolist() == [9, 0, 4]
    assert test.class_names[9] == "Ankle boot" and test.class_names[0] == "T-shirt/top"
    assert len(test.class_names) == 10
    assert str(tmp_path) in test.origin and "t10k-images-idx3-ubyte" in test.origin
    train = load_fashion_mnist("train", root=tmp_path)
    assert train.name == "fashion_mnist_train" and train.labels.tolist() == [4, 0, 9]
    assert train.images[0, 0, 0] == 12 * 14


def test_fashion_mnist_wrong_magic_names_the_file(tmp_path):
    write_split(tmp_path, "t10k", gzipped=True, magics=(2049, 2049))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz.*magic number 2049, expected 2051"):
        load_fashion_mnist("test", root=tmp_path)


def test_fashion_mnist_count_mismatch_names_the_files(tmp_path):
    write_split(tmp_path, "t10k", gzipped=False, labels=LABELS[:2])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte holds 3 images but .*t10k-labels-idx1-ubyte holds 2"):
        load_fashion_mnist("test", root=tmp_path)


def test_fashion_mnist_truncated_file_is_refused(tmp_path):
    write_split(tmp_path, "t10k", gzipped=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: header says shape \(3, 2, 3\) \(18 bytes\)"):
        load_fashion_mnist("test", root=tmp_path)


def test_fashion_mnist_missing_lists_every_directory_and_the_remedy(tmp_path, monkeypatch, no_default_dirs):
    monkeypatch.setenv("SED_DATA", str(tmp_path / "sed_data"))
    write_split(tmp_path / "system", "train", gzipped=True)  # the other split does not count
    with pytest.raises(FileNotFoundError) as error:
        load_fashion_mnist("test")
    message = str(error.value)
    for directory in ("sed_data/fashion-mnist", "project/data/fashion-mnist", "system"):
        assert str(tmp_path / directory) in message
    assert "dataset-fashion-mnist" in message and "SED_DATA" in message and "t10k-labels-idx1-ubyte" in message


def test_fashion_mnist_honours_sed_data_before_the_system_copy(tmp_path, monkeypatch, no_default_dirs):
    write_split(tmp_path / "system", "t10k", gzipped=True, labels=np.array([1, 1, 1]))
    assert load_fashion_mnist("test").labels.tolist() == [1, 1, 1]
    monkeypatch.setenv("SED_DATA", str(tmp_path / "mine"))
    write_split(tmp_path / "mine" / "fashion-mnist", "t10k", gzipped=False)
    assert load_fashion_mnist("test").labels.tolist() == [9, 0, 4]
    assert sources.fashion_mnist_dirs()[0] == tmp_path / "mine" / "fashion-mnist"


def test_fashion_mnist_rejects_an_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="'train', 'test'|'test', 'train'"):
        load_fashion_mnist("val", root=tmp_path)


@pytest.mark.skipif(
    not (get_fashion_mnist.FASHION_MNIST_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)",
)
def test_real_fashion_mnist_test_split():
    test = load_fashion_mnist("test", root=get_fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == np.uint8
    assert np.bincount(test.labels).tolist() == [1000] * 10
    # bright garments on a black background: the border is dark, the centre bright
    border = np.concatenate([test.images[:, 0], test.images[:, -1], test.images[:, :, 0], test.images[:, :, -1]], 1)
    assert border.mean() < 30 < 100 < test.images[:, 10:18, 10:18].mean()


def test_animal_mnist_is_bright_on_dark_and_unlabelled():
    animals = load_animal_mnist()
    assert animals.name == "animal_mnist" and animals.class_names == ()
    assert animals.images.shape == (10000, 28, 28) and animals.images.dtype == np.uint8
    assert animals.labels.dtype == np.int64 and (animals.labels == -1).all()
    assert animals.images.max() == 255
    border = np.concatenate([animals.images[:, 0], animals.images[:, -1]], axis=1)
    assert border.mean() < 20 < 150 < animals.images[:, 10:18, 10:18].mean()
    assert "animal-mnist 0.4" in animals.origin


class _Division:
    def __reduce__(self):
        return operator.truediv, (1, 0)  # would raise ZeroDivisionError if it were ever called


def test_numpy_only_unpickler_refuses_other_globals(tmp_path):
    path = tmp_path / "evil.gz"
    with gzip.open(path, "wb") as file:
        pickle.dump(_Division(), file)
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.gz: refusing to unpickle _operator\.truediv"):
        sources.load_numpy_pickle(path)


def test_numpy_only_unpickler_reads_arrays_and_rejects_non_arrays(tmp_path):
    path = tmp_path / "array.gz"
    with gzip.open(path, "wb") as file:
        pickle.dump(np.array([[1, 2], [3, 4]], dtype=np.int16), file)
    assert sources.load_numpy_pickle(path).tolist() == [[1, 2], [3, 4]]
    with gzip.open(path, "wb") as file:
        pickle.dump([1, 2], file)
    with pytest.raises(ValueError, match=r"array\.gz: expected a pickled numpy array, got list"):
        sources.load_numpy_pickle(path)


def test_digits_scaled_to_uint8_and_kept_8x8():
    from sklearn.datasets import load_digits as sklearn_load_digits

    raw = sklearn_load_digits().images
    digits = load_digits()
    assert digits.name == "digits" and digits.class_names == ()
    assert digits.images.shape == (1797, 8, 8) and digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and (digits.labels == -1).all() and digits.labels.dtype == np.int64
    # 16 -> 255, 8 -> 127.5 -> 128, 1 -> 15.94 -> 16, 15 -> 239.06 -> 239, 0 -> 0
    for value, expected in [(16, 255), (8, 128), (1, 16), (15, 239), (0, 0)]:
        assert set(digits.images[raw == value].tolist()) == {expected}


def test_sources_are_the_semantic_ood_sets():
    assert SOURCES == {"animal_mnist": load_animal_mnist, "digits": load_digits}


def test_image_set_validates_and_subsets():
    images = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    labelled = ImageSet("toy", images, np.array([1, 0, 1]), ("a", "b"), "here")
    part = labelled.subset(np.array([2, 0]))
    assert part.name == "toy" and part.origin == "here" and part.class_names == ("a", "b")
    assert part.labels.tolist() == [1, 1] and part.images[:, 0, 0].tolist() == [8, 0] and len(part) == 2
    with pytest.raises(ValueError, match="'toy': images must be an \\(N, H, W\\) uint8 array, got float64"):
        ImageSet("toy", images.astype(float), np.array([1, 0, 1]), ("a", "b"), "here")
    with pytest.raises(ValueError, match="labels must be an \\(N,\\) int64 array"):
        ImageSet("toy", images, np.array([1, 0, 1], dtype=np.int32), ("a", "b"), "here")
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ImageSet("toy", images, np.array([1, 0]), ("a", "b"), "here")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        ImageSet("toy", images, np.array([1, 0, 2]), ("a", "b"), "here")
    with pytest.raises(ValueError, match="semantic OOD and needs every label -1"):
        ImageSet("toy", images, np.array([-1, 0, -1]), (), "here")
    with pytest.raises(ValueError, match="integer indices"):
        labelled.subset(np.array([0.0, 1.0]))
