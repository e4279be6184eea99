"""Published consistency-model settings as frozen dataclasses, every default with its source.

Each preset records the values of one paper's main CIFAR-10 (32×32, σ_data = 0.5) setup; ``sdeflow``'s
toy recipes (:func:`sdeflow.consistency.recipes.consistency_recipe`) start from them and adapt what
depends on the data's scale (the lognormal means are shifted by ``ln(σ_data/0.5)``, the pseudo-Huber
``c`` follows the dimension d) and the run length (schedules are fractions of the run). The papers:

* ``cm2023`` — Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models" (ICML), Appendix C and Table 3.
* ``ict2023`` — Song & Dhariwal 2023, "Improved Techniques for Training Consistency Models" (ICLR 2024),
  Section 3 (3.1 no EMA target, 3.2 pseudo-Huber, 3.3 curriculum, 3.4 noise schedule and weighting).
* ``ect2024`` — Geng, Pokle, Luo, Lin & Kolter 2024, "Consistency Models Made Easy" (ECT), Section 3
  and the CIFAR-10 setup of Section 4.
* ``scm2024`` — Lu & Song 2024, "Simplifying, Stabilizing and Scaling Continuous-Time Consistency
  Models" (sCM), Sections 3–4 and Appendix.

Where published codes disagree, a switch: ``huber_elementwise`` — the iCT paper defines the pseudo-Huber
distance on the per-example norm ``√(‖x − y‖² + c²) − c`` (the default, as in the paper's formula);
some public reimplementations apply it per coordinate and sum, which for images weighs outlier pixels
less. :class:`sdeflow.generative.losses.PseudoHuber` takes the flag as ``elementwise``.
Values marked "recalled" are quoted from the papers to the best of the author's knowledge; check the
paper before relying on them for a faithful reproduction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["cm2023", "ict2023", "ect2024", "scm2024", "PRESETS"]


@dataclass(frozen=True)
class cm2023:  # noqa: N801 - named after the paper
    """Consistency Models (Song et al. 2023), CIFAR-10.

    Attributes:
        eps, T, rho: grid ends and Karras exponent, ε = 0.002, T = 80, ρ = 7 (Appendix C, following EDM).
        sigma_data: 0.5 (Appendix C, the parameterization's c_skip, c_out).
        cd_n_points: N = 18 for CD on CIFAR-10 (Table 3).
        cd_target_ema: μ = 0.95, the CD target EMA rate on CIFAR-10 (Table 3).
        cd_solver: the teacher step, Heun (the paper's ODE solver for CD, Section 6 / Table 3).
        cd_distance: LPIPS on CIFAR-10 (Table 3); for low-dimensional data squared L2 (the paper's
            ablations compare L1, L2 and LPIPS, Figure 3), which sdeflow uses.
        ct_s0, ct_s1, ct_mu0: the CT schedules N(k), μ(k): s₀ = 2, s₁ = 150, μ₀ = 0.9 on CIFAR-10
            (Appendix C, Table 3).
        lr, batch_size, iters: Adam 4e-4, batch 512, 800k iterations (Table 3, CIFAR-10 CD and CT).
        ema_rate: 0.9999, the EMA of the sampled model (Table 3).
    """

    eps: float = 0.002
    T: float = 80.0
    rho: float = 7.0
    sigma_data: float = 0.5
    cd_n_points: int = 18
    cd_target_ema: float = 0.95
    cd_solver: str = "heun"
    cd_distance: str = "lpips"
    ct_s0: int = 2
    ct_s1: int = 150
    ct_mu0: float = 0.9
    lr: float = 4e-4
    batch_size: int = 512
    iters: int = 800_000
    ema_rate: float = 0.9999


@dataclass(frozen=True)
class ict2023:  # noqa: N801
    """Improved consistency training (Song & Dhariwal 2023), CIFAR-10.

    Attributes:
        target_ema: 0: no EMA target, θ⁻ = stopgrad(θ) (Section 3.1).
        huber_c_per_sqrt_d: the pseudo-Huber c = 0.00054·√d (Section 3.2; d = 3·32·32 on CIFAR-10).
        huber_elementwise: False — the distance on the per-example norm, the paper's formula (module docstring).
        s0, s1: the doubling curriculum from 10 to 1280 intervals (Section 3.3).
        P_mean, P_std: the discretised lognormal over intervals, −1.1 and 2.0 (Section 3.4).
        weighting: λ(σ_i) = 1/(σ_{i+1} − σ_i) (Section 3.4).
        eps, T, rho: 0.002, 80, 7 (as the CM paper).
        lr, batch_size, iters: RAdam 1e-4, batch 1024, 400k iterations (recalled, Section 4 / Appendix).
        ema_rate: 0.99993 for the sampled model (recalled, Section 4).
        dropout: 0.3 on CIFAR-10 (Section 3.1: dropout matters once the EMA target is gone; not used by
            sdeflow's MLP recipes).
    """

    target_ema: float = 0.0
    huber_c_per_sqrt_d: float = 0.00054
    huber_elementwise: bool = False
    s0: int = 10
    s1: int = 1280
    P_mean: float = -1.1
    P_std: float = 2.0
    weighting: str = "inverse_gap"
    eps: float = 0.002
    T: float = 80.0
    rho: float = 7.0
    lr: float = 1e-4
    batch_size: int = 1024
    iters: int = 400_000
    ema_rate: float = 0.99993
    dropout: float = 0.3

    def huber_c(self, d: int) -> float:
        """``c = 0.00054·√d`` for d-dimensional data."""
        return self.huber_c_per_sqrt_d * math.sqrt(d)


@dataclass(frozen=True)
class ect2024:  # noqa: N801
    """Easy consistency tuning (Geng et al. 2024), CIFAR-10.

    Attributes:
        q, k, b: the mapping ``r = t(1 − n(t)/q^s)``, ``n(t) = 1 + k·sigmoid(−b t)``: q = 2, k = 8, b = 1
            (Section 3, "mapping function"; recalled).
        stages: Δt shrinks by q every d iterations; sdeflow splits the run into ``stages`` equal stages
            (the paper states d in iterations; 8 stages over the run is sdeflow's choice for short runs).
        P_mean, P_std: the lognormal t distribution, −1.1 and 2.0 (as iCT; Section 4, recalled).
        huber_c_per_sqrt_d: c = 0.00054·√d. ECT writes its loss as a squared L2 with the adaptive weight
            w(Δ) = 1/(‖Δ‖² + c²)^{1/2} and iCT's constant (recalled); with the weight held constant in the
            gradient that is the gradient of the pseudo-Huber distance used here (up to a factor 2).
        weighting: λ(t, r) = 1/(t − r) (Section 3, as iCT's 1/Δt).
        init: "score model" — F starts from a pretrained EDM network (Section 3, "tuning from diffusion").
    """

    q: float = 2.0
    k: float = 8.0
    b: float = 1.0
    stages: int = 8
    P_mean: float = -1.1
    P_std: float = 2.0
    huber_c_per_sqrt_d: float = 0.00054
    weighting: str = "inverse_gap"
    init: str = "score model"

    def huber_c(self, d: int) -> float:
        """``c = 0.00054·√d`` for d-dimensional data."""
        return self.huber_c_per_sqrt_d * math.sqrt(d)


@dataclass(frozen=True)
class scm2024:  # noqa: N801
    """Continuous-time consistency models (Lu & Song 2024), CIFAR-10.

    Attributes:
        parameterization: "trigflow" (Section 3: x_t = cos t x0 + sin t z, f = cos t x_t − sin t σ_d F).
        sigma_data: 0.5 (Section 3).
        P_mean, P_std: the proposal of t: σ_d tan t ~ lognormal(−1.0, 1.4) for CIFAR-10 (Section 4 /
            Appendix; recalled — ImageNet uses −0.8, 1.6).
        tangent_c: tangent normalisation g/(‖g‖ + c), c = 0.1 (Section 4.2).
        warmup_iters: the tangent warm-up, r from 0 to 1 over the first 10k iterations (Section 4.2);
            ``warmup_fraction`` is the share of a run sdeflow's short recipes use instead.
        adaptive_weighting: True in the paper (a learned w_φ(t), Section 4.2); not implemented in sdeflow.
        eps: 0 in the paper (TrigFlow's f needs no ε); sdeflow keeps ε = 0.002 for the common boundary.
    """

    parameterization: str = "trigflow"
    sigma_data: float = 0.5
    P_mean: float = -1.0
    P_std: float = 1.4
    tangent_c: float = 0.1
    warmup_iters: int = 10_000
    warmup_fraction: float = 0.1
    adaptive_weighting: bool = True
    eps: float = 0.0


#: The presets by name.
PRESETS: dict[str, type] = {"cm2023": cm2023, "ict2023": ict2023, "ect2024": ect2024, "scm2024": scm2024}
