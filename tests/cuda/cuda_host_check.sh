#!/usr/bin/env bash
# Runs the host side of csrc/cuda/ without a GPU (tests/cuda/cuda_host_check.cu): options, path
# choice, workspace sizes, split bounds, early argument errors, and CPU emulations of the fused
# and multi-row kernels' index maps. Device code is compiled to PTX only (no ptxas: fast); no
# kernel is launched and no CUDA runtime call is made.
# Skips (exit 0) when nvcc is not installed, unless BITLINEAR_REQUIRE_NVCC=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/find_nvcc.sh cuda_host_check
OUTDIR="$(mktemp -d)"
trap 'rm -rf "$OUTDIR"' EXIT
FLAGS=(-std=c++17 -O1 --expt-relaxed-constexpr -Werror all-warnings
       -gencode=arch=compute_80,code=compute_80)
objs=()
for src in csrc/cuda/*.cu tests/cuda/cuda_host_check.cu; do
  obj="$OUTDIR/$(basename "$src" .cu).o"
  "$NVCC" "${FLAGS[@]}" -c "$src" -o "$obj"
  objs+=("$obj")
done
"$NVCC" "${FLAGS[@]}" "${objs[@]}" -o "$OUTDIR/cuda_host_check"
"$OUTDIR/cuda_host_check"
