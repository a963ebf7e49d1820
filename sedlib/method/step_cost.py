"""The cost of one training step against the ensemble size M: a repeated measurement with a positive control.

SED's stochastic pairs (``iid``) run and update two members per step whatever M is, so a step should
cost about the same at M = 2 and M = 20; the ``all`` schedule runs every member and all M(M-1)/2
pairs, so its step must grow with M (the positive control: if it does not, the measurement cannot
see a cost that grows). `measure_step_cost` times both schedules at each M on the study's own heads
and training settings, in interleaved rounds so that a slow moment of the machine falls on both sizes
of a schedule alike; `step_cost_ratios` gives t(M_high) / t(M_low) per schedule with a 95 % interval
over the rounds.

Stage 02 runs it after training (`notebooks/02_train_a2d.py`) and shows it as a measurement of the
machine the run used. Wall-clock times differ between runs and machines, so nothing that has to be
identical between two runs (the key findings, the abstract) reads them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from sedlib.method.ensemble import HeadConfig, HeadEnsemble
from sedlib.method.schedules import StepPlan, plan_epoch, plans_to
from sedlib.method.train import EnsembleTrainer, TrainConfig

#: The schedules measured: SED's stochastic pairs, and every pair as the positive control.
SCHEDULES = ("iid", "all")


def _plans(schedule: str, rows: int, members: int, batch_size: int, device: torch.device) -> Iterator[StepPlan]:
    """Step plans of one schedule, epoch after epoch, without end."""
    generator = torch.Generator().manual_seed(0)
    while True:
        yield from plans_to(plan_epoch(schedule, rows, members, batch_size, generator), device)


def measure_step_cost(
    heads: HeadConfig,
    train: TrainConfig,
    members: Sequence[int] = (2, 20),
    schedules: Sequence[str] = SCHEDULES,
    rounds: int = 7,
    seconds: float = 0.2,
    min_steps: int = 3,
    warmup_steps: int = 2,
    rows: int = 2048,
    device: torch.device | str = "cpu",
    threads: int | None = None,
) -> pd.DataFrame:
    """Time training steps of each schedule at each ensemble size, in ``rounds`` interleaved rounds.

    For each schedule, each size is built once (random heads of ``heads``' shape with ``members``
    members, the trainer of ``train`` with the schedule replaced) and warmed up; then every round
    times each size in turn for at least ``seconds`` and ``min_steps`` steps, on random features (the
    cost of a step does not depend on their values). The sizes of a schedule are interleaved, so that
    a slow moment of the machine falls on all of them alike.

    Args:
        heads: the heads' shape (its ``num_members`` is replaced by each of ``members``).
        train: the training settings (optimiser, batch size, λ, κ, hardness weights).
        members: the ensemble sizes, each at least 2.
        schedules: pair schedules among ``iid``, ``matching`` and ``all``.
        rounds: repetitions of the whole set of configurations.
        seconds: the least time each configuration is timed per round.
        min_steps: the fewest steps timed per configuration and round.
        warmup_steps: untimed steps of each configuration first.
        rows: rows of random features.
        device: where the steps run.
        threads: CPU threads while measuring (stage 02 passes 1, as each training worker uses);
            None: as set.

    Returns:
        One row per round and configuration: ``round``, ``schedule``, ``members``, ``steps`` and
        ``step_ms`` (the mean milliseconds of one step in that round).
    """
    device, previous = torch.device(device), torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _measure(heads, train, members, schedules, rounds, seconds, min_steps, warmup_steps, rows, device)
    finally:
        torch.set_num_threads(previous)


def _measure(heads, train, members, schedules, rounds, seconds, min_steps, warmup_steps, rows, device) -> pd.DataFrame:
    """`measure_step_cost` with the threads set: one schedule at a time (its ratio compares its own sizes)."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(rows, heads.feature_dim, generator=generator).to(device)
    labels = torch.randint(0, heads.num_classes, (rows,), generator=generator).to(device)
    timed = []
    for schedule in schedules:
        setups = {}  # only this schedule's ensembles and optimiser states are held at once
        for count in members:
            config = dataclasses.replace(train, schedule=schedule)
            ensemble = HeadEnsemble(dataclasses.replace(heads, num_members=count), generator=generator).to(device)
            trainer = EnsembleTrainer(ensemble, config)
            plans = _plans(schedule, rows, count, config.batch_size, device)
            for _ in range(warmup_steps):
                trainer.step(next(plans), features, labels)
            setups[count] = trainer, plans
        for round_index in range(rounds):
            for count, (trainer, plans) in setups.items():
                _synchronize(device)
                steps, started = 0, time.perf_counter()
                while steps < min_steps or time.perf_counter() - started < seconds:
                    trainer.step(next(plans), features, labels)
                    steps += 1
                    _synchronize(device)
                elapsed = time.perf_counter() - started
                timed.append(
                    {"round": round_index, "schedule": schedule, "members": count, "steps": steps,
                     "step_ms": 1000 * elapsed / steps}
                )  # fmt: skip
    return pd.DataFrame(timed)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_cost_ratios(times: pd.DataFrame, low: int, high: int, confidence: float = 0.95) -> pd.DataFrame:
    """Per schedule: the step's cost at M = ``high`` over its cost at M = ``low``, with an interval over rounds.

    Each round gives one ratio (both sizes timed in the same round). The estimate is their geometric
    mean, and the interval Student's t interval of the mean log-ratio, exponentiated: the rounds are
    the repeats, so the interval says how well the repeated measurement pins the ratio down on this
    machine, not how it varies between machines.

    Args:
        times: `measure_step_cost`'s rows (both sizes measured in every round).
        low: the smaller M.
        high: the larger M.
        confidence: the interval's coverage.

    Returns:
        One row per schedule: ``schedule``, ``ms_low`` and ``ms_high`` (median step milliseconds),
        ``ratio``, ``ratio_low``, ``ratio_high``, ``rounds``.

    Raises:
        ValueError: a schedule lacks one of the sizes in some round, or has fewer than two rounds.
    """
    rows = []
    for schedule, group in times.groupby("schedule", sort=False):
        wide = group.pivot(index="round", columns="members", values="step_ms")
        if low not in wide or high not in wide or wide[[low, high]].isna().any().any() or len(wide) < 2:
            raise ValueError(f"schedule {schedule!r}: need M={low} and M={high} timed in each of at least two rounds")
        logs = np.log(wide[high].to_numpy() / wide[low].to_numpy())
        mean, spread = logs.mean(), stats.sem(logs)
        lower, upper = (
            stats.t.interval(confidence, len(logs) - 1, loc=mean, scale=spread) if spread > 0 else (mean,) * 2
        )
        rows.append(
            {"schedule": schedule, "ms_low": float(wide[low].median()), "ms_high": float(wide[high].median()),
             "ratio": float(np.exp(mean)), "ratio_low": float(np.exp(lower)), "ratio_high": float(np.exp(upper)),
             "rounds": len(logs)}
        )  # fmt: skip
    return pd.DataFrame(rows)


def step_cost_markdown(ratios: pd.DataFrame, low: int, high: int, where: str) -> str:
    """The report's table of `step_cost_ratios`, saying what was measured and where."""
    lines = [
        f"| schedule | ms per step, M = {low} | ms per step, M = {high} | t(M={high}) / t(M={low}) [95 % interval] |",
        "|---|---:|---:|---|",
    ]
    for row in ratios.itertuples():
        lines.append(
            f"| {row.schedule} | {row.ms_low:.1f} | {row.ms_high:.1f} | "
            f"{row.ratio:.2f} [{row.ratio_low:.2f}, {row.ratio_high:.2f}] |"
        )
    rounds = int(ratios["rounds"].min()) if len(ratios) else 0
    lines.append(
        f"\nMeasured on {where}, in {rounds} interleaved rounds (medians of the rounds; the interval is over the "
        "rounds). A measurement of this machine, not a verdict: it varies between runs and machines."
    )
    return "\n".join(lines)
