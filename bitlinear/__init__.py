"""bitlinear: ternary-weight (BitNet b1.58) linear layers for PyTorch.

    from bitlinear import BitLinear
    layer = BitLinear(512, 256)      # train with fake quantization (straight-through estimator)
    layer.deploy()                   # pack to 2 bits, run the integer CPU/CUDA kernels
"""
from . import ops  # defines torch.ops.bitlinear.*, then loads the native kernels (_ext)
from ._ext import HAS_BITLINEAR, HAS_CUDA_KERNELS
from ._info import __version__, collect_info
from .isa import (available_cpu_isas, cpu_isa, cpu_lut, cpu_lut_max_m, cpu_lut_used, set_cpu_isa,
                  set_cpu_lut, set_cpu_lut_max_m, use_cpu_isa, use_cpu_lut)
from .cuda import cuda_path, set_cuda_path, use_cuda_path
from .nn import BitLinear
from ._fast import fast_path_enabled, set_fast_path
from .convert import (ConvertConfig, convert, deploy, load_deployed, model_size_bytes,
                      save_deployed, size_report)
from .fuse import DEFAULT_FUSE_GROUPS, fuse_projections
from .norm import RMSNorm, fuse_norms
from .reference import ACT_SCALES, FORMAT_VERSION, QUANT_TYPES, WEIGHT_SCALES

__all__ = [
    "BitLinear", "ConvertConfig", "convert", "deploy", "save_deployed", "load_deployed",
    "model_size_bytes", "size_report", "fuse_projections", "DEFAULT_FUSE_GROUPS", "fuse_norms",
    "RMSNorm", "HAS_BITLINEAR", "HAS_CUDA_KERNELS", "QUANT_TYPES", "ACT_SCALES",
    "WEIGHT_SCALES", "FORMAT_VERSION",
    "available_cpu_isas", "cpu_isa", "set_cpu_isa", "use_cpu_isa", "set_fast_path",
    "cpu_lut", "set_cpu_lut", "cpu_lut_max_m", "set_cpu_lut_max_m", "cpu_lut_used", "use_cpu_lut",
    "fast_path_enabled", "collect_info", "ops",
    "cuda_path", "set_cuda_path", "use_cuda_path",
    "__version__",
]
