"""Your own feature files (``data.dataset: features``): the formats read, and each kind of bad file."""

import h5py
import numpy as np
import pytest

from sedlib.data.feature_files import FeatureFileError, check_feature_sets, read_feature_file


def features(rows, width=4, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)


def test_npz_h5_and_npy_files(tmp_path):
    np.savez(tmp_path / "train.npz", features=features(5), labels=np.array([2, 0, 1, 1, 0], np.int32))
    train = read_feature_file(tmp_path / "train.npz", "train")
    assert train.features.shape == (5, 4) and train.labels.dtype == np.int64
    assert train.labels.tolist() == [2, 0, 1, 1, 0] and train.class_names == ()
    with h5py.File(tmp_path / "test.h5", "w") as handle:
        handle["features"] = features(3, seed=1)
        handle["labels"] = np.array([1, 1, 0])
        handle["class_names"] = np.array([b"cat", b"dog", b"eel"])
    test = read_feature_file(tmp_path / "test.h5", "test")
    np.testing.assert_array_equal(test.features, features(3, seed=1))
    assert test.class_names == ("cat", "dog", "eel")
    np.save(tmp_path / "ood.npy", features(2, seed=2))
    ood = read_feature_file(tmp_path / "ood.npy", "far", labelled=False)
    assert ood.labels.tolist() == [-1, -1] and len(ood) == 2
    assert check_feature_sets({"train": train, "test": test, "far": ood}) == ("0", "1", "2")


def test_class_names_of_the_training_file_name_the_classes(tmp_path):
    np.savez(tmp_path / "train.npz", features=features(2), labels=np.array([0, 0]), class_names=np.array(["a", "b"]))
    np.savez(tmp_path / "test.npz", features=features(2), labels=np.array([1, 0]))
    sets = {name: read_feature_file(tmp_path / f"{name}.npz", name) for name in ("train", "test")}
    assert check_feature_sets(sets) == ("a", "b")  # class 1 has no training row, but it is named


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz of set 'train' does not exist"):
        read_feature_file(tmp_path / "absent.npz", "train")
    np.save(tmp_path / "train.npy", features(3))
    with pytest.raises(FeatureFileError, match=r"train.npy: set 'train' must be one of .npz/.h5/.hdf5 .*numpy.savez"):
        read_feature_file(tmp_path / "train.npy", "train")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FeatureFileError, match="junk.h5: cannot be read"):
        read_feature_file(tmp_path / "junk.h5", "test")
    np.savez(tmp_path / "nolabels.npz", features=features(3))
    with pytest.raises(FeatureFileError, match="nolabels.npz: has no array 'labels'"):
        read_feature_file(tmp_path / "nolabels.npz", "train")
    cases = {
        "flat": ({"features": np.zeros(3), "labels": np.zeros(3, int)}, r"non-empty \(N, d\) numeric array"),
        "short": ({"features": features(3), "labels": np.zeros(2, int)}, r"labels must be \(3,\) integers"),
        "floats": ({"features": features(3), "labels": np.zeros(3)}, r"labels must be \(3,\) integers"),
        "negative": ({"features": features(3), "labels": np.array([0, -1, 0])}, "class indices >= 0, found -1"),
        "nan": ({"features": np.where(np.eye(3, 4) > 0, np.nan, 0.0), "labels": np.zeros(3, int)}, "row 0 are not"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(FeatureFileError, match=message):
            read_feature_file(tmp_path / f"{name}.npz", name)


def test_sets_that_do_not_fit_together(tmp_path):
    def saved(name, rows, labels, width=4):
        np.savez(tmp_path / f"{name}.npz", features=features(rows, width), labels=np.array(labels))
        return read_feature_file(tmp_path / f"{name}.npz", name)

    train = saved("train", 3, [0, 2, 2])
    with pytest.raises(FeatureFileError, match=r"train.npz: the training labels skip the classes \[1\]"):
        check_feature_sets({"train": train})
    train = saved("train", 3, [0, 1, 1])
    with pytest.raises(FeatureFileError, match="test.npz: label 2 is not one of the 2 classes"):
        check_feature_sets({"train": train, "test": saved("test", 2, [0, 2])})
    with pytest.raises(FeatureFileError, match="wide.npz: features are 5 wide but the training set's .* are 4"):
        check_feature_sets({"train": train, "wide": saved("wide", 2, [0, 1], width=5)})
