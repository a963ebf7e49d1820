"""Training-speed benchmark: ``python -m sedlib.bench``.

Times the real training step (`sedlib.train.EnsembleTrainer.step`) on random features of the
paper's shape (768-d DeiT-3-B features, heads 768 -> 3072 -> 768 -> 1000) with the published
hyperparameters: the 50-member SGD run (batch 16) and the 5-member AdamW run (batch 32), each under
the ``iid`` and ``matching`` schedules. It prints pair-steps per second (one pair of members on one
mini-batch), the projected wall time of the run's 10 updating epochs under each schedule (for the
50-model run under ``iid``: the published 800,730 pair-steps), and the peak device memory on a GPU.

Examples:
    python -m sedlib.bench                      # paper shapes on the GPU if there is one, else the CPU
    python -m sedlib.bench --seconds 20 --schedules iid matching all
    python -m sedlib.bench --scale tiny         # seconds-long smoke run with tiny heads
    python -m sedlib.bench --csv results/bench/cpu.csv   # keep the table
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import pandas as pd
import torch

from sedlib.ensemble import HeadEnsemble
from sedlib.published import PUBLISHED, PublishedRun
from sedlib.train import SCHEDULES, EnsembleTrainer, plan_epoch

TINY_HEADS = {"feature_dim": 32, "hidden_dim": 64, "num_classes": 10}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(
    run: PublishedRun,
    schedule: str,
    device: torch.device,
    rows: int,
    seconds: float,
    warmup_steps: int = 3,
) -> dict:
    """Time training steps of one published run under one schedule.

    Args:
        run: the published run whose heads and hyperparameters are used.
        schedule: ``iid``, ``matching`` or ``all``.
        device: where to train.
        rows: rows of random features (the step cost does not depend on it); epochs repeat as needed.
        seconds: time budget of the measurement (at least one step runs).
        warmup_steps: untimed steps first.

    Returns:
        A table row: run, members, schedule, batch, optimiser, timed pair-steps, pair-steps/s,
        projected minutes of the run's updating epochs under this schedule, peak memory.
    """
    config = dataclasses.replace(run.train, schedule=schedule)
    generator = torch.Generator().manual_seed(0)
    ensemble = HeadEnsemble(run.heads, generator=generator).to(device)
    trainer = EnsembleTrainer(ensemble, config)
    features = torch.randn(rows, run.heads.feature_dim, generator=generator).to(device)
    labels = torch.randint(0, run.heads.num_classes, (rows,), generator=generator).to(device)
    plans = (
        plan
        for _ in itertools.count()
        for plan in plan_epoch(schedule, rows, run.heads.num_members, config.batch_size, generator)
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup_steps):
        trainer.step(next(plans), features, labels)
    _synchronize(device)
    pair_steps, started = 0, time.perf_counter()
    for plan in plans:
        trainer.step(plan, features, labels)
        pair_steps += plan.num_pairs
        if time.perf_counter() - started >= seconds:
            break
    _synchronize(device)
    rate = pair_steps / (time.perf_counter() - started)
    members = run.heads.num_members
    pairs_per_batch = members * (members - 1) // 2 if schedule == "all" else 1
    return {
        "run": run.name,
        "members": members,
        "schedule": schedule,
        "batch": config.batch_size,
        "optimizer": config.optimizer,
        "pair_steps_timed": pair_steps,
        "pair_steps_per_s": rate,
        "run_minutes": run.pair_steps * pairs_per_batch / rate / 60,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m sedlib.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
    parser.add_argument("--runs", nargs="+", default=["50_models", "ood_gen"], choices=sorted(PUBLISHED))
    parser.add_argument("--schedules", nargs="+", default=["iid", "matching"], choices=SCHEDULES)
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows of random features (default: 1,281,167 on a GPU, 20,000 on the CPU)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="time budget per measurement")
    parser.add_argument(
        "--scale", choices=["paper", "tiny"], default="paper", help="tiny: small heads, for smoke tests"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = args.rows or (1_281_167 if device.type == "cuda" else 20_000)
    results = []
    for name in args.runs:
        run = PUBLISHED[name]
        if args.scale == "tiny":
            run = dataclasses.replace(run, heads=dataclasses.replace(run.heads, **TINY_HEADS))
        for schedule in args.schedules:
            results.append(benchmark(run, schedule, device, rows, args.seconds))
            row = results[-1]
            print(f"  {name} {schedule}: {row['pair_steps_per_s']:.1f} pair-steps/s", flush=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    table = pd.DataFrame(results).assign(device=where, rows=rows, scale=args.scale)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False, float_format="%.4g")
    print(
        f"\nsedlib.bench on {where}; {args.scale} shapes, {rows:,} rows of random features, {args.seconds:g} s per row"
    )
    print(
        table.drop(columns=["device", "rows", "scale"]).to_string(
            index=False,
            formatters={
                "pair_steps_per_s": "{:,.1f}".format,
                "run_minutes": "{:,.1f}".format,
                "peak_memory_gib": "{:.2f}".format,
            },
        )
    )
    print(
        "run_minutes: projected time of the run's 10 updating epochs under the schedule; for iid (published) and "
        f"matching that is {PUBLISHED['50_models'].pair_steps:,} pair-steps for 50_models, for all M(M-1)/2 times more."
    )
    return table


if __name__ == "__main__":
    main()
