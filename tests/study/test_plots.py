import numpy as np
import pandas as pd

from sedlib.study.plots import alpha_distribution, image_grid, score_histograms, sweep_figure
from sedlib.study.tables import sweep_table
from tests.study.test_tables import CONFIG, SWEEP_CONFIG, fake_evaluations, hand_frames


def test_histograms_draw_a_constant_score():
    evaluations = fake_evaluations(0.5)
    for (model, _), evaluation in evaluations.items():
        if model == "de":  # a one-member model's PDS: 1 up to rounding
            evaluation.samples["pds"] = 1.0 + np.arange(len(evaluation.samples)) * 1e-12
    figure = score_histograms(evaluations, CONFIG, ("pds", "bma"))
    assert len(figure.axes) == 4


def test_alpha_figures_draw_every_model_and_say_when_there_is_nothing():
    log = pd.DataFrame({"epoch": [0, 1], "alpha_q50": [0.9, 0.8], "alpha_q90": [1.5, 2.0],
                        "alpha_q99": [3.0, 4.0], "alpha_max": [5.0, 9.0]})  # fmt: skip
    alpha = np.array([0.5, 1.0, 2.0, np.nan, 9.0], dtype=np.float32)
    figure = alpha_distribution({"SED": (log, alpha), "SED (all)": (log, 2 * alpha)})
    quantiles, histogram = figure.axes
    names = ["50 %", "90 %", "99 %", "max"]
    assert [line.get_label() for line in quantiles.lines] == [f"{m}: {q}" for m in ("SED", "SED (all)") for q in names]
    assert quantiles.lines[3].get_ydata().tolist() == [5.0, 9.0]  # SED's largest alpha per epoch
    assert [patch.get_label() for patch in histogram.patches] == ["SED", "SED (all)"]  # the last epoch's alpha
    assert "no model" in alpha_distribution({}).axes[0].texts[0].get_text()
    grid = image_grid(np.zeros((5, 8, 8, 3), dtype=np.uint8), [f"c{k}" for k in range(5)], columns=4)
    assert len(grid.axes) == 8 and [axis.get_title() for axis in grid.axes[:5]] == ["c0", "c1", "c2", "c3", "c4"]
    assert "not at hand" in image_grid(None, []).axes[0].texts[0].get_text()


def test_sweep_figure_has_a_panel_per_sweep_and_the_pareto_view():
    summary, detection = hand_frames(
        {"de": (0.80, 0.4, 0.60), "sed": (0.78, 0.5, 0.70), "sed-lam0.9": (0.70, 0.3, 0.65)}
    )
    figure = sweep_figure(sweep_table(summary, detection, SWEEP_CONFIG))
    assert [axis.get_title() for axis in figure.axes][:2] == [
        "sweep of λ (SED)",
        "accuracy vs detection (up and right is better)",
    ]
    assert "no sweeps" in sweep_figure(pd.DataFrame()).axes[0].texts[0].get_text()


def test_summary_figure_draws_the_intervals_as_error_bars():
    from matplotlib.collections import LineCollection

    from sedlib.study.detection import detection_table, diversity_table
    from sedlib.study.findings import value_intervals
    from sedlib.study.plots import summary_figure
    from sedlib.study.predictions import generalisation_tables

    evaluations = fake_evaluations(0.5)
    summary, _ = generalisation_tables(evaluations, CONFIG)
    frames = (summary, detection_table(evaluations, CONFIG), diversity_table(evaluations, CONFIG))
    # every split's rows at the start of its source set: a corrupted row is a copy of the test row at its position
    clusters = {split: np.arange(len(evaluation.samples)) for (model, split), evaluation in evaluations.items()}
    intervals = value_intervals(evaluations, clusters, CONFIG)
    plain, with_bars = summary_figure(*frames), summary_figure(*frames, intervals)

    def drawn(axis) -> list:  # the (low, high) each error bar of a panel spans
        lines = [c for c in axis.collections if isinstance(c, LineCollection)]
        return sorted((round(s[:, 1].min(), 6), round(s[:, 1].max(), 6)) for c in lines for s in c.get_segments())

    def interval(measures, scale) -> list:
        rows = intervals[intervals["measure"].isin(measures)]
        return sorted((round(scale * low, 6), round(scale * high, 6)) for low, high in zip(rows["low"], rows["high"]))

    assert not any(drawn(axis) for axis in plain.axes)
    # each panel shows every interval of its values, at its value: accuracy and AUROC in %, #unique as counts
    assert [drawn(axis) for axis in with_bars.axes[:3]] == [
        interval(["accuracy"], 100),
        interval(["auroc_bma", "auroc_pds"], 100),
        interval(["num_unique"], 1),
    ]
