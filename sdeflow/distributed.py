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

from ._checks import check_times
from .ensemble import EnsembleStats, combine_partials, ensemble_partials, report_dropped, seeded_generator

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
        return report_dropped(combine_partials(local), n_paths)
    return report_dropped(combine_partials(_exchange(local, n_batches, size, ts, kwargs.get("histogram"))), n_paths)


_META = 16  # [batches, dropped paths, has hist, bins, mean ndim, mean shape ... (up to 11 dims)]


def _exchange(local: list[EnsembleStats], n_batches: int, size: int, ts: object,
              histogram: tuple[float, float, int] | None) -> list[EnsembleStats]:
    """Every rank's per-batch statistics, in batch order, exchanged as tensors (``all_gather``; no
    pickling between ranks): per batch its count, dropped count, mean, m2, histogram and the indices
    of its dropped paths, padded to the largest rank's number of batches."""
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    k_max = math.ceil(n_batches / size)
    meta = torch.zeros(_META, dtype=torch.int64)
    meta[0] = len(local)
    meta[1] = sum(p.dropped for p in local)
    if local:
        p0 = local[0]
        if p0.mean.dim() > _META - 5:
            raise ValueError(f"sdeflow.distributed.ensemble_statistics handles states of up to {_META - 6} event "
                             f"dimensions; got statistics of shape {tuple(p0.mean.shape)}.")
        meta[2] = int(p0.hist is not None)
        meta[3] = p0.hist.shape[-1] if p0.hist is not None else 0
        meta[4] = p0.mean.dim()
        meta[5 : 5 + p0.mean.dim()] = torch.tensor(p0.mean.shape)
    metas = _gather(meta.to(dev), size)
    ref = next(m for m in metas if int(m[0]) > 0).cpu()
    shape = tuple(int(v) for v in ref[5 : 5 + int(ref[4])])
    has_hist, bins = bool(ref[2]), int(ref[3])
    d = math.prod(shape[1:])

    def stack(get: Callable[[EnsembleStats], Tensor], item: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        out = torch.zeros((k_max,) + item, dtype=dtype, device=dev)
        for i, p in enumerate(local):
            out[i] = get(p).to(dev)
        return out

    counts = stack(lambda p: torch.tensor([p.count, p.dropped]), (2,), torch.int64)
    means = stack(lambda p: p.mean, shape, torch.float64)
    m2s = stack(lambda p: p.m2, shape, torch.float64)
    hists = stack(lambda p: p.hist, (shape[0], d, bins), torch.int64) if has_hist else None
    outs = stack(lambda p: p.outside, (shape[0], d), torch.int64) if has_hist else None
    n_drop = max(int(m[1]) for m in metas)
    drops = torch.zeros(max(n_drop, 1), dtype=torch.int64, device=dev)
    flat = torch.cat([p.dropped_paths for p in local]) if local else torch.zeros(0, dtype=torch.int64)
    drops[: flat.numel()] = flat.to(dev)
    g_counts, g_means, g_m2s = _gather(counts, size), _gather(means, size), _gather(m2s, size)
    g_hists = _gather(hists, size) if has_hist else None
    g_outs = _gather(outs, size) if has_hist else None
    g_drops = _gather(drops, size)
    if local:
        ts_t, edges = local[0].ts, local[0].edges
    else:  # this rank simulated no batch: the times and edges from the arguments, as ensemble_partials makes them
        ts_t = torch.as_tensor(check_times(ts), dtype=torch.float64)
        edges = None if histogram is None else torch.linspace(float(histogram[0]), float(histogram[1]),
                                                              int(histogram[2]) + 1, dtype=torch.float64)
    by_batch: dict[int, EnsembleStats] = {}
    for r in range(size):
        pos = 0
        for i, b in enumerate(range(r, n_batches, size)):
            count, dropped = (int(v) for v in g_counts[r][i].cpu())
            idx = g_drops[r][pos : pos + dropped].cpu()
            pos += dropped
            by_batch[b] = EnsembleStats(
                ts_t, count, g_means[r][i].cpu(), g_m2s[r][i].cpu(),
                g_hists[r][i].cpu() if has_hist else None, edges, g_outs[r][i].cpu() if has_hist else None,
                dropped, idx)
    return [by_batch[b] for b in range(n_batches)]


def _gather(t: Tensor, size: int) -> list[Tensor]:
    out = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(out, t.contiguous())
    return out


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
