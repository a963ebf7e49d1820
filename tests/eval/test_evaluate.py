import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from sedlib.eval.evaluate import (
    StaleEvaluationsError,
    evaluate_split,
    greedy_soup_members,
    load_evaluations,
    member_accuracies,
    save_evaluations,
    stored_splits,
)
from sedlib.eval.metrics import accuracy, expected_calibration_error
from sedlib.eval.scores import compute_scores
from sedlib.method.ensemble import HeadEnsemble


def test_evaluate_split_derives_everything_from_the_member_logits(tiny_ensemble):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(23, 12, generator=generator)
    labels = torch.randint(0, 5, (23,), generator=generator)
    result = evaluate_split(tiny_ensemble, features, labels, batch_size=5)
    logits = tiny_ensemble(features).detach()
    member_predictions = logits.argmax(-1)
    np.testing.assert_allclose(result.member_accuracy, (member_predictions == labels).float().mean(1).numpy())
    ensemble_prediction = logits.mean(0).argmax(-1)
    assert result.samples["ensemble_prediction"].tolist() == ensemble_prediction.tolist()
    assert result.ensemble_accuracy == pytest.approx((ensemble_prediction == labels).float().mean().item())
    soup_prediction = tiny_ensemble.soup()(features)[0].argmax(-1)
    assert result.samples["soup_prediction"].tolist() == soup_prediction.tolist()
    assert result.best_single == pytest.approx(result.member_accuracy.max())
    for name, values in compute_scores(logits).items():
        np.testing.assert_allclose(result.samples[name], values.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    probs = logits.mean(0).softmax(-1).double().numpy()
    np.testing.assert_allclose(result.samples["nll"], -np.log(probs[np.arange(23), labels.numpy()]), rtol=1e-5)
    one_hot = np.eye(5)[labels.numpy()]
    np.testing.assert_allclose(result.samples["brier"], ((probs - one_hot) ** 2).sum(1), rtol=1e-5)


def test_batch_size_does_not_change_the_results(tiny_ensemble):
    features = torch.randn(17, 12)
    labels = torch.randint(0, 5, (17,))
    small = evaluate_split(tiny_ensemble, features, labels, batch_size=4)
    large = evaluate_split(tiny_ensemble, features.numpy(), labels.numpy(), batch_size=100)
    np.testing.assert_allclose(small.samples.to_numpy(float), large.samples.to_numpy(float), rtol=1e-5, atol=1e-6)


def test_unlabelled_splits_give_scores_but_no_accuracy(tiny_ensemble):
    result = evaluate_split(tiny_ensemble, torch.randn(9, 12), scores=["pds", "bma"])
    assert math.isnan(result.ensemble_accuracy) and np.isnan(result.member_accuracy).all()
    assert result.samples["nll"].isna().all()
    summary = result.summary()
    assert math.isnan(summary["ece"]) and 1 <= summary["mean_pds"] <= 4
    assert "mean_num_unique" not in summary


def test_member_accuracies_agree_with_evaluate_split(tiny_ensemble):
    features, labels = torch.randn(30, 12), torch.randint(0, 5, (30,))
    members, ensemble = member_accuracies(tiny_ensemble, features, labels, batch_size=7)
    result = evaluate_split(tiny_ensemble, features, labels)
    np.testing.assert_allclose(members, result.member_accuracy)
    assert ensemble == pytest.approx(result.ensemble_accuracy)


def test_labels_must_match_the_features(tiny_ensemble):
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        evaluate_split(tiny_ensemble, torch.randn(4, 12), torch.zeros(3))


def test_labels_may_be_a_tensor_list_or_array(tiny_ensemble):
    features = torch.randn(6, 12)
    labels = [0, 1, 2, 3, 4, 0]
    expected = evaluate_split(tiny_ensemble, features, np.array(labels)).ensemble_accuracy
    assert evaluate_split(tiny_ensemble, features, torch.tensor(labels)).ensemble_accuracy == expected
    assert evaluate_split(tiny_ensemble, features, labels).ensemble_accuracy == expected


SUBSET = [0, 2, 3]  # of the tiny ensemble's 5 classes


def _subset_split(seed=3, rows=40):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, 12, generator=generator)
    labels = torch.randint(0, len(SUBSET), (rows,), generator=generator)
    labels[::7] = -1  # a few unlabelled rows
    return features, labels


def test_standard_protocol_restricts_the_logits_before_everything(tiny_ensemble):
    features, labels = _subset_split()
    result = evaluate_split(tiny_ensemble, features, labels, batch_size=6, class_subset=SUBSET, protocol="standard")
    logits = tiny_ensemble(features).detach()[..., SUBSET]
    labelled = labels >= 0
    member_predictions = logits.argmax(-1)
    expected_members = ((member_predictions == labels) & labelled).sum(1) / labelled.sum()
    np.testing.assert_allclose(result.member_accuracy, expected_members.numpy(), rtol=1e-6)
    assert result.samples["ensemble_prediction"].tolist() == logits.mean(0).argmax(-1).tolist()
    soup = tiny_ensemble.soup()(features)[0].detach()[:, SUBSET]
    assert result.samples["soup_prediction"].tolist() == soup.argmax(-1).tolist()
    probs = logits.mean(0).softmax(-1).double().numpy()
    np.testing.assert_allclose(result.samples["ensemble_confidence"], probs.max(1), rtol=1e-5)
    rows = np.flatnonzero(labelled.numpy())
    nll = -np.log(probs[rows, labels.numpy()[rows]])
    np.testing.assert_allclose(result.samples["nll"].to_numpy()[rows], nll, rtol=1e-5)
    assert result.samples["nll"].isna().sum() == (~labelled).sum()
    for name, values in compute_scores(logits).items():
        np.testing.assert_allclose(result.samples[name], values.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert "votes_in_subset" not in result.samples.columns
    assert result.protocol == "standard" and result.class_subset.tolist() == SUBSET


def test_faithful_protocol_votes_with_the_full_argmax(tiny_ensemble):
    features, labels = _subset_split()
    result = evaluate_split(tiny_ensemble, features, labels, batch_size=6, class_subset=SUBSET, protocol="faithful")
    full = tiny_ensemble(features).detach()
    position = {c: k for k, c in enumerate(SUBSET)}
    members = [[position.get(int(c), -1) for c in row] for row in full.argmax(-1)]  # (M, N) by hand
    votes, in_subset = [], []
    for n in range(len(features)):
        ballots = [members[m][n] for m in range(len(members)) if members[m][n] >= 0]
        in_subset.append(len(ballots))
        counts = [ballots.count(k) for k in range(len(SUBSET))]
        votes.append(counts.index(max(counts)) if ballots else -1)
    assert result.samples["ensemble_prediction"].tolist() == votes
    assert result.samples["votes_in_subset"].tolist() == in_subset
    labelled = labels.numpy() >= 0
    for m, predictions in enumerate(members):
        correct = (np.array(predictions) == labels.numpy())[labelled].mean()
        assert result.member_accuracy[m] == pytest.approx(correct)
    soup = tiny_ensemble.soup()(features)[0].detach()
    assert result.samples["soup_prediction"].tolist() == [position.get(int(c), -1) for c in soup.argmax(-1)]
    correct_votes = (np.array(votes) == labels.numpy())[labelled].mean()
    assert result.ensemble_accuracy == pytest.approx(correct_votes)
    # confidence, NLL and scores come from the restricted logits, as under the standard protocol
    standard = evaluate_split(tiny_ensemble, features, labels, class_subset=SUBSET, protocol="standard")
    for column in ["ensemble_confidence", "nll", "brier", "pds", "bma"]:
        np.testing.assert_allclose(result.samples[column], standard.samples[column], rtol=1e-6, err_msg=column)
    # the example must exercise the protocol: discarded votes, a -1 and a disagreement with standard
    assert min(in_subset) < len(members) and -1 in sum(members, [])
    assert (result.samples["ensemble_prediction"] != standard.samples["ensemble_prediction"]).any()
    assert result.summary()["mean_votes_in_subset"] == pytest.approx(np.mean(in_subset))
    assert "mean_votes_in_subset" not in standard.summary()


def test_without_a_subset_both_protocols_agree(tiny_ensemble):
    features, labels = torch.randn(11, 12), torch.randint(0, 5, (11,))
    standard = evaluate_split(tiny_ensemble, features, labels)
    faithful = evaluate_split(tiny_ensemble, features, labels, protocol="faithful")
    assert list(faithful.samples.columns) == list(standard.samples.columns)
    np.testing.assert_array_equal(faithful.samples.to_numpy(float), standard.samples.to_numpy(float))
    np.testing.assert_array_equal(faithful.member_accuracy, standard.member_accuracy)


def test_subset_and_protocol_are_validated(tiny_ensemble):
    features, labels = torch.randn(4, 12), torch.tensor([0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"'paper'.*\['faithful', 'standard'\]"):
        evaluate_split(tiny_ensemble, features, labels, protocol="paper")
    with pytest.raises(ValueError, match="sorted and unique"):
        evaluate_split(tiny_ensemble, features, labels, class_subset=[3, 0, 2])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        evaluate_split(tiny_ensemble, features, labels, class_subset=[0, 2, 5])
    with pytest.raises(ValueError, match=r"positions 0\.\.1 .*found 2"):
        evaluate_split(tiny_ensemble, features, labels, class_subset=[0, 2])


def test_member_and_soup_calibration_match_a_direct_computation(tiny_ensemble, tiny_config):
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(37, tiny_config.feature_dim, generator=generator)
    labels = torch.randint(0, tiny_config.num_classes, (37,), generator=generator).numpy()
    labels[[3, 9]] = -1  # unlabelled rows count in no calibration figure
    result = evaluate_split(tiny_ensemble, features, labels, batch_size=8, progress=False)
    keep = labels >= 0
    with torch.no_grad():
        probs = tiny_ensemble(features).softmax(dim=-1).double().numpy()[:, keep]
        soup_probs = tiny_ensemble.soup()(features)[0].softmax(dim=-1).double().numpy()[keep]
    truth = labels[keep]
    one_hot = np.eye(tiny_config.num_classes)[truth]
    for m, member in enumerate(probs):
        expected_ece = expected_calibration_error(member.max(axis=1), member.argmax(axis=1) == truth)
        assert result.member_calibration["ece"][m] == pytest.approx(expected_ece, rel=1e-5)
        assert result.member_calibration["nll"][m] == pytest.approx(
            -np.log(member[np.arange(len(truth)), truth]).mean()
        )
        assert result.member_calibration["brier"][m] == pytest.approx(((member - one_hot) ** 2).sum(axis=1).mean())
    soup = result.calibration()["soup"]
    assert soup["nll"] == pytest.approx(-np.log(soup_probs[np.arange(len(truth)), truth]).mean(), rel=1e-5)
    assert soup["ece"] == pytest.approx(
        expected_calibration_error(soup_probs.max(axis=1), soup_probs.argmax(axis=1) == truth), rel=1e-5
    )
    assert result.calibration()["mean_member"]["brier"] == pytest.approx(result.member_calibration["brier"].mean())


def test_greedy_soup_keeps_members_that_do_not_hurt_validation_accuracy(tiny_config):
    ensemble = HeadEnsemble(dataclasses.replace(tiny_config, num_members=3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ensemble.ls2.gamma.zero_()  # logits = W LN(h) + b: averaging weights averages logits
        ensemble.head.bias.zero_()
        ensemble.head.weight[1] = ensemble.head.weight[0]  # a copy of member 0
        ensemble.head.weight[2] = -3 * ensemble.head.weight[0]  # the soup of all three is member 0 negated
        for name in ("norm2.weight", "norm2.bias", "norm.weight", "norm.bias", "mlp.fc1.weight", "mlp.fc2.weight"):
            parameter = ensemble.get_parameter(name)
            parameter[1:] = parameter[0]
    features = torch.randn(64, tiny_config.feature_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = ensemble(features)[0].argmax(dim=-1)  # member 0 is right everywhere
    # by hand: order 0, 1 (100 %), 2 (0 %); {0, 1} keeps 100 %; adding 2 gives -W/3, wrong everywhere
    assert greedy_soup_members(ensemble, features, labels) == (0, 1)
    result = evaluate_split(ensemble, features, labels.numpy(), greedy_members=(0, 1), progress=False)
    assert accuracy(result.samples["greedy_soup_prediction"], result.labels) == 1.0
    assert accuracy(result.samples["soup_prediction"], result.labels) == 0.0


def test_stored_evaluations_read_back_equal_and_refuse_another_fingerprint(tiny_ensemble, tmp_path):
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(30, tiny_ensemble.config.feature_dim, generator=generator)
    labels = torch.randint(0, tiny_ensemble.config.num_classes, (30,), generator=generator)
    evaluations = {
        ("m", "test"): evaluate_split(tiny_ensemble, features, labels, progress=False, greedy_members=(0,)),
        ("m", "ood"): evaluate_split(tiny_ensemble, features[:7], progress=False),
        ("m", "subset"): evaluate_split(
            tiny_ensemble, features, labels.clamp(max=1), progress=False, class_subset=[0, 2], protocol="faithful"
        ),
    }
    path = tmp_path / "evaluations.h5"
    save_evaluations(path, evaluations, "made-from-this")
    assert stored_splits(path) == ["test", "ood", "subset"]
    again = load_evaluations(path, "made-from-this")
    assert list(again) == list(evaluations)
    for key, evaluation in evaluations.items():
        pd.testing.assert_frame_equal(again[key].samples, evaluation.samples)  # same columns, values and dtypes
        np.testing.assert_array_equal(again[key].member_accuracy, evaluation.member_accuracy)
        assert again[key].greedy_members == evaluation.greedy_members
        assert again[key].protocol == evaluation.protocol
        for aggregation, metrics in evaluation.calibration().items():
            assert again[key].calibration()[aggregation] == pytest.approx(metrics, nan_ok=True)
    np.testing.assert_array_equal(again["m", "subset"].class_subset, [0, 2])
    with pytest.raises(StaleEvaluationsError, match="other models, features or evaluation settings.*rerun"):
        load_evaluations(path, "made-from-something-else")
    path.write_bytes(b"not hdf5")
    with pytest.raises(StaleEvaluationsError, match="cannot be read"):
        load_evaluations(path, "made-from-this")
    with pytest.raises(FileNotFoundError, match="run notebooks/03_eval_ood_gen first"):
        load_evaluations(tmp_path / "absent.h5", "made-from-this")
