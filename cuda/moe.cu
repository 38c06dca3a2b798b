// Mixture-of-experts combine: each token's output is the routing-weighted sum of the rows
// its experts produced (grouped by expert, so a token's rows are scattered). One block per
// token, threads over the hidden dimension; the slots and weights of the token are read
// once into shared memory. fp32 accumulation in slot order, one bf16 rounding per output.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace iris::cuda {
namespace {

constexpr int kMaxSlots = 64;

__global__ void moe_combine_kernel(const bf16* __restrict__ y, const int32_t* __restrict__ slots,
                                   const float* __restrict__ weights, int64_t k, int64_t h,
                                   bf16* __restrict__ out) {
  __shared__ int32_t s_slot[kMaxSlots];
  __shared__ float s_weight[kMaxSlots];
  const int64_t t = blockIdx.x;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    s_slot[j] = slots[t * k + j];
    s_weight[j] = weights[t * k + j];
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t s = s_slot[j];
      if (s >= 0) acc += s_weight[j] * to_f32(y[static_cast<int64_t>(s) * h + i]);
    }
    out[t * h + i] = to_bf16(acc);
  }
}

}  // namespace

void launch_moe_combine(const bf16* y, const int32_t* slots, const float* weights, int64_t tokens,
                        int64_t k, int64_t h, bf16* out, cudaStream_t stream) {
  if (tokens <= 0 || h <= 0) return;
  IRIS_CHECK(k >= 0 && k <= kMaxSlots) << "moe_combine: " << k << " slots per token (at most "
                                       << kMaxSlots << ")";
  const int threads = static_cast<int>(std::min<int64_t>(256, (h + 31) / 32 * 32));
  IRIS_CHECK(tokens <= 2147483647) << "moe_combine: " << tokens << " tokens";
  moe_combine_kernel<<<static_cast<unsigned>(tokens), threads, 0, stream>>>(y, slots, weights, k, h,
                                                                          out);
  IRIS_CUDA_CHECK_LAUNCH();
}

}  // namespace iris::cuda
