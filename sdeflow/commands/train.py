"""``sdeflow train score``: train a score model on built-in 2-D data and measure it against the exact reference.

Checkpoints go to ``--out DIR`` (safetensors + JSON, loadable by ``sdeflow sample --model DIR`` and
``sdeflow.load_model``); ``--resume`` continues the newest checkpoint there and ends bitwise equal to an
uninterrupted run. At the end the evaluation table is printed: for mixture data (``gmm8``, ``ring``)
ΔNLL and pathwise error of Heun samples against the exact denoiser from the same x_T, the denoiser error
by noise level and the PF-ODE NLL gap; for the other data an energy-distance test against held-out data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from ._common import CommandError, add_threads_argument, check_memory, machine_line
from ._common import finite_float as _finite_float
from ._common import nonnegative_int as _nonnegative_int
from ._common import positive_float as _positive_float
from ._common import positive_int as _positive_int
from ._common import rate_arg as _rate
from ._common import seed_arg as _seed

__all__ = ["add_parser", "run_score", "run_consistency", "run_latent"]


def _fail(msg: str) -> int:
    print(f"sdeflow train: error: {msg}", file=sys.stderr)
    return 2


#: Rough memory per training example (the MLP's activations and gradients, float32) and per evaluation sample:
#: enough to refuse a --batch or --eval-samples that cannot fit before anything is allocated.
_BYTES_PER_EXAMPLE, _BYTES_PER_EVAL_SAMPLE = 16 << 10, 4 << 10


def _check_sizes(args: argparse.Namespace) -> str | None:
    """A one-line error when --batch or --eval-samples cannot fit in memory, else None."""
    try:
        check_memory(f"--batch {args.batch}", args.batch * _BYTES_PER_EXAMPLE, "use a smaller --batch",
                     torch.device(args.device))
        check_memory(f"--eval-samples {args.eval_samples}", args.eval_samples * _BYTES_PER_EVAL_SAMPLE,
                     "use a smaller --eval-samples", torch.device(args.device))
    except CommandError as err:
        return str(err)
    return None


def _check_json(args: argparse.Namespace) -> str | None:
    """A one-line error when --json's folder does not exist, else None."""
    if args.json is not None and not Path(args.json).resolve().parent.is_dir():
        return f"--json {args.json!r}: its folder does not exist"
    return None


def _check_run(args: argparse.Namespace) -> Path | str:
    """The checks of ``train score`` and ``train consistency`` before any work: the --out folder (as
    :func:`_check_out`), the sizes and --json; the output folder, or a one-line error. (``sdeflow.cli.main``
    has checked --device and set the threads.)"""
    out = _check_out(args.out, args.resume)
    if isinstance(out, str):
        return out
    return _check_sizes(args) or _check_json(args) or out


def _write_json(path: str, doc: object) -> None:
    """Write the evaluation atomically (a killed run leaves the old file or none, never half of one)."""
    from ..io import atomic_write

    text = json.dumps(doc, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))




def _add_run_options(p: argparse.ArgumentParser) -> None:
    """The options every ``train`` kind on toy data shares: budget, output, device, seed, resume, evaluation."""
    p.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                   help="stop training after this many seconds (resumable, not bitwise reproducible)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder (created)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the weights, data and noise (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--checkpoint-every", type=_nonnegative_int, default=2000, metavar="N",
                   help="steps between checkpoints (0: only at the end)")
    p.add_argument("--eval-samples", type=_positive_int, default=20_000, metavar="N",
                   help="samples for the final evaluation (default 20000)")
    add_threads_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the evaluation as JSON")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..generative.recipes import SCORE_SDES, TOY_DATASETS

    p = sub.add_parser("train", help="train a model (score models on built-in 2-D data)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    s = kinds.add_parser("score", help="a score model (EDM preconditioning or a VP/sub-VP/VE ε-model)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--data", choices=list(TOY_DATASETS), default="gmm8", help="built-in data set (default gmm8)")
    s.add_argument("--sde", choices=list(SCORE_SDES), default="edm", help="diffusion SDE (default edm)")
    s.add_argument("--iters", type=_positive_int, default=20_000, help="optimiser steps (default 20000)")
    s.add_argument("--batch", type=_positive_int, default=1024, help="batch size (default 1024)")
    s.add_argument("--lr", type=_positive_float, default=2e-3, help="peak learning rate (default 2e-3)")
    _add_run_options(s)
    s.set_defaults(run=run_score)
    _add_consistency_parser(kinds, TOY_DATASETS)
    _add_latent_parser(kinds)
    p.set_defaults(run=lambda args: (p.print_help(), 2)[1])


_CONSISTENCY_DOC = """``sdeflow train consistency``: train a consistency model (CD, CT, iCT, ECT, sCM) on 2-D data.

The student is a ConsistencyFunction around an MLP; the teacher (distillation: cd, scm, and ect's
initialisation) is the exact mixture denoiser (``--teacher exact``, gmm8/ring) or a score model trained by
``sdeflow train score`` (``--teacher DIR``). Checkpoints go to ``--out DIR`` (loadable by ``sdeflow sample
--model DIR --steps 1|2|3`` and ``sdeflow.load_model``); ``--resume`` continues the newest one, target EMA
included. At the end the evaluation table is printed: 1- and 2-step ΔNLL under the exact mixture with
standard errors, the pathwise error of the one-step map against the exact consistency function f* from the
same x_T, and the self-consistency error by noise level (energy distances for non-mixture data).
"""


def _add_consistency_parser(kinds: argparse._SubParsersAction, datasets: dict) -> None:
    from ..consistency.losses import TEACHER_SOLVERS
    from ..consistency.recipes import CONSISTENCY_MODES

    c = kinds.add_parser("consistency", help="a consistency model (distillation or training)",
                         description=_CONSISTENCY_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--mode", choices=list(CONSISTENCY_MODES), default="cd",
                   help="cd (distillation), ct, ict, ect (fine-tune a score model), scm (default cd)")
    c.add_argument("--teacher", default=None, metavar="exact|none|DIR",
                   help="teacher: 'exact' (mixture data), 'none', or a score-model checkpoint folder "
                        "(default: exact for cd/scm, none for ct/ict; ect needs DIR)")
    c.add_argument("--data", choices=list(datasets), default="gmm8", help="built-in data set (default gmm8)")
    c.add_argument("--iters", type=_positive_int, default=20_000, help="optimiser steps (default 20000)")
    c.add_argument("--batch", type=_positive_int, default=512, help="batch size (default 512)")
    c.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate (default: the recipe's)")
    c.add_argument("--solver", choices=list(TEACHER_SOLVERS), default="heun", help="CD teacher step (default heun)")
    c.add_argument("--n-points", type=_positive_int, default=None, metavar="N",
                   help="CD grid size N (ct/ict: the curriculum's final size)")
    c.add_argument("--estimate", choices=["x0", "stf"], default="x0",
                   help="teacher-free velocity estimate of ct/ict/ect/sCT: x0 (one sample, the papers') or stf "
                        "(the batch as reference set; default x0)")
    c.add_argument("--target-ema", type=_rate, default=None, metavar="MU",
                   help="cd: the target EMA rate (default 0.95); ict/ect: an EMA target of rate MU instead of "
                        "the papers' stopgrad(student)")
    _add_run_options(c)
    c.add_argument("--log-consistency", action="store_true",
                   help="log the self-consistency error vs f* ten times during training (mixture data)")
    c.set_defaults(run=run_consistency)


def run_consistency(args: argparse.Namespace) -> int:
    from ..consistency.recipes import (
        consistency_recipe,
        evaluate_consistency,
        format_consistency_evaluation,
        self_consistency_callback,
    )
    from ..generative.checkpoint import CheckpointError
    from ..generative.training import Trainer

    out = _check_run(args)
    if isinstance(out, str):
        return _fail(out)
    teacher: object = "default" if args.teacher is None else (None if args.teacher == "none" else args.teacher)
    if isinstance(teacher, str) and teacher not in ("default", "exact") and not Path(teacher).exists():
        return _fail(f"--teacher {teacher!r}: no such checkpoint folder or file (or use 'exact' / 'none')")
    try:
        recipe = consistency_recipe(args.mode, args.data, teacher, iters=args.iters, batch_size=args.batch,
                                    lr=args.lr, seed=args.seed, device=args.device, solver=args.solver,
                                    n_points=args.n_points, estimate=args.estimate, target_beta=args.target_ema,
                                    time_budget=args.time_budget,
                                    progress=not args.no_progress, checkpoint_every=max(0, args.checkpoint_every))
        config = recipe.config
        callbacks = []
        if recipe.mixture is not None and args.log_consistency:  # the self-consistency error, logged as it trains
            config = dataclasses.replace(config, eval_every=max(1, args.iters // 10))
            callbacks.append(self_consistency_callback(recipe.mixture, seed=args.seed))
        trainer = Trainer(recipe.model, recipe.loss, recipe.data, config, out_dir=out, callbacks=callbacks,
                          metadata=recipe.metadata, resume=args.resume)
    except (ValueError, TypeError, CheckpointError) as err:
        return _fail(str(err))
    print(f"training a consistency model: mode {args.mode}, data {args.data}, teacher {recipe.metadata['teacher']}, "
          f"{args.iters} iterations of batch {args.batch}, device {args.device}, {torch.get_num_threads()} threads, "
          f"seed {args.seed}" + (f" (resuming at step {trainer.step})" if trainer.step else ""))
    tick = time.perf_counter()
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        print("interrupted: the last complete checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130
    print(f"trained {result.steps} steps in {result.seconds:.1f} s ({result.stopped}); "
          f"checkpoint {result.checkpoint}")
    logged = [(h["step"], h["eval"]) for h in trainer.history if "eval" in h]
    if logged:
        print("self-consistency error vs f* while training (EMA copy): " + ", ".join(
            f"step {k}: {e['self_consistency']:.3f}" for k, e in logged))
    model = trainer.ema["ema"].eval()
    ev = evaluate_consistency(model, args.data, n_samples=args.eval_samples, seed=args.seed)
    ev["train_seconds"] = result.seconds
    ev["train_steps"] = result.steps
    print(format_consistency_evaluation(ev))
    print(f"total {time.perf_counter() - tick:.1f} s; {machine_line()}")
    if args.json:
        _write_json(args.json, ev)
    return 0


_LATENT_DOC = """``sdeflow train latent``: a latent consistency model on scikit-learn's 8x8 digits (no download).

Trains an autoencoder to a small latent space, a class-conditional latent diffusion teacher with label
dropout (classifier-free guidance), and distills the guided teacher into a consistency model that takes
the guidance scale w as an input (w ~ U[--w-min, --w-max]) with skipping step --skip; the multistep τ are
searched on the digits FD. --out DIR receives autoencoder/, teacher/, student/ (the trainers' checkpoints),
model/ (student + decoder + τ: ``sdeflow sample --model DIR/model --steps 1|2|4 --class 3 --guidance 2``)
and diffusion/ (teacher + decoder, Heun). At the end: FD and class accuracy of the teacher's Heun-35 and
of 1-, 2- and 4-step sampling at --eval-guidance, mean ± std over --eval-seeds seeds (docs/latent.md).
"""


def _add_latent_parser(kinds: argparse._SubParsersAction) -> None:
    from ..consistency.losses import TEACHER_SOLVERS
    from ..latent.lcm import LatentSpec

    d = LatentSpec()
    c = kinds.add_parser("latent", help="a latent consistency model on the 8x8 digits (guidance as an input)",
                         description=_LATENT_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--out", required=True, metavar="DIR", help="output folder (created; must not hold a run)")
    c.add_argument("--latent-dim", type=_positive_int, default=d.latent_dim, help=f"latent dims ({d.latent_dim})")
    c.add_argument("--ae-iters", type=_positive_int, default=d.ae_iters, help=f"autoencoder steps ({d.ae_iters})")
    c.add_argument("--teacher-iters", type=_positive_int, default=d.teacher_iters,
                   help=f"teacher steps ({d.teacher_iters})")
    c.add_argument("--iters", type=_positive_int, default=d.lcd_iters, help=f"distillation steps ({d.lcd_iters})")
    c.add_argument("--skip", type=_positive_int, default=d.skip, help=f"skipping step k ({d.skip})")
    c.add_argument("--n-points", type=_positive_int, default=d.n_points, help=f"grid size N ({d.n_points})")
    c.add_argument("--solver", choices=list(TEACHER_SOLVERS), default=d.solver, help=f"teacher step ({d.solver})")
    c.add_argument("--w-min", type=_finite_float, default=d.w_min, help=f"smallest training guidance ({d.w_min:g})")
    c.add_argument("--w-max", type=_finite_float, default=d.w_max, help=f"largest training guidance ({d.w_max:g})")
    c.add_argument("--eval-guidance", type=_finite_float, default=1.0, metavar="W", help="w of the evaluation (1)")
    c.add_argument("--eval-seeds", type=_nonnegative_int, default=5, metavar="N",
                   help="sampling seeds (5; 0: no evaluation)")
    c.add_argument("--no-tau-search", action="store_true", help="Karras-grid τ instead of the FD search")
    c.add_argument("--seed", type=_seed, default=0, help="seed of the weights, data and noise (default 0)")
    add_threads_argument(c)
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    c.add_argument("--json", default=None, metavar="FILE", help="also write the evaluation as JSON")
    c.set_defaults(run=run_latent)


def run_latent(args: argparse.Namespace) -> int:
    from ..latent.lcm import LatentSpec, evaluate_pipeline, format_latent_evaluation, train_latent_pipeline

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return _fail(f"--out {args.out!r} exists and is not an empty folder; choose another folder")
    bad_json = _check_json(args)
    if bad_json:
        return _fail(bad_json)
    if args.eval_guidance < 0 or args.eval_seeds < 0:
        return _fail("--eval-guidance and --eval-seeds must be >= 0")
    try:
        spec = LatentSpec(latent_dim=args.latent_dim, ae_iters=args.ae_iters, teacher_iters=args.teacher_iters,
                          lcd_iters=args.iters, skip=args.skip, n_points=args.n_points, solver=args.solver,
                          w_min=args.w_min, w_max=args.w_max, seed=args.seed)
        if spec.skip >= spec.n_points:
            raise ValueError(f"--skip must be below --n-points ({spec.n_points}); got {spec.skip}")
    except ValueError as err:
        return _fail(str(err))
    print(f"training a latent consistency model on the digits: {spec.latent_dim}-dim autoencoder, teacher "
          f"{spec.teacher_iters} steps, distillation {spec.lcd_iters} steps (N {spec.n_points}, k {spec.skip}, "
          f"w ~ U[{spec.w_min:g}, {spec.w_max:g}]), {torch.get_num_threads()} threads, seed {spec.seed}")
    tick = time.perf_counter()
    try:
        pipe = train_latent_pipeline(spec, out_dir=out, progress=not args.no_progress, say=print,
                                     tau_guidance=args.eval_guidance, tau_steps=() if args.no_tau_search else (2, 4))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"training {pipe.train_seconds:.1f} s; model -> {pipe.paths['model'].parent} "
          f"(sdeflow sample --model {pipe.paths['model'].parent} --steps 4 --class 3 --guidance 2)")
    ev = None
    if args.eval_seeds:
        ev = evaluate_pipeline(pipe, guidance=args.eval_guidance, seeds=tuple(range(100, 100 + args.eval_seeds)))
        print(format_latent_evaluation(ev))
    print(f"total {time.perf_counter() - tick:.1f} s; {machine_line()}")
    if args.json:
        doc = {"spec": spec.to_json(), "seconds": pipe.seconds}
        if ev is not None:
            doc["evaluation"] = {"guidance": ev["guidance"], "floor": ev["floor"], "seeds": ev["seeds"],
                                 "rows": [{"sampler": r["sampler"], "nfe": r["nfe"], "fd": r["fd"].mean,
                                           "fd_std": r["fd"].std, "accuracy": r["accuracy"].mean}
                                          for r in ev["rows"]]}
        _write_json(args.json, doc)
    return 0


def _check_out(path: str, resume: bool) -> Path | str:
    out = Path(path)
    if out.exists() and not out.is_dir():
        return f"--out {path!r} exists and is not a folder"
    if out.is_dir() and any(out.glob("ckpt-*.json")) and not resume:
        return f"--out {path!r} already holds checkpoints; pass --resume to continue them or choose another folder"
    return out


def run_score(args: argparse.Namespace) -> int:
    from ..generative.recipes import evaluate_toy_model, format_evaluation, score_recipe
    from ..generative.training import Trainer

    out = _check_run(args)
    if isinstance(out, str):
        return _fail(out)
    try:
        recipe = score_recipe(args.data, args.sde, iters=args.iters, batch_size=args.batch, lr=args.lr,
                              seed=args.seed, device=args.device, time_budget=args.time_budget,
                              progress=not args.no_progress, checkpoint_every=max(0, args.checkpoint_every))
        trainer = Trainer(recipe.model, recipe.loss, recipe.data, recipe.config, out_dir=out,
                          metadata=recipe.metadata, resume=args.resume)
    except (ValueError, TypeError) as err:
        return _fail(str(err))
    print(f"training a score model: data {args.data}, sde {args.sde}, {args.iters} iterations of batch {args.batch}, "
          f"device {args.device}, {torch.get_num_threads()} threads, seed {args.seed}"
          + (f" (resuming at step {trainer.step})" if trainer.step else ""))
    tick = time.perf_counter()
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        print("interrupted: the last complete checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130
    print(f"trained {result.steps} steps in {result.seconds:.1f} s ({result.stopped}); "
          f"checkpoint {result.checkpoint}")
    model = trainer.ema["ema"] if "ema" in trainer.ema else trainer.model
    ev = evaluate_toy_model(model, args.data, n_samples=args.eval_samples, seed=args.seed)
    ev["train_seconds"] = result.seconds
    ev["train_steps"] = result.steps
    print(format_evaluation(ev))
    print(f"total {time.perf_counter() - tick:.1f} s; {machine_line()}")
    if args.json:
        _write_json(args.json, ev)
    return 0
