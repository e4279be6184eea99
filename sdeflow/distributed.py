"""torch.distributed helpers: sharded Monte Carlo ensembles and data-parallel training.

Launch with ``torchrun --nproc_per_node=N script.py`` (NCCL on GPUs, gloo on CPUs); call
:func:`init_from_env` first. Ensembles: every rank simulates the batches ``rank, rank + W, ...``
of the same ensemble; per-batch statistics are gathered and merged in batch order, so every rank
gets exactly what one process with the same seed and path count gets. Training: :func:`wrap_ddp`,
:func:`rank_generator` and :func:`shard` give each rank its model replica, its own random stream,
and its slice of a global batch, so a run on W ranks follows the single-process run with the same
global batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .ensemble import EnsembleStats, combine_partials, ensemble_partials, seeded_generator

__all__ = [
    "init_from_env", "world", "ensemble_statistics", "all_reduce_mean", "rank_generator", "shard", "wrap_ddp",
]


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment; returns (rank, world size).

    ``backend`` defaults to NCCL when CUDA is available and gloo otherwise. On CUDA each rank uses
    device ``LOCAL_RANK``. A process that was not launched by torchrun (no ``RANK``/``WORLD_SIZE``)
    gets rank 0 of a world of 1 and no process group.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def world() -> tuple[int, int]:
    """(rank, world size) of the default group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def ensemble_statistics(sde: object, x0: Tensor | Callable, ts, *, n_paths: int, dt: float,  # noqa: ANN001
                        batch_size: int = 65_536, **kwargs) -> EnsembleStats:
    """:func:`sdeflow.ensemble_statistics` sharded over the ranks of the default group.

    Every rank returns the same statistics, equal to the single-process result for the same
    ``seed``, ``n_paths`` and ``batch_size`` (the batch streams and the merge order do not depend
    on the number of ranks). Without a process group it is the single-process function.
    """
    rank, size = world()
    n_batches = math.ceil(n_paths / batch_size)
    mine = range(rank, n_batches, size)
    local = ensemble_partials(sde, x0, ts, n_paths=n_paths, dt=dt, batch_size=batch_size, batches=mine, **kwargs)
    if size == 1:
        return combine_partials(local)
    payload = [(b, _to_cpu(p)) for b, p in zip(mine, local, strict=True)]
    gathered: list[list[tuple[int, EnsembleStats]] | None] = [None] * size
    dist.all_gather_object(gathered, payload)
    by_batch = dict(item for part in gathered for item in part)  # type: ignore[union-attr]
    return combine_partials([by_batch[b] for b in range(n_batches)])


def _to_cpu(p: EnsembleStats) -> EnsembleStats:
    move = (lambda t: None if t is None else t.cpu())  # noqa: E731
    return EnsembleStats(move(p.ts), p.count, move(p.mean), move(p.m2), move(p.hist), move(p.edges), move(p.outside))


def all_reduce_mean(value: Tensor) -> Tensor:
    """The mean of ``value`` over ranks (a no-op without a process group)."""
    rank, size = world()
    if size == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / size


def rank_generator(seed: int, device: torch.device | str = "cpu", *, rank: int | None = None) -> torch.Generator:
    """A generator whose stream is independent across ranks and reproducible for (seed, rank)."""
    r = world()[0] if rank is None else rank
    return seeded_generator((seed, 1_000_003, r), device)


def shard(global_batch: Tensor, *, rank: int | None = None, world_size: int | None = None) -> Tensor:
    """This rank's equal slice of a global batch (its first dimension must divide by the world size)."""
    r, w = world()
    r = r if rank is None else rank
    w = w if world_size is None else world_size
    n = global_batch.shape[0]
    if n % w:
        raise ValueError(f"the global batch of {n} does not split evenly over {w} ranks; use a multiple of {w}.")
    k = n // w
    return global_batch[r * k : (r + 1) * k]


def wrap_ddp(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel when a process group exists (else return it as is).

    Gradients are averaged over ranks, so with equal shards of a global batch and a per-rank mean
    loss, each update equals the single-process update on the whole global batch.
    """
    if world()[1] == 1:
        return model
    if device is not None and torch.device(device).type == "cuda":
        return nn.parallel.DistributedDataParallel(model.to(device), device_ids=[torch.device(device).index])
    return nn.parallel.DistributedDataParallel(model)
