"""``sdeflow demo``: the chain diffusion → SDE → Fokker–Planck → PF-ODE → consistency on built-in data,
every step checked against theory (a self-test of an installation). Writes DIR/report.md and PNG figures."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole chain on built-in data, checked against theory", description=__doc__)
    p.add_argument("--out", default="sdeflow-demo", metavar="DIR", help="report folder (default ./sdeflow-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quick", action="store_true", help="small sizes: under a minute (thresholds relaxed)")
    p.add_argument("--full", action="store_true", help="add the latent digits model")
    p.add_argument("--device", default="cpu", help="where simulations, samplers and training run: cpu or cuda "
                   "(default cpu; the checks are computed on the CPU in float64 either way)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--progress", action="store_true", help="progress bars for the long steps")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import check_demo_device, run_demo

    out = Path(args.out)
    try:
        device = check_demo_device(args.device)
    except ValueError as err:
        print(f"sdeflow demo: error: --device: {err}", file=sys.stderr)
        return 2
    if out.exists() and not out.is_dir():
        print(f"sdeflow demo: error: --out {args.out!r} exists and is not a folder", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print("sdeflow demo: error: --threads must be at least 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"sdeflow demo: device {device}, {torch.get_num_threads()} threads, load average {load:.2f}; "
          f"report in {out}/")
    try:
        report = run_demo(out, seed=args.seed, quick=args.quick, full=args.full, progress=args.progress,
                          device=device)
    except KeyboardInterrupt:
        print("sdeflow demo: interrupted", file=sys.stderr)
        return 130
    print()
    print(report.table())
    n_ok = sum(c.passed for c in report.checks)
    print(f"\n{n_ok} of {len(report.checks)} checks passed in {report.seconds['total']:.0f} s; "
          f"report: {out / 'report.md'}")
    return 0 if report.passed else 1
