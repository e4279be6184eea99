"""The native engine under torch.compile, and on CUDA (skipped without a GPU)."""

import pytest
import torch
import torchsde

import sdeflow as sf
from sdeflow.solve.native import SDE_METHODS


@pytest.mark.slow
def test_native_steps_compile_without_graph_breaks():
    ou = sf.OrnsteinUhlenbeck(1.0, 0.5, 0.3)
    x = torch.randn(16, 4)
    dw = torch.randn(16, 4) * 0.1
    u = torch.randn(16, 4) * 0.01
    t0, t1 = torch.tensor(0.0), torch.tensor(0.01)
    for name in ("euler", "heun", "sra1"):
        step = SDE_METHODS[name](ou).step
        compiled = torch.compile(step, fullgraph=True, dynamic=False)
        torch.testing.assert_close(compiled(t0, t1, 0.01, x, dw, u), step(t0, t1, 0.01, x, dw, u))


CUDA = pytest.mark.cuda


class AdditiveOU(sf.SDE):
    """OU written with noise_type='additive' (G of shape (B, d, d)), so torchsde's srk uses SRA1 too."""

    noise_type = "additive"

    def drift(self, t, x):
        return -x

    def diffusion(self, t, x):
        return 0.5 * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device).expand(x.shape + (x.shape[-1],))


@CUDA
@pytest.mark.parametrize("method", ["euler", "milstein", "heun", "srk"])
def test_cuda_native_matches_torchsde_on_the_same_path(method):
    if method == "srk":
        sde = AdditiveOU()
    else:
        sde = sf.GeometricBrownianMotion(0.2, 0.4)
    if method == "heun":
        sde = sf.to_stratonovich(sde)
    sde = sde.to("cuda")
    b = 256
    x0 = torch.ones(b, 3, dtype=torch.float64, device="cuda")
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(b, 3), dtype=torch.float64, entropy=1, device="cuda",
                                   levy_area_approximation="space-time")
    nat = sf.simulate(sde, x0, [0.0, 1.0], dt=2**-6, method=method, bm=bm, backend="native")
    ref = sf.simulate(sde, x0, [0.0, 1.0], dt=2**-6, method=method, bm=bm, backend="torchsde")
    assert nat.xs.device.type == "cuda" and ref.xs.device.type == "cuda"
    torch.testing.assert_close(nat.xs, ref.xs, rtol=1e-9, atol=1e-9)


@CUDA
def test_cuda_generator_reproducible_and_torchsde_backend():
    ou = sf.OrnsteinUhlenbeck().to("cuda")
    x0 = torch.zeros(4096, 16, device="cuda")
    a = sf.simulate(ou, x0, [0.0, 1.0], dt=1e-2, generator=3)
    b = sf.simulate(ou, x0, [0.0, 1.0], dt=1e-2, generator=torch.Generator("cuda").manual_seed(3))
    assert torch.equal(a.xs, b.xs)
    std = float(a.final.std())
    assert abs(std - float(sf.OrnsteinUhlenbeck().marginal_std(torch.tensor(1.0)))) < 0.01
    c = sf.simulate(ou, x0[:64], [0.0, 1.0], dt=1e-2, generator=3, backend="torchsde")
    assert c.xs.device.type == "cuda"


@CUDA
def test_cuda_device_mismatch_message():
    with pytest.raises(ValueError, match="move one of them"):
        sf.simulate(sf.OrnsteinUhlenbeck(), torch.zeros(2, 1, device="cuda"), [0, 1], dt=0.1)


@CUDA
def test_cuda_native_loop_never_synchronises_with_the_host():
    import numpy as np

    from sdeflow.solve.grid import build_grid
    from sdeflow.solve.native.engine import integrate_sde
    from sdeflow.solve.noise import GaussianIncrements

    ou = sf.OrnsteinUhlenbeck().to("cuda")
    x0 = torch.zeros(1024, 4, device="cuda")
    grid = build_grid(np.array([0.0, 0.5, 1.0]), 1e-2)
    gen = torch.Generator("cuda").manual_seed(0)
    noise = GaussianIncrements(tuple(x0.shape), grid.dts, generator=gen, device=x0.device, dtype=x0.dtype)
    method = SDE_METHODS["euler"](ou)
    ou.drift(torch.tensor(0.0, device="cuda"), x0)  # fill the dtype cache outside the checked region
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = integrate_sde(method, x0, grid.times, grid.save_index, noise)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(out) == 3


@CUDA
@pytest.mark.slow
def test_cuda_fused_matches_eager():
    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5).to("cuda")
    x0 = torch.zeros(4096, 16, device="cuda", dtype=torch.float64)
    a = sf.simulate(ou, x0, [0.0, 1.0], dt=1e-2, generator=1, chunk=25)
    b = sf.simulate(ou, x0, [0.0, 1.0], dt=1e-2, generator=1, chunk=25, compile=True)
    torch.testing.assert_close(a.xs, b.xs, rtol=1e-12, atol=1e-12)


def _mlp_denoiser(device):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2)).to(device)

    class Den(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, sigma):
            return x / (1 + sigma[:, None] ** 2) + self.net(torch.cat([x, sigma[:, None].log()], 1))

    return Den()


def _check_sampler_compile(device):
    from sdeflow.generative.samplers import initial_noise, sample_dpmpp_2m, sample_heun
    from sdeflow.generative.schedules import karras_sigmas

    den = _mlp_denoiser(device)
    sched = karras_sigmas(10, 0.002, 80.0)
    x = initial_noise((256, 2), sched, generator=0, device=device)
    with torch.no_grad():
        for sampler in (sample_heun, sample_dpmpp_2m):
            a = sampler(den, x, sched)
            b = sampler(den, x, sched, compile=True)
            torch.testing.assert_close(b.x, a.x, rtol=1e-4, atol=1e-4)
            assert b.nfe == a.nfe and "compile_time" in b.info
    with pytest.raises(TypeError, match="compile must be"):
        sample_heun(den, x, sched, compile="yes")


@pytest.mark.slow
def test_sampler_compile_matches_eager_cpu():
    _check_sampler_compile("cpu")


@CUDA
def test_cuda_sampler_compile_matches_eager():
    _check_sampler_compile("cuda")
