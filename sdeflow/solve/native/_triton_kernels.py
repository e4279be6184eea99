"""The Triton kernels of :mod:`sdeflow.solve.native.triton_linear` (imported only when used)."""

import triton
import triton.language as tl

__all__ = ["affine_sde_kernel"]



@triton.jit
def _normal_pair(r0, r1):
    # 31 random bits each, shifted half a unit off zero: u in (0, 1), so log(u) is finite
    u0 = ((r0 >> 1).to(tl.int32).to(tl.float32) + 0.5) * 4.656612873077393e-10
    u1 = (r1 >> 1).to(tl.int32).to(tl.float32) * 4.656612873077393e-10
    rad = tl.sqrt(-2.0 * tl.log(u0))
    ang = 6.283185307179586 * u1
    return rad * tl.cos(ang), rad * tl.sin(ang)

@triton.jit
def _affine_step(x, z, s, coef_ptr, cidx, coef_dim, step_start, step_end, MILSTEIN: tl.constexpr):
    # one step at global index s (a no-op outside [step_start, step_end)); coefficients premultiplied
    active = (s >= step_start) & (s < step_end)
    row = tl.minimum(tl.maximum(s, step_start), step_end - 1)
    base = coef_ptr + row.to(tl.int64) * 4 * coef_dim + cidx
    a = tl.load(base)
    b = tl.load(base + coef_dim)
    c = tl.load(base + 2 * coef_dim)
    e = tl.load(base + 3 * coef_dim)
    zx = z.to(x.dtype)
    g = c * x + e
    new = x + (a * x + b) + g * zx
    if MILSTEIN:
        new = new + 0.5 * g * c * (zx * zx - 1.0)
    return tl.where(active, new, x)

@triton.jit(do_not_specialize=["step_start", "step_end", "grp_start", "grp_end", "seed"])
def affine_sde_kernel(x_ptr, coef_ptr, numel, dim, coef_dim, step_start, step_end, grp_start, grp_end, seed,
                       MILSTEIN: tl.constexpr, PER_DIM: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if PER_DIM:
        cidx = offs % dim
    else:
        cidx = 0
    # the coefficient table holds rows step_start .. step_end-1 only
    coef_ptr = coef_ptr - step_start.to(tl.int64) * 4 * coef_dim
    lo = (offs & 0xFFFFFFFF).to(tl.uint32)
    hi = (offs >> 32).to(tl.uint32)
    zero = lo * 0
    for grp in range(grp_start, grp_end):  # groups of four steps: [step_start // 4, ceil(step_end / 4))
        r0, r1, r2, r3 = tl.philox(seed, lo, hi, (zero + grp).to(tl.uint32), zero)
        z0, z1 = _normal_pair(r0, r1)
        z2, z3 = _normal_pair(r2, r3)
        s = grp * 4
        x = _affine_step(x, z0, s, coef_ptr, cidx, coef_dim, step_start, step_end, MILSTEIN)
        x = _affine_step(x, z1, s + 1, coef_ptr, cidx, coef_dim, step_start, step_end, MILSTEIN)
        x = _affine_step(x, z2, s + 2, coef_ptr, cidx, coef_dim, step_start, step_end, MILSTEIN)
        x = _affine_step(x, z3, s + 3, coef_ptr, cidx, coef_dim, step_start, step_end, MILSTEIN)
    tl.store(x_ptr + offs, x, mask=mask)
