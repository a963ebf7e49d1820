"""Caching on several processes: shards, joins, faults (threads in this process) and torchrun on the CPU (gloo)."""

import dataclasses
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from sedlib.config import PROJECT_ROOT, load_config
from sedlib.features import StaleFeaturesError, partial_path, write_split
from sedlib.rundir.directory import RunDir
from sedlib.rundir.lock import LOCK_ENVIRONMENT_VARIABLE
from sedlib.study.distributed import (
    Ranks,
    shard_manifest,
    shard_path,
    shard_ranges,
    threads_per_process,
    write_sharded,
)
from sedlib.study.extract import cache_features
from tests.features.test_features import flip_byte_in_first_feature_chunk, make_manifest

MANIFEST = make_manifest(source="np.sin rows 0..9", passes=2, feature_dim=3)
CHUNK = 2


class Killed(Exception):
    """Stands for a process killed mid-split."""


class Rows:
    """A compute of deterministic features; records its calls and dies before call ``die_at`` (1-based)."""

    def __init__(self, die_at: int | None = None):
        self.die_at = die_at
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, pass_index, start, stop):
        if len(self.calls) + 1 == self.die_at:
            raise Killed
        self.calls.append((pass_index, start, stop))
        rows = np.arange(start, stop)
        return np.sin(7.0 * pass_index + 0.1 * rows[:, None] + np.arange(3)), rows % 4, rows + 100


class Gate:
    """A barrier whose ``abort`` fails only the threads still waiting (`threading.Barrier` can fail released ones)."""

    def __init__(self, parties: int):
        self.parties, self.arrived, self.generation, self.broken = parties, 0, 0, False
        self.condition = threading.Condition()

    def wait(self):
        with self.condition:
            generation = self.generation
            self.arrived += 1
            if self.arrived == self.parties:
                self.arrived, self.generation = 0, generation + 1
                self.condition.notify_all()
                return
            while generation == self.generation and not self.broken:
                self.condition.wait(timeout=60)
            if generation == self.generation:
                raise threading.BrokenBarrierError

    def abort(self):
        with self.condition:
            self.broken = True
            self.condition.notify_all()


@dataclass
class Exchange:
    barrier: Gate
    box: Any = None


@dataclass(frozen=True)
class ThreadRanks(Ranks):
    """Ranks that are threads of this process: torch.distributed's barrier and broadcast, by threading."""

    exchange: Exchange = field(default=None, compare=False, repr=False)

    def barrier(self):
        self.exchange.barrier.wait()

    def from_main(self, task):
        if self.is_main:
            try:
                self.exchange.box = (task(), None)
            except Exception as error:
                self.exchange.box = (None, error)
        self.exchange.barrier.wait()
        value, error = self.exchange.box
        self.exchange.barrier.wait()  # every rank has read the box before the next call fills it
        if error is not None:
            raise error
        return value


def run_ranks(world_size, work):
    """``work(ranks)`` on one thread per rank; each rank's result or exception. A failing rank stops the others."""
    exchange = Exchange(Gate(world_size))
    results = [None] * world_size

    def target(rank):
        try:
            results[rank] = work(ThreadRanks(rank, world_size, rank, world_size, exchange))
        except Exception as error:
            results[rank] = error
            exchange.barrier.abort()  # as torchrun stops the other processes

    threads = [threading.Thread(target=target, args=(rank,), daemon=True) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def sharded(tmp_path, world_size, computes, rebuild=False):
    """Write ``MANIFEST``'s split from ``world_size`` ranks, rank r computing with ``computes[r]``."""
    path, shards = tmp_path / "features" / "train.h5", tmp_path / "features" / "shards" / "train"
    return run_ranks(
        world_size,
        lambda ranks: write_sharded(
            path, MANIFEST, computes[ranks.rank], shards, ranks, CHUNK, progress=False, rebuild=rebuild
        ),
    )


@pytest.fixture
def one_process(tmp_path):
    compute = Rows()
    return write_split(tmp_path / "one" / "train.h5", MANIFEST, compute, chunk_rows=CHUNK, progress=False), compute


def assert_same_file(one: Path, other: Path):
    """Same datasets (values, order, storage chunks, checksums) and attributes; only ``created`` may differ."""
    with h5py.File(one) as a, h5py.File(other) as b:
        assert set(a) == set(b) == {"features", "labels", "index"}
        for name in a:
            np.testing.assert_array_equal(a[name][...], b[name][...])
            assert a[name].dtype == b[name].dtype and a[name].chunks == b[name].chunks and b[name].fletcher32
        assert set(a.attrs) == set(b.attrs)
        for key in set(a.attrs) - {"created"}:
            assert np.array_equal(a.attrs[key], b.attrs[key]), key


def test_shard_ranges_are_whole_chunks_covering_the_rows_in_order():
    for rows, chunk, world in [(10, 2, 2), (300, 48, 2), (100, 128, 2), (1000, 7, 8), (5, 3, 4)]:
        ranges = shard_ranges(rows, chunk, world)
        assert len(ranges) == world and ranges[0][0] == 0 and ranges[-1][1] == rows
        assert all(stop == start for (_, stop), (start, _) in zip(ranges[:-1], ranges[1:]))
        assert all(start % chunk == 0 for start, _ in ranges)
        sizes = [-(-(stop - start) // chunk) for start, stop in ranges]
        assert max(sizes) - min(sizes) <= 1  # chunks shared out as evenly as they go


@pytest.mark.parametrize("world_size", [2, 3, 7])  # 7 ranks for 5 chunks: some have no rows
def test_shards_join_into_the_file_of_one_process(tmp_path, one_process, world_size):
    path, single = one_process
    computes = [Rows() for _ in range(world_size)]
    assert sharded(tmp_path, world_size, computes) == ["missing"] * world_size
    assert_same_file(path, tmp_path / "features" / "train.h5")
    # each chunk was computed once, by one rank, over the rows one process gives it
    assert sorted(call for compute in computes for call in compute.calls) == sorted(single.calls)
    assert not (tmp_path / "features" / "shards").exists()
    assert sharded(tmp_path, world_size, [Rows() for _ in range(world_size)]) == ["complete"] * world_size


def test_a_killed_rank_resumes_after_its_last_complete_chunk(tmp_path, one_process):
    path, _ = one_process
    first = [Rows(), Rows(die_at=3)]  # rank 1 (rows 4..10) dies after 2 of its 6 chunks
    results = sharded(tmp_path, 2, first)
    assert isinstance(results[1], Killed) and isinstance(results[0], threading.BrokenBarrierError)
    shards = tmp_path / "features" / "shards" / "train"
    assert partial_path(shard_path(shards, 4, 10)).exists() and shard_path(shards, 0, 4).exists()
    again = [Rows(), Rows()]
    assert sharded(tmp_path, 2, again) == ["partial", "partial"]
    assert again[0].calls == [] and again[1].calls == [(0, 8, 10), (1, 4, 6), (1, 6, 8), (1, 8, 10)]
    assert_same_file(path, tmp_path / "features" / "train.h5")


def truncate(path):
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def other_row_count(path):
    """Put at ``path`` a complete shard of other rows (0..2 instead of 0..4)."""
    path.unlink()
    write_split(path, shard_manifest(MANIFEST, 0, 2), Rows(), chunk_rows=CHUNK, progress=False)


@pytest.mark.parametrize("damage", [truncate, flip_byte_in_first_feature_chunk, other_row_count])
def test_a_bad_shard_is_detected_and_recomputed(tmp_path, one_process, caplog, damage):
    path, _ = one_process
    sharded(tmp_path, 2, [Rows(), Rows(die_at=1)])  # rank 0 finished its shard, rank 1 died at once
    complete = shard_path(tmp_path / "features" / "shards" / "train", 0, 4)
    assert complete.is_file()
    damage(complete)
    again = [Rows(), Rows()]
    with caplog.at_level(logging.WARNING, logger="sedlib.features"):
        sharded(tmp_path, 2, again)
    assert f"{complete}: rebuilding" in caplog.text
    assert len(again[0].calls) == 4  # both passes of rows 0..4, recomputed
    assert_same_file(path, tmp_path / "features" / "train.h5")


def test_a_truncated_partial_shard_is_discarded_and_recomputed(tmp_path, one_process, caplog):
    path, _ = one_process
    sharded(tmp_path, 2, [Rows(), Rows(die_at=3)])
    partial = partial_path(shard_path(tmp_path / "features" / "shards" / "train", 4, 10))
    truncate(partial)
    again = [Rows(), Rows()]
    with caplog.at_level(logging.WARNING, logger="sedlib.features"):
        sharded(tmp_path, 2, again)
    assert f"{partial}: discarding this interrupted write" in caplog.text and len(again[1].calls) == 6
    assert_same_file(path, tmp_path / "features" / "train.h5")


def test_rank_zeros_refusal_of_a_stale_file_reaches_every_rank(tmp_path):
    stale = dataclasses.replace(MANIFEST, params_hash="other")
    write_split(tmp_path / "features" / "train.h5", stale, Rows(), chunk_rows=CHUNK, progress=False)
    computes = [Rows(), Rows()]
    results = sharded(tmp_path, 2, computes)
    assert all(isinstance(result, StaleFeaturesError) for result in results)
    assert computes[0].calls == computes[1].calls == [] and not (tmp_path / "features" / "shards").exists()
    assert sharded(tmp_path, 2, [Rows(), Rows()], rebuild=True) == ["stale", "stale"]


def test_ranks_come_from_torchruns_environment():
    assert Ranks.from_env({}) == Ranks()
    environ = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert Ranks.from_env(environ) == Ranks(rank=3, world_size=4, local_rank=1, local_world_size=2)
    with pytest.raises(ValueError, match=r"not \['LOCAL_RANK', 'LOCAL_WORLD_SIZE'\]"):
        Ranks.from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        Ranks.from_env({**environ, "WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="inconsistent process ranks"):
        Ranks.from_env({**environ, "RANK": "4"})


def test_each_process_takes_its_own_gpu_and_its_share_of_the_cores():
    second = Ranks(rank=1, world_size=2, local_rank=1, local_world_size=2)
    assert second.device(torch.device("cpu")) == torch.device("cpu")
    assert Ranks().device(torch.device("cuda")) == torch.device("cuda")  # alone: as before
    if torch.cuda.device_count() < 2:
        with pytest.raises(RuntimeError, match="LOCAL_RANK=1 has no GPU"):
            second.device(torch.device("cuda"))
    cores = len(os.sched_getaffinity(0))
    assert threads_per_process(1) == cores and threads_per_process(2) == max(1, cores // 2)
    assert threads_per_process(4 * cores) == 1


# torchrun on the CPU: two processes and the gloo backend, on the smoke study with fewer splits.

SETTINGS = {
    "data": {"corruptions": ["fog"], "severities": [5], "ood_sets": ["digits"]},
    "cache": {"chunk_rows": 48},  # several chunks per split, and a split (fog-5, 40 rows) one rank has no rows of
}
SET = ["--set", "data.corruptions=[fog]", "--set", "data.severities=[5]", "--set", "data.ood_sets=[digits]"]
SET += ["--set", "cache.chunk_rows=48"]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The reference: one process, with the CPU threads each of two processes gets (float sums follow them)."""
    config = load_config("params/smoke.yaml", SETTINGS)
    run = RunDir.open(config, tmp_path_factory.mktemp("single") / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_process(2))
    try:
        cache_features(config, run, progress=False)
    finally:
        torch.set_num_threads(threads)
    return run


def torchrun(entry, run_dir, *arguments):
    environ = {key: value for key, value in os.environ.items() if key != LOCK_ENVIRONMENT_VARIABLE}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["--monitor-interval", "0.2", *entry, *arguments, "params/smoke.yaml", "--run-dir", str(run_dir)]
    command += [*SET, "--no-progress"]
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env={**environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300
    )


def assert_same_features(single: RunDir, run_dir: Path):
    files = sorted(path.name for path in single.features.glob("*.h5"))
    assert files == sorted(path.name for path in (run_dir / "features").glob("*.h5"))
    assert files == sorted(["train.h5", "val.h5", "test.h5", "fog-5.h5", "digits.h5"])
    for name in files:
        assert_same_file(single.features / name, run_dir / "features" / name)
    assert sorted(path.name for path in (run_dir / "features").iterdir()) == files  # no shards, no partial files


@pytest.mark.torchrun
def test_torchrun_with_two_processes_killed_mid_split_resumes_and_writes_the_files_of_one(single_process, tmp_path):
    """Two processes (gloo): rank 1 dies mid-split, a second torchrun resumes after its last complete chunk, and
    the joined files are those of one process."""
    killed = torchrun([str(Path(__file__).with_name("_rank_dies.py")), "5"], tmp_path / "run")
    assert killed.returncode != 0
    shard = tmp_path / "run" / "features" / "shards" / "train" / "rows-144-300.h5.partial"
    assert shard.is_file() and not (tmp_path / "run" / "features" / "train.h5").exists()
    result = torchrun(["-m", "sedlib.cache"], tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    # rank 1 had finished pass 0 (156 rows) and one chunk of pass 1 (48 rows) of its 2 x 156
    assert f"[rank 1 of 2] {shard}: resuming an interrupted write (204 of 312 rows done)" in result.stderr
    assert_same_features(single_process, tmp_path / "run")
    splits = pd.read_csv(tmp_path / "run" / "results" / "splits.csv")  # rank 0 wrote it, once
    assert splits["split"].tolist() == ["train", "val", "test", "fog-5", "digits"]
    assert splits["status"].tolist() == ["partial", "missing", "missing", "missing", "missing"]  # as found
