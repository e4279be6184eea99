"""``sdeflow simulate``: simulate a standard SDE and compare the final marginal with its closed form."""

from __future__ import annotations

import argparse
import math
import sys
import warnings

import torch

from .. import sde as sdes
from ..io import save_arrays
from ..solve.simulate import simulate
from ._common import (
    CommandError,
    add_threads_argument,
    check_device,
    check_memory,
    check_output,
    finite_float,
    machine_line,
    positive_float,
    positive_int,
    seed_arg,
)

SDES = {
    "ou": sdes.OrnsteinUhlenbeck,
    "bm": sdes.BrownianMotion,
    "gbm": sdes.GeometricBrownianMotion,
    "vp": sdes.VPSDE,
    "subvp": sdes.SubVPSDE,
    "ve": sdes.VESDE,
    "edm": sdes.EDMSDE,
}
QUANTILES = (0.05, 0.5, 0.95)


def _param(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param takes key=value (e.g. theta=2.0); got {text!r}")
    try:
        number = float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--param {key}: {value!r} is not a number") from err
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"--param {key}: must be a finite number; got {value}")
    return key, number


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate a standard SDE and compare with its closed form",
                       description=__doc__)
    p.add_argument("--sde", choices=sorted(SDES), default="ou", help="which standard SDE (default ou)")
    p.add_argument("--param", action="append", type=_param, default=[], metavar="K=V",
                   help="SDE parameter, repeatable: e.g. --param theta=2 --param sigma=0.5")
    p.add_argument("--paths", type=positive_int, default=10_000, help="number of paths (default 10000)")
    p.add_argument("--dim", type=positive_int, default=1, help="state dimension (default 1)")
    p.add_argument("--x0", type=finite_float, default=1.0, help="initial value of every coordinate (default 1)")
    p.add_argument("--t0", type=finite_float, default=0.0, help="start time (default 0)")
    p.add_argument("--t1", type=finite_float, default=1.0, help="end time (default 1)")
    p.add_argument("--dt", type=positive_float, default=1e-3, help="step size (default 1e-3)")
    p.add_argument("--method", default=None, help="integration method (default euler / heun)")
    p.add_argument("--backend", choices=["auto", "native", "torchsde"], default="auto")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default 0)")
    p.add_argument("--n-save", type=positive_int, default=2, help="number of saved times from t0 to t1 (default 2)")
    p.add_argument("--out", default=None, help="save ts and xs to FILE.pt or FILE.npz")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on for runs of 5000+ steps)")
    add_threads_argument(p)
    p.set_defaults(run=run)


def _fail(msg: str) -> int:
    print(f"sdeflow simulate: error: {msg}", file=sys.stderr)
    return 2


#: The most steps a CLI run takes (10^9: minutes to hours already); a smaller --dt is almost surely a typo.
MAX_STEPS = 10**9


def run(args: argparse.Namespace) -> int:
    if args.n_save < 2:
        return _fail("argument --n-save: must be at least 2 (start and end)")
    if args.t1 == args.t0:
        return _fail("argument --t1: must differ from --t0")
    try:
        check_output("--out", args.out, (".pt", ".npz"))
        device = check_device(args.device)
        n_steps = math.ceil(abs(args.t1 - args.t0) / args.dt - 1e-9)
        if n_steps > MAX_STEPS:
            raise CommandError(f"argument --dt: {args.dt:g} gives {n_steps:.3g} steps from --t0 to --t1, more than "
                               f"{MAX_STEPS:.0e}; use a larger --dt")
        itemsize = 8 if args.dtype == "float64" else 4
        # saved states, plus the working states and noise of a step (a few copies of one state)
        state = args.paths * args.dim * itemsize
        check_memory(f"--paths {args.paths} x --dim {args.dim} x --n-save {args.n_save}",
                     state * (args.n_save + 4) + 16 * (n_steps + args.n_save),
                     "use fewer --paths or a smaller --n-save", device)
    except CommandError as err:
        return _fail(str(err))
    try:
        sde = SDES[args.sde](**dict(args.param))
    except TypeError as err:
        return _fail(f"bad --param for --sde {args.sde}: {err}")
    except ValueError as err:
        return _fail(f"--param: {err}")
    dtype = getattr(torch, args.dtype)
    sde = sde.to(device)
    x0 = torch.full((args.paths, args.dim), args.x0, dtype=dtype, device=device)
    ts = torch.linspace(args.t0, args.t1, args.n_save, dtype=torch.float64)
    progress = args.progress if args.progress is not None else n_steps >= 5000
    try:
        with warnings.catch_warnings():  # the non-finite paths are reported below, once
            warnings.simplefilter("ignore", RuntimeWarning)
            sol = simulate(sde, x0, ts, method=args.method, dt=args.dt, backend=args.backend,
                           generator=args.seed, progress=progress, save="ts")
    except (ValueError, TypeError) as err:
        return _fail(str(err))
    st = sol.stats
    print(f"{args.sde}: {args.paths} paths x {args.dim} dims, t {args.t0:g} -> {args.t1:g}, dt {args.dt:g}; "
          f"method {st.method}, backend {st.backend}, {st.steps if st.steps is not None else '?'} steps, "
          f"{st.wall_time:.3f} s, device {device}; {machine_line()}")
    final = sol.final.double()
    t = args.t1 - args.t0  # the standard SDEs are time-homogeneous or defined from t = 0
    if args.t0 != 0.0 and args.sde in ("vp", "subvp", "ve", "edm"):
        print("note: closed forms of diffusion SDEs assume t0 = 0; comparison skipped")
        closed = None
    else:
        closed = _closed_form(sde, t, x0[:1].double())
    ok = sol.status == 0
    flat = (final if bool(ok.all()) else final[ok.to(final.device)]).flatten()
    if flat.numel() == 0:
        print("sdeflow simulate: every path became NaN or infinite; try a smaller --dt", file=sys.stderr)
        return 1
    rows = [("mean", float(flat.mean())), ("std", float(flat.std()))]
    rows += [(f"q{int(q * 100):02d}", float(torch.quantile(flat[:1_000_000], q))) for q in QUANTILES]
    print(f"{'statistic':<10}{'simulated':>14}{'closed form':>14}")
    for name, val in rows:
        ref = closed.get(name) if closed else None
        print(f"{name:<10}{val:>14.6g}{(f'{ref:.6g}' if ref is not None else '-'):>14}")
    n_bad = int((sol.status != 0).sum())
    if n_bad:
        print(f"warning: {n_bad} of {args.paths} paths became NaN or infinite (the statistics above are of the "
              f"{args.paths - n_bad} finite ones); try a smaller --dt")
    if args.out:
        try:
            path = save_arrays(args.out, {"ts": sol.ts, "xs": sol.xs})
        except (ValueError, OSError) as err:
            return _fail(str(err))
        print(f"saved ts {tuple(sol.ts.shape)} and xs {tuple(sol.xs.shape)} to {path}")
    return 0


def _closed_form(sde: torch.nn.Module, t: float, x0: torch.Tensor) -> dict[str, float]:
    tt = torch.tensor(t, dtype=torch.float64)
    sde = sde.to("cpu")
    if isinstance(sde, sdes.GeometricBrownianMotion):
        std = float(sde.marginal_std(tt, x0).flatten()[0])
    else:
        std = float(sde.marginal_std(tt))
    out = {"mean": float(sde.marginal_mean(tt, x0).flatten()[0]), "std": std}
    for q in QUANTILES:
        out[f"q{int(q * 100):02d}"] = float(sde.marginal_quantile(q, tt, x0).flatten()[0])
    return out
