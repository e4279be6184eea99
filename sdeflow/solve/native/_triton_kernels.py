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
def _coef_row(coef_ptr, s, step_start, step_end, cidx, coef_dim):
    # the premultiplied (a dt, b dt, c sqrt(dt), e sqrt(dt)) of global step s, clamped to the segment
    row = tl.minimum(tl.maximum(s, step_start), step_end - 1)
    base = coef_ptr + row.to(tl.int64) * 4 * coef_dim + cidx
    return tl.load(base), tl.load(base + coef_dim), tl.load(base + 2 * coef_dim), tl.load(base + 3 * coef_dim)


@triton.jit
def _affine_step(x, z, active, a, b, c, e, MILSTEIN: tl.constexpr):
    # x + (a x + b) dt + (c x + e) dW  (+ Milstein's ½ g c (dW² − dt)); a no-op where not active
    zx = z.to(x.dtype)
    g = c * x + e
    new = x + (a * x + b) + g * zx
    if MILSTEIN:
        new = new + 0.5 * g * c * (zx * zx - 1.0)
    return tl.where(active, new, x)


@triton.jit(do_not_specialize=["step_start", "step_end", "grp_start", "grp_end", "seed"])
def affine_sde_kernel(x_ptr, coef_ptr, numel, dim, coef_dim, step_start, step_end, grp_start, grp_end, seed,
                      MILSTEIN: tl.constexpr, PER_DIM: tl.constexpr, CONST_COEF: tl.constexpr,
                      BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if PER_DIM:
        cidx = offs % dim
    else:
        cidx = 0
    if CONST_COEF:  # one row for every step: load it once, keep it in registers
        a, b, c, e = _coef_row(coef_ptr, 0, 0, 1, cidx, coef_dim)
    else:  # the table holds rows step_start .. step_end-1 of the global step index
        coef_ptr = coef_ptr - step_start.to(tl.int64) * 4 * coef_dim
    lo = (offs & 0xFFFFFFFF).to(tl.uint32)
    hi = (offs >> 32).to(tl.uint32)
    zero = lo * 0
    for grp in range(grp_start, grp_end):  # groups of four steps: [step_start // 4, ceil(step_end / 4))
        s = grp * 4
        if not CONST_COEF:  # the group's 16 loads issued together, before the random numbers
            a0, b0, c0, e0 = _coef_row(coef_ptr, s, step_start, step_end, cidx, coef_dim)
            a1, b1, c1, e1 = _coef_row(coef_ptr, s + 1, step_start, step_end, cidx, coef_dim)
            a2, b2, c2, e2 = _coef_row(coef_ptr, s + 2, step_start, step_end, cidx, coef_dim)
            a3, b3, c3, e3 = _coef_row(coef_ptr, s + 3, step_start, step_end, cidx, coef_dim)
        r0, r1, r2, r3 = tl.philox(seed, lo, hi, (zero + grp).to(tl.uint32), zero)
        z0, z1 = _normal_pair(r0, r1)
        z2, z3 = _normal_pair(r2, r3)
        act0 = (s >= step_start) & (s < step_end)
        act1 = (s + 1 >= step_start) & (s + 1 < step_end)
        act2 = (s + 2 >= step_start) & (s + 2 < step_end)
        act3 = (s + 3 >= step_start) & (s + 3 < step_end)
        if CONST_COEF:
            x = _affine_step(x, z0, act0, a, b, c, e, MILSTEIN)
            x = _affine_step(x, z1, act1, a, b, c, e, MILSTEIN)
            x = _affine_step(x, z2, act2, a, b, c, e, MILSTEIN)
            x = _affine_step(x, z3, act3, a, b, c, e, MILSTEIN)
        else:
            x = _affine_step(x, z0, act0, a0, b0, c0, e0, MILSTEIN)
            x = _affine_step(x, z1, act1, a1, b1, c1, e1, MILSTEIN)
            x = _affine_step(x, z2, act2, a2, b2, c2, e2, MILSTEIN)
            x = _affine_step(x, z3, act3, a3, b3, c3, e3, MILSTEIN)
    tl.store(x_ptr + offs, x, mask=mask)
