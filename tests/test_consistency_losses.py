"""Consistency losses and schedules: the CD loss at f* converges at the teacher step's order, the schedules'
invariants, the pseudo-Huber limits, and which role gets gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdeflow.consistency.function import ConsistencyFunction
from sdeflow.consistency.losses import (
    ConsistencyDistillation,
    ConsistencyTraining,
    ContinuousConsistency,
    EasyConsistencyTuning,
)
from sdeflow.consistency.presets import PRESETS, cm2023, ict2023
from sdeflow.consistency.schedules import (
    cm_ema_rate,
    cm_num_steps,
    ect_ratio,
    ect_stage,
    ict_num_steps,
    karras_grid,
    linear_warmup,
    lognormal_index_weights,
)
from sdeflow.generative.losses import PseudoHuber, SquaredL2
from sdeflow.generative.networks import MLPNet

F64 = torch.float64
EPS = 0.002


def gaussian_teacher(m: float, s: float):
    """The exact denoiser of N(m, s² I) data: D(x, σ) = m + s²/(s² + σ²) (x − m)."""

    def D(x, sigma):  # noqa: N802
        sig = sigma.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return m + s * s / (s * s + sig * sig) * (x - m)

    return D


def gaussian_f_star(m: float, s: float, eps: float = EPS):
    """The exact consistency function of N(m, s² I) data (docs/concepts.md §6)."""

    def f(x, t):
        tt = t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return m + (x - m) * torch.sqrt((s * s + eps * eps) / (s * s + tt * tt))

    return f


# -- the property test: the CD loss at f* shrinks at the teacher step's order --------------------
ORDERS = {"euler": 1, "heun": 2, "dpmpp_2m": 1}  # dpmpp_2m's first step (no history) is first order


def _cd_loss_at_f_star(solver: str, m: float, s: float, t: float, h: float, d: int) -> float:
    """Mean CD loss on the one interval [t, t + h] with target = student = f* (float64, fixed draws)."""
    loss = ConsistencyDistillation(gaussian_teacher(m, s), solver=solver, n_points=2, eps=t, T=t + h,
                                   target="student")
    gen = torch.Generator().manual_seed(0)
    x0 = m + s * torch.randn(256, d, generator=gen, dtype=F64)
    noise = torch.randn(256, d, generator=gen, dtype=F64)
    return float(loss(gaussian_f_star(m, s), x0, n=0, noise=noise).mean())


@given(solver=st.sampled_from(sorted(ORDERS)), m=st.floats(-2.0, 2.0), s=st.floats(0.2, 3.0),
       t=st.floats(0.05, 20.0), d=st.integers(1, 4))
@settings(max_examples=20)
def test_cd_loss_at_exact_consistency_function_has_the_teacher_order(solver, m, s, t, d):
    # f*(x̂_n, t_n) − f*(x_{n+1}, t_{n+1}) = c(t_n)(x̂_n − x_n): the loss is the squared local error of one
    # step, O(h^{2(p+1)}). Halving h must divide sqrt(loss) by 2^{p+1}; the band ±0.35 on the measured
    # exponent allows the next term of the error expansion at these step sizes (h/t = 0.1 and 0.05).
    p = ORDERS[solver]
    h = 0.1 * t
    e1 = math.sqrt(_cd_loss_at_f_star(solver, m, s, t, h, d))
    e2 = math.sqrt(_cd_loss_at_f_star(solver, m, s, t, h / 2, d))
    assert e1 > 0 and e2 > 0
    slope = math.log2(e1 / e2)
    assert p + 1 - 0.35 < slope < p + 1 + 0.35, (solver, slope)


def test_cd_loss_at_f_star_is_zero_for_the_exact_flow_and_positive_for_a_wrong_f():
    # Sanity of the test above: the loss of f* (Heun, N = 18: only the teacher's local errors) is far below
    # that of f(x, t) = x, which is not constant along trajectories (its loss is E‖x_{n+1} − x̂_n‖²).
    m, s = 0.5, 1.0
    loss = ConsistencyDistillation(gaussian_teacher(m, s), solver="heun", n_points=18, target="student")
    gen = torch.Generator().manual_seed(1)
    x0 = m + s * torch.randn(512, 2, generator=gen, dtype=F64)
    exact = loss(gaussian_f_star(m, s), x0, generator=3).mean()
    wrong = loss(lambda x, t: x, x0, generator=3).mean()
    assert float(exact) < 1e-3 * float(wrong)


# -- schedules -------------------------------------------------------------------------------------------
@given(K=st.integers(1, 5000), s0=st.integers(1, 20), extra=st.integers(0, 300))
def test_cm_num_steps_non_decreasing_within_bounds(K, s0, extra):  # noqa: N803
    s1 = s0 + extra
    ks = sorted({0, K, *range(0, K + 1, max(1, K // 37))})
    ns = [cm_num_steps(k, K, s0, s1) for k in ks]
    assert all(a <= b for a, b in zip(ns, ns[1:], strict=False))
    assert ns[0] == s0 and ns[-1] == s1 + 1
    assert all(s0 <= n <= s1 + 1 for n in ns)
    mus = [cm_ema_rate(k, K, s0, s1, 0.9) for k in ks]
    assert all(0.0 < mu < 1.0 for mu in mus)
    assert all(a <= b for a, b in zip(mus, mus[1:], strict=False))  # μ(k) rises with N(k)


def test_cm_schedule_values_of_the_paper():
    # CIFAR-10 CT: s0 = 2, s1 = 150, μ0 = 0.9 -> N(0) = s0 = 2, N(K) = s1 + 1 = 151, μ(0) = μ0, μ(K) = 0.9^(2/151).
    assert cm_num_steps(0, 800_000) == 2 and cm_num_steps(800_000, 800_000) == 151
    assert cm_ema_rate(0, 800_000) == pytest.approx(0.9, rel=1e-12)
    assert cm_ema_rate(800_000, 800_000) == pytest.approx(0.9 ** (2 / 151), rel=1e-12)


@given(K=st.integers(1, 100_000), s0=st.integers(1, 16), doublings=st.integers(0, 8))
def test_ict_curriculum_doubles_within_bounds(K, s0, doublings):  # noqa: N803
    s1 = s0 * 2**doublings
    ks = sorted({0, K, *range(0, K + 1, max(1, K // 50))})
    ns = [ict_num_steps(k, K, s0, s1) for k in ks]
    assert all(a <= b for a, b in zip(ns, ns[1:], strict=False))
    assert ns[0] == s0 + 1 and all(s0 + 1 <= n <= s1 + 1 for n in ns)
    intervals = {n - 1 for n in ns}
    assert all(v == s1 or (v // s0) & (v // s0 - 1) == 0 for v in intervals)  # s0 · 2^j until capped
    if K >= doublings + 1:
        assert ns[-1] == s1 + 1


def test_ict_curriculum_of_the_paper():
    # 10 -> 1280 in eight stages over K = 400k: K' = 50k.
    K = 400_000  # noqa: N806
    assert [ict_num_steps(k, K) for k in (0, 49_999, 50_000, 350_000, 399_999)] == [11, 11, 21, 1281, 1281]


@given(n=st.integers(2, 400), P_mean=st.floats(-3.0, 3.0), P_std=st.floats(0.2, 4.0))
def test_lognormal_weights_positive_and_sum_to_one(n, P_mean, P_std):  # noqa: N803
    w = lognormal_index_weights(karras_grid(n), P_mean, P_std)
    assert w.shape == (n - 1,) and bool((w > 0).all())
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)


def test_lognormal_weights_match_the_erf_formula():
    grid = karras_grid(11)
    z = (torch.log(grid) + 1.1) / (math.sqrt(2) * 2.0)
    expected = torch.erf(z[1:]) - torch.erf(z[:-1])
    torch.testing.assert_close(lognormal_index_weights(grid), expected / expected.sum())


@given(n=st.integers(2, 2000), eps=st.floats(1e-4, 0.1), T=st.floats(1.0, 200.0), rho=st.floats(1.0, 10.0))
def test_karras_grid_strictly_increasing_with_exact_ends(n, eps, T, rho):  # noqa: N803
    g = karras_grid(n, eps, T, rho)
    assert g.dtype == F64 and g.shape == (n,)
    assert bool((g[1:] > g[:-1]).all())
    assert float(g[0]) == eps and float(g[-1]) == T


@given(t=st.floats(0.003, 80.0), stage=st.integers(0, 12))
def test_ect_ratio_between_eps_and_t_and_shrinking(t, stage):
    tt = torch.tensor([t], dtype=F64)
    r = ect_ratio(tt, stage)
    assert EPS <= float(r) < t
    r_next = ect_ratio(tt, stage + 1)
    assert float(r_next) >= float(r)  # Δt = t − r does not grow from one stage to the next
    if stage == 0:
        assert float(r) == EPS  # stage 0: the denoising objective


def test_ect_stage_and_warmup():
    assert [ect_stage(k, 800, 8) for k in (0, 99, 100, 799, 800)] == [0, 0, 1, 7, 7]
    assert linear_warmup(0, 10) == pytest.approx(0.1) and linear_warmup(50, 10) == 1.0 and linear_warmup(3, 0) == 1.0


# -- distances ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("elementwise", [False, True])
def test_pseudo_huber_limits(elementwise):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 3, generator=gen, dtype=F64), torch.randn(64, 3, generator=gen, dtype=F64)
    l2 = SquaredL2()(a, b)
    # c = 1e3: the L2/(2c) limit to 1e-5 (next term ‖d‖²/(4c²) ~ 1e-5 for ‖d‖ ≲ 5); a much larger c loses
    # digits to the cancellation in sqrt(‖d‖² + c²) − c (about 1e-16·c²/‖d‖² relative).
    big = 1e3
    torch.testing.assert_close(PseudoHuber(big, elementwise=elementwise)(a, b) * 2 * big, l2, rtol=1e-5, atol=0)
    small = PseudoHuber(1e-9, elementwise=elementwise)(a, b)
    l1 = (a - b).abs().sum(-1) if elementwise else (a - b).norm(dim=-1)
    torch.testing.assert_close(small, l1, rtol=1e-7, atol=1e-8)


# -- roles -----------------------------------------------------------------------------------------------
def _student(seed: int = 0, parameterization: str = "cm") -> ConsistencyFunction:
    net = MLPNet(2, hidden=16, depth=1, emb_dim=8, zero_init=False, seed=seed)
    return ConsistencyFunction(net, sigma_data=1.0, parameterization=parameterization).double()


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def test_target_student_gets_no_gradient():
    # With target="student" the gradient is that of d(f(x_{n+1}), c) with c a constant: the target side
    # is stop-gradient. Recompute it by hand with the same draws and compare.
    student = _student()
    m, s = 0.0, 1.0
    loss = ConsistencyDistillation(gaussian_teacher(m, s), solver="heun", n_points=10, target="student")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(32, 2, generator=gen, dtype=F64)
    noise = torch.randn(32, 2, generator=gen, dtype=F64)
    n = torch.randint(0, 9, (32,), generator=gen)
    loss(student, x0, n=n, noise=noise).sum().backward()
    got = _grads(student)
    student.zero_grad(set_to_none=True)
    grid = loss.grid(10)
    t_lo, t_hi = grid[n], grid[n + 1]
    x_hi = x0 + t_hi[:, None] * noise
    from sdeflow.consistency.losses import teacher_step

    x_lo = teacher_step(gaussian_teacher(m, s), "heun", x_hi, t_hi, t_lo)
    with torch.no_grad():
        const = student(x_lo, t_lo)
    (student(x_hi, t_hi) - const).square().sum().backward()
    for g1, g2 in zip(got, _grads(student), strict=True):
        torch.testing.assert_close(g1, g2)
    assert any(float(g.abs().max()) > 0 for g in got)


def test_ema_target_gets_no_gradient_and_must_be_bound():
    student, target = _student(0), _student(1)
    loss = ConsistencyTraining(8, target="ema")
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(ValueError, match="target='ema'"):
        loss(student, x0, generator=0)
    loss.set_target(target)
    loss(student, x0, generator=0).mean().backward()
    assert all(p.grad is None for p in target.parameters())
    assert any(p.grad is not None for p in student.parameters())


def test_bind_requires_the_target_copy():
    from sdeflow.generative.training import EMA, TrainConfig, Trainer

    student = _student().float()
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="no EMA copy named 'target'"):
        Trainer(student, ConsistencyTraining(8), data, TrainConfig(iters=2, batch_size=16))
    tr = Trainer(student, ConsistencyTraining("cm", iters=100), data,
                 TrainConfig(iters=2, batch_size=16, ema=(EMA("target", beta=0.9), EMA("ema", beta=0.99))))
    assert tr.loss.target_model is tr.ema["target"]
    assert tr.loss.ema_beta("target", 50) == pytest.approx(cm_ema_rate(50, 100))
    assert tr.loss.ema_beta("ema", 50) is None


def test_ct_uses_the_same_noise_at_both_points():
    # With f = identity-like exact function of x0: x_hi − x_lo = (t_hi − t_lo) z, so a target f(x, t) = x
    # gives d = (t_hi − t_lo)² ‖z‖² for a student f(x, t) = x.
    loss = ConsistencyTraining(6, target="student")
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    z = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    n = torch.arange(8) % 5
    ident = lambda x, t: x  # noqa: E731
    g = loss.grid(6)
    expected = (g[n + 1] - g[n]) ** 2 * z.square().sum(-1)
    torch.testing.assert_close(loss(ident, x0, n=n, noise=z), expected)


def test_ect_and_scm_losses_run_and_check_their_student():
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ect = EasyConsistencyTuning(iters=100)
    out = ect(_student(), x0, generator=0, step=99)
    assert out.shape == (16,) and bool(torch.isfinite(out).all())
    # stage 0: r = ε, where f(x, ε) = x exactly: the ECT loss is the denoising loss against x0 itself
    sig = torch.full((16,), 3.0, dtype=F64)
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    st0 = EasyConsistencyTuning(iters=100, distance=SquaredL2(), weighting="uniform")
    x_r = x0 + EPS * z
    f = _student()
    torch.testing.assert_close(st0(f, x0, step=0, sigma=sig, noise=z), (f(x0 + 3.0 * z, sig) - x_r).square().sum(-1))
    scm = ContinuousConsistency(gaussian_teacher(0.0, 1.0), sigma_data=1.0, warmup=10)
    with pytest.raises(ValueError, match="trigflow"):
        scm(_student(), x0, generator=0)
    for step in (0, 20):  # in warm-up and after
        v = scm(_student(parameterization="trigflow"), x0, generator=0, step=step)
        assert v.shape == (16,) and bool(torch.isfinite(v).all())


def test_scm_tangent_matches_finite_differences_without_normalisation():
    # With tangent_c = 0 (no normalisation) and no warm-up, the loss at θ = θ⁻ is sCM's ‖g‖², g = cos t · T with
    # T = dσ/dt · df/dσ along the teacher's PF-ODE and cos t = σ_d/√(σ² + σ_d²). Check it against a central
    # difference of f along the exact Gaussian flow x(σ) = m + (x − m)√(s² + σ²)/√(s² + σ₀²) (h = 1e-5: error
    # O(h²) ≪ rtol).
    m, s, sd, s0 = 0.0, 1.0, 1.0, 1.5
    f = _student(parameterization="trigflow")
    scm = ContinuousConsistency(gaussian_teacher(m, s), sigma_data=sd, tangent_c=0.0, warmup=0)
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    sig = torch.full((4,), s0, dtype=F64)
    x = x0 + s0 * z
    h = 1e-5

    def flow(sv):
        return m + (x - m) * math.sqrt((s * s + sv * sv) / (s * s + s0**2))

    with torch.no_grad():
        fd = (f(flow(s0 + h), sig + h) - f(flow(s0 - h), sig - h)) / (2 * h)
    tangent = (s0**2 + sd**2) / sd * fd
    g = sd / math.sqrt(s0**2 + sd**2) * tangent
    torch.testing.assert_close(scm(f, x0, sigma=sig, noise=z), g.square().sum(-1), rtol=1e-6, atol=1e-10)
    # with normalisation c > 0: the loss is ‖g‖²/(‖g‖ + c)² < 1
    scm_n = ContinuousConsistency(gaussian_teacher(m, s), sigma_data=sd, tangent_c=0.1, warmup=0)
    nrm = g.norm(dim=-1)
    torch.testing.assert_close(scm_n(f, x0, sigma=sig, noise=z), (nrm / (nrm + 0.1)) ** 2, rtol=1e-6, atol=1e-10)


def test_presets_are_frozen_and_cited():
    for name, cls in PRESETS.items():
        p = cls()
        with pytest.raises(AttributeError):
            p.__setattr__("eps", 1.0)  # frozen
        assert cls.__doc__ and "Attributes" in cls.__doc__, name
    assert cm2023().cd_n_points == 18 and cm2023().cd_target_ema == 0.95
    assert ict2023().huber_c(3 * 32 * 32) == pytest.approx(0.00054 * math.sqrt(3072))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="solver"):
        ConsistencyDistillation(gaussian_teacher(0, 1), solver="rk4")
    with pytest.raises(TypeError, match="teacher"):
        ConsistencyDistillation(3)
    with pytest.raises(ValueError, match="target"):
        ConsistencyTraining(8, target="copy")
    with pytest.raises(ValueError, match="steps"):
        ConsistencyTraining(1)
    with pytest.raises(ValueError, match="weighting"):
        ConsistencyTraining(8, weighting="snr")
    with pytest.raises(ValueError, match="n must be"):
        ConsistencyTraining(4, target="student")(lambda x, t: x, torch.zeros(2, 2), n=5)
    with pytest.raises(ValueError, match="grid"):
        lognormal_index_weights(torch.tensor([1.0, 0.5]))


@pytest.mark.parametrize("parameterization", ["trigflow", "cm"])
def test_scm_gradient_is_the_continuous_limit_of_the_cd_gradient(parameterization):
    # At θ = θ⁻ the sCM gradient (2/κ) Jᵀ g (no normalisation) and the CD gradient on the interval [σ, σ + h]
    # (Heun teacher, same x0 and z) are parallel up to O(h): cosine 1 − 1e-6 for h = 1e-4 (float64).
    f = _student(parameterization=parameterization)
    gen = torch.Generator().manual_seed(0)
    x0, z = torch.randn(64, 2, generator=gen, dtype=F64), torch.randn(64, 2, generator=gen, dtype=F64)
    s, h = 2.0, 1e-4
    teacher = gaussian_teacher(0.3, 1.0)
    scm = ContinuousConsistency(teacher, sigma_data=1.0, tangent_c=0.0, warmup=0, require_trigflow=False)
    scm(f, x0, sigma=torch.full((64,), s, dtype=F64), noise=z).sum().backward()
    g_scm = torch.cat([p.grad.flatten() for p in f.parameters()])
    f.zero_grad(set_to_none=True)
    cd = ConsistencyDistillation(teacher, solver="heun", n_points=2, eps=s, T=s + h, target="student")
    cd(f, x0, n=0, noise=z).sum().backward()
    g_cd = torch.cat([p.grad.flatten() for p in f.parameters()])
    assert float(torch.nn.functional.cosine_similarity(g_scm, g_cd, dim=0)) > 1 - 1e-6
