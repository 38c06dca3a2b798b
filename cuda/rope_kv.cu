// Fused per-token prologue of attention: optional per-head RMSNorm of q and k (Qwen3),
// rotary embedding (rotate-half form, M-RoPE's position rows summed per frequency, first rotary_dim dims of each head, fp32 angles with
// accurate sincosf so long positions stay exact enough), written back into qkv in place,
// then k and v stored into the paged KV cache at slot_mapping[t] (-1 = skip). One block
// per token, one warp per head; every element is read once and rounded to bf16 once. An FP8
// cache (--kv-cache-dtype fp8) stores e4m3(x / scale) of the bf16 K (after RoPE) and V.
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace iris::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxHeadDim = 256;

__global__ void __launch_bounds__(kWarps * 32) qk_norm_rope_store_kv_kernel(RopeKvArgs a) {
  __shared__ float buf[kWarps][kMaxHeadDim];
  const int t = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int D = a.head_dim, nq = a.num_q_heads, nk = a.num_kv_heads;
  const int64_t row = static_cast<int64_t>(nq + 2 * nk) * D;
  bf16* r = a.qkv + t * row;
  const int64_t slot = a.slot_mapping[t];
  const bool store = slot >= 0 && slot < a.num_slots;
  const bool fp8 = a.k_cache_fp8 != nullptr;
  const int64_t kv_row = static_cast<int64_t>(nk) * D;
  const int rows = a.position_rows;
  const int32_t* pos = a.positions + static_cast<int64_t>(t) * rows;
  const int half = a.rotary_half;
  float* x = buf[warp];

  for (int h = warp; h < nq + 2 * nk; h += kWarps) {
    bf16* head = r + static_cast<int64_t>(h) * D;
    if (h >= nq + nk) {  // v: copy into the cache only
      if (store) {
        const int64_t off = slot * kv_row + static_cast<int64_t>(h - nq - nk) * D;
        if (fp8) {
          for (int d = lane; d < D; d += 32) a.v_cache_fp8[off + d] = to_e4m3(to_f32(head[d]) / a.v_scale);
        } else {
          for (int d = lane; d < D; d += 32) a.v_cache[off + d] = head[d];
        }
      }
      continue;
    }
    for (int d = lane; d < D; d += 32) x[d] = to_f32(head[d]);
    const bf16* norm = h < nq ? a.q_norm : a.k_norm;
    if (norm != nullptr) {
      float ss = 0.0f;
      for (int d = lane; d < D; d += 32) ss += x[d] * x[d];
      ss = warp_sum(ss);
      const float inv = 1.0f / sqrtf(ss / static_cast<float>(D) + a.norm_eps);
      for (int d = lane; d < D; d += 32) x[d] = to_f32(norm[d]) * (x[d] * inv);
    }
    __syncwarp();
    // Each lane rotates whole pairs (i, i + half): it reads and writes only its own pairs.
    for (int i = lane; i < half; i += 32) {
      // M-RoPE: one frequency row per position row, zero outside its section.
      float angle = 0.0f;
      for (int j = 0; j < rows; ++j)
        angle += static_cast<float>(pos[j]) * a.inv_freq[j * half + i];
      float s, c;
      sincosf(angle, &s, &c);
      const float x1 = x[i], x2 = x[i + half];
      x[i] = x1 * c - x2 * s;
      x[i + half] = x2 * c + x1 * s;
    }
    __syncwarp();
    const int64_t k_off = slot * kv_row + static_cast<int64_t>(h - nq) * D;
    const bool store_k = h >= nq && store;
    for (int d = lane; d < D; d += 32) {
      const bf16 v = to_bf16(x[d]);
      head[d] = v;
      if (store_k) {
        if (fp8) {
          a.k_cache_fp8[k_off + d] = to_e4m3(to_f32(v) / a.k_scale);
        } else {
          a.k_cache[k_off + d] = v;
        }
      }
    }
    __syncwarp();  // x is reused by this warp's next head
  }
}

}  // namespace

void launch_qk_norm_rope_store_kv(const RopeKvArgs& a, cudaStream_t stream) {
  if (a.num_tokens == 0) return;
  IRIS_CHECK(a.head_dim > 0 && a.head_dim <= kMaxHeadDim)
      << "cuda qk_norm_rope_store_kv: head_dim " << a.head_dim << " (at most " << kMaxHeadDim
      << ")";
  IRIS_CHECK(2 * a.rotary_half <= a.head_dim) << "cuda qk_norm_rope_store_kv: rotary dim "
                                              << 2 * a.rotary_half << " > head_dim " << a.head_dim;
  qk_norm_rope_store_kv_kernel<<<a.num_tokens, kWarps * 32, 0, stream>>>(a);
  IRIS_CUDA_CHECK_LAUNCH();
}

}  // namespace iris::cuda
