"""Result objects returned by the solver front doors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Solution", "SolveStats", "STATUS_OK", "STATUS_NONFINITE"]

STATUS_OK = 0
STATUS_NONFINITE = 1


@dataclass
class SolveStats:
    """What a solve cost.

    Attributes:
        method: the integration method used.
        backend: ``"native"``, ``"torchsde"`` or ``"torchdiffeq"``.
        steps: number of solver steps (``None`` where a backend does not report it).
        drift_evals: evaluations of the drift (for an ODE: of the vector field, the NFE).
        diffusion_evals: evaluations of the diffusion (0 for ODEs).
        wall_time: seconds spent in the solve, measured on the host (CUDA work synchronised once at the end).
        compile_time: seconds spent compiling (fused paths only; 0 otherwise).
    """

    method: str
    backend: str
    steps: int | None = None
    drift_evals: int = 0
    diffusion_evals: int = 0
    wall_time: float = 0.0
    compile_time: float = 0.0

    @property
    def nfe(self) -> int:
        """Number of drift / vector-field evaluations."""
        return self.drift_evals


@dataclass
class Solution:
    """Saved states of a solve.

    Attributes:
        ts: times of the saved states, shape (T,).
        xs: saved states, shape (T, B, *event_shape); ``xs[0]`` is the initial state when it was saved.
        stats: :class:`SolveStats`.
        status: per-path status, shape (B,), int8: 0 = ok, 1 = a saved state was NaN or infinite.
    """

    ts: Tensor
    xs: Tensor
    stats: SolveStats
    status: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.status is None:
            self.status = path_status(self.xs)

    @property
    def final(self) -> Tensor:
        """The last saved state, shape (B, *event_shape)."""
        return self.xs[-1]

    @property
    def ok(self) -> Tensor:
        """Boolean mask of paths that stayed finite, shape (B,)."""
        return self.status == STATUS_OK

    def __repr__(self) -> str:
        return (
            f"Solution(ts: {tuple(self.ts.shape)}, xs: {tuple(self.xs.shape)} {self.xs.dtype} on {self.xs.device}, "
            f"method={self.stats.method!r}, backend={self.stats.backend!r}, steps={self.stats.steps})"
        )


def path_status(xs: Tensor) -> Tensor:
    """Per-path status from saved states ``(T, B, *event)``: 1 where any saved value is not finite."""
    if xs.dim() < 2:
        raise ValueError(f"xs must have shape (T, B, *event_shape); got {tuple(xs.shape)}.")
    if xs.device.type == "cpu" and xs.is_floating_point() and bool(torch.isfinite(xs.detach().sum())):
        # The common case in one reduction without a mask: a NaN or inf anywhere makes the sum
        # non-finite (an overflowing sum of finite values only sends it to the exact check below).
        return torch.zeros(xs.shape[1], dtype=torch.int8)
    bad = ~torch.isfinite(xs.reshape(xs.shape[0], xs.shape[1], -1)).all(-1).all(0)
    return bad.to(torch.int8)
