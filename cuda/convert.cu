// Element-type conversion on the device, used by upload (host bytes copied raw, converted
// here) and download_f32 (converted here, then copied). Round-to-nearest-even, as the
// host's f32_to_bf16 / f32_to_f16.
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace iris::cuda {
namespace {

template <typename T>
__device__ __forceinline__ float load_as_f32(const T* p, int64_t i);
template <>
__device__ __forceinline__ float load_as_f32<float>(const float* p, int64_t i) {
  return p[i];
}
template <>
__device__ __forceinline__ float load_as_f32<__half>(const __half* p, int64_t i) {
  return __half2float(p[i]);
}
template <>
__device__ __forceinline__ float load_as_f32<bf16>(const bf16* p, int64_t i) {
  return __bfloat162float(p[i]);
}

template <typename T>
__device__ __forceinline__ void store_from_f32(T* p, int64_t i, float v);
template <>
__device__ __forceinline__ void store_from_f32<float>(float* p, int64_t i, float v) {
  p[i] = v;
}
template <>
__device__ __forceinline__ void store_from_f32<__half>(__half* p, int64_t i, float v) {
  p[i] = __float2half_rn(v);
}
template <>
__device__ __forceinline__ void store_from_f32<bf16>(bf16* p, int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}

template <typename S, typename D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    store_from_f32(dst, i, load_as_f32(src, i));
}

template <typename S>
void launch_from(const S* src, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream) {
  const int threads = 256;
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, 4096));
  switch (dst_dtype) {
    case DType::F32:
      convert_kernel<<<blocks, threads, 0, stream>>>(src, static_cast<float*>(dst), n);
      break;
    case DType::F16:
      convert_kernel<<<blocks, threads, 0, stream>>>(src, static_cast<__half*>(dst), n);
      break;
    case DType::BF16:
      convert_kernel<<<blocks, threads, 0, stream>>>(src, static_cast<bf16*>(dst), n);
      break;
    default:
      fail("cuda convert: unsupported destination dtype ", dtype_name(dst_dtype));
  }
  IRIS_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n,
                    cudaStream_t stream) {
  if (n <= 0) return;
  switch (src_dtype) {
    case DType::F32:
      return launch_from(static_cast<const float*>(src), dst, dst_dtype, n, stream);
    case DType::F16:
      return launch_from(static_cast<const __half*>(src), dst, dst_dtype, n, stream);
    case DType::BF16:
      return launch_from(static_cast<const bf16*>(src), dst, dst_dtype, n, stream);
    default:
      fail("cuda convert: unsupported source dtype ", dtype_name(src_dtype));
  }
}

cudaError_t probe_kernel_image() {
  cudaFuncAttributes attr{};
  return cudaFuncGetAttributes(&attr, convert_kernel<float, bf16>);
}

}  // namespace iris::cuda
