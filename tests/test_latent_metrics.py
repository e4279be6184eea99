"""Fréchet distance (closed forms), the cached digits classifier (accuracy, cache logic), FD floor, seeds."""

import json
import math
import statistics
import warnings

import pytest
import scipy.linalg
import torch

import sdeflow.latent.metrics as lm
from sdeflow.latent import (
    ClassifierSpec,
    FeatureStats,
    class_accuracy,
    digits_classifier,
    digits_fd,
    digits_fd_floor,
    digits_features,
    digits_metrics,
    feature_stats,
    frechet_distance,
    load_digits_split,
    over_seeds,
)

TINY = ClassifierSpec(channels=(4, 4), feature_dim=8, iters=3, batch_size=32, warmup=0)


def _stats(mean, cov):
    return FeatureStats(torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64), 10**6)


def _random_spd(k, g, scale=1.0):
    a = torch.randn(k, k, generator=g, dtype=torch.float64)
    return scale * (a @ a.T / k + 0.1 * torch.eye(k, dtype=torch.float64))


# -- Fréchet distance ------------------------------------------------------------------------------
def test_fd_closed_form_commuting_covariances():
    # Σ_a = Q diag(a) Qᵀ, Σ_b = Q diag(b) Qᵀ commute, so FD = |Δμ|² + Σ (√a_i − √b_i)².
    g = torch.Generator().manual_seed(0)
    k = 12
    q, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    a = torch.rand(k, generator=g, dtype=torch.float64) * 3 + 0.01
    b = torch.rand(k, generator=g, dtype=torch.float64) * 3 + 0.01
    mu_a, mu_b = torch.randn(k, generator=g, dtype=torch.float64), torch.randn(k, generator=g, dtype=torch.float64)
    exact = float((mu_a - mu_b).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    fd = frechet_distance(_stats(mu_a, q @ torch.diag(a) @ q.T), _stats(mu_b, q @ torch.diag(b) @ q.T))
    assert fd == pytest.approx(exact, rel=1e-10)
    # 1-D: (μ_a − μ_b)² + (s_a − s_b)²
    assert frechet_distance(_stats([1.0], [[4.0]]), _stats([3.0], [[1.0]])) == pytest.approx(4.0 + 1.0, rel=1e-12)


def test_fd_general_covariances_match_scipy_sqrtm_and_is_symmetric():
    g = torch.Generator().manual_seed(1)
    for k in (3, 20, 64):
        ca, cb = _random_spd(k, g), _random_spd(k, g, 2.0)
        ma, mb = torch.randn(k, generator=g, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
        cross = scipy.linalg.sqrtm(ca.numpy() @ cb.numpy()).real.trace()
        exact = float((ma - mb).square().sum() + ca.trace() + cb.trace()) - 2 * cross
        fd = frechet_distance(_stats(ma, ca), _stats(mb, cb))
        assert fd == pytest.approx(exact, rel=1e-9)
        assert frechet_distance(_stats(mb, cb), _stats(ma, ca)) == pytest.approx(fd, rel=1e-9)


def test_fd_of_a_set_with_itself_is_zero_also_rank_deficient():
    g = torch.Generator().manual_seed(2)
    f = torch.randn(500, 16, generator=g) * torch.linspace(0.01, 5, 16)
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-9)
    low = torch.randn(30, 3, generator=g) @ torch.randn(3, 64, generator=g)  # rank 3 in 64 dims, singular Σ
    fd = frechet_distance(low, low)
    assert math.isfinite(fd) and fd == pytest.approx(0.0, abs=1e-8)


def test_fd_of_samples_approaches_the_gaussian_closed_form():
    # Features drawn from two Gaussians with known parameters: the sample FD converges to the exact FD.
    # n = 200,000 in k = 4 dimensions: the covariance estimates' relative errors are ~ sqrt(2/n) = 0.3 %,
    # so the FD (exact 2.72 here) is within 1 % (a 3-σ bound on the estimate for this seed).
    g = torch.Generator().manual_seed(3)
    k, n = 4, 200_000
    ca, cb = _random_spd(k, g), _random_spd(k, g, 0.5)
    ma, mb = torch.zeros(k, dtype=torch.float64), torch.full((k,), 0.5, dtype=torch.float64)
    xa = ma + torch.randn(n, k, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(ca).T
    xb = mb + torch.randn(n, k, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cb).T
    exact = frechet_distance(_stats(ma, ca), _stats(mb, cb))
    assert frechet_distance(xa, xb) == pytest.approx(exact, rel=0.01)
    st = feature_stats(xa)
    assert torch.allclose(st.cov, torch.cov(xa.T), atol=1e-12) and st.n == n


def test_fd_errors():
    with pytest.raises(ValueError, match="same width"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.randn(1, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="finite"):
        frechet_distance(torch.full((4, 2), float("nan")), torch.randn(5, 2))
    with pytest.raises(TypeError, match="shape"):
        frechet_distance(torch.randn(5), torch.randn(5, 1))


# -- the classifier and its cache ------------------------------------------------------------------
def test_cache_hit_is_read_back_validated_and_corruption_retrains(tmp_path, monkeypatch):
    monkeypatch.setattr(lm, "_LOADED", {})
    m1 = digits_classifier(TINY, cache_dir=tmp_path)
    folders = list((tmp_path / "digits_classifier").iterdir())
    assert len(folders) == 1
    ckpts = sorted(folders[0].glob("ckpt-*.json"))
    assert [p.name for p in ckpts] == ["ckpt-00000003.json"]
    meta = json.loads(ckpts[0].read_text())["metadata"]
    assert meta["spec"] == TINY.to_json() and 0 <= meta["held_out_accuracy"] <= 1
    # same process: the same module; a new process (memo cleared): read from disk, no training
    assert digits_classifier(TINY, cache_dir=tmp_path) is m1
    monkeypatch.setattr(lm, "_LOADED", {})
    calls = []
    real_train = lm._train_classifier
    monkeypatch.setattr(lm, "_train_classifier", lambda *a: (calls.append(1), real_train(*a)))
    m2 = digits_classifier(TINY, cache_dir=tmp_path)
    assert calls == []
    x = load_digits_split().test_x[:8]
    assert torch.equal(m2.features(x), m1.features(x))
    # training is deterministic: a retrain gives the same weights bit for bit
    m3 = digits_classifier(TINY, cache_dir=tmp_path, retrain=True)
    assert calls == [1]
    assert all(torch.equal(a, b) for a, b in zip(m3.state_dict().values(), m1.state_dict().values(), strict=True))
    # a corrupted weights file fails its checksum: warned, retrained, rewritten
    monkeypatch.setattr(lm, "_LOADED", {})
    weights = next(folders[0].glob("ckpt-*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")
    with pytest.warns(UserWarning, match="unusable"):
        m4 = digits_classifier(TINY, cache_dir=tmp_path)
    assert calls == [1, 1] and torch.equal(m4.features(x), m1.features(x))
    # a checkpoint whose recorded key does not match (e.g. copied from another spec) is not used
    monkeypatch.setattr(lm, "_LOADED", {})
    j = next(folders[0].glob("ckpt-*.json"))
    rec = json.loads(j.read_text())
    rec["metadata"]["cache_key"] = "something-else"
    j.write_text(json.dumps(rec))
    with pytest.warns(UserWarning, match="does not match"):
        digits_classifier(TINY, cache_dir=tmp_path)
    assert calls == [1, 1, 1]
    # another spec is cached under its own key; SDEFLOW_CACHE picks the root
    monkeypatch.setenv("SDEFLOW_CACHE", str(tmp_path / "env"))
    digits_classifier(ClassifierSpec(channels=(4, 4), feature_dim=8, iters=2, batch_size=32, warmup=0))
    assert len(list((tmp_path / "env" / "digits_classifier").iterdir())) == 1
    with pytest.raises(TypeError, match="ClassifierSpec"):
        digits_classifier({"iters": 3})


def test_unwritable_cache_trains_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(lm, "_LOADED", {})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")  # a file where the cache folder would go: mkdir fails
    with pytest.warns(UserWarning, match="not writable"):
        m = digits_classifier(TINY, cache_dir=blocker)
    ref = digits_classifier(TINY, cache_dir=tmp_path / "ok")
    x = load_digits_split().test_x[:4]
    assert torch.equal(m.features(x), ref.features(x))  # the same deterministic training either way
    assert m.checkpoint_metadata["held_out_accuracy"] == ref.checkpoint_metadata["held_out_accuracy"]
    assert not m.training and not any(p.requires_grad for p in m.parameters())


@pytest.fixture(scope="module")
def classifier():
    # The package's default classifier from the default cache (trained once, ~15 s on one core).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return digits_classifier()


def test_default_classifier_accuracy_and_determinism(classifier):
    split = load_digits_split()
    acc = class_accuracy(split.test_x, split.test_y, classifier=classifier, clamp=False)
    assert acc >= 0.97
    assert classifier.checkpoint_metadata["held_out_accuracy"] == pytest.approx(acc)
    assert class_accuracy(split.train_x, split.train_y, classifier=classifier) >= acc - 0.01
    assert digits_features(split.test_x[:5], classifier=classifier).shape == (5, 64)
    assert classifier.logits(split.test_x[:5]).shape == (5, 10)
    assert not any(p.requires_grad for p in classifier.parameters())


def test_fd_floor_and_sample_size_bias(classifier):
    split = load_digits_split()
    floor = digits_fd_floor(classifier=classifier)
    assert floor > 0
    assert digits_fd(split.test_x, "train", classifier=classifier) == pytest.approx(floor, rel=1e-12)
    # the train statistics are cached per classifier (the same object is returned)
    assert lm._reference("train", classifier, split) is lm._reference("train", classifier, split)
    # The FD of finite samples is biased upwards, the more the smaller n: subsets of the training images
    # scored against all of them move towards 0 as they grow (nested subsets of one permutation).
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(split.train_x.shape[0], generator=g)
    fds = [digits_fd(split.train_x[perm[:n]], classifier=classifier) for n in (200, 359, 800, 1438)]
    assert fds[0] > fds[1] > fds[2] > fds[3] and fds[3] == pytest.approx(0.0, abs=1e-8)
    # noisy images are far from the data
    noisy = split.test_x + 0.5 * torch.randn(split.test_x.shape, generator=torch.Generator().manual_seed(0))
    assert digits_fd(noisy, "held_out", classifier=classifier) > 3 * floor
    m = digits_metrics(split.test_x, split.test_y, classifier=classifier)
    assert set(m) == {"fd", "accuracy"} and m["fd"] == pytest.approx(floor)
    with pytest.raises(ValueError, match="finite"):
        digits_fd(torch.full((4, 1, 8, 8), float("nan")), classifier=classifier)
    with pytest.raises(ValueError, match="shape"):
        digits_fd(torch.zeros(4, 64), classifier=classifier)
    with pytest.raises(ValueError, match="reference"):
        digits_fd(split.test_x, "test", classifier=classifier)
    with pytest.raises(ValueError, match="labels"):
        class_accuracy(split.test_x, split.test_y[:3], classifier=classifier)


# -- over seeds ------------------------------------------------------------------------------------
def test_over_seeds_mean_and_sample_std():
    st = over_seeds(lambda s: float(s * s), seeds=(1, 2, 3, 4))
    vals = [1.0, 4.0, 9.0, 16.0]
    assert st.mean == pytest.approx(statistics.mean(vals)) and st.std == pytest.approx(statistics.stdev(vals))
    assert st.values == tuple(vals) and st.seeds == (1, 2, 3, 4)
    assert "±" in str(st)
    d = over_seeds(lambda s: {"fd": s + 1.0, "accuracy": 0.5}, seeds=range(3))
    assert d["fd"].mean == pytest.approx(2.0) and d["fd"].std == pytest.approx(1.0) and d["accuracy"].std == 0
    assert over_seeds(lambda s: 3.0, seeds=[7]).std == 0.0
    with pytest.raises(ValueError, match="different keys"):
        over_seeds(lambda s: {"a": 1.0} if s == 0 else {"b": 1.0}, seeds=(0, 1))
    with pytest.raises(ValueError, match="at least one"):
        over_seeds(lambda s: 1.0, seeds=())
    with pytest.raises(TypeError, match="number"):
        over_seeds(lambda s: "x", seeds=(0,))
