import numpy as np

from sedlib.plots import score_histograms
from tests.test_tables import CONFIG, fake_evaluations


def test_histograms_draw_a_constant_score():
    evaluations = fake_evaluations(0.5)
    for (model, _), evaluation in evaluations.items():
        if model == "de":  # a one-member model's PDS: 1 up to rounding
            evaluation.samples["pds"] = 1.0 + np.arange(len(evaluation.samples)) * 1e-12
    figure = score_histograms(evaluations, CONFIG, ("pds", "bma"))
    assert len(figure.axes) == 4
