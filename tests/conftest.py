"""Shared fixtures: tiny synthetic stand-ins for cached features and heads, the stage executors that stand in
for notebook kernels (`tests.helpers.executors`), and the one end-to-end smoke run that tests read from."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sedlib.device import cpu_cores  # noqa: E402
from sedlib.method.ensemble import HeadConfig, HeadEnsemble  # noqa: E402

collect_ignore_glob = ["helpers/*_notebook.py"]  # notebooks for a kernel (one waits), not modules to import

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    # Each pytest-xdist worker, and the notebook kernels and processes it starts, gets its share of the cores:
    # torch's default of one thread per core in every worker oversubscribes them and doubles the suite's time.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpu_cores() // _workers)))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
def smoke_run(request, tmp_path_factory):
    """``params/smoke.yaml`` run once through the five notebooks and the report (about a minute); read-only."""
    from sedlib import run as runner
    from sedlib.rundir.directory import RunDir

    if ungrouped := request.config.stash[UNGROUPED]:
        pytest.fail(
            f"pytest-xdist did not group the {len(ungrouped)} tests that share a fixture (e.g. {ungrouped[0]}), "
            "so every worker would run the smoke study; install the pytest pinned in requirements.txt (make setup)",
            pytrace=False,
        )
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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Under ``make test`` (pytest-xdist, ``-n auto --dist loadgroup``) each costly shared fixture is computed by one
    worker: the tests that read the smoke run form one group, and the tests of a module that share a module-scoped
    fixture (a study on fake ImageNet folders, a backbone) another. Every other test is scheduled on its own."""
    for item in items:
        if "smoke_run" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("smoke_run"))
        elif any(defs[-1].scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


UNGROUPED = pytest.StashKey[list[str]]()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """pytest-xdist groups a test by a suffix it writes into the test's id, which pytest 9.2 no longer keeps
    (pytest-dev/pytest-xdist#1386); the tests left ungrouped are recorded for `smoke_run` to refuse."""
    grouped = getattr(session.config.option, "loadgroup", False)  # set in pytest-xdist workers only
    marked = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group")]
    session.config.stash[UNGROUPED] = [nodeid for nodeid in marked if grouped and "@" not in nodeid]
