/* status.c - the message of each bl_status. */
#include "../bitlinear.h"

const char *bl_status_str(bl_status s) {
  switch (s) {
    case BL_OK: return "ok";
    case BL_ERR_NULL: return "a required pointer is NULL";
    case BL_ERR_SIZE: return "invalid size";
    case BL_ERR_STRIDE: return "leading dimension smaller than the row";
    case BL_ERR_ARG: return "argument out of range";
    case BL_ERR_ISA: return "ISA not available on this build or CPU";
    case BL_ERR_ALLOC: return "allocation failed";
    case BL_ERR_CUDA: return "CUDA runtime error";
    case BL_ERR_NO_CUDA: return "built without CUDA";
    case BL_ERR_NONFINITE: return "weights contain NaN or Inf";
  }
  return "unknown status";
}
