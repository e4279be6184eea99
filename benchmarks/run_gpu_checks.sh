#!/usr/bin/env bash
# One prepared run for a machine with a CUDA GPU: the CUDA tests, then the CUDA benchmarks.
# Logs and results go to $OUT (default ./gpu_out); RESULTS.md gets the benchmark sections appended.
# Usage (repository root):  bash benchmarks/run_gpu_checks.sh   (SKIP_SAMPLERS=1 leaves out the sampler benchmark)
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/env.txt"

echo "== CUDA tests"
timeout "${TEST_LIMIT:-150}" python3 -m pytest -q -m cuda -p no:cacheprovider tests/ 2>&1 | tee "$OUT/pytest_cuda.log"

echo "== Triton kernel: launch configurations at 1048576 x 16, and the 1 x 1 call"
timeout 90 python3 - <<'PY' 2>&1 | tee "$OUT/triton_sweep.log"
import time, numpy as np, torch, sdeflow as sf
from sdeflow.solve.grid import build_grid
from sdeflow.solve.native.triton_linear import integrate_sde_triton
ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5).to("cuda")
grid = build_grid(np.array([0.0, 1.0]), 1e-3)
x0 = torch.zeros(1048576, 16, device="cuda")
for block, warps in [(256, 2), (512, 4), (1024, 8)]:
    integrate_sde_triton(ou, x0, grid.times, grid.save_index[-1:], seed=1, block=block, num_warps=warps)
    ts = []
    for _ in range(3):
        torch.cuda.synchronize(); t = time.perf_counter()
        integrate_sde_triton(ou, x0, grid.times, grid.save_index[-1:], seed=1, block=block, num_warps=warps)
        torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    print(f"block {block:5d} warps {warps}: {min(ts)*1e3:8.2f} ms  {x0.numel()*1000/min(ts):.3e} el-steps/s")
x1 = torch.zeros(1, 1, device="cuda")
for _ in range(3):
    sf.simulate(ou, x1, [0.0, 1.0], dt=1e-3, compile="triton", save="final", generator=0)
ts = []
for _ in range(20):
    torch.cuda.synchronize(); t = time.perf_counter()
    sf.simulate(ou, x1, [0.0, 1.0], dt=1e-3, compile="triton", save="final", generator=0)
    torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
ks = []
for _ in range(20):
    torch.cuda.synchronize(); t = time.perf_counter()
    integrate_sde_triton(ou, x1, grid.times, grid.save_index[-1:], seed=1)
    torch.cuda.synchronize(); ks.append(time.perf_counter() - t)
from sdeflow.solve.native.triton_linear import _cached_table, _kernels
table, per_dim, const = _cached_table(ou, grid.times, x1, grid.save_index[-1:])
seg = table[0:1000]
xk = x1.clone()
ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
ms = []
for _ in range(10):
    ev[0].record()
    _kernels().affine_sde_kernel[(1,)](xk, seg[:1], 1, 1, 1, 0, 1000, 0, 250, 7, MILSTEIN=False, PER_DIM=False,
                                       CONST_COEF=True, BLOCK=32, num_warps=1)
    ev[1].record(); torch.cuda.synchronize(); ms.append(ev[0].elapsed_time(ev[1]))
print(f"1x1 kernel alone (CUDA events): best {min(ms):.3f} ms")
print(f"1x1, 1000 steps: simulate() call best {min(ts)*1e3:.3f} ms, median {sorted(ts)[10]*1e3:.3f} ms; "
      f"integrate_sde_triton alone best {min(ks)*1e3:.3f} ms")
PY

echo "== bench_simulate"
timeout "${SIM_LIMIT:-300}" python3 benchmarks/bench_simulate.py --device cuda --torchsde-limit 20 \
  --json "$OUT/bench_simulate.json" 2>&1 | tee "$OUT/bench_simulate.log"

if [ -z "${SKIP_SAMPLERS:-}" ]; then
  echo "== bench_fused_samplers"
  timeout 90 python3 benchmarks/bench_fused_samplers.py --device cuda 2>&1 | tee "$OUT/bench_fused_samplers.log"
fi

cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
echo "== done"
