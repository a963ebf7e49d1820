"""Post-hoc feature-based OOD detectors, fitted on training data only, beside the ensemble scores.

Each detector is a small class: ``fit(...)`` on the **training** rows returns the detector, and
``score(features)`` maps any ``(N, d)`` rows to ``(N,)`` float64 scores, **higher = more OOD**
(every class has ``higher_is_ood = True``). Nothing about the rows being scored enters the fit, so
a row's score does not depend on the other rows it is scored with. Work is done in float64 torch on
``device`` (CPU by default), ``batch_size`` rows at a time, so inputs may be memory-mapped caches of
a few hundred thousand rows (float16/32) and no ``N x N_train`` matrix is built at once.

Detectors, sources and what they are fitted on:

* `Mahalanobis`: Lee, Lee, Lee & Shin, *A Simple Unified Framework for Detecting
  Out-of-Distribution Samples and Adversarial Attacks*, NeurIPS 2018
  (https://arxiv.org/abs/1807.03888). Class means and one tied covariance of train features and
  labels; score ``min_c (x - mu_c)^T Sigma^+ (x - mu_c)``.
* `RelativeMahalanobis` (RMD): Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, *A Simple Fix to
  Mahalanobis Distance for Improving Near-OOD Detection*, 2021 (https://arxiv.org/abs/2106.09022).
  As `Mahalanobis`, minus the distance ``MD_0`` to one Gaussian fitted on all train features.
* `KNN`: Sun, Ming, Zhu & Li, *Out-of-Distribution Detection with Deep Nearest Neighbors*, ICML
  2022 (https://arxiv.org/abs/2204.06507). Distance from the L2-normalised feature to its k-th
  nearest L2-normalised train feature; labels are not used.
* `ViM`: Wang, Li, Feng & Zhang, *ViM: Out-Of-Distribution with Virtual-logit Matching*, CVPR 2022
  (https://arxiv.org/abs/2203.10807, code https://github.com/haoqiwang/vim). The norm of the
  feature's residual outside the principal subspace of the train features, scaled into a virtual
  logit and compared with the classifier's energy; needs the classifier's input features and its
  weights.

How they apply to SED's ensembles. The members of a `sedlib.method.ensemble.HeadEnsemble` are heads on one
frozen backbone, so `Mahalanobis`, `RelativeMahalanobis` and `KNN` are fitted on the cached
backbone features ``h`` (with the train labels where needed) and give one score per image shared by
every ensemble built on that backbone: they are the feature-space baselines the ensemble scores of
`sedlib.eval.scores` (PDS, BMA, ...) should beat. `ViM` needs **one** linear classifier: use
`penultimate_features` (the LayerNorm output that a head feeds to its linear layer) and
`linear_head` of one member or of the weight soup (`HeadEnsemble.soup`), or of the backbone's own
head.

Example:
    >>> rng = np.random.default_rng(0)
    >>> train, labels = rng.normal(size=(200, 4)) + 5 * np.eye(4)[np.arange(200) % 4], np.arange(200) % 4
    >>> detector = Mahalanobis().fit(train, labels)
    >>> near, far = detector.score(np.array([[5.0, 0, 0, 0], [-20.0, 20, -20, 20]]))
    >>> bool(far > near)
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from sedlib.method.ensemble import HeadEnsemble

KNN_NORM_EPS = 1e-10
"""Added to the feature norm before dividing by it, as in the official KNN code."""


def _matrix_shape(features: Any, name: str, width: int | None = None) -> tuple[int, int]:
    """``(N, d)`` of a 2-D array or tensor, after checking the width against ``width``."""
    shape = tuple(getattr(features, "shape", ()))
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D (N, d) array, got shape {shape}")
    if width is not None and shape[1] != width:
        raise ValueError(f"{name} have width {shape[1]}, but the detector was fitted on features of width {width}")
    return int(shape[0]), int(shape[1])


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _batches(
    features: Any, batch_size: int, device: torch.device, rows: np.ndarray | None = None
) -> Iterator[tuple[slice, Tensor]]:
    """Consecutive chunks of ``features`` (or of ``features[rows]``) as float64 tensors on ``device``."""
    total = features.shape[0] if rows is None else len(rows)
    for start in range(0, total, batch_size):
        chunk = slice(start, min(start + batch_size, total))
        values = features[chunk] if rows is None else features[rows[chunk]]
        if isinstance(values, Tensor):
            tensor = values.detach()
        else:
            array = np.asarray(values)
            if not array.flags.writeable:  # a read-only memory map: torch wants writable memory
                array = array.astype(np.float64)
            tensor = torch.from_numpy(array)
        yield chunk, tensor.to(device=device, dtype=torch.float64)


def _fit_rows(features: Any, name: str, batch_size: int, device: torch.device) -> Iterator[tuple[slice, Tensor]]:
    """Like `_batches`, refusing non-finite training values."""
    for chunk, x in _batches(features, batch_size, device):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} rows {chunk.start}..{chunk.stop - 1} contain NaN or inf")
        yield chunk, x


def _whitening(covariance: Tensor, ridge: float) -> Tensor:
    """``(d, r)`` matrix ``A`` with ``A A^T = pinv(covariance + ridge I)``, r its numerical rank.

    Eigenvalues at or below ``d * eps * max eigenvalue`` count as zero (NumPy's ``pinv`` cut-off),
    so a singular covariance measures distances inside the span of the train features only.
    """
    d = covariance.shape[0]
    values, vectors = torch.linalg.eigh(
        covariance + ridge * torch.eye(d, dtype=covariance.dtype, device=covariance.device)
    )
    keep = values > values.max().clamp_min(0) * d * torch.finfo(values.dtype).eps
    if not keep.any():
        raise ValueError("the covariance of the train features is zero; all train rows coincide with their means")
    return vectors[:, keep] / values[keep].sqrt()


def _squared_distances(z: Tensor, centres: Tensor) -> Tensor:
    """``(B, K)`` squared Euclidean distances between the rows of ``z`` and ``centres``."""
    squared = (z * z).sum(dim=1, keepdim=True) + (centres * centres).sum(dim=1) - 2.0 * z @ centres.T
    return squared.clamp_min(0.0)


def _check_labels(labels: Any, rows: int, name: str) -> np.ndarray:
    if labels is None:
        raise ValueError(f"{name} needs the class labels of the train rows (got labels=None)")
    labels = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if labels.shape != (rows,):
        raise ValueError(f"{name} needs one label per train row: {rows} rows, labels of shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if (labels < 0).any():
        raise ValueError(f"labels must be >= 0; {(labels < 0).sum()} train rows have none (negative labels)")
    return labels


class Mahalanobis:
    """Minimum Mahalanobis distance to the class means under one tied covariance (Lee et al. 2018).

    ``score(x) = min_c (x - mu_c)^T Sigma^+ (x - mu_c)``, higher = more OOD, with ``mu_c`` the mean
    of the train rows of class c and ``Sigma = 1/N sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T`` (the
    maximum-likelihood tied covariance, as sklearn's ``EmpiricalCovariance`` in the official code).
    ``Sigma^+`` is the pseudo-inverse of ``Sigma + ridge * I``: a singular covariance works and
    then measures distances within the span of the train features. Lee et al. report the negated
    distance (a confidence) and add input pre-processing and layer ensembles, which are not used
    here (as in the ViM and OpenOOD benchmarks).

    Args:
        ridge: added to the covariance's diagonal before the pseudo-inverse (0: plain pseudo-inverse).
        batch_size: rows per chunk when fitting and scoring.
        device: where the float64 work happens.

    Attributes:
        classes_: ``(C,)`` the train labels present, in the order of ``means_``.
        means_: ``(C, d)`` class means.
        covariance_: ``(d, d)`` tied covariance.
        rank_: numerical rank of ``covariance_ + ridge * I``.
    """

    name = "mahalanobis"
    label = "Mahalanobis"
    higher_is_ood = True

    def __init__(self, ridge: float = 0.0, batch_size: int = 4096, device: str | torch.device = "cpu") -> None:
        if not ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {ridge!r}")
        self.ridge = float(ridge)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.device = torch.device(device)
        self._fitted = False

    def fit(self, features: Any, labels: Any) -> Mahalanobis:
        """Fit class means and the tied covariance.

        Args:
            features: ``(N, d)`` train features (array, memory map or tensor).
            labels: ``(N,)`` integer class labels, all >= 0.

        Returns:
            self.

        Raises:
            ValueError: labels missing, of the wrong length or negative; features not 2-D or not finite.
        """
        rows, d = _matrix_shape(features, "train features")
        labels = _check_labels(labels, rows, type(self).__name__)
        self.classes_, inverse = np.unique(labels, return_inverse=True)
        index = torch.from_numpy(inverse.reshape(-1)).to(self.device)
        counts = torch.bincount(index, minlength=len(self.classes_)).to(torch.float64)
        sums = torch.zeros(len(self.classes_), d, dtype=torch.float64, device=self.device)
        for chunk, x in _fit_rows(features, "train features", self.batch_size, self.device):
            sums.index_add_(0, index[chunk], x)
        means = sums / counts[:, None]
        scatter = torch.zeros(d, d, dtype=torch.float64, device=self.device)
        for chunk, x in _batches(features, self.batch_size, self.device):
            residual = x - means[index[chunk]]
            scatter += residual.T @ residual
        self._fit_from_moments(means, counts, scatter / rows)
        return self

    def _fit_from_moments(self, means: Tensor, counts: Tensor, covariance: Tensor) -> None:
        self.means_ = means.cpu().numpy()
        self.covariance_ = covariance.cpu().numpy()
        self._centre = (counts @ means) / counts.sum()  # the train mean; keeps the whitened values small
        self._whiten = _whitening(covariance, self.ridge)
        self.rank_ = int(self._whiten.shape[1])
        self._whitened_means = (means - self._centre) @ self._whiten
        self._width = int(means.shape[1])
        self._fitted = True

    def _check_fitted(self, features: Any) -> int:
        if not self._fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit on the train features first")
        return _matrix_shape(features, "features", self._width)[0]

    def _class_distance(self, x: Tensor) -> Tensor:
        """``(B,)`` min over classes of the squared Mahalanobis distance."""
        z = (x - self._centre) @ self._whiten
        return _squared_distances(z, self._whitened_means).amin(dim=1)

    def score(self, features: Any) -> np.ndarray:
        """Minimum squared Mahalanobis distance to a class mean.

        Args:
            features: ``(N, d)`` rows to score.

        Returns:
            ``(N,)`` float64, higher = more OOD.
        """
        scores = np.empty(self._check_fitted(features))
        for chunk, x in _batches(features, self.batch_size, self.device):
            scores[chunk] = self._row_scores(x).cpu().numpy()
        return scores

    def _row_scores(self, x: Tensor) -> Tensor:
        return self._class_distance(x)


class RelativeMahalanobis(Mahalanobis):
    """Relative Mahalanobis distance, RMD (Ren et al. 2021).

    ``score(x) = min_c [MD_c(x) - MD_0(x)] = min_c MD_c(x) - MD_0(x)``, higher = more OOD, with
    ``MD_c`` the class distances of `Mahalanobis` and ``MD_0(x) = (x - mu_0)^T Sigma_0^+ (x - mu_0)``
    the distance to one Gaussian fitted on all train features (their mean ``mu_0`` and covariance
    ``Sigma_0 = 1/N sum_i (x_i - mu_0)(x_i - mu_0)^T``, obtained as the tied covariance plus the
    between-class scatter of the means). Same arguments and pseudo-inverse/ridge as `Mahalanobis`.

    Attributes:
        classes_, means_, covariance_, rank_: as in `Mahalanobis`.
        background_mean_: ``(d,)`` mean of all train features.
        background_covariance_: ``(d, d)`` their covariance.
    """

    name = "relative_mahalanobis"
    label = "RMD"

    def _fit_from_moments(self, means: Tensor, counts: Tensor, covariance: Tensor) -> None:
        super()._fit_from_moments(means, counts, covariance)
        offsets = means - self._centre
        background = covariance + (offsets.T * counts) @ offsets / counts.sum()
        self.background_mean_ = self._centre.cpu().numpy()
        self.background_covariance_ = background.cpu().numpy()
        self._background_whiten = _whitening(background, self.ridge)

    def _row_scores(self, x: Tensor) -> Tensor:
        """``(B,)`` ``min_c MD_c - MD_0`` per row (`score` is inherited)."""
        background = ((x - self._centre) @ self._background_whiten).square().sum(dim=1)
        return self._class_distance(x) - background


class KNN:
    """Distance to the k-th nearest train feature after L2 normalisation (Sun et al. 2022).

    Train and scored features are divided by their L2 norm (plus ``1e-10``, as the official code);
    the score is the Euclidean distance from a row to its k-th nearest normalised train row, higher =
    more OOD (the official code ranks by minus the squared distance that faiss returns: the same
    order). Defaults: ``k = 50``, the paper's choice for CIFAR-10 with the whole train set; on
    ImageNet-1k the paper uses ``k = 1000`` with all train images or ``k = 10`` with a random 1 %
    of them (k scaled with the fraction kept). ``max_train_rows`` keeps a seeded uniform subsample
    of the train rows (without replacement); ``None`` keeps all.

    Args:
        k: which neighbour's distance is the score.
        max_train_rows: at most this many train rows, drawn with ``seed``; None for all.
        seed: seed of the subsample (``numpy.random.default_rng``).
        batch_size: scored rows per chunk.
        train_batch_size: train rows compared at once; a chunk is a ``batch_size x train_batch_size``
            matrix, the running k smallest distances are merged across train chunks.
        device: where the float64 work happens (the normalised train features live there).

    Attributes:
        train_rows_: ``(n,)`` indices of the train rows kept, sorted.
        bank_: ``(n, d)`` their normalised features (float64 tensor on ``device``).
    """

    name = "knn"
    label = "KNN"
    higher_is_ood = True

    def __init__(
        self,
        k: int = 50,
        max_train_rows: int | None = None,
        seed: int = 0,
        batch_size: int = 1024,
        train_batch_size: int = 16384,
        device: str | torch.device = "cpu",
    ) -> None:
        self.k = _positive_int(k, "k")
        self.max_train_rows = None if max_train_rows is None else _positive_int(max_train_rows, "max_train_rows")
        self.seed = seed
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.train_batch_size = _positive_int(train_batch_size, "train_batch_size")
        self.device = torch.device(device)
        self.bank_: Tensor | None = None

    @staticmethod
    def _normalise(x: Tensor) -> Tensor:
        return x / (x.norm(dim=1, keepdim=True) + KNN_NORM_EPS)

    def fit(self, features: Any, labels: Any = None) -> KNN:
        """Keep (a subsample of) the normalised train features.

        Args:
            features: ``(N, d)`` train features.
            labels: ignored (KNN is label-free); accepted so all detectors fit alike.

        Returns:
            self.

        Raises:
            ValueError: features not 2-D or not finite, or ``k`` larger than the train rows kept.
        """
        rows, d = _matrix_shape(features, "train features")
        kept = rows if self.max_train_rows is None else min(rows, self.max_train_rows)
        if self.k > kept:
            raise ValueError(f"k={self.k} is larger than the {kept} train rows kept (of {rows}); lower k")
        if kept < rows:
            self.train_rows_ = np.sort(np.random.default_rng(self.seed).choice(rows, size=kept, replace=False))
        else:
            self.train_rows_ = np.arange(rows)
        bank = torch.empty(kept, d, dtype=torch.float64, device=self.device)
        for chunk, x in _batches(features, self.batch_size, self.device, rows=self.train_rows_):
            if not torch.isfinite(x).all():
                raise ValueError("train features contain NaN or inf")
            bank[chunk] = self._normalise(x)
        self.bank_ = bank
        self._bank_squared = (bank * bank).sum(dim=1)
        return self

    def score(self, features: Any) -> np.ndarray:
        """Distance to the k-th nearest normalised train feature.

        Args:
            features: ``(N, d)`` rows to score.

        Returns:
            ``(N,)`` float64 in ``[0, 2]``, higher = more OOD.
        """
        if self.bank_ is None:
            raise RuntimeError("KNN is not fitted; call fit on the train features first")
        rows, _ = _matrix_shape(features, "features", self.bank_.shape[1])
        scores = np.empty(rows)
        for chunk, x in _batches(features, self.batch_size, self.device):
            query = self._normalise(x)
            query_squared = (query * query).sum(dim=1, keepdim=True)
            nearest: Tensor | None = None
            for start in range(0, len(self.bank_), self.train_batch_size):
                stop = start + self.train_batch_size
                squared = query_squared + self._bank_squared[start:stop] - 2.0 * query @ self.bank_[start:stop].T
                candidates = squared if nearest is None else torch.cat([nearest, squared], dim=1)
                nearest = candidates.topk(min(self.k, candidates.shape[1]), dim=1, largest=False).values
            assert nearest is not None
            scores[chunk] = nearest.amax(dim=1).clamp_min(0.0).sqrt().cpu().numpy()
        return scores


def vim_default_dim(width: int) -> int:
    """ViM's principal dimension D for features of width d: 1000 if d >= 2048, 512 if d >= 768, else d // 2.

    Wang et al. use D = 1000 for the 2048-wide (and wider) CNN features and D = 512 for the 768-wide
    ViT-B features (the official code: ``1000 if d >= 2048 else 512``); the ``d // 2`` for narrower
    features is this library's choice (512 would leave no residual there).
    """
    return 1000 if width >= 2048 else 512 if width >= 768 else max(width // 2, 1)


class ViM:
    """Virtual-logit Matching (Wang et al. 2022) of one linear classifier ``logits = h W^T + b``.

    Fitted on the classifier's train input features ``h`` and its weights, as the official code:

    1. origin ``u = -pinv(W) b`` (the point whose logits are all zero);
    2. principal subspace: the top-D eigenvectors of ``1/N sum_i (h_i - u)(h_i - u)^T``; ``P_perp``
       the remaining ``d - D`` (default D from `vim_default_dim`);
    3. ``alpha = mean_i max_c logit_ic / mean_i ||(h_i - u) P_perp||`` over the train rows.

    A row's virtual logit is ``alpha ||(h - u) P_perp||``; the paper's OOD score is its softmax
    probability against the real logits, ``p_v = sigmoid(vlogit - logsumexp(logits))``. `score`
    returns the argument ``vlogit - logsumexp(logits)``, the log-odds of ``p_v``: the same order,
    without the saturation of ``p_v`` at 0 or 1, and the negation of the official code's ID score
    ``energy - vlogit``. Higher = more OOD.

    Args:
        dim: D, the dimension of the principal subspace, ``1 <= D < d``; None for `vim_default_dim`.
        batch_size: rows per chunk.
        device: where the float64 work happens.

    Attributes:
        dim_: D used.
        origin_: ``(d,)`` the origin u.
        null_basis_: ``(d, d - D)`` orthonormal basis of the residual space ``P_perp``.
        alpha_: the matching constant.
        weight_, bias_: ``(C, d)``, ``(C,)`` the classifier (float64).
    """

    name = "vim"
    label = "ViM"
    higher_is_ood = True

    def __init__(self, dim: int | None = None, batch_size: int = 4096, device: str | torch.device = "cpu") -> None:
        self.dim = None if dim is None else _positive_int(dim, "dim")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.device = torch.device(device)
        self._fitted = False

    def fit(self, features: Any, weight: Any, bias: Any) -> ViM:
        """Fit the origin, the residual space and alpha.

        Args:
            features: ``(N, d)`` train inputs of the classifier (its penultimate features).
            weight: ``(C, d)`` classifier weights.
            bias: ``(C,)`` classifier bias.

        Returns:
            self.

        Raises:
            ValueError: shapes do not fit, ``dim`` is not below d, features not finite, or the train
                residuals or mean max logit give no positive alpha.
        """
        rows, d = _matrix_shape(features, "train features")
        weight = torch.as_tensor(weight).to(device=self.device, dtype=torch.float64)
        bias = torch.as_tensor(bias).to(device=self.device, dtype=torch.float64)
        if weight.dim() != 2 or weight.shape[1] != d:
            raise ValueError(
                f"weight must be (C, d) = (C, {d}) to fit features of width {d}, got {tuple(weight.shape)}"
            )
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must be (C,) = ({weight.shape[0]},), got {tuple(bias.shape)}")
        dim = vim_default_dim(d) if self.dim is None else self.dim
        if not dim < d:
            raise ValueError(f"ViM needs a principal dimension below the feature width {d}, got dim={dim}")
        origin = -torch.linalg.pinv(weight) @ bias
        moment = torch.zeros(d, d, dtype=torch.float64, device=self.device)
        for _, x in _fit_rows(features, "train features", self.batch_size, self.device):
            centred = x - origin
            moment += centred.T @ centred
        _, vectors = torch.linalg.eigh(moment / rows)  # ascending eigenvalues
        self._weight, self._bias, self._origin = weight, bias, origin
        self._null_basis = vectors[:, : d - dim].contiguous()
        max_logit, residual = 0.0, 0.0
        for _, x in _batches(features, self.batch_size, self.device):
            max_logit += (x @ weight.T + bias).amax(dim=1).sum().item()
            residual += self._residual_norm(x).sum().item()
        if not (residual > 0 and max_logit > 0):
            raise ValueError(
                f"ViM's alpha = mean max logit / mean residual norm is not positive "
                f"({max_logit / rows:.4g} / {residual / rows:.4g}); lower dim or check the classifier"
            )
        self.alpha_ = max_logit / residual
        self.dim_ = dim
        self.weight_, self.bias_ = weight.cpu().numpy(), bias.cpu().numpy()
        self.origin_, self.null_basis_ = origin.cpu().numpy(), self._null_basis.cpu().numpy()
        self._fitted = True
        return self

    def _residual_norm(self, x: Tensor) -> Tensor:
        return ((x - self._origin) @ self._null_basis).norm(dim=1)

    def score(self, features: Any) -> np.ndarray:
        """``alpha ||(h - u) P_perp|| - logsumexp(h W^T + b)`` per row.

        Args:
            features: ``(N, d)`` inputs of the classifier.

        Returns:
            ``(N,)`` float64, higher = more OOD.
        """
        if not self._fitted:
            raise RuntimeError("ViM is not fitted; call fit on the train features first")
        rows, _ = _matrix_shape(features, "features", self.weight_.shape[1])
        scores = np.empty(rows)
        for chunk, x in _batches(features, self.batch_size, self.device):
            energy = torch.logsumexp(x @ self._weight.T + self._bias, dim=1)
            scores[chunk] = (self.alpha_ * self._residual_norm(x) - energy).cpu().numpy()
        return scores


DETECTORS: dict[str, type] = {cls.name: cls for cls in (Mahalanobis, RelativeMahalanobis, KNN, ViM)}
"""name -> detector class; every detector scores higher = more OOD."""


def fit_detectors(
    names: Iterable[str],
    train_features: Any,
    train_labels: Any = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Mahalanobis | KNN]:
    """Fit several backbone-feature detectors (all of `DETECTORS` but ViM) on the same train rows.

    Args:
        names: keys of `DETECTORS` other than ``"vim"``, which needs a classifier: fit `ViM` itself.
        train_features: ``(N, d)`` train features.
        train_labels: ``(N,)`` train labels (needed by the Mahalanobis detectors).
        options: name -> constructor keyword arguments.

    Returns:
        name -> fitted detector.
    """
    names, options = list(names), dict(options or {})
    unknown = [name for name in [*names, *options] if name not in DETECTORS or name == ViM.name]
    if unknown:
        raise ValueError(
            f"unknown detectors {unknown}; choose from {[n for n in DETECTORS if n != ViM.name]} (fit ViM directly)"
        )
    return {name: DETECTORS[name](**options.get(name, {})).fit(train_features, train_labels) for name in names}


@torch.no_grad()
def penultimate_features(ensemble: HeadEnsemble, features: Any, member: int = 0, batch_size: int = 4096) -> np.ndarray:
    """The input of one member's linear classifier, ``LN(h + gamma * MLP(LN2(h)))``.

    Computed with the formulas of `sedlib.method.ensemble.head_forward` in the ensemble's dtype and on its
    device, so ``penultimate_features(e, h, m) @ W.T + b`` (with ``W, b = linear_head(e, m)``) are the
    member's logits ``e(h)[m]``. For the weight soup pass ``ensemble.soup()``.

    Args:
        ensemble: the heads.
        features: ``(N, d)`` cached backbone features.
        member: which member.
        batch_size: rows per chunk.

    Returns:
        ``(N, d)`` array in the ensemble's dtype (float32).
    """
    if not 0 <= member < ensemble.num_members:
        raise ValueError(f"member {member} does not exist in an ensemble of {ensemble.num_members}")
    rows, _ = _matrix_shape(features, "features", ensemble.config.feature_dim)
    params = ensemble.member_params(torch.tensor([member]))
    weight = params["head.weight"]
    d, eps = ensemble.config.feature_dim, ensemble.config.norm_eps
    out = np.empty((rows, d), dtype=torch.finfo(weight.dtype).dtype)
    for chunk, batch in _batches(features, _positive_int(batch_size, "batch_size"), weight.device):
        h = batch.to(weight.dtype)[None]
        u = F.layer_norm(h, (d,), eps=eps) * params["norm2.weight"][:, None] + params["norm2.bias"][:, None]
        u = torch.baddbmm(params["mlp.fc1.bias"][:, None], u, params["mlp.fc1.weight"].transpose(1, 2))
        u = torch.baddbmm(params["mlp.fc2.bias"][:, None], F.gelu(u), params["mlp.fc2.weight"].transpose(1, 2))
        h = h + params["ls2.gamma"][:, None] * u
        h = F.layer_norm(h, (d,), eps=eps) * params["norm.weight"][:, None] + params["norm.bias"][:, None]
        out[chunk] = h[0].cpu().numpy()
    return out


def linear_head(ensemble: HeadEnsemble, member: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The linear classifier ``(W (C, d), b (C,))`` of one member, as float64 arrays (for `ViM`)."""
    if not 0 <= member < ensemble.num_members:
        raise ValueError(f"member {member} does not exist in an ensemble of {ensemble.num_members}")
    weight = ensemble.head.weight[member].detach().to("cpu", torch.float64).numpy()
    bias = ensemble.head.bias[member].detach().to("cpu", torch.float64).numpy()
    return weight, bias


__all__ = [
    "DETECTORS",
    "KNN",
    "Mahalanobis",
    "RelativeMahalanobis",
    "ViM",
    "fit_detectors",
    "linear_head",
    "penultimate_features",
    "vim_default_dim",
]
