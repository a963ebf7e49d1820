"""Stage 02: train every model of the run (each seed a replica), or reuse it when nothing changed.

Each model of ``config.models`` is fitted on the cached train passes with
`sedlib.method.train.train_ensemble`, validating on ``val`` (every epoch for the replicas whose training
curves the notebook draws, after the last epoch for the others). Its files are written at once through
`sedlib.rundir.directory.RunDir.writing`: ``models/<name>.safetensors`` (+ JSON sidecar),
``models/<name>_log.csv``, the hardness weights ``models/<name>_alpha.npz`` when it has them
(`sedlib.study.hardness`) and, last, ``models/<name>_train.json`` (what it was trained from:
settings, features and a hash of the training code). A model whose record matches and whose files are
what was written (their content hashes) is loaded instead of retrained; any other is retrained, and
the reason is printed. A training run that fails replaces nothing: the model trained before it, and
its record, stay as they were. Later stages load the models with `load_models`, which verifies them.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sedlib.config import PRETRAINED_HEAD_MODEL, ModelRun, ModelSpec, RunConfig
from sedlib.data.splits import DISAGREEMENT_SPLIT, class_names
from sedlib.device import cpu_cores, resolve_device
from sedlib.errors import TrainingDivergedError
from sedlib.method.ensemble import HeadConfig, HeadEnsemble
from sedlib.method.step_cost import measure_step_cost
from sedlib.method.train import train_ensemble
from sedlib.progress import forward_to, tqdm
from sedlib.rundir.closure import module_code_hash
from sedlib.rundir.declaration import MODEL_FILES
from sedlib.rundir.directory import ArtefactError, RunDir
from sedlib.rundir.provenance import cpu_model
from sedlib.study.cached import SelectedRows, load_pretrained_head, load_split, training_data


@dataclass
class TrainedModel:
    """A trained ensemble with its spec and per-epoch training log (None when loaded by a later stage)."""

    spec: ModelSpec
    ensemble: HeadEnsemble
    log: pd.DataFrame | None
    reused: bool


def head_config(config: RunConfig, spec: ModelSpec, feature_dim: int, num_classes: int) -> HeadConfig:
    """The heads' shape: the params file's ``head`` section plus the cached features' width and classes."""
    head = config.head
    return HeadConfig(
        num_members=spec.num_members,
        feature_dim=feature_dim,
        hidden_dim=head.hidden_dim,
        num_classes=num_classes,
        layer_scale_init=head.layer_scale_init,
        norm_eps=head.norm_eps,
    )


def training_code_hash() -> str:
    """Hash of this module's import closure (`sedlib.rundir.closure`): a change to it retrains, not reuses."""
    return module_code_hash(Path(__file__))


def _training_record(
    config: RunConfig, spec: ModelSpec, heads: HeadConfig, train_hash: str, val_hash: str, curves: bool
) -> dict:
    return {
        "model": spec.name,
        "label": spec.label,
        "heads": heads.to_dict(),
        "head_init": config.head.init,
        "train": json.loads(json.dumps(spec.train.to_dict())),
        "features": {"train": train_hash, "val": val_hash},
        "validated_every_epoch": curves,
        "code": training_code_hash(),
    }


def model_files(run: RunDir, replica) -> list[Path]:
    """The files `train_models` writes for one trained replica, the record last."""
    kinds = ["model", "model_config", "model_log"]
    if replica.spec.train.records_alpha():
        kinds.append("model_alpha")
    kinds.append("model_record")  # last: it marks the replica complete
    return [run.path(kind, replica.name) for kind in kinds]


def train_models(config: RunConfig, run: RunDir, progress: bool = True) -> dict[str, TrainedModel]:
    """Train (or reload, when unchanged and intact) every model of the run, once per seed of ``seeds``.

    A replica is reused when its record (`_training_record`) equals what the params ask for and each of
    its files has the content recorded when it was written; otherwise it is trained, and the line
    printed says why (never trained, which settings changed, or which file is missing or damaged).
    On the CPU the replicas to train are shared out over one worker process per core
    (`training_workers`); each is written as soon as it is trained.

    Returns:
        replica name (`sedlib.config.ModelRun`) -> `TrainedModel`, in the params file's order.

    Raises:
        TrainingDivergedError: a model's loss became non-finite (after the others are trained and written).
    """
    device = resolve_device(config.device)
    train, train_features, train_labels, val = training_data(config, run)
    num_classes = len(class_names(config))
    initial = load_pretrained_head(run) if config.head.init == "pretrained" else None
    unlabelled = None
    if config.data.disagreement_set:
        unlabelled = torch.from_numpy(load_split(config, run, DISAGREEMENT_SPLIT).features.astype("float32"))
    data = _TrainingData(
        train_features, torch.from_numpy(train_labels), torch.from_numpy(val.features.astype("float32")), val.labels,
        unlabelled,
    )  # fmt: skip
    # Validating M members costs as much as hundreds of steps, so only the curves stage 02 draws get it every epoch.
    drawn = {model_run.name for model_run in config.first_replicas()}
    trained, jobs = {}, []
    for model_run in config.model_runs():
        name, spec = model_run.name, model_run.spec
        heads = head_config(config, spec, train_features.shape[-1], num_classes)
        curves = name in drawn
        record = _training_record(config, spec, heads, train.manifest.params_hash, val.manifest.params_hash, curves)
        files = model_files(run, model_run)
        reason = _retrain_reason(run, files, record)
        if reason is None:
            ensemble = HeadEnsemble.load(run.path("model", name), expected=heads, device=device)
            trained[name] = TrainedModel(spec, ensemble, pd.read_csv(run.path("model_log", name)), reused=True)
            tqdm.write(f"{name}: reusing {run.relative(run.path('model', name))} (settings, features and files intact)")
            continue
        tqdm.write(f"{name}: training {spec.label} (M={spec.num_members}, {spec.train.schedule} pairs): {reason}")
        jobs.append(_Job(model_run, heads, _replicated(initial, spec.num_members), curves, record, files))
    diverged = []
    for job, outcome in _fit_jobs(jobs, data, device, progress):
        name, spec = job.model_run.name, job.model_run.spec
        if isinstance(outcome, FloatingPointError):
            diverged.append((jobs.index(job), job, outcome))
            continue
        ensemble, log, alpha_history = outcome
        with run.writing(*job.files) as written:
            temporary = dict(zip(job.files, written, strict=True))
            ensemble.save(temporary[run.path("model", name)])
            log.to_csv(temporary[run.path("model_log", name)], index=False)
            if alpha_history:
                np.savez_compressed(
                    temporary[run.path("model_alpha", name)],
                    alpha=np.stack(alpha_history).astype(np.float16),
                    row_id=train.index[train_features.rows.numpy()],
                    label=train_labels,
                    frozen=log["frozen"].to_numpy(),
                    pass_index=log["pass"].to_numpy(),
                )
            temporary[run.path("model_record", name)].write_text(json.dumps(job.record, indent=2) + "\n")
        tqdm.write(
            f"{name}: trained in {log['seconds'].sum():.0f} s, validation accuracy "
            f"{100 * log['val_acc_ensemble'].iloc[-1]:.1f} %"
        )
        trained[name] = TrainedModel(spec, ensemble.to(device), log, reused=False)
    if diverged:
        diverged.sort(key=lambda failure: failure[0])
        raise _diverged_error(config, diverged) from diverged[0][2]
    return {model_run.name: trained[model_run.name] for model_run in config.model_runs()}


def _diverged_error(config: RunConfig, failures: list) -> TrainingDivergedError:
    """The error of the replicas whose loss became non-finite (``(position, job, error)``, in the params order)."""
    _, job, error = failures[0]
    name, spec = job.model_run.name, job.model_run.spec
    others = [failure[1].model_run.name for failure in failures[1:]]
    message = (
        f"model {name!r} ({spec.label}) diverged: {error} The learning rate is models.{job.model_run.model}.lr (or "
        f"train.lr) in {config.source}."
        + (f" Also diverged: {', '.join(others)}." if others else "")
        + " Every other model is trained and kept"
        + (", and so is the earlier training of this one." if job.files[-1].is_file() else ".")
    )
    return TrainingDivergedError(message)


@dataclass
class _TrainingData:
    """What every replica trains and validates on (`sedlib.method.train.train_ensemble`'s data arguments)."""

    features: SelectedRows
    labels: torch.Tensor
    val_features: torch.Tensor
    val_labels: np.ndarray
    unlabelled: torch.Tensor | None


@dataclass
class _Job:
    """One replica to train, with the record and files `train_models` writes for it."""

    model_run: ModelRun
    heads: HeadConfig
    initial: HeadEnsemble | None
    curves: bool
    record: dict
    files: list[Path]

    @property
    def description(self) -> str:
        return f"{self.model_run.name} (M={self.model_run.spec.num_members})"


def _fit(job: _Job, data: _TrainingData, device, progress: bool):
    """Train one replica: ``(ensemble, log, alpha_history)``, or the `FloatingPointError` of a diverged run."""
    train = job.model_run.spec.train
    alpha_history = []
    try:
        ensemble, log = train_ensemble(
            job.heads,
            train,
            data.features,
            data.labels,
            data.val_features,
            data.val_labels,
            device=device,
            progress=progress,
            initial=job.initial,
            unlabelled_features=data.unlabelled if train.disagreement_data == "unlabelled" else None,
            alpha_history=alpha_history,
            description=job.description,
            validate_every_epoch=job.curves,
        )
    except FloatingPointError as error:
        return error
    return ensemble, log, alpha_history


#: Fewer planned steps than this (all replicas together) train in this process: starting a worker costs seconds.
PARALLEL_MIN_STEPS = 2000


def training_workers(device: torch.device, replicas: int, steps: int) -> int:
    """Processes that train replicas side by side: one per CPU core (at most one per replica), 1 on a GPU.

    A training step of the small heads keeps one core busy but gains little from a second thread, so
    on the CPU replicas train in parallel, each with one thread, rather than one after the other,
    unless the ``steps`` they plan in all are fewer than `PARALLEL_MIN_STEPS`. Training is
    bit-identical either way (the tests check one thread against two).
    """
    if device.type != "cpu" or steps < PARALLEL_MIN_STEPS:
        return 1
    return max(1, min(cpu_cores(), replicas))


def _fit_jobs(jobs: list[_Job], data: _TrainingData, device, progress: bool) -> Iterator[tuple[_Job, object]]:
    """Train the jobs, yielding each with its `_fit` outcome as soon as it is done."""
    steps = {
        job.description: job.model_run.spec.train.epochs
        * -(-data.labels.shape[0] // job.model_run.spec.train.batch_size)
        for job in jobs
    }
    workers = training_workers(device, len(jobs), sum(steps.values()))
    if workers == 1:
        for job in jobs:
            yield job, _fit(job, data, device, progress)
        return
    context = multiprocessing.get_context("spawn")  # a fork of a process running torch threads can deadlock
    bars = context.Queue()
    state, finished = {}, set()  # description -> (steps done, total) as the workers report it; jobs done
    bar = tqdm(total=sum(steps.values()), desc=f"training {len(jobs)} models, {workers} at a time", unit="step",
               disable=not progress)  # fmt: skip

    def redraw() -> None:
        while not bars.empty():
            description, n, total, _postfix = bars.get()
            if description not in finished:  # a bar's last redraw can arrive after its job's result
                state[description] = (n, total or steps[description])
        bar.total = sum(state.get(d, (0, t))[1] for d, t in steps.items())
        bar.update(sum(n for n, _ in state.values()) - bar.n)
        bar.set_postfix_str(", ".join(d.split(" ")[0] for d, (n, total) in state.items() if n < total), refresh=False)

    with context.Pool(workers, _start_worker, (bars if progress else None, data)) as pool:
        done = pool.imap_unordered(_fit_in_worker, enumerate(jobs))
        for _ in jobs:
            while True:
                redraw()
                try:
                    index, outcome = done.next(timeout=0.5)
                    break
                except multiprocessing.TimeoutError:
                    continue
            description = jobs[index].description
            finished.add(description)
            state[description] = (state.get(description, (0, steps[description]))[1],) * 2
            yield jobs[index], outcome
        redraw()
        pool.close()
        pool.join()
    bars.close()
    bars.join_thread()
    bar.close()


_worker_data: _TrainingData | None = None
_worker_progress = False


def _start_worker(bars, data: _TrainingData) -> None:
    global _worker_data, _worker_progress
    # Ctrl-C reaches every process of the terminal's group: the kernel stops the pool, and a worker would only
    # add its own KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    if bars is not None:
        forward_to(bars)
    _worker_data, _worker_progress = data, bars is not None


def _fit_in_worker(indexed: tuple[int, _Job]):
    index, job = indexed
    return index, _fit(job, _worker_data, "cpu", _worker_progress)


def _retrain_reason(run: RunDir, files: list[Path], record: dict) -> str | None:
    """Why a replica must be trained (never trained, changed settings, a missing or damaged file), or None."""
    record_file = files[-1]
    if not record_file.is_file():
        return "never trained in this run directory"
    try:
        previous = json.loads(record_file.read_text())
    except ValueError:
        previous = None
    if not isinstance(previous, dict):
        return f"{run.relative(record_file)} is unreadable"
    if previous != record:
        return f"changed since it was trained: {', '.join(sorted(k for k in record if record[k] != previous.get(k)))}"
    for path in files:
        problem = run.problem(path)
        if problem is not None:
            return problem
    return None


def training_overview(config: RunConfig, models: dict[str, TrainedModel]) -> pd.DataFrame:
    """One row per trained replica: size, schedule, diversity weights, final validation accuracy (%), time."""
    sweep_point = {run.name: run.model in config.sweep_models for run in config.model_runs()}
    return pd.DataFrame(
        [
            {
                "Model": model.spec.label,
                "M": model.spec.num_members,
                "schedule": model.spec.train.schedule,
                "λ": model.spec.train.lam,
                "κ": model.spec.train.kappa,
                "epochs": model.spec.train.epochs,
                "val acc ensemble": f"{100 * model.log['val_acc_ensemble'].iloc[-1]:.1f}",
                "val acc member mean": f"{100 * model.log['val_acc_member_mean'].iloc[-1]:.1f}",
                "train seconds": f"{model.log['seconds'].sum():.1f}",
                "sweep point": "yes" if sweep_point[name] else "",
            }
            for name, model in models.items()
        ]
    )


def main_logs(config: RunConfig, models: dict[str, TrainedModel]) -> dict[str, pd.DataFrame]:
    """Label -> training log of each main model's first seed (the curves stage 02 draws; no sweep points)."""
    return {model_run.label: models[model_run.name].log for model_run in config.first_replicas()}


#: The ensemble sizes whose step cost stage 02 measures (`measure_study_step_cost`): the paper's "O(1) per step".
STEP_COST_MEMBERS = (2, 20)


def step_cost_model(config: RunConfig) -> str:
    """The model whose heads and settings the step-cost measurement uses.

    The model the ``num_members`` sweep varies, else the first with a diversity term (``lam`` > 0) on
    pairs, else the first model.
    """
    sweep = config.sweeps.get("num_members")
    if sweep is not None:
        return sweep.model
    diverse = [name for name in config.main_models() if name in config.models and config.models[name].train.lam > 0]
    paired = [name for name in diverse if config.models[name].train.schedule != "independent"]
    return next(iter(paired), next(name for name in config.main_models() if name in config.models))


def measure_study_step_cost(config: RunConfig, models: dict[str, TrainedModel]) -> tuple[pd.DataFrame, str, str]:
    """Time a training step of `step_cost_model` at each of `STEP_COST_MEMBERS`, ``iid`` and ``all``.

    Runs `sedlib.method.step_cost.measure_step_cost` on the study's device with the model's heads and
    training settings; on the CPU with one thread, as each training worker uses.

    Returns:
        ``(times, model, where)``: the measured rows, the model's name, and the device in words.
    """
    name = step_cost_model(config)
    trained = models[next(run.name for run in config.model_runs() if run.model == name)]
    device = resolve_device(config.device)
    threads = 1 if device.type == "cpu" else None
    times = measure_step_cost(
        trained.ensemble.config, trained.spec.train, STEP_COST_MEMBERS, rounds=7, seconds=0.1, min_steps=1,
        warmup_steps=1, device=device, threads=threads,
    )  # fmt: skip
    where = f"{cpu_model()}, one thread" if threads else torch.cuda.get_device_name(device)
    return times, name, where


def _replicated(head: HeadEnsemble | None, members: int) -> HeadEnsemble | None:
    """M copies of a one-member ensemble (``head.init: pretrained``), or None."""
    if head is None:
        return None
    state = {name: p[0] for name, p in head.named_parameters()}
    return HeadEnsemble.from_member_state(state, members, head.config.norm_eps)


def load_models(config: RunConfig, run: RunDir) -> dict[str, TrainedModel]:
    """Load the models stage 02 wrote, checking that each was trained with the current settings.

    With ``eval.pretrained_head`` the backbone's own head comes first, as a one-member model named
    ``pretrained_head`` ("row zero").

    Returns:
        replica name (`sedlib.config.ModelRun`) -> `TrainedModel`.
    """
    device = resolve_device(config.device)
    models = {}
    for model_run in config.model_runs(pretrained_head=True):
        name, spec = model_run.name, model_run.spec
        if name == PRETRAINED_HEAD_MODEL:
            models[name] = TrainedModel(spec, load_pretrained_head(run, device), None, True)
            continue
        record_path = run.path("model_record", name)
        if not record_path.is_file():
            raise ArtefactError(
                f"model {name!r} was not trained: {run.relative(record_path)} is missing. {run.remedy(record_path)}"
            )
        for kind in MODEL_FILES:
            run.verified(run.path(kind, name))
        record = json.loads(record_path.read_text())
        if record.get("train") != json.loads(json.dumps(spec.train.to_dict())) or record.get("label") != spec.label:
            raise ArtefactError(
                f"{run.relative(run.path('model', name))} was trained with other settings than {config.source} now "
                f"gives for models.{model_run.model}. {run.remedy(record_path)}"
            )
        if record.get("code") != training_code_hash():
            raise ArtefactError(
                f"{run.relative(run.path('model', name))} was trained by another version of the training code "
                f"(sedlib.study.models and the modules it imports). {run.remedy(record_path)}"
            )
        ensemble = HeadEnsemble.load(run.path("model", name), expected=HeadConfig(**record["heads"]), device=device)
        models[name] = TrainedModel(spec, ensemble, None, reused=True)
    return models
