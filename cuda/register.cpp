// Registers the CUDA backend and its NCCL communicators under the device name "cuda" when
// this library is linked into a binary (whole-archive, so this object is kept).
#include "cuda/cuda_backend.h"
#include "cuda/nccl_communicator.h"
#include "engine/device_registry.h"

namespace iris {
namespace {

std::unique_ptr<Backend> make_cuda(const DeviceOptions& o) {
  CudaBackendOptions co;
  co.device = o.device;
  co.gpu_memory_utilization = o.gpu_memory_utilization;
  return make_cuda_backend(co);
}

const bool kRegistered = register_device_backend("cuda", &make_cuda, &make_nccl_communicators);

}  // namespace
}  // namespace iris
