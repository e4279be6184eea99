"""``sdeflow demo``: the chain diffusion → SDE → Fokker–Planck → PF-ODE → consistency on built-in data,
every step checked against theory (a self-test of an installation). Writes DIR/report.md and PNG figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_threads_argument, machine_line

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole chain on built-in data, checked against theory", description=__doc__)
    p.add_argument("--out", default="sdeflow-demo", metavar="DIR", help="report folder (default ./sdeflow-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quick", action="store_true", help="small sizes: under a minute (thresholds relaxed)")
    p.add_argument("--full", action="store_true", help="add the latent digits model")
    p.add_argument("--device", default="cpu", help="where simulations, samplers and training run: cpu or cuda "
                   "(default cpu; the checks are computed on the CPU in float64 either way)")
    add_threads_argument(p)
    p.add_argument("--progress", action="store_true", help="progress bars for the long steps")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The demo; ``sdeflow.cli.main`` has checked --device, set the threads and handles Ctrl-C, and the
    ValueErrors of :func:`sdeflow.demo.run_demo` (--out a file, a device the demo cannot use) become
    one-line errors with exit status 2."""
    from ..demo import check_demo_device, run_demo

    out = Path(args.out)
    device = check_demo_device(args.device)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out!r} exists and is not a folder")
    print(f"sdeflow demo: device {device}, {machine_line()}; report in {out}/")
    report = run_demo(out, seed=args.seed, quick=args.quick, full=args.full, progress=args.progress,
                      device=device)
    print()
    print(report.table())
    n_ok = sum(c.passed for c in report.checks)
    print(f"\n{n_ok} of {len(report.checks)} checks passed in {report.seconds['total']:.0f} s; "
          f"report: {out / 'report.md'}")
    return 0 if report.passed else 1
