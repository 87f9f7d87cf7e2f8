#!/usr/bin/env bash
# One-shot GPU validation and benchmark (needs an NVIDIA GPU, a CUDA build of torch and nvcc; no
# network). Builds the extension for this GPU's arch only, then, each step under a timeout so the
# whole run stays within GPU_CHECK_BUDGET_S (default 540 s; a device command may run 600 s).
# Correctness first (the fused, multi-row paths had never run on a GPU when written):
#   1. self-check of every GEMM path against the CPU (separate processes: a CUDA fault in one
#      path cannot hide the others), paths forced with bitlinear.cuda's options
#      python profile/gpu_selfcheck.py {simple,gemv,fused,multirow,mma,mma256,auto}
#   2. pytest tests/test_cuda.py       (all paths, every M around a threshold, graphs, compile),
#      then the sm_90a wgmma path's self-check and tests in steps of their own
#   3. compute-sanitizer memcheck of the tiny self-check of the fused, multi-row, GEMV and MMA
#      paths (one process), if the tool exists
#   4. GPU benchmark                   python -m bitlinear bench --device cuda
#      (layer cases incl. the hidden-style shapes and the eager module rows, gemlite if
#      importable, host-time rows, training rows; the JSON is rewritten after each part, so a
#      timeout keeps the parts done)
#   5. plain C core tests              make -C tests/c test
#   6. CPU pytest suite                (what time is left)
# and prints a summary with the benchmark tables (layer cases, host time, training, targets) LAST.
# Logs and JSON go to $OUT (if set) or profile/results/gpu_check/. Exit status: 0 if every step
# that ran passed.
# Usage: bash profile/gpu_check.sh      (from anywhere; PYTHON selects the interpreter)
#        GPU_CHECK_SKIP="selfcheck_simple pytest_cpu ..." skips steps by name (a second device
#        call can run what a first one's budget left out); GPU_CHECK_BUDGET_S sets the budget.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-540}
RES=${OUT:-$PWD/profile/results/gpu_check}
mkdir -p "$RES"
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1 && command -v python >/dev/null; then PY=python; fi
SUMMARY="$RES/summary.txt"
: >"$SUMMARY"
FAILED=0

if ! command -v nvcc >/dev/null 2>&1; then
  for d in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-13.0; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then export PATH="$d/bin:$PATH" CUDA_HOME="$d"; break; fi
  done
fi

# step NAME CAP_SECONDS CMD...: runs CMD under min(CAP, time left), tees NAME.log, records rc.
step() {
  local name=$1 cap=$2
  shift 2
  case " ${GPU_CHECK_SKIP:-} " in *" $name "*)  # e.g. GPU_CHECK_SKIP="c_tests pytest_cpu"
    echo "==> $name: skipped (GPU_CHECK_SKIP)"
    printf '%-28s %-8s %5s\n' "$name" "SKIPPED" "-" >>"$SUMMARY"
    return 0 ;;
  esac
  local left=$((BUDGET - ($(date +%s) - START) - 15))
  local t=$((cap < left ? cap : left))
  if [ "$t" -lt 10 ]; then
    echo "==> $name: skipped (time budget spent)"
    printf '%-28s %-8s %5s\n' "$name" "SKIPPED" "-" >>"$SUMMARY"
    return 0
  fi
  echo "==> $name (timeout ${t}s): $*"
  local s=$(date +%s)
  timeout -k 10 "$t" "$@" 2>&1 | tee "$RES/$name.log"
  local rc=${PIPESTATUS[0]}
  local verdict=ok
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && verdict=TIMEOUT
  [ "$rc" != 0 ] && [ "$verdict" = ok ] && verdict="FAIL($rc)"
  [ "$rc" != 0 ] && FAILED=1
  printf '%-28s %-8s %5ss\n' "$name" "$verdict" "$(($(date +%s) - s))" >>"$SUMMARY"
  return "$rc"
}

# Optional baselines travel as wheels (never dependencies): gemlite (pure Python + Triton, which
# the GPU image has) from .whl/ if someone put it there (docs/cuda.md); the benchmark uses it when
# `import gemlite` works.
if ls .whl/gemlite-*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/bl-site .whl/gemlite-*.whl &&
    export PYTHONPATH="/tmp/bl-site${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "==> environment"
{
  date -u
  nvidia-smi -L 2>&1 || true
  nvcc --version 2>&1 | tail -1 || true
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
} 2>&1 | tee "$RES/env.log"
BL_GPU_ARCH=$("$PY" -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')" 2>/dev/null || echo 9.0)
# Hopper: build sm_90a (the wgmma kernel exists only there; everything else runs unchanged)
[ "$BL_GPU_ARCH" = "9.0" ] && BL_GPU_ARCH=9.0a

# The system compilers, not a CC/CXX wrapper the host may set: on the H100 host (2026-11-26) a
# binding built by CXX=/opt/gcc/bin/g++ segfaulted whenever an op raised, /usr/bin/g++ did not.
if [ -x /usr/bin/g++ ] && [ -x /usr/bin/gcc ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
export BL_GPU_ARCH BL_PY="$PY"
BUILD_SCRIPT='rm -rf build _bitlinear*.so
TORCH_CUDA_ARCH_LIST="$BL_GPU_ARCH" MAX_JOBS=16 "$BL_PY" setup.py build_ext --inplace ||
  TORCH_CUDA_ARCH_LIST="$BL_GPU_ARCH" MAX_JOBS=16 "$BL_PY" -m pip install --no-build-isolation --no-deps -e .
"$BL_PY" -c "import bitlinear, sys; print(\"HAS_CUDA_KERNELS\", bitlinear.HAS_CUDA_KERNELS); sys.exit(0 if bitlinear.HAS_CUDA_KERNELS else 1)"'
if ! step build 300 bash -c "$BUILD_SCRIPT"; then
  echo "BUILD FAILED: last lines of the build log:"
  tail -40 "$RES/build.log"
  echo "==================== SUMMARY ===================="
  cat "$SUMMARY"
  exit 1
fi

for path in simple gemv fused multirow mma mma256 auto; do
  step "selfcheck_$path" 60 "$PY" profile/gpu_selfcheck.py "$path"
done
step pytest_cuda 150 "$PY" -m pytest -q -p no:cacheprovider --maxfail=30 tests/test_cuda.py \
  -k "not wgmma"
# the sm_90a wgmma kernel (never run before this script's first GPU run): its own steps, so that a
# hang (an mbarrier never completing) costs only their timeouts; the benchmark times it only if
# its self-check passed
step selfcheck_wgmma 60 "$PY" profile/gpu_selfcheck.py wgmma &&
  export BITLINEAR_BENCH_WGMMA=1
step pytest_wgmma 90 "$PY" -m pytest -q -p no:cacheprovider --maxfail=10 tests/test_cuda.py -k wgmma
if command -v compute-sanitizer >/dev/null 2>&1; then
  step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 99 \
    "$PY" profile/gpu_selfcheck.py fused multirow gemv mma auto --tiny
fi
rm -f "$RES/gpu_bench.json" "$RES/gpu_bench_table.txt"  # no stale table from an earlier run
step bench 200 "$PY" -m bitlinear bench --device cuda --no-progress --out "$RES/gpu_bench.json"
[ -f "$RES/gpu_bench.json" ] &&
  "$PY" -m bitlinear bench --render "$RES/gpu_bench.json" >"$RES/gpu_bench_table.txt" 2>&1
if [ -f tests/c/Makefile ]; then  # this CPU may run the AVX-512 VNNI paths our machines lack
  step c_tests 60 make -C tests/c test -j16
fi
step pytest_cpu 90 "$PY" -m pytest -q -p no:cacheprovider -x --ignore=tests/test_cuda.py tests

echo
echo "==================== SUMMARY ($(($(date +%s) - START))s) ===================="
grep -h "selfcheck path=" "$RES"/selfcheck_*.log 2>/dev/null
grep -h -E "passed|failed|error|skipped" "$RES/pytest_cuda.log" 2>/dev/null | tail -1 | sed 's/^/pytest_cuda: /'
cat "$SUMMARY"
if [ -f "$RES/gpu_bench_table.txt" ]; then
  echo
  cat "$RES/gpu_bench_table.txt"
else
  echo "(no benchmark table: see $RES/bench.log)"
fi
exit "$FAILED"
