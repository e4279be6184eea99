"""``sdeflow demo --full``'s latent-digits step: autoencoder, guided latent teacher, latent consistency model.

:func:`latent_demo_step` trains the pipeline of :mod:`sdeflow.latent.lcm` on the 8×8 digits (smaller than
the benchmark's; ``quick`` smaller still), checks what has an exact answer (the classifier behind the
metric, the guided teacher at w = 0 against the conditional one, the exact latent PF-ODE of the empirical
denoiser ending on training codes) and reports the Fréchet distance and class accuracy of the teacher's
Heun-35 and of 1-, 2- and 4-step LCM sampling at one guidance scale, with one digit-grid figure per
sampling mode (docs/latent.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

__all__ = ["latent_demo_step", "DEMO_SPEC", "QUICK_SPEC"]

from .lcm import LatentSpec

#: The demo's pipeline (about a third of the benchmark's training).
DEMO_SPEC = LatentSpec(ae_iters=2000, teacher_iters=3000, lcd_iters=1200)
#: ``--quick``: a smoke run of every stage (numbers far from the benchmark's; thresholds relaxed).
QUICK_SPEC = LatentSpec(ae_iters=300, teacher_iters=300, lcd_iters=60, hidden=128)


def _grid_figure(images: torch.Tensor, title: str, path: Path, rows: int = 10) -> None:
    from ..demo import _save
    from ..plots import pyplot

    plt = pyplot()
    x = ((images.detach().cpu().clamp(-1, 1) + 1) / 2)[:, 0]  # (B, 8, 8) in [0, 1]
    cols = x.shape[0] // rows
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.45 + 0.6, rows * 0.45 + 0.6))
    for i in range(rows):
        for j in range(cols):
            ax = axes[i][j]
            ax.imshow(x[i * cols + j].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(str(i), rotation=0, labelpad=8, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.supylabel("class", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def latent_demo_step(out: Path, *, seed: int, quick: bool, say: Any, progress: bool) -> None:
    """Train and check the latent-digits pipeline; figures go to ``out`` and ``say.report.figures``."""
    from ..generative.samplers import sample_heun
    from ..generative.schedules import karras_sigmas
    from .data import load_digits_split
    from .empirical import EmpiricalDenoiser
    from .lcm import evaluate_pipeline, guided_teacher, train_latent_pipeline
    from .metrics import digits_classifier, digits_fd, digits_fd_floor

    out = Path(out)
    spec = dataclasses.replace(QUICK_SPEC if quick else DEMO_SPEC, seed=seed)
    w = 1.0
    say("[4] latent digits: autoencoder → class-conditional latent teacher (CFG) → latent consistency model")
    clf = digits_classifier()
    acc = float(clf.checkpoint_metadata.get("held_out_accuracy", float("nan")))
    say.check("4 latent", "digits classifier held-out accuracy (the FD features)", "held-out digits", acc, "≥ 0.97",
              acc >= 0.97)
    split = load_digits_split()
    floor = digits_fd_floor()
    say(f"    floor FD(held-out, train) = {floor:.2f} (359 real images the classifier never saw)")
    pipe = train_latent_pipeline(spec, progress=progress, say=say, tau_guidance=w,
                                 tau_steps=() if quick else (2, 4))  # --quick: the Karras-grid τ, no search
    say(f"    training {pipe.train_seconds:.0f} s (autoencoder + teacher + distillation)")
    # exact checks
    with torch.no_grad():
        codes = pipe.autoencoder.encode(split.train_x)
        recon = digits_fd(pipe.autoencoder.reconstruct(split.test_x))
    say(f"    autoencoder reconstruction of the held-out images: FD {recon:.2f}")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(64, spec.latent_dim, generator=g)
    y = torch.arange(64) % 10
    sig = torch.full((64,), 2.0)
    with torch.no_grad():
        same = torch.equal(guided_teacher(pipe.teacher)(z, sig, class_labels=y, guidance=0.0),
                           pipe.teacher(z, sig, class_labels=y))
    say.check("4 latent", "guided teacher at w = 0 vs the conditional teacher", "D_w = D(c) + w (D(c) − D(∅))",
              0.0 if same else 1.0, "bitwise equal", same)
    exact = EmpiricalDenoiser(codes, split.train_y)
    x_T = 80.0 * torch.randn(200, spec.latent_dim, generator=g)  # noqa: N806
    labels = torch.arange(200) % 10
    with torch.no_grad():
        ends = sample_heun(guided_teacher(exact), x_T, karras_sigmas(35, 0.002, 80.0),
                           model_kwargs={"class_labels": labels, "guidance": w}).x
    dist, idx = exact.nearest(ends)
    on_class = float((split.train_y[idx] == labels).float().mean())
    say.check("4 latent", f"exact latent PF-ODE (empirical denoiser, w = {w:g}): distance to a training code",
              "memorisation: ends on a training code of the class", float(dist.max()), "< 1e-2 and class 100 %",
              float(dist.max()) < 1e-2 and on_class == 1.0)
    # sample quality
    seeds = (100, 101) if quick else (100, 101, 102, 103, 104)
    ev = evaluate_pipeline(pipe, guidance=w, seeds=seeds)
    rows = {r["sampler"]: r for r in ev["rows"]}
    t_fd = rows["teacher Heun-35"]["fd"].mean
    for r in ev["rows"]:
        say(f"    {r['sampler']:<16} FD {r['fd']}  ({r['fd'].mean / t_fd:.3f}× teacher), accuracy "
            f"{100 * r['accuracy'].mean:.1f} %")
    ratio1 = rows["LCM 1-step"]["fd"].mean / t_fd
    ratio4 = rows["LCM 4-step"]["fd"].mean / t_fd
    lim1, lim4, lim_acc = (3.0, 3.0, 0.5) if quick else (1.25, 1.15, 0.95)
    note = " (--quick: relaxed)" if quick else ""
    say.check("4 latent", f"LCM 1-step FD / teacher Heun-35 FD at w = {w:g}", "the distilled teacher", ratio1,
              f"≤ {lim1:g}{note}", ratio1 <= lim1)
    say.check("4 latent", f"LCM 4-step FD / teacher Heun-35 FD at w = {w:g}", "the distilled teacher", ratio4,
              f"≤ {lim4:g}{note}", ratio4 <= lim4)
    worst = min(rows[f"LCM {s}-step"]["accuracy"].mean for s in (1, 2, 4))
    say.check("4 latent", "class accuracy of LCM samples, worst of 1/2/4 steps", "the conditioning labels", worst,
              f"≥ {lim_acc:g}{note}", worst >= lim_acc)
    # figures: one digit grid per sampling mode, rows = classes, the same x_T for every mode
    labels = torch.arange(10).repeat_interleave(10)
    x_T = 80.0 * torch.randn(100, spec.latent_dim, generator=torch.Generator().manual_seed(seed + 7))  # noqa: N806
    modes = [("teacher Heun-35", "latent_teacher_heun35.png",
              lambda: pipe.diffusion.generate(labels, guidance=w, steps=18, x_T=x_T))]
    for s in (1, 2, 4):
        modes.append((f"LCM {s}-step", f"latent_lcm_{s}step.png",
                      lambda s=s: pipe.model.generate(labels, guidance=w, steps=s, generator=seed, x_T=x_T)))
    for title, name, draw in modes:
        _grid_figure(draw(), f"{title}, w = {w:g} (FD {rows[title]['fd'].mean:.2f})", out / name)
        say.report.figures.append((f"Digits: {title} (w = {w:g})", name))
