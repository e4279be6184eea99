"""Latent consistency models on the 8×8 digits: teacher Heun-35 against LCM 1/2/4 steps, with guidance.

Setup (issue 12): scikit-learn's digits, the fixed split of :func:`sdeflow.latent.load_digits_split`; the
pipeline of :func:`sdeflow.latent.lcm.train_latent_pipeline` with :class:`~sdeflow.latent.lcm.LatentSpec`'s
defaults (autoencoder to 12 dims, class-conditional latent EDM teacher with label dropout 0.1, latent
consistency distillation with w ~ U[0, 2] as a student input, skipping step k, Heun teacher sub-steps, the
multistep τ searched on the digits FD on a batch of its own). ``--skips 1,2`` distills one student per k
from the same teacher.

Metrics: the Fréchet distance in the package's digits-classifier features (:func:`sdeflow.latent.digits_fd`)
of n = 359 decoded samples (the held-out split's labels, so its class counts) against the **training**
images — the same n and reference as the floor FD(held-out, train) — and the classifier's accuracy on the
conditioning labels, each the mean ± std over ``--seeds`` sampling seeds (5 by default; one seed moves the FD
by about ±0.5). Teacher and students start from the same x_T = 80·randn per seed (common random numbers).

Goals (at the same guidance w as the teacher, ``--w``, default 1): LCM 1-step FD ≤ 1.10× and 4-step ≤ 1.03×
the teacher's Heun-35 FD; 4-step strictly better than 1-step; conditional accuracy ≥ 98 % at 1, 2 and 4
steps; a skipping step k ≥ 2 student at w = 2 with accuracy ≥ 98 % and 4-step FD ≤ 1.10× the teacher's at
w = 2; all training (autoencoder + teacher + one distillation) within 10 minutes. The ratio to the best
teacher over the w grid is reported too.

``--quick``: a few hundred steps per stage and 2 seeds (a smoke run; its numbers are not the benchmark's).
Writes a table (stdout, benchmarks/RESULTS.md unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdeflow.latent import digits_classifier, digits_fd, digits_fd_floor, load_digits_split  # noqa: E402
from sdeflow.latent.lcm import (  # noqa: E402
    LatentConsistencyModel,
    LatentSpec,
    choose_latent_taus,
    distill_latent,
    evaluate_latent,
    train_latent_pipeline,
)

import _common  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--w", type=float, default=1.0, help="guidance scale of the goals (default 1)")
    p.add_argument("--w-grid", type=_floats, default=[0.0, 1.0, 2.0], help="guidance scales evaluated (0,1,2)")
    p.add_argument("--skips", type=_ints, default=None, help="skipping steps k to distill (default: the spec's, 2)")
    p.add_argument("--seeds", type=int, default=5, help="sampling seeds per row (default 5)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, metavar="DIR", help="also keep the checkpoints here")
    p.add_argument("--quick", action="store_true", help="short training and 2 seeds (smoke run)")
    p.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = LatentSpec(seed=args.seed)
    seeds = tuple(range(100, 100 + args.seeds))
    if args.quick:
        spec = dataclasses.replace(spec, ae_iters=400, teacher_iters=500, lcd_iters=200)
        seeds = seeds[:2]
    skips = args.skips if args.skips else [spec.skip]
    tick = time.perf_counter()
    digits_classifier()  # trained once and cached (not part of the pipeline's training time)
    split = load_digits_split()
    floor = digits_fd_floor()
    pipe = train_latent_pipeline(dataclasses.replace(spec, skip=skips[0]), out_dir=args.out, say=print,
                                 tau_guidance=args.w)
    with torch.no_grad():
        recon_fd = digits_fd(pipe.autoencoder.reconstruct(split.test_x))
    students: dict[int, LatentConsistencyModel] = {skips[0]: pipe.model}
    distill_seconds = {skips[0]: pipe.seconds["distillation"]}
    for k in skips[1:]:
        codes = pipe.autoencoder.encode(split.train_x).detach()
        student, res = distill_latent(pipe.teacher, codes, split.train_y, dataclasses.replace(spec, skip=k))
        m = LatentConsistencyModel(student, pipe.autoencoder)
        students[k] = LatentConsistencyModel(student, pipe.autoencoder,
                                             taus=choose_latent_taus(m, (2, 4), guidance=args.w)).eval()
        distill_seconds[k] = res.seconds
        print(f"    distillation k = {k}: {res.steps} steps in {res.seconds:.1f} s")

    rows, by = [], {}
    for w in args.w_grid:
        r = evaluate_latent(lambda y, g, w=w: pipe.diffusion.generate(y, guidance=w, steps=18, generator=g),
                            seeds=seeds)
        by[("teacher", w)] = r
        rows.append(["teacher Heun-35", "", f"{w:g}", 35, str(r["fd"]), f"{100 * r['accuracy'].mean:.1f}"])
        print(rows[-1], flush=True)
        for k, model in students.items():
            for s in (1, 2, 4):
                r = evaluate_latent(lambda y, g, w=w, s=s, m=model: m.generate(y, guidance=w, steps=s, generator=g),
                                    seeds=seeds)
                by[(k, s, w)] = r
                rows.append([f"LCM {s}-step", k, f"{w:g}", s, str(r["fd"]), f"{100 * r['accuracy'].mean:.1f}"])
                print(rows[-1], flush=True)
    best_w = min(args.w_grid, key=lambda w: by[("teacher", w)]["fd"].mean)
    best = by[("teacher", best_w)]["fd"].mean
    header = ["sampler", "k", "w", "NFE", "FD (mean ± std)", "accuracy %"]
    k0 = skips[0]
    goals = []
    w = args.w
    if ("teacher", w) in by:
        t = by[("teacher", w)]["fd"].mean
        f1, f2, f4 = (by[(k0, s, w)]["fd"].mean for s in (1, 2, 4))
        goals.append((f"1-step FD ≤ 1.10× teacher at w = {w:g} ({f1 / t:.3f}×)", f1 <= 1.10 * t))
        goals.append((f"4-step FD ≤ 1.03× teacher at w = {w:g} ({f4 / t:.3f}×)", f4 <= 1.03 * t))
        goals.append((f"4-step better than 1-step ({f4:.3g} vs {f1:.3g})", f4 < f1))
        accs = [by[(k0, s, w)]["accuracy"].mean for s in (1, 2, 4)]
        goals.append(("accuracy ≥ 98 % at 1, 2, 4 steps (" + ", ".join(f"{100 * a:.1f}" for a in accs) + ")",
                      min(accs) >= 0.98))
        ratios = f"ratio to the best teacher (w = {best_w:g}, FD {best:.3g}): 1-step {f1 / best:.3f}×, " \
                 f"2-step {f2 / best:.3f}×, 4-step {f4 / best:.3f}×"
    else:
        ratios = ""
    k2 = next((k for k in skips if k >= 2), None)
    if k2 is not None and ("teacher", 2.0) in by:
        acc = min(by[(k2, s, 2.0)]["accuracy"].mean for s in (1, 2, 4))
        r4 = by[(k2, 4, 2.0)]["fd"].mean / by[("teacher", 2.0)]["fd"].mean
        goals.append((f"skipping step k = {k2} at w = 2: accuracy ≥ 98 % ({100 * acc:.1f}) and 4-step FD ≤ 1.10× "
                      f"teacher ({r4:.3f}×)", acc >= 0.98 and r4 <= 1.10))
    train_s = pipe.seconds["autoencoder"] + pipe.seconds["teacher"] + max(distill_seconds.values())
    goals.append((f"training within 10 min ({train_s:.0f} s)", train_s <= 600))
    body = [_common.markdown_table(header, rows)]
    body.append(f"\nFloor FD(held-out, train) {floor:.3g}; autoencoder reconstruction of the held-out images "
                f"FD {recon_fd:.3g} (against train). {ratios}.")
    body.append(f"\nTraining (s): autoencoder {pipe.seconds['autoencoder']:.0f}, "
                f"teacher {pipe.seconds['teacher']:.0f}, "
                + ", ".join(f"distillation k = {k} {s:.0f}" for k, s in distill_seconds.items())
                + f", τ search {pipe.seconds['tau_search']:.0f}; τ: "
                + "; ".join(f"k = {k}: " + ", ".join(f"{n} steps [{', '.join(f'{t:.3g}' for t in v)}]"
                                                      for n, v in m.taus.items()) for k, m in students.items()))
    body.append("\nGoals: " + "; ".join(f"{g}: {'met' if ok else 'NOT met'}" for g, ok in goals))
    body.append(f"\nFD: n = 359 samples (the held-out labels) against the training images, mean ± std over "
                f"{len(seeds)} sampling seeds {seeds}; x_T shared by teacher and students per seed. Spec: "
                f"{spec.to_json()}{' (--quick: not the benchmark)' if args.quick else ''}; total "
                f"{time.perf_counter() - tick:.0f} s.")
    text = "\n".join(body)
    print(text)
    if args.json:
        _common.dump_json({"rows": rows, "goals": goals, "seconds": pipe.seconds, "distill_seconds": distill_seconds,
                           "floor": floor, "recon_fd": recon_fd}, args.json)
    if not args.no_write:
        info = _common.machine_info("cpu")
        _common.append_section(f"bench_latent — {_common.utc_stamp()}, {_common.machine_description(info)}", text)
    return 0 if all(ok for _, ok in goals) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
