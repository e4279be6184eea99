"""Memory over long runs: a 10^6-step simulation and a 10,000-iteration training run stay flat.

Runs, each watched by a sampler thread that reads the process's resident set size (RSS, from
``/proc/self/statm``; ``resource.getrusage`` peak elsewhere) every ``--interval`` seconds:

* ``simulate`` with ``save="final"`` over 10^6 steps: native eager engine, native compiled
  (``compile=True``; falls back to eager where no compiler is available, reported), and the
  torchsde backend (for fixed-step runs of more than 10^4 steps sdeflow streams the increments,
  ``StreamingBrownian``; torchsde's BrownianInterval fails with RecursionError from ~2·10^4 steps
  without its ``dt`` hint and keeps a node per step with it); each run is warmed up first (256 steps);
* training: ``sdeflow.generative.recipes.score_recipe("gmm8", iters=10000)`` with a small batch,
  through :class:`sdeflow.Trainer`, fitted in slices so the RSS is also printed between them.

A run is *flat* when the RSS in its second half exceeds the RSS at 10% of the run by less than
``--flat-mib`` (default 64 MiB): warm-up allocations (the allocator's pools, compiled graphs) are
allowed, growth proportional to the number of steps is not (10^6 steps of 100 bytes would be 95 MiB).

Usage::

    python benchmarks/bench_memory.py            # full: 10^6 steps, 10,000 iterations (lead only)
    python benchmarks/bench_memory.py --quick    # 2·10^4 steps, 300 iterations: a smoke test
    python benchmarks/bench_memory.py --no-write # do not touch benchmarks/RESULTS.md

Numbers from a shared machine vary; the criterion is the growth, not the absolute RSS.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import sdeflow as sf  # noqa: E402

import _common  # noqa: E402

MIB = 1 << 20


def rss_bytes() -> int:
    """The current resident set size of this process (bytes)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # peak, Linux units


class RssWatcher:
    """Samples :func:`rss_bytes` every ``interval`` seconds in a thread: ``samples`` = [(seconds, bytes)]."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t0 = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self._t0, rss_bytes()))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssWatcher:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter() - self._t0, rss_bytes()))


def summarise(name: str, samples: list[tuple[float, int]], flat_mib: float) -> dict:
    """Start, 10% mark, second-half peak and end RSS of one run, and whether it stayed flat."""
    if len(samples) < 2:
        samples = samples * 2
    total = samples[-1][0] or 1e-9
    at10 = next((r for t, r in samples if t >= 0.1 * total), samples[0][1])
    late = max(r for t, r in samples if t >= 0.5 * total)
    growth = (late - at10) / MIB
    return {"run": name, "seconds": total, "start_mib": samples[0][1] / MIB, "at10_mib": at10 / MIB,
            "late_peak_mib": late / MIB, "end_mib": samples[-1][1] / MIB, "growth_mib": growth,
            "flat": growth < flat_mib, "n_samples": len(samples)}


def print_samples(name: str, samples: list[tuple[float, int]], every: int) -> None:
    print(f"  {name}: RSS (MiB) at " + ", ".join(f"{t:.1f}s {r / MIB:.1f}" for t, r in samples[::every]))


def watched(name: str, fn: Callable[[], object], args: argparse.Namespace) -> dict:
    with RssWatcher(args.interval) as w:
        extra = fn()
    every = max(1, len(w.samples) // 12)
    print_samples(name, w.samples, every)
    row = summarise(name, w.samples, args.flat_mib)
    if isinstance(extra, dict):
        row.update(extra)
    print(f"  {name}: {row['seconds']:.1f}s, growth after 10% {row['growth_mib']:+.1f} MiB -> "
          f"{'flat' if row['flat'] else 'GROWS'}")
    return row


def simulation_runs(args: argparse.Namespace) -> list[dict]:
    steps = args.steps
    sde = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    x0 = torch.zeros(args.batch, args.dim)
    dt = 1.0 / steps
    rows = []

    def warm(backend: str, compile: bool) -> None:
        # The same step and chunk shape over 256 steps: compiled graphs, allocator pools and caches are
        # built here, so the watched run measures the steps, not the warm-up.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sf.simulate(sde, x0, [0.0, 256 * dt], dt=dt, backend=backend, compile=compile, generator=1, save="final")

    def run(backend: str, compile: bool) -> Callable[[], dict]:
        warm(backend, compile)

        def go() -> dict:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                sol = sf.simulate(sde, x0, [0.0, 1.0], dt=dt, backend=backend, compile=compile, generator=0,
                                  save="final")
            fell_back = any("falls back" in str(c.message) for c in caught)
            return {"steps": steps, "finite": bool(torch.isfinite(sol.final).all()),
                    "note": "compile fell back to eager" if fell_back else ""}
        return go

    rows.append(watched(f"simulate native eager, {steps:.0e} steps", run("native", False), args))
    rows.append(watched(f"simulate native compiled, {steps:.0e} steps", run("native", True), args))
    if args.torchsde_steps:
        ts_steps = args.torchsde_steps
        x1 = torch.zeros(args.batch, args.dim)

        def ts_run() -> dict:
            sol = sf.simulate(sde, x1, [0.0, 1.0], dt=1.0 / ts_steps, backend="torchsde", generator=0, save="final")
            return {"steps": ts_steps, "finite": bool(torch.isfinite(sol.final).all()), "note": ""}

        rows.append(watched(f"simulate torchsde, {ts_steps:.0e} steps", ts_run, args))
    return rows


def training_run(args: argparse.Namespace) -> dict:
    from sdeflow.generative.recipes import score_recipe

    iters = args.iters
    recipe = score_recipe("gmm8", iters=iters, batch_size=args.train_batch, hidden=64, depth=2, emb_dim=16)
    trainer = sf.Trainer(recipe.model, recipe.loss, recipe.data, recipe.config)
    slices = 10
    between: list[str] = []

    def go() -> dict:
        for k in range(1, slices + 1):
            trainer.fit(until=iters * k // slices)
            between.append(f"{iters * k // slices}: {rss_bytes() / MIB:.1f}")
        return {"steps": iters, "finite": True, "note": f"batch {args.train_batch}"}

    row = watched(f"Trainer score_recipe('gmm8'), {iters} iterations", go, args)
    print("  RSS (MiB) after iterations " + ", ".join(between))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2·10^4 steps and 300 iterations (smoke test)")
    p.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md")
    p.add_argument("--steps", type=int, default=None, help="native steps (default 10^6; quick 2·10^4)")
    p.add_argument("--torchsde-steps", type=int, default=None,
                   help="torchsde steps (default 10^6; quick 2·10^4; 0 skips it)")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default 10,000; quick 300)")
    p.add_argument("--batch", type=int, default=16, help="paths per simulation")
    p.add_argument("--dim", type=int, default=4, help="state dimension")
    p.add_argument("--train-batch", type=int, default=64, help="training batch size")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    p.add_argument("--flat-mib", type=float, default=64.0, help="allowed growth after the first 10%% (MiB)")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 20_000 if args.quick else 1_000_000
    if args.torchsde_steps is None:
        args.torchsde_steps = 20_000 if args.quick else 1_000_000
    if args.iters is None:
        args.iters = 300 if args.quick else 10_000
    info = _common.machine_info(torch.device("cpu"))
    print(f"bench_memory on {_common.machine_description(info)}; load average {os.getloadavg()[0]:.2f}")
    rows = simulation_runs(args)
    rows.append(training_run(args))
    table = _common.markdown_table(
        ["run", "seconds", "RSS start MiB", "RSS at 10% MiB", "RSS late peak MiB", "growth MiB", "flat", "note"],
        [[r["run"], f"{r['seconds']:.1f}", f"{r['start_mib']:.1f}", f"{r['at10_mib']:.1f}",
          f"{r['late_peak_mib']:.1f}", f"{r['growth_mib']:+.1f}", "yes" if r["flat"] else "NO", r.get("note", "")]
         for r in rows])
    print(table)
    ok = all(r["flat"] and r.get("finite", True) for r in rows)
    if not args.no_write and not args.quick:
        body = (f"{_common.utc_stamp()}; {_common.machine_description(info)}; load average "
                f"{os.getloadavg()[0]:.2f}.\n\nRSS sampled every {args.interval:g} s; *flat*: the second half "
                f"exceeds the RSS at 10% of the run by less than {args.flat_mib:g} MiB. Simulations: OU, "
                f"{args.batch} x {args.dim} states, save='final'. Training: score_recipe('gmm8'), batch "
                f"{args.train_batch}, MLP 64 x 2.\n\n{table}\n")
        path = _common.append_section("Memory over long runs (bench_memory.py)", body)
        print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
