import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from sedlib.config import RunConfig
from sedlib.rundir.directory import ArtefactError, RunDir, RunDirError

MODELS = {"de": {"num_members": 2, "lam": 0.0}}


def test_open_records_the_params(tmp_path):
    config = RunConfig.from_dict({"run_name": "a", "models": MODELS}, source="params/a.yaml")
    run = RunDir.open(config, tmp_path / "run")
    assert json.loads((run.root / "run.json").read_text()) == {"run_name": "a", "params_file": "params/a.yaml"}
    assert yaml.safe_load((run.root / "params.yaml").read_text()) == config.to_dict()
    assert RunDir.open(config, tmp_path / "run") == run  # reopening with the same params file is fine


def test_directory_of_another_params_file_is_refused(tmp_path):
    first = RunConfig.from_dict({"run_name": "a", "models": MODELS}, source="params/a.yaml")
    other = RunConfig.from_dict({"run_name": "a", "models": MODELS}, source="params/b.yaml")
    run = RunDir.open(first, tmp_path / "run")
    run.models.mkdir()
    (run.models / "de.safetensors").write_text("kept")
    with pytest.raises(RunDirError, match="made by params file 'params/a.yaml'") as error:
        RunDir.open(other, tmp_path / "run")
    assert "another run_name" in str(error.value)
    assert (run.models / "de.safetensors").read_text() == "kept"
    assert json.loads((run.root / "run.json").read_text())["params_file"] == "params/a.yaml"


def test_unreadable_record_is_an_error(tmp_path):
    config = RunConfig.from_dict({"run_name": "a", "models": MODELS}, source="params/a.yaml")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{not json")
    with pytest.raises(RunDirError, match="unreadable"):
        RunDir.open(config, tmp_path / "run")


def test_written_artefacts_are_recorded_and_verified(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.writing("results/a.csv", "results/b.txt") as (first, second):
        first.write_text("x,y\n1,2\n")
        second.write_text("note")
    recorded = json.loads((run.root / "artefacts.json").read_text())["files"]
    assert recorded["results/a.csv"]["sha256"] == hashlib.sha256(b"x,y\n1,2\n").hexdigest()
    assert recorded["results/a.csv"]["bytes"] == 8
    assert run.verified("results/b.txt").read_text() == "note"
    assert not (run.root / ".staging").exists()


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda path: path.unlink(), "results/a.csv is missing"),
        (lambda path: path.write_bytes(path.read_bytes()[:3]), "results/a.csv changed since it was written"),
        (lambda path: path.write_text("x,y\n1,3\n"), "results/a.csv changed since it was written"),
    ],
)
def test_a_missing_or_changed_artefact_is_refused_with_the_command(tmp_path, damage, problem):
    config = RunConfig.from_dict({"run_name": "a", "models": MODELS}, source="params/a.yaml")
    run = RunDir.open(config, tmp_path / "run")
    with run.writing("results/a.csv") as (path,):
        path.write_text("x,y\n1,2\n")
    damage(run.root / "results/a.csv")
    with pytest.raises(ArtefactError) as error:
        run.verified("results/a.csv")
    assert str(error.value).startswith(problem)


def test_a_file_written_behind_the_records_back_is_not_trusted(tmp_path):
    config = RunConfig.from_dict({"run_name": "a", "models": MODELS}, source="params/a.yaml")
    run = RunDir.open(config, tmp_path / "run")
    (run.root / "results").mkdir()
    (run.root / "results" / "ood_gen.csv").write_text("made by hand")
    with pytest.raises(ArtefactError) as error:
        run.verified(run.path("ood_gen"))
    message = str(error.value)  # the file, why it is not trusted, the stage that writes it and the command
    assert message.startswith("results/ood_gen.csv has no content hash in artefacts.json")
    assert "Stage 03_eval_ood_gen writes it" in message
    assert f"`python -m sedlib.run params/a.yaml --run-dir {run.root}`" in message  # not runs/a: names the directory


def test_a_failed_write_leaves_the_earlier_file_and_its_record(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.writing("models/m.bin", "models/m.json") as (weights, record):
        weights.write_bytes(b"good weights")
        record.write_text("{}")
    before = (run.root / "artefacts.json").read_text()
    with pytest.raises(RuntimeError, match="diverged"), run.writing("models/m.bin", "models/m.json") as (weights, _):
        weights.write_bytes(b"half")
        raise RuntimeError("diverged")
    assert (run.root / "models" / "m.bin").read_bytes() == b"good weights"
    assert (run.root / "artefacts.json").read_text() == before
    assert run.verified("models/m.bin") and not (run.root / ".staging").exists()


def test_a_write_must_produce_exactly_the_files_it_names(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match=r"\['results/b.txt'\] were not written"):
        with run.writing("results/a.txt", "results/b.txt") as (first, _):
            first.write_text("a")
    with pytest.raises(RunDirError, match=r"\['results/extra.txt'\] were written but not named"):
        with run.writing("results/a.txt") as (first,):
            first.write_text("a")
            first.with_name("extra.txt").write_text("b")
    assert not (run.root / "results").exists()


def test_paths_come_from_the_declaration(tmp_path):
    run = RunDir(tmp_path)
    assert run.path("model_record", "sed_a2d") == tmp_path / "models" / "sed_a2d_train.json"
    assert run.path("table_csv", "sweeps") == tmp_path / "results" / "tables" / "sweeps.csv"
    with pytest.raises(KeyError, match="no figure 'sumary' is declared"):
        run.save_figure("sumary", None)
    with pytest.raises(ValueError, match="takes a name"):
        run.path("model")


def test_an_unreadable_record_of_hashes_says_what_to_do(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.csv").write_text("x")
    (tmp_path / "artefacts.json").write_text("{broken")
    with pytest.raises(RunDirError, match="artefacts.json is unreadable.*Delete it"):
        run.verified("results/a.csv")


def test_staging_folders_of_dead_writers_are_removed(tmp_path):
    run = RunDir(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / ".staging" / f"{socket.gethostname()}-{dead.stdout.strip()}-0123abcd" / "models"
    left.mkdir(parents=True)
    (left / "m.safetensors").write_bytes(b"half written")
    mine = tmp_path / ".staging" / f"{socket.gethostname()}-{os.getpid()}-0123abcd"
    mine.mkdir()
    run.remove_stale_staging()
    assert not left.parent.exists() and mine.exists()


def test_the_runner_reads_a_feature_file_again_only_when_its_size_or_time_changed(tmp_path):
    run = RunDir(tmp_path)
    with run.writing("features/test.h5", "results/splits.csv") as (features, splits):
        features.write_bytes(b"A" * 64)
        splits.write_text("split\ntest\n")
    recorded = run.recorded("features/test.h5")["sha256"]
    path = tmp_path / "features" / "test.h5"
    stat = path.stat()
    path.write_bytes(b"B" * 64)  # same size; HDF5's own checksums catch this on read
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert run.content_hash("features/test.h5") == recorded
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert run.content_hash("features/test.h5") == hashlib.sha256(b"B" * 64).hexdigest()
    (tmp_path / "results" / "splits.csv").write_text("split\ntrain\n")  # any other artefact: always read
    assert run.content_hash("results/splits.csv") == hashlib.sha256(b"split\ntrain\n").hexdigest()
    assert run.content_hash("results/missing.csv") is None
