import dataclasses
import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import h5py
import numpy as np
import pytest

from sedlib.features import (
    CorruptFeaturesError,
    FeatureSplit,
    FeatureStoreError,
    SplitManifest,
    StaleFeaturesError,
    join_splits,
    read_split,
    reusable,
    split_status,
    write_split,
)


def make_manifest(**overrides) -> SplitManifest:
    values = dict(
        split="train",
        source="fake rows 0..9",
        backbone="fake backbone [no weights]",
        transform="identity",
        passes=3,
        rows=10,
        feature_dim=4,
        dtype="float32",
        params_hash="hash-a",
    )
    return SplitManifest(**{**values, **overrides})


def expected_arrays(passes: int, rows: int, dim: int):
    """features[p, r, j] = p * 1000 + r + j / 100, labels r % 3, index r + 7, built by broadcasting."""
    p = np.arange(passes, dtype=np.float64)[:, None, None]
    r = np.arange(rows, dtype=np.float64)[None, :, None]
    j = np.arange(dim, dtype=np.float64)[None, None, :]
    features = p * 1000 + r + j / 100
    return features, np.arange(rows) % 3, np.arange(rows) + 7


class FakeCompute:
    """The same values as `expected_arrays`, row by row; records its calls and can fail on the k-th."""

    def __init__(self, dim: int = 4, interrupt_on: int | None = None):
        self.dim = dim
        self.interrupt_on = interrupt_on
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, pass_index, start, stop):
        self.calls.append((pass_index, start, stop))
        if len(self.calls) == self.interrupt_on:
            raise KeyboardInterrupt
        features = [[pass_index * 1000 + r + j / 100 for j in range(self.dim)] for r in range(start, stop)]
        rows = list(range(start, stop))
        return np.array(features), np.array([r % 3 for r in rows]), np.array([r + 7 for r in rows])


def chunk_calls(passes: int, rows: int, chunk_rows: int, first_pass: int = 0, first_row: int = 0):
    calls = []
    for p in range(first_pass, passes):
        start = first_row if p == first_pass else 0
        calls += [(p, s, min(s + chunk_rows, rows)) for s in range(start, rows, chunk_rows)]
    return calls


def partial_of(path):
    return path.with_name(path.name + ".partial")


@pytest.fixture
def written(tmp_path):
    manifest = make_manifest()
    path = write_split(tmp_path / "train.h5", manifest, FakeCompute(), chunk_rows=4, progress=False)
    return path, manifest


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("passes", [1, 3])
def test_round_trip(tmp_path, passes, dtype):
    manifest = make_manifest(passes=passes, dtype=dtype)
    compute = FakeCompute()
    before = datetime.now(UTC).replace(microsecond=0)
    path = write_split(tmp_path / "train.h5", manifest, compute, chunk_rows=4, progress=False)
    assert path == tmp_path / "train.h5" and not partial_of(path).exists()
    assert compute.calls == chunk_calls(passes, 10, 4)  # 4 does not divide 10: last chunk of each pass has 2 rows

    split = read_split(path, expected=manifest)
    features, labels, index = expected_arrays(passes, 10, 4)
    want = features.astype(dtype)
    if passes == 1:
        want = want[0]
    assert isinstance(split, FeatureSplit)
    assert split.features.dtype == np.dtype(dtype) and split.features.shape == want.shape
    np.testing.assert_array_equal(split.features, want)
    if dtype == "float16":  # really rounded: 1.01 is not a float16
        assert float(split.features[..., 1, 1].ravel()[0]) != 1.01
    assert split.labels.dtype == np.int64 and split.index.dtype == np.int64
    np.testing.assert_array_equal(split.labels, labels)
    np.testing.assert_array_equal(split.index, index)
    assert split.manifest == manifest and split.path == path
    created = datetime.fromisoformat(split.created)
    assert created.utcoffset().total_seconds() == 0 and before <= created <= datetime.now(UTC)

    with h5py.File(path) as handle:
        assert handle["features"].shape == (passes, 10, 4)
        for name in ("features", "labels", "index"):
            assert handle[name].chunks is not None and handle[name].fletcher32
        assert handle.attrs["complete"] and handle.attrs["format_version"] == 1
        assert json.loads(handle.attrs["manifest"]) == manifest.to_dict()
        assert handle.attrs["rows_done"].tolist() == [10] * passes


def test_torch_tensors_from_compute_are_accepted(tmp_path):
    torch = pytest.importorskip("torch")
    manifest = make_manifest(passes=1)

    def compute(p, start, stop):
        features, labels, index = FakeCompute()(p, start, stop)
        return torch.from_numpy(features).float(), torch.from_numpy(labels), torch.from_numpy(index)

    split = read_split(write_split(tmp_path / "t.h5", manifest, compute, progress=False))
    np.testing.assert_array_equal(split.features, expected_arrays(1, 10, 4)[0][0].astype(np.float32))


@pytest.mark.parametrize(
    "interrupt_on, remaining",
    [
        (2, chunk_calls(2, 10, 4, first_pass=0, first_row=4)),  # inside pass 0
        (4, chunk_calls(2, 10, 4, first_pass=1, first_row=0)),  # first chunk of pass 1
        (6, [(1, 8, 10)]),  # the very last chunk
    ],
)
def test_interrupted_write_resumes_exactly_the_unfinished_chunks(tmp_path, interrupt_on, remaining):
    manifest = make_manifest(passes=2)
    path = tmp_path / "train.h5"
    with pytest.raises(KeyboardInterrupt):
        write_split(path, manifest, FakeCompute(interrupt_on=interrupt_on), chunk_rows=4, progress=False)
    assert not path.exists() and partial_of(path).exists()
    assert split_status(path, manifest) == "partial"
    with pytest.raises(FileNotFoundError, match="interrupted write"):
        read_split(path)

    resumed = FakeCompute()
    write_split(path, manifest, resumed, chunk_rows=4, progress=False)
    assert resumed.calls == remaining
    assert not partial_of(path).exists()

    reference = write_split(tmp_path / "reference.h5", manifest, FakeCompute(), chunk_rows=4, progress=False)
    got, want = read_split(path), read_split(reference)
    np.testing.assert_array_equal(got.features, want.features)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.index, want.index)


def test_resume_with_another_chunk_size_fills_the_rest(tmp_path):
    manifest = make_manifest(passes=1, rows=11)
    path = tmp_path / "train.h5"
    with pytest.raises(KeyboardInterrupt):
        write_split(path, manifest, FakeCompute(interrupt_on=3), chunk_rows=3, progress=False)
    resumed = FakeCompute()
    write_split(path, manifest, resumed, chunk_rows=5, progress=False)
    assert resumed.calls == [(0, 6, 11)]
    np.testing.assert_array_equal(read_split(path).features, expected_arrays(1, 11, 4)[0][0].astype(np.float32))


def test_partial_from_another_manifest_is_discarded_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "train.h5"
    old = make_manifest(params_hash="old", dtype="float16")
    with pytest.raises(KeyboardInterrupt):
        write_split(path, old, FakeCompute(interrupt_on=3), chunk_rows=4, progress=False)
    new = make_manifest()
    compute = FakeCompute()
    with caplog.at_level(logging.WARNING, logger="sedlib.features"):
        write_split(path, new, compute, chunk_rows=4, progress=False)
    assert compute.calls == chunk_calls(3, 10, 4)
    assert "discarding" in caplog.text and "params_hash" in caplog.text and "'old'" in caplog.text
    split = read_split(path, expected=new)
    np.testing.assert_array_equal(split.features, expected_arrays(3, 10, 4)[0].astype(np.float32))


def test_unreadable_partial_is_discarded_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "train.h5"
    partial_of(path).write_bytes(b"not an HDF5 file")
    compute = FakeCompute()
    with caplog.at_level(logging.WARNING, logger="sedlib.features"):
        write_split(path, make_manifest(), compute, chunk_rows=4, progress=False)
    assert compute.calls == chunk_calls(3, 10, 4)
    assert "discarding" in caplog.text and str(partial_of(path)) in caplog.text
    read_split(path, expected=make_manifest())


def test_complete_file_with_the_same_manifest_is_reused(written, caplog):
    path, manifest = written
    stamp = path.stat().st_mtime_ns

    def never(*args):
        raise AssertionError("compute must not be called for a complete file")

    with caplog.at_level(logging.INFO, logger="sedlib.features"):
        assert write_split(path, manifest, never, progress=False) == path
        assert write_split(path, manifest, never, progress=False, rebuild=True) == path
    assert "reusing" in caplog.text
    assert path.stat().st_mtime_ns == stamp and not partial_of(path).exists()


def test_stale_file_is_refused_naming_the_fields_and_rebuilt_on_request(written):
    path, old = written
    new = dataclasses.replace(old, transform="grey->rgb 48px", params_hash="hash-b")
    with pytest.raises(StaleFeaturesError) as info:
        write_split(path, new, FakeCompute(), progress=False)
    message = str(info.value)
    assert str(path) in message and "rebuild=True" in message and "cache.rebuild: true" in message
    assert "transform" in message and "'identity'" in message and "'grey->rgb 48px'" in message
    assert "params_hash" in message and "'hash-a'" in message and "'hash-b'" in message
    assert "rows" not in message.split("(")[1].split(")")[0]  # unchanged fields are not listed
    assert read_split(path, expected=old).manifest == old  # untouched

    with pytest.raises(StaleFeaturesError, match="transform"):
        read_split(path, expected=new)
    assert split_status(path, new) == "stale"

    compute = FakeCompute()
    write_split(path, new, compute, chunk_rows=4, progress=False, rebuild=True)
    assert compute.calls == chunk_calls(3, 10, 4)
    assert read_split(path, expected=new).manifest == new


def test_interrupted_rebuild_leaves_the_old_file_intact(written):
    path, old = written
    new = dataclasses.replace(old, params_hash="hash-b")
    with pytest.raises(KeyboardInterrupt):
        write_split(path, new, FakeCompute(interrupt_on=2), chunk_rows=4, progress=False, rebuild=True)
    assert read_split(path, expected=old).manifest == old and partial_of(path).exists()
    resumed = FakeCompute()
    write_split(path, new, resumed, chunk_rows=4, progress=False, rebuild=True)
    assert resumed.calls == chunk_calls(3, 10, 4, first_row=4)
    assert read_split(path, expected=new).manifest == new


def test_truncated_file_is_corrupt(written):
    path, manifest = written
    truncated = path.with_name("truncated.h5")
    shutil.copyfile(path, truncated)
    with truncated.open("r+b") as handle:
        handle.truncate(truncated.stat().st_size // 2)
    with pytest.raises(CorruptFeaturesError, match="truncated") as info:
        read_split(truncated)
    assert str(truncated) in str(info.value) and "rebuild=True" in str(info.value)
    with pytest.raises(CorruptFeaturesError, match="truncated"):
        write_split(truncated, manifest, FakeCompute(), progress=False)
    assert split_status(truncated, manifest) == "corrupt"

    compute = FakeCompute()
    write_split(truncated, manifest, compute, chunk_rows=4, progress=False, rebuild=True)
    assert len(compute.calls) == 9
    np.testing.assert_array_equal(read_split(truncated).features, read_split(path).features)


def flip_byte_in_first_feature_chunk(path):
    with h5py.File(path) as handle:
        info = handle["features"].id.get_chunk_info(0)
    with path.open("r+b") as handle:
        handle.seek(info.byte_offset + info.size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_flipped_byte_fails_the_checksum(written):
    path, manifest = written
    flip_byte_in_first_feature_chunk(path)
    with h5py.File(path) as handle:  # the header is intact: only reading the data notices
        assert handle.attrs["complete"]
    with pytest.raises(CorruptFeaturesError, match="(?i)checksum") as info:
        read_split(path)
    assert str(path) in str(info.value)
    with pytest.raises(CorruptFeaturesError, match="(?i)checksum"):
        write_split(path, manifest, FakeCompute(), progress=False)
    assert split_status(path, manifest) == "complete"  # cheap by default: headers only
    assert split_status(path, manifest, verify=True) == "corrupt"
    write_split(path, manifest, FakeCompute(), chunk_rows=4, progress=False, rebuild=True)
    np.testing.assert_array_equal(read_split(path).features, expected_arrays(3, 10, 4)[0].astype(np.float32))


def test_unfinished_file_under_the_final_name_is_corrupt(tmp_path):
    manifest = make_manifest()
    path = tmp_path / "train.h5"
    with pytest.raises(KeyboardInterrupt):
        write_split(path, manifest, FakeCompute(interrupt_on=2), chunk_rows=4, progress=False)
    partial_of(path).rename(path)
    with pytest.raises(CorruptFeaturesError, match="not complete"):
        read_split(path)
    assert split_status(path, manifest) == "corrupt"


def rewrite_manifest(path, **changes):
    with h5py.File(path, "r+") as handle:
        stored = json.loads(handle.attrs["manifest"])
        stored.update(changes)
        handle.attrs["manifest"] = json.dumps(stored)


def test_datasets_that_disagree_with_the_manifest_are_corrupt(written):
    path, manifest = written
    rewrite_manifest(path, rows=12)
    with pytest.raises(CorruptFeaturesError, match="'features'.*shape \\(3, 10, 4\\).*\\(3, 12, 4\\)"):
        read_split(path)
    assert split_status(path, dataclasses.replace(manifest, rows=12)) == "corrupt"


def test_manifest_with_unknown_or_missing_keys_is_corrupt_naming_the_key(written):
    path, _ = written
    rewrite_manifest(path, colour="blue")
    with pytest.raises(CorruptFeaturesError, match="unknown key.*colour") as info:
        read_split(path)
    assert str(path) in str(info.value)
    data = make_manifest().to_dict()
    del data["backbone"]
    with pytest.raises(CorruptFeaturesError, match="somewhere/manifest.json.*missing key.*backbone"):
        SplitManifest.from_dict(data, "somewhere/manifest.json")
    with pytest.raises(CorruptFeaturesError, match="x.json.*passes"):
        SplitManifest.from_dict({**make_manifest().to_dict(), "passes": 0}, "x.json")
    assert SplitManifest.from_dict(make_manifest().to_dict(), "x.json") == make_manifest()


def test_manifest_validates_its_fields():
    with pytest.raises(ValueError, match="passes"):
        make_manifest(passes=0)
    with pytest.raises(ValueError, match="dtype"):
        make_manifest(dtype="float64")
    with pytest.raises(ValueError, match="split"):
        make_manifest(split="")


def test_missing_file_says_which_stage_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebooks/01_cache") as info:
        read_split(tmp_path / "test.h5")
    assert str(tmp_path / "test.h5") in str(info.value)


def test_errors_are_runtime_errors():
    assert issubclass(StaleFeaturesError, FeatureStoreError) and issubclass(CorruptFeaturesError, FeatureStoreError)
    assert issubclass(FeatureStoreError, RuntimeError)


def bad_compute(kind):
    good = FakeCompute()

    def compute(p, start, stop):
        features, labels, index = good(p, start, stop)
        if (p, start) == (0, 4) and kind == "rows":
            features = features[:-1]
        if (p, start) == (0, 4) and kind == "width":
            features = features[:, :3]
        if (p, start) == (0, 4) and kind == "nan":
            features[1, 2] = np.nan
        if (p, start) == (0, 4) and kind == "overflow":
            features[0, 0] = 1e6
        if (p, start) == (1, 4) and kind == "labels":
            labels = labels + 1
        if (p, start) == (1, 4) and kind == "index":
            index = index[::-1]
        if (p, start) == (0, 4) and kind == "float labels":
            labels = labels.astype(float)
        return features, labels, index

    return compute


@pytest.mark.parametrize(
    "kind, p, match",
    [
        ("rows", 0, r"features of shape \(3, 4\).*\(4, 4\)"),
        ("width", 0, r"features of shape \(4, 3\).*\(4, 4\)"),
        ("nan", 0, "non-finite.*row 5"),
        ("overflow", 0, "row 4 overflow float16"),
        ("labels", 1, "labels that differ from pass 0.*row 4"),
        ("index", 1, "index that differ from pass 0.*row 4"),
        ("float labels", 0, "labels of shape .* dtype float64"),
    ],
)
def test_bad_compute_output_is_refused_naming_split_pass_and_rows(tmp_path, kind, p, match):
    manifest = make_manifest(split="gaussian_noise-5", passes=2, dtype="float16")
    path = tmp_path / "gaussian_noise-5.h5"
    with pytest.raises(ValueError, match=match) as info:
        write_split(path, manifest, bad_compute(kind), chunk_rows=4, progress=False)
    assert f"split 'gaussian_noise-5', pass {p}, rows [4, 8)" in str(info.value)
    assert not path.exists()


def test_split_status_reports_each_state(tmp_path, written):
    path, manifest = written
    assert split_status(path, manifest) == "complete"
    assert split_status(path, dataclasses.replace(manifest, backbone="other")) == "stale"
    assert split_status(tmp_path / "nothing.h5", manifest) == "missing"

    interrupted = tmp_path / "interrupted.h5"
    with pytest.raises(KeyboardInterrupt):
        write_split(interrupted, manifest, FakeCompute(interrupt_on=2), chunk_rows=4, progress=False)
    assert split_status(interrupted, manifest) == "partial"

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x00" * 100)
    assert split_status(garbage, manifest) == "corrupt"


def test_file_of_another_format_version_is_stale(written):
    path, manifest = written
    with h5py.File(path, "r+") as handle:
        handle.attrs["format_version"] = 99
    assert split_status(path, manifest) == "stale"
    with pytest.raises(StaleFeaturesError, match="format version 99"):
        write_split(path, manifest, FakeCompute(), progress=False)


def test_partial_held_by_another_writer_is_left_alone(tmp_path):
    manifest = make_manifest()
    path = tmp_path / "train.h5"
    with pytest.raises(KeyboardInterrupt):
        write_split(path, manifest, FakeCompute(interrupt_on=2), chunk_rows=4, progress=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, h5py; f = h5py.File(sys.argv[1], 'r+'); print('open', flush=True); input()"]
        + [str(partial_of(path))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(FeatureStoreError, match="locked by another process"):
            write_split(path, make_manifest(params_hash="other"), FakeCompute(), progress=False)
        assert partial_of(path).exists()
    finally:
        holder.communicate("\n", timeout=30)
    resumed = FakeCompute()
    write_split(path, manifest, resumed, chunk_rows=4, progress=False)
    assert resumed.calls == chunk_calls(3, 10, 4, first_row=4)


def test_progress_bar_counts_rows_of_all_passes(tmp_path, capsys):
    write_split(tmp_path / "train.h5", make_manifest(), FakeCompute(), chunk_rows=4, progress=True)
    err = capsys.readouterr().err
    assert "train" in err and "30/30" in err


def test_lazy_read_gives_one_pass_at_a_time(written):
    path, manifest = written
    split = read_split(path, lazy=True)
    features, labels, index = expected_arrays(3, 10, 4)
    assert split.features.shape == (3, 10, 4) and len(split.features) == 3
    np.testing.assert_array_equal(split.labels, labels)
    np.testing.assert_array_equal(split.index, index)
    for p in range(3):
        np.testing.assert_allclose(split.features[p].numpy(), features[p])
    with pytest.raises(IndexError, match="3 pass"):
        split.features[3]


def test_lazy_read_detects_non_finite_values_when_the_pass_is_read(written):
    path, _ = written
    with h5py.File(path, "r+") as handle:
        data = handle["features"][...]
        data[1, 6, 2] = np.nan
        del handle["features"]
        handle.create_dataset("features", data=data, fletcher32=True, chunks=(1, 5, 4))
    split = read_split(path, lazy=True, verify=False)
    split.features[0]
    with pytest.raises(CorruptFeaturesError, match="pass 1, row 6"):
        split.features[1]


def write_parts(tmp_path, manifest, bounds):
    """Files of consecutive row ranges of ``manifest``'s split, as the processes of a sharded run write them."""
    parts = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        part = dataclasses.replace(manifest, split=f"train[{start}:{stop}]", rows=stop - start)

        def compute(p, first, last, start=start):
            return FakeCompute()(p, start + first, start + last)

        parts.append((write_split(tmp_path / f"part-{start}.h5", part, compute, chunk_rows=4, progress=False), part))
    return parts


def test_joined_parts_are_the_file_one_writer_makes(tmp_path, written):
    path, manifest = written
    parts = write_parts(tmp_path, manifest, [0, 4, 8, 10])
    joined = join_splits(tmp_path / "joined.h5", manifest, parts, chunk_rows=4, progress=False)
    with h5py.File(path) as one, h5py.File(joined) as other:
        for name in ("features", "labels", "index"):
            np.testing.assert_array_equal(one[name][...], other[name][...])
            assert one[name].chunks == other[name].chunks and other[name].fletcher32
        assert {k: v for k, v in one.attrs.items() if k != "created"}.keys() == set(other.attrs) - {"created"}
        assert all(np.array_equal(one.attrs[k], other.attrs[k]) for k in one.attrs if k != "created")
    assert read_split(joined, expected=manifest).manifest == manifest


def test_join_refuses_parts_that_do_not_fit_or_are_damaged(tmp_path):
    manifest = make_manifest()
    parts = write_parts(tmp_path, manifest, [0, 4, 10])
    with pytest.raises(ValueError, match="hold 4 rows"):
        join_splits(tmp_path / "joined.h5", manifest, parts[:1], progress=False)
    with pytest.raises(ValueError, match="not the split's 10 rows"):
        join_splits(tmp_path / "joined.h5", make_manifest(feature_dim=5), parts, progress=False)
    damaged = parts[1][0]
    flip_byte_in_first_feature_chunk(damaged)
    with pytest.raises(CorruptFeaturesError, match="(?i)checksum") as info:
        join_splits(tmp_path / "joined.h5", manifest, parts, chunk_rows=4, progress=False)
    assert str(damaged) in str(info.value)
    with damaged.open("r+b") as handle:
        handle.truncate(damaged.stat().st_size // 2)
    with pytest.raises(CorruptFeaturesError, match=str(damaged)):
        join_splits(tmp_path / "joined.h5", manifest, parts, progress=False)
    damaged.unlink()
    with pytest.raises(FileNotFoundError, match="part-4.h5: this part of .* is missing"):
        join_splits(tmp_path / "joined.h5", manifest, parts, progress=False)
    assert not (tmp_path / "joined.h5").exists()


def test_reusable_says_whether_a_write_is_needed(tmp_path, written):
    path, manifest = written
    assert reusable(path, manifest) and not reusable(tmp_path / "missing.h5", manifest)
    other = make_manifest(params_hash="hash-b")
    with pytest.raises(StaleFeaturesError):
        reusable(path, other)
    assert not reusable(path, other, rebuild=True)
    assert read_split(path, expected=manifest).manifest == manifest  # asking changes nothing


def test_full_disk_stops_with_advice_and_keeps_the_finished_chunks(tmp_path, monkeypatch):
    manifest = make_manifest()
    path = tmp_path / "train.h5"
    write = h5py.Dataset.__setitem__
    writes = []

    def fill_up(dataset, key, value):
        writes.append(dataset.name)
        if dataset.name == "/features" and writes.count("/features") == 2:
            # as h5py reports it: HDF5's message carries the system's errno
            raise OSError(
                "Can't write data (file write failed: time = now, filename = 'train.h5.partial', "
                "file descriptor = 3, errno = 28, error message = 'No space left on device')"
            )
        write(dataset, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", fill_up)
    with pytest.raises(FeatureStoreError, match="the disk is full") as info:
        write_split(path, manifest, FakeCompute(), chunk_rows=4, progress=False)
    message = str(info.value)
    assert str(partial_of(path)) in message and "Free space in" in message and "resumes" in message
    monkeypatch.setattr(h5py.Dataset, "__setitem__", write)
    resumed = FakeCompute()
    write_split(path, manifest, resumed, chunk_rows=4, progress=False)
    assert resumed.calls == chunk_calls(3, 10, 4, first_row=4)  # the first chunk survived
    np.testing.assert_array_equal(read_split(path).features, expected_arrays(3, 10, 4)[0].astype(np.float32))


@pytest.mark.parametrize("number", [errno.EACCES, errno.EPERM, errno.EROFS])
def test_missing_permission_names_the_folder_to_fix(tmp_path, monkeypatch, number):
    def refuse(*args, **kwargs):
        raise PermissionError(number, os.strerror(number), str(args[0]))

    monkeypatch.setattr(h5py, "File", refuse)
    with pytest.raises(FeatureStoreError, match="not allowed to write here") as info:
        write_split(tmp_path / "run" / "train.h5", make_manifest(), FakeCompute(), progress=False)
    assert f"Make {tmp_path / 'run'} and the files in it writable" in str(info.value)


def test_errors_of_compute_are_not_mistaken_for_storage_errors(tmp_path):
    def unreadable_images(p, start, stop):
        raise PermissionError(errno.EACCES, "Permission denied", "images/0.JPEG")

    with pytest.raises(PermissionError, match="images/0.JPEG"):
        write_split(tmp_path / "train.h5", make_manifest(), unreadable_images, progress=False)
