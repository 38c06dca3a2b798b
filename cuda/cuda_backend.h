// The CUDA backend: bf16 weights, activations and KV cache on one GPU, kernels from cuda/*.cu
// and GEMMs through cuBLASLt, all enqueued on one stream per backend. This header pulls in
// no CUDA headers, so code that only creates the backend (the server's --device option)
// builds without them; the binary starts without libcuda and reports the missing driver
// when the backend is created.
#pragma once

#include <memory>

#include "engine/backend.h"

namespace iris {

struct CudaBackendOptions {
  int device = 0;
  // Fraction of the GPU's memory the process may hold in total; free_memory_bytes() reports
  // what is left of it (as vLLM's gpu_memory_utilization).
  double gpu_memory_utilization = 0.9;
  // Run attention with the one-warp-per-row kernel instead of the tiled ones (fallback and
  // debugging aid; also selected by the environment variable IRIS_CUDA_ATTENTION=rowwise).
  bool rowwise_attention = false;
};

// Throws iris::Error when no usable device exists ("--device cuda: no usable CUDA device
// (...)"), when options.device is out of range, or when the device cannot run this build's
// kernels.
std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options);

// Number of CUDA devices this process can use; 0 when there is no driver or no device.
int cuda_device_count();

}  // namespace iris
