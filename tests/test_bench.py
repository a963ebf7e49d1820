import numpy as np
import pandas as pd
import pytest

from sedlib.bench import main

TINY = ["--scale", "tiny", "--seconds", "0.05", "--rows", "400", "--device", "cpu"]


def test_bench_prints_its_table_on_tiny_shapes(capsys, tmp_path):
    table = main(TINY + ["--schedules", "iid", "matching", "all", "--csv", str(tmp_path / "bench.csv")])
    assert len(table) == 6
    assert (table["pair_steps_per_s"] > 0).all() and np.isfinite(table["run_minutes"]).all()
    fifty = table[table["run"] == "50_models"].set_index("schedule")
    assert fifty.loc["all", "pair_steps_timed"] % (50 * 49 // 2) == 0  # whole steps of 1,225 pairs
    # minutes = pair-steps of 10 epochs of 80,073 batches (x 1,225 pairs for all) / rate
    for schedule, pairs in (("iid", 1), ("matching", 1), ("all", 1225)):
        row = fifty.loc[schedule]
        assert row["run_minutes"] * 60 * row["pair_steps_per_s"] == pytest.approx(800_730 * pairs)
    output = capsys.readouterr().out
    assert "pair_steps_per_s" in output and "800,730 pair-steps" in output
    written = pd.read_csv(tmp_path / "bench.csv")
    assert list(written["schedule"]) == list(table["schedule"]) and written["device"].str.startswith("CPU").all()
