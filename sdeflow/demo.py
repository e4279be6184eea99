"""``sdeflow demo``: the whole chain on built-in data, each link checked against theory.

1. **Forward SDE** — 8 gaussians under the VP SDE, simulated by the native engine; the simulated
   marginals against the closed-form mixture marginal (energy test, ΔNLL under the exact density);
   the exact density against the Fokker–Planck equation (autograd residual) and the grid
   Fokker–Planck solver against the exact density (L1).
2. **Probability-flow ODE** — samplers with the exact denoiser, error against a tight reference by
   NFE, measured convergence orders, Heun-35's ΔNLL.
3. **Consistency model** — consistency distillation with the exact teacher; 1- and 2-step samples;
   the self-consistency error before and after training, and the error against the exact
   consistency function.
4. ``--full``: **latent digits** — a class-conditional latent model on scikit-learn's 8×8 digits
   (when the latent pipeline is installed; see docs/latent.md).

Every check prints what it compares with and whether it passed; ``report.md`` in the output folder
collects the table and the figures. ``--quick`` shrinks every size (under a minute; the thresholds
that depend on training are relaxed and say so).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .io import atomic_write
from .plots import pyplot, save_figure

__all__ = ["Check", "DemoReport", "run_demo", "check_demo_device"]

F64 = torch.float64


@dataclass
class Check:
    """One line of the demo's table: a measured value against its theoretical reference."""

    step: str
    name: str
    reference: str
    value: float
    threshold: str
    passed: bool


@dataclass
class DemoReport:
    """What :func:`run_demo` returns: the checks, the figures and the timings."""

    checks: list[Check] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    out: Path = Path("sdeflow-demo")

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def table(self) -> str:
        head = "| step | check | against | value | pass if | result |\n|---|---|---|---:|---|---|"
        def cell(text: str) -> str:
            return text.replace("|", "\\|")  # a literal bar inside a cell (|ΔNLL|) would split the column

        rows = [f"| {cell(c.step)} | {cell(c.name)} | {cell(c.reference)} | {_fmt(c.value)} | {cell(c.threshold)} | "
                f"{'PASS' if c.passed else 'FAIL'} |" for c in self.checks]
        return "\n".join([head, *rows])


def _fmt(v: float) -> str:
    if v != v or math.isinf(v):
        return str(v)
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


class _Printer:
    def __init__(self, report: DemoReport, verbose: bool) -> None:
        self.report, self.verbose = report, verbose

    def __call__(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    def check(self, step: str, name: str, reference: str, value: float, threshold: str,
              passed: bool) -> None:
        self.report.checks.append(Check(step, name, reference, float(value), threshold, bool(passed)))
        self(f"    {'PASS' if passed else 'FAIL'}  {name}: {_fmt(float(value))} ({threshold}; against {reference})")


def _save(fig, path: Path) -> None:  # noqa: ANN001
    save_figure(fig, path, dpi=100)


# -- step 1 -------------------------------------------------------------------------------------------------
def _forward_sde(out: Path, seed: int, quick: bool, say: _Printer, progress: bool, device: torch.device) -> None:
    from .conversion.probability_flow import probability_flow
    from .fokker_planck import Grid2D, fokker_planck_residual, solve_fokker_planck
    from .generative.metrics import mixture_sample_quality
    from .generative.toy_data import eight_gaussians
    from .sde.vp import VPSDE
    from .solve.ode import solve_ode
    from .solve.simulate import simulate
    from .verify.stats import energy_test

    say("[1] forward SDE: 8 gaussians under the VP SDE (β 0.1 → 20)")
    gm, sde = eight_gaussians(), VPSDE()
    n = 4000 if quick else 20_000
    x0 = gm.sample(n, generator=seed, dtype=F64)  # drawn on the CPU: the same start on every device
    ts = [0.0, 0.2, 0.5, 1.0]
    dt = 4e-3 if quick else 1e-3
    sol = simulate(VPSDE().to(device), x0.to(device), ts, dt=dt, generator=seed + 1, progress=progress)
    xs = sol.xs.cpu()  # the checks run on the CPU in float64
    say(f"    simulated {n} paths on {device}, Euler–Maruyama, dt {dt:g}, {sol.stats.wall_time:.2f} s")
    worst_p, worst_excess, worst_dnll = 1.0, -math.inf, 0.0
    for k, t in enumerate(ts[1:], start=1):
        exact = sde.sample_marginal(gm.sample(n, generator=seed + 10 + k, dtype=F64), t, generator=seed + 20 + k)
        _, p = energy_test(xs[k], exact, generator=seed + k, max_points=1500)
        q = mixture_sample_quality(gm, xs[k], t=t, sde=sde, generator=seed + 30 + k)
        worst_p = min(worst_p, p)
        # 4 standard errors of the Monte Carlo ΔNLL, plus 0.02 nats for Euler–Maruyama's O(dt) bias
        excess = abs(q.delta_nll) - (4 * q.delta_nll_se + 0.02)
        if excess > worst_excess:
            worst_excess, worst_dnll = excess, abs(q.delta_nll)
    say.check("1 SDE", "energy test, simulated vs exact p_t (t = 0.2, 0.5, 1)", "closed-form mixture marginal",
              worst_p, "smallest p > 0.001", worst_p > 1e-3)
    say.check("1 SDE", "|ΔNLL| of simulated x_t (worst t)", "exact mixture density of p_t", worst_dnll,
              "< 4 SE + 0.02", worst_excess < 0)
    pts = sde.sample_marginal(gm.sample(256, generator=seed + 40, dtype=F64), 0.5, generator=seed + 41)
    res = fokker_planck_residual(sde, gm.log_prob_fn(sde), torch.tensor(0.5, dtype=F64), pts)
    say.check("1 SDE", "Fokker–Planck residual of the exact density (relative)", "∂_t p = L*p (autograd)",
              res.max_relative(), "< 1e-8", res.max_relative() < 1e-8)
    cells = 48 if quick else 128
    # [−6, 6]²: on [−5, 5]² the zero-flux boundary holds back the 0.2% of the t = 0.2 mass beyond 5, and
    # that, not the solver, set the L1 error (9.6e-4 at 128² cells; 6.8e-6 on [−6, 6]²)
    grid = Grid2D((-6.0, 6.0, cells))
    t_fp = [0.2, 0.5, 1.0]

    def density(t: float) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: torch.exp(gm.log_prob(x.to(F64), torch.tensor(t, dtype=F64), sde))

    tick = time.perf_counter()
    fp = solve_fokker_planck(sde, density(t_fp[0]), grid, t_fp, device=device)
    fp_s = time.perf_counter() - tick
    exact_p = [torch.as_tensor(grid.cell_average(density(t))) for t in t_fp]
    l1 = max(float(grid.l1(fp.p[k].cpu(), exact_p[k])) for k in range(1, len(t_fp)))
    tol = 5e-3 if quick else 1e-4
    say.check("1 SDE", f"grid Fokker–Planck solution, L1 to exact ({cells}² cells, t = 0.5, 1)",
              "exact mixture density", l1, f"< {tol:g}", l1 < tol)
    say(f"    grid solve {fp_s:.1f} s, method {fp.stats.method}")
    # figures: SDE paths beside PF-ODE trajectories; density vs Fokker–Planck
    plt = pyplot()
    tgrid = torch.linspace(0.0, 1.0, 101, dtype=F64)
    xs0 = gm.sample(40, generator=seed + 50, dtype=F64)
    paths = simulate(sde, xs0, tgrid, dt=2e-3, generator=seed + 51).xs[..., 0]
    flow = probability_flow(sde, gm.score_fn(sde))
    odes = solve_ode(flow, xs0, tgrid, rtol=1e-6, atol=1e-6).xs[..., 0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, data, title in ((axes[0], paths, "SDE paths"), (axes[1], odes, "PF-ODE trajectories (same marginals)")):
        ax.plot(tgrid, data, lw=0.7, alpha=0.8)
        ax.set_title(title)
        ax.set_xlabel("t")
    axes[0].set_ylabel("x₁")
    fig.tight_layout()
    _save(fig, out / "sde_vs_pf_ode.png")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    ext = (-6, 6, -6, 6)
    axes[0].imshow(fp.p[1].cpu().T, origin="lower", extent=ext)
    axes[0].set_title("grid Fokker–Planck, t = 0.5")
    axes[1].imshow(exact_p[1].T, origin="lower", extent=ext)
    axes[1].set_title("exact mixture density, t = 0.5")
    for ax in axes[:2]:
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    mid = cells // 2
    xc = grid.centers(0)
    axes[2].semilogy(xc, exact_p[1][:, mid].clamp_min(1e-300), label="exact")
    axes[2].semilogy(xc, (fp.p[1].cpu()[:, mid] - exact_p[1][:, mid]).abs().clamp_min(1e-300), label="|FP − exact|")
    axes[2].set_xlabel("x₁ (slice x₂ ≈ 0)")
    axes[2].set_ylabel("density")
    axes[2].legend()
    fig.tight_layout()
    _save(fig, out / "fokker_planck.png")
    say.report.figures += [("SDE paths and PF-ODE trajectories", "sde_vs_pf_ode.png"),
                           ("Grid Fokker–Planck solution against the exact density", "fokker_planck.png")]


# -- step 2 -------------------------------------------------------------------------------------------------
def _samplers(out: Path, seed: int, quick: bool, say: _Printer, device: torch.device) -> None:
    from .generative.metrics import mixture_sample_quality, pathwise_rms
    from .generative.samplers import SAMPLERS
    from .generative.schedules import karras_sigmas
    from .generative.toy_data import eight_gaussians

    say("[2] probability-flow ODE: samplers with the exact denoiser of 8 gaussians (EDM SDE, σ 80 → 0.002)")
    gm = eight_gaussians()
    den = eight_gaussians().to(device).as_denoiser()  # the exact denoiser, computed where the samplers run
    n = 2000 if quick else 20_000
    x_T = (80.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)).to(device)
    ref = SAMPLERS["heun"](den, x_T, karras_sigmas(400 if quick else 1000, 0.002, 80.0)).x.cpu()
    plan = {"euler": [8, 16, 32, 64], "heun": [4, 8, 16, 32], "dpmpp_2m": [4, 8, 16, 32]}
    if quick:
        plan = {k: v[1:] for k, v in plan.items()}
    rows: dict[str, list[tuple[int, float, float]]] = {}
    samples: dict[tuple[str, int], torch.Tensor] = {}
    for name, steps in plan.items():
        for k in steps:
            res = SAMPLERS[name](den, x_T, karras_sigmas(k, 0.002, 80.0))
            x = res.x.cpu()
            q = mixture_sample_quality(gm, x)
            rows.setdefault(name, []).append((res.nfe, pathwise_rms(x, ref), q.delta_nll))
            samples[(name, res.nfe)] = x[:3000]
    for name, r in rows.items():
        say("    " + name + ": " + ", ".join(f"NFE {nfe}: pathwise {e:.2e}, ΔNLL {d:+.3f}" for nfe, e, d in r))

    def order(r: list[tuple[int, float, float]]) -> float:
        a, b = r[-2], r[-1]
        return math.log(a[1] / b[1]) / math.log(b[0] / a[0])

    o_e, o_h, o_d = order(rows["euler"]), order(rows["heun"]), order(rows["dpmpp_2m"])
    say.check("2 PF-ODE", "Euler's measured order (pathwise error vs NFE)", "declared order 1", o_e,
              "0.7 … 1.5", 0.7 <= o_e <= 1.5)
    say.check("2 PF-ODE", "Heun's measured order", "declared order 2", o_h, "≥ 1.5", o_h >= 1.5)
    say.check("2 PF-ODE", "DPM-Solver++(2M)'s measured order", "declared order 2", o_d, "≥ 1.5", o_d >= 1.5)
    heun_best = rows["heun"][-1]
    say.check("2 PF-ODE", f"Heun ({heun_best[0]} NFE) pathwise error", "1000-step Heun reference", heun_best[1],
              "< 0.01", heun_best[1] < 0.01)
    # figures: error vs NFE, samples by NFE
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, r in rows.items():
        ax.loglog([a for a, _, _ in r], [b for _, b, _ in r], "o-", label=name)
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("pathwise RMS error")
    ax.set_title("PF-ODE samplers, exact denoiser")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, out / "error_vs_nfe.png")
    nfes = [r[0] for r in rows["dpmpp_2m"]]
    fig, axes = plt.subplots(1, len(nfes), figsize=(3 * len(nfes), 3), squeeze=False)
    for ax, nfe in zip(axes[0], nfes, strict=True):
        pts = samples[("dpmpp_2m", nfe)]
        ax.scatter(pts[:, 0], pts[:, 1], s=0.5, alpha=0.4)
        ax.set_title(f"DPM-Solver++(2M), {nfe} NFE")
        ax.set_xlim(-6, 6)
        ax.set_ylim(-6, 6)
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    fig.tight_layout()
    _save(fig, out / "samples_by_nfe.png")
    say.report.figures += [("Sampler error against NFE", "error_vs_nfe.png"),
                           ("Samples by NFE", "samples_by_nfe.png")]


# -- step 3 -------------------------------------------------------------------------------------------------
def _consistency(out: Path, seed: int, quick: bool, say: _Printer, progress: bool, device: torch.device) -> None:
    from .consistency import exact_consistency_function, sample_consistency, self_consistency_error
    from .consistency.recipes import consistency_recipe
    from .generative.metrics import mixture_sample_quality, pathwise_rms
    from .generative.training import Trainer

    say("[3] consistency distillation with the exact teacher (8 gaussians, EDM PF-ODE, Heun teacher step)")
    if quick:  # a fixed small run (deterministic), not a time budget
        recipe = consistency_recipe("cd", "gmm8", teacher="exact", iters=300, batch_size=256, seed=seed,
                                    network={"hidden": 128, "depth": 2}, progress=progress,
                                    device=str(device))
    else:
        recipe = consistency_recipe("cd", "gmm8", teacher="exact", iters=6000, seed=seed, time_budget=150.0,
                                    progress=progress, device=str(device))
    gm = recipe.mixture
    n_sc = 128 if quick else 512
    before = self_consistency_error(recipe.model, mixture=gm, n=n_sc, generator=seed)
    n = 2000 if quick else 20_000
    x_T = 80.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    fstar = exact_consistency_function(gm)
    m = min(n, 1024)
    target = fstar(x_T[:m], torch.full((m,), 80.0, dtype=F64))

    def measure(model: Callable[..., torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, float, float, float]:
        p = next(model.parameters())
        x = x_T.to(device=p.device, dtype=p.dtype)
        one = sample_consistency(model, x, [80.0]).x.to(device="cpu", dtype=F64)
        two = sample_consistency(model, x, [80.0, 0.8], generator=seed + 1).x.to(device="cpu", dtype=F64)
        d1, d2 = mixture_sample_quality(gm, one).delta_nll, mixture_sample_quality(gm, two).delta_nll
        return one, two, d1, d2, pathwise_rms(one[:m], target)

    untrained = measure(recipe.model)
    trainer = Trainer(recipe.model, recipe.loss, recipe.data, recipe.config)
    result = trainer.fit()
    f = trainer.ema["ema"] if "ema" in trainer.ema else trainer.model
    say(f"    trained {result.steps} steps in {result.seconds:.0f} s")
    after = self_consistency_error(f, mixture=gm, n=n_sc, generator=seed)
    b, a = float(before.to_end.max()), float(after.to_end.max())
    factor = b / max(a, 1e-12)
    need = 1.5 if quick else 5.0
    say.check("3 consistency", "self-consistency error, max over σ (before / after training)",
              "exact PF-ODE trajectories", factor, f"reduced by a factor > {need:g}", factor > need)
    *_, d1_0, d2_0, pw_0 = untrained
    one, two, d1, d2, pw = measure(f)
    if quick:  # 300 steps: check that training moved every number the right way, by a clear factor
        for name, v, v0 in (("1-step ΔNLL", d1, d1_0), ("2-step ΔNLL (τ = 80, 0.8)", d2, d2_0)):
            say.check("3 consistency", f"{name} (untrained: {_fmt(v0)})", "exact mixture density", v,
                      "< half the untrained model's (--quick)", v < 0.5 * v0)
        say.check("3 consistency", f"1-step map vs f* (untrained: {_fmt(pw_0)})", "f* by a float64 PF-ODE solve",
                  pw, "< 0.8 × the untrained model's (--quick)", pw < 0.8 * pw_0)
    else:
        say.check("3 consistency", "1-step ΔNLL", "exact mixture density", d1, "< 0.5", d1 < 0.5)
        say.check("3 consistency", "2-step ΔNLL (τ = 80, 0.8)", "exact mixture density", d2, "< 0.5", d2 < 0.5)
        say.check("3 consistency", "1-step map vs the exact consistency function f*",
                  "f* by a float64 PF-ODE solve", pw, "< 0.5", pw < 0.5)
    plt = pyplot()
    data = gm.sample(3000, generator=seed + 5, dtype=F64)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    for ax, pts, title in ((axes[0], data, "data"), (axes[1], one[:3000], "consistency model, 1 step"),
                           (axes[2], two[:3000], "consistency model, 2 steps")):
        ax.scatter(pts[:, 0], pts[:, 1], s=0.5, alpha=0.4)
        ax.set_title(title)
        ax.set_xlim(-6, 6)
        ax.set_ylim(-6, 6)
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    fig.tight_layout()
    _save(fig, out / "consistency_samples.png")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(before.sigmas, before.to_end.clamp_min(1e-12), "o-", label="before training")
    ax.loglog(after.sigmas, after.to_end.clamp_min(1e-12), "s-", label="after training")
    ax.set_xlabel("noise level σ")
    ax.set_ylabel("‖f(x_σ, σ) − x_ε‖ (RMS)")
    ax.set_title("self-consistency along exact PF-ODE trajectories")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, out / "self_consistency.png")
    say.report.figures += [("Consistency-model samples", "consistency_samples.png"),
                           ("Self-consistency error by noise level", "self_consistency.png")]


# -- the driver -----------------------------------------------------------------------------------------------
def run_demo(out: str | Path = "sdeflow-demo", *, seed: int = 0, quick: bool = False, full: bool = False,
             verbose: bool = True, progress: bool = False, device: str | torch.device = "cpu") -> DemoReport:
    """Run the demo's steps, write ``out/report.md`` and the figures; returns the :class:`DemoReport`.

    ``device``: where the simulations, the samplers, the grid Fokker–Planck solver and the consistency
    training run (``"cuda"`` on a GPU); starting points are drawn on the CPU and every check is computed
    there in float64, so the references are the same on every device. The latent step (``full``) trains
    12-dimensional models on the CPU whatever ``device`` is.
    """
    dev = check_demo_device(device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} exists and is not a folder; choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(out=out)
    say = _Printer(report, verbose)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("forward SDE", lambda: _forward_sde(out, seed, quick, say, progress, dev)),
        ("PF-ODE samplers", lambda: _samplers(out, seed, quick, say, dev)),
        ("consistency model", lambda: _consistency(out, seed, quick, say, progress, dev)),
    ]
    if full:
        steps.append(("latent digits", lambda: _latent(out, seed, quick, say, progress)))
    total = time.perf_counter()
    for name, fn in steps:
        tick = time.perf_counter()
        fn()
        report.seconds[name] = time.perf_counter() - tick
        say(f"    ({report.seconds[name]:.1f} s)")
    report.seconds["total"] = time.perf_counter() - total
    _write_report(report, seed, quick, full, dev)
    return report


def check_demo_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` the demo can use; a clear error for a missing GPU or a typo."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device; use 'cpu' or 'cuda'.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: this torch build sees no CUDA GPU "
                         f"(torch.cuda.is_available() is False); use --device cpu.")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r}: the demo runs on 'cpu' or 'cuda'.")
    return dev


def _latent(out: Path, seed: int, quick: bool, say: _Printer, progress: bool) -> None:
    try:
        from .latent.demo import latent_demo_step
    except ImportError as err:
        raise RuntimeError(f"--full needs the latent-digits pipeline (sdeflow.latent.demo): {err}") from err
    latent_demo_step(out, seed=seed, quick=quick, say=say, progress=progress)


def _write_report(report: DemoReport, seed: int, quick: bool, full: bool, device: torch.device) -> None:
    lines = [
        "# sdeflow demo report",
        "",
        f"Settings: seed {seed}{', --quick' if quick else ''}{', --full' if full else ''}, device {device}; "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {report.seconds.get('total', 0):.0f} s in all "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in report.seconds.items() if k != 'total')}).",
        "",
        f"**{sum(c.passed for c in report.checks)} of {len(report.checks)} checks passed.**",
        "",
        report.table(),
        "",
    ]
    for title, name in report.figures:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    text = "\n".join(lines)
    atomic_write(report.out / "report.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

