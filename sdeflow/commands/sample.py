"""``sdeflow sample``: draw samples from a model trained by ``sdeflow train`` (any kind the package trains).

The model is rebuilt from its checkpoint folder (safetensors + JSON; nothing is unpickled) with its EMA
weights, and sampled from ``x_T = σ_max · N(0, I)`` with one of the package's samplers on a Karras
schedule. Samples are saved as ``.npz`` (or ``.pt``) under the key ``x``; ``--png`` adds a scatter plot
(2-D data) or an image grid (image-shaped data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

__all__ = ["add_parser", "run", "consistency_taus"]


def _fail(msg: str) -> int:
    print(f"sdeflow sample: error: {msg}", file=sys.stderr)
    return 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..generative.samplers import SAMPLERS
    from ._common import add_threads_argument, finite_float, nonnegative_int, seed_arg
    from ._common import positive_float as _positive_float
    from ._common import positive_int as _positive_int

    p = sub.add_parser("sample", help="sample a trained model", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="checkpoint folder (or a ckpt-*.json file)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun", help="sampler (default heun)")
    p.add_argument("--steps", type=_positive_int, default=18, help="sampler steps (default 18)")
    p.add_argument("--n", type=_positive_int, default=10_000, help="number of samples (default 10000)")
    p.add_argument("--sigma-min", type=_positive_float, default=0.002, help="smallest noise level (default 0.002)")
    p.add_argument("--sigma-max", type=_positive_float, default=80.0, help="largest noise level (default 80)")
    p.add_argument("--weights", default="ema", help="'ema' (default), 'model' or an EMA copy's name")
    p.add_argument("--class", dest="class_label", type=nonnegative_int, default=None, metavar="K",
                   help="class label for a class-conditional model")
    p.add_argument("--guidance", type=finite_float, default=None, metavar="W",
                   help="classifier-free guidance scale w (D + w (D(c) - D(∅)); w = 0 is the conditional model)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of x_T and the sampler's noise (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to save the samples (.npz or .pt)")
    p.add_argument("--png", default=None, metavar="FILE", help="also save a scatter plot or image grid")
    add_threads_argument(p)
    p.set_defaults(run=run)


def _event_shape(model: torch.nn.Module) -> tuple[int, ...]:
    inner = model
    while not hasattr(inner, "event_shape") and hasattr(inner, "net"):
        inner = inner.net
    shape = getattr(inner, "event_shape", None)
    if shape is None:
        raise ValueError("cannot tell the model's state shape (no event_shape on its network)")
    return tuple(shape)


def run(args: argparse.Namespace) -> int:
    from ..generative.checkpoint import CheckpointError, load_model
    from ..generative.precond import ClassifierFreeGuidance
    from ..generative.samplers import SAMPLERS
    from ..generative.schedules import karras_sigmas
    from ..io import save_arrays
    from ._common import machine_line

    if args.sigma_min >= args.sigma_max:
        return _fail("--sigma-min must be below --sigma-max")
    from ._common import CommandError, check_device, check_memory, check_output

    try:
        device = check_device(args.device)
        out = check_output("--out", args.out, (".npz", ".pt"))
        check_output("--png", args.png, (".png",))
    except CommandError as err:
        return _fail(str(err))
    from ..latent.lcm import LatentConsistencyModel, LatentDiffusionModel  # registers the latent model kinds

    try:
        model = load_model(args.model, weights=args.weights, device=args.device)
    except (CheckpointError, ValueError) as err:
        return _fail(str(err))
    if isinstance(model, (LatentConsistencyModel, LatentDiffusionModel)):
        return _run_latent(args, model, out)
    try:
        event = _event_shape(model)
        numel = args.n * int(torch.Size(event).numel())
        # x_T, the state, the denoised estimate and the step's temporaries: about six copies of the batch
        check_memory(f"--n {args.n} samples of shape {tuple(event)}", 6.0 * 8 * numel, "use a smaller --n", device)
    except (ValueError, CommandError) as err:
        return _fail(str(err))
    kwargs: dict[str, object] = {}
    num_classes = getattr(getattr(model, "net", None), "num_classes", 0)
    if args.class_label is not None:
        if not num_classes:
            return _fail("--class needs a class-conditional model; this one has no classes")
        if not 0 <= args.class_label < num_classes:
            return _fail(f"--class must be in [0, {num_classes - 1}]; got {args.class_label}")
        kwargs["class_labels"] = torch.full((args.n,), args.class_label, dtype=torch.long, device=args.device)
    if args.guidance is not None:
        if args.class_label is None:
            return _fail("--guidance needs --class (guidance mixes the conditional and unconditional model)")
        model = ClassifierFreeGuidance(model, guidance=args.guidance)
    from ..consistency.function import ConsistencyFunction

    if isinstance(model, ConsistencyFunction):
        return _run_consistency(args, model, event, kwargs, out)
    sigmas = karras_sigmas(args.steps, args.sigma_min, args.sigma_max)
    dtype = next(model.parameters()).dtype
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    x_T = args.sigma_max * torch.randn((args.n, *event), generator=gen, dtype=dtype, device=args.device)
    try:
        res = SAMPLERS[args.sampler](model, x_T, sigmas, generator=args.seed + 1, model_kwargs=kwargs)
    except (ValueError, TypeError) as err:
        return _fail(str(err))
    n_bad = int(res.status.sum())
    save_arrays(out, {"x": res.x, "status": res.status})
    print(f"{args.n} samples of shape {event} from {args.model} ({args.sampler}, {args.steps} steps, {res.nfe} NFE, "
          f"{res.wall_time:.2f} s; {machine_line()}) -> {out}"
          + (f"; {n_bad} non-finite (key 'status' marks them)" if n_bad else ""))
    if args.png:
        from ..plots import save_samples_png

        save_samples_png(res.x, args.png, title=f"{args.sampler}, {res.nfe} NFE")
        print(f"plot -> {args.png}")
    return 0


def consistency_taus(model: torch.nn.Module, steps: int, checkpoint: str | Path) -> tuple[list[float], str]:
    """``[T, τ_2, ...]`` for ``steps``-step consistency sampling and how they were chosen.

    One step: ``[T]``. More: :func:`sdeflow.consistency.search_taus` on ΔNLL when the checkpoint's data set
    is a built-in Gaussian mixture (gmm8, ring); otherwise the Karras grid of ``steps + 1`` levels from T
    to ε without its last level.
    """
    from ..consistency.sampling import search_taus
    from ..generative.checkpoint import read_checkpoint
    from ..generative.recipes import TOY_DATASETS, toy_mixture

    T, eps = float(model.T), float(model.eps)  # noqa: N806
    if steps == 1:
        return [T], "one step"
    data = (read_checkpoint(checkpoint)[1].get("metadata") or {}).get("data")
    mixture = toy_mixture(data) if data in TOY_DATASETS else None
    if mixture is not None:
        found = search_taus(model, mixture, steps, n=4096, T=T, eps=eps, generator=0)
        return list(found.taus), f"searched on the exact {data} mixture"
    from ..generative.schedules import karras_sigmas

    return karras_sigmas(steps + 1, max(eps, 1e-3), T, append_zero=False)[:steps].tolist(), "Karras grid"


def _run_consistency(args: argparse.Namespace, model: torch.nn.Module, event: tuple[int, ...],
                     kwargs: dict[str, object], out: Path) -> int:
    """``sdeflow sample`` for a consistency checkpoint: :func:`sdeflow.consistency.sample_consistency`."""
    from ..consistency.sampling import sample_consistency
    from ..io import save_arrays

    if args.guidance is not None:
        return _fail("--guidance is for score models; a consistency model samples with its own conditioning")
    taus, how = consistency_taus(model, args.steps, args.model)
    dtype = next(model.parameters()).dtype
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    x_T = taus[0] * torch.randn((args.n, *event), generator=gen, dtype=dtype, device=args.device)
    try:
        res = sample_consistency(model, x_T, taus, generator=args.seed + 1, model_kwargs=kwargs)
    except (ValueError, TypeError) as err:
        return _fail(str(err))
    save_arrays(out, {"x": res.x})
    shown = ", ".join(f"{t:.4g}" for t in taus)
    print(f"{args.n} samples of shape {event} from {args.model} (consistency, {args.steps} steps, τ = [{shown}] "
          f"({how}), {res.nfe} NFE, {res.wall_time:.2f} s) -> {out}")
    if args.png:
        from ..plots import save_samples_png

        save_samples_png(res.x, args.png, title=f"consistency, {res.nfe} NFE")
        print(f"plot -> {args.png}")
    return 0


def _run_latent(args: argparse.Namespace, model: torch.nn.Module, out: Path) -> int:
    """``sdeflow sample`` for a latent model (``sdeflow train latent``): its ``generate`` decodes to images."""
    from ..io import save_arrays
    from ..latent.lcm import LatentConsistencyModel, class_balanced_labels

    k = model.num_classes
    if args.class_label is not None and not 0 <= args.class_label < k:
        return _fail(f"--class must be in [0, {k - 1}]; got {args.class_label}")
    w = 0.0 if args.guidance is None else args.guidance
    if not w >= 0:
        return _fail(f"--guidance must be >= 0 for a latent model; got {args.guidance}")
    labels = (torch.full((args.n,), args.class_label, dtype=torch.long) if args.class_label is not None
              else class_balanced_labels(args.n, k))
    kind = "latent consistency" if isinstance(model, LatentConsistencyModel) else "latent diffusion, Heun"
    import time

    tick = time.perf_counter()
    x = model.generate(labels.to(args.device), guidance=w, steps=args.steps, generator=args.seed)
    save_arrays(out, {"x": x, "class_labels": labels})
    extra = (f", τ = [{', '.join(f'{t:.4g}' for t in model.schedule(args.steps))}]"
             if isinstance(model, LatentConsistencyModel) else "")
    print(f"{args.n} images of shape {tuple(x.shape[1:])} from {args.model} ({kind}, {args.steps} steps{extra}, "
          f"w = {w:g}, {time.perf_counter() - tick:.2f} s) -> {out}")
    if args.png:
        from ..plots import save_samples_png

        save_samples_png(x, args.png, title=f"{kind}, {args.steps} steps, w = {w:g}")
        print(f"plot -> {args.png}")
    return 0
