#!/usr/bin/env bash
# One device call that verifies and measures the CUDA kernels (issue 19). Needs an NVIDIA GPU, a
# CUDA build of torch and nvcc; no network. Fits one device command: GPU_CHECK_BUDGET_S (default
# 420 s, the build included; a device command may run 600 s). Steps, in order, each under its own
# cap (and never past the budget; what the budget leaves out is printed as NOT RUN):
#   env                the card, its compute capability (nvidia-smi, else torch)
#   build              the extension for that arch only (9.0 -> 9.0a, the wgmma kernel's target)
#   selfcheck_verified every verified path (simple gemv mma mma256 auto) against the CPU, bit for
#                      bit, over the fixed grid of tests/gpu/gpu_selfcheck.py (K or N of 1000, 3001,
#                      3200, 8640, 11008; M 1-5, 16, 17, 64, 65, 512; code-3 bytes; 3 dtypes)
#   selfcheck_fused, selfcheck_multirow, selfcheck_wgmma (sm_90 only)
#                      each never-run kernel forced, same grid, a process each (a fault in one
#                      cannot hide another)
#   train              the CUDA training op, forward (bit for bit) and backward, against the CPU
#   memcheck           compute-sanitizer memcheck: auto, fused, multirow on a small case
#   memcheck_wgmma     the same for wgmma (sm_90 only; its own step: a hang costs only its cap)
#   bench              issue 19's timing table (python profile/bench gpu --table): JSON to
#                      $OUT/gpu_bench.json, rewritten after each part
#   table              the table's rows and targets: $OUT/gpu_table.json (CPU only)
#   pytest_cuda        tests/test_cuda.py, with what time is left (usually a second call's work)
# The CPU test suite does not belong here (CI runs it). Everything goes to $OUT (if set) or
# profile/results/gpu_check/: a log per step, steps.tsv, gpu_check.json (steps, seconds, caps,
# verdicts, and the GPU_CHECK_SKIP that a second call needs), the bench JSON and the table.
# Exit status: 0 if every step that ran passed.
#
#   bash profile/gpu_check.sh                  (from anywhere; PYTHON selects the interpreter)
#   GPU_CHECK_SKIP="build selfcheck_verified ..." skips steps by name: a second call runs what a
#       first could not (the summary prints the line to use; a fresh machine needs `build` again)
#   GPU_CHECK_DRY_RUN=1  the CPU rehearsal: same steps, order, caps, budget, skips and JSON, with
#       nvidia-smi, the build, compute-sanitizer and CUDA replaced by mocks, and the Python steps
#       run on the CPU (gpu_selfcheck.py --rehearse, bench gpu --rehearse). Mock knobs:
#       GPU_CHECK_MOCK_ARCH (default 9.0), GPU_CHECK_MOCK_SLEEP="step=seconds ...",
#       GPU_CHECK_MOCK_FAIL="step ...", GPU_CHECK_MOCK_ALL=1 (mock the Python steps too: the
#       budget and skip logic alone, in seconds). tests/test_gpu_check.py runs it.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-420}
DRY=${GPU_CHECK_DRY_RUN:-0}
RES=${OUT:-$PWD/profile/results/gpu_check}
mkdir -p "$RES"
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1 && command -v python >/dev/null; then PY=python; fi
TSV="$RES/steps.tsv"
: >"$TSV"
FAILED=0
RESERVE=10  # seconds kept for the summary
export RES PY

if [ "$DRY" != 1 ] && ! command -v nvcc >/dev/null 2>&1; then
  for d in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-13.0; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then export PATH="$d/bin:$PATH" CUDA_HOME="$d"; break; fi
  done
fi

elapsed() { echo $(($(date +%s) - START)); }

# record NAME VERDICT SECONDS CAP
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$TSV"; }

# step NAME CAP REAL [DRY]: runs the bash command REAL (DRY in a dry run; no DRY: a mock that
# prints REAL) under min(CAP, budget left), tees NAME.log, records verdict and seconds.
step() {
  local name=$1 cap=$2 real=$3 dry=${4:-}
  case " ${GPU_CHECK_SKIP:-} " in *" $name "*)
    echo "==> $name: skipped (GPU_CHECK_SKIP)"
    record "$name" SKIPPED 0 "$cap"
    return 0 ;;
  esac
  local left=$((BUDGET - $(elapsed) - RESERVE))
  local t=$((cap < left ? cap : left))
  if [ "$t" -lt 10 ]; then
    echo "==> $name: NOT RUN (budget: $(elapsed) s of $BUDGET s spent)"
    record "$name" NOT_RUN 0 "$cap"
    return 0
  fi
  local cmd=$real
  if [ "$DRY" = 1 ]; then
    if [ -n "$dry" ] && [ "${GPU_CHECK_MOCK_ALL:-0}" != 1 ]; then cmd=$dry; else
      local sl=0 rc=0 kv
      for kv in ${GPU_CHECK_MOCK_SLEEP:-}; do [ "${kv%%=*}" = "$name" ] && sl=${kv#*=}; done
      case " ${GPU_CHECK_MOCK_FAIL:-} " in *" $name "*) rc=1 ;; esac
      cmd="echo '[dry run] mock of: '$(printf '%q' "$real"); sleep $sl; exit $rc"
    fi
  fi
  echo "==> $name (cap ${cap}s, timeout ${t}s; $(elapsed) s of $BUDGET s spent)"
  local s
  s=$(date +%s)
  timeout -k 5 "$t" bash -c "$cmd" 2>&1 | tee "$RES/$name.log"
  local rc=${PIPESTATUS[0]} verdict=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then verdict=TIMEOUT
  elif [ "$rc" != 0 ]; then verdict="FAIL($rc)"; fi
  [ "$rc" != 0 ] && FAILED=1
  local took=$(($(date +%s) - s))
  record "$name" "$verdict" "$took" "$cap"
  echo "    ($name: $verdict in ${took}s of its ${cap}s cap; $(elapsed) s of $BUDGET s spent)"
  return "$rc"
}

# ---------------------------------------------------------------- env: the card and its arch
echo "==> env (budget ${BUDGET}s$([ "$DRY" = 1 ] && echo ', DRY RUN: mocks, no GPU'))"
if [ "$DRY" = 1 ]; then
  CAP=${GPU_CHECK_MOCK_ARCH:-9.0}
  { date -u; echo "[dry run] mock GPU, compute capability $CAP"
    "$PY" -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$RES/env.log"
else
  {
    date -u
    nvidia-smi -L 2>&1 || true
    nvcc --version 2>&1 | tail -1 || true
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  } 2>&1 | tee "$RES/env.log"
  CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')
  [ -n "$CAP" ] || CAP=$("$PY" -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')" 2>/dev/null)
  [ -n "$CAP" ] || CAP=9.0
fi
# Hopper: build sm_90a (the wgmma kernel exists only there; everything else runs unchanged)
ARCH=$CAP
[ "$CAP" = 9.0 ] && ARCH=9.0a
HOPPER=0
[ "$ARCH" = 9.0a ] && HOPPER=1
echo "compute capability $CAP: building TORCH_CUDA_ARCH_LIST=$ARCH only" | tee -a "$RES/env.log"
record env ok "$(elapsed)" 10

# The system compilers, not a CC/CXX wrapper the host may set: on the H100 host (2026-11-26) a
# binding built by CXX=/opt/gcc/bin/g++ segfaulted whenever an op raised, /usr/bin/g++ did not.
if [ -x /usr/bin/g++ ] && [ -x /usr/bin/gcc ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
export BL_GPU_ARCH=$ARCH BL_JOBS=$(nproc 2>/dev/null || echo 8)
# Optional baseline: gemlite from .whl/ (docs/cuda.md); the benchmark uses it when importable.
if [ "$DRY" != 1 ] && ls .whl/gemlite-*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/bl-site .whl/gemlite-*.whl &&
    export PYTHONPATH="/tmp/bl-site${PYTHONPATH:+:$PYTHONPATH}"
fi

# ---------------------------------------------------------------- the steps
step build 150 'rm -rf build _bitlinear*.so
TORCH_CUDA_ARCH_LIST="$BL_GPU_ARCH" MAX_JOBS=$BL_JOBS "$PY" setup.py build_ext --inplace ||
  TORCH_CUDA_ARCH_LIST="$BL_GPU_ARCH" MAX_JOBS=$BL_JOBS "$PY" -m pip install --no-build-isolation --no-deps -e .
"$PY" -c "import bitlinear, sys; print(\"HAS_CUDA_KERNELS\", bitlinear.HAS_CUDA_KERNELS); sys.exit(0 if bitlinear.HAS_CUDA_KERNELS else 1)"'
if grep -q "^build	FAIL\|^build	TIMEOUT" "$TSV"; then
  echo "BUILD FAILED: last lines of the build log:"
  tail -40 "$RES/build.log"
fi
BUILT=1
grep -q "^build	FAIL\|^build	TIMEOUT\|^build	NOT_RUN" "$TSV" && BUILT=0

SC='"$PY" tests/gpu/gpu_selfcheck.py'
if [ "$BUILT" = 1 ]; then
  step selfcheck_verified 75 "$SC simple gemv mma mma256 auto" "$SC --rehearse simple gemv mma mma256 auto"
  step selfcheck_fused 40 "$SC fused" "$SC --rehearse fused"
  step selfcheck_multirow 40 "$SC multirow" "$SC --rehearse multirow"
  if [ "$HOPPER" = 1 ]; then
    # never run before: a hang (an mbarrier never completing) costs only this cap; the benchmark
    # times the wgmma variant only if this passed
    step selfcheck_wgmma 40 "$SC wgmma" "$SC --rehearse wgmma" && export BITLINEAR_BENCH_WGMMA=1
  fi
  step train 45 "$SC --train" "$SC --rehearse --train"
  MC='compute-sanitizer --tool memcheck --error-exitcode 99 "$PY" tests/gpu/gpu_selfcheck.py --tiny'
  if [ "$DRY" = 1 ] || command -v compute-sanitizer >/dev/null 2>&1; then
    step memcheck 75 "$MC auto fused multirow"
    [ "$HOPPER" = 1 ] && step memcheck_wgmma 45 "$MC wgmma"
  else
    echo "==> memcheck: compute-sanitizer not found"; record memcheck "NO_TOOL" 0 75
  fi
  rm -f "$RES/gpu_bench.json" "$RES/gpu_table.json"  # no stale table from an earlier run
  step bench 150 '"$PY" profile/bench gpu --table --no-progress --out "$RES/gpu_bench.json"' \
    '"$PY" profile/bench gpu --rehearse --out "$RES/gpu_bench.json"'
  if [ -f "$RES/gpu_bench.json" ]; then
    step table 20 '"$PY" profile/bench gpu --issue-table "$RES/gpu_bench.json" --out "$RES/gpu_table.json"' \
      '"$PY" profile/bench gpu --issue-table "$RES/gpu_bench.json" --out "$RES/gpu_table.json"'
  else
    echo "==> table: no $RES/gpu_bench.json (the bench step makes it)"; record table NO_BENCH_JSON 0 20
  fi
  step pytest_cuda 300 '"$PY" -m pytest -q -p no:cacheprovider --maxfail=30 tests/test_cuda.py tests/test_gpu_auto.py -k "not wgmma"'
else
  for name in selfcheck_verified selfcheck_fused selfcheck_multirow train memcheck bench table pytest_cuda; do
    echo "==> $name: NOT RUN (no build)"; record "$name" NOT_RUN 0 0
  done
fi

# ---------------------------------------------------------------- summary
TOTAL=$(elapsed)
echo
echo "==================== SUMMARY (${TOTAL}s of ${BUDGET}s) ===================="
grep -h "selfcheck path=\|selfcheck train" "$RES"/selfcheck_*.log "$RES/train.log" 2>/dev/null
grep -h -E "passed|failed|error" "$RES/pytest_cuda.log" 2>/dev/null | tail -1 | sed 's/^/pytest_cuda: /'
"$PY" - "$TSV" "$RES/gpu_check.json" "$BUDGET" "$TOTAL" "$CAP" "$ARCH" "$DRY" <<'EOF'
import json, subprocess, sys
tsv, out, budget, total, cap, arch, dry = sys.argv[1:]
steps = [dict(zip(("name", "verdict", "seconds", "cap"), line.rstrip("\n").split("\t")))
         for line in open(tsv) if line.strip()]
for s in steps:
    s["seconds"], s["cap"] = int(s["seconds"]), int(s["cap"])
# a second call skips what finished (ok or FAIL: rerunning will not change it); the build is
# never skipped (a fresh machine), env is not a step
done = [s["name"] for s in steps if s["name"] not in ("env", "build")
        and (s["verdict"] in ("ok", "SKIPPED") or s["verdict"].startswith("FAIL"))]
left = [s["name"] for s in steps if s["verdict"] in ("NOT_RUN", "TIMEOUT")]
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
except OSError:
    commit = None
res = {"budget_s": int(budget), "total_s": int(total), "compute_capability": cap, "arch": arch,
       "dry_run": dry == "1", "commit": commit, "steps": steps, "not_finished": left,
       "second_call_skip": " ".join(done) if left else None}
if dry == "1":
    res["note"] = "CPU rehearsal (GPU_CHECK_DRY_RUN=1): mocks, not a GPU result"
json.dump(res, open(out, "w"), indent=1)
print(f"{'step':<20} {'verdict':<10} {'seconds':>7} {'cap':>5}")
for s in steps:
    print(f"{s['name']:<20} {s['verdict']:<10} {s['seconds']:>7} {s['cap']:>5}")
print(f"total {total} s of the {budget} s budget" + (" (DRY RUN: mocks, not a GPU result)" if dry == "1" else ""))
if left:
    print(f"not finished: {' '.join(left)}; a second call: GPU_CHECK_SKIP=\"{' '.join(done)}\"")
EOF
if [ -f "$RES/gpu_table.json" ]; then
  echo
  cat "$RES/table.log"
else
  echo "(no timing table: see $RES/bench.log)"
fi
exit "$FAILED"
