"""Euler–Maruyama throughput on an Ornstein–Uhlenbeck SDE: sdeflow native vs torchsde vs a plain loop.

    dX = theta (mean - X) dt + sigma dW,  theta=1, mean=0, sigma=0.5,  X0 = 0 in R^d,

integrated with 1000 steps of dt=1e-3 over [0, 1], keeping only the final state, for a batch of B
paths. Throughput is reported as element-steps per second (B * d * steps / seconds, best of the
repeats, after a warm-up), for

1. ``sdeflow.simulate(..., method="euler", backend="native", save="final")``,
2. ``torchsde.sdeint(..., method="euler", dt=1e-3)`` on an equivalent torchsde SDE with a default
   ``torchsde.BrownianInterval`` (created inside the timed call, as ``sdeint`` would),
3. a plain torch loop ``x = x + theta*(mean - x)*dt + sigma*sqrt(dt)*randn(...)``.

Goals checked: native >= 10x torchsde for every B <= 4096, native >= 0.9x the plain loop for B >= 64.

``--overhead`` measures instead what one ``simulate()`` call costs next to a plain loop in the same
run, at B = 1 (where the per-call work shows) and at 4096 x 16: the bench's call (``ts=[0, 1]``,
``save="final"``) against the plain loop, and a new user's call (``ts=torch.linspace(0, 1, 1001)``,
default ``save="ts"``: every state kept) against a plain loop that keeps every state. Each pair is
timed alternately (the machine may be shared) and the ratio plain time / simulate time is printed
(goal: >= 0.9, i.e. a call costs at most 1/0.9 of the loop).

Usage::

    python benchmarks/bench_simulate.py         # full CPU run (~4-5 min on 2 cores, with the per-call
                                                # probe), appends RESULTS.md
    python benchmarks/bench_simulate.py --overhead      # per-call overhead vs a plain loop (~1 min)
    python benchmarks/bench_simulate.py --quick --no-write
    python benchmarks/bench_simulate.py --device cuda --json /tmp/sim.json
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torchsde  # noqa: E402

import sdeflow  # noqa: E402

import _common  # noqa: E402  (this folder, not a package)

THETA, MEAN, SIGMA = 1.0, 0.0, 0.5
DT = 1e-3
SEED = 1234
GOAL_TORCHSDE = 10.0  # native / torchsde, for B <= GOAL_TORCHSDE_MAX_B
GOAL_TORCHSDE_MAX_B = 4096
GOAL_PLAIN = 0.9  # native / plain loop, for B >= GOAL_PLAIN_MIN_B
GOAL_PLAIN_MIN_B = 64
GOAL_GPU_RATE = 1e11  # CUDA: best fused path at 1048576 x 16, element-steps/s
GOAL_GPU_1X1_MS = 2.0  # CUDA: best fused path at 1 x 1, milliseconds per 1000-step simulate() call


class OUTorchsde(torch.nn.Module):
    """The same OU process in torchsde's protocol (diagonal, Itô)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, theta: float, mean: float, sigma: float) -> None:
        super().__init__()
        self.theta, self.mean, self.sigma = theta, mean, sigma

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.theta * (self.mean - y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.sigma * torch.ones_like(y)


# -- the implementations (each returns the final state, shape (B, d)) --------------------------------------
def _ou(device: torch.device) -> sdeflow.OrnsteinUhlenbeck:
    return sdeflow.OrnsteinUhlenbeck(THETA, MEAN, SIGMA).to(device)


def _simulate_final(sde: sdeflow.SDE, x0: torch.Tensor, t1: float, compile: bool | str = False) -> sdeflow.Solution:
    return sdeflow.simulate(sde, x0, [0.0, t1], dt=DT, method="euler", backend="native", save="final",
                            generator=SEED, compile=compile)


def run_native(x0: torch.Tensor, t1: float) -> torch.Tensor:
    return _simulate_final(_ou(x0.device), x0, t1).xs[-1]


_COMPILE_TIMES: dict[tuple, float] = {}
_COMPILED_SDE: dict[str, torch.nn.Module] = {}


def run_compiled(x0: torch.Tensor, t1: float) -> torch.Tensor:
    """The fused path: chunks of steps compiled with torch.compile (compile time recorded separately).

    One SDE object per device, so its cached graphs are reused across calls.
    """
    if str(x0.device) not in _COMPILED_SDE:
        _COMPILED_SDE[str(x0.device)] = _ou(x0.device)
    sol = _simulate_final(_COMPILED_SDE[str(x0.device)], x0, t1, compile=True)
    key = (tuple(x0.shape), round(t1 / DT))
    _COMPILE_TIMES[key] = _COMPILE_TIMES.get(key, 0.0) + sol.stats.compile_time
    return sol.xs[-1]


def run_triton(x0: torch.Tensor, t1: float) -> torch.Tensor:
    """The whole-trajectory Triton kernel, noise drawn in the kernel (CUDA); a new SDE every call."""
    return _simulate_final(_ou(x0.device), x0, t1, compile="triton").xs[-1]


def run_torchsde(x0: torch.Tensor, t1: float) -> torch.Tensor:
    sde = OUTorchsde(THETA, MEAN, SIGMA)
    ts = torch.tensor([0.0, t1], dtype=x0.dtype, device=x0.device)
    # the interval's ends as ts holds them (float32), so torchsde does not warn that tb > t1
    bm = torchsde.BrownianInterval(t0=float(ts[0]), t1=float(ts[-1]), size=tuple(x0.shape), dtype=x0.dtype,
                                   device=x0.device, entropy=SEED)
    return torchsde.sdeint(sde, x0, ts, bm=bm, method="euler", dt=DT)[-1]


def run_plain(x0: torch.Tensor, t1: float) -> torch.Tensor:
    n = round(t1 / DT)
    g = torch.Generator(device=x0.device)
    g.manual_seed(SEED)
    theta, mean, sigma, dt = THETA, MEAN, SIGMA, DT
    x = x0
    for _ in range(n):
        x = x + theta * (mean - x) * dt + sigma * math.sqrt(dt) * torch.randn(
            x.shape, generator=g, device=x.device, dtype=x.dtype)
    return x


def run_plain_keep_all(x0: torch.Tensor, t1: float) -> torch.Tensor:
    """The plain loop keeping every state, as ``save="ts"`` on a grid of every step does."""
    n = round(t1 / DT)
    g = torch.Generator(device=x0.device)
    g.manual_seed(SEED)
    theta, mean, sigma, dt = THETA, MEAN, SIGMA, DT
    x, out = x0, [x0]
    for _ in range(n):
        x = x + theta * (mean - x) * dt + sigma * math.sqrt(dt) * torch.randn(
            x.shape, generator=g, device=x.device, dtype=x.dtype)
        out.append(x)
    return torch.stack(out)


GOAL_OVERHEAD = 0.9  # plain loop time / simulate() time, at B = 1 and 4096 x 16


def overhead_probe(device: torch.device, repeats: int = 15) -> list[dict]:
    """simulate() vs a plain loop in the same run, timed alternately; best of ``repeats`` each.

    Two calls per size: the bench's (``ts=[0, 1]``, ``save="final"``, vs :func:`run_plain`) and a new
    user's (``ts=torch.linspace(0, 1, 1001)``, every state saved, vs :func:`run_plain_keep_all`).
    """
    ou = _ou(device)
    ts_user = torch.linspace(0.0, 1.0, 1001, device=device)
    rows = []
    for B, d in ((1, 1), (4096, 16)):
        x0 = torch.zeros(B, d, device=device)
        reps = repeats if B * d <= 1024 else max(3, repeats // 3)
        pairs = {
            "final, ts=[0, 1]": (
                lambda x0=x0: sdeflow.simulate(ou, x0, [0.0, 1.0], dt=DT, method="euler", save="final",
                                               generator=SEED),
                lambda x0=x0: run_plain(x0, 1.0)),
            "save='ts', ts=linspace(0, 1, 1001)": (
                lambda x0=x0: sdeflow.simulate(ou, x0, ts_user, dt=DT, method="euler", generator=SEED),
                lambda x0=x0: run_plain_keep_all(x0, 1.0)),
        }
        for name, (sim, plain) in pairs.items():
            best = {"simulate": math.inf, "plain": math.inf}
            # as a new user calls it: no torch.no_grad() (nothing requires grad, so no graph is built)
            for rnd in range(reps + 1):  # round 0 is the warm-up
                for key, fn in (("simulate", sim), ("plain", plain)):
                    t, _ = _common.best_of(fn, 1, device=device, warmup=False)
                    if rnd:
                        best[key] = min(best[key], t.best)
            steps = sim().stats.steps
            ratio = best["plain"] / best["simulate"]
            rows.append({"B": B, "d": d, "call": name, "steps": steps, "simulate_ms": best["simulate"] * 1e3,
                         "plain_ms": best["plain"] * 1e3, "ratio": ratio,
                         "goal": "pass" if ratio >= GOAL_OVERHEAD else "FAIL"})
    return rows


def print_overhead(rows: list[dict]) -> None:
    for r in rows:
        print(f"  B={r['B']:>5} d={r['d']:>2} {r['call']:<36} steps {r['steps']:>5}: simulate "
              f"{r['simulate_ms']:8.2f} ms, plain loop {r['plain_ms']:8.2f} ms, plain/simulate "
              f"{r['ratio']:.3f} (goal >= {GOAL_OVERHEAD}: {r['goal']})")


def render_overhead(rows: list[dict]) -> str:
    header = ["B", "d", "call", "steps", "simulate ms", "plain loop ms", "plain/simulate",
              f"≥{GOAL_OVERHEAD:g} (one call vs a plain loop)"]
    body = [[r["B"], r["d"], r["call"], r["steps"], f"{r['simulate_ms']:.2f}", f"{r['plain_ms']:.2f}",
             f"{r['ratio']:.3f}", r["goal"]] for r in rows]
    return _common.markdown_table(header, body)


def theory_std(t1: float) -> float:
    return SIGMA * math.sqrt(-math.expm1(-2 * THETA * t1) / (2 * THETA))


def check_final(name: str, x: torch.Tensor, t1: float) -> str | None:
    """Sanity check of the final state against the OU law (only when the sample is large)."""
    if x.numel() < 4096:
        return None
    x = x.detach().double().cpu()
    mean, std, ref = float(x.mean()), float(x.std()), theory_std(t1)
    bad_mean = abs(mean - MEAN) > 5 * ref / math.sqrt(x.numel())
    if not math.isfinite(std) or abs(std / ref - 1) > 0.05 or bad_mean:
        return f"{name}: final mean {mean:.4f} std {std:.4f}, expected mean {MEAN} std {ref:.4f}"
    return None


# -- the benchmark ------------------------------------------------------------------------------------------
def repeats_for(impl: str, numel: int, quick: bool) -> int:
    if quick:
        return 1
    if impl == "torchsde":
        return 2 if numel <= 1024 else 1
    if numel <= 65536:
        return 5
    return 3 if numel <= 262144 else 2


def bench_case(B: int, d: int, steps: int, device: torch.device, args: argparse.Namespace) -> dict:
    t1 = steps * DT
    x0 = torch.zeros(B, d, device=device)
    work = B * d * steps
    numel = B * d
    # a full-length warm-up is cheap for small cases; big ones warm up on a short run of the same shape
    short = min(steps, 100)
    full_warm = work <= 1e8
    row: dict = {"B": B, "d": d, "steps": steps, "numel": numel, "element_steps": work}
    warnings: list[str] = []
    impls = [("native", run_native), ("compiled", run_compiled), ("torchsde", run_torchsde), ("plain", run_plain)]
    if device.type == "cuda":
        impls.append(("triton", run_triton))
    for name, fn in impls:
        rec: dict = {"repeats": repeats_for(name, numel, args.quick)}
        try:
            with torch.no_grad():
                if name == "torchsde":
                    # a short run of the same shape is the warm-up and a (lower-bound) time estimate:
                    # BrownianInterval's cost per step grows with the number of steps
                    probe = min(steps, 100)
                    t_probe, _ = _common.best_of(lambda f=fn, p=probe: f(x0, p * DT), 1, device=device,
                                                 warmup=False)
                    est = t_probe.best * steps / probe
                    rec["probe_steps"], rec["probe_s"], rec["linear_estimate_s"] = probe, t_probe.best, est
                    if est > args.torchsde_limit:
                        rec["skipped"] = f"estimated >= {est:.0f} s per run > {args.torchsde_limit:g} s"
                        row[name] = rec
                        continue
                    run = _common.time_limited(lambda f=fn: f(x0, t1), args.torchsde_limit)
                    timing, out = _common.best_of(run, rec["repeats"], device=device, warmup=False)
                    timing.warmup = t_probe.best
                else:
                    warm = True if full_warm else (lambda f=fn: f(x0, short * DT))
                    timing, out = _common.best_of(lambda f=fn: f(x0, t1), rec["repeats"], device=device,
                                                  warmup=warm)
            rec.update(timing.as_dict())
            rec["rate"] = work / timing.best
            msg = check_final(name, out, t1)
            if msg:
                warnings.append(msg)
        except _common.TimeLimitExceeded:
            rec["skipped"] = f"a run exceeded {args.torchsde_limit:g} s"
        except Exception as err:  # keep benchmarking the other implementations
            traceback.print_exc()
            rec["error"] = f"{type(err).__name__}: {err}"
        row[name] = rec
    # Native vs plain loop is the tightest goal: time them once more alternately, so a slow spell of
    # the (shared) machine hits both, and keep each one's best over all repeats.
    if "rate" in row["native"] and "rate" in row["plain"] and not args.quick:
        with torch.no_grad():
            for _ in range(row["native"]["repeats"]):
                for name, fn in (("native", run_native), ("plain", run_plain)):
                    t, _ = _common.best_of(lambda f=fn: f(x0, t1), 1, device=device, warmup=False)
                    row[name]["rate"] = max(row[name]["rate"], work / t.best)
    row["compile_s"] = sum(v for k, v in _COMPILE_TIMES.items() if k[0] == (B, d))
    with torch.no_grad():
        row["native_peak_mb"] = _common.peak_memory_mb(lambda: run_native(x0, t1), device)
        if device.type == "cuda" and "rate" in row.get("triton", {}):
            row["triton_peak_mb"] = _common.peak_memory_mb(lambda: run_triton(x0, t1), device)
    nat, tsd, pl = (row[k].get("rate") for k in ("native", "torchsde", "plain"))
    comp = row["compiled"].get("rate")
    row["compiled_over_torchsde"] = comp / tsd if comp and tsd else None
    row["native_over_torchsde"] = nat / tsd if nat and tsd else None
    row["native_over_plain"] = nat / pl if nat and pl else None
    # the eager-engine goals are the CPU's (issue 2); on a GPU the goals are the fused paths' (below)
    cpu = device.type == "cpu"
    row["goal_torchsde"] = _goal(cpu and B <= GOAL_TORCHSDE_MAX_B, row["native_over_torchsde"], GOAL_TORCHSDE)
    row["goal_plain"] = _goal(cpu and B >= GOAL_PLAIN_MIN_B, row["native_over_plain"], GOAL_PLAIN)
    if device.type == "cuda":
        fused = [row[k]["rate"] for k in ("compiled", "triton") if "rate" in row.get(k, {})]
        row["best_fused"] = max(fused) if fused else None
        row["best_fused_ms"] = work / row["best_fused"] * 1e3 if fused else None
        if B == 1 and d == 1:
            row["goal_gpu"] = _goal(True, 1 / row["best_fused_ms"] if fused else None, 1 / GOAL_GPU_1X1_MS)
        elif B * d >= 2**24:
            row["goal_gpu"] = _goal(True, row["best_fused"], GOAL_GPU_RATE)
        else:
            row["goal_gpu"] = "n/a"
    row["warnings"] = warnings
    return row


def _goal(applies: bool, ratio: float | None, target: float) -> str:
    if not applies:
        return "n/a"
    if ratio is None:
        return "FAIL (no data)"
    return "pass" if ratio >= target else "FAIL"


def _cell(rec: dict) -> str:
    if "rate" in rec:
        return _common.fmt_rate(rec["rate"])
    if "skipped" in rec:
        return "skipped"
    return "error"


def render(rows: list[dict]) -> str:
    if "goal_gpu" in rows[0]:
        return render_cuda(rows)
    header = ["B", "d", "native el-steps/s", "compiled", "torchsde", "plain loop", "native/torchsde", "native/plain",
              "compiled/torchsde", "compile s", "native peak MiB",
              f"≥{GOAL_TORCHSDE:g}× torchsde (B≤{GOAL_TORCHSDE_MAX_B})",
              f"≥{GOAL_PLAIN:g}× plain (B≥{GOAL_PLAIN_MIN_B})"]
    body = [[r["B"], r["d"], _cell(r["native"]), _cell(r["compiled"]), _cell(r["torchsde"]), _cell(r["plain"]),
             _common.fmt_ratio(r["native_over_torchsde"]), _common.fmt_ratio(r["native_over_plain"]),
             _common.fmt_ratio(r["compiled_over_torchsde"]), f"{r['compile_s']:.1f}", f"{r['native_peak_mb']:.1f}",
             r["goal_torchsde"], r["goal_plain"]] for r in rows]
    return _common.markdown_table(header, body)


def render_cuda(rows: list[dict]) -> str:
    header = ["B", "d", "native", "compiled", "triton", "torchsde", "plain loop", "triton/torchsde", "triton/plain",
              "compiled/plain", "native/torchsde", "best fused ms/call", "compile s", "peak MiB native / triton",
              f"GPU goal (≥{GOAL_GPU_RATE:.0e} at 2^24 el.; ≤{GOAL_GPU_1X1_MS:g} ms at 1×1)"]

    def ratio(r: dict, a: str, b: str) -> str:
        x, y = r[a].get("rate"), r[b].get("rate")
        return _common.fmt_ratio(x / y if x and y else None)

    body = [[r["B"], r["d"], *(_cell(r[k]) for k in ("native", "compiled", "triton", "torchsde", "plain")),
             ratio(r, "triton", "torchsde"), ratio(r, "triton", "plain"), ratio(r, "compiled", "plain"),
             ratio(r, "native", "torchsde"),
             f"{r['best_fused_ms']:.3g}" if r["best_fused_ms"] else "–", f"{r['compile_s']:.1f}",
             f"{r['native_peak_mb']:.0f} / {r.get('triton_peak_mb', float('nan')):.0f}", r["goal_gpu"]]
            for r in rows]
    return _common.markdown_table(header, body)


def goal_summary(rows: list[dict]) -> tuple[bool, list[str]]:
    fails = []
    for r in rows:
        if r.get("goal_gpu", "").startswith("FAIL"):
            fails.append(f"B={r['B']}, d={r['d']}: GPU goal not met (best fused {r['best_fused_ms']} ms/call)")
        if r["goal_torchsde"].startswith("FAIL"):
            ratio = _common.fmt_ratio(r["native_over_torchsde"])
            fails.append(f"B={r['B']}, d={r['d']}: native/torchsde = {ratio} < {GOAL_TORCHSDE:g}x")
        if r["goal_plain"].startswith("FAIL"):
            ratio = _common.fmt_ratio(r["native_over_plain"])
            fails.append(f"B={r['B']}, d={r['d']}: native/plain = {ratio} < {GOAL_PLAIN:g}x")
    return not fails, fails


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke test: B in {1, 64}, d in {1, 16}, 200 steps, 1 repeat")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md")
    p.add_argument("--json", metavar="PATH", help="also dump the raw numbers as JSON")
    p.add_argument("--sizes", metavar="BxD,...",
                   help="comma-separated cases such as 1x1,65536x16 (default: a grid for the device)")
    p.add_argument("--torchsde-limit", type=float, default=60.0, metavar="S",
                   help="skip torchsde where one run is estimated to take longer than S seconds (default 60)")
    p.add_argument("--overhead", action="store_true",
                   help="only the per-call probe: simulate() vs a plain loop at B=1 and 4096x16 (printed)")
    args = p.parse_args(argv)

    device = _common.resolve_device(args.device)
    if args.overhead:
        print(f"bench_simulate --overhead: OU, Euler–Maruyama, 1000 steps of dt={DT}, eager; machine: "
              f"{_common.machine_description(_common.machine_info(device))}")
        rows = overhead_probe(device)
        print_overhead(rows)
        if args.json:
            _common.dump_json({"benchmark": "bench_simulate --overhead", "utc": _common.utc_stamp(), "rows": rows},
                              args.json)
        return 0 if all(r["goal"] == "pass" for r in rows) else 1
    steps = 200 if args.quick else 1000
    if args.quick:
        Bs = [1, 64]
    elif device.type == "cuda":
        Bs = [1, 64, 4096, 65536, 1048576]
    else:
        Bs = [1, 64, 4096, 65536]
    ds = [1, 16]
    # on a GPU, the cases of the table: 1x1 (latency), then d = 16 up to 2^24 elements
    default_cases = ([(1, 1), (64, 16), (4096, 16), (65536, 16), (1048576, 16)] if device.type == "cuda"
                     and not args.quick else [(B, d) for B in Bs for d in ds])
    info = _common.machine_info(device)
    desc = _common.machine_description(info)
    print(f"bench_simulate: OU(theta={THETA}, mean={MEAN}, sigma={SIGMA}), Euler–Maruyama, {steps} steps of "
          f"dt={DT}, save='final'")
    print(f"machine: {desc}", flush=True)

    cases = default_cases
    if args.sizes:
        try:
            cases = [tuple(int(v) for v in c.lower().split("x")) for c in args.sizes.split(",")]
        except ValueError:
            p.error(f"--sizes takes cases like 1x1,65536x16; got {args.sizes!r}")
    rows = []
    for B, d in cases:
        row = bench_case(B, d, steps, device, args)
        rows.append(row)
        cells = [f"{k} {_cell(row[k]):>9}" for k in ("native", "compiled", "triton", "torchsde", "plain")
                 if k in row]
        print(f"  B={B:>7} d={d:>2}: {'  '.join(cells)}  el-steps/s", flush=True)
        for w in row["warnings"]:
            print(f"  WARNING (sanity check of the final state) {w}", flush=True)

    table = render(rows)
    ok, fails = goal_summary(rows)
    overhead_rows: list[dict] = []
    if device.type == "cpu" and not args.quick and not args.sizes:
        print("per-call probe (simulate() vs a plain loop, timed alternately):", flush=True)
        overhead_rows = overhead_probe(device)
        print_overhead(overhead_rows)
        for r in overhead_rows:
            if r["goal"] != "pass":
                ok = False
                fails.append(f"B={r['B']}, d={r['d']}, {r['call']}: plain/simulate = {r['ratio']:.3f} "
                             f"< {GOAL_OVERHEAD:g}")
    summary = "Goals: all pass." if ok else "Goals: FAIL -- " + "; ".join(fails)
    print()
    print(table)
    if overhead_rows:
        print()
        print(render_overhead(overhead_rows))
    print()
    print(summary)

    if not args.no_write:
        reps = ("repeats: native/plain best of 5 for B·d ≤ 65536, 3 up to 262144, else 2; torchsde 2 for "
                "B·d ≤ 1024 else 1" if not args.quick else "repeats: 1 (quick mode)")
        body = "\n".join([
            f"OU(theta={THETA:g}, mean={MEAN:g}, sigma={SIGMA:g}), x0 = 0, Euler–Maruyama, {steps} steps of "
            f"dt={DT:g}, save='final'; element-steps/s = B·d·steps / best time (after a warm-up); {reps}; "
            f"native and plain are then timed once more alternately and keep their best. 'compiled' is "
            f"simulate(compile=True); its compile time (first call per shape) is in 'compile s'."
            + (" **Quick mode (smoke test).**" if args.quick else ""),
            "Command: `" + " ".join(["python benchmarks/bench_simulate.py",
                                     *(argv if argv is not None else sys.argv[1:])]) + "`",
            "",
            table,
            *(["", "One simulate() call against a plain loop in the same run (eager, as a new user calls it; "
               "`--overhead` runs only this):", "", render_overhead(overhead_rows)] if overhead_rows else []),
            "",
            summary,
        ])
        path = _common.append_section(f"bench_simulate — {_common.utc_stamp()}, {desc}", body)
        print(f"appended to {path}")
    if args.json:
        _common.dump_json({"benchmark": "bench_simulate", "utc": _common.utc_stamp(), "machine": info,
                           "params": {"theta": THETA, "mean": MEAN, "sigma": SIGMA, "dt": DT, "steps": steps,
                                      "seed": SEED, "quick": args.quick, "device": str(device)},
                           "goals_pass": ok, "goal_failures": fails, "rows": rows,
                           "overhead_rows": overhead_rows}, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
