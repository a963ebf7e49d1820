import dataclasses

import numpy as np
import pytest
import torch

from sedlib.method.ensemble import HeadConfig, HeadEnsemble
from sedlib.method.schedules import plan_disagreement, plan_epoch
from sedlib.method.train import EnsembleTrainer, TrainConfig, epoch_seed, train_ensemble
from sedlib.progress import tqdm
from tests._reference import (
    cosine_lr,
    reference_baseline_step,
    reference_heads,
    reference_optimizer,
    reference_step,
)
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
    assert_matches_reference(ensemble, heads)


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
    trainer._run_epoch(0, True, features, labels, tqdm(disable=True))
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
    columns = [c for c in first_log.columns if not c.endswith("seconds")]
    assert first_log[columns].equals(second_log[columns])


def test_validating_after_the_last_epoch_only_trains_the_same_and_logs_only_that_accuracy():
    head_config, features, labels = small_problem()
    config = TrainConfig(schedule="iid", epochs=3, batch_size=8, lam=0.5, kappa=1.0)
    every, every_log = train_ensemble(head_config, config, features, labels, features, labels, progress=False)
    last, last_log = train_ensemble(
        head_config, config, features, labels, features, labels, progress=False, validate_every_epoch=False
    )
    for (name, a), (_, b) in zip(every.named_parameters(), last.named_parameters()):
        assert torch.equal(a, b), name
    assert last_log["val_acc_ensemble"].iloc[:-1].isna().all()
    assert last_log["val_acc_ensemble"].iloc[-1] == every_log["val_acc_ensemble"].iloc[-1]


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
    from sedlib.method.schedules import _map_plan_tensors, plans_to

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
    with pytest.raises(ValueError, match="TrainConfig.precision must be 'fp32', 'tf32' or 'bf16', got 'fp8'"):
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


# --- the paper's baselines in the same trainer: deep ensemble, single model, DivDis, naive A2D / DivDis ---


def mutual_information_by_hand(probs_a: np.ndarray, probs_b: np.ndarray, alpha: np.ndarray | None = None) -> float:
    """mean(alpha) * sum_cd J log(J / (Pa Pb)) with J, Pa, Pb the alpha-weighted batch joint and marginals."""
    alpha = np.ones(len(probs_a)) if alpha is None else alpha
    weights = alpha / alpha.sum()
    joint = np.einsum("n,nc,nd->cd", weights, probs_a, probs_b)
    independent = np.outer(weights @ probs_a, weights @ probs_b)
    return float(alpha.mean() * (joint * np.log(joint / independent)).sum())


def a2d_by_hand(probs_a: np.ndarray, probs_b: np.ndarray) -> np.ndarray:
    top = probs_a.argmax(-1)
    a, b = probs_a[np.arange(len(top)), top], probs_b[np.arange(len(top)), top]
    return -np.log(a * (1 - b) + b * (1 - a) + 1e-9)


def softmax(logits: torch.Tensor) -> np.ndarray:
    z = logits.detach().double().numpy()
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_independent_plans_train_every_member_on_every_batch():
    steps = plans("independent", rows=53, members=3, batch=8)
    assert sorted(rows_seen(steps).tolist()) == list(range(53))
    for step in steps:
        assert step.member_ids == (0, 1, 2) and step.pairs.tolist() == [[0, 0], [1, 1], [2, 2]]
        assert step.pairs_per_member == 1 and torch.count_nonzero(step.member_group) == 0
    single = plans("independent", rows=53, members=1, batch=8)
    assert [s.rows.tolist() for s in single] == [s.rows.tolist() for s in steps]  # same shuffle whatever M


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_independent_ensemble_equals_single_models_trained_alone(optimizer):
    head_config, features, labels = small_problem(members=3, rows=70)
    config = TrainConfig(
        schedule="independent", lam=0.0, optimizer=optimizer, batch_size=16, epochs=3, lr=0.02, weight_decay=0.01,
        label_smoothing=0.1, cosine_t_max=4, seed=5,
    )  # fmt: skip
    start = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(11))
    ensemble, log = train_ensemble(
        head_config, config, features, labels, features, labels, progress=False, initial=start
    )
    assert log["pair_steps"].tolist() == [3 * 5] * 3  # member-steps: every member on each of the 5 batches
    single_config = dataclasses.replace(head_config, num_members=1)
    for member in range(3):
        row = {name: p.detach()[member] for name, p in start.named_parameters()}
        initial = HeadEnsemble.from_member_state(row, 1, head_config.norm_eps)
        single, single_log = train_ensemble(
            single_config, config, features, labels, features, labels, progress=False, initial=initial
        )
        for name, p in single.named_parameters():
            torch.testing.assert_close(ensemble.get_parameter(name)[member], p[0], rtol=1e-5, atol=1e-6)
        assert log[f"val_acc_member_{member}"].tolist() == single_log["val_acc_member_0"].tolist()
    assert not torch.equal(ensemble.head.weight, start.head.weight)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_independent_steps_match_the_published_style_reference_loop(optimizer):
    head_config, features, labels = small_problem(members=3)
    config = TrainConfig(
        schedule="independent", lam=0.0, optimizer=optimizer, lr=0.05, weight_decay=0.01, label_smoothing=0.1
    )
    ensemble = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(0)).double()
    features = features.double()
    heads = reference_heads(ensemble).double()
    trainer = EnsembleTrainer(ensemble, config)
    reference = reference_optimizer(heads, config)
    for step in plans("independent", rows=64, members=3, batch=8, seed=3)[:5]:
        trainer.step(step, features, labels)
        reference_baseline_step(heads, reference, step, features, labels, config)
    assert_matches_reference(ensemble, heads)


def test_a_single_model_trains_and_the_pair_schedules_refuse_it():
    head_config, features, labels = small_problem(members=1, rows=120)
    config = TrainConfig(schedule="independent", lam=0.0, batch_size=16, epochs=4, lr=3e-3)
    _, log = train_ensemble(head_config, config, features, labels, features, labels, progress=False)
    assert log["task_loss"].iloc[-1] < log["task_loss"].iloc[0] and log["val_acc_ensemble"].iloc[-1] > 0.9
    for schedule in ("iid", "matching", "all"):
        single = HeadEnsemble(head_config)
        with pytest.raises(ValueError, match=f"pair schedule '{schedule}'.*at least 2 members.*'independent'"):
            EnsembleTrainer(single, TrainConfig(schedule=schedule))
    with pytest.raises(ValueError, match="use schedule 'independent'"):
        plan_epoch("iid", 10, 1, 4, torch.Generator())


def test_independent_refuses_a_repulsion():
    with pytest.raises(ValueError, match="lam must be 0 with schedule 'independent'.*got 0.5"):
        TrainConfig(schedule="independent")
    assert TrainConfig(schedule="independent", lam=0.0).lam == 0.0


def test_new_keys_are_validated_with_clear_errors():
    with pytest.raises(ValueError, match="TrainConfig.kernel must be 'a2d' or 'divdis', got 'mi'"):
        TrainConfig(kernel="mi")
    with pytest.raises(ValueError, match="TrainConfig.disagreement_data must be 'train' or 'unlabelled', got 'ood'"):
        TrainConfig(disagreement_data="ood")
    with pytest.raises(ValueError, match="TrainConfig.hardness must be false with disagreement_data 'unlabelled'"):
        TrainConfig(schedule="all", disagreement_data="unlabelled")
    with pytest.raises(ValueError, match="TrainConfig.hardness expected true or false, got 'no'"):
        TrainConfig(hardness="no")


def test_new_keys_round_trip_through_to_dict_and_from_dict():
    import json

    config = TrainConfig(schedule="all", kernel="divdis", disagreement_data="unlabelled", hardness=False)
    values = config.to_dict()
    assert {key: values[key] for key in ("kernel", "disagreement_data", "hardness")} == {
        "kernel": "divdis",
        "disagreement_data": "unlabelled",
        "hardness": False,
    }
    assert TrainConfig.from_dict(values) == config
    assert TrainConfig.from_dict(json.loads(json.dumps(values))) == config  # as saved with a run
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    defaults = TrainConfig()
    assert (defaults.kernel, defaults.disagreement_data, defaults.hardness) == ("a2d", "train", True)


def spread_heads(head_config):
    """float64 heads whose MLP branch matters (as after training), so that their predictions differ."""
    ensemble = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        ensemble.ls2.gamma.normal_(0, 3.0, generator=torch.Generator().manual_seed(1))
        ensemble.head.weight.mul_(20)
    return ensemble


def _members_logits(ensemble, rows):
    with torch.no_grad():
        return ensemble(rows)


@pytest.mark.parametrize("hardness", [False, True])
def test_divdis_kernel_repulsion_is_the_pairwise_mutual_information_by_hand(hardness):
    head_config, features, labels = small_problem(members=3)
    ensemble, features = spread_heads(head_config), features.double()
    config = TrainConfig(schedule="all", kernel="divdis", hardness=hardness, lam=0.5, kappa=2.0)
    step = plans("all", rows=64, members=3, batch=16)[0]
    total, task, repulsion = EnsembleTrainer(ensemble, config).step(step, features, labels, update=False)
    rows = step.rows[0]
    probs = softmax(_members_logits(ensemble, features[rows]))
    alpha = None
    if hardness:  # SED's weights from the mean logit of the three members, by hand
        mean_logits = _members_logits(ensemble, features[rows]).double().mean(0).numpy()
        errors = np.log(np.exp(mean_logits).sum(-1)) - mean_logits[np.arange(16), labels[rows].numpy()]
        alpha = errors / errors.mean() ** 2
    expected = sum(mutual_information_by_hand(probs[i], probs[j], alpha) for i, j in ((0, 1), (0, 2), (1, 2)))
    assert expected > 1e-3  # the heads are far apart enough for the MI to matter
    assert repulsion.item() == pytest.approx(expected, rel=1e-9)
    assert total.item() == pytest.approx(0.5 * task.item() + 2.0 * 0.5 * repulsion.item(), rel=1e-12)


def test_without_hardness_every_sample_weighs_one():
    head_config, features, labels = small_problem(members=4)
    ensemble = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(schedule="iid", hardness=False, lam=0.5, kappa=1.0)
    trainer = EnsembleTrainer(ensemble, config)
    step = plans("iid", rows=64, members=4, batch=8)[0]
    logits = _members_logits(ensemble, features[step.rows[0]])
    pair_group = step.member_group[step.pairs[:, 0]]
    assert torch.equal(trainer._alpha(None, logits, pair_group, None), torch.ones(1, 8))
    _, _, repulsion = trainer.step(step, features, labels, update=False)
    first, second = (step.member_ids[k] for k in step.pairs[0].tolist())
    probs = softmax(logits)  # of all four members
    expected = a2d_by_hand(probs[first], probs[second]).mean()  # no weights
    assert repulsion.item() == pytest.approx(expected, rel=1e-5)


def naive_config(kernel="a2d", **overrides):
    values = dict(
        schedule="all", kernel=kernel, disagreement_data="unlabelled", hardness=False, lam=0.5, kappa=2.0,
        batch_size=8, epochs=2, freeze_first_epoch=False, lr=0.01,
    )  # fmt: skip
    return TrainConfig(**{**values, **overrides})


@pytest.mark.parametrize("kernel", ["a2d", "divdis"])
def test_naive_repulsion_is_computed_on_the_unlabelled_rows(kernel):
    head_config, features, labels = small_problem(members=3)
    unlabelled = torch.randn(30, 10, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 3
    ensemble, features = spread_heads(head_config), features.double()
    step = plan_disagreement(plans("all", rows=64, members=3, batch=8), 30, 8, torch.Generator().manual_seed(1))[0]
    assert step.disagreement_rows.shape == (1, 8)
    _, task, repulsion = EnsembleTrainer(ensemble, naive_config(kernel)).step(
        step, features, labels, update=False, unlabelled=unlabelled
    )
    probs = softmax(_members_logits(ensemble, unlabelled[step.disagreement_rows[0]]))
    expected = 0.0
    for a, b in step.pairs.tolist():  # positions; all members are active, so positions are member ids
        if kernel == "a2d":
            expected += a2d_by_hand(probs[a], probs[b]).mean()
        else:
            expected += mutual_information_by_hand(probs[a], probs[b])
    assert repulsion.item() == pytest.approx(expected, rel=1e-9)
    labelled = softmax(_members_logits(ensemble, features[step.rows[0]]))
    y = labels[step.rows[0]].numpy()
    ce = -np.log(labelled[:, np.arange(8), y]).mean(-1)  # per member; each pair's task is its mean
    assert task.item() == pytest.approx(sum((ce[a] + ce[b]) / 2 for a, b in step.pairs.tolist()), rel=1e-9)


@pytest.mark.parametrize(
    "schedule, kernel, data, hardness",
    [("all", "a2d", "unlabelled", False), ("all", "divdis", "unlabelled", False),
     ("matching", "divdis", "unlabelled", False), ("iid", "divdis", "train", True), ("all", "divdis", "train", True),
     ("matching", "a2d", "train", False)],
)  # fmt: skip
def test_baseline_steps_match_the_published_style_reference_loop(schedule, kernel, data, hardness):
    head_config, features, labels = small_problem(members=4)
    config = TrainConfig(
        schedule=schedule, kernel=kernel, disagreement_data=data, hardness=hardness, optimizer="adamw",
        batch_size=8, lr=0.05, weight_decay=0.01, lam=0.5, kappa=2.0, label_smoothing=0.1,
    )  # fmt: skip
    ensemble = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(0)).double()
    features = features.double()
    unlabelled = torch.randn(20, 10, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 3
    heads = reference_heads(ensemble).double()
    trainer = EnsembleTrainer(ensemble, config)
    reference = reference_optimizer(heads, config)
    steps = plans(schedule, rows=64, members=4, batch=8, seed=3)
    if data == "unlabelled":
        steps = plan_disagreement(steps, 20, 8, torch.Generator().manual_seed(4))
    far = unlabelled if data == "unlabelled" else None
    for step in steps[:4]:
        trainer.step(step, features, labels, unlabelled=far)
        reference_baseline_step(heads, reference, step, features, labels, config, far)
    assert_matches_reference(ensemble, heads)


def test_unlabelled_rows_are_a_seeded_stream_of_shuffles():
    steps = plan_epoch("matching", 4 * 5 + 3, 4, 4, torch.Generator().manual_seed(0))  # groups 2, 2, 1, 1
    first = plan_disagreement(steps, 7, 4, torch.Generator().manual_seed(1))
    again = plan_disagreement(steps, 7, 4, torch.Generator().manual_seed(1))
    assert [s.disagreement_rows.shape for s in first] == [(2, 4), (2, 4), (1, 4), (1, 4)]
    assert all(torch.equal(a.disagreement_rows, b.disagreement_rows) for a, b in zip(first, again))
    stream = torch.cat([s.disagreement_rows.flatten() for s in first])  # 24 rows = 3 shuffles of 7 and 3 rows
    for start in range(0, 21, 7):
        assert sorted(stream[start : start + 7].tolist()) == list(range(7))
    assert all(torch.equal(a.rows, b.rows) and torch.equal(a.pairs, b.pairs) for a, b in zip(steps, first))


def test_unlabelled_features_drive_the_repulsion_and_nothing_else():
    head_config, features, labels = small_problem(members=3)
    unlabelled = torch.randn(40, 10, generator=torch.Generator().manual_seed(9)) * 3
    other = torch.randn(40, 10, generator=torch.Generator().manual_seed(10)) * 3

    def trained(config, far):
        return train_ensemble(head_config, config, features, labels, unlabelled_features=far, progress=False)

    def same(a, b):
        return all(torch.equal(p, q) for p, q in zip(a[0].parameters(), b[0].parameters()))

    config = naive_config()
    first, log = trained(config, unlabelled)
    assert (log["repulsion"] > 0).all()
    assert same((first, log), trained(config, unlabelled))  # deterministic
    assert not same((first, log), trained(config, other))
    quiet = dataclasses.replace(config, lam=0.0)
    without = trained(quiet, unlabelled)
    assert same(without, trained(quiet, other))
    # lam = 0: the same weights as the published data path (the labelled shuffle and pairs are untouched)
    assert same(without, trained(dataclasses.replace(quiet, disagreement_data="train"), None))


def test_unlabelled_features_are_required_and_checked():
    head_config, features, labels = small_problem(members=3)
    with pytest.raises(ValueError, match="disagreement_data is 'unlabelled' but no unlabelled_features"):
        train_ensemble(head_config, naive_config(), features, labels, progress=False)
    with pytest.raises(ValueError, match="disagreement_data is 'train'"):
        train_ensemble(head_config, TrainConfig(epochs=2), features, labels, unlabelled_features=features[:5])
    with pytest.raises(ValueError, match=r"unlabelled_features must be \(N_u, 10\)"):
        train_ensemble(head_config, naive_config(), features, labels, unlabelled_features=features[:, :9])
    trainer = EnsembleTrainer(HeadEnsemble(head_config), naive_config())
    with pytest.raises(ValueError, match="needs the unlabelled features"):
        trainer.step(plans("all", rows=64, members=3)[0], features, labels)


def test_naive_training_runs_from_float16_numpy_features():
    head_config, features, labels = small_problem(members=3)
    far = np.random.default_rng(0).normal(size=(25, 10)).astype(np.float16)
    ensemble, log = train_ensemble(
        head_config, naive_config("divdis", epochs=3), features.numpy(), labels.numpy(), unlabelled_features=far,
        progress=False,
    )  # fmt: skip
    assert np.isfinite(log["total_loss"]).all() and (log["pair_steps"] == 3 * 8).all()


def assert_matches_reference(ensemble, heads):
    """Every member of ``ensemble`` equals its one-module-per-member reference head (float64)."""
    for member, head in enumerate(heads):
        for name, p in head.stacked_names().items():
            torch.testing.assert_close(ensemble.get_parameter(name)[member], p.detach(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_diverse_hyperparameter_members_equal_single_models_trained_with_their_own(optimizer):
    head_config, features, labels = small_problem(members=3, rows=70)
    shared = dict(schedule="independent", lam=0.0, optimizer=optimizer, batch_size=16, epochs=3, cosine_t_max=4, seed=5)
    member_lr, member_decay, member_smoothing = (0.01, 0.03, 0.002), (0.0, 0.05, 0.01), (0.0, 0.2, 0.05)
    config = TrainConfig(
        **shared, lr=0.02, weight_decay=0.5, label_smoothing=0.3,  # all three overridden per member
        member_lr=member_lr, member_weight_decay=member_decay, member_label_smoothing=member_smoothing,
    )  # fmt: skip
    start = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(11))
    ensemble, _ = train_ensemble(head_config, config, features, labels, progress=False, initial=start)
    single_config = dataclasses.replace(head_config, num_members=1)
    for member in range(3):
        alone = TrainConfig(
            **shared, lr=member_lr[member], weight_decay=member_decay[member], label_smoothing=member_smoothing[member]
        )
        row = {name: p.detach()[member] for name, p in start.named_parameters()}
        initial = HeadEnsemble.from_member_state(row, 1, head_config.norm_eps)
        single, _ = train_ensemble(single_config, alone, features, labels, progress=False, initial=initial)
        for name, p in single.named_parameters():
            torch.testing.assert_close(ensemble.get_parameter(name)[member], p[0], rtol=1e-5, atol=1e-6)


def test_per_member_settings_are_checked():
    with pytest.raises(ValueError, match="member_label_smoothing needs schedule 'independent'"):
        TrainConfig(schedule="iid", member_label_smoothing=(0.0, 0.1))
    with pytest.raises(ValueError, match=r"member_lr\[1\] must be >= 0, got -1.0"):
        TrainConfig(member_lr=(1e-3, -1.0))
    with pytest.raises(ValueError, match=r"member_label_smoothing\[1\] must lie in \[0, 1\)"):
        TrainConfig(schedule="independent", lam=0.0, member_label_smoothing=(0.0, 1.0))
    head_config, _, _ = small_problem(members=3)
    with pytest.raises(ValueError, match="member_weight_decay gives 2 values for 3 members"):
        EnsembleTrainer(HeadEnsemble(head_config), TrainConfig(member_weight_decay=(0.1, 0.2)))


def test_hardness_weights_are_recorded_per_row_as_the_formula_gives_them():
    head_config, features, labels = small_problem(members=4, rows=60)
    config = TrainConfig(schedule="iid", batch_size=16, epochs=2, lam=0.5, kappa=1.0, seed=3)
    start = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(2))
    history = []
    _, log = train_ensemble(head_config, config, features, labels, progress=False, initial=start, alpha_history=history)
    assert len(history) == 2 and all(alpha.shape == (60,) and np.isfinite(alpha).all() for alpha in history)
    # epoch 0 is frozen: the weights are still the initial ones, so alpha follows from them by hand
    steps = plan_epoch("iid", 60, 4, 16, torch.Generator().manual_seed(epoch_seed(config, 0)))
    expected = np.empty(60)
    for step in steps:
        rows = step.rows[0]
        logits = _members_logits(start, features[rows]).double()[list(step.member_ids)].mean(0).numpy()
        errors = np.log(np.exp(logits).sum(-1)) - logits[np.arange(len(rows)), labels[rows].numpy()]
        expected[rows.numpy()] = errors / errors.mean() ** 2
    np.testing.assert_allclose(history[0], expected, rtol=1e-5)
    assert not np.allclose(history[1], history[0])  # the updated heads weigh the rows differently
    for epoch, alpha in enumerate(history):
        assert log.loc[epoch, "alpha_q90"] == pytest.approx(np.quantile(alpha, 0.9))
        assert log.loc[epoch, "alpha_max"] == pytest.approx(alpha.max())


def test_runs_without_hardness_weights_record_none():
    head_config, features, labels = small_problem(members=3, rows=40)
    for config in (
        TrainConfig(schedule="iid", batch_size=16, epochs=2, lam=0.0),
        TrainConfig(schedule="iid", batch_size=16, epochs=2, lam=0.5, hardness=False),
    ):
        history = []
        _, log = train_ensemble(head_config, config, features, labels, progress=False, alpha_history=history)
        assert history == [] and not any(column.startswith("alpha_") for column in log.columns)
