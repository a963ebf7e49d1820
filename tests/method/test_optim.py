import pytest
import torch

from sedlib.method.optim import MemberAdamW, MemberSGD

SHAPES = [(5, 3, 4), (5, 4)]


def make_params(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES]


def run_both(stacked_optimizer, torch_optimizer, member_sets, seed=0):
    """Apply the same gradients to stacked rows and to one torch parameter per member and row."""
    stacked = make_params(seed)
    per_member = [[torch.nn.Parameter(p.detach()[m].clone()) for p in stacked] for m in range(5)]
    ours = stacked_optimizer(stacked)
    theirs = torch_optimizer([p for member in per_member for p in member])
    generator = torch.Generator().manual_seed(seed + 1)
    for members in member_sets:
        grads = [torch.randn((len(members),) + shape[1:], generator=generator) for shape in SHAPES]
        theirs.zero_grad(set_to_none=True)
        for row, member in enumerate(members):
            for p, grad in zip(per_member[member], grads):
                p.grad = grad[row].clone()
        theirs.step()
        ours.step([g.clone() for g in grads], members=torch.tensor(members))
    return stacked, per_member, ours


MEMBER_SETS = [[0, 3], [1, 3], [0, 4], [0, 3], [2, 3, 4], [0, 1], [1, 2, 4]]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda p: MemberSGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2)),
        (lambda p: MemberSGD(p, lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
        (lambda p: MemberAdamW(p, lr=0.01, weight_decay=0.1),
         lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
        (lambda p: MemberAdamW(p, lr=1e-3, betas=(0.8, 0.99), eps=1e-6),
         lambda p: torch.optim.AdamW(p, lr=1e-3, betas=(0.8, 0.99), eps=1e-6)),
    ],
)  # fmt: skip
def test_row_updates_match_torch_optim_on_separate_members(ours, theirs):
    stacked, per_member, _ = run_both(ours, theirs, MEMBER_SETS)
    for member in range(5):
        for p, reference in zip(stacked, per_member[member]):
            torch.testing.assert_close(p.detach()[member], reference.detach(), rtol=1e-6, atol=1e-7)


def test_all_members_path_matches_torch_optim():
    stacked, per_member, _ = run_both(
        lambda p: MemberAdamW(p, lr=0.01), lambda p: torch.optim.AdamW(p, lr=0.01), [[0, 1, 2, 3, 4]] * 3
    )
    twin = make_params()
    optimizer = MemberAdamW(twin, lr=0.01)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        optimizer.step([torch.randn(shape, generator=generator) for shape in SHAPES], members=None)
    for p, q in zip(stacked, twin):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_members_outside_the_step_and_their_state_stay_bit_identical():
    params = make_params()
    optimizer = MemberAdamW(params, lr=0.1, weight_decay=0.5)
    optimizer.step([torch.ones(5, 3, 4), torch.ones(5, 4)])  # every member has state now
    before = [p.detach().clone() for p in params]
    state_before = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in params]
    optimizer.step([torch.ones(2, 3, 4), torch.ones(2, 4)], members=torch.tensor([1, 3]))
    for p, old, state in zip(params, before, state_before):
        for member in (0, 2, 4):
            assert torch.equal(p.detach()[member], old[member])
            for name, value in optimizer.state[p].items():
                assert torch.equal(value[member], state[name][member]), name
        for member in (1, 3):
            assert not torch.equal(p.detach()[member], old[member])
    assert optimizer.state[params[0]]["step"].tolist() == [1, 2, 1, 2, 1]


def test_works_with_torch_lr_schedulers():
    params = make_params()
    optimizer = MemberSGD(params, lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2)
    optimizer.step([torch.zeros(shape) for shape in SHAPES])
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


def test_rejects_parameters_without_a_shared_member_axis():
    with pytest.raises(ValueError, match="leading member axis"):
        MemberSGD([torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4))], lr=0.1)


def test_rejects_members_out_of_order():
    optimizer = MemberSGD(make_params(), lr=0.1)
    with pytest.raises(ValueError, match="increasing"):
        optimizer.step([torch.zeros((2,) + shape[1:]) for shape in SHAPES], members=[3, 1])


@pytest.mark.parametrize("optimizer", [lambda p: MemberSGD(p, lr=0.1, momentum=0.9), lambda p: MemberAdamW(p, lr=0.01)])
def test_transposed_gradients_update_the_right_elements(optimizer):
    # autograd returns the gradient of a weight used as w.T in the transposed layout
    dense, strided = make_params(), make_params()
    generator = torch.Generator().manual_seed(3)
    grads = [torch.randn((2,) + shape[1:], generator=generator) for shape in SHAPES]
    transposed = [g.transpose(-1, -2).contiguous().transpose(-1, -2) if g.dim() == 3 else g for g in grads]
    assert not transposed[0].is_contiguous()
    optimizer(dense).step([g.clone() for g in grads], members=[1, 4])
    optimizer(strided).step(transposed, members=[1, 4])
    for a, b in zip(dense, strided):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


LR_SCALE = [1.0, 0.5, 2.0, 0.1, 1.0]
MEMBER_DECAY = [0.0, 0.1, 0.01, 0.3, 0.05]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda p: MemberSGD(p, lr=0.1, momentum=0.9, lr_scale=LR_SCALE, member_weight_decay=MEMBER_DECAY),
         lambda p, m: torch.optim.SGD(p, lr=0.1 * LR_SCALE[m], momentum=0.9, weight_decay=MEMBER_DECAY[m])),
        (lambda p: MemberAdamW(p, lr=0.01, lr_scale=LR_SCALE, member_weight_decay=MEMBER_DECAY),
         lambda p, m: torch.optim.AdamW(p, lr=0.01 * LR_SCALE[m], weight_decay=MEMBER_DECAY[m])),
    ],
)  # fmt: skip
def test_per_member_learning_rates_and_decays_match_torch_optim_per_member(ours, theirs):
    stacked = make_params()
    per_member = [[torch.nn.Parameter(p.detach()[m].clone()) for p in stacked] for m in range(5)]
    optimizer = ours(stacked)
    references = [theirs(per_member[m], m) for m in range(5)]
    generator = torch.Generator().manual_seed(1)
    for members in MEMBER_SETS + [[0, 1, 2, 3, 4]]:
        grads = [torch.randn((len(members),) + shape[1:], generator=generator) for shape in SHAPES]
        for row, member in enumerate(members):
            for p, grad in zip(per_member[member], grads):
                p.grad = grad[row].clone()
            references[member].step()
        optimizer.step([g.clone() for g in grads], members=torch.tensor(members))
    for member in range(5):
        for p, reference in zip(stacked, per_member[member]):
            torch.testing.assert_close(p.detach()[member], reference.detach(), rtol=1e-6, atol=1e-7)


def test_per_member_settings_need_one_value_per_member():
    with pytest.raises(ValueError, match=r"lr_scale must give one value >= 0 per member \(5\)"):
        MemberAdamW(make_params(), lr_scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="member_weight_decay must give one value >= 0 per member"):
        MemberSGD(make_params(), member_weight_decay=[0.1, 0.1, -0.1, 0.1, 0.1])
