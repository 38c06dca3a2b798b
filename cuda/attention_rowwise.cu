// The simplest correct attention on the GPU: one warp per (query row, q head), a plain fp32
// online softmax over that row's keys in order, the same arithmetic as the CPU reference
// (engine/cpu/cpu_attention.cpp) apart from summation order. Covers paged (causal, sliding
// window, ragged batches, Gemma 3's bidirectional image spans) and encoder mode. It re-reads K/V once per q head and does a warp
// reduction per key, so it is far slower than the tiled kernels; it exists as the fallback
// (CudaBackendOptions::rowwise_attention, IRIS_CUDA_ATTENTION=rowwise) and as a second
// opinion in the GPU tests.
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace iris::cuda {
namespace {

constexpr int kWarps = 4;

template <int DP, bool kPaged>
__global__ void __launch_bounds__(kWarps * 32) rowwise_attention_kernel(AttentionArgs a) {
  constexpr int PER = DP / 32;  // dims per lane: lane * PER + i
  const int lane = threadIdx.x & 31;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int Hq = a.num_q_heads, Hkv = a.num_kv_heads, D = a.head_dim;
  if (item >= static_cast<int64_t>(a.num_tokens) * Hq) return;
  const int t = static_cast<int>(item / Hq), h = static_cast<int>(item % Hq);
  const int kvh = h / (Hq / Hkv);

  int s, q0, lo, hi;
  if constexpr (kPaged) {
    // The sequence owning row t: the last s with query_start[s] <= t.
    int a0 = 0, a1 = a.num_seqs - 1;
    while (a0 < a1) {
      const int mid = (a0 + a1 + 1) / 2;
      if (a.query_start[mid] <= t)
        a0 = mid;
      else
        a1 = mid - 1;
    }
    s = a0;
    q0 = a.query_start[s];
    const int q_len = a.query_start[s + 1] - q0;
    const int pos = a.seq_lens[s] - q_len + (t - q0);
    lo = a.sliding_window > 0 ? max(0, pos - a.sliding_window + 1) : 0;
    hi = pos;
    if (a.media_span != nullptr && a.media_span[2 * t + 1] > 0) {  // the row's whole image
      lo = min(lo, a.media_span[2 * t]);
      hi = a.media_span[2 * t + 1] - 1;
    }
  } else {
    s = t / a.encoder_seq_len;
    q0 = s * a.encoder_seq_len;
    lo = 0;
    hi = a.encoder_seq_len - 1;
  }

  float q[PER], acc[PER];
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int d = lane * PER + i;
    q[i] =
        d < D ? to_f32(a.qkv[static_cast<int64_t>(t) * a.qkv_row + static_cast<int64_t>(h) * D + d])
              : 0.0f;
    acc[i] = 0.0f;
  }
  const int64_t kv_row = static_cast<int64_t>(Hkv) * D;
  const int32_t* table =
      kPaged ? a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq : nullptr;
  float m = -INFINITY, l = 0.0f;
  for (int j = lo; j <= hi; ++j) {
    const bf16 *k = nullptr, *v = nullptr;
    const uint8_t *k8 = nullptr, *v8 = nullptr;  // FP8 E4M3 cache
    if constexpr (kPaged) {
      const int64_t slot =
          static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size;
      const int64_t off = slot * kv_row + static_cast<int64_t>(kvh) * D;
      if (a.k_cache_fp8 != nullptr) {
        k8 = a.k_cache_fp8 + off;
        v8 = a.v_cache_fp8 + off;
      } else {
        k = a.k_cache + off;
        v = a.v_cache + off;
      }
    } else {
      k = a.qkv + static_cast<int64_t>(q0 + j) * a.qkv_row + static_cast<int64_t>(Hq + kvh) * D;
      v = k + kv_row;
    }
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int d = lane * PER + i;
      if (d < D) dot += q[i] * (k8 ? e4m3_to_f32(k8[d]) * a.k_scale : to_f32(k[d]));
    }
    const float score = warp_sum(dot) * a.scale;
    const float m_new = fmaxf(m, score);
    const float alpha = expf(m - m_new);  // 0 on the first key
    const float p = expf(score - m_new);
    l = l * alpha + p;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int d = lane * PER + i;
      acc[i] = acc[i] * alpha +
               (d < D ? p * (v8 ? e4m3_to_f32(v8[d]) * a.v_scale : to_f32(v[d])) : 0.0f);
    }
    m = m_new;
  }
  bf16* o = a.out + static_cast<int64_t>(t) * Hq * D + static_cast<int64_t>(h) * D;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int d = lane * PER + i;
    if (d < D) o[d] = to_bf16(acc[i] * inv);
  }
}

}  // namespace

void launch_rowwise_attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.num_tokens == 0) return;
  const int64_t items = static_cast<int64_t>(a.num_tokens) * a.num_q_heads;
  const int64_t blocks = (items + kWarps - 1) / kWarps;
  IRIS_CHECK(blocks <= 0x7fffffff) << "cuda rowwise attention: " << items << " rows";
  dispatch_head_dim(a.head_dim, "attention", [&](auto dp) {
    constexpr int DP = decltype(dp)::value;
    if (a.paged)
      rowwise_attention_kernel<DP, true>
          <<<static_cast<unsigned>(blocks), kWarps * 32, 0, stream>>>(a);
    else
      rowwise_attention_kernel<DP, false>
          <<<static_cast<unsigned>(blocks), kWarps * 32, 0, stream>>>(a);
    IRIS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace iris::cuda
