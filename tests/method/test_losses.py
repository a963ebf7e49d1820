import math

import numpy as np
import pytest
import torch

from sedlib.method.losses import (
    a2d_disagreement,
    cross_entropy,
    divdis_pair_repulsion,
    hardness_weights,
    pair_repulsion,
    sed_pair_loss,
)
from tests._reference import divdis_repulsion


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


def weighted_mutual_information_by_hand(probs_a: np.ndarray, probs_b: np.ndarray, alpha: np.ndarray) -> float:
    """mean(alpha) * MI of the batch distribution that weighs sample n by alpha_n / sum(alpha), with loops."""
    classes = probs_a.shape[1]
    weights = alpha / alpha.sum()
    joint = np.zeros((classes, classes))
    marginal_a, marginal_b = np.zeros(classes), np.zeros(classes)
    for n, w in enumerate(weights):
        joint += w * np.outer(probs_a[n], probs_b[n])
        marginal_a += w * probs_a[n]
        marginal_b += w * probs_b[n]
    mi = sum(
        joint[c, d] * math.log(joint[c, d] / (marginal_a[c] * marginal_b[d]))
        for c in range(classes)
        for d in range(classes)
        if joint[c, d] > 0
    )
    return float(alpha.mean() * mi)


def test_divdis_pair_repulsion_without_weights_is_each_pairs_mutual_information():
    generator = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(3, 7, 9, 4, generator=generator, dtype=torch.float64)  # (pair, side, B, C)
    logits_a, logits_b = logits[:, 0], logits[:, 1]
    for chunk in (1, 2, 32):
        values = divdis_pair_repulsion(logits_a, logits_b, pair_chunk=chunk)
        assert values.shape == (3,)
        for p in range(3):
            probs = torch.stack((logits_a[p], logits_b[p])).softmax(-1)
            assert values[p].item() == pytest.approx(naive_mutual_information(probs.numpy()), rel=1e-10)
    # the per-pair terms of divdis_repulsion
    members = torch.randn(4, 9, 4, generator=generator, dtype=torch.float64)
    first, second = torch.triu_indices(4, 4, offset=1)
    pairwise = divdis_pair_repulsion(members[first], members[second])
    assert pairwise.mean().item() == pytest.approx(divdis_repulsion(members.softmax(-1)).item(), rel=1e-10)


def test_divdis_pair_repulsion_weights_the_samples_by_alpha_and_scales_by_its_mean():
    generator = torch.Generator().manual_seed(1)
    logits_a, logits_b = 2 * torch.randn(2, 2, 8, 3, generator=generator, dtype=torch.float64)
    alpha = torch.rand(2, 8, generator=generator, dtype=torch.float64) * 3
    values = divdis_pair_repulsion(logits_a, logits_b, alpha)
    for p in range(2):
        expected = weighted_mutual_information_by_hand(
            logits_a[p].softmax(-1).numpy(), logits_b[p].softmax(-1).numpy(), alpha[p].numpy()
        )
        assert values[p].item() == pytest.approx(expected, rel=1e-10)
    # a constant alpha = c is c times plain DivDis; alpha = 1 is plain DivDis
    plain = divdis_pair_repulsion(logits_a, logits_b)
    torch.testing.assert_close(divdis_pair_repulsion(logits_a, logits_b, torch.full((2, 8), 2.5).double()), 2.5 * plain)
    torch.testing.assert_close(divdis_pair_repulsion(logits_a, logits_b, torch.ones(2, 8).double()), plain)
    # a sample with alpha 0 does not count
    dropped = divdis_pair_repulsion(logits_a[:, 1:], logits_b[:, 1:], alpha[:, 1:])
    zeroed = alpha.clone()
    zeroed[:, 0] = 0
    torch.testing.assert_close(divdis_pair_repulsion(logits_a, logits_b, zeroed), dropped * 7 / 8)  # mean(alpha)


def test_divdis_pair_repulsion_is_finite_for_zero_weights_and_saturated_logits():
    logits = torch.tensor([[[200.0, 0.0, -200.0], [0.0, 200.0, -200.0]]], requires_grad=True)
    other = torch.tensor([[[-200.0, 0.0, 200.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    for alpha in (None, torch.zeros(1, 2), torch.tensor([[1.0, 3.0]])):
        value = divdis_pair_repulsion(logits, other, alpha)
        grads = torch.autograd.grad(value.sum(), (logits, other))
        assert torch.isfinite(value).all() and all(torch.isfinite(g).all() for g in grads)
    assert divdis_pair_repulsion(logits, other, torch.zeros(1, 2)).item() == 0.0


def test_divdis_pair_repulsion_runs_in_float32_under_bfloat16_autocast():
    logits_a, logits_b = torch.randn(2, 3, 16, 5, generator=torch.Generator().manual_seed(2)).unbind(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = divdis_pair_repulsion(logits_a.bfloat16(), logits_b.bfloat16())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, divdis_pair_repulsion(logits_a.bfloat16().float(), logits_b.bfloat16().float()))


def test_sed_pair_loss_with_the_divdis_kernel_and_other_repulsion_samples():
    generator = torch.Generator().manual_seed(3)
    la, lb = torch.randn(2, 2, 6, 4, generator=generator, dtype=torch.float64)
    far_a, far_b = torch.randn(2, 2, 5, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 6), generator=generator)
    ones = torch.ones(2, 5, dtype=torch.float64)
    loss = sed_pair_loss(
        la, lb, labels, lam=0.4, kappa=2.0, alpha=ones, kernel="divdis", repulsion_logits=(far_a, far_b)
    )
    torch.testing.assert_close(loss.repulsion, divdis_pair_repulsion(far_a, far_b))
    task = (cross_entropy(la, labels).mean(-1) + cross_entropy(lb, labels).mean(-1)) / 2
    torch.testing.assert_close(loss.total, 0.6 * task + 0.8 * loss.repulsion)
    a2d = sed_pair_loss(la, lb, labels, lam=0.4, kappa=2.0, alpha=ones, repulsion_logits=(far_a, far_b))
    torch.testing.assert_close(a2d.repulsion, a2d_disagreement(far_a, far_b).mean(-1))
    with pytest.raises(ValueError, match="need explicit alpha"):
        sed_pair_loss(la, lb, labels, lam=0.4, kappa=2.0, repulsion_logits=(far_a, far_b))
    with pytest.raises(ValueError, match="kernel must be one of"):
        pair_repulsion(la, lb, torch.ones(2, 6), kernel="mmd")


def test_cross_entropy_with_one_smoothing_per_member_matches_torch_member_by_member():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 5, generator=generator)
    labels = torch.randint(0, 5, (3, 7), generator=generator)
    smoothing = torch.tensor([0.0, 0.1, 0.35])[:, None]
    losses = cross_entropy(logits, labels, smoothing)
    for m, eps in enumerate(smoothing[:, 0].tolist()):
        expected = torch.nn.functional.cross_entropy(logits[m], labels[m], reduction="none", label_smoothing=eps)
        torch.testing.assert_close(losses[m], expected, rtol=1e-6, atol=1e-6)
