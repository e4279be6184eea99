"""Denoising score matching of the 8-gaussians mixture with DistributedDataParallel.

Run on one process:            python examples/ddp_score_matching.py
Run on 2 CPU processes (gloo): torchrun --nproc_per_node=2 examples/ddp_score_matching.py
Run on 4 GPUs (NCCL):          torchrun --nproc_per_node=4 examples/ddp_score_matching.py --device cuda

Each step draws the same global batch on every rank (a generator seeded by (seed, step)) and each
rank trains on its shard; DDP averages the gradients, so the loss curve is the single-process one.
The fitted score is compared with the mixture's exact score at the end.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import sdeflow as sf
from sdeflow import distributed as sfd
from sdeflow.generative.toy_data import eight_gaussians

SIGMAS = (0.1, 0.3, 1.0, 3.0)


class ScoreMLP(nn.Module):
    """s(x, σ) ≈ ∇ log p_σ(x), parameterised as −ε̂(x, log σ)/σ."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 2))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, sigma.log()[:, None]], dim=1)
        return -self.net(h) / sigma[:, None]


def train(steps: int = 300, global_batch: int = 256, seed: int = 0, lr: float = 3e-3,
          device: str = "cpu") -> tuple[list[float], nn.Module]:
    """Train with DSM; returns the global loss per step (mean over ranks) and the (unwrapped) model."""
    rank, world = sfd.world()
    data = eight_gaussians()
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = ScoreMLP().to(device)
    ddp = sfd.wrap_ddp(model, device)
    opt = torch.optim.Adam(ddp.parameters(), lr=lr)
    sig = torch.tensor(SIGMAS, device=device)
    losses = []
    for step in range(steps):
        gen = torch.Generator(device=device).manual_seed(seed * 100_003 + step)
        x0 = data.sample(global_batch, generator=gen, device=device)
        sigma = sig[torch.randint(len(SIGMAS), (global_batch,), generator=gen, device=device)]
        z = torch.randn(x0.shape, generator=gen, device=device)
        x0, sigma, z = sfd.shard(x0), sfd.shard(sigma), sfd.shard(z)
        xt = x0 + sigma[:, None] * z
        # DSM: E ||σ s(x_t, σ) + z||², the σ²-weighted loss of Song & Ermon.
        loss = ((sigma[:, None] * ddp(xt, sigma) + z) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(sfd.all_reduce_mean(loss.detach())))
    return losses, model


def score_error(model: nn.Module, n: int = 4096, seed: int = 1) -> float:
    """Relative mean squared error of the fitted score against the exact mixture score (σ-weighted)."""
    data = eight_gaussians()
    gen = torch.Generator().manual_seed(seed)
    edm = sf.EDMSDE()
    num = den = 0.0
    for s in SIGMAS:
        xt = data.sample(n, generator=gen) + s * torch.randn(n, 2, generator=gen)
        exact = data.score(xt.double(), s, edm).float()
        with torch.no_grad():
            fit = model(xt, torch.full((n,), s))
        num += float(((fit - exact) ** 2).sum(1).mean()) * s * s
        den += float((exact**2).sum(1).mean()) * s * s
    return num / den


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rank, world = sfd.init_from_env()
    device = args.device
    if device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    losses, model = train(args.steps, args.global_batch, device=device)
    if rank == 0:
        k = max(1, len(losses) // 10)
        print(f"world size {world}; loss every {k} steps:",
              " ".join(f"{v:.3f}" for v in losses[::k]))
        err = score_error(model.cpu())
        print(f"relative score error vs the exact mixture score: {err:.3f} (sqrt {math.sqrt(err):.3f})")


if __name__ == "__main__":
    main()
