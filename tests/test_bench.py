import numpy as np
import pandas as pd
import pytest
import torch

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


def test_step_shape_counts_members_and_pairs():
    from sedlib.bench import step_shape

    assert step_shape("iid", 50) == (2, 2, 1)
    assert step_shape("matching", 50) == (50, 50, 25)
    assert step_shape("matching", 5) == (4, 4, 2)  # one member rests
    assert step_shape("all", 50) == (50, 50, 1225)


def test_floors_by_hand():
    from sedlib.bench import step_floors
    from sedlib.method.ensemble import HeadConfig

    heads = HeadConfig(num_members=4, feature_dim=2, hidden_dim=3, num_classes=5)
    rates = {"matmul_flops_per_s": 1.0, "copy_bytes_per_s": 1.0}
    # iid: 2 members x 6 FLOP x batch 10 x (2*2*3 + 2*5 = 22) MACs per row = 2640
    # parameters per member: fc1 6 + 3, fc2 6 + 2, head 10 + 5, two norms 2 x 4, layer scale 2 = 42
    # SGD moves weights twice, gradient once, momentum twice: 2 members x 42 x 4 bytes x 5 = 1680
    floors = step_floors(heads, "iid", 10, "sgd", rates)
    assert floors == {"arithmetic_floor_s": 2640.0, "memory_floor_s": 1680.0}
    # AdamW adds a second state (7 touches); all runs and updates every member (4)
    floors = step_floors(heads, "all", 10, "adamw", rates)
    assert floors == {"arithmetic_floor_s": 4 * 6 * 10 * 22.0, "memory_floor_s": 4 * 42 * 4 * 7.0}


def test_parameter_count_of_the_floor_matches_the_heads():
    from sedlib.method.ensemble import HeadConfig, HeadEnsemble

    heads = HeadConfig(num_members=1, feature_dim=2, hidden_dim=3, num_classes=5)
    assert sum(p.numel() for p in HeadEnsemble(heads).parameters()) == 42


def test_scaling_mode_writes_table_and_figure(tmp_path, capsys):
    figure = tmp_path / "scaling.png"
    table = main(TINY + ["--scaling", "--members", "2", "4", "--schedules", "iid", "all", "--figure", str(figure)])
    assert list(zip(table["members"], table["schedule"])) == [(2, "iid"), (2, "all"), (4, "iid"), (4, "all")]
    assert (table["step_ms"] > 0).all()
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_evaluation_timing_projects_to_the_published_rows(capsys):
    from sedlib.bench import PUBLISHED_EVAL_ROWS, benchmark_evaluation
    from sedlib.method.ensemble import HeadConfig

    row = benchmark_evaluation(
        HeadConfig(num_members=3, feature_dim=8, hidden_dim=16, num_classes=4), torch.device("cpu"), 500, 128
    )
    assert row["rows"] == 500 and row["seconds"] > 0
    assert row["projected_s_1.6M_rows"] == pytest.approx(PUBLISHED_EVAL_ROWS * row["seconds"] / 500)
    main(TINY + ["--runs", "ood_gen", "--schedules", "iid", "--eval", "--eval-rows", "300"])
    assert "evaluation: 50 members, 300 rows, every score" in capsys.readouterr().out
