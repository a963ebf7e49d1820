import dataclasses

import numpy as np
import pytest
import torch

from sedlib.ensemble import HeadConfig, HeadEnsemble
from sedlib.train import EnsembleTrainer, TrainConfig, epoch_seed, plan_epoch, train_ensemble
from tests._reference import cosine_lr, reference_heads, reference_optimizer, reference_step
from tests.conftest import clustered_features


def plans(schedule, rows=50, members=4, batch=8, seed=0):
    return plan_epoch(schedule, rows, members, batch, torch.Generator().manual_seed(seed))


def rows_seen(steps):
    return torch.cat([step.rows.flatten() for step in steps])


@pytest.mark.parametrize("schedule", ["iid", "matching", "all"])
def test_every_row_is_used_once_per_epoch_with_the_last_batch_kept(schedule):
    steps = plans(schedule, rows=53, members=5, batch=8)
    assert sorted(rows_seen(steps).tolist()) == list(range(53))


def test_iid_runs_two_distinct_members_per_step_with_random_roles():
    steps = plans("iid", rows=400, members=5, batch=4)
    orders = set()
    for step in steps:
        assert step.num_pairs == 1 and step.pairs_per_member == 1 and step.rows.shape[0] == 1
        assert step.members.numel() == 2 and step.members[0] < step.members[1]
        orders.add(tuple(step.pairs[0].tolist()))
    assert orders == {(0, 1), (1, 0)}
    used = torch.cat([step.members for step in steps])
    assert set(used.tolist()) == set(range(5))


def test_matching_uses_every_member_once_per_round():
    steps = plans("matching", rows=64, members=6, batch=4)  # 16 batches: 5 rounds of 3 pairs, then 1 pair
    assert [step.num_pairs for step in steps] == [3, 3, 3, 3, 3, 1]
    for step in steps:
        members = step.members[step.pairs.flatten()]
        assert len(set(members.tolist())) == members.numel()  # nobody twice in a round
        if step.num_pairs == 3:
            assert sorted(members.tolist()) == list(range(6))
        # each pair reads its own batch
        assert step.member_group[step.pairs[:, 0]].tolist() == list(range(step.num_pairs))
        assert torch.equal(step.member_group[step.pairs[:, 0]], step.member_group[step.pairs[:, 1]])


def test_matching_with_odd_members_rests_one_member_per_round():
    steps = plans("matching", rows=80, members=5, batch=4)  # 20 batches, 2 pairs per round
    assert len(steps) == 10
    resting = [sorted(set(range(5)) - set(step.members.tolist())) for step in steps]
    assert all(len(rest) == 1 for rest in resting)
    assert len({rest[0] for rest in resting}) > 1  # the resting member changes


def test_matching_runs_the_short_last_batch_as_its_own_step():
    steps = plans("matching", rows=4 * 5 + 3, members=4, batch=4)  # 5 full batches and one of 3
    assert [step.rows.shape for step in steps] == [(2, 4), (2, 4), (1, 4), (1, 3)]
    last_round = set(steps[2].members.tolist()) | set(steps[3].members.tolist())
    assert last_round == {0, 1, 2, 3}  # the two steps share one matching


def test_all_runs_every_pair_on_one_batch():
    for step in plans("all", members=4):
        assert step.num_pairs == 6 and step.pairs_per_member == 3
        assert {tuple(sorted(pair)) for pair in step.pairs.tolist()} == {
            (i, j) for i in range(4) for j in range(i + 1, 4)
        }
        assert torch.count_nonzero(step.member_group) == 0


def test_epoch_seed_repeats_the_seed_after_a_frozen_epoch_as_published():
    config = TrainConfig(seed=42)
    assert [epoch_seed(config, e) for e in range(4)] == [42, 42, 43, 44]
    assert [epoch_seed(dataclasses.replace(config, freeze_first_epoch=False), e) for e in range(3)] == [42, 43, 44]


def small_problem(members=4, rows=64, seed=0):
    config = HeadConfig(num_members=members, feature_dim=10, hidden_dim=16, num_classes=3)
    features, labels = clustered_features(rows, 10, 3, seed=seed)
    return config, features, labels


@pytest.mark.parametrize(
    "schedule, optimizer, members",
    [("iid", "sgd", 4), ("iid", "adamw", 4), ("matching", "adamw", 4), ("matching", "sgd", 5), ("all", "adamw", 4)],
)
def test_fast_paths_match_the_published_style_reference_loop(schedule, optimizer, members):
    head_config, features, labels = small_problem(members)
    config = TrainConfig(
        schedule=schedule, optimizer=optimizer, batch_size=8, lr=0.05, weight_decay=0.01, momentum=0.9,
        lam=0.5, kappa=2.0, label_smoothing=0.1,
    )  # fmt: skip
    # float64: Adam divides tiny gradients by sqrt(v) + eps, which magnifies float32 rounding
    ensemble = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(0)).double()
    features = features.double()
    heads = reference_heads(ensemble).double()
    trainer = EnsembleTrainer(ensemble, config)
    reference = reference_optimizer(heads, config)
    for step in plans(schedule, rows=64, members=members, batch=8, seed=3)[:6]:
        trainer.step(step, features, labels)
        reference_step(heads, reference, step, features, labels, config)
    for member, head in enumerate(heads):
        for name, p in head.stacked_names().items():
            torch.testing.assert_close(ensemble.get_parameter(name)[member], p.detach(), rtol=1e-9, atol=1e-11)


def test_iid_step_leaves_inactive_members_and_their_optimiser_state_bit_identical():
    head_config, features, labels = small_problem(members=5)
    ensemble = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(0))
    trainer = EnsembleTrainer(ensemble, TrainConfig(optimizer="sgd", momentum=0.9, weight_decay=0.1, lr=0.1))
    steps = plans("iid", rows=64, members=5, batch=8)
    trainer.step(steps[0], features, labels)
    before = {name: p.detach().clone() for name, p in ensemble.named_parameters()}
    buffers = {name: trainer.optimizer.state[p]["momentum_buffer"].clone() for name, p in ensemble.named_parameters()}
    step = next(s for s in steps[1:] if set(s.members.tolist()) != set(steps[0].members.tolist()))
    trainer.step(step, features, labels)
    active = set(step.members.tolist())
    for name, p in ensemble.named_parameters():
        for member in range(5):
            same = torch.equal(p.detach()[member], before[name][member])
            same_state = torch.equal(trainer.optimizer.state[p]["momentum_buffer"][member], buffers[name][member])
            assert (same and same_state) == (member not in active), (name, member)


def test_matching_updates_every_member_exactly_once_per_round():
    head_config, features, labels = small_problem(members=6)
    ensemble = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(0))
    trainer = EnsembleTrainer(ensemble, TrainConfig(schedule="matching", batch_size=4))
    steps = plans("matching", rows=64, members=6, batch=4)
    for rounds, step in enumerate(steps[:3], start=1):
        trainer.step(step, features, labels)
        for p in ensemble.parameters():
            assert trainer.optimizer.state[p]["step"].tolist() == [rounds] * 6


def test_training_learns_and_logs_every_epoch():
    head_config, features, labels = small_problem(members=4, rows=200)
    config = TrainConfig(schedule="matching", batch_size=16, epochs=4, lr=3e-3, lam=0.5, kappa=0.5)
    passes = torch.stack((features, features + 0.01 * torch.randn_like(features)))
    ensemble, log = train_ensemble(head_config, config, passes, labels, features, labels, progress=False)
    assert log["epoch"].tolist() == [0, 1, 2, 3]
    assert log["pass"].tolist() == [0, 1, 0, 1]
    assert log["frozen"].tolist() == [True, False, False, False]
    assert log["steps"].tolist() == [7] * 4 and log["pair_steps"].tolist() == [13] * 4
    for column in [
        "task_loss",
        "repulsion",
        "total_loss",
        "val_acc_ensemble",
        "val_acc_member_mean",
        "val_acc_member_3",
    ]:
        assert np.isfinite(log[column]).all(), column
    assert log["task_loss"].iloc[-1] < log["task_loss"].iloc[0]
    assert log["val_acc_ensemble"].iloc[-1] > 0.9


def test_frozen_epoch_does_not_update_and_cosine_schedule_steps_per_updating_epoch():
    head_config, features, labels = small_problem()
    config = TrainConfig(epochs=4, lr=0.1, cosine_t_max=15, batch_size=16)
    ensemble = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in ensemble.parameters()]
    trainer = EnsembleTrainer(ensemble, dataclasses.replace(config, epochs=2))
    trainer._run_epoch(0, True, features, labels, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(ensemble.parameters(), before))
    _, log = train_ensemble(head_config, config, features, labels, progress=False)
    expected = [cosine_lr(0.1, t, 15) for t in (0, 0, 1, 2)]  # the frozen epoch does not advance it
    np.testing.assert_allclose(log["lr"], expected, rtol=1e-12)


def test_cpu_training_is_bit_reproducible():
    head_config, features, labels = small_problem()
    config = TrainConfig(schedule="iid", epochs=3, batch_size=8, lam=0.5, kappa=1.0)
    first, first_log = train_ensemble(head_config, config, features, labels, features, labels, progress=False)
    second, second_log = train_ensemble(head_config, config, features, labels, features, labels, progress=False)
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
        assert torch.equal(a, b), name
    columns = [c for c in first_log.columns if c != "seconds"]
    assert first_log[columns].equals(second_log[columns])


def test_a_non_finite_loss_stops_training_naming_epoch_and_step():
    head_config, features, labels = small_problem()
    config = TrainConfig(epochs=2, batch_size=8, check_every=1)
    bad_row = 17
    features = features.clone()
    features[bad_row] = float("nan")
    generator = torch.Generator().manual_seed(epoch_seed(config, 0))
    steps = plan_epoch(config.schedule, len(features), head_config.num_members, config.batch_size, generator)
    bad_step = next(i for i, step in enumerate(steps) if bad_row in step.rows.flatten().tolist())
    with pytest.raises(FloatingPointError, match=f"epoch 0, step {bad_step} "):
        train_ensemble(head_config, config, features, labels, progress=False)


def test_train_config_validates_and_names_bad_keys():
    with pytest.raises(ValueError, match="TrainConfig.schedule"):
        TrainConfig(schedule="pairs")
    with pytest.raises(ValueError, match="TrainConfig.lam"):
        TrainConfig(lam=1.5)
    with pytest.raises(KeyError, match=r"params.yaml: unknown key\(s\) \['lamda'\]"):
        TrainConfig.from_dict({"lamda": 0.5}, source="params.yaml")
    assert TrainConfig.from_dict({"betas": [0.8, 0.9]}).betas == (0.8, 0.9)


def test_training_rejects_mismatched_inputs():
    head_config, features, labels = small_problem()
    ensemble = HeadEnsemble(head_config)
    trainer = EnsembleTrainer(ensemble, TrainConfig(epochs=2))
    with pytest.raises(ValueError, match="width 9"):
        trainer.fit(features[:, :9], labels, progress=False)
    with pytest.raises(ValueError, match="do not match"):
        trainer.fit(features, labels[:10], progress=False)
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsembleTrainer(HeadEnsemble(dataclasses.replace(head_config, num_members=1)), TrainConfig())


def test_weight_decay_defaults_to_the_published_value_of_the_optimiser():
    assert TrainConfig(optimizer="sgd").weight_decay == 1e-4
    assert TrainConfig(optimizer="adamw").weight_decay == 0.1
    assert TrainConfig(optimizer="adamw", weight_decay=0.0).weight_decay == 0.0


def test_fit_reads_several_passes_of_float16_numpy_features():
    head_config, features, labels = small_problem(members=3)
    passes = np.stack([features.numpy() + 0.01 * k for k in range(4)]).astype(np.float16)
    config = TrainConfig(schedule="matching", epochs=5, batch_size=16, freeze_first_epoch=False)
    ensemble, log = train_ensemble(head_config, config, passes, labels.numpy(), progress=False)
    assert log["pass"].tolist() == [0, 1, 2, 3, 0]
    assert ensemble.head.weight.dtype == torch.float32 and np.isfinite(log["total_loss"]).all()


def test_fit_refuses_labels_outside_the_classes():
    head_config, features, labels = small_problem()
    for bad in (labels - 1, labels + 1, labels.float()):
        with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
            train_ensemble(head_config, TrainConfig(epochs=2), features, bad, progress=False)


def test_all_schedule_weighs_samples_by_the_whole_ensemble():
    head_config, features, labels = small_problem(members=4)
    ensemble = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(0))
    step = plans("all", rows=64, members=4, batch=8)[0]
    logits = ensemble(features[step.rows[0]]).detach()
    alpha = EnsembleTrainer._hardness_weights(step, logits, labels[step.rows])
    expected = torch.nn.functional.cross_entropy(logits.mean(0), labels[step.rows[0]], reduction="none")
    torch.testing.assert_close(alpha[0], expected / expected.mean() ** 2)


def test_plans_move_in_one_transfer_and_keep_their_values():
    from sedlib.train import _map_plan_tensors, plans_to

    plans = plan_epoch("matching", 37, 5, 4, torch.Generator().manual_seed(0))
    moved = plans_to(plans, torch.device("meta"))
    assert len(moved) == len(plans)
    for before, after in zip(plans, moved):
        assert after.rows.device.type == "meta" and after.rows.shape == before.rows.shape
        assert after.pairs.shape == before.pairs.shape and after.member_ids == before.member_ids
    # the concatenate-map-split path puts every value back in its own plan and field
    negated = _map_plan_tensors(plans, torch.neg)
    for before, after in zip(plans, negated):
        for name in ("rows", "members", "member_group", "pairs"):
            assert torch.equal(-getattr(before, name), getattr(after, name))


def _fit(precision, schedule="iid"):
    features, labels = clustered_features(96, 12, 3, seed=4)
    config = TrainConfig(schedule=schedule, batch_size=16, epochs=3, lam=0.5, kappa=1.0, precision=precision, seed=1)
    heads = HeadConfig(num_members=4, feature_dim=12, hidden_dim=20, num_classes=3)
    return train_ensemble(heads, config, features, labels, progress=False)


def test_tf32_is_plain_fp32_off_cuda():
    fp32, _ = _fit("fp32")
    tf32, _ = _fit("tf32")
    for a, b in zip(fp32.parameters(), tf32.parameters()):
        assert torch.equal(a, b)


def test_bf16_autocast_trains_close_to_fp32_and_keeps_fp32_weights():
    fp32, fp32_log = _fit("fp32", "matching")
    bf16, bf16_log = _fit("bf16", "matching")
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(fp32.parameters(), bf16.parameters()))  # autocast did act
    assert np.isfinite(bf16_log["total_loss"]).all()
    assert bf16_log["task_loss"].iloc[-1] == pytest.approx(fp32_log["task_loss"].iloc[-1], rel=0.05)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp8")


def test_training_can_start_from_given_heads(tiny_ensemble, tiny_config):
    features, labels = clustered_features(40, tiny_config.feature_dim, tiny_config.num_classes)
    config = TrainConfig(epochs=2, freeze_first_epoch=False, batch_size=8, lam=0.5, kappa=1.0, seed=3)
    ensemble, _ = train_ensemble(tiny_config, config, features, labels, initial=tiny_ensemble)
    copy = HeadEnsemble(tiny_config)
    copy.load_state_dict(tiny_ensemble.state_dict())
    EnsembleTrainer(copy, config).fit(features, labels, progress=False)
    for name, parameter in ensemble.named_parameters():
        torch.testing.assert_close(parameter, copy.get_parameter(name), rtol=0, atol=0)
        assert not torch.equal(parameter, tiny_ensemble.get_parameter(name))  # trained, and the input left alone
    with pytest.raises(ValueError, match="do not have the configured shape"):
        train_ensemble(dataclasses.replace(tiny_config, hidden_dim=7), config, features, labels, initial=tiny_ensemble)
