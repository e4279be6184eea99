"""``sdeflow bench``: a short benchmark of the engine against torchsde, torchdiffeq and plain loops.

The full benchmarks (and their recorded results) live in the repository's benchmarks/ folder; this
command is the quick check a user runs on their own machine. Ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable

import torch

from ._common import CommandError, add_threads_argument, check_device, machine_line

STEPS = 200
DT = 1e-3


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="short speed check: native engine vs torchsde / torchdiffeq / plain loops",
                       description=__doc__)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    add_threads_argument(p)
    p.set_defaults(run=run)


def _best(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - tic)
    return best


def _simulate_cases(device: torch.device, repeats: int) -> list[dict]:
    import torchsde

    from ..sde.ornstein_uhlenbeck import OrnsteinUhlenbeck
    from ..solve.native.triton_linear import triton_unavailable_reason
    from ..solve.simulate import simulate

    ou = OrnsteinUhlenbeck(1.0, 0.0, 0.5).to(device)
    rows = []
    t1 = STEPS * DT
    for b, d in ((1, 1), (64, 16), (4096, 16)):
        x0 = torch.zeros(b, d, device=device)

        def native(x0: torch.Tensor = x0) -> object:
            return simulate(ou, x0, [0.0, t1], dt=DT, save="final", generator=0)

        def tsde(x0: torch.Tensor = x0) -> object:
            ts = torch.tensor([0.0, t1], device=device)
            return torchsde.sdeint(ou, x0, ts, method="euler", dt=DT)

        def plain(x0: torch.Tensor = x0) -> object:
            g = torch.Generator(device=device).manual_seed(0)
            x = x0
            for _ in range(STEPS):
                x = x + (0.0 - x) * DT + 0.5 * math.sqrt(DT) * torch.randn(x.shape, generator=g, device=device)
            return x

        work = b * d * STEPS
        t_n, t_t, t_p = (_best(f, repeats, device) for f in (native, tsde, plain))
        rows.append({"case": f"simulate OU euler B={b} d={d}", "sdeflow": work / t_n, "reference": work / t_t,
                     "reference_name": "torchsde", "plain": work / t_p, "unit": "element-steps/s"})
        if device.type == "cuda" and triton_unavailable_reason(device) is None:

            def fused(x0: torch.Tensor = x0) -> object:
                return simulate(ou, x0, [0.0, t1], dt=DT, save="final", generator=0, compile="triton")

            fused()  # compiles the kernel
            rows.append({"case": f"simulate OU triton B={b} d={d}", "sdeflow": work / _best(fused, repeats, device),
                         "reference": work / t_t, "reference_name": "torchsde", "plain": work / t_p,
                         "unit": "element-steps/s"})
    return rows


def _ode_case(device: torch.device, repeats: int) -> dict:
    import torchdiffeq
    from torch import nn

    from ..solve.ode import solve_ode

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 2)).to(device)

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return net(x)

    x0 = torch.randn(64, 2, device=device)
    n = 100

    def native() -> object:
        with torch.no_grad():
            return solve_ode(field, x0, [0.0, n * 0.01], method="rk4", backend="native", dt=0.01)

    def tdq() -> object:
        with torch.no_grad():
            return torchdiffeq.odeint(field, x0, torch.tensor([0.0, n * 0.01], device=device), method="rk4",
                                      options={"step_size": 0.01})

    t_n, t_t = _best(native, repeats, device), _best(tdq, repeats, device)
    return {"case": "neural ODE rk4 B=64 (100 steps)", "sdeflow": n / t_n, "reference": n / t_t,
            "reference_name": "torchdiffeq", "plain": None, "unit": "steps/s"}


def run(args: argparse.Namespace) -> int:
    try:
        if args.repeats < 1:
            raise CommandError(f"argument --repeats: must be at least 1; got {args.repeats}")
        device = check_device(args.device)
    except CommandError as err:
        print(f"sdeflow bench: error: {err}", file=sys.stderr)
        return 2
    tick = time.perf_counter()
    rows = _simulate_cases(device, args.repeats) + [_ode_case(device, args.repeats)]
    meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "seconds": time.perf_counter() - tick,
            "machine": platform.machine(), "processor": platform.processor() or platform.machine()}
    if args.json:
        print(json.dumps({"machine": meta, "results": rows}, indent=2))
        return 0
    print(f"sdeflow bench on {meta['device']} ({meta['processor']}, torch {meta['torch']}; {machine_line()}; "
          f"{meta['seconds']:.1f} s)")
    print(f"{'case':<36}{'sdeflow':>12}{'reference':>12}{'ratio':>8}{'plain':>12}  unit")
    for r in rows:
        plain = f"{r['plain']:.3g}" if r["plain"] else "-"
        print(f"{r['case']:<36}{r['sdeflow']:>12.3g}{r['reference']:>12.3g}{r['sdeflow'] / r['reference']:>7.1f}x"
              f"{plain:>12}  {r['unit']} (reference: {r['reference_name']})")
    return 0
