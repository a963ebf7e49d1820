import math

import numpy as np
import pytest
import torch

from sedlib.losses import a2d_disagreement, cross_entropy, divdis_repulsion, hardness_weights, sed_pair_loss


def logits_of(*probabilities):
    return torch.log(torch.tensor(probabilities, dtype=torch.float64))


def test_a2d_on_a_two_class_example_by_hand():
    # c = argmax p_a = 0; p_a[0] = 0.8, p_b[0] = 0.3: 0.8 * 0.7 + 0.3 * 0.2 = 0.62
    loss = a2d_disagreement(logits_of([0.8, 0.2]), logits_of([0.3, 0.7]))
    assert loss.item() == pytest.approx(-math.log(0.62 + 1e-9), rel=1e-12)


def test_a2d_reaches_both_members_and_its_roles_matter_beyond_two_classes():
    a = logits_of([0.6, 0.4]).requires_grad_()
    b = logits_of([0.1, 0.9]).requires_grad_()
    grad_a, grad_b = torch.autograd.grad(a2d_disagreement(a, b), (a, b))
    assert grad_a.abs().sum() > 0 and grad_b.abs().sum() > 0
    # with two classes the formula is symmetric; with three: c = 0 gives 0.5 * 0.9 + 0.1 * 0.5 = 0.5,
    # the other order c = 2 gives 0.7 * 0.8 + 0.2 * 0.3 = 0.62
    first, second = logits_of([0.5, 0.3, 0.2]), logits_of([0.1, 0.2, 0.7])
    assert a2d_disagreement(first, second).item() == pytest.approx(-math.log(0.5 + 1e-9))
    assert a2d_disagreement(second, first).item() == pytest.approx(-math.log(0.62 + 1e-9))


def test_a2d_is_small_when_members_disagree_confidently():
    agree = a2d_disagreement(logits_of([0.99, 0.01]), logits_of([0.99, 0.01]))
    disagree = a2d_disagreement(logits_of([0.99, 0.01]), logits_of([0.01, 0.99]))
    assert disagree.item() < 0.03 < 3 < agree.item()


def test_cross_entropy_with_label_smoothing_matches_the_smoothed_target():
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    eps = 0.3
    target = np.array([eps / 3, eps / 3, 1 - eps + eps / 3])
    log_p = logits[0].numpy() - np.log(np.exp(logits[0].numpy()).sum())
    assert cross_entropy(logits, torch.tensor([2]), eps).item() == pytest.approx(-(target * log_p).sum(), rel=1e-6)


def test_hardness_weights_by_hand_and_their_batch_mean():
    # two members with identical logits: the ensemble is that member
    member = logits_of([0.5, 0.5], [0.9, 0.1], [0.2, 0.8]).float()
    labels = torch.tensor([0, 0, 0])
    errors = np.array([-math.log(0.5), -math.log(0.9), -math.log(0.2)])
    alpha = hardness_weights(torch.stack((member, member)), labels)
    np.testing.assert_allclose(alpha.numpy(), errors / errors.mean() ** 2, rtol=1e-5)
    assert alpha.mean().item() == pytest.approx(1 / errors.mean(), rel=1e-5)


def test_hardness_weights_use_the_mean_of_logits_and_carry_no_gradient():
    a = torch.tensor([[3.0, 0.0]], requires_grad=True)
    b = torch.tensor([[-1.0, 0.0]], requires_grad=True)
    alpha = hardness_weights(torch.stack((a, b)), torch.tensor([0]))
    assert not alpha.requires_grad
    # a single sample: alpha = e / e^2 = 1 / e with e = CE([1, 0], 0)
    assert alpha.item() == pytest.approx(1 / (math.log(math.e + 1) - 1), rel=1e-6)


def test_sed_pair_loss_assembles_the_published_objective():
    torch.manual_seed(0)
    la, lb = torch.randn(3, 6, 4), torch.randn(3, 6, 4)
    labels = torch.randint(0, 4, (3, 6))
    lam, kappa, eps = 0.4, 2.5, 0.1
    loss = sed_pair_loss(la, lb, labels, lam, kappa, eps)
    for p in range(3):
        task = (cross_entropy(la[p], labels[p], eps).mean() + cross_entropy(lb[p], labels[p], eps).mean()) / 2
        alpha = hardness_weights(torch.stack((la[p], lb[p])), labels[p])
        repulsion = (alpha * a2d_disagreement(la[p], lb[p])).mean()
        assert loss.task[p].item() == pytest.approx(task.item(), rel=1e-6)
        assert loss.repulsion[p].item() == pytest.approx(repulsion.item(), rel=1e-6)
        assert loss.total[p].item() == pytest.approx((1 - lam) * task.item() + kappa * lam * repulsion.item(), rel=1e-6)


def test_sed_pair_loss_without_diversity_is_the_task_term():
    la, lb = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    loss = sed_pair_loss(la, lb, torch.randint(0, 3, (2, 5)), lam=0.0, kappa=5.0)
    assert torch.equal(loss.total, loss.task) and torch.count_nonzero(loss.repulsion) == 0


def naive_mutual_information(probs: np.ndarray) -> float:
    members, batch, classes = probs.shape
    values = []
    for i in range(members):
        for j in range(i + 1, members):
            joint = np.zeros((classes, classes))
            for n in range(batch):
                joint += np.outer(probs[i, n], probs[j, n]) / batch
            independent = np.outer(probs[i].mean(0), probs[j].mean(0))
            values.append(
                sum(
                    joint[c, d] * math.log(joint[c, d] / independent[c, d])
                    for c in range(classes)
                    for d in range(classes)
                    if joint[c, d] > 0
                )
            )
    return float(np.mean(values))


def test_divdis_matches_the_mutual_information_formula():
    probs = torch.randn(4, 9, 3).softmax(-1).double()
    expected = naive_mutual_information(probs.numpy())
    for chunk in (1, 2, 32):
        assert divdis_repulsion(probs, pair_chunk=chunk).item() == pytest.approx(expected, rel=1e-9)


def test_divdis_extremes():
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    copied = torch.stack((one_hot, one_hot))  # two members, perfectly dependent, balanced classes
    assert divdis_repulsion(copied).item() == pytest.approx(math.log(2))
    constant = torch.tensor([0.3, 0.7]).expand(2, 5, 2)  # predictions that ignore the input
    assert divdis_repulsion(constant).item() == pytest.approx(0.0, abs=1e-7)


def test_hardness_weights_of_a_batch_the_ensemble_gets_exactly_right_are_zero():
    confident = torch.tensor([[100.0, 0.0], [0.0, 100.0]])  # CE is exactly 0 in float32
    alpha = hardness_weights(torch.stack((confident, confident)), torch.tensor([0, 1]))
    assert torch.equal(alpha, torch.zeros(2))


def test_without_a_repulsion_weight_saturated_logits_stay_finite():
    confident = torch.tensor([[[60.0, 0.0, 0.0], [0.0, 60.0, 0.0]]], requires_grad=True)
    loss = sed_pair_loss(confident, confident * 0.9, torch.tensor([[0, 1]]), lam=0.5, kappa=0.0)
    assert torch.isfinite(loss.total).all() and loss.repulsion.eq(0).all()
    assert torch.isfinite(torch.autograd.grad(loss.total.sum(), confident)[0]).all()


def test_given_hardness_weights_replace_the_pairs_own():
    la, lb = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    labels = torch.randint(0, 3, (1, 4))
    alpha = torch.tensor([[0.0, 2.0, 0.0, 0.0]])
    loss = sed_pair_loss(la, lb, labels, lam=0.5, kappa=1.0, alpha=alpha)
    assert loss.repulsion.item() == pytest.approx(2.0 * a2d_disagreement(la, lb)[0, 1].item() / 4, rel=1e-6)
