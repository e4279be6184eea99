"""Samplers on the fused path: the same sampler with an eager and a ``torch.compile``-d denoiser.

Heun (EDM, 18 steps on a Karras ρ=7 schedule, 35 NFE) from N(0, 80²) noise, batch B, with two
denoisers: the exact one of the eight-Gaussians mixture (``GaussianMixture.as_denoiser``, the
benchmark's exact-score model) and a small MLP denoiser (3 layers of 256, SiLU; untrained weights:
only the speed is measured). Prints NFE per second for ``compile=False`` and ``compile=True``, the
ratio, the compile time (first call, excluded from the rate) and the largest difference between
the two sample sets, and appends the table to RESULTS.md.

Usage::

    python benchmarks/bench_fused_samplers.py                  # CPU
    python benchmarks/bench_fused_samplers.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import sdeflow  # noqa: E402
from sdeflow.generative.samplers import initial_noise, sample_heun  # noqa: E402
from sdeflow.generative.schedules import karras_sigmas  # noqa: E402
from sdeflow.generative.toy_data import eight_gaussians  # noqa: E402

import _common  # noqa: E402  (this folder, not a package)


class MLPDenoiser(torch.nn.Module):
    """``D(x, σ) = c_skip x + c_out F([c_in x, log σ / 4])`` with EDM's preconditioning, σ_data = 1."""

    def __init__(self, dim: int = 2, width: int = 256) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, width), torch.nn.SiLU(), torch.nn.Linear(width, width), torch.nn.SiLU(),
            torch.nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma[:, None]
        c_in = torch.rsqrt(1 + s * s)
        out = self.net(torch.cat([x * c_in, torch.log(s) / 4], dim=1))
        return x / (1 + s * s) + out * s * c_in


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: 1024 65536 on "
                   "CUDA, 1024 on the CPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    device = _common.resolve_device(args.device)
    batches = args.batch or ([1024, 65536] if device.type == "cuda" else [1024])
    sched = karras_sigmas(18, 0.002, 80.0)
    torch.manual_seed(0)
    models = {"exact mixture": eight_gaussians().to(device).as_denoiser(), "MLP 256": MLPDenoiser().to(device)}
    rows = []
    desc = _common.machine_description(_common.machine_info(device))
    print(f"bench_fused_samplers: Heun, 18 steps (35 NFE), Karras rho=7, on {desc}", flush=True)
    for name, model in models.items():
        for B in batches:
            x = initial_noise((B, 2), sched, generator=0, device=device)
            rec = {}
            with torch.no_grad():
                for comp in (False, True):
                    res0 = sample_heun(model, x, sched, compile=comp)  # warm-up (and compile)
                    best = min(sample_heun(model, x, sched, compile=comp).wall_time for _ in range(args.repeats))
                    rec[comp] = (res0, res0.nfe / best, res0.info.get("compile_time", 0.0))
            diff = float((rec[True][0].x - rec[False][0].x).abs().max())
            row = [name, B, _common.fmt_rate(rec[False][1]), _common.fmt_rate(rec[True][1]),
                   _common.fmt_ratio(rec[True][1] / rec[False][1]), f"{rec[True][2]:.1f}", f"{diff:.1e}"]
            rows.append(row)
            print("  " + "  ".join(str(c) for c in row), flush=True)
    header = ["denoiser", "B", "eager NFE/s", "compiled NFE/s", "compiled/eager", "compile s", "max |Δx|"]
    table = _common.markdown_table(header, rows)
    print()
    print(table)
    if not args.no_write:
        body = "\n".join([
            "Heun (EDM), 18 steps = 35 NFE, Karras ρ=7 from σ=80; NFE/s = 35 / best of "
            f"{args.repeats} runs after a warm-up run; 'compiled' is sample_heun(..., compile=True) (the "
            "denoiser through torch.compile), compile time excluded from its rate.",
            "Command: `" + " ".join(["python benchmarks/bench_fused_samplers.py",
                                     *(argv if argv is not None else sys.argv[1:])]) + "`",
            "", table])
        path = _common.append_section(f"bench_fused_samplers — {_common.utc_stamp()}, {desc}", body)
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sdeflow  # noqa: B018 (imported for the side effect of a clear error when the package is missing)
    raise SystemExit(main())
