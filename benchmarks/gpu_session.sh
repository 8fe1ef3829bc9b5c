#!/usr/bin/env bash
# One device session for issue 19, run blind on a GPU machine, in one go.
#
#   bash benchmarks/gpu_session.sh [OUT] [SECONDS]
#
# From the repository root of a checkout, on a machine with numba, scipy, cupy, torch,
# mpi4py, pytest and hypothesis (mgnn itself need not be installed: the script links
# mgnn/kernels to ../kernels and puts the checkout on PYTHONPATH). OUT (default
# gpu-session) receives everything: env.txt, tests.log, tests.xml, quick/ and full/
# (gpu.json and gpu.md each), session.log. SECONDS (default 600) is the whole budget:
# about 25 % for the GPU test cases, 15 % for the quick benchmark, the rest for the full
# one; every step has a hard timeout, and a step that fails does not stop the next.
set -u
OUT=${1:-gpu-session}
TOTAL=${2:-600}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
T_TESTS=$((TOTAL * 25 / 100))
T_QUICK=$((TOTAL * 15 / 100))
T_FULL=$((TOTAL - T_TESTS - T_QUICK - 20))

[ -e mgnn/kernels ] || ln -s ../kernels mgnn/kernels
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

echo "== environment ($(date -u +%FT%TZ))"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  python - <<'EOF'
import numpy, scipy, numba
print("numpy", numpy.__version__, "scipy", scipy.__version__, "numba", numba.__version__)
try:
    import cupy
    print("cupy", cupy.__version__, "CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "devices", cupy.cuda.runtime.getDeviceCount())
except Exception as e:
    print("cupy unavailable:", e)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())
except Exception as e:
    print("torch unavailable:", e)
EOF
} | tee "$OUT/env.txt"

echo "== GPU test cases (budget ${T_TESTS} s)"
# the stand-in's cases ("fake") run in CI on the CPU; here only the device's
timeout "$T_TESTS" python -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/tests.xml" \
  -k "not fake" tests/test_gpu.py tests/test_device_solvers.py tests/test_backends.py tests/test_graphs.py \
  > "$OUT/tests.log" 2>&1
echo "pytest exit status $? (124: timed out)"
tail -n 30 "$OUT/tests.log"

echo "== quick benchmark (budget ${T_QUICK} s)"
timeout "$T_QUICK" python benchmarks/gpu.py --quick --out "$OUT/quick" \
  --time-limit $((T_QUICK - 15))
echo "quick benchmark exit status $?"

echo "== full benchmark (budget ${T_FULL} s)"
timeout "$T_FULL" python benchmarks/gpu.py --out "$OUT/full" --time-limit $((T_FULL - 30))
echo "full benchmark exit status $?"
echo "== done ($(date -u +%FT%TZ)); results in $OUT"
