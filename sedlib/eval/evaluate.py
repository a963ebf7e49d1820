"""Streamed evaluation of an ensemble on one split of cached features.

Member logits are computed once per batch and everything is derived from them: accuracy of every
member, of the ensemble (argmax of the mean of logits, as published) and of the uniform weight
soup, calibration of the ensemble, and every per-sample score of `sedlib.eval.scores`. Only per-sample
values are kept, never the ``(M, N, C)`` logits, so N can be millions of rows. ``features`` may be
anything that slices into rows (a tensor, a NumPy array, an h5py dataset).

Test sets that cover a subset of the classes (ImageNet-A / -R) take a ``class_subset`` and one of
the two protocols of `sedlib.eval.protocols`: ``"standard"`` restricts the logits to the subset before
anything else; ``"faithful"`` scores members, soup and ensemble as the published code does (1000-way
argmax mapped into the subset, plurality vote over the in-subset votes).

Example:
    >>> from sedlib.method.ensemble import HeadConfig
    >>> ens = HeadEnsemble(HeadConfig(num_members=2, feature_dim=4, hidden_dim=8, num_classes=3))
    >>> result = evaluate_split(ens, torch.randn(10, 4), torch.randint(0, 3, (10,)))
    >>> sorted(result.summary())[:3]
    ['best_single', 'brier', 'ece']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from sedlib.errors import MissingFileError, StaleEvaluationsError
from sedlib.eval.metrics import ECE_BINS, accuracy, calibration_terms, ece_bins, expected_calibration_error
from sedlib.eval.protocols import (
    check_class_subset,
    check_protocol,
    faithful_member_predictions,
    faithful_vote,
    standard_logits,
)
from sedlib.eval.scores import compute_scores
from sedlib.method.ensemble import HeadEnsemble
from sedlib.progress import tqdm


def _device(ensemble: HeadEnsemble) -> torch.device:
    return next(ensemble.parameters()).device


def iter_batches(features, batch_size: int, device: torch.device) -> Iterator[tuple[slice, Tensor]]:
    """Rows of ``features`` batch by batch as float32 tensors on ``device``.

    Args:
        features: ``(N, d)`` rows, sliceable (tensor, NumPy array, h5py dataset).
        batch_size: rows per batch.
        device: where the batches go.

    Yields:
        ``(rows, batch)`` with ``rows`` the slice of the batch and ``batch`` ``(b, d)``.
    """
    for start in range(0, len(features), batch_size):
        rows = slice(start, min(start + batch_size, len(features)))
        yield rows, torch.as_tensor(features[rows]).to(device=device, dtype=torch.float32)


@torch.no_grad()
def member_accuracies(ensemble: HeadEnsemble, features, labels, batch_size: int = 1024) -> tuple[np.ndarray, float]:
    """Accuracy of each member and of the ensemble (argmax of the mean logit) on the labelled rows.

    Returns:
        ``(member_accuracy (M,), ensemble_accuracy)``.
    """
    device = _device(ensemble)
    labels = torch.as_tensor(labels).to(device)
    member_correct = torch.zeros(ensemble.num_members, device=device)
    ensemble_correct = torch.zeros((), device=device)
    for rows, batch in iter_batches(features, batch_size, device):
        logits, target = ensemble(batch), labels[rows]
        member_correct += (logits.argmax(dim=-1) == target).sum(dim=1)
        ensemble_correct += (logits.mean(dim=0).argmax(dim=-1) == target).sum()
    labelled = int((labels >= 0).sum())
    return (member_correct / labelled).cpu().numpy(), float(ensemble_correct / labelled)


@dataclass
class SplitEvaluation:
    """Results of `evaluate_split`.

    Attributes:
        member_accuracy: ``(M,)`` accuracy of each member (NaN without labels).
        samples: one row per sample: ``label``, ``ensemble_prediction``, ``soup_prediction`` (-1 =
            no prediction, always wrong), ``ensemble_confidence``, ``nll`` and ``brier`` of the
            ensemble (NaN without a label), one column per score of `sedlib.eval.scores.SCORES`, and
            under the faithful protocol with a class subset ``votes_in_subset``, the number of
            members whose 1000-way prediction lies in the subset.
            The soup's ``soup_confidence``, ``soup_nll`` and ``soup_brier`` follow, and with a greedy
            soup its ``greedy_soup_prediction``.
        protocol: the protocol of `sedlib.eval.protocols` the split was evaluated with (it only makes a
            difference with a class subset).
        class_subset: ``(K,)`` class indices the split was restricted to, or None for all classes.
        member_calibration: ``ece``, ``nll`` and ``brier`` of each member, ``(M,)`` each (NaN without
            labels).
        greedy_members: the members of the greedy soup, if one was evaluated.
    """

    member_accuracy: np.ndarray
    samples: pd.DataFrame
    protocol: str = "standard"
    class_subset: np.ndarray | None = None
    member_calibration: dict[str, np.ndarray] | None = None
    greedy_members: tuple[int, ...] | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.samples["label"].to_numpy()

    @property
    def ensemble_accuracy(self) -> float:
        return accuracy(self.samples["ensemble_prediction"], self.labels)

    @property
    def soup_accuracy(self) -> float:
        return accuracy(self.samples["soup_prediction"], self.labels)

    @property
    def best_single(self) -> float:
        """Accuracy of the best member on this split (an oracle: it looks at the test labels)."""
        return float(np.max(self.member_accuracy))

    @property
    def mean_single(self) -> float:
        return float(np.mean(self.member_accuracy))

    def calibration(self) -> dict[str, dict[str, float]]:
        """ECE (15 equal-width bins), mean NLL and mean Brier score of the ensemble, the soup and the mean member.

        Returns:
            ``{"ensemble": {...}, "soup": {...}, "mean_member": {...}}``, each with keys ``ece``,
            ``nll``, ``brier`` (NaN without labels).
        """
        labelled = self.samples[self.samples["label"] >= 0]
        result = {}
        for name, prefix, prediction in (("ensemble", "", "ensemble_prediction"), ("soup", "soup_", "soup_prediction")):
            confidence = labelled["ensemble_confidence" if name == "ensemble" else "soup_confidence"]
            result[name] = {
                "ece": (
                    expected_calibration_error(confidence, labelled[prediction] == labelled["label"])
                    if len(labelled)
                    else float("nan")
                ),
                "nll": float(labelled[f"{prefix}nll"].mean()),
                "brier": float(labelled[f"{prefix}brier"].mean()),
            }
        members = self.member_calibration or {}
        result["mean_member"] = {key: float(np.mean(members.get(key, np.nan))) for key in ("ece", "nll", "brier")}
        return result

    def summary(self) -> dict[str, float]:
        """Accuracies, calibration of the ensemble and the mean of every score, in one flat dict."""
        labelled = self.samples[self.samples["label"] >= 0]
        summary = {
            "ensemble": self.ensemble_accuracy,
            "soup": self.soup_accuracy,
            "best_single": self.best_single,
            "mean_single": self.mean_single,
            "ece": (
                expected_calibration_error(
                    labelled["ensemble_confidence"], labelled["ensemble_prediction"] == labelled["label"]
                )
                if len(labelled)
                else float("nan")
            ),
            "nll": float(labelled["nll"].mean()),
            "brier": float(labelled["brier"].mean()),
        }
        summary.update({f"member_{m}": float(acc) for m, acc in enumerate(self.member_accuracy)})
        score_columns = [c for c in self.samples.columns if c not in _SAMPLE_COLUMNS]
        summary.update({f"mean_{name}": float(self.samples[name].mean()) for name in score_columns})
        if "votes_in_subset" in self.samples.columns:
            summary["mean_votes_in_subset"] = float(self.samples["votes_in_subset"].mean())
        return summary


_SAMPLE_COLUMNS = (
    "label",
    "ensemble_prediction",
    "soup_prediction",
    "greedy_soup_prediction",
    "ensemble_confidence",
    "nll",
    "brier",
    "soup_confidence",
    "soup_nll",
    "soup_brier",
    "votes_in_subset",
)


@torch.no_grad()
def greedy_soup_members(ensemble: HeadEnsemble, features, labels, batch_size: int = 1024) -> tuple[int, ...]:
    """The members of a greedy soup (Wortsman et al., *Model soups*, ICML 2022, https://arxiv.org/abs/2203.05482).

    Members are taken in order of decreasing accuracy on the given (validation) rows; each is kept if
    the uniform weight average of the kept members with it is at least as accurate as without it.

    Args:
        ensemble: M heads.
        features: ``(N, d)`` validation rows.
        labels: ``(N,)`` their classes.
        batch_size: rows per batch.

    Returns:
        The kept members' indices, in the order they were added.
    """
    member_accuracy, _ = member_accuracies(ensemble, features, labels, batch_size)
    order = np.argsort(-member_accuracy, kind="stable")
    kept, best = [int(order[0])], float(member_accuracy[order[0]])
    for member in order[1:]:
        candidate = [*kept, int(member)]
        accuracy_with = float(member_accuracies(ensemble.soup(candidate), features, labels, batch_size)[0][0])
        if accuracy_with >= best:
            kept, best = candidate, accuracy_with
    return tuple(kept)


@torch.no_grad()
def evaluate_split(
    ensemble: HeadEnsemble,
    features,
    labels=None,
    batch_size: int = 1024,
    scores: list[str] | None = None,
    progress: bool = True,
    class_subset=None,
    protocol: str = "standard",
    greedy_members: tuple[int, ...] | None = None,
) -> SplitEvaluation:
    """Evaluate an ensemble, its soup and every per-sample score on one split, streaming over batches.

    With ``class_subset`` (ImageNet-A / -R), ``labels`` are positions 0..K-1 in the subset and
    ``protocol`` (see `sedlib.eval.protocols`) decides how predictions are made:

    * ``"standard"``: member and soup logits are restricted to the K subset columns before
      everything: member accuracy, the ensemble (mean of the restricted logits), the soup, the
      confidence, NLL and Brier score, and every score.
    * ``"faithful"``: as the published code. Member accuracy and the soup's prediction use the
      1000-way argmax mapped into the subset (-1, wrong, outside it); ``ensemble_prediction`` is the
      plurality vote over the in-subset votes (-1 when there are none); the column
      ``votes_in_subset`` counts the members whose vote lies in the subset. The confidence, NLL,
      Brier score and the scores are computed on the restricted logits, as under ``"standard"``.
      (The published code computes its scores on the members' one-hot votes instead; of those,
      only its diversity rows reach the tables, and they are not reproduced here.)

    Without ``class_subset`` both protocols give the same, full-class results.

    Args:
        ensemble: M heads.
        features: ``(N, d)`` sliceable rows.
        labels: ``(N,)`` class ids (subset positions with ``class_subset``), ``-1`` (or None for
            all) where a sample has no label (OOD sets).
        batch_size: rows per batch.
        scores: names from `sedlib.eval.scores.SCORES`; all when omitted.
        progress: show a tqdm bar over the batches.
        class_subset: optional ``(K,)`` sorted, unique class indices in [0, C) the split covers.
        protocol: ``"standard"`` or ``"faithful"`` (`sedlib.eval.protocols.PROTOCOLS`).
        greedy_members: also evaluate the soup of these members (`greedy_soup_members`).

    Returns:
        A `SplitEvaluation`.

    Raises:
        ValueError: unknown protocol, malformed ``class_subset``, labels that do not match the
            features or (with a subset) are not subset positions.
    """
    check_protocol(protocol)
    n = len(features)
    labels = (
        np.full(n, -1, dtype=np.int64) if labels is None else torch.as_tensor(labels).cpu().numpy().astype(np.int64)
    )
    if labels.shape != (n,):
        raise ValueError(f"labels have shape {labels.shape}, expected ({n},) to match the features")
    device = _device(ensemble)
    mask = None
    if class_subset is not None:
        mask = check_class_subset(class_subset, ensemble.config.num_classes).to(device)
        if n and labels.max() >= mask.numel():
            raise ValueError(
                f"with a class_subset of {mask.numel()} classes the labels must be subset positions "
                f"0..{mask.numel() - 1} (-1 for none), found {labels.max()}; map class ids to positions with "
                f"np.searchsorted(class_subset, ids)"
            )
    faithful = mask is not None and protocol == "faithful"
    soups = {"soup": ensemble.soup()}
    if greedy_members is not None:
        soups["greedy_soup"] = ensemble.soup(list(greedy_members))
    members = ensemble.num_members
    member_correct = torch.zeros(members, device=device)
    member_sums = torch.zeros(2, members, device=device, dtype=torch.float64)  # NLL, Brier
    member_bins = torch.zeros(3, members, ECE_BINS, device=device, dtype=torch.float64)  # count, confidence, correct
    columns: dict[str, list[Tensor]] = {}
    batches = tqdm(
        iter_batches(features, batch_size, device),
        total=-(-n // batch_size),
        desc="evaluate",
        disable=not progress,
        leave=False,
    )

    def predict(logits: Tensor) -> Tensor:
        """``(k, B, C)`` -> ``(k, B)`` predictions under the protocol (subset positions with a subset)."""
        if mask is None:
            return logits.argmax(dim=-1)
        if faithful:
            return faithful_member_predictions(logits, mask)
        return standard_logits(logits, mask).argmax(dim=-1)

    for rows, batch in batches:
        full_logits, target = ensemble(batch), torch.as_tensor(labels[rows], device=device)
        full_soups = {name: soup(batch) for name, soup in soups.items()}
        member_predictions = predict(full_logits)
        logits = full_logits if mask is None else standard_logits(full_logits, mask)
        soup_logits = full_soups["soup"][0] if mask is None else standard_logits(full_soups["soup"][0], mask)
        has_label = target >= 0
        safe_target = target.clamp_min(0)
        member_correct += ((member_predictions == target) & has_label).sum(dim=1)
        mean_logits = logits.mean(dim=0)
        nan = torch.full_like(mean_logits[:, 0], float("nan"))
        confidence, nll, brier = calibration_terms(mean_logits, safe_target)
        soup_confidence, soup_nll, soup_brier = calibration_terms(soup_logits, safe_target)
        batch_columns = {
            "ensemble_prediction": (
                faithful_vote(member_predictions, logits.shape[-1]) if faithful else mean_logits.argmax(dim=-1)
            ),
            "soup_prediction": predict(full_soups["soup"])[0],
            "ensemble_confidence": confidence,
            "nll": torch.where(has_label, nll, nan),
            "brier": torch.where(has_label, brier, nan),
            "soup_confidence": soup_confidence,
            "soup_nll": torch.where(has_label, soup_nll, nan),
            "soup_brier": torch.where(has_label, soup_brier, nan),
        }
        if "greedy_soup" in soups:
            batch_columns["greedy_soup_prediction"] = predict(full_soups["greedy_soup"])[0]
        if faithful:
            batch_columns["votes_in_subset"] = (member_predictions >= 0).sum(dim=0)
        member_confidence, member_nll, member_brier = calibration_terms(logits, safe_target)
        weight = has_label.to(torch.float64)
        member_sums += torch.stack([member_nll, member_brier]).double().mul(weight).sum(dim=-1)
        bins = ece_bins(member_confidence)
        hits = (logits.argmax(dim=-1) == target).double()
        for k, values in enumerate((torch.ones_like(hits), member_confidence.double(), hits)):
            member_bins[k].scatter_add_(1, bins, values * weight)
        batch_columns.update(compute_scores(logits, scores))
        for name, values in batch_columns.items():
            columns.setdefault(name, []).append(values.cpu())
    labelled = int((labels >= 0).sum())
    member_accuracy = member_correct.cpu().numpy() / labelled if labelled else np.full(members, np.nan)
    if labelled:
        gaps = (member_bins[2] - member_bins[1]).abs().sum(dim=1) / labelled
        calibration = {"ece": gaps, "nll": member_sums[0] / labelled, "brier": member_sums[1] / labelled}
        member_calibration = {key: value.cpu().numpy() for key, value in calibration.items()}
    else:
        member_calibration = {key: np.full(members, np.nan) for key in ("ece", "nll", "brier")}
    samples = pd.DataFrame({"label": labels, **{name: torch.cat(parts).numpy() for name, parts in columns.items()}})
    return SplitEvaluation(
        member_accuracy=member_accuracy,
        samples=samples,
        protocol=protocol,
        class_subset=None if mask is None else mask.cpu().numpy(),
        member_calibration=member_calibration,
        greedy_members=None if greedy_members is None else tuple(greedy_members),
    )


EVALUATIONS_FORMAT = "sedlib.evaluations/1"


def save_evaluations(path, evaluations: dict[tuple[str, str], SplitEvaluation], fingerprint: str) -> None:
    """Write ``(model, split) -> SplitEvaluation`` to one HDF5 file, every column with its own dtype.

    The file is written beside ``path`` and renamed over it when complete, so a reader never sees a
    half-written file.

    Args:
        path: the ``.h5`` file.
        evaluations: what `sedlib.study.predictions.evaluate_models` returns.
        fingerprint: what the evaluations were made from (`sedlib.study.predictions.evaluation_fingerprint`),
            checked by `load_evaluations`.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with h5py.File(partial, "w") as handle:
        handle.attrs["format"] = EVALUATIONS_FORMAT
        handle.attrs["fingerprint"] = fingerprint
        handle.attrs["splits"] = list(dict.fromkeys(split for _, split in evaluations))
        handle.attrs["entries"] = [f"{model}/{split}" for model, split in evaluations]  # HDF5 sorts groups
        for (model, split), evaluation in evaluations.items():
            group = handle.create_group(f"{model}/{split}")
            group.attrs["protocol"] = evaluation.protocol
            group.create_dataset("member_accuracy", data=evaluation.member_accuracy)
            if evaluation.class_subset is not None:
                group.create_dataset("class_subset", data=evaluation.class_subset)
            if evaluation.greedy_members is not None:
                group.create_dataset("greedy_members", data=np.asarray(evaluation.greedy_members, dtype=np.int64))
            for key, values in (evaluation.member_calibration or {}).items():
                group.create_dataset(f"member_calibration/{key}", data=values)
            samples = group.create_group("samples")
            samples.attrs["columns"] = list(evaluation.samples.columns)
            for column in evaluation.samples.columns:
                samples.create_dataset(column, data=evaluation.samples[column].to_numpy())
    partial.replace(path)


def stored_splits(path) -> list[str]:
    """The splits a file of `save_evaluations` holds.

    Raises:
        FileNotFoundError: no such file (the message says which stage writes it).
        StaleEvaluationsError: not a file of evaluations.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no stored evaluations; run notebooks/03_eval_ood_gen first")
    try:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("format") != EVALUATIONS_FORMAT:
                raise StaleEvaluationsError(f"{path} is not a file of evaluations ({EVALUATIONS_FORMAT}); rerun 03")
            return [str(split) for split in handle.attrs["splits"]]
    except OSError as error:
        raise StaleEvaluationsError(f"{path} cannot be read ({error}); rerun notebooks/03_eval_ood_gen") from error


def load_evaluations(path, fingerprint: str) -> dict[tuple[str, str], SplitEvaluation]:
    """Read what `save_evaluations` wrote, refusing a file made from anything else.

    Raises:
        FileNotFoundError: no such file (the message says which stage writes it).
        StaleEvaluationsError: the file's fingerprint differs from ``fingerprint``, or it is not a
            readable file of evaluations.
    """
    path = Path(path)
    stored_splits(path)
    with h5py.File(path, "r") as handle:
        if handle.attrs.get("fingerprint") != fingerprint:
            raise StaleEvaluationsError(
                f"{path} was made from other models, features or evaluation settings than the run now has; "
                "rerun notebooks/03_eval_ood_gen"
            )
        evaluations = {}
        for entry in handle.attrs["entries"]:
            model, split = str(entry).split("/")
            group = handle[entry]
            samples, calibration = group["samples"], group.get("member_calibration")
            evaluations[model, split] = SplitEvaluation(
                member_accuracy=group["member_accuracy"][()],
                samples=pd.DataFrame({column: samples[column][()] for column in samples.attrs["columns"]}),
                protocol=str(group.attrs["protocol"]),
                class_subset=group["class_subset"][()] if "class_subset" in group else None,
                member_calibration=None if calibration is None else {k: v[()] for k, v in calibration.items()},
                greedy_members=tuple(group["greedy_members"][()].tolist()) if "greedy_members" in group else None,
            )
    return evaluations
