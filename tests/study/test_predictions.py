"""Stage 03 keeps its evaluations when nothing they are made from changed, and evaluates again otherwise."""

import pytest

from sedlib.config import load_config
from sedlib.study.models import load_models
from sedlib.study.predictions import evaluated_splits, evaluations_of
from tests.helpers.runs import private_copy

pytestmark = pytest.mark.e2e  # reads the smoke run of the five notebooks (make test-fast leaves it out)
PARAMS = "params/smoke.yaml"


@pytest.fixture
def copy(smoke_run, tmp_path):
    return private_copy(smoke_run, tmp_path / "run")


def test_unchanged_evaluations_are_kept_and_equal_to_new_ones(copy, capsys):
    config = load_config(PARAMS)
    models = load_models(config, copy)
    stored = copy.path("evaluations").read_bytes()
    kept = evaluations_of(config, copy, models, progress=False)
    assert capsys.readouterr().out.startswith("evaluations: kept results/evaluations.h5")
    assert copy.path("evaluations").read_bytes() == stored  # not rewritten
    assert sorted({split for _, split in kept}) == sorted(evaluated_splits(config))

    copy.path("evaluations").unlink()
    again = evaluations_of(config, copy, models, progress=False)
    assert "evaluating every split (never evaluated in this run directory)" in capsys.readouterr().out
    for key, evaluation in kept.items():
        assert again[key].samples.equals(evaluation.samples), key


def test_a_changed_setting_evaluates_again(copy, capsys):
    config = load_config(PARAMS, overrides={"eval": {"batch_size": 77}})
    evaluations_of(config, copy, load_models(config, copy), progress=False)
    assert "evaluations: evaluating every split (" in capsys.readouterr().out
    assert copy.problem(copy.path("evaluations")) is None  # replaced, and its new hash recorded
