"""``sdeflow verify``: run the verification suite (convergence orders, Fokker–Planck checks, statistics).

Prints one table row per check (check, measured, expected, tolerance, pass, time) and exits with
status 1 if any check fails (2 on bad arguments). Progress lines go to stderr.

``--json`` alone writes the report as JSON to stdout instead of the table; ``--json PATH`` writes
it to PATH (atomically) and still prints the table. ``--plots DIR`` saves log-log order plots and
density plots as PNG files in DIR.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..io import atomic_write
from ._common import CommandError, add_threads_argument, check_device, check_output, machine_line, seed_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="run the verification suite (orders, Fokker–Planck, statistics)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the small suite (a few seconds to ~20 s)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="JSON report: to stdout (no PATH, replaces the table) or to PATH")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--plots", default=None, metavar="DIR", help="save PNG plots to DIR (created if missing)")
    p.add_argument("--only", default=None, metavar="PATTERN", help="run only checks whose name matches (glob or "
                                                                   "substring), e.g. 'order/*' or fp_grid")
    p.add_argument("--seed", type=seed_arg, default=0, help="base random seed (default 0)")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    add_threads_argument(p)
    p.set_defaults(run=run)


def _fail(msg: str) -> int:
    print(f"sdeflow verify: error: {msg}", file=sys.stderr)
    return 2


def _check_plots(folder: str) -> None:
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise CommandError(f"argument --plots: {folder!r} exists and is not a folder")
    existing = path
    while not existing.exists():  # the nearest folder that exists must let us create the rest
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CommandError(f"argument --plots: cannot create or write {folder!r} (no permission in {str(existing)!r})")


def run(args: argparse.Namespace) -> int:
    from ..verify.suite import registered_checks, run_suite

    try:
        check_device(args.device)
        if args.json not in (None, "-"):
            check_output("--json", args.json)
        if args.plots is not None:
            _check_plots(args.plots)
    except CommandError as err:
        return _fail(str(err))
    if args.list:
        for c in registered_checks(quick=args.quick, select=args.only):
            print(f"{c.name:<50} {'quick' if c.quick else 'full '}  {c.description}")
        return 0
    checks = registered_checks(quick=args.quick, select=args.only)
    if not checks:
        return _fail(f"no check matches --only {args.only!r}; see sdeflow verify --list")
    total = len(checks)
    done = [0]

    def progress(rep: object) -> None:
        done[0] += 1
        status = "pass" if rep.passed else "FAIL"
        print(f"[{done[0]}/{total}] {rep.name}: {status} ({rep.seconds:.1f} s)", file=sys.stderr, flush=True)

    tick = time.perf_counter()
    print(f"sdeflow verify: {total} checks; {machine_line()}", file=sys.stderr, flush=True)
    try:
        report = run_suite(quick=args.quick, device=args.device, plots=args.plots, select=args.only,
                           seed=args.seed, progress=progress)
    except (ValueError, OSError) as err:
        return _fail(str(err))
    text = report.to_json()
    if args.json == "-":
        print(text)
    else:
        print(report.table())
        print(f"{total} checks in {time.perf_counter() - tick:.1f} s; {machine_line()}")
        if args.json:
            def write(tmp: str) -> None:
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(text + "\n")

            try:
                atomic_write(args.json, write)
            except OSError as err:
                return _fail(f"could not write {args.json}: {err}")
            print(f"wrote {args.json}")
    return 0 if report.passed else 1
