"""The step-cost measurement: its rounds, the ratio and its interval over rounds, and the report's table."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sedlib.method.ensemble import HeadConfig
from sedlib.method.step_cost import measure_step_cost, step_cost_markdown, step_cost_ratios
from sedlib.method.train import TrainConfig


def test_every_round_times_every_schedule_and_size():
    heads = HeadConfig(num_members=2, feature_dim=8, hidden_dim=16, num_classes=3)
    times = measure_step_cost(heads, TrainConfig(batch_size=4), members=(2, 4), rounds=3, seconds=0.0, rows=32)
    assert len(times) == 3 * 2 * 2
    timed = set(map(tuple, times[["schedule", "members"]].to_numpy()))
    assert timed == {("iid", 2), ("iid", 4), ("all", 2), ("all", 4)}
    assert (times["steps"] >= 3).all() and (times["step_ms"] > 0).all()


def hand_times(ratios: dict[str, list[float]]) -> pd.DataFrame:
    """Rows of two sizes (2 and 20) per round whose per-round ratio is given; the M=2 step takes 10 ms."""
    rows = []
    for schedule, values in ratios.items():
        for round_index, ratio in enumerate(values):
            for members, step_ms in ((2, 10.0), (20, 10.0 * ratio)):
                rows.append(
                    {"round": round_index, "schedule": schedule, "members": members, "steps": 3, "step_ms": step_ms}
                )
    return pd.DataFrame(rows)


def test_ratio_is_the_geometric_mean_with_a_t_interval_of_the_log_ratios():
    ratios = step_cost_ratios(hand_times({"iid": [1.0, 1.0, 1.0], "all": [5.0, 20.0, 10.0]}), 2, 20)
    iid, every = ratios.set_index("schedule").loc["iid"], ratios.set_index("schedule").loc["all"]
    assert (iid["ratio"], iid["ratio_low"], iid["ratio_high"]) == (1.0, 1.0, 1.0)  # no spread over the rounds
    logs = np.log([5.0, 20.0, 10.0])  # mean log 10 = geometric mean of 5, 20, 10
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    assert every["ratio"] == pytest.approx(10.0)
    assert (every["ratio_low"], every["ratio_high"]) == pytest.approx((10 * math.exp(-half), 10 * math.exp(half)))
    assert every["ms_low"] == 10.0 and every["ms_high"] == 100.0 and every["rounds"] == 3


def test_a_size_missing_from_a_round_is_an_error():
    times = hand_times({"iid": [1.0, 1.0]})
    with pytest.raises(ValueError, match="M=2 and M=20 timed in each of at least two rounds"):
        step_cost_ratios(times.drop(index=1), 2, 20)


def test_markdown_gives_each_schedule_its_ratio_and_says_it_is_a_measurement():
    ratios = step_cost_ratios(hand_times({"iid": [1.0, 1.2], "all": [9.0, 11.0]}), 2, 20)
    text = step_cost_markdown(ratios, 2, 20, "a CPU")
    assert "| iid | 10.0 | 11.0 |" in text and "t(M=20) / t(M=2)" in text
    assert "Measured on a CPU, in 2 interleaved rounds" in text and "not a verdict" in text
