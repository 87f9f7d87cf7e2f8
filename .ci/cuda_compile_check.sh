#!/usr/bin/env bash
# Compiles every csrc/cuda/*.cu with nvcc for sm_80, sm_90 and sm_90a (objects only, no GPU needed)
# and fails on any error. CUDA_CHECK_ARCHS="80 90a" narrows the list (e.g. while iterating). Usage: .ci/cuda_compile_check.sh [-v]   (-v: ptxas register/spill report)
# Skips (exit 0) when nvcc is not installed, unless BITLINEAR_REQUIRE_NVCC=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/find_nvcc.sh cuda_compile_check
VERBOSE=()
[ "${1:-}" = "-v" ] && VERBOSE=(-Xptxas -v)
OUTDIR="$(mktemp -d)"
trap 'rm -rf "$OUTDIR"' EXIT
fail=0
for src in csrc/cuda/*.cu; do
  for arch in ${CUDA_CHECK_ARCHS:-80 90 90a}; do
    obj="$OUTDIR/$(basename "$src" .cu).sm$arch.o"
    if ! "$NVCC" -std=c++17 -O3 -Xcompiler -fPIC --expt-relaxed-constexpr -Werror all-warnings \
        "${VERBOSE[@]}" -gencode="arch=compute_$arch,code=sm_$arch" -c "$src" -o "$obj"; then
      echo "FAILED: $src sm_$arch" >&2
      fail=1
    fi
  done
done
[ "$fail" = 0 ] && echo "cuda_compile_check: all $(ls csrc/cuda/*.cu | wc -l) files compile for: ${CUDA_CHECK_ARCHS:-80 90 90a}"
exit "$fail"
