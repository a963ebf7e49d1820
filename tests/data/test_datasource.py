"""Every dataset answers the one `DataSource` interface, and nothing outside `sedlib.data` branches on the dataset."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sedlib.config import RunConfig, load_config, merge
from sedlib.config.sections import DATASETS
from sedlib.data import get_fashion_mnist
from sedlib.data.datasource import DataSource
from sedlib.data.fake_imagenet import make_fake_imagenet
from sedlib.data.fashion_mnist import FashionMNISTSource
from sedlib.data.feature_files import FeatureFilesSource
from sedlib.data.folders import FolderSource
from sedlib.data.imagenet import ImageNetSource
from sedlib.data.plan import SplitPlan
from sedlib.data.registry import DATA_SOURCES, data_source
from sedlib.data.splits import plan_splits, split_rows
from sedlib.errors import FeatureFileError, FolderLayoutError, MissingFileError

ROOT = Path(__file__).resolve().parents[2]


def test_the_registry_maps_every_dataset_to_its_source():
    assert set(DATA_SOURCES) == set(DATASETS)
    assert all(source.name == name and issubclass(source, DataSource) for name, source in DATA_SOURCES.items())


def answers_the_interface(source: DataSource) -> dict[str, object]:
    """Ask a source everything the stages ask; return each split's source set by name."""
    config = source.config
    plans = plan_splits(config)
    source.check(plans)
    names = source.class_names()
    assert len(names) >= 2 and all(isinstance(name, str) for name in names)
    assert source.form in ("arrays", "folders", "features") and source.has_images == (source.form != "features")
    assert source.corruption in ("folders", "at_cache", "none") and source.description
    sets = {}
    for plan in plans:
        images = source.source_set(plan)
        index = split_rows(config, plan, len(images))
        assert len(index) and len(images.labels) == len(images)
        if plan.kind in ("train", "val", "test"):
            assert images.labels.max() < len(names)
        else:
            assert plan.kind != "ood" or (images.labels == -1).all()
        assert source.describe_transform(plan) and str(len(index)) in source.describe_source(plan, images, index)
        json.dumps(source.hash_payload(plan))  # enters the split's hash
        sets[plan.name] = images
    assert all(isinstance(effect, str) for effect in source.protocol_effects(config.protocol))
    return sets


def test_fashion_mnist_reads_its_idx_files_and_corrupts_at_cache_time(tmp_path, monkeypatch):
    source = data_source(load_config("params/smoke.yaml"))
    assert isinstance(source, FashionMNISTSource) and (source.form, source.corruption) == ("arrays", "at_cache")
    sets = answers_the_interface(source)
    assert len(sets["train"]) == 60_000 and sets["test"].name == "fashion_mnist_test" and len(sets["digits"]) == 1797
    assert source.hash_payload(SplitPlan("fog-5", "corruption", corruption="fog", severity=5)) == {}
    fog = SplitPlan("fog-5", "corruption", corruption="fog", severity=5)
    clean = np.full((2, 32, 32, 3), 100, np.uint8)
    assert not np.array_equal(source.corrupt(fog, clean, np.arange(2)), clean)
    assert source.corrupt(SplitPlan("test", "test"), clean, np.arange(2)) is clean
    assert "fog severity 5 (imagecorruptions), seed 0" in source.describe_transform(fog)
    monkeypatch.delenv("SED_DATA", raising=False)
    monkeypatch.setattr(get_fashion_mnist, "_CHECKOUT", tmp_path / "project")
    monkeypatch.setattr(get_fashion_mnist, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(MissingFileError, match="the Fashion-MNIST files were not found. Get them with"):
        source.check([])


def test_imagenet_reads_its_folders_and_imagenet_c_as_the_protocol_says(tmp_path):
    root = make_fake_imagenet(tmp_path / "data", classes=3, train_per_class=2, val_per_class=2, subset_per_class=1,
                              ood_images=2, corruptions=("fog",), severities=(1,))  # fmt: skip
    values = {"data": {"root": str(root), "corruptions": ["fog"], "severities": [1]}}
    source = data_source(load_config("params/smoke_imagenet.yaml", values))
    assert isinstance(source, ImageNetSource) and (source.form, source.corruption) == ("folders", "folders")
    sets = answers_the_interface(source)
    assert len(source.class_names()) == 1000 and len(sets["train"]) == 6 and sets["fog-1"].name == "imagenet_c/fog/1"
    assert len(sets["imagenet_a"].class_names) == 200 and (sets["inaturalist"].labels == -1).all()
    fog = SplitPlan("fog-1", "corruption", corruption="fog", severity=1)
    assert source.folder_transform(fog) == "eval" and source.hash_payload(fog) == {"protocol": "faithful"}
    assert source.corrupt(fog, sets, np.arange(1)) is sets  # ImageNet-C comes corrupted
    standard_values = merge(values, {"protocol": "standard", "data": {"val_rows": 2}})
    standard = data_source(load_config("params/smoke_imagenet.yaml", standard_values))
    assert standard.folder_transform(fog) == "as_is" and standard.folder_transform(SplitPlan("test", "test")) == "eval"
    assert "ImageNet-C as distributed" in standard.protocol_effects("standard")


def own_config(tmp_path: Path, **data) -> RunConfig:
    values = {"run_name": "t", "models": {"de": {"num_members": 2}}, "data": {"train_rows": None, "test_rows": None}}
    return RunConfig.from_dict(merge(values, {"data": data}))


def image_folders(root: Path) -> Path:
    for split, classes in {"train": {"b": 3, "a": 4}, "test": {"a": 2, "b": 2}, "far": {"x": 3}}.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True)
            for number in range(count):
                Image.fromarray(np.full((8, 8), 40 * number, np.uint8)).save(root / split / name / f"{number}.png")
    return root


def test_your_folders_read_as_imagenet_named_by_your_paths_corrupted_at_cache_time(tmp_path):
    root = image_folders(tmp_path)
    config = own_config(tmp_path, dataset="folder", val_rows=2, severities=[5], corruptions=["fog"],
                        train_path=str(root / "train"), test_path=str(root / "test"),
                        ood_paths={"far": str(root / "far")})  # fmt: skip
    source = data_source(config)
    assert isinstance(source, FolderSource) and (source.form, source.corruption) == ("folders", "at_cache")
    sets = answers_the_interface(source)
    assert source.class_names() == ("a", "b") and sets["train"].name == "folder/train" and len(sets["far"]) == 3
    fog = SplitPlan("fog-5", "corruption", corruption="fog", severity=5)
    assert source.set_name(fog) == "test" and source.folder_transform(fog) == "eval"
    assert source.hash_payload(fog) == {"paths": [str(root / "train"), str(root / "test")]}  # no protocol
    assert source.describe_transform(fog).endswith("; fog severity 5 (imagecorruptions), seed 0")
    clean = np.full((2, 32, 32, 3), 100, np.uint8)
    assert not np.array_equal(source.corrupt(fog, clean, np.arange(2)), clean)
    (root / "test" / "c").mkdir()
    Image.new("L", (8, 8)).save(root / "test" / "c" / "1.png")
    with pytest.raises(FolderLayoutError, match="not in the training set"):
        source.check(plan_splits(config))


def test_your_feature_files_are_the_splits_without_images_or_corruptions(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", features=rng.normal(size=(9, 4)), labels=np.arange(9) % 3)
    np.savez(tmp_path / "test.npz", features=rng.normal(size=(4, 4)), labels=np.array([0, 1, 2, 0]))
    np.save(tmp_path / "far.npy", rng.normal(size=(3, 4)))
    config = own_config(tmp_path, dataset="features", val_rows=2, train_path=str(tmp_path / "train.npz"),
                        test_path=str(tmp_path / "test.npz"), ood_paths={"far": str(tmp_path / "far.npy")})  # fmt: skip
    source = data_source(config)
    assert isinstance(source, FeatureFilesSource) and not source.has_images and source.corruption == "none"
    sets = answers_the_interface(source)
    assert source.class_names() == ("0", "1", "2") and sets["far"].features.shape == (3, 4)
    assert [plan.passes for plan in plan_splits(config)] == [1, 1, 1, 1]  # nothing to augment
    assert source.describe_transform(SplitPlan("test", "test")) == "none: the rows of the feature file as given"
    np.savez(tmp_path / "test.npz", features=rng.normal(size=(4, 5)), labels=np.array([0, 1, 2, 0]))
    with pytest.raises(FeatureFileError, match="features are 5 wide"):
        source.check(plan_splits(config))


# --- no dataset branch outside sedlib/data (and the settings that declare the datasets) ---------------------

ALLOWED = ("sedlib/data/", "sedlib/config/")


def dataset_reads(source: str) -> list[int]:
    """Lines that read a study's dataset: ``<x>.dataset`` or ``<x>["dataset"]``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "dataset":
            lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "dataset":
            lines.append(node.lineno)
    return lines


def test_only_the_data_layer_reads_the_dataset():
    """Adding a dataset touches `sedlib.data` (a `DataSource` and the registry) and the settings, nothing else."""
    files = sorted((ROOT / "sedlib").rglob("*.py")) + sorted((ROOT / "notebooks").glob("*.py"))
    found = {
        f"{relative}:{line}"
        for path in files
        if not (relative := path.relative_to(ROOT).as_posix()).startswith(ALLOWED)
        for line in dataset_reads(path.read_text())
    }
    assert found == set(), "ask sedlib.data.registry.data_source(config) instead of reading data.dataset"


def test_the_scan_finds_a_dataset_branch():
    code = 'if config.data.dataset == "imagenet":\n    pass\nx = data["dataset"] in ("folder",)\ndataset = 1\n'
    assert dataset_reads(code) == [1, 3]
