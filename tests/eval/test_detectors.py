import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from sedlib.eval.detectors import (
    DETECTORS,
    KNN,
    Mahalanobis,
    RelativeMahalanobis,
    ViM,
    fit_detectors,
    linear_head,
    penultimate_features,
    vim_default_dim,
)
from sedlib.eval.metrics import auroc

CLASSES, DIM, SIGNAL = 4, 16, 8  # ID data varies mostly in the first SIGNAL dimensions


def sample(rng, rows, centres):
    labels = rng.integers(0, len(centres), rows)
    noise = rng.normal(size=(rows, DIM)) * np.r_[np.ones(SIGNAL), 0.1 * np.ones(DIM - SIGNAL)]
    return centres[labels] + noise, labels


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = np.zeros((CLASSES, DIM))
    centres[:, :SIGNAL] = 4 * rng.normal(size=(CLASSES, SIGNAL))
    train, train_labels = sample(rng, 500, centres)
    test, _ = sample(rng, 200, centres)
    ood_centre = np.r_[np.zeros(SIGNAL), 4 * rng.normal(size=DIM - SIGNAL)]
    ood = ood_centre + rng.normal(size=(100, DIM))
    weight = centres  # a nearest-mean linear classifier: logit_c = mu_c . x - |mu_c|^2 / 2
    bias = -0.5 * (centres**2).sum(1)
    return dict(train=train, labels=train_labels, test=test, ood=ood, weight=weight, bias=bias)


def fitted(name, data, **options):
    if name == "vim":
        return ViM(dim=SIGNAL, **options).fit(data["train"], data["weight"], data["bias"])
    return DETECTORS[name](**options).fit(data["train"], data["labels"])


# ---------------------------------------------------------------- independent numpy references


def ref_mahalanobis(train, labels, x, inverse=np.linalg.inv):
    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(0) for c in classes])
    residual = train - means[np.searchsorted(classes, labels)]
    precision = inverse(residual.T @ residual / len(train))
    diff = x[:, None, :] - means[None]  # (N, C, d)
    return np.einsum("ncd,de,nce->nc", diff, precision, diff).min(1)


def ref_background(train, x, inverse=np.linalg.inv):
    diff = x - train.mean(0)
    return np.einsum("nd,de,ne->n", diff, inverse(np.cov(train.T, bias=True)), diff)


def ref_knn(train, x, k):
    def normalise(a):
        return a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-10)

    distances = np.linalg.norm(normalise(x)[:, None] - normalise(train)[None], axis=-1)
    return np.sort(distances, axis=1)[:, k - 1]


def ref_vim(train, x, weight, bias, dim):
    origin = -np.linalg.pinv(weight) @ bias
    values, vectors = np.linalg.eig((train - origin).T @ (train - origin) / len(train))
    residual_space = vectors[:, np.argsort(-values.real)[dim:]].real
    alpha = (train @ weight.T + bias).max(1).mean() / np.linalg.norm((train - origin) @ residual_space, axis=1).mean()
    vlogit = alpha * np.linalg.norm((x - origin) @ residual_space, axis=1)
    return vlogit - logsumexp(x @ weight.T + bias, axis=1), vlogit


# ---------------------------------------------------------------- detection and formulas


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_each_detector_ranks_the_ood_cluster_above_id_rows(data, name):
    detector = fitted(name, data)
    assert detector.higher_is_ood
    id_scores, ood_scores = detector.score(data["test"]), detector.score(data["ood"])
    assert id_scores.shape == (200,) and ood_scores.shape == (100,) and id_scores.dtype == np.float64
    assert auroc(id_scores, ood_scores, higher_is_ood=True) > 0.95


def test_mahalanobis_matches_numpy(data):
    x = np.vstack([data["test"][:20], data["ood"][:10]])
    detector = Mahalanobis().fit(data["train"], data["labels"])
    expected = ref_mahalanobis(data["train"], data["labels"], x)
    np.testing.assert_allclose(detector.score(x), expected, rtol=1e-9)
    assert detector.rank_ == DIM and detector.means_.shape == (CLASSES, DIM)


def test_mahalanobis_with_a_singular_covariance_uses_the_pseudo_inverse():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 6))
    train, labels = rng.normal(size=(60, 3)) @ basis, np.arange(60) % 2  # rank 3 in 6-d
    x = rng.normal(size=(9, 6))
    detector = Mahalanobis().fit(train, labels)
    assert detector.rank_ == 3
    expected = ref_mahalanobis(train, labels, x, inverse=lambda a: np.linalg.pinv(a, hermitian=True))
    np.testing.assert_allclose(detector.score(x), expected, rtol=1e-7)
    ridged = Mahalanobis(ridge=0.5).fit(train, labels)
    expected = ref_mahalanobis(train, labels, x, inverse=lambda a: np.linalg.inv(a + 0.5 * np.eye(6)))
    np.testing.assert_allclose(ridged.score(x), expected, rtol=1e-9)


def test_relative_mahalanobis_matches_numpy(data):
    x = np.vstack([data["test"][:20], data["ood"][:10]])
    detector = RelativeMahalanobis().fit(data["train"], data["labels"])
    expected = ref_mahalanobis(data["train"], data["labels"], x) - ref_background(data["train"], x)
    np.testing.assert_allclose(detector.score(x), expected, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(detector.background_covariance_, np.cov(data["train"].T, bias=True), atol=1e-10)


def test_knn_matches_sorting_all_distances(data):
    x = np.vstack([data["test"][:20], data["ood"][:10]])
    for k in (1, 7, 50):
        np.testing.assert_allclose(KNN(k=k).fit(data["train"]).score(x), ref_knn(data["train"], x, k), rtol=1e-9)


def test_knn_subsample_is_seeded_and_used(data):
    x = data["test"][:15]
    detector = KNN(k=5, max_train_rows=120, seed=3).fit(data["train"])
    rows = detector.train_rows_
    assert len(rows) == 120 and len(np.unique(rows)) == 120 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(KNN(k=5, max_train_rows=120, seed=3).fit(data["train"]).train_rows_, rows)
    assert not np.array_equal(KNN(k=5, max_train_rows=120, seed=4).fit(data["train"]).train_rows_, rows)
    np.testing.assert_allclose(detector.score(x), ref_knn(data["train"][rows], x, 5), rtol=1e-9)
    assert len(KNN(max_train_rows=10_000).fit(data["train"]).train_rows_) == 500


def test_vim_matches_the_official_recipe_step_by_step(data):
    x = np.vstack([data["test"][:20], data["ood"][:10]])
    detector = ViM(dim=SIGNAL).fit(data["train"], data["weight"], data["bias"])
    expected, vlogit = ref_vim(data["train"], x, data["weight"], data["bias"], SIGNAL)
    scores = detector.score(x)
    np.testing.assert_allclose(scores, expected, rtol=1e-8, atol=1e-9)
    # the paper's score is the softmax probability of the virtual logit; ours is its log-odds
    logits = np.hstack([x @ data["weight"].T + data["bias"], vlogit[:, None]])
    p_virtual = np.exp(logits[:, -1] - logsumexp(logits, axis=1))
    np.testing.assert_allclose(1 / (1 + np.exp(-scores)), p_virtual, rtol=1e-8)
    assert detector.null_basis_.shape == (DIM, DIM - SIGNAL) and detector.dim_ == SIGNAL


def test_vim_default_dimension_follows_the_paper():
    assert [vim_default_dim(d) for d in (4096, 2048, 1280, 768, 512, 16)] == [1000, 1000, 512, 512, 256, 8]
    assert ViM().fit(np.random.default_rng(0).normal(size=(50, 16)), np.eye(3, 16), np.ones(3)).dim_ == 8


# ---------------------------------------------------------------- fit on train only, chunking, inputs


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_scores_do_not_depend_on_the_other_rows_scored(data, name):
    detector = fitted(name, data)
    alone = detector.score(data["test"][:30])
    together = detector.score(np.vstack([data["test"][:30], data["ood"], data["test"][30:]]))
    np.testing.assert_allclose(together[:30], alone, rtol=1e-12, atol=1e-12)
    refit = fitted(name, data)  # fitting twice gives the same detector
    np.testing.assert_array_equal(refit.score(data["test"][:30]), alone)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_chunking_does_not_change_the_results(data, name):
    x = np.vstack([data["test"], data["ood"]])
    whole = fitted(name, data, batch_size=100_000).score(x)
    extra = {"train_batch_size": 3} if name == "knn" else {}  # fewer train rows per chunk than k
    chunked = fitted(name, data, batch_size=7, **extra).score(x)
    np.testing.assert_allclose(chunked, whole, rtol=1e-10, atol=1e-10)


def test_tensors_and_low_precision_arrays_are_accepted(data):
    detector = Mahalanobis().fit(torch.from_numpy(data["train"]), torch.from_numpy(data["labels"]))
    half = data["test"][:10].astype(np.float16)
    np.testing.assert_allclose(detector.score(torch.from_numpy(half)), detector.score(half.astype(np.float64)))
    assert detector.score(np.empty((0, DIM))).shape == (0,)


def test_read_only_memory_maps_are_accepted(data, tmp_path):
    np.save(tmp_path / "train.npy", data["train"].astype(np.float32))
    np.save(tmp_path / "test.npy", data["test"][:20])  # float64: batches are views of the map
    train, test = np.load(tmp_path / "train.npy", mmap_mode="r"), np.load(tmp_path / "test.npy", mmap_mode="r")
    for name in sorted(DETECTORS):
        in_memory = fitted(name, {**data, "train": np.array(train)}).score(np.array(test))
        np.testing.assert_array_equal(fitted(name, {**data, "train": train}).score(test), in_memory, err_msg=name)


def test_fit_detectors_fits_the_feature_detectors_alike(data):
    detectors = fit_detectors(
        ["mahalanobis", "knn"], data["train"], data["labels"], options={"knn": {"k": 5, "batch_size": 64}}
    )
    assert detectors["knn"].k == 5
    x = data["test"][:10]
    np.testing.assert_array_equal(detectors["knn"].score(x), KNN(k=5).fit(data["train"]).score(x))
    np.testing.assert_array_equal(
        detectors["mahalanobis"].score(x), Mahalanobis().fit(data["train"], data["labels"]).score(x)
    )
    with pytest.raises(ValueError, match="fit ViM directly"):
        fit_detectors(["vim"], data["train"], data["labels"])
    with pytest.raises(ValueError, match="unknown detectors"):
        fit_detectors(["knn"], data["train"], options={"odin": {}})


def test_bad_input_says_what_is_wrong(data):
    train, labels = data["train"], data["labels"]
    for cls in (Mahalanobis, RelativeMahalanobis):
        with pytest.raises(ValueError, match="needs the class labels"):
            cls().fit(train, None)
        with pytest.raises(ValueError, match="one label per train row"):
            cls().fit(train, labels[:-1])
        with pytest.raises(ValueError, match="labels must be >= 0"):
            cls().fit(train, np.where(np.arange(500) < 3, -1, labels))
        with pytest.raises(ValueError, match="labels must be integers"):
            cls().fit(train, labels.astype(float))
        with pytest.raises(ValueError, match="width 15, but the detector was fitted on features of width 16"):
            cls().fit(train, labels).score(train[:, :15])
    with pytest.raises(ValueError, match="NaN or inf"):
        Mahalanobis().fit(np.where(np.arange(DIM) == 2, np.nan, train), labels)
    with pytest.raises(ValueError, match="2-D"):
        KNN().fit(train[0])
    with pytest.raises(ValueError, match="k=501 is larger than the 500 train rows"):
        KNN(k=501).fit(train)
    with pytest.raises(ValueError, match="k=50 is larger than the 20 train rows kept"):
        KNN(max_train_rows=20).fit(train)
    with pytest.raises(ValueError, match="width"):
        KNN(k=3).fit(train).score(train[:, :4])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        KNN(k=0)
    with pytest.raises(ValueError, match="principal dimension below the feature width 16"):
        ViM(dim=16).fit(train, data["weight"], data["bias"])
    with pytest.raises(ValueError, match=r"weight must be \(C, d\)"):
        ViM(dim=4).fit(train, data["weight"][:, :8], data["bias"])
    with pytest.raises(ValueError, match=r"bias must be \(C,\)"):
        ViM(dim=4).fit(train, data["weight"], data["bias"][:2])
    with pytest.raises(ValueError, match="width"):
        ViM(dim=4).fit(train, data["weight"], data["bias"]).score(train[:, :8])
    with pytest.raises(RuntimeError, match="not fitted"):
        ViM().score(train)
    with pytest.raises(RuntimeError, match="not fitted"):
        Mahalanobis().score(train)


# ---------------------------------------------------------------- the heads' penultimate features


@pytest.mark.parametrize("member", [0, 2])
def test_penultimate_features_reproduce_the_member_logits(tiny_ensemble, member):
    features = torch.randn(23, 12, generator=torch.Generator().manual_seed(0))
    penultimate = penultimate_features(tiny_ensemble, features.numpy(), member=member, batch_size=5)
    weight, bias = linear_head(tiny_ensemble, member)
    assert penultimate.shape == (23, 12) and penultimate.dtype == np.float32 and weight.shape == (5, 12)
    expected = tiny_ensemble(features)[member].detach().double().numpy()
    np.testing.assert_allclose(penultimate @ weight.T + bias, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="member 4 does not exist"):
        penultimate_features(tiny_ensemble, features, member=4)


def test_vim_runs_on_the_soup_head(tiny_ensemble):
    soup = tiny_ensemble.soup()
    train = torch.randn(200, 12, generator=torch.Generator().manual_seed(1))
    h = penultimate_features(soup, train)
    detector = ViM().fit(h, *linear_head(soup))
    assert detector.dim_ == 6 and np.isfinite(detector.score(penultimate_features(soup, train[:10]))).all()


def test_the_settings_name_exactly_the_registered_detectors():
    from sedlib.config import DETECTOR_NAMES
    from sedlib.eval.detectors import DETECTORS

    assert tuple(DETECTORS) == DETECTOR_NAMES
