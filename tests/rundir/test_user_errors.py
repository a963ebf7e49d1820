"""Each user error, met through the runner's entry (``python -m sedlib.run``), ends with one line that names the
folder, file or params key and what to do, never "probably a bug"; those that listing the data or reading the
params can find stop the run before any notebook kernel starts (these tests start none; the one error that
only reading an image finds runs stage 01's notebook in this process, `tests.helpers.executors`)."""

import numpy as np
import pytest
import yaml
from PIL import Image

from sedlib import run as runner


@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if a stage's notebook would be executed."""

    def execute(step, *args):
        raise AssertionError(f"{step.name} started a kernel")

    monkeypatch.setattr(runner, "execute_stage", execute)


def write_images(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        Image.fromarray(np.full((8, 8), 20 * number, np.uint8)).save(folder / f"{number}.png")


@pytest.fixture
def study(tmp_path):
    """A folder study (train/test with classes a, b; an OOD folder) and a function that runs it with changes."""
    for split in ("train", "test"):
        for name in ("a", "b"):
            write_images(tmp_path / "data" / split / name, 3)
    write_images(tmp_path / "data" / "far", 2)
    data = {
        "dataset": "folder",
        "train_path": str(tmp_path / "data" / "train"),
        "test_path": str(tmp_path / "data" / "test"),
        "ood_paths": {"far": str(tmp_path / "data" / "far")},
        "corruptions": ["fog"],
    }

    def run(capsys, data_changes=None, cache=None, arguments=()):
        params = {"run_name": "mine", "models": {"de": {"num_members": 2}}, "data": {**data, **(data_changes or {})}}
        if cache:
            params["cache"] = cache
        path = tmp_path / "mine.yaml"
        path.write_text(yaml.safe_dump(params))
        code = runner.main([str(path), "--run-dir", str(tmp_path / "run"), "--no-report", *arguments])
        err = capsys.readouterr().err.strip()
        assert code == 1 and err.startswith("error: ") and "probably a bug" not in err and "Traceback" not in err
        return err

    run.root = tmp_path / "data"
    return run


def test_class_folders_that_differ_between_train_and_test(study, capsys, no_kernel):
    write_images(study.root / "test" / "c", 1)
    err = study(capsys)
    assert err.startswith("error: [01_cache] cannot run: the test folder ")
    assert "has other class folders than the training set's ['a', 'b']: not in the training set ['c']" in err
    assert "The params keys are data.train_path" in err


def test_an_empty_class_in_the_test_folder(study, capsys, no_kernel):
    (study.root / "test" / "c").mkdir()
    write_images(study.root / "train" / "c", 2)
    err = study(capsys)
    assert (
        f"1 class folder(s) hold no image (.jpg/.jpeg/.png/.ppm/.bmp/.pgm/.tif/.tiff/.webp): {study.root}/test/c" in err
    )
    assert "every class needs images" in err


def test_a_missing_ood_folder(study, capsys, no_kernel):
    err = study(capsys, {"ood_paths": {"far": str(study.root / "nowhere")}})
    assert "nowhere does not exist" in err and "data.ood_paths" in err


def test_a_single_class(study, capsys, no_kernel):
    for split in ("train", "test"):
        for path in (study.root / split / "b").iterdir():
            path.unlink()
        (study.root / split / "b").rmdir()
    err = study(capsys)
    assert "has a single class folder 'a'" in err and "add a class folder" in err


def test_more_training_rows_than_the_folder_holds(study, capsys, no_kernel):
    err = study(capsys, {"train_rows": 500})
    assert "mine.yaml: data.train_rows=500 but the train set has only 6 images; lower data.train_rows" in err
    err = study(capsys, {"train_rows": 6})
    assert "mine.yaml: data.train_rows=6 but only 5 train images remain after the 1 validation rows" in err


def test_an_unknown_timm_model(study, capsys, no_kernel):
    err = study(capsys, cache={"backbone": "timm:resnet_18"})
    assert "cache.backbone: 'timm:resnet_18' names no timm" in err and "(the nearest: resnet18" in err


def test_timm_weights_that_are_no_checkpoint(study, capsys, no_kernel):
    text = study.root / "weights.pth"
    text.write_text("I am not a checkpoint")
    err = study(capsys, cache={"backbone": "timm:test_resnet", "weights": str(text)})
    assert f"cache.weights: {text} is not a PyTorch checkpoint (torch.save) but a text file" in err


def test_hub_weights_not_on_this_machine(study, capsys, no_kernel, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    err = study(capsys, cache={"backbone": "timm:resnet18.a1_in1k"})
    assert "are not in the local Hugging Face cache" in err and "set cache.weights to its path" in err


def test_a_typo_in_a_model_name_given_with_set(capsys, no_kernel, tmp_path):
    code = runner.main(["params/smoke.yaml", "--run-dir", str(tmp_path / "r"), "--set", "models.sed_a2.num_members=5"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.splitlines()[-1].startswith("error: params/smoke.yaml: --set models.sed_a2...: ")
    assert "the params file has no model 'sed_a2'; did you mean 'sed_a2d'?" in err


def test_an_image_that_cannot_be_read_is_named_by_the_stage(study, capsys, in_process):
    """An error that only reading the images finds: stage 01's notebook runs (in this process, as in a kernel)."""
    (study.root / "train" / "b" / "empty.png").write_bytes(b"")  # a zero-byte file, as an interrupted copy leaves
    err = study(capsys, {"severities": []}, arguments=["--stages", "01_cache"])
    first = err.splitlines()[0]
    assert first.startswith(f"error: [01_cache] failed: cannot read image {study.root}/train/b/empty.png")
    assert "the file is corrupt or truncated" in first and "data.train_path" in first
    assert err.splitlines()[-1].endswith("continues from here.")
    assert in_process.calls == ["01_cache"]


def test_features_too_large_for_float16(capsys, no_kernel, tmp_path):
    rng = np.random.default_rng(0)
    for name, rows in (("train", 8), ("test", 4)):
        features = rng.normal(size=(rows, 3)).astype(np.float32)
        features[0, 0] = 1e5 if name == "test" else 1.0
        np.savez(tmp_path / f"{name}.npz", features=features, labels=np.arange(rows) % 2)
    data = {"dataset": "features", "train_path": str(tmp_path / "train.npz"), "test_path": str(tmp_path / "test.npz")}
    params = tmp_path / "f.yaml"
    params.write_text(yaml.safe_dump({"run_name": "f", "models": {"de": {"num_members": 2}}, "data": data}))
    assert runner.main([str(params), "--run-dir", str(tmp_path / "run"), "--no-report"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: [01_cache] cannot run: {params}: {tmp_path / 'test.npz'} holds features up to 1e+05")
    assert err.endswith("beyond float16 (65504): set cache.dtype: float32")


KERNEL_MESSAGE = "cache.weights: w.pth does not load into timm's resnet18 (...); give a state dict of it"


@pytest.mark.parametrize(
    "raised, expected",
    [
        (OSError(28, "No space left on device"), "failed: no space left on the device mounted at /"),
        ("TimmBackboneError", f"failed: {KERNEL_MESSAGE}"),  # weights of another architecture
        ("ImageReadError", f"failed: {KERNEL_MESSAGE}"),  # a truncated JPEG
        ("ConfigError", f"failed: {KERNEL_MESSAGE}"),  # features that overflow cache.dtype float16
    ],
)
def test_errors_inside_a_stage_read_as_user_errors(study, capsys, monkeypatch, raised, expected):
    """What a kernel reports (papermill names the class only) and what the runner's own process meets."""
    from papermill.exceptions import PapermillExecutionError

    def execute(step, *args):
        if isinstance(raised, str):
            raise PapermillExecutionError(1, 2, "", raised, KERNEL_MESSAGE, [])
        raise RuntimeError("could not write evaluations.h5") from raised

    monkeypatch.setattr(runner, "execute_stage", execute)
    err = study(capsys, {"severities": []})
    assert expected in err.splitlines()[0]
    assert err.splitlines()[-1].endswith(f"--run-dir {study.root.parent / 'run'}` continues from here.")
