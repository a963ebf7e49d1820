import h5py
import numpy as np
import pytest

from sedlib.data import published_features
from sedlib.data.published_features import (
    PUBLISHED_FEATURE_FILES,
    PublishedFeatures,
    PublishedFeaturesError,
    find_published_file,
)

ROWS, PASSES, DIM = 5, 2, 3
LABELS = np.array([4, 0, 999, 7, 4])


def embed_value(pass_index, row, column):
    return 100 * pass_index + 10 * row + column


def write_fake(path, rows=ROWS, passes=PASSES, dim=DIM, labels=LABELS, index=None, skip=(), shapes=None):
    """A file in the authors' layout: float32 embed/label/index, pass-major rows, no attributes."""
    p, r, c = np.meshgrid(np.arange(passes), np.arange(rows), np.arange(dim), indexing="ij")
    data = {
        "embed": embed_value(p, r, c).reshape(passes * rows, dim).astype(np.float32),
        "label": np.tile(np.asarray(labels, np.float32), passes)[:, None],
        "index": (np.tile(np.arange(rows), passes) if index is None else np.asarray(index))[:, None].astype(np.float32),
    }
    for key, shape in (shapes or {}).items():
        data[key] = data[key].reshape(shape)
    with h5py.File(path, "w") as handle:
        for key, values in data.items():
            if key not in skip:
                handle.create_dataset(key, data=values, maxshape=(None, *values.shape[1:]))
    return path


def test_reads_rows_of_both_passes(tmp_path):
    with PublishedFeatures(write_fake(tmp_path / "train.hdf5"), passes=2) as cache:
        assert (cache.rows, cache.passes, cache.feature_dim) == (5, 2, 3)
        features, labels, index = cache.read(1, np.array([0, 3, 4]))
        assert features.dtype == np.float32 and labels.dtype == np.int64 and index.dtype == np.int64
        assert features.tolist() == [[100, 101, 102], [130, 131, 132], [140, 141, 142]]
        assert labels.tolist() == [4, 7, 4] and index.tolist() == [0, 3, 4]
        features, labels, _ = cache.read(0, np.array([2]))
        assert features.tolist() == [[20, 21, 22]] and labels.tolist() == [999]
        features, labels, index = cache.read(0, np.arange(5))
        assert features[:, 0].tolist() == [0, 10, 20, 30, 40] and labels.tolist() == LABELS.tolist()
        assert [len(a) for a in cache.read(1, np.array([], dtype=int))] == [0, 0, 0]


def test_reads_across_block_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(published_features, "_READ_BLOCK_ROWS", 2)
    with PublishedFeatures(write_fake(tmp_path / "train.hdf5"), passes=2) as cache:
        features, labels, index = cache.read(1, np.array([0, 1, 2, 4]))
    assert features[:, 0].tolist() == [100, 110, 120, 140]
    assert labels.tolist() == [4, 0, 999, 4] and index.tolist() == [0, 1, 2, 4]


def test_a_single_pass_file(tmp_path):
    path = write_fake(tmp_path / "val.hdf5", passes=1)
    with PublishedFeatures(path) as cache:
        assert cache.rows == 5 and cache.passes == 1
        assert cache.read(0, np.array([1, 3]))[0][:, 0].tolist() == [10, 30]
        with pytest.raises(ValueError, match=r"pass_index 1 is outside \[0, 1\)"):
            cache.read(1, np.array([0]))


def test_context_manager_closes_the_file(tmp_path):
    path = write_fake(tmp_path / "val.hdf5", passes=1)
    with PublishedFeatures(path) as cache:
        pass
    with h5py.File(path, "r+"):  # reopening for writing works only once the reader has closed it
        pass
    assert "rows=5" in repr(cache)


@pytest.mark.parametrize("key", ["embed", "label", "index"])
def test_missing_dataset(tmp_path, key):
    path = write_fake(tmp_path / "f.hdf5", skip=(key,))
    with pytest.raises(PublishedFeaturesError, match=rf"f\.hdf5: dataset '{key}' is missing"):
        PublishedFeatures(path, passes=2)


def test_wrong_shapes_and_dtypes(tmp_path):
    flat = write_fake(tmp_path / "flat.hdf5", shapes={"label": (10,)})
    with pytest.raises(
        PublishedFeaturesError, match=r"flat\.hdf5: dataset 'label' has shape \(10,\), expected \(10, 1\)"
    ):
        PublishedFeatures(flat, passes=2)
    with pytest.raises(PublishedFeaturesError, match=r"odd\.hdf5: 10 rows are not a multiple of passes=4"):
        PublishedFeatures(write_fake(tmp_path / "odd.hdf5"), passes=4)
    half = tmp_path / "half.hdf5"
    write_fake(half)
    with h5py.File(half, "r+") as handle:
        del handle["embed"]
        handle.create_dataset("embed", data=np.zeros((10, 3), np.float16))
    with pytest.raises(PublishedFeaturesError, match=r"half\.hdf5: dataset 'embed' is float16"):
        PublishedFeatures(half, passes=2)


def test_non_integer_label(tmp_path):
    path = write_fake(tmp_path / "f.hdf5", labels=[4, 0, 2.5, 7, 4])
    with PublishedFeatures(path, passes=2) as cache:
        assert cache.read(1, np.array([0, 1]))[1].tolist() == [4, 0]
        with pytest.raises(PublishedFeaturesError, match=r"f\.hdf5: pass 1, row 2: label 2\.5 is not a whole number"):
            cache.read(1, np.array([1, 2, 3]))


def test_index_that_does_not_match_the_row_order(tmp_path):
    # pass 1 is stored in another order: rows 2 and 3 swapped
    path = write_fake(tmp_path / "f.hdf5", index=[0, 1, 2, 3, 4, 0, 1, 3, 2, 4])
    with PublishedFeatures(path, passes=2) as cache:
        cache.read(0, np.arange(5))
        cache.read(1, np.array([0, 1, 4]))
        with pytest.raises(PublishedFeaturesError, match=r"f\.hdf5: pass 1, row 2: stored index is 3\.0, expected 2"):
            cache.read(1, np.array([1, 2, 3]))


def test_rows_must_be_sorted_unique_and_in_range(tmp_path):
    with PublishedFeatures(write_fake(tmp_path / "f.hdf5"), passes=2) as cache:
        for rows in ([2, 1], [1, 1], [0, 5], [-1, 2]):
            with pytest.raises(ValueError, match=r"strictly increasing positions in \[0, 5\)"):
                cache.read(0, np.array(rows))
        with pytest.raises(ValueError, match="integer row positions"):
            cache.read(0, np.array([0.0, 1.0]))


def test_find_published_file_for_every_named_split(tmp_path):
    for split, name in PUBLISHED_FEATURE_FILES.items():
        (tmp_path / name).touch()
        assert find_published_file(tmp_path, split) == tmp_path / name
    assert PUBLISHED_FEATURE_FILES["test"] == "in_val_deit3b_-1.hdf5"
    assert PUBLISHED_FEATURE_FILES["train"] == "in_train_deit3b_-1_4_epochs.hdf5"


def test_find_published_file_for_a_corruption_directory(tmp_path):
    folder = tmp_path / "Gaussian_noise_5"
    folder.mkdir()
    name = "3fa9c2_torch_load_block_-1_model_Gaussian_noise_5_dataset_1_epochs_50000_samples.hdf5"
    (folder / name).touch()
    (folder / "notes.txt").touch()
    assert find_published_file(tmp_path, "gaussian_noise-5") == folder / name
    other = tmp_path / "fog_1"
    other.mkdir()
    (other / "x_fog_1_dataset_1_epochs_50000_samples.hdf5").touch()
    assert find_published_file(tmp_path, "fog-1").name == "x_fog_1_dataset_1_epochs_50000_samples.hdf5"
    with pytest.raises(FileNotFoundError, match=r"gaussian_noise-1.*<Corruption>_1/<hash>_gaussian_noise_1_dataset"):
        find_published_file(tmp_path, "gaussian_noise-1")
    (other / "y_fog_1_dataset_1_epochs_50000_samples.hdf5").touch()
    with pytest.raises(PublishedFeaturesError, match="several feature files for split 'fog-1'"):
        find_published_file(tmp_path, "fog-1")


def test_missing_files_say_where_they_come_from(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        find_published_file(tmp_path, "train")
    message = str(error.value)
    assert str(tmp_path) in message and "in_train_deit3b_-1_4_epochs.hdf5" in message
    assert "scripts/download_cached_data.py" in message and "15.7 GB train cache" in message
    with pytest.raises(FileNotFoundError, match=r"expected in_a_deit3b_-1_\.hdf5"):
        find_published_file(tmp_path, "imagenet_a")
    with pytest.raises(FileNotFoundError, match="download_cached_data"):
        find_published_file(tmp_path / "absent", "snow-5")


def test_unknown_split_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown split 'val'.*'gaussian_noise-5'"):
        find_published_file(tmp_path, "val")
