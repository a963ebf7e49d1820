import math

import numpy as np
import pytest
import torch

from sedlib.eval.scores import (
    SCORES,
    a2d_score,
    average_energy,
    average_max_logit,
    bma_confidence,
    compute_scores,
    expected_entropy,
    generalized_entropy,
    mean_member_confidence,
    mean_probability_confidence,
    mutual_information,
    num_unique,
    pds,
    predictive_entropy,
)  # fmt: skip


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def entropy(p):
    return -(p * np.log(p)).sum(-1)


@pytest.fixture
def logits():
    return torch.randn(5, 40, 7, generator=torch.Generator().manual_seed(0)) * 3


def test_pds_lies_in_one_to_m(logits):
    values = pds(logits)
    assert values.shape == (40,)
    assert torch.all(values >= 1 - 1e-6) and torch.all(values <= 5 + 1e-6)


def test_pds_equals_num_unique_for_one_hot_members():
    classes = torch.tensor([[0, 1, 2], [0, 1, 1], [0, 2, 0], [0, 1, 1]])  # 4 members, 3 samples
    one_hot = torch.nn.functional.one_hot(classes, 4).float() * 200.0  # softmax is one-hot in float32
    assert num_unique(one_hot).tolist() == [1.0, 2.0, 3.0]
    torch.testing.assert_close(pds(one_hot), torch.tensor([1.0, 2.0, 3.0]))


def test_identical_members_have_pds_one_and_no_mutual_information(logits):
    copies = logits[:1].expand(4, -1, -1)
    torch.testing.assert_close(pds(copies), torch.ones(40))
    assert num_unique(copies).eq(1).all()
    torch.testing.assert_close(mutual_information(copies), torch.zeros(40), atol=1e-6, rtol=0)


def test_entropies_and_mutual_information_match_numpy(logits):
    p = softmax(logits.double().numpy())
    np.testing.assert_allclose(predictive_entropy(logits.double()).numpy(), entropy(p.mean(0)), rtol=1e-10)
    np.testing.assert_allclose(expected_entropy(logits.double()).numpy(), entropy(p).mean(0), rtol=1e-10)
    np.testing.assert_allclose(
        mutual_information(logits.double()).numpy(), entropy(p.mean(0)) - entropy(p).mean(0), rtol=1e-8, atol=1e-12
    )


def test_entropy_of_exact_zeros_is_finite():
    saturated = torch.tensor([[[1000.0, 0.0]], [[0.0, 1000.0]]])
    assert torch.isfinite(predictive_entropy(saturated)).all() and torch.isfinite(expected_entropy(saturated)).all()
    assert mutual_information(saturated).item() == pytest.approx(math.log(2))


def test_confidences_energy_and_max_logit_match_numpy(logits):
    z = logits.double().numpy()
    p = softmax(z)
    np.testing.assert_allclose(bma_confidence(logits.double()).numpy(), softmax(z.mean(0)).max(-1), rtol=1e-10)
    np.testing.assert_allclose(mean_probability_confidence(logits.double()).numpy(), p.mean(0).max(-1), rtol=1e-10)
    np.testing.assert_allclose(mean_member_confidence(logits.double()).numpy(), p.max(-1).mean(0), rtol=1e-10)
    lse = np.log(np.exp(z).sum(-1))
    np.testing.assert_allclose(average_energy(logits.double()).numpy(), (-lse).mean(0), rtol=1e-10)
    np.testing.assert_allclose(average_max_logit(logits.double()).numpy(), z.max(-1).mean(0), rtol=1e-10)


def test_a2d_score_matches_the_published_double_loop(logits):
    p = softmax(logits.double().numpy())
    members, n, _ = p.shape
    expected = np.zeros(n)
    for m in range(members):
        for i in range(members):
            if i != m:
                c = p[i].argmax(-1)
                a, b = p[i, np.arange(n), c], p[m, np.arange(n), c]
                expected += np.log(a * (1 - b) + b * (1 - a) + 1e-9) / (members * (members - 1))
    np.testing.assert_allclose(a2d_score(logits.double()).numpy(), expected, rtol=1e-10)
    assert a2d_score(logits[:1]).eq(0).all()


def test_every_score_has_a_direction_and_runs(logits):
    values = compute_scores(logits)
    assert set(values) == set(SCORES)
    assert all(v.shape == (40,) for v in values.values())
    assert {name for name, s in SCORES.items() if not s.higher_is_ood} == {
        "bma",
        "mean_prob_msp",
        "member_msp",
        "max_logit",
    }
    with pytest.raises(KeyError, match="unknown scores"):
        compute_scores(logits, ["pds", "odin"])


def test_gen_matches_numpy_and_clips_m_to_the_classes(logits):
    p = softmax(logits.double().numpy().mean(0))
    for top_m, gamma in ((100, 0.1), (3, 0.1), (7, 0.5)):
        top = np.sort(p, axis=1)[:, -top_m:]
        expected = (top**gamma * (1 - top) ** gamma).sum(1)
        np.testing.assert_allclose(generalized_entropy(logits.double(), gamma, top_m).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(generalized_entropy(logits).numpy(), compute_scores(logits, ["gen"])["gen"].numpy())


def test_gen_is_higher_for_flat_predictions():
    assert SCORES["gen"].higher_is_ood and SCORES["gen"].label == "GEN" and not SCORES["gen"].needs_members
    flat = torch.zeros(2, 1, 10)
    peaked = torch.zeros(2, 1, 10)
    peaked[:, 0, 3] = 8.0
    assert generalized_entropy(flat).item() == pytest.approx(10 * (0.1 * 0.9) ** 0.1)
    assert generalized_entropy(flat).item() > generalized_entropy(peaked).item()
    scale = torch.linspace(0.0, 4.0, 9)[None, :, None]  # sharper and sharper ensemble predictions
    values = generalized_entropy(scale * torch.arange(10.0))
    assert torch.all(values[1:] < values[:-1])
    with pytest.raises(ValueError, match="gamma"):
        generalized_entropy(flat, gamma=1.0)
