import math

import numpy as np
import pytest
import torch

from sedlib.evaluate import evaluate_split, member_accuracies
from sedlib.scores import compute_scores


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
