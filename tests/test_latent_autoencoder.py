"""Latent spaces: PCA against its closed form, the autoencoder's training, scale, checkpoints."""

import pytest
import torch

import sdeflow as sf
from sdeflow.generative.config import build_model
from sdeflow.latent import Autoencoder, PCALatent, load_digits_split, save_latent, train_autoencoder


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


def test_pca_matches_the_eigendecomposition_closed_form(split):
    x = split.train_x
    pca = PCALatent.fit(x, 12)
    flat = x.reshape(x.shape[0], -1).double()
    lam = torch.linalg.eigvalsh(torch.cov(flat.T)).flip(0)
    assert torch.allclose(pca.variances.double(), lam[:12], rtol=1e-4)
    comps = pca.components.double()
    assert torch.allclose(comps @ comps.T, torch.eye(12, dtype=torch.float64), atol=1e-5)
    # mean squared reconstruction error on the training set = (N-1)/N · Σ of the discarded eigenvalues
    err = (pca.reconstruct(x).double() - x.double()).reshape(x.shape[0], -1).square().sum(1).mean()
    n = x.shape[0]
    assert float(err) == pytest.approx(float((n - 1) / n * lam[12:].sum()), rel=1e-3)
    # the stored scale makes the codes unit-std over all coordinates; leading directions stay widest
    z = pca.encode(x)
    assert float(z.double().std(correction=0)) == pytest.approx(1.0, rel=1e-5)
    assert bool((z.std(0).diff() <= 1e-6).all())
    # deterministic (signs fixed), full rank reconstructs exactly
    assert torch.equal(PCALatent.fit(x, 12).components, pca.components)
    full = PCALatent.fit(x, 64)
    assert torch.allclose(full.reconstruct(split.test_x), split.test_x, atol=1e-4)


def test_pca_saves_and_loads(split, tmp_path):
    pca = PCALatent.fit(split.train_x, 8)
    save_latent(pca, tmp_path / "pca", metadata={"what": "digits"})
    back = sf.load_model(tmp_path / "pca")
    assert isinstance(back, PCALatent) and back.checkpoint_metadata == {"what": "digits"}
    z = pca.encode(split.test_x)
    assert torch.equal(back.encode(split.test_x), z) and torch.equal(back.decode(z), pca.decode(z))
    with pytest.raises(ValueError, match="not fitted"):
        PCALatent(8).encode(split.test_x)
    with pytest.raises(ValueError, match="shape"):
        pca.encode(torch.zeros(3, 64))
    with pytest.raises(ValueError, match="latent_dim=8"):
        pca.decode(torch.zeros(3, 12))
    with pytest.raises(ValueError, match="dim must be <="):
        PCALatent(65)
    with pytest.raises(TypeError, match="registered"):
        save_latent(torch.nn.Linear(2, 2), tmp_path / "x")


def test_autoencoder_training_is_deterministic_calibrated_and_checkpointed(split, tmp_path):
    cfg = sf.TrainConfig(iters=40, batch_size=64, lr=2e-3, seed=0, log_every=10, ema=(sf.EMA("ema", beta=0.9),))
    ae, res = train_autoencoder(split.train_x, latent_dim=10, hidden=64, config=cfg, out_dir=tmp_path / "ae")
    again, _ = train_autoencoder(split.train_x, latent_dim=10, hidden=64, config=cfg)
    assert all(torch.equal(a, b) for a, b in zip(ae.state_dict().values(), again.state_dict().values(), strict=True))
    assert res.steps == 40 and res.history[0]["loss"] > res.history[-2]["loss"]  # the loss went down
    z = ae.encode(split.train_x)
    assert z.shape == (1438, 10) and float(z.double().std(correction=0)) == pytest.approx(1.0, rel=1e-5)
    assert float(ae.scale) != 1.0
    back = sf.load_model(tmp_path / "ae")  # the EMA copy, with its calibrated scale
    assert torch.equal(back.scale, ae.scale) and torch.equal(back.encode(split.test_x), ae.encode(split.test_x))
    rebuilt = build_model(ae.get_config())
    assert isinstance(rebuilt, Autoencoder) and rebuilt.decode(z[:3]).shape == (3, 1, 8, 8)
    out = ae.decode(z[:5])
    assert float(out.abs().max()) <= 1.0  # tanh output: the [-1,1] pixel range
    with pytest.raises(ValueError, match="depth"):
        Autoencoder(depth=0)
    with pytest.raises(ValueError, match="event_shape"):
        Autoencoder(event_shape=[])


@pytest.mark.slow
def test_default_autoencoder_beats_pca_on_held_out(split):
    # The default recipe (3,000 steps, ~20 s on one core): the MLP autoencoder to 12 dims reconstructs
    # held-out digits better than PCA to 12 dims (per-image squared error and classifier features).
    ae, res = train_autoencoder(split.train_x)
    pca = PCALatent.fit(split.train_x, 12)
    mse = lambda m: float((m.reconstruct(split.test_x) - split.test_x).reshape(359, -1).square().sum(1).mean())  # noqa: E731
    assert mse(ae) < mse(pca)
    fd = lambda m: sf.latent.digits_fd(m.reconstruct(split.test_x), "held_out")  # noqa: E731
    assert fd(ae) < fd(pca)
