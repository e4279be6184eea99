"""Native fixed-step ODE solving vs torchdiffeq on a small neural ODE (batch 64).

Compares, in one run: sdeflow's native rk4 (``solve_ode(backend="native")``), torchdiffeq's rk4 on
the same step, a plain hand-written rk4 loop, and torchdiffeq's dopri5 (adaptive, for scale). The
vector field is an MLP 2 -> 64 -> 64 -> 2 with tanh, forward only (no_grad) and with a backward
pass through the solve. Prints the table and appends it to benchmarks/RESULTS.md.
The issue's reference: torchdiffeq rk4 costs 1.27x a plain rk4 loop at batch 64 on this CPU; the
goal for native rk4 is parity with the plain loop.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchdiffeq
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sdeflow  # noqa: E402

import _common  # noqa: E402

DT = 0.01


class Field(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def plain_rk4(f: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor:
    t = torch.zeros(())
    h = DT
    for _ in range(n):
        k1 = f(t, x)
        k2 = f(t + h / 2, x + h / 2 * k1)
        k3 = f(t + h / 2, x + h / 2 * k2)
        k4 = f(t + h, x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t = t + h
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    device = _common.resolve_device(args.device)
    f = Field().to(device)
    x0 = torch.randn(args.batch, 2, device=device, generator=torch.Generator(device).manual_seed(1))
    t1 = args.steps * DT
    ts = torch.tensor([0.0, t1], device=device)
    impls = {
        "native rk4": lambda: sdeflow.solve_ode(f, x0, [0.0, t1], method="rk4", backend="native", dt=DT).final,
        "torchdiffeq rk4": lambda: torchdiffeq.odeint(f, x0, ts, method="rk4", options={"step_size": DT})[-1],
        "plain rk4 loop": lambda: plain_rk4(f, x0, args.steps),
        "torchdiffeq dopri5": lambda: torchdiffeq.odeint(f, x0, ts, method="dopri5", rtol=1e-6, atol=1e-8)[-1],
    }
    rows, raw = [], {}
    ref = None
    for mode in ("forward", "forward+backward"):
        times = {}
        for name, fn in impls.items():
            def run(fn=fn, mode=mode):
                if mode == "forward":
                    with torch.no_grad():
                        return fn()
                out = fn()
                out.sum().backward()
                return out.detach()
            timing, out = _common.best_of(run, args.repeats, device=device, warmup=True)
            times[name] = timing.best
            if name == "plain rk4 loop":
                ref = out
            raw[f"{mode}/{name}"] = timing.as_dict()
        err = float((impls["native rk4"]().detach() - ref).abs().max())
        plain = times["plain rk4 loop"]
        for name, sec in times.items():
            rows.append([mode, name, f"{sec * 1e3:.2f}", f"{sec / plain:.2f}x"])
        print(f"{mode}: native rk4 vs plain loop max |diff| = {err:.1e}")
    table = _common.markdown_table(["pass", "solver", "ms (best)", "time / plain rk4 loop"], rows)
    info = _common.machine_info(device)
    desc = _common.machine_description(info)
    print(table)
    if not args.no_write:
        body = (f"MLP 2-64-64-2 (tanh) neural ODE, batch {args.batch}, {args.steps} steps of dt={DT} "
                f"(dopri5: rtol 1e-6, atol 1e-8); best of {args.repeats} after a warm-up. Goal: native rk4 at "
                f"parity with a plain rk4 loop (the issue measured torchdiffeq rk4 at 1.27x).\n\n{table}")
        path = _common.append_section(f"bench_ode — {_common.utc_stamp()}, {desc}", body)
        print(f"appended to {path}")
    if args.json:
        _common.dump_json({"benchmark": "bench_ode", "machine": info, "raw": raw}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
