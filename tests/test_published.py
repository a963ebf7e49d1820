import pytest

from sedlib.published import PUBLISHED


@pytest.mark.parametrize(
    "name, members, batch, repulsion_weight, optimizer, lr, weight_decay, smoothing, steps_per_epoch",
    [
        ("50_models", 50, 16, 0.0, "sgd", 1e-3, 1e-4, 0.0, 80_073),
        ("ood_gen", 5, 32, 0.0, "adamw", 1e-3, 0.1, 0.5, 40_037),
        ("ood_det_cov", 5, 32, 2.5, "adamw", 1e-3, 0.1, 0.5, 40_037),
        ("ood_det_sem", 5, 256, 0.25, "adamw", 1e-4, 0.01, 0.0, 5_005),
    ],
)
def test_published_runs_match_the_audited_configs(
    name, members, batch, repulsion_weight, optimizer, lr, weight_decay, smoothing, steps_per_epoch
):
    run = PUBLISHED[name]
    assert run.heads.num_members == members and run.heads.num_classes == 1000
    assert run.train.batch_size == batch and run.train.schedule == "iid"
    assert run.train.lam == 0.5 and run.train.kappa * run.train.lam == pytest.approx(repulsion_weight)
    assert (run.train.optimizer, run.train.lr, run.train.weight_decay) == (optimizer, lr, weight_decay)
    assert run.train.label_smoothing == smoothing
    assert run.train.epochs == 11 and run.train.freeze_first_epoch and run.train.seed == 42
    assert run.steps_per_epoch == steps_per_epoch and run.pair_steps == 10 * steps_per_epoch


def test_fifty_model_schedule_has_the_published_length():
    assert PUBLISHED["50_models"].pair_steps == 800_730
    assert PUBLISHED["50_models"].train.lr_schedule == "constant"
    assert all(PUBLISHED[name].train.cosine_t_max == 15 for name in ("ood_gen", "ood_det_cov", "ood_det_sem"))
