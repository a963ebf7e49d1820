"""Provenance: the environment a stage ran in, its times, the verified record and the report's view of it."""

import json
import subprocess

import pytest
import torch

from sedlib.rundir import provenance
from sedlib.rundir.directory import ArtefactError, RunDir


def git(root, *args):
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    subprocess.run(command, cwd=root, check=True, capture_output=True)


def test_git_state_names_the_commit_and_uncommitted_changes(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert provenance.git_state(tmp_path) == (head, False)
    (tmp_path / "a.txt").write_text("two")
    assert provenance.git_state(tmp_path) == (head, True)


def test_git_state_outside_a_repository_is_unknown(tmp_path):
    assert provenance.git_state(tmp_path) == (None, None)


def test_environment_holds_versions_cpu_threads_and_gpu():
    env = provenance.environment()
    assert env["python"].count(".") == 2
    assert env["torch"] == torch.__version__.split("+")[0] or env["torch"] == torch.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch_threads"] == torch.get_num_threads() and env["cpu_cores"] >= 1
    assert env["gpu"] is None or isinstance(env["gpu"], str)
    json.dumps(env)  # plain JSON values


def fake_environment(**changes):
    env = dict.fromkeys(("platform", "torch_interop_threads", "omp_num_threads", "gpu"))
    env |= {"commit": "abc123", "uncommitted_changes": False, "python": "3.11.7", "torch": "2.5.1", "timm": "1.0"}
    env |= {"numpy": "2.1", "cpu_model": "Some CPU", "cpu_capability": "AVX2", "cpu_cores": 2, "torch_threads": 2}
    return env | changes


def test_record_stage_keeps_each_stage_and_is_verified(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    monkeypatch.setattr(provenance, "environment", lambda root: fake_environment())
    provenance.record_stage(run, "01_cache", 12.34, 20.0)
    provenance.record_stage(run, "02_train_a2d", 50.0, 99.96)
    record = provenance.read_provenance(run)
    assert list(record["stages"]) == ["01_cache", "02_train_a2d"]
    assert record["stages"]["01_cache"]["seconds"] == 12.3 and record["stages"]["02_train_a2d"]["cpu_seconds"] == 100.0
    (tmp_path / provenance.PROVENANCE_FILE).write_text("{}")
    with pytest.raises(ArtefactError, match="changed since it was written"):
        provenance.read_provenance(run)


def test_markdown_shows_environment_stage_times_and_other_environments():
    record = {
        "stages": {
            "01_cache": {"seconds": 10.0, "cpu_seconds": 15.0, "completed": "2026-01-01T00:00:10+00:00",
                         "environment": fake_environment(commit="old", cpu_capability="AVX512")},
            "02_train_a2d": {"seconds": 30.4, "cpu_seconds": 59.6, "completed": "2026-01-01T00:01:00+00:00",
                             "environment": fake_environment(uncommitted_changes=True)},
        }
    }  # fmt: skip
    text = provenance.markdown(record, ["01_cache", "02_train_a2d", "03_eval_ood_gen"])
    assert "| commit | abc123 (with uncommitted changes) |" in text  # the last stage's environment
    assert "torch's kernels: AVX2" in text and "| GPU | none |" in text and "OMP_NUM_THREADS unset" in text
    assert "| 01_cache | 10 | 15 |" in text and "| 02_train_a2d | 30 | 60 |" in text
    assert "| all | 40 | 75 |" in text  # 10 + 30.4 and 15 + 59.6, rounded after summing
    other = "Stage 01_cache ran in another environment: commit old, uncommitted_changes no, cpu_capability AVX512."
    assert other in text
    assert "03_eval_ood_gen" not in text


def test_markdown_without_a_record_says_so(tmp_path):
    assert "No provenance record" in provenance.markdown(None)
    written = provenance.write_markdown(tmp_path)
    assert written.name == provenance.PROVENANCE_MARKDOWN and "No provenance record" in written.read_text()
