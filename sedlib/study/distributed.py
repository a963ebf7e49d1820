"""Caching on several processes: torchrun's ranks each write a shard of every split, rank 0 joins them.

At paper scale the cache stage is the expensive one (the published logs: 1-4 h for the augmented
ImageNet passes, 10-15 h for ImageNet-C on one GPU). Launched by PyTorch's own launcher,

::

    torchrun --nproc-per-node 4 -m sedlib.cache params/imagenet_deit3b.yaml

each process (rank r of W, from torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE``) caches its own rows of each split, and rank 0 joins them into the split's file.
Without torchrun's variables nothing here is used and caching is the single-process `write_split`.

How a split is written (`write_sharded`):

1. Rank 0 decides whether the split's file is reusable (complete, same manifest, checksums) and tells
   the others, so that all ranks act on one answer even where a shared file system shows them
   different states.
2. Rank r computes rows ``[start, stop)`` of every pass (`shard_ranges`): a contiguous run of whole
   chunks of ``cache.chunk_rows`` rows, the chunks of a single-process run. Each chunk is therefore
   computed from the same images, augmented and corrupted with the same per-image seeds, in the same
   backbone batches, so the features are those of a single process: bit for bit on the CPU with the
   same number of threads per process (float sums are ordered by the thread count; the tests check
   this), and on GPUs of one model, which run the same kernels on the same shapes (not yet checked).
   The shard, ``features/shards/<split>/rows-<start>-<stop>.h5``, is written by `write_split`:
   resumable after its last complete chunk, checksummed, renamed when complete. A finished shard that
   fails its checks (another manifest, e.g. a wrong row count; truncated; a bad checksum) is rebuilt
   without asking: shards are intermediate files.
3. After a barrier, rank 0 joins the shards (`sedlib.features.join_splits`) and deletes them. The
   others go on with the next split.

Joining is a merge into a regular file, not an HDF5 virtual dataset. A virtual dataset has no chunks
or checksums of its own, so the layout and Fletcher-32 checks that every reader relies on
(`sedlib.features.read_split`) could not vouch for it; every reader would need every shard file to
stay in place, readable and unchanged; and copying or hard-linking a split's file (as docs/paper-scale.md does
to share splits between studies) would silently cut it from its data. The merge costs rank 0 one
sequential copy of each split (a few minutes for the 15.7 GB train split, against hours of
computing) and gives exactly the file one process writes, which every existing reader and check
handles.

The processes synchronise through a gloo process group, used only for barriers and for rank 0's
small decisions. It is gloo on GPUs too: no tensor crosses processes, and NCCL would need a CUDA
tensor for every collective. Waiting for the slowest shard of a split can take long, so the group's
timeout is ``cache.rank_timeout_minutes``; torchrun stops the other ranks as soon as one fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch

from sedlib.device import cpu_cores
from sedlib.features import (
    Compute,
    SplitManifest,
    join_splits,
    partial_path,
    reusable,
    split_status,
    write_split,
)
from sedlib.rundir.directory import RunDir

logger = logging.getLogger("sedlib.distributed")

T = TypeVar("T")

ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
"""The variables torchrun sets for each process."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes torchrun started (one process: the defaults).

    Attributes:
        rank: 0 .. world_size - 1, over all nodes.
        world_size: the number of processes.
        local_rank: 0 .. local_world_size - 1 on this node; it picks the GPU.
        local_world_size: the number of processes on this node.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.local_rank < self.local_world_size):
            raise ValueError(
                f"inconsistent process ranks {self}: need 0 <= rank < world_size and 0 <= local_rank < local_world_size"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Ranks:
        """The ranks torchrun put in the environment; one process when it set none.

        Raises:
            ValueError: some of the variables are set but not all, or one is not an integer.
        """
        present = [name for name in ENVIRONMENT if name in environ]
        if not present:
            return cls()
        missing = [name for name in ENVIRONMENT if name not in environ]
        if missing:
            raise ValueError(
                f"the environment sets {present} but not {missing}; start the processes with torchrun "
                "(python -m torch.distributed.run), which sets all four, or unset them for one process"
            )
        values = {}
        for name in ENVIRONMENT:
            try:
                values[name.lower()] = int(environ[name])
            except ValueError:
                raise ValueError(f"environment variable {name}={environ[name]!r} is not an integer") from None
        return cls(**values)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here (nothing to wait for alone)."""
        if self.world_size > 1:
            torch.distributed.barrier()

    def from_main(self, task: Callable[[], T]) -> T:
        """Run ``task`` on rank 0 alone and hand its result, or the exception it raised, to every rank.

        Every rank then returns the same value or raises the same error, so that they never act on
        different answers.
        """
        if self.world_size == 1:
            return task()
        box: list = [None]
        failure = None
        if self.is_main:
            try:
                box[0] = (task(), None)
            except Exception as error:
                failure = error
                box[0] = (None, _picklable(error))
        torch.distributed.broadcast_object_list(box, src=0)
        value, error = box[0]
        if failure is not None:
            raise failure
        if error is not None:
            raise error
        return value

    def device(self, device: torch.device) -> torch.device:
        """This process's device: under torchrun, CUDA means GPU ``LOCAL_RANK`` (made the current one).

        Raises:
            RuntimeError: this node has fewer GPUs than processes.
        """
        if device.type != "cuda" or self.world_size == 1:
            return device
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise RuntimeError(
                f"process LOCAL_RANK={self.local_rank} has no GPU: this node has {count}; start at most {count} "
                f"processes per node (torchrun --nproc-per-node {count})"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)


def _picklable(error: Exception) -> Exception:
    """``error`` itself when it can be sent to the other ranks, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def threads_per_process(local_world_size: int) -> int:
    """CPU threads for each of ``local_world_size`` processes on this node: its cores shared evenly."""
    return max(1, cpu_cores() // local_world_size)


@contextlib.contextmanager
def process_group(ranks: Ranks, timeout_minutes: int) -> Iterator[None]:
    """Join the other processes for the duration of the block (nothing to do alone).

    Each process uses its share of the node's CPU threads (`threads_per_process`); torchrun's
    ``MASTER_ADDR`` and ``MASTER_PORT`` say where to meet.

    Args:
        ranks: this process's ranks.
        timeout_minutes: how long a collective waits for the slowest process.
    """
    if ranks.world_size == 1:
        yield
        return
    if not torch.distributed.is_available():
        raise RuntimeError("this torch build has no torch.distributed; cache with one process (without torchrun)")
    torch.set_num_threads(threads_per_process(ranks.local_world_size))
    torch.distributed.init_process_group(
        "gloo", rank=ranks.rank, world_size=ranks.world_size, timeout=timedelta(minutes=timeout_minutes)
    )
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def run_lock(run: RunDir, ranks: Ranks, holder: str) -> Iterator[None]:
    """The run directory's lock (`RunDir.lock`), held by rank 0 for all ranks.

    The other ranks wait until rank 0 has it, and stop with its error when another run holds it, so
    no rank of a refused job writes anything.
    """
    with contextlib.ExitStack() as stack:
        ranks.from_main(lambda: stack.enter_context(run.lock(holder)))
        yield


def shard_ranges(rows: int, chunk_rows: int, world_size: int) -> list[tuple[int, int]]:
    """Each rank's rows ``[start, stop)`` of a split: contiguous runs of whole chunks, as even as chunks allow.

    A rank gets no rows (``start == stop``) when the split has fewer chunks than there are ranks.

    Example:
        >>> shard_ranges(300, 48, 2)
        [(0, 144), (144, 300)]
    """
    chunks = -(-rows // chunk_rows)
    bounds = [min(rows, rank * chunks // world_size * chunk_rows) for rank in range(world_size + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def shard_manifest(manifest: SplitManifest, start: int, stop: int) -> SplitManifest:
    """The manifest of rows ``[start, stop)`` of a split: the split's, narrowed to those rows."""
    return dataclasses.replace(
        manifest,
        split=f"{manifest.split}[{start}:{stop}]",
        rows=stop - start,
        source=f"rows [{start}, {stop}) of {manifest.rows}: {manifest.source}",
    )


def shard_path(shards: Path, start: int, stop: int) -> Path:
    """The file of rows ``[start, stop)`` of a split whose shards live in ``shards``."""
    return shards / f"rows-{start}-{stop}.h5"


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def discard_shards(shards: Path) -> None:
    """Delete a split's shard folder once its file is complete (and the shards folder, when empty)."""
    if shards.is_dir():
        shutil.rmtree(shards)
        logger.info("%s: removed the shards of the complete split", shards)
    with contextlib.suppress(OSError):  # other splits' shards are still there
        shards.parent.rmdir()


def write_sharded(
    path: Path,
    manifest: SplitManifest,
    compute: Compute,
    shards: Path,
    ranks: Ranks,
    chunk_rows: int,
    progress: bool = True,
    rebuild: bool = False,
) -> str:
    """Write a split's file from all ranks (see the module docstring); every rank calls it.

    Args:
        path: the split's file.
        manifest: what it will hold.
        compute: as for `sedlib.features.write_split`, over the whole split's rows.
        shards: the folder of this split's shards, ``features/shards/<split>``.
        ranks: this process's ranks.
        chunk_rows: rows per chunk, the unit the rows are shared out in.
        progress: show this rank's tqdm bar.
        rebuild: as for `write_split`, for the split's file (shards are always rebuilt when bad).

    Returns:
        The split's state before this call, as rank 0 found it (`sedlib.features.split_status`;
        ``partial`` also when only shards exist).

    Raises:
        sedlib.features.StaleFeaturesError, sedlib.features.CorruptFeaturesError: on every rank, when
            the split's file is stale or corrupt and ``rebuild`` is false.
    """

    def inspect() -> tuple[str, bool]:
        status = split_status(path, manifest)
        if status == "missing" and (_has_files(shards) or partial_path(path).exists()):
            status = "partial"
        return status, reusable(path, manifest, rebuild)

    status, done = ranks.from_main(inspect)
    if not done:
        ranges = shard_ranges(manifest.rows, chunk_rows, ranks.world_size)
        start, stop = ranges[ranks.rank]
        if stop > start:
            write_split(
                shard_path(shards, start, stop),
                shard_manifest(manifest, start, stop),
                lambda pass_index, first, last: compute(pass_index, start + first, start + last),
                chunk_rows=chunk_rows,
                progress=progress,
                rebuild=True,
            )
        ranks.barrier()
        if ranks.is_main:
            parts = [(shard_path(shards, a, b), shard_manifest(manifest, a, b)) for a, b in ranges if b > a]
            join_splits(path, manifest, parts, chunk_rows=chunk_rows, progress=progress, rebuild=rebuild)
    if ranks.is_main:
        discard_shards(shards)
    return status
