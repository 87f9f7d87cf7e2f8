# find_nvcc.sh - sourced by the CUDA check scripts: sets NVCC (NVCC, $CUDA_HOME/bin/nvcc, nvcc on
# PATH, /usr/local/cuda/bin/nvcc), or, without one, exits the calling script: 0 (skipped, printing
# "<name>: nvcc not found, skipped") unless BITLINEAR_REQUIRE_NVCC=1 (1). Usage: . find_nvcc.sh NAME
NVCC="${NVCC:-${CUDA_HOME:+$CUDA_HOME/bin/}nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if ! command -v "$NVCC" >/dev/null 2>&1; then
  if [ "${BITLINEAR_REQUIRE_NVCC:-0}" = "1" ]; then echo "nvcc not found" >&2; exit 1; fi
  echo "${1:-cuda check}: nvcc not found, skipped"; exit 0
fi
