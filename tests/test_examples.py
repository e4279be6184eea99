"""The worked examples in examples/ run as written (small sizes) and show what they claim."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_sampler_example():
    out = _load("custom_sampler").main(n_samples=2000, steps=18, verbose=False)
    # the 2-stage midpoint sampler is second order (measured 1.89 over 18..72 steps) ...
    assert 1.7 < out["midpoint_order"] < 2.3
    # ... costs 2n − 1 evaluations like Heun and is about as accurate at equal NFE
    assert out["midpoint"]["nfe"] == out["heun"]["nfe"] == 35
    assert out["midpoint"]["pathwise"] < 1.5 * out["heun"]["pathwise"]
    # every route is about as good as Heun with 35 NFE, whose ΔNLL on this problem is 0.054 (issue 4,
    # benchmarks/RESULTS.md): within 3 SE + 0.02 of the interval [0, 0.054]
    for key in ("midpoint", "heun", "rk4_solve_ode"):
        r = out[key]
        slack = 3 * r["delta_nll_se"] + 0.02
        assert -slack < r["delta_nll"] < 0.054 + slack, (key, r)


def test_samplers_doc_runs():
    import re

    text = (ROOT / "docs" / "samplers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    scope: dict = {}
    for code in blocks:
        exec(compile(code, "docs/samplers.md", "exec"), scope)
    assert scope["res"].nfe == 35 and scope["sol"].final.shape == (2000, 2)


def test_simulate_and_verify_example():
    out = _load("simulate_and_verify").main(quick=True, verbose=False)
    # the closed-form stationary density solves the stationary Fokker–Planck equation to rounding error
    # (float64), and a density with the wrong tails is flagged by 10 orders of magnitude more
    assert out["fp_residual"] < 1e-12 and out["fp_residual_wrong"] > 1e-3
    # the grid solution relaxes to it (measured L1 2.5e-5 at t = 10 on 480 cells) and conserves mass
    assert out["fp_grid_l1_stationary"] < 1e-3
    assert abs(out["fp_mass"] - 1.0) < 1e-10
    # declared orders within ±0.1 (Milstein 1, Euler–Maruyama 0.5 on multiplicative noise), fixed seeds
    assert out["milstein_passed"] and out["euler_passed"]
    assert out["milstein_order"] > out["euler_order"] + 0.25
    # paths started from the stationary law stay stationary; samples match the grid density (level 0.01)
    assert out["all_paths_ok"]
    assert out["stationary_p"] > 0.01 and out["grid_density_p"] > 0.01


def test_distill_consistency_example():
    out = _load("distill_consistency").main(quick=True, verbose=False)
    assert out["steps"] == 150
    assert out["nfe_one"] == 1 and out["nfe_two"] == 2
    # 150 steps are far from converged, but distillation must already pull the student towards the
    # exact consistency function: measured 1.83 -> 1.34 (mean self-consistency error over levels)
    assert out["self_consistency_after"] < 0.9 * out["self_consistency_before"]
    assert out["loss_last"] < out["loss_first"]
    # two steps improve on one (measured ΔNLL 98.6 -> 74.5 nats, SE ≈ 1)
    ev = out["eval"]
    assert ev["delta_nll_2"] + 3 * ev["delta_nll_2_se"] < ev["delta_nll_1"]


def test_latent_digits_example():
    out = _load("latent_digits").main(quick=True, verbose=False)
    assert out["images_shape"] == (500, 1, 8, 8) and out["nfe"] == 35
    assert out["loss_last"] < out["loss_first"]
    # the classifier reads most conditional samples as the requested digit (measured 98.6% at w = 1;
    # chance is 10%), so the class conditioning and the guidance reach the samples
    assert out["accuracy"] > 0.8
    # the FD is finite and above the floor of real held-out images (measured 11.9 against 2.16)
    assert out["fd_floor"] < out["fd_samples"] < 100
    assert 0 < out["fd_samples_held_out"] < 100


def test_examples_quick_flag_from_the_command_line():
    # the scripts' own entry point with the environment switch the docs name (SDEFLOW_EXAMPLE_QUICK=1)
    import os
    import subprocess
    import sys

    env = {**os.environ, "SDEFLOW_EXAMPLE_QUICK": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "simulate_and_verify.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "declared 1 ± 0.1: pass" in proc.stdout and "stationarity p =" in proc.stdout
