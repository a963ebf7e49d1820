import h5py
import numpy as np
import pytest
import torch

from sedlib.config import RunConfig, load_config, merge
from sedlib.data.fake_imagenet import make_fake_imagenet
from sedlib.data.imagenet import imagenet_split
from sedlib.data.published_features import PUBLISHED_FEATURE_FILES
from sedlib.data.splits import SplitPlan, plan_splits, source_images, split_hash, split_rows, training_rows
from sedlib.rundir.directory import RunDir
from sedlib.study.cached import load_split
from sedlib.study.extract import cache_features
from sedlib.study.models import load_models, train_models
from sedlib.study.predictions import evaluate_models

IMAGENET = {
    "run_name": "t",
    "protocol": "faithful",
    "data": {"dataset": "imagenet", "val_rows": 0, "train_rows": None, "test_rows": None, "corruption_rows": None},
    "models": {"de": {"num_members": 2}},
}


def hashes(values):
    config = RunConfig.from_dict(values)
    return {plan.name: split_hash(config, plan) for plan in plan_splits(config)}


def test_each_split_hash_depends_only_on_its_own_settings():
    base = hashes(IMAGENET)
    more_ood = hashes(merge(IMAGENET, {"data": {"ood_rows": 5}}))
    assert {name for name in base if base[name] != more_ood[name]} == {"inaturalist", "openimage_o"}
    standard = hashes(merge(IMAGENET, {"protocol": "standard", "data": {"val_rows": 10}}))
    changed = {name for name in base if base[name] != standard.get(name)}
    # the ImageNet-C transform follows the protocol; the train passes keep every row whatever val_rows is
    assert changed == {name for name in base if name[-2:] in ("-1", "-5")}
    augmented = hashes(merge(IMAGENET, {"cache": {"augmentation_passes": 3}}))
    assert {name for name in base if base[name] != augmented[name]} == {"train"}


def test_fashion_hash_ignores_the_protocol_and_keeps_train_tied_to_val_rows():
    config = load_config("params/smoke.yaml")
    values = config.to_dict()
    base = hashes(values)
    assert hashes(merge(values, {"protocol": "faithful"})) == base
    fewer_val = hashes(merge(values, {"data": {"val_rows": 50}}))
    assert {name for name in base if base[name] != fewer_val[name]} == {"train", "val"}


def test_val_rows_zero_plans_no_val_split():
    config = RunConfig.from_dict(IMAGENET)
    names = [plan.name for plan in plan_splits(config)]
    assert "val" not in names and names[:2] == ["train", "test"]
    assert names[-2:] == ["inaturalist", "openimage_o"]


def test_split_rows_are_disjoint_and_complete():
    config = RunConfig.from_dict(merge(IMAGENET, {"protocol": "standard", "data": {"val_rows": 7}}))
    train = split_rows(config, SplitPlan("train", "train"), 50)
    val = split_rows(config, SplitPlan("val", "val"), 50)
    assert train.tolist() == list(range(50))  # every row cached; training drops the val rows
    kept = training_rows(train, val)
    assert len(val) == 7 and len(kept) == 43
    assert set(train[kept].tolist()) == set(range(50)) - set(val.tolist())
    assert training_rows(train, None).tolist() == list(range(50))
    limited = RunConfig.from_dict(merge(IMAGENET, {"protocol": "standard", "data": {"val_rows": 7, "train_rows": 20}}))
    train20 = split_rows(limited, SplitPlan("train", "train"), 50)
    assert len(train20) == 20 and not set(train20.tolist()) & set(val.tolist())


def test_corruption_rows_are_the_first_test_rows():
    config = RunConfig.from_dict(merge(IMAGENET, {"data": {"test_rows": 10, "corruption_rows": 4}}))
    test = split_rows(config, SplitPlan("test", "test"), 30)
    corrupted = split_rows(config, SplitPlan("fog-1", "corruption", corruption="fog", severity=1), 30)
    assert len(test) == 10 and np.all(np.diff(test) > 0)
    assert corrupted.tolist() == test[:4].tolist()
    too_many = RunConfig.from_dict(merge(IMAGENET, {"data": {"test_rows": 3, "corruption_rows": 4}}))
    with pytest.raises(ValueError, match="corruption_rows=4 exceeds the 3 test rows"):
        split_rows(too_many, SplitPlan("fog-1", "corruption", corruption="fog", severity=1), 30)


def write_published(path, features, labels):
    """A file in the layout of the authors' caches: float32 embed, float32 (n, 1) label and index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("embed", data=features.astype(np.float32))
        handle.create_dataset("label", data=labels.astype(np.float32)[:, None])
        handle.create_dataset("index", data=np.arange(len(labels), dtype=np.float32)[:, None])


def test_standard_protocol_study_with_imported_splits(tmp_path):
    root = make_fake_imagenet(tmp_path / "data")
    imports = tmp_path / "authors"
    val_images = imagenet_split(root / "imagenet", "val")
    released = np.random.default_rng(0).normal(size=(len(val_images), 768)).astype(np.float32)
    write_published(imports / PUBLISHED_FEATURE_FILES["test"], released, val_images.labels)
    write_published(imports / PUBLISHED_FEATURE_FILES["inaturalist"], released[:6], np.zeros(6))
    overrides = {
        "protocol": "standard",
        "data": {"root": str(root), "val_rows": 3},
        "cache": {"import_dir": str(imports)},
        "train": {"epochs": 2},
        "seeds": [1, 2],
        "head": {"hidden_dim": 64},  # the published 3072 costs seconds of initialisation per model and soup
    }
    config = load_config("params/smoke_imagenet.yaml", overrides)
    run = RunDir.open(config, tmp_path / "run")
    splits = cache_features(config, run, progress=False).set_index("split")
    assert splits.loc[["test", "inaturalist"], "source"].tolist() == ["imported", "imported"]
    assert (splits.drop(index=["test", "inaturalist"])["source"] == "images").all()
    test = load_split(config, run, "test")
    np.testing.assert_array_equal(test.features, released)
    assert "imported from the authors' in_val_deit3b_-1.hdf5" in test.manifest.source
    assert (load_split(config, run, "inaturalist").labels == -1).all()
    val = load_split(config, run, "val")
    assert len(val.labels) == 3 and load_split(config, run, "train").features.shape == (2, 12, 768)

    models = train_models(config, run, progress=False)
    assert list(models) == ["ood_gen-seed1", "ood_gen-seed2", "ood_det_sem-seed1", "ood_det_sem-seed2"]
    batches = -(-(12 - 3) // config.models["ood_gen"].train.batch_size)  # the val rows are left out
    assert models["ood_gen-seed1"].log["steps"].tolist() == [batches, batches]
    first, second = (models[f"ood_gen-seed{s}"].ensemble.head.weight for s in (1, 2))
    assert not torch.equal(first, second)  # the seed reaches the initialisation
    evaluations = evaluate_models(config, run, load_models(config, run), ["val", "imagenet_a"], progress=False)
    subset = evaluations["pretrained_head", "imagenet_a"]
    assert subset.samples["ensemble_prediction"].between(0, 199).all()  # standard: argmax over the 200 classes


def test_disagreement_rows_are_the_ood_set_rows_the_evaluation_leaves_out():
    values = load_config("params/smoke.yaml").to_dict()
    config = RunConfig.from_dict(merge(values, {"data": {"disagreement_set": "animal_mnist", "disagreement_rows": 30}}))
    plans = {plan.name: plan for plan in plan_splits(config)}
    assert plans["disagreement"].kind == "disagreement"
    evaluated = split_rows(config, plans["animal_mnist"], 500)
    unlabelled = split_rows(config, plans["disagreement"], 500)
    assert len(evaluated) == 100 and len(unlabelled) == 30 and not set(evaluated) & set(unlabelled)
    base = hashes(values)
    assert hashes(merge(values, {"data": {"disagreement_set": "animal_mnist"}})).items() >= base.items()
    too_many = RunConfig.from_dict(merge(values, {"data": {"disagreement_set": "digits", "ood_rows": None}}))
    with pytest.raises(ValueError, match="leaving 0 for data.disagreement_rows"):
        split_rows(too_many, plans["disagreement"], 500)


class MeanColour(torch.nn.Module):
    """A stand-in backbone: the mean colour of each image, (B, 3)."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x.mean(dim=(2, 3)) + self.anchor


def test_folder_stream_resumes_mid_pass_with_the_same_rows(tmp_path):
    from sedlib.study.extract import _FolderStream

    root = make_fake_imagenet(tmp_path / "data")
    config = load_config("params/smoke_imagenet.yaml", {"data": {"root": str(root)}, "cache": {"batch_size": 5}})
    plan = SplitPlan("train", "train", passes=2)
    images, index = source_images(config, plan)
    stream = _FolderStream(MeanColour(), images, index, config, plan)
    first = [stream(0, 0, 4), stream(0, 4, 12)]  # calls that do not follow the chunks of 8 rows
    resumed = _FolderStream(MeanColour(), images, index, config, plan)(0, 4, 12)  # a restart after chunk one
    for fresh, again in zip(first[1], resumed):
        np.testing.assert_array_equal(fresh, again)
    features, labels, rows = (np.concatenate(parts) for parts in zip(*first))
    np.testing.assert_array_equal(rows, index)
    np.testing.assert_array_equal(labels, images.labels[index])
    second_pass = stream(1, 0, 12)[0]
    assert not np.array_equal(second_pass, features)  # another augmentation pass


class BatchSizes(MeanColour):
    """`MeanColour` that records the size of every batch it sees."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(len(x))
        return super().forward(x)


def test_folder_batches_stop_at_chunk_boundaries_wherever_the_stream_starts(tmp_path):
    from sedlib.study.extract import _FolderStream

    root = make_fake_imagenet(tmp_path / "data")
    config = load_config("params/smoke_imagenet.yaml", {"data": {"root": str(root)}, "cache": {"batch_size": 5}})
    assert config.cache.chunk_rows == 8
    plan = SplitPlan("train", "train", passes=2)
    images, index = source_images(config, plan)
    net = BatchSizes()
    whole = _FolderStream(net, images, index, config, plan)
    whole(0, 0, 8), whole(0, 8, 12)
    assert net.sizes == [5, 3, 4]  # as extract_features batches each chunk on its own
    net.sizes.clear()
    _FolderStream(net, images, index, config, plan)(0, 8, 12)  # a process (or a resumed write) starting at chunk 2
    assert net.sizes == [4]


def own_folders(root, counts):
    """``root/<split>/<class>/<n>.png`` for each ``split: {class: count}`` of ``counts``."""
    from PIL import Image

    for split, classes in counts.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True)
            for number in range(count):
                Image.fromarray(np.full((8, 8), number, np.uint8)).save(root / split / name / f"{number}.png")
    return root


def own_config(root, **data):
    values = {"run_name": "t", "models": {"de": {"num_members": 2}}}
    paths = {"train_path": str(root / "train"), "test_path": str(root / "test")}
    return RunConfig.from_dict(merge(values, {"data": {"train_rows": None, "test_rows": None, **paths, **data}}))


def test_own_folders_validate_on_their_val_folder_or_on_rows_held_out_of_train(tmp_path):
    from sedlib.data.splits import class_names

    root = own_folders(tmp_path, {split: {"b": 4, "a": 6} for split in ("train", "val", "test")})
    held_out = own_config(root, dataset="folder", val_rows=3, ood_paths={"far": str(root / "val")})
    plans = {plan.name: plan for plan in plan_splits(held_out)}
    assert list(plans)[:4] == ["train", "val", "test", "gaussian_noise-1"] and list(plans)[-1] == "far"
    train, train_rows = source_images(held_out, plans["train"])
    val, val_rows = source_images(held_out, plans["val"])
    assert train.name == val.name == "folder/train" and len(train_rows) == 10 and len(val_rows) == 3
    assert len(training_rows(train_rows, val_rows)) == 7  # training leaves the val rows out
    assert class_names(held_out) == ("a", "b") and train.labels.tolist() == [0] * 6 + [1] * 4
    far, _ = source_images(held_out, plans["far"])
    assert far.name == "folder/far" and (far.labels == -1).all() and len(far) == 10

    own_val = own_config(root, dataset="folder", val_rows=5, val_path=str(root / "val"))
    val, val_rows = source_images(own_val, SplitPlan("val", "val"))
    assert val.name == "folder/val" and len(val_rows) == 5
    assert len(split_rows(own_val, SplitPlan("train", "train"), 10)) == 10 and not own_val.data.val_held_out
    moved = own_config(root, dataset="folder", val_rows=5, val_path=str(root / "val"), test_path=str(root / "val"))
    before, after = hashes(own_val.to_dict()), hashes(moved.to_dict())
    assert before["train"] == after["train"] and before["test"] != after["test"]  # each split hashes its own paths
    too_many = own_config(root, dataset="folder", test_rows=11)
    with pytest.raises(ValueError, match="data.test_rows=11 but the test set has only 10 images; lower data.test_rows"):
        source_images(too_many, SplitPlan("test", "test"))


def test_a_features_study_caches_the_given_rows_and_names_a_bad_file(tmp_path):
    from sedlib.data.feature_files import FeatureFileError

    rng = np.random.default_rng(0)
    given = {name: rng.normal(size=(rows, 6)).astype(np.float32) for name, rows in (("train", 12), ("test", 5))}
    np.savez(tmp_path / "train.npz", features=given["train"], labels=np.arange(12) % 3)
    np.savez(tmp_path / "test.npz", features=given["test"], labels=np.array([0, 1, 2, 2, 1]))
    np.save(tmp_path / "far.npy", given["test"][:2] + 5)
    config = own_config(tmp_path, dataset="features", val_rows=4, train_path=str(tmp_path / "train.npz"),
                        test_path=str(tmp_path / "test.npz"), ood_paths={"far": str(tmp_path / "far.npy")})  # fmt: skip
    assert [plan.name for plan in plan_splits(config)] == ["train", "val", "test", "far"]
    run = RunDir.open(config, tmp_path / "run")
    splits = cache_features(config, run, progress=False).set_index("split")
    assert (splits["source"] == "given").all() and (splits["passes"] == 1).all()
    train, val = load_split(config, run, "train"), load_split(config, run, "val")
    np.testing.assert_array_equal(train.features, given["train"][train.index].astype(np.float16))
    assert train.labels.tolist() == (train.index % 3).tolist() and len(val.labels) == 4
    assert (load_split(config, run, "far").labels == -1).all()
    np.savez(tmp_path / "test.npz", features=given["test"], labels=np.array([0, 1, 2, 3, 1]))
    with pytest.raises(FeatureFileError, match=r"test.npz: label 3 is not one of the 3 classes of the training set"):
        cache_features(config, run, progress=False)


def test_own_data_studies_default_to_every_row_and_a_validation_fraction(tmp_path):
    from sedlib.config import ConfigError
    from sedlib.data.splits import held_out_rows

    root = own_folders(tmp_path, {split: {"b": 4, "a": 6} for split in ("train", "test")})
    values = {"run_name": "t", "models": {"de": {"num_members": 2}}}
    paths = {"dataset": "folder", "train_path": str(root / "train"), "test_path": str(root / "test")}
    config = RunConfig.from_dict(merge(values, {"data": paths}))  # only the dataset and its paths
    data = config.data
    assert (data.train_rows, data.val_rows, data.test_rows, data.corruption_rows) == (None, None, None, None)
    assert data.val_fraction == 0.1 and data.val_held_out
    train, train_rows = source_images(config, SplitPlan("train", "train"))
    _, val_rows = source_images(config, SplitPlan("val", "val"))
    assert len(train_rows) == 10 and len(val_rows) == 1  # round(0.1 * 10)
    assert len(training_rows(train_rows, val_rows)) == 9
    assert [held_out_rows(config, size) for size in (2, 4, 30, 1000)] == [1, 1, 3, 100]  # at least one, one left
    fashion = RunConfig.from_dict(values).data  # the embedded study keeps its own defaults
    assert (fashion.train_rows, fashion.val_rows, fashion.test_rows) == (12000, 2000, 5000)
    every_row = RunConfig.from_dict(merge(values, {"data": {**paths, "val_rows": 10}}))
    with pytest.raises(ConfigError, match="data.val_rows=10 holds out every one of the 10 training images"):
        source_images(every_row, SplitPlan("train", "train"))


def test_a_feature_file_changed_in_place_is_computed_again_not_reused(tmp_path, caplog):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "train.npz", features=rng.normal(size=(12, 4)).astype(np.float32), labels=np.arange(12) % 2)
    np.savez(tmp_path / "test.npz", features=rng.normal(size=(6, 4)).astype(np.float32), labels=np.arange(6) % 2)
    config = own_config(tmp_path, dataset="features", train_path=str(tmp_path / "train.npz"),
                        test_path=str(tmp_path / "test.npz"))  # fmt: skip
    run = RunDir.open(config, tmp_path / "run")
    cache_features(config, run, progress=False)
    path = run.path("features", "test")
    original = load_split(config, run, "test").features.copy()
    shared = tmp_path / "other_run_test.h5"
    shared.hardlink_to(path)  # another run directory shares the file (docs/distributed.md)
    with h5py.File(shared, "r+") as handle:  # ... and changes it in place: still a valid file of the same manifest
        handle["features"][0, 0, 0] = 99.0
    with caplog.at_level("WARNING", logger="sedlib.study.extract"):
        cache_features(config, run, progress=False)
    assert "features/test.h5 changed since this run wrote it: computing it again from its source" in caplog.text
    np.testing.assert_array_equal(load_split(config, run, "test").features, original)
    with h5py.File(shared, "r") as handle:
        assert handle["features"][0, 0, 0] == 99.0  # the other run's copy is its own business
