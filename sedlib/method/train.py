"""Training an ensemble of heads on cached features with SED's pair schedules.

Paper: Rubinstein et al., *Scalable Ensemble Diversification for OOD Generalization and Detection*,
arXiv:2409.16797 (https://arxiv.org/abs/2409.16797), Sec. 3.3 ("stochastic sum"). The loop follows
the authors' code (``train/train.py``): epoch e reads augmentation pass ``e mod P``, shuffled, in
batches whose last one is kept; an optional first epoch only measures the losses (no update, no
schedule step); the learning rate follows a cosine schedule stepped once per updating epoch.

The pair schedules (which members meet on which rows in each step) are planned by
`sedlib.method.schedules`; this module runs the planned steps: the loss, the optimiser updates, the
learning-rate schedule, validation and the log.

One step minimises ``sum over its pairs of L_pair / (pairs per member)`` with L_pair the SED
objective of `sedlib.method.losses.sed_pair_loss`; with one pair per member this is the sum of the pairs'
losses, and each member's gradient is that of its own pair. The hardness weights of a mini-batch come
from the mean logit of all active members that read it: the pair under ``iid`` and ``matching``, all
M members under ``all``.

On the CPU a run is bit-reproducible for a given seed; on a GPU, atomic additions in some backward
kernels can change the last bits between runs.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from sedlib.config.training import TrainConfig
from sedlib.eval.evaluate import member_accuracies
from sedlib.method.ensemble import HeadConfig, HeadEnsemble, head_forward
from sedlib.method.losses import PairLoss, cross_entropy, hardness_weights, sed_pair_loss
from sedlib.method.optim import MemberAdamW, MemberSGD
from sedlib.method.schedules import StepPlan, plan_disagreement, plan_epoch, plans_to
from sedlib.progress import tqdm

#: Added to the epoch seed for the generator of the unlabelled rows, so its stream differs from the shuffle's.
UNLABELLED_SEED_OFFSET = 2**32


#: Quantiles of the hardness weights alpha logged per epoch (columns ``alpha_q<percent>``).
ALPHA_QUANTILES = (0.5, 0.9, 0.99)


@contextlib.contextmanager
def _precision(precision: str, device: torch.device):
    """Matmul precision of one step: fp32, TF32 matmuls on CUDA, or bfloat16 autocast."""
    if precision == "tf32" and device.type == "cuda":
        matmul = torch.backends.cuda.matmul
        previous, matmul.fp32_precision = matmul.fp32_precision, "tf32"
        try:
            yield
        finally:
            matmul.fp32_precision = previous
    else:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield


def epoch_seed(config: TrainConfig, epoch: int) -> int:
    """Seed of an epoch's shuffle and pairs: ``seed + epoch``, minus one after a frozen first epoch.

    As in the published code, the frozen epoch 0 and the first updating epoch share a seed.
    """
    return config.seed + epoch - (1 if config.freeze_first_epoch and epoch > 0 else 0)


def _as_passes(features, labels) -> tuple[Tensor, Tensor]:
    """``(P, N, d)`` passes and ``(P, N)`` labels.

    A lazy reader of passes (``shape`` and indexing by pass, e.g. `sedlib.features.PassReader`) is
    kept as it is, so that only one pass is in memory at a time.
    """
    lazy = not isinstance(features, Tensor | np.ndarray) and len(getattr(features, "shape", ())) == 3
    if not lazy:
        features = torch.as_tensor(features)
    labels = torch.as_tensor(labels)
    if not lazy and features.dim() == 2:
        features = features[None]
    if len(features.shape) != 3:
        raise ValueError(f"train features must be (N, d) or (passes, N, d), got shape {tuple(features.shape)}")
    if labels.dim() == 1:
        labels = labels[None].expand(features.shape[0], -1)
    if labels.shape != features.shape[:2]:
        raise ValueError(
            f"train labels of shape {tuple(labels.shape)} do not match features of shape {tuple(features.shape)}"
        )
    return features, labels


class EnsembleTrainer:
    """Trains a `HeadEnsemble` in place with the SED objective and a pair schedule.

    Args:
        ensemble: the heads; their device is the training device.
        config: hyperparameters.
    """

    def __init__(self, ensemble: HeadEnsemble, config: TrainConfig) -> None:
        if config.schedule != "independent" and ensemble.num_members < 2:
            raise ValueError(
                f"the pair schedule {config.schedule!r} trains at least 2 members, the ensemble has "
                f"{ensemble.num_members}; train a single model with schedule 'independent' (and lam 0)"
            )
        config.check_members(ensemble.num_members)
        self.ensemble = ensemble
        self.config = config
        self.device = next(ensemble.parameters()).device
        self.names = [name for name, _ in ensemble.named_parameters()]
        params = list(ensemble.parameters())
        members = {
            "lr_scale": [lr / config.lr for lr in config.member_lr] or None,
            "member_weight_decay": config.member_weight_decay or None,
        }
        if config.optimizer == "sgd":
            self.optimizer = MemberSGD(
                params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, **members
            )
        else:
            self.optimizer = MemberAdamW(
                params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay, **members
            )
        self.smoothing = (
            torch.tensor(config.member_label_smoothing, device=self.device)[:, None]
            if config.member_label_smoothing
            else config.label_smoothing
        )
        updating_epochs = config.epochs - int(config.freeze_first_epoch)
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=config.cosine_t_max or updating_epochs)
            if config.lr_schedule == "cosine"
            else None
        )

    def step(
        self,
        plan: StepPlan,
        features: Tensor,
        labels: Tensor,
        update: bool = True,
        unlabelled: Tensor | None = None,
        alpha_rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run one planned step on a pass that lies on the training device.

        Args:
            plan: from `plan_epoch` (and `plan_disagreement` with ``disagreement_data: unlabelled``).
            features: ``(N, d)`` float32 rows of the current pass.
            labels: ``(N,)`` labels of the current pass.
            update: apply the optimiser (False: only measure the losses).
            unlabelled: ``(N_u, d)`` float32 unlabelled disagreement set on the training device
                (``disagreement_data: unlabelled``).
            alpha_rows: ``(N,)`` float32 on the device; when given (and the run has hardness
                weights), each row of the step receives the alpha it was weighted by.

        Returns:
            Sums over the step's pairs of the total loss, the task term and the repulsion (0-dim
            tensors on the device; reading them synchronises). Under ``independent`` the "pairs"
            are the members.
        """
        plan = plan.to(self.device)
        config = self.config
        repulsive = config.kappa * config.lam > 0
        far = repulsive and config.disagreement_data == "unlabelled"
        if far and (unlabelled is None or plan.disagreement_rows is None):
            raise ValueError(
                "TrainConfig.disagreement_data is 'unlabelled': the step needs the unlabelled features and a plan "
                "with disagreement_rows (plan_disagreement)"
            )
        all_members = len(plan.member_ids) == self.ensemble.num_members
        if all_members:
            params = dict(zip(self.names, self.ensemble.parameters()))
        else:
            params = {
                name: p.detach().index_select(0, plan.members).requires_grad_(update)
                for name, p in zip(self.names, self.ensemble.parameters())
            }
        x = features[plan.rows]
        y = labels[plan.rows]
        with torch.set_grad_enabled(update), _precision(config.precision, self.device):
            inputs = x[0] if x.shape[0] == 1 else x[plan.member_group]
            if far:
                # one forward over the labelled and the unlabelled rows, split afterwards
                x_far = unlabelled[plan.disagreement_rows]
                inputs_far = x_far[0] if x_far.shape[0] == 1 else x_far[plan.member_group]
                both = head_forward(params, torch.cat((inputs, inputs_far), dim=-2), self.ensemble.config.norm_eps)
                logits, logits_far = both.split((inputs.shape[-2], inputs_far.shape[-2]), dim=-2)
            else:
                logits = head_forward(params, inputs, self.ensemble.config.norm_eps)
            pair_group = plan.member_group[plan.pairs[:, 0]]
            if config.schedule == "independent":
                smoothing = self.smoothing if isinstance(self.smoothing, float) else self.smoothing[plan.members]
                task = cross_entropy(logits, y[plan.member_group], smoothing).mean(dim=-1)
                loss = PairLoss(task, task, torch.zeros_like(task))  # lam is 0: the total is the task term
            else:
                hardness = self._hardness_weights(plan, logits, y) if repulsive and config.hardness else None
                if hardness is not None and alpha_rows is not None:
                    alpha_rows[plan.rows] = hardness.float()
                loss = sed_pair_loss(
                    logits[plan.pairs[:, 0]],
                    logits[plan.pairs[:, 1]],
                    y[pair_group],
                    lam=config.lam,
                    kappa=config.kappa,
                    label_smoothing=config.label_smoothing,
                    alpha=self._alpha(hardness, logits, pair_group, logits_far if far else None) if repulsive else None,
                    kernel=config.kernel,
                    repulsion_logits=(logits_far[plan.pairs[:, 0]], logits_far[plan.pairs[:, 1]]) if far else None,
                )
            if update:
                objective = loss.total.sum() / plan.pairs_per_member
                grads = torch.autograd.grad(objective, list(params.values()))
                self.optimizer.step(grads, members=None if all_members else plan.member_ids)
        return loss.total.detach().sum(), loss.task.detach().sum(), loss.repulsion.detach().sum()

    @staticmethod
    def _alpha(hardness: Tensor | None, logits: Tensor, pair_group: Tensor, logits_far) -> Tensor:
        """``(P, B)`` weights of each pair's repulsion samples: the ``(G, B)`` hardness weights, or ones."""
        if hardness is not None:
            return hardness[pair_group]
        samples = (logits if logits_far is None else logits_far).shape[-2]
        return torch.ones(
            pair_group.shape[0], samples, dtype=torch.promote_types(logits.dtype, torch.float32), device=logits.device
        )

    @staticmethod
    def _hardness_weights(plan: StepPlan, logits: Tensor, labels: Tensor) -> Tensor:
        """``(G, B)`` alpha of each mini-batch from the mean logit of all active members reading it."""
        groups = plan.rows.shape[0]
        counts = torch.bincount(plan.member_group, minlength=groups).to(logits.dtype)
        sums = logits.new_zeros((groups,) + logits.shape[1:]).index_add_(0, plan.member_group, logits.detach())
        return hardness_weights((sums / counts[:, None, None])[None], labels)

    def fit(
        self,
        train_features,
        train_labels,
        val_features=None,
        val_labels=None,
        progress: bool = True,
        unlabelled_features=None,
        alpha_history: list | None = None,
        description: str = "training",
        validate_every_epoch: bool = True,
    ) -> pd.DataFrame:
        """Train for ``config.epochs`` epochs and return the per-epoch log.

        Args:
            train_features: ``(N, d)`` or ``(P, N, d)`` for P augmentation passes (any device/dtype;
                one pass at a time is moved to the training device as float32).
            train_labels: ``(N,)`` or ``(P, N)``.
            val_features: optional ``(N_val, d)`` for per-epoch validation accuracy.
            val_labels: ``(N_val,)``.
            progress: show one tqdm bar over all steps (steps/s and time left; epoch, loss and
                validation accuracy as its postfix).
            unlabelled_features: ``(N_u, d)`` unlabelled disagreement set (any device/dtype; it is
                moved to the training device as float32 once); required by, and only allowed with,
                ``disagreement_data: unlabelled``.
            alpha_history: a list to which, for a run with hardness weights
                (`TrainConfig.records_alpha`), one ``(N,)`` float32 array per epoch is appended: the
                alpha each training row of the epoch's pass was weighted by.
            description: the bar's label (e.g. the model's name).
            validate_every_epoch: with validation data, validate after every epoch (False: after
                the last one only, whose accuracy is then the only one in the log; validating M
                members costs as much as a few hundred steps).

        Returns:
            One row per epoch: ``epoch``, ``pass``, ``frozen``, ``lr``, ``steps``, ``pair_steps``,
            ``task_loss``, ``repulsion``, ``total_loss`` (means over the epoch's pairs; under
            ``independent`` pair-steps are member-steps and the means are over them),
            ``seconds`` (the whole epoch) and ``steps_seconds`` (its steps alone, without validation);
            for a run with hardness weights ``alpha_q50``, ``alpha_q90``, ``alpha_q99`` and
            ``alpha_max`` (quantiles of alpha over the epoch's rows); and with
            validation data ``val_acc_ensemble``, ``val_acc_member_mean`` and ``val_acc_member_<m>``
            for every member.

        Raises:
            FloatingPointError: the loss became NaN or infinite; the message names epoch and step.
            ValueError: mismatched inputs, or unlabelled features missing for (or given without)
                ``disagreement_data: unlabelled``.
        """
        config = self.config
        features, labels = _as_passes(train_features, train_labels)
        unlabelled = self._unlabelled(unlabelled_features)
        if features.shape[-1] != self.ensemble.config.feature_dim:
            raise ValueError(
                f"train features have width {features.shape[-1]}, the heads expect {self.ensemble.config.feature_dim}"
            )
        classes = self.ensemble.config.num_classes
        if labels.is_floating_point() or labels.min() < 0 or labels.max() >= classes:
            raise ValueError(
                f"train labels must be integer class ids in [0, {classes}), got dtype {labels.dtype} and values in "
                f"[{labels.min().item()}, {labels.max().item()}]"
            )
        records = []
        bar = tqdm(total=0, desc=description, unit="step", disable=not progress, leave=True)
        for epoch in range(config.epochs):
            frozen = config.freeze_first_epoch and epoch == 0
            pass_index = epoch % features.shape[0]
            started = time.perf_counter()
            record = {"epoch": epoch, "pass": pass_index, "frozen": frozen}
            alpha_rows = (
                torch.full((features.shape[1],), float("nan"), device=self.device) if config.records_alpha() else None
            )
            record.update(
                self._run_epoch(epoch, frozen, features[pass_index], labels[pass_index], bar, unlabelled, alpha_rows)
            )
            record["steps_seconds"] = time.perf_counter() - started
            if alpha_rows is not None:
                alpha = alpha_rows.cpu().numpy()
                quantiles = np.nanquantile(alpha, ALPHA_QUANTILES)
                record.update({f"alpha_q{round(100 * q)}": float(v) for q, v in zip(ALPHA_QUANTILES, quantiles)})
                record["alpha_max"] = float(np.nanmax(alpha))
                if alpha_history is not None:
                    alpha_history.append(alpha)
            if not frozen and self.scheduler is not None:
                self.scheduler.step()
            if val_features is not None and (validate_every_epoch or epoch == config.epochs - 1):
                member_acc, ensemble_acc = member_accuracies(
                    self.ensemble, val_features, val_labels, config.eval_batch_size
                )
                record["val_acc_ensemble"] = ensemble_acc
                record["val_acc_member_mean"] = float(member_acc.mean())
                record.update({f"val_acc_member_{m}": float(acc) for m, acc in enumerate(member_acc)})
                bar.set_postfix(epoch=epoch, loss=f"{record['total_loss']:.4f}", val_acc=f"{ensemble_acc:.3f}")
            record["seconds"] = time.perf_counter() - started
            records.append(record)
        bar.close()
        log = pd.DataFrame(records)
        leading = ["epoch", "pass", "frozen", "lr", "steps", "pair_steps", "task_loss", "repulsion", "total_loss"]
        return log[leading + [c for c in log.columns if c not in leading]]

    def _unlabelled(self, unlabelled_features) -> Tensor | None:
        """The unlabelled disagreement set on the training device, checked against the config and the heads."""
        wanted = self.config.disagreement_data == "unlabelled"
        if unlabelled_features is None:
            if wanted:
                raise ValueError(
                    "TrainConfig.disagreement_data is 'unlabelled' but no unlabelled_features were given to fit "
                    "(an (N_u, d) array of the disagreement set)"
                )
            return None
        if not wanted:
            raise ValueError(
                "unlabelled_features were given but TrainConfig.disagreement_data is 'train', so they would be "
                "ignored; set disagreement_data: unlabelled (and hardness: false) to use them"
            )
        unlabelled = torch.as_tensor(unlabelled_features)
        width = self.ensemble.config.feature_dim
        if unlabelled.dim() != 2 or unlabelled.shape[0] < 1 or unlabelled.shape[1] != width:
            raise ValueError(
                f"unlabelled_features must be (N_u, {width}) with N_u >= 1, got shape {tuple(unlabelled.shape)}"
            )
        return unlabelled.to(self.device, torch.float32)

    def _run_epoch(
        self,
        epoch: int,
        frozen: bool,
        features: Tensor,
        labels: Tensor,
        bar: tqdm,
        unlabelled: Tensor | None = None,
        alpha_rows: Tensor | None = None,
    ) -> dict:
        """Run (or, frozen, only measure) one epoch on one pass, advancing ``bar``; returns its losses and counts."""
        config = self.config
        features = features.to(self.device, torch.float32)
        labels = labels.to(self.device, torch.long)
        seed = epoch_seed(config, epoch)
        generator = torch.Generator().manual_seed(seed)
        plans = plan_epoch(config.schedule, features.shape[0], self.ensemble.num_members, config.batch_size, generator)
        if unlabelled is not None:
            far_generator = torch.Generator().manual_seed(seed + UNLABELLED_SEED_OFFSET)
            plans = plan_disagreement(plans, unlabelled.shape[0], config.batch_size, far_generator)
        plans = plans_to(plans, self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        sums = torch.zeros(3, device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        pair_steps = 0
        done = bar.n
        bar.total = done + len(plans) * (config.epochs - epoch)  # epochs ahead are planned alike
        bar.set_postfix(epoch=f"{epoch}/{config.epochs - 1}" + (" (frozen)" if frozen else ""), refresh=False)
        for index, plan in enumerate(plans):
            step_sums = torch.stack(
                self.step(plan, features, labels, update=not frozen, unlabelled=unlabelled, alpha_rows=alpha_rows)
            )
            sums += step_sums
            pair_steps += plan.num_pairs
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(step_sums[0]), index, first_bad)
            if (index + 1) % config.check_every == 0 or index + 1 == len(plans):
                self._raise_if_diverged(int(first_bad), epoch, len(plans), lr)
                bar.set_postfix(epoch=epoch, loss=f"{float(sums[0]) / pair_steps:.4f}", refresh=False)
                bar.update(done + index + 1 - bar.n)
        total, task, repulsion = (sums / max(pair_steps, 1)).tolist()
        return {
            "lr": lr,
            "steps": len(plans),
            "pair_steps": pair_steps,
            "task_loss": task,
            "repulsion": repulsion,
            "total_loss": total,
        }

    @staticmethod
    def _raise_if_diverged(first_bad: int, epoch: int, steps: int, lr: float) -> None:
        if first_bad >= 0:
            raise FloatingPointError(
                f"non-finite training loss at epoch {epoch}, step {first_bad} (of {steps}); the weights are no "
                f"longer usable. Lower the learning rate (now {lr:g}) or check the features for NaN/inf."
            )


def train_ensemble(
    head_config: HeadConfig,
    config: TrainConfig,
    train_features,
    train_labels,
    val_features=None,
    val_labels=None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    initial: HeadEnsemble | None = None,
    unlabelled_features=None,
    alpha_history: list | None = None,
    description: str = "training",
    validate_every_epoch: bool = True,
) -> tuple[HeadEnsemble, pd.DataFrame]:
    """Initialise an ensemble from ``config.seed`` (or from ``initial``) and train it.

    Args:
        head_config: the heads' shape.
        config: hyperparameters.
        train_features: as in `EnsembleTrainer.fit`.
        train_labels: as in `EnsembleTrainer.fit`.
        val_features: as in `EnsembleTrainer.fit`.
        val_labels: as in `EnsembleTrainer.fit`.
        progress: as in `EnsembleTrainer.fit`.
        device: where to train.
        initial: start from these weights (e.g. `HeadEnsemble.from_member_state` of a pretrained head)
            instead of a random draw; its config must equal ``head_config`` but for ``layer_scale_init``.
        unlabelled_features: as in `EnsembleTrainer.fit`.
        alpha_history: as in `EnsembleTrainer.fit`.
        description: as in `EnsembleTrainer.fit`.
        validate_every_epoch: as in `EnsembleTrainer.fit`.

    Returns:
        ``(ensemble, log)``.
    """
    if initial is None:
        ensemble = HeadEnsemble(head_config, generator=torch.Generator().manual_seed(config.seed))
    else:
        differs = {
            key: (value, getattr(initial.config, key))
            for key, value in head_config.to_dict().items()
            if key != "layer_scale_init" and getattr(initial.config, key) != value
        }
        if differs:
            raise ValueError(f"the initial heads do not have the configured shape: (configured, initial) {differs}")
        ensemble = HeadEnsemble._uninitialised(head_config)
        ensemble.load_state_dict(initial.state_dict())
    ensemble = ensemble.to(device)
    log = EnsembleTrainer(ensemble, config).fit(
        train_features,
        train_labels,
        val_features,
        val_labels,
        progress,
        unlabelled_features=unlabelled_features,
        alpha_history=alpha_history,
        description=description,
        validate_every_epoch=validate_every_epoch,
    )
    return ensemble, log
