"""Shared fixtures: tiny synthetic stand-ins for cached features and heads, the stage executors that stand in
for notebook kernels (`tests.helpers.executors`), and the one end-to-end smoke run that tests read from."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sedlib.method.ensemble import HeadConfig, HeadEnsemble  # noqa: E402

collect_ignore_glob = ["helpers/*_notebook.py"]  # notebooks for a kernel (one waits), not modules to import


@pytest.fixture
def tiny_config() -> HeadConfig:
    return HeadConfig(num_members=4, feature_dim=12, hidden_dim=20, num_classes=5)


@pytest.fixture
def tiny_ensemble(tiny_config) -> HeadEnsemble:
    ensemble = HeadEnsemble(tiny_config, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # make the MLP branch matter, as after training
        ensemble.ls2.gamma.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        ensemble.norm2.bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
    return ensemble


def random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``(n, size, size, 3)`` uint8 images of uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def clustered_features(rows: int, dim: int, classes: int, seed: int = 0, spread: float = 1.0):
    """Features around one random centre per class, and their labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, dim, generator=generator)
    labels = torch.randint(0, classes, (rows,), generator=generator)
    return centres[labels] + spread * torch.randn(rows, dim, generator=generator), labels


@pytest.fixture(scope="session", autouse=True)
def code_closures_once():
    """The runner and the training records parse a stage's code closure on every call (`sedlib.rundir.closure`,
    a second per stage); sedlib's code does not change while the tests run, so each is parsed once here."""
    from tests.helpers.executors import cache_closures

    with pytest.MonkeyPatch.context() as monkeypatch:
        cache_closures(monkeypatch)
        yield


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``params/smoke.yaml`` run once through the five notebooks and the report (about a minute); read-only."""
    from sedlib import run as runner
    from sedlib.rundir.directory import RunDir

    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    runner.run_study("params/smoke.yaml", run_dir=str(run_dir), engine="pandoc")
    return RunDir(run_dir)


@pytest.fixture
def fake_stages(monkeypatch):
    """Stages run by `tests.helpers.executors.FakeExecutor` (no notebook): its ``calls`` lists them in order."""
    from tests.helpers.executors import FakeExecutor, install

    executor = FakeExecutor()
    install(monkeypatch, executor)
    return executor


@pytest.fixture
def in_process(monkeypatch):
    """Stages run by `tests.helpers.executors.InProcessExecutor`: their notebooks' cells in this process."""
    from tests.helpers.executors import InProcessExecutor, install

    executor = InProcessExecutor()
    install(monkeypatch, executor)
    return executor


@pytest.fixture
def runs_in(tmp_path, monkeypatch):
    """Default run directories (``runs/<run_name>``) under tmp_path instead of the checkout."""
    from sedlib.rundir import directory as rundir

    monkeypatch.setattr(rundir, "RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"
