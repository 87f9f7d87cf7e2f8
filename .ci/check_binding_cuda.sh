#!/usr/bin/env bash
# Compiles every binding file (csrc/binding/*.cpp, ops_cuda.cpp included) with CUDA enabled
# (-DBITLINEAR_WITH_CUDA -DUSE_CUDA) against the installed torch's headers, objects only: catches
# CUDA-only binding code that a CPU build never sees. Needs no GPU and no CUDA build of torch. Usage: .ci/check_binding_cuda.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-python3}}
read -r -a INC < <("$PY" - <<'PY'
import sysconfig
from torch.utils.cpp_extension import include_paths
print(" ".join("-I" + p for p in include_paths() + [sysconfig.get_paths()["include"]]))
PY
)
TARGET=$("$PY" -c "import re; print(re.search(r'TORCH_TARGET = \"(0x[0-9a-f]+)\"', open('setup.py').read()).group(1))")
out=$(mktemp -d)
for src in csrc/binding/*.cpp; do
  ${CXX:-g++} -std=c++20 -O0 -fPIC -fvisibility=hidden -Wall -DBITLINEAR_WITH_CUDA -DUSE_CUDA \
    -DTORCH_TARGET_VERSION="$TARGET" -DPy_LIMITED_API=0x030A0000 -Icsrc "${INC[@]}" \
    -c "$src" -o "$out/$(basename "$src" .cpp).o"
done
rm -rf "$out"
echo "csrc/binding/*.cpp compile with CUDA enabled: OK"
