"""simulate(compile="triton"): the whole-trajectory kernel with in-kernel Philox noise.

The kernel itself runs on CUDA (tests marked ``cuda``) or under Triton's interpreter on a CPU (run in a
subprocess with TRITON_INTERPRET=1, skipped where Triton is not installed, as in CI's CPU build). The
exact checks compare the kernel with an eager Euler/Milstein loop fed the same normals, recomputed
on the host by ``kernel_normals``; so they test the random-stream layout, the coefficient table, the
step arithmetic and the save points at once.
"""

import importlib.util
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy import stats

import sdeflow as sf
from sdeflow.solve.native.triton_linear import _philox4x32, kernel_normals, linear_coefficient_table

HAS_TRITON = importlib.util.find_spec("triton") is not None


def test_philox_matches_random123_known_answers():
    # Known-answer vectors of Philox-4x32-10 from the Random123 distribution (kat_vectors).
    def run(key, ctr):
        words = [np.array([c], dtype=np.uint64) for c in ctr]
        return [int(w[0]) for w in _philox4x32(key[0] | (key[1] << 32), *words)]

    assert run((0, 0), (0, 0, 0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert run((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF,) * 4) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


def test_kernel_normals_are_standard_normal_and_uncorrelated():
    z = kernel_normals(seed=7, numel=4096, n_steps=64).astype(np.float64)  # 262144 normals
    flat = z.ravel()
    # KS at a fixed seed; a correct stream fails this with probability 1e-3
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    n = flat.size
    assert abs(flat.mean()) < 4 / math.sqrt(n)  # 4 standard errors of the mean
    assert abs(flat.var() - 1) < 4 * math.sqrt(2 / n)  # 4 standard errors of the variance
    # neighbouring steps (same Philox call and across calls) and neighbouring elements: correlation
    # of n' pairs has standard error 1/sqrt(n')
    for a, b in ((z[:-1], z[1:]), (z[:, :-1], z[:, 1:])):
        r = float(np.mean(a * b))
        assert abs(r) < 4 / math.sqrt(a.size)
    # a different seed gives a different stream; the same seed the same one
    assert not np.array_equal(kernel_normals(8, 16, 8), kernel_normals(7, 16, 8))
    assert np.array_equal(kernel_normals(7, 16, 8), z[:8, :16].astype(np.float32))


def test_coefficient_table_of_standard_sdes():
    x0 = torch.zeros(5, 3, dtype=torch.float64)
    times = np.linspace(0.0, 1.0, 11)
    ou = sf.OrnsteinUhlenbeck(torch.tensor([1.0, 2.0, 0.5]), 0.3, 0.5)
    table, per_dim = linear_coefficient_table(ou, times, x0)
    assert per_dim and table.shape == (10, 4, 3)
    torch.testing.assert_close(table[:, 0], (-torch.tensor([1.0, 2.0, 0.5]) * 0.1).expand(10, 3).double())
    torch.testing.assert_close(table[:, 3], torch.full((10, 3), 0.5 * math.sqrt(0.1), dtype=torch.float64))
    vp = sf.VPSDE()
    table, per_dim = linear_coefficient_table(vp, times, x0)
    assert not per_dim and table.shape == (10, 4, 1)
    beta = vp.beta(torch.as_tensor(times[:-1]))
    torch.testing.assert_close(table[:, 0, 0], -0.5 * beta * 0.1)
    torch.testing.assert_close(table[:, 3, 0], torch.sqrt(beta * 0.1))


def test_coefficient_table_is_cached_and_invalidated_by_parameter_updates():
    from sdeflow.solve.native.triton_linear import _cached_table

    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    x0 = torch.zeros(3, 2)
    times = np.linspace(0.0, 1.0, 11)
    saves = np.array([10])
    t1, _, const = _cached_table(ou, times, x0, saves)
    assert const == {(0, 10): True}
    assert _cached_table(ou, times, x0, saves)[0] is t1  # reused
    ou.sigma.mul_(2.0)  # an in-place update of a parameter buffer
    t2 = _cached_table(ou, times, x0, saves)[0]
    assert t2 is not t1
    torch.testing.assert_close(t2[:, 3], 2 * t1[:, 3])
    t3 = _cached_table(ou, np.linspace(0.0, 1.0, 21), x0, saves * 2)[0]  # another grid: another entry
    assert t3.shape[0] == 20


class _Cubic(sf.SDE):
    elementwise_affine = True  # a false claim: the drift is cubic

    def drift(self, t, x):
        return -(x**3)

    def diffusion(self, t, x):
        return torch.ones_like(x)


def test_false_affine_claim_is_caught():
    with pytest.raises(ValueError, match="not affine"):
        linear_coefficient_table(_Cubic(), np.linspace(0, 1, 5), torch.zeros(4, 2))


def test_triton_argument_errors():
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="compile must be"):
        sf.simulate(sf.OrnsteinUhlenbeck(), x0, [0.0, 1.0], dt=0.1, compile="fast")
    with pytest.raises(ValueError, match="does not propagate gradients"):
        sf.simulate(sf.OrnsteinUhlenbeck(), x0.clone().requires_grad_(), [0.0, 1.0], dt=0.1, compile="triton")
    if os.environ.get("TRITON_INTERPRET") != "1":  # on a CPU the kernel needs the interpreter
        with pytest.raises(ValueError, match="compile=True"):
            sf.simulate(sf.OrnsteinUhlenbeck(), x0, [0.0, 1.0], dt=0.1, compile="triton")


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed (the CPU build of torch does not ship it)")
def test_triton_kernel_under_the_interpreter():
    script = textwrap.dedent(
        """
        import numpy as np, torch, sdeflow as sf
        from tests.test_triton import check_against_reference, check_errors
        check_against_reference("cpu")
        check_errors("cpu")
        print("ok")
        """
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr


# -- checks shared by the interpreter run and the CUDA tests ------------------------------------------------
def _eager_reference(sde, x0, ts, dt, seed, method):
    """Euler / Milstein with the kernel's normals, in the working (increasing) time."""
    from sdeflow.sde.base import TimeFlipped, diffusion_times_derivative
    from sdeflow.solve.grid import build_grid

    ts = np.asarray(ts, dtype=np.float64)
    decreasing = ts[0] > ts[-1]
    work, s = (TimeFlipped(sde), -ts) if decreasing else (sde, ts)
    grid = build_grid(s, dt)
    n = grid.n_steps
    z = torch.from_numpy(kernel_normals(seed, x0.numel(), n)).to(x0.dtype).reshape((n,) + tuple(x0.shape))
    z = z.to(x0.device)
    x, out = x0, [x0]
    for i in range(n):
        t = torch.tensor(grid.times[i], dtype=x0.dtype, device=x0.device)
        h = float(grid.times[i + 1] - grid.times[i])
        g = work.diffusion(t, x)
        dw = z[i] * math.sqrt(h)
        new = x + work.drift(t, x) * h + g * dw
        if method == "milstein":
            new = new + 0.5 * diffusion_times_derivative(work, t, x, g) * (dw * dw - h)
        x = new
        if (i + 1) in set(grid.save_index.tolist()):
            out.append(x)
    return torch.stack(out)


def _seed_of(generator: int, device: str) -> int:
    from sdeflow.solve.simulate import _philox_seed

    return _philox_seed(torch.Generator(device=device).manual_seed(generator))


def check_against_reference(device: str) -> None:
    cases = [
        (sf.OrnsteinUhlenbeck(torch.tensor([1.0, 2.0, 0.5]), 0.3, 0.5), "euler", torch.float32,
         [0.0, 0.13, 0.5]),
        (sf.GeometricBrownianMotion(0.2, 0.4), "milstein", torch.float64, [0.0, 0.3, 0.5]),
        (sf.VPSDE(), "euler", torch.float64, [1.0, 0.4, 0.001]),  # backward in time
        (sf.VESDE(), "milstein", torch.float64, [0.0, 0.5]),
        (sf.OrnsteinUhlenbeck(1.5, -0.2, 0.8), "euler", torch.float64, [0.0, 0.16, 0.37]),  # shorter last steps
        (sf.BrownianMotion(0.3, 0.6), "milstein", torch.float32, [0.0, 0.4]),  # constant table, one segment
    ]
    for sde, method, dtype, ts in cases:
        sde = sde.to(device)
        x0 = torch.linspace(0.5, 1.5, 37 * 3, dtype=dtype, device=device).reshape(37, 3)
        sol = sf.simulate(sde, x0, ts, dt=0.02, method=method, compile="triton", generator=11)
        ref = _eager_reference(sde, x0, ts, 0.02, _seed_of(11, device), method)
        # Under the interpreter the normals are bit-identical to the host's and only the order of float
        # sums differs. On a GPU, Triton's sin/cos/log approximations differ from the host's libm by up to
        # ~4e-7 per unit of the Box-Muller radius (|z| <= 6.7), i.e. up to ~3e-6 in a normal (measured on
        # an H200: 8e-6 in one of 333 states after 50 steps), whatever the state's dtype.
        tol = 3e-5 if device == "cuda" else (1e-5 if dtype == torch.float32 else 1e-9)
        torch.testing.assert_close(sol.xs, ref, rtol=tol, atol=tol)
        fin = sf.simulate(sde, x0, ts, dt=0.02, method=method, compile="triton", generator=11, save="final")
        assert torch.equal(fin.xs[-1], sol.xs[-1])  # the stream does not depend on the save points
        again = sf.simulate(sde, x0, ts, dt=0.02, method=method, compile="triton", generator=11)
        assert torch.equal(again.xs, sol.xs)
        other = sf.simulate(sde, x0, ts, dt=0.02, method=method, compile="triton", generator=12)
        assert not torch.equal(other.xs[-1], sol.xs[-1])


def check_errors(device: str) -> None:
    x0 = torch.zeros(4, 2, device=device)
    with pytest.raises(ValueError, match="elementwise_affine"):
        sf.simulate(sf.to_stratonovich(sf.OrnsteinUhlenbeck()).to(device), x0, [0.0, 1.0], dt=0.1, method="heun",
                    compile="triton")
    with pytest.raises(ValueError, match="implements method"):
        sf.simulate(sf.OrnsteinUhlenbeck().to(device), x0, [0.0, 1.0], dt=0.1, method="sra1", compile="triton")
    with pytest.raises(ValueError, match="drop bm"):
        import torchsde

        bm = torchsde.BrownianInterval(0.0, 1.0, size=(4, 2), device=device)
        sf.simulate(sf.OrnsteinUhlenbeck().to(device), x0, [0.0, 1.0], dt=0.1, bm=bm, compile="triton")
    with pytest.raises(ValueError, match="float32 or float64"):
        sf.simulate(sf.OrnsteinUhlenbeck().to(device), x0.half(), [0.0, 1.0], dt=0.1, compile="triton")


@pytest.mark.cuda
def test_cuda_triton_matches_the_reference_stream():
    check_against_reference("cuda")
    check_errors("cuda")


@pytest.mark.cuda
def test_cuda_triton_ou_law_at_a_million_paths():
    # Euler–Maruyama on OU has an exact discrete law: mean m + (x0 - m)(1 - θh)^n and variance
    # σ² h Σ_k (1 - θh)^{2k}. With 2^20 x 4 samples, 5 standard errors of mean and variance.
    theta, mean, sigma, h, n = 1.0, 0.5, 0.7, 1e-3, 1000
    ou = sf.OrnsteinUhlenbeck(theta, mean, sigma).to("cuda")
    x0 = torch.full((2**20, 4), 2.0, device="cuda")
    sol = sf.simulate(ou, x0, [0.0, n * h], dt=h, compile="triton", generator=0, save="final")
    x = sol.final.double()
    r = 1 - theta * h
    m_ref = mean + (2.0 - mean) * r**n
    v_ref = sigma**2 * h * (1 - r ** (2 * n)) / (1 - r**2)
    k = x.numel()
    assert abs(float(x.mean()) - m_ref) < 5 * math.sqrt(v_ref / k)
    assert abs(float(x.var()) - v_ref) < 5 * v_ref * math.sqrt(2 / k)
    # elements are independent: the correlation between neighbouring dimensions has s.e. 1/sqrt(2^20)
    c = torch.corrcoef(x[:, :2].T)[0, 1]
    assert abs(float(c)) < 5 / math.sqrt(2**20)


def test_coefficient_tables_stay_out_of_the_sde():
    import copy

    from sdeflow.solve.native.triton_linear import _cached_table

    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    _cached_table(ou, np.linspace(0.0, 1.0, 11), torch.zeros(3, 2), np.array([10]))
    assert not [k for k in vars(ou) if "sdeflow" in k]
    twin = copy.deepcopy(ou)
    t1 = _cached_table(twin, np.linspace(0.0, 1.0, 11), torch.zeros(3, 2), np.array([10]))[0]
    assert t1 is not _cached_table(ou, np.linspace(0.0, 1.0, 11), torch.zeros(3, 2), np.array([10]))[0]


class _EmulatedKernel:
    """The kernel's contract in torch, for CPUs without Triton: steps [step_start, step_end) of
    x + (a x + b) + g z (+ ½ g c (z² − 1)), g = c x + e, with the premultiplied table rows and the
    normals of ``kernel_normals``; updates ``x`` in place like the kernel."""

    def __getitem__(self, grid):
        return self

    def __call__(self, x, coef, numel, dim, coef_dim, step_start, step_end, grp_start, grp_end, seed, *,
                 MILSTEIN, PER_DIM, CONST_COEF, BLOCK, num_warps):  # noqa: N803 (the kernel's names)
        assert grp_start == step_start // 4 and grp_end == (step_end + 3) // 4
        z_all = torch.from_numpy(kernel_normals(seed, numel, step_end)).to(x.dtype)
        flat = x.view(-1)
        cidx = torch.arange(numel) % dim if PER_DIM else torch.zeros(numel, dtype=torch.long)
        for s in range(step_start, step_end):
            a, b, c, e = coef[0 if CONST_COEF else s - step_start][:, cidx]
            z = z_all[s]
            g = c * flat + e
            new = flat + (a * flat + b) + g * z
            if MILSTEIN:
                new = new + 0.5 * g * c * (z * z - 1.0)
            flat.copy_(new)


def test_triton_integrator_with_an_emulated_kernel(monkeypatch):
    # Checks on any machine what the driver hands the kernel: segment bounds, the coefficient rows
    # (constant or not), the seed and the save points, against the eager loop on the same normals.
    import sdeflow.solve.native.triton_linear as tl

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(tl, "_KERNELS", type("K", (), {"affine_sde_kernel": _EmulatedKernel()})())
    cases = [
        (sf.OrnsteinUhlenbeck(torch.tensor([1.0, 2.0, 0.5]), 0.3, 0.5), "euler", [0.0, 0.13, 0.5]),
        (sf.GeometricBrownianMotion(0.2, 0.4), "milstein", [0.0, 0.3, 0.5]),
        (sf.VPSDE(), "euler", [1.0, 0.4, 0.001]),  # backward in time, time-dependent table
        (sf.BrownianMotion(0.3, 0.6), "milstein", [0.0, 0.4]),  # constant table
    ]
    for sde, method, ts in cases:
        x0 = torch.linspace(0.5, 1.5, 12 * 3, dtype=torch.float64).reshape(12, 3)
        for save, progress in (("ts", False), ("ts", True), ("final", False)):
            sol = sf.simulate(sde, x0, ts, dt=0.02, method=method, compile="triton", generator=11, save=save,
                              progress=progress)
            ref = _eager_reference(sde, x0, ts, 0.02, _seed_of(11, "cpu"), method)
            want = ref if save == "ts" else ref[-1:]
            torch.testing.assert_close(sol.xs, want, rtol=1e-9, atol=1e-9)  # float64: summation order only
            # per step one drift and one diffusion (Milstein's derivative is the table's slope), plus the check
            n = sol.stats.steps
            assert sol.stats.diffusion_evals - n in (0, 1) and sol.stats.drift_evals == sol.stats.diffusion_evals
