"""EmpiricalDenoiser: the exact denoiser of a training set, checked against closed forms and brute force."""

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.latent import EmpiricalDenoiser, load_digits_split


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


def _brute(x, data, sigma):
    """sum_i softmax_i(-|x - x_i|^2 / 2σ²) x_i in float64, one row at a time (no chunking, no tricks)."""
    x = x.reshape(x.shape[0], -1).double()
    d = data.reshape(data.shape[0], -1).double()
    out = []
    for row, s in zip(x, sigma, strict=True):
        logits = -((row - d) ** 2).sum(1) / (2 * s * s)
        out.append(torch.softmax(logits, 0) @ d)
    return torch.stack(out)


def test_small_sigma_returns_nearest_training_image(split):
    den = EmpiricalDenoiser(split.train_x)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, split.train_x.shape[0], (32,), generator=g)
    # Nearby points: a training image plus noise of std 0.01 per pixel (norm ~0.08), far less than the
    # smallest distance between two distinct training images (checked below), so the posterior puts
    # all its mass on that image.
    x = split.train_x[idx] + 0.01 * torch.randn(32, 1, 8, 8, generator=g)
    flat = split.train_x.reshape(-1, 64).double()
    pd = torch.cdist(flat, flat) + torch.eye(flat.shape[0]) * 1e9
    assert pd.min() > 0.9  # digits differ by at least one pixel step (1/8) somewhere: distance >= 0.125
    for sigma in (0.0, 0.002, 0.02):
        out = den(x, sigma)
        assert torch.allclose(out, split.train_x[idx], atol=1e-6), sigma
    dist, index = den.nearest(x)
    assert torch.equal(index, idx)
    assert torch.allclose(dist, (x - split.train_x[idx]).flatten(1).norm(dim=1), atol=1e-5)


def test_equals_gaussian_mixture_with_tiny_covariance():
    # A mixture of N equal-weight components of covariance c·I has the denoiser
    # Σ r_k (μ_k + c/(c+σ²)(x − μ_k)), r_k ∝ exp(−|x − μ_k|²/(2(c+σ²))): at c = 1e-12 and σ >= 0.05 it
    # differs from the empirical denoiser by O(c/σ²) <= 4e-10 relative: float64 agreement to 1e-8.
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(20, 4, generator=g, dtype=torch.float64)
    gm = sf.GaussianMixture(torch.ones(20), pts, 1e-12)
    den = EmpiricalDenoiser(pts, dtype=torch.float64)
    x = 2 * torch.randn(64, 4, generator=g, dtype=torch.float64)
    for sigma in (0.05, 0.3, 1.0, 5.0):
        assert torch.allclose(den(x, sigma), gm.denoiser_sigma(x, sigma), atol=1e-8, rtol=0), sigma
    sig = torch.linspace(0.05, 3.0, 64, dtype=torch.float64)
    assert torch.allclose(den(x, sig), gm.denoiser_sigma(x, sig), atol=1e-8, rtol=0)


def test_brute_force_images_chunking_and_precision(split):
    data = split.train_x[:300]
    g = torch.Generator().manual_seed(2)
    x = data[:40] + 0.7 * torch.randn(40, 1, 8, 8, generator=g)
    sigma = torch.exp(torch.linspace(math.log(0.1), math.log(20.0), 40))
    ref = _brute(x, data, sigma.double()).reshape(x.shape)
    exact = EmpiricalDenoiser(data, dtype=torch.float64, chunk_size=37)(x.double(), sigma.double())
    assert torch.allclose(exact, ref, atol=1e-10)
    for chunk in (1, 64, 10_000):  # the streaming log-sum-exp gives the same result for any block size
        out = EmpiricalDenoiser(data, chunk_size=chunk)(x, sigma)
        assert out.dtype == torch.float32 and out.shape == x.shape
        assert torch.allclose(out.double(), ref, atol=2e-5), chunk
    # float64 option: float32 in, float32 out, computed in float64 (rounding of the output only)
    out64 = EmpiricalDenoiser(data, dtype=torch.float64)(x, sigma)
    assert out64.dtype == torch.float32
    assert torch.allclose(out64.double(), ref, atol=1e-6)


def test_large_sigma_is_the_mean_and_class_conditioning(split):
    den = EmpiricalDenoiser(split.train_x, split.train_y)
    assert den.num_classes == 10 and den.null_label == 10
    x = torch.zeros(10, 1, 8, 8)
    # σ = 1e4: the weights differ from uniform by |x - x_i|²/(2σ²) ~ 1e-7: the (class) mean to 1e-5
    far = den(x, 1e4, class_labels=torch.arange(10))
    for c in range(10):
        assert torch.allclose(far[c], split.train_x[split.train_y == c].mean(0), atol=1e-5)
    assert torch.allclose(den(x, 1e4), split.train_x.mean(0).expand(10, 1, 8, 8), atol=1e-5)
    # conditional = the empirical denoiser of that class's images; the null label = every image
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(30, 1, 8, 8, generator=g)
    labels = torch.randint(0, 11, (30,), generator=g)
    out = den(xs, 0.8, class_labels=labels)
    for c in range(11):
        rows = labels == c
        if rows.any():
            sub = split.train_x if c == 10 else split.train_x[split.train_y == c]
            assert torch.allclose(out[rows], EmpiricalDenoiser(sub)(xs[rows], 0.8), atol=1e-6)
    # classifier-free guidance wraps it like a trained denoiser; w = 0 is the conditional denoiser
    cfg = sf.ClassifierFreeGuidance(den, guidance=0.0)
    assert torch.equal(cfg(xs, 0.8, class_labels=labels), out)
    w2 = cfg(xs, 0.8, class_labels=torch.zeros(30, dtype=torch.long), guidance=2.0)
    c0 = den(xs, 0.8, class_labels=torch.zeros(30, dtype=torch.long))
    assert torch.allclose(w2, 3 * c0 - 2 * den(xs, 0.8), atol=1e-5)


def test_heun_pf_ode_samples_land_on_training_images(split):
    # The exact PF-ODE of the empirical law ends on training points: at σ_min = 0.002 the softmax puts
    # weight exp(-(d₂² - d₁²)/(2σ²)) ~ exp(-0.9²/8e-6) = 0 on every image but the nearest, and the last
    # Euler step to σ = 0 returns D itself; so each sample IS a training image up to float32 rounding.
    den = EmpiricalDenoiser(split.train_x, split.train_y)
    g = torch.Generator().manual_seed(4)
    x_t = 80.0 * torch.randn(64, 1, 8, 8, generator=g)
    sig = sf.karras_sigmas(18, 0.002, 80.0)
    out = sf.sample_heun(den, x_t, sig).x
    dist, index = den.nearest(out)
    assert float(dist.max()) < 1e-4
    assert len(set(index.tolist())) > 50  # different starts reach different images (not one mode)
    labels = torch.arange(64) % 10
    cond = sf.sample_heun(den, x_t, sig, model_kwargs={"class_labels": labels}).x
    dist_c, index_c = den.nearest(cond)
    assert float(dist_c.max()) < 1e-4
    assert torch.equal(split.train_y[index_c], labels)  # each lands on an image of the requested class


def test_errors(split):
    den = EmpiricalDenoiser(split.train_x[:50], split.train_y[:50])
    x = torch.zeros(3, 1, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        den(torch.zeros(3, 64), 1.0)
    with pytest.raises(TypeError, match="floating-point"):
        den(torch.zeros(3, 1, 8, 8, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        den(x, -1.0)
    with pytest.raises(ValueError, match="sigma must be a scalar"):
        den(x, torch.ones(4))
    with pytest.raises(ValueError, match="class_labels must lie"):
        den(x, 1.0, class_labels=torch.tensor([0, 1, 11]))
    with pytest.raises(TypeError, match="integer"):
        den(x, 1.0, class_labels=torch.zeros(3))
    with pytest.raises(ValueError, match="without labels"):
        EmpiricalDenoiser(split.train_x[:5])(x, 1.0, class_labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have shape"):
        EmpiricalDenoiser(split.train_x[:5], split.train_y[:4])
    with pytest.raises(ValueError, match="finite"):
        EmpiricalDenoiser(torch.full((3, 2), float("nan")))
    with pytest.raises(ValueError, match="dtype"):
        EmpiricalDenoiser(split.train_x[:5], dtype=torch.float16)
    with pytest.raises(ValueError, match="chunk_size"):
        EmpiricalDenoiser(split.train_x[:5], chunk_size=0)


def test_jacobian_is_the_posterior_covariance_over_sigma_squared(split):
    # ∂D/∂x = Cov[x_0 | x] / σ² for any Gaussian-noise posterior mean (Tweedie); for the empirical law
    # Cov = Σ r_i x_i x_iᵀ − D Dᵀ with r the softmax weights. Autograd through the exact distances agrees.
    data = split.train_x[:200].reshape(200, -1).double()
    den = EmpiricalDenoiser(data, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    x = data[:1] + 0.6 * torch.randn(1, 64, generator=g, dtype=torch.float64)
    sigma = 0.6
    jac = torch.autograd.functional.jacobian(lambda v: den(v, sigma), x).reshape(64, 64)
    r = torch.softmax(-((x - data) ** 2).sum(1) / (2 * sigma**2), 0)
    d = r @ data
    cov = (data * r[:, None]).T @ data - torch.outer(d, d)
    assert torch.allclose(jac, cov / sigma**2, atol=1e-9)


def test_works_on_latent_codes(split):
    # Any event shape: e.g. (B, k) latent codes of an encoder, with labels.
    codes = torch.randn(300, 12, generator=torch.Generator().manual_seed(6))
    labels = torch.arange(300) % 10
    den = EmpiricalDenoiser(codes, labels)
    z = sf.sample_heun(den, 80.0 * torch.randn(20, 12, generator=torch.Generator().manual_seed(7)),
                       sf.karras_sigmas(18, 0.002, 80.0), model_kwargs={"class_labels": labels[:20]}).x
    dist, index = den.nearest(z, labels[:20])
    assert float(dist.max()) < 1e-4 and torch.equal(labels[index], labels[:20])
