"""Worker functions for the 2-process gloo tests (importable by spawned processes)."""

import importlib.util
from pathlib import Path

import torch
import torch.distributed as dist

import sdeflow as sf
from sdeflow import distributed as sfd

ROOT = Path(__file__).resolve().parents[1]
ENSEMBLE = dict(n_paths=1000, batch_size=96, dt=0.01, seed=3, histogram=(-1.5, 1.5, 24))
TS = [0.0, 0.25, 1.0]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ensemble_reference() -> sf.EnsembleStats:
    return sf.ensemble_statistics(sf.OrnsteinUhlenbeck(1.0, 0.2, 0.5), torch.ones(2), TS, **ENSEMBLE)


def _init(rank: int, world: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)


def ensemble_worker(rank: int, world: int, init_file: str, out: str) -> None:
    _init(rank, world, init_file)
    try:
        st = sfd.ensemble_statistics(sf.OrnsteinUhlenbeck(1.0, 0.2, 0.5), torch.ones(2), TS, **ENSEMBLE)
        torch.save({"count": st.count, "mean": st.mean, "m2": st.m2, "hist": st.hist, "outside": st.outside},
                   f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    _init(rank, world, init_file)
    try:
        losses, model = load_example("ddp_score_matching").train(steps=25, global_batch=64, seed=4)
        torch.save({"losses": torch.tensor(losses), "params": [p.detach() for p in model.parameters()]},
                   f"{out}.{rank}")
    finally:
        dist.destroy_process_group()
