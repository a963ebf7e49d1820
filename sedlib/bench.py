"""Performance benchmark: ``python -m sedlib.bench``.

Times the real training step (`sedlib.method.train.EnsembleTrainer.step`) on random features of the
paper's shape (768-d DeiT-3-B features, heads 768 -> 3072 -> 768 -> 1000) with the published
hyperparameters: the 50-member SGD run (batch 16) and the 5-member AdamW run (batch 32), under the
``iid``, ``matching`` and ``all`` schedules. For each it prints pair-steps per second (one pair of
members on one mini-batch), the projected wall time of the run's 10 updating epochs (for the
50-model run under ``iid``: the published 800,730 pair-steps), the peak device memory on a GPU, and
how far the step is from two floors computed on the same device:

* arithmetic: the step's matmul FLOPs (forward and backward of every member it runs) at the
  measured fp32 matmul rate;
* memory: the bytes the optimiser must move (read and write the updated members' weights and
  optimiser state, read their gradients) at the measured copy bandwidth.

``--eval`` also times evaluation: 50 members on random eval rows with every score of
`sedlib.eval.scores`, streamed, projected to the 1.6M rows of the published evaluation. ``--scaling``
measures the cost of one step and its memory against the ensemble size M for each schedule, the
O(1)-versus-O(M^2) claim of the paper (Sec. 3.3), and can draw it (``--figure``).

Examples:
    python -m sedlib.bench                      # paper shapes on the GPU if there is one, else the CPU
    python -m sedlib.bench --seconds 20 --schedules iid matching all --eval
    python -m sedlib.bench --scaling --scale small --figure results/bench/scaling-cpu.png
    python -m sedlib.bench --scale tiny         # seconds-long smoke run with tiny heads
    python -m sedlib.bench --csv results/bench/cpu.csv   # keep the table
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from sedlib.config.training import SCHEDULES
from sedlib.eval.evaluate import evaluate_split
from sedlib.method.ensemble import HeadConfig, HeadEnsemble
from sedlib.method.published import PUBLISHED, PublishedRun
from sedlib.method.schedules import plan_epoch
from sedlib.method.train import EnsembleTrainer

SCALES = {
    "paper": {},
    "small": {"feature_dim": 192, "hidden_dim": 768, "num_classes": 100},
    "tiny": {"feature_dim": 32, "hidden_dim": 64, "num_classes": 10},
}
PUBLISHED_EVAL_ROWS = 1_600_000  # ImageNet val, IN-C at two severities, IN-A/R and the OOD sets, roughly
OPTIMIZER_STATE_COPIES = {"sgd": 1, "adamw": 2}  # momentum; exp_avg and exp_avg_sq


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function, device: torch.device, repeats: int) -> float:
    """Mean seconds of ``function()`` over ``repeats`` calls, after one untimed call."""
    function()
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    _synchronize(device)
    return (time.perf_counter() - started) / repeats


def device_rates(device: torch.device) -> dict[str, float]:
    """Measured fp32 matmul rate (FLOP/s) and copy bandwidth (bytes read + written per second)."""
    size = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    matmul = _timed(lambda: a @ b, device, repeats=10)
    elements = (256 if device.type == "cuda" else 32) * 2**20
    source, target = torch.randn(elements, device=device), torch.empty(elements, device=device)
    copy = _timed(lambda: target.copy_(source), device, repeats=10)
    return {"matmul_flops_per_s": 2 * size**3 / matmul, "copy_bytes_per_s": 2 * 4 * elements / copy}


def step_shape(schedule: str, members: int) -> tuple[int, int, int]:
    """``(members run, members updated, pair-steps)`` of one step of a schedule with M members."""
    if schedule == "iid":
        return 2, 2, 1
    if schedule == "matching":
        return 2 * (members // 2), 2 * (members // 2), members // 2
    return members, members, members * (members - 1) // 2


def step_floors(heads: HeadConfig, schedule: str, batch: int, optimizer: str, rates: dict) -> dict[str, float]:
    """Lower bounds on the seconds of one step: arithmetic and optimiser memory traffic.

    Arithmetic: forward and backward of each member run cost 6 FLOPs per multiply-accumulate of its
    three matmuls (fc1, fc2, head) per row. Memory: each updated member's weights are read and
    written, its gradient read, and each optimiser state read and written, in fp32.
    """
    run, updated, _ = step_shape(schedule, heads.num_members)
    d, h, c = heads.feature_dim, heads.hidden_dim, heads.num_classes
    flops = run * 6 * batch * (2 * d * h + d * c)
    parameters = 2 * d * h + h + d + d * c + c + 5 * d  # fc1, fc2, head, biases, norms and layer scale
    touches = 2 + 1 + 2 * OPTIMIZER_STATE_COPIES[optimizer]
    bytes_moved = updated * parameters * 4 * touches
    return {
        "arithmetic_floor_s": flops / rates["matmul_flops_per_s"],
        "memory_floor_s": bytes_moved / rates["copy_bytes_per_s"],
    }


def benchmark(
    run: PublishedRun,
    schedule: str,
    device: torch.device,
    rows: int,
    seconds: float,
    rates: dict | None = None,
    warmup_steps: int = 3,
) -> dict:
    """Time training steps of one published run under one schedule.

    Args:
        run: the published run whose heads and hyperparameters are used.
        schedule: ``iid``, ``matching`` or ``all``.
        device: where to train.
        rows: rows of random features (the step cost does not depend on it); epochs repeat as needed.
        seconds: time budget of the measurement (at least one step runs).
        rates: `device_rates` of ``device``, for the floors (measured when None).
        warmup_steps: untimed steps first.

    Returns:
        A table row: run, members, schedule, batch, optimiser, timed pair-steps, pair-steps/s,
        projected minutes of the run's updating epochs under this schedule, seconds per step, the
        step's arithmetic and memory floors and the measured time over each, peak memory.
    """
    config = dataclasses.replace(run.train, schedule=schedule)
    generator = torch.Generator().manual_seed(0)
    ensemble = HeadEnsemble(run.heads, generator=generator).to(device)
    trainer = EnsembleTrainer(ensemble, config)
    features = torch.randn(rows, run.heads.feature_dim, generator=generator).to(device)
    labels = torch.randint(0, run.heads.num_classes, (rows,), generator=generator).to(device)
    plans = (
        plan.to(device)
        for _ in itertools.count()
        for plan in plan_epoch(schedule, rows, run.heads.num_members, config.batch_size, generator)
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup_steps):
        trainer.step(next(plans), features, labels)
    _synchronize(device)
    steps, pair_steps, started = 0, 0, time.perf_counter()
    for plan in plans:
        trainer.step(plan, features, labels)
        steps += 1
        pair_steps += plan.num_pairs
        if time.perf_counter() - started >= seconds:
            break
    _synchronize(device)
    elapsed = time.perf_counter() - started
    rate = pair_steps / elapsed
    members = run.heads.num_members
    pairs_per_batch = members * (members - 1) // 2 if schedule == "all" else 1
    floors = step_floors(run.heads, schedule, config.batch_size, config.optimizer, rates or device_rates(device))
    step_seconds = elapsed / steps
    return {
        "run": run.name,
        "members": members,
        "schedule": schedule,
        "batch": config.batch_size,
        "optimizer": config.optimizer,
        "pair_steps_timed": pair_steps,
        "pair_steps_per_s": rate,
        "run_minutes": run.pair_steps * pairs_per_batch / rate / 60,
        "step_ms": 1000 * step_seconds,
        "x_arithmetic_floor": step_seconds / floors["arithmetic_floor_s"],
        "x_memory_floor": step_seconds / floors["memory_floor_s"],
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
    }


def benchmark_evaluation(heads: HeadConfig, device: torch.device, rows: int, batch_size: int = 4096) -> dict:
    """Time `sedlib.eval.evaluate.evaluate_split` (ensemble, soup, calibration, every score) on random rows.

    Returns:
        A row: members, rows, seconds, rows per second, and the projected seconds for the
        published evaluation's 1.6M rows.
    """
    generator = torch.Generator().manual_seed(0)
    ensemble = HeadEnsemble(heads, generator=generator).to(device)
    features = torch.randn(rows, heads.feature_dim, generator=generator).to(device)
    labels = torch.randint(0, heads.num_classes, (rows,), generator=generator)
    evaluate_split(ensemble, features[:batch_size], labels[:batch_size], batch_size, progress=False)  # warm-up
    _synchronize(device)
    started = time.perf_counter()
    evaluate_split(ensemble, features, labels, batch_size, progress=False)
    seconds = time.perf_counter() - started
    return {
        "members": heads.num_members,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "projected_s_1.6M_rows": PUBLISHED_EVAL_ROWS * seconds / rows,
    }


def scaling(
    run: PublishedRun,
    members: list[int],
    schedules: list[str],
    device: torch.device,
    rows: int,
    seconds: float,
    rates: dict,
) -> pd.DataFrame:
    """`benchmark` of ``run``'s heads and hyperparameters for each ensemble size and schedule."""
    results = []
    for count, schedule in itertools.product(members, schedules):
        sized = dataclasses.replace(run, heads=dataclasses.replace(run.heads, num_members=count))
        results.append(benchmark(sized, schedule, device, rows, seconds, rates, warmup_steps=1))
        row = results[-1]
        print(f"  M={count} {schedule}: {row['step_ms']:.2f} ms per step", flush=True)
    return pd.DataFrame(results)


def scaling_figure(table: pd.DataFrame, where: str):
    """Seconds per step and per pair-step, and peak memory, against M (log-log), one line per schedule."""
    panels = [("step_ms", "ms per step"), ("pair_step_ms", "ms per pair-step")]
    if table["peak_memory_gib"].notna().any():
        panels.append(("peak_memory_gib", "peak memory (GiB)"))
    table = table.assign(pair_step_ms=1000 / table["pair_steps_per_s"])
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), layout="constrained")
    for axis, (column, title) in zip(axes, panels):
        for schedule, rows in table.groupby("schedule", sort=False):
            axis.plot(rows["members"], rows[column], marker="o", label=schedule)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("ensemble size M")
        axis.set_title(title)
        axis.grid(alpha=0.3, which="both")
    axes[0].legend()
    figure.suptitle(f"sedlib.bench --scaling on {where}", fontsize=9)
    return figure


def _where(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m sedlib.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
    parser.add_argument("--runs", nargs="+", default=["50_models", "ood_gen"], choices=sorted(PUBLISHED))
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows of random features (default: 1,281,167 on a GPU, 20,000 on the CPU)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="time budget per measurement")
    parser.add_argument("--scale", choices=list(SCALES), default="paper", help="head shapes (small, tiny: CPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    parser.add_argument("--eval", action="store_true", help="also time evaluation of 50 members with every score")
    parser.add_argument("--eval-rows", type=int, default=None, help="eval rows (default 1.6M on a GPU, 2,000 on CPU)")
    parser.add_argument("--scaling", action="store_true", help="time one step against M instead (first of --runs)")
    parser.add_argument("--members", nargs="+", type=int, default=[2, 5, 10, 20, 50, 100], help="M for --scaling")
    parser.add_argument("--figure", type=Path, default=None, help="with --scaling: draw it to this PNG")
    args = parser.parse_args(argv)
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = args.rows or (1_281_167 if device.type == "cuda" else 20_000)
    where = _where(device)
    rates = device_rates(device)
    print(
        f"{where}: fp32 matmul {rates['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s, "
        f"copy {rates['copy_bytes_per_s'] / 1e9:.1f} GB/s",
        flush=True,
    )
    runs = {
        name: dataclasses.replace(
            PUBLISHED[name], heads=dataclasses.replace(PUBLISHED[name].heads, **SCALES[args.scale])
        )
        for name in args.runs
    }
    if args.scaling:
        table = scaling(runs[args.runs[0]], args.members, args.schedules, device, rows, args.seconds, rates)
    else:
        results = []
        for name, run in runs.items():
            for schedule in args.schedules:
                results.append(benchmark(run, schedule, device, rows, args.seconds, rates))
                print(f"  {name} {schedule}: {results[-1]['pair_steps_per_s']:.1f} pair-steps/s", flush=True)
        table = pd.DataFrame(results)
    table = table.assign(device=where, rows=rows, scale=args.scale)
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
                "step_ms": "{:,.2f}".format,
                "x_arithmetic_floor": "{:,.1f}".format,
                "x_memory_floor": "{:,.1f}".format,
                "peak_memory_gib": "{:.2f}".format,
            },
        )
    )
    print(
        "run_minutes: projected time of the run's 10 updating epochs under the schedule; for iid (published) and "
        f"matching that is {PUBLISHED['50_models'].pair_steps:,} pair-steps for 50_models, for all M(M-1)/2 times more."
        "\nx_arithmetic_floor / x_memory_floor: the measured step time over its matmul-FLOP floor and over its "
        "optimiser-traffic floor."
    )
    if args.scaling and args.figure is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        scaling_figure(table, where).savefig(args.figure, dpi=150)
        print(f"figure: {args.figure}")
    if args.eval:
        heads = dataclasses.replace(PUBLISHED["50_models"].heads, **SCALES[args.scale])
        evaluation = benchmark_evaluation(
            heads, device, args.eval_rows or (1_600_000 if device.type == "cuda" else 2_000)
        )
        print(
            f"\nevaluation: {heads.num_members} members, {evaluation['rows']:,} rows, every score: "
            f"{evaluation['seconds']:.2f} s ({evaluation['rows_per_s']:,.0f} rows/s); "
            f"projected for {PUBLISHED_EVAL_ROWS:,} rows: {evaluation['projected_s_1.6M_rows']:,.1f} s"
        )
    return table


if __name__ == "__main__":
    main()
