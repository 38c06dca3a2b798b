// Error checks for CUDA runtime calls, usable from host-only (.cpp) and device (.cu) files
// of the backend: a failing call throws iris::Error naming the call, the error and the place.
#pragma once

#include <cuda_runtime_api.h>

#include "engine/core/check.h"

#define IRIS_CUDA_CHECK(expr)                                                                   \
  do {                                                                                          \
    const cudaError_t iris_cuda_err_ = (expr);                                                  \
    if (iris_cuda_err_ != cudaSuccess)                                                          \
      ::iris::fail(#expr, " failed: ", cudaGetErrorString(iris_cuda_err_), " (", __FILE__, ":", \
                   __LINE__, ")");                                                              \
  } while (0)

// After every kernel launch: launch-configuration errors surface here, at the launcher.
#define IRIS_CUDA_CHECK_LAUNCH() IRIS_CUDA_CHECK(cudaGetLastError())
