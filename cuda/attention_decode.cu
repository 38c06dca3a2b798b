// Paged decode attention (every sequence has one query row), flash-decoding style.
//
// One CTA = (KV split, kv head [x q-head chunk], sequence). It reads each K/V row of its
// key range once and uses it for all G q heads that share the kv head (GQA), so KV traffic
// is independent of the GQA ratio. Threads form a TY x TX grid: TX = D/8 lanes cover one
// key row with 16-byte loads (coalesced within the row), TY rows are in flight at once.
// Keys go in tiles of 64: scores (fp32, log2 domain) -> per-head online-softmax update in
// shared memory -> P.V accumulated in registers (per thread: G heads x 8 dims).
//
// Long contexts with few sequences are split along the keys so that the grid has about
// two CTAs per SM; each split writes an unnormalised partial (acc, running max, sum) to the
// backend's fixed workspace and a combine kernel merges them. With enough sequences x kv
// heads the split count is 1 and the kernel writes the output directly.
//
// Expected: memory-bound on K/V reads (D=128: 512 bytes per key per kv head), so a step
// costs about (bytes of K/V in the batch) / HBM bandwidth plus ~2 launches; the cross-lane
// dot-product reductions stay under the bandwidth budget up to G = 8.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace iris::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 64;     // keys per tile
constexpr int kMaxGroup = 8;  // q heads per CTA; larger GQA groups use several chunks
constexpr int kMaxSplits = 128;
constexpr int kRowFloats = 256 + 2;  // workspace floats per (seq, q head, split): acc + (m, l)

template <int DP, int G>
__global__ void __launch_bounds__(kThreads)
    paged_decode_kernel(AttentionArgs a, float* __restrict__ part, int splits, int head_chunks) {
  constexpr int TX = DP / 8;
  constexpr int TY = kThreads / TX;
  constexpr int KPT = kTile / TY;  // keys per thread per tile
  __shared__ float s_p[G][kTile];
  __shared__ float s_m[G], s_l[G], s_alpha[G];
  __shared__ float s_red[TY][G][DP];

  const int split = blockIdx.x;
  const int kvh = blockIdx.y / head_chunks, chunk = blockIdx.y % head_chunks;
  const int s = blockIdx.z;
  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  const int warp = tid >> 5, lane = tid & 31;
  const int D = a.head_dim, Hq = a.num_q_heads, Hkv = a.num_kv_heads;
  const int group = Hq / Hkv;
  const int h0 = kvh * group + chunk * G;  // first q head of this CTA
  const int nh = min(G, group - chunk * G);

  const int q_row = a.query_start[s];
  if (a.query_start[s + 1] - q_row != 1) return;
  const int seq_len = a.seq_lens[s];
  const int pos = seq_len - 1;
  const int lo = a.sliding_window > 0 ? max(0, pos - a.sliding_window + 1) : 0;
  const int per_split = (seq_len - lo + splits - 1) / splits;
  const int k_begin = lo + split * per_split;
  const int k_end = min(seq_len, k_begin + per_split);

  const bool lane_ok = tx * 8 < D;
  const float qscale = a.scale * kLog2e;
  float q[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    if (h < nh && lane_ok) {
      unpack8(*reinterpret_cast<const uint4*>(a.qkv + q_row * a.qkv_row +
                                              static_cast<int64_t>(h0 + h) * D + tx * 8),
              q[h]);
#pragma unroll
      for (int i = 0; i < 8; ++i) q[h][i] *= qscale;
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) q[h][i] = 0.0f;
    }
  }
  if (tid < G) {
    s_m[tid] = -INFINITY;
    s_l[tid] = 0.0f;
  }
  float acc[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h)
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[h][i] = 0.0f;
  __syncthreads();

  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq;
  const int bs = a.block_size;
  const int64_t kv_row = static_cast<int64_t>(Hkv) * D;
  auto row_offset = [&](int j) -> int64_t {
    const int blk = table[j / bs];
    return (static_cast<int64_t>(blk) * bs + j % bs) * kv_row + static_cast<int64_t>(kvh) * D +
           tx * 8;
  };

  for (int t0 = k_begin; t0 < k_end; t0 += kTile) {
    // Scores of this tile: dot products split over the TX lanes of a key row.
#pragma unroll
    for (int kk = 0; kk < KPT; ++kk) {
      const int jl = ty + kk * TY;
      const int j = t0 + jl;
      float sc[G];
#pragma unroll
      for (int h = 0; h < G; ++h) sc[h] = 0.0f;
      if (j < k_end && lane_ok) {
        float k[8];
        if (a.k_cache_fp8 != nullptr)
          unpack8_e4m3(a.k_cache_fp8 + row_offset(j), a.k_scale, k);
        else
          unpack8(*reinterpret_cast<const uint4*>(a.k_cache + row_offset(j)), k);
#pragma unroll
        for (int h = 0; h < G; ++h)
#pragma unroll
          for (int i = 0; i < 8; ++i) sc[h] += q[h][i] * k[i];
      }
#pragma unroll
      for (int h = 0; h < G; ++h)
#pragma unroll
        for (int o = TX / 2; o > 0; o >>= 1) sc[h] += __shfl_xor_sync(0xffffffffu, sc[h], o);
      if (tx == 0) {
#pragma unroll
        for (int h = 0; h < G; ++h) s_p[h][jl] = j < k_end ? sc[h] : -INFINITY;
      }
    }
    __syncthreads();
    // Online softmax per head: a warp per head, two scores per lane.
    for (int h = warp; h < G; h += kThreads / 32) {
      const float v0 = s_p[h][lane], v1 = s_p[h][lane + 32];
      const float m_old = s_m[h];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(v0, v1)));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float p0 = exp2f(v0 - m_use), p1 = exp2f(v1 - m_use);
      s_p[h][lane] = p0;
      s_p[h][lane + 32] = p1;
      const float sum = warp_sum(p0 + p1);
      if (lane == 0) {
        const float alpha = exp2f(m_old - m_use);
        s_alpha[h] = alpha;
        s_l[h] = s_l[h] * alpha + sum;
        s_m[h] = m_new;
      }
    }
    __syncthreads();
    // P.V: rescale the running accumulators, then add this tile's keys.
#pragma unroll
    for (int h = 0; h < G; ++h) {
      const float alpha = s_alpha[h];
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[h][i] *= alpha;
    }
#pragma unroll
    for (int kk = 0; kk < KPT; ++kk) {
      const int jl = ty + kk * TY;
      const int j = t0 + jl;
      if (j < k_end && lane_ok) {
        float v[8];
        if (a.v_cache_fp8 != nullptr)
          unpack8_e4m3(a.v_cache_fp8 + row_offset(j), a.v_scale, v);
        else
          unpack8(*reinterpret_cast<const uint4*>(a.v_cache + row_offset(j)), v);
#pragma unroll
        for (int h = 0; h < G; ++h) {
          const float p = s_p[h][jl];
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[h][i] += p * v[i];
        }
      }
    }
    __syncthreads();  // s_p and s_alpha are rewritten by the next tile
  }

  // Reduce the TY partial accumulators of each (head, dim).
#pragma unroll
  for (int h = 0; h < G; ++h)
#pragma unroll
    for (int i = 0; i < 8; ++i) s_red[ty][h][tx * 8 + i] = acc[h][i];
  __syncthreads();
  const int64_t out_row = static_cast<int64_t>(q_row) * Hq * D;
  for (int idx = tid; idx < G * DP; idx += kThreads) {
    const int h = idx / DP, d = idx % DP;
    if (h >= nh || d >= D) continue;
    float sum = 0.0f;
#pragma unroll
    for (int y = 0; y < TY; ++y) sum += s_red[y][h][d];
    const int hq = h0 + h;
    if (splits == 1) {
      const float l = s_l[h];
      a.out[out_row + static_cast<int64_t>(hq) * D + d] = to_bf16(l > 0.0f ? sum / l : 0.0f);
    } else {
      float* row = part + ((static_cast<int64_t>(s) * Hq + hq) * splits + split) * kRowFloats;
      row[d] = sum;
      if (d == 0) {
        row[256] = s_m[h];
        row[257] = s_l[h];
      }
    }
  }
}

// out = sum_i 2^(m_i - M) acc_i / sum_i 2^(m_i - M) l_i over the splits of one (seq, head).
__global__ void decode_combine_kernel(AttentionArgs a, const float* __restrict__ part, int splits) {
  const int hq = blockIdx.x, s = blockIdx.y;
  const int q_row = a.query_start[s];
  if (a.query_start[s + 1] - q_row != 1) return;
  const int D = a.head_dim, Hq = a.num_q_heads;
  const float* base = part + (static_cast<int64_t>(s) * Hq + hq) * splits * kRowFloats;
  float M = -INFINITY;
  for (int i = 0; i < splits; ++i) M = fmaxf(M, base[i * kRowFloats + 256]);
  float L = 0.0f;
  for (int i = 0; i < splits; ++i) {
    const float m = base[i * kRowFloats + 256];
    if (m != -INFINITY) L += exp2f(m - M) * base[i * kRowFloats + 257];
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int i = 0; i < splits; ++i) {
      const float m = base[i * kRowFloats + 256];
      if (m != -INFINITY) acc += exp2f(m - M) * base[i * kRowFloats + d];
    }
    a.out[static_cast<int64_t>(q_row) * Hq * D + static_cast<int64_t>(hq) * D + d] =
        to_bf16(L > 0.0f ? acc / L : 0.0f);
  }
}

template <int DP, int G>
void launch_decode(const AttentionArgs& a, float* part, int splits, int head_chunks,
                   cudaStream_t stream) {
  const dim3 grid(splits, a.num_kv_heads * head_chunks, a.num_seqs);
  paged_decode_kernel<DP, G><<<grid, kThreads, 0, stream>>>(a, part, splits, head_chunks);
  IRIS_CUDA_CHECK_LAUNCH();
}

template <int DP>
void launch_decode_group(const AttentionArgs& a, int g, float* part, int splits, int chunks,
                         cudaStream_t stream) {
  switch (g) {
    case 1:
      return launch_decode<DP, 1>(a, part, splits, chunks, stream);
    case 2:
      return launch_decode<DP, 2>(a, part, splits, chunks, stream);
    case 4:
      return launch_decode<DP, 4>(a, part, splits, chunks, stream);
    default:
      return launch_decode<DP, 8>(a, part, splits, chunks, stream);
  }
}

}  // namespace

int64_t decode_workspace_floats(int num_sms) {
  // Splits are only used while seqs x kv heads x chunks (the base grid) is below the
  // target of 2 CTAs per SM, and splits x base < 2 x target; each CTA writes at most
  // kMaxGroup rows. So this bound holds for every batch.
  const int64_t target = 2 * static_cast<int64_t>(num_sms);
  return 2 * target * kMaxGroup * kRowFloats;
}

void launch_paged_decode(const AttentionArgs& a, const DecodeWorkspace& ws, cudaStream_t stream) {
  if (a.num_seqs == 0) return;
  const int group = a.num_q_heads / a.num_kv_heads;
  // q heads per CTA: the group rounded up to a power of two, at most kMaxGroup.
  int g = 1;
  while (g < group && g < kMaxGroup) g *= 2;
  const int chunks = (group + g - 1) / g;
  IRIS_CHECK(a.num_seqs <= 65535 && static_cast<int64_t>(a.num_kv_heads) * chunks <= 65535)
      << "cuda decode attention: grid of " << a.num_seqs << " sequences x "
      << a.num_kv_heads * chunks << " head chunks is too large";

  const int64_t base = static_cast<int64_t>(a.num_seqs) * a.num_kv_heads * chunks;
  const int64_t target = 2 * static_cast<int64_t>(ws.num_sms);
  int64_t splits = 1;
  if (base < target) {
    const int64_t keys =
        a.sliding_window > 0 ? std::min(a.max_seq_len, a.sliding_window) : a.max_seq_len;
    splits =
        std::min<int64_t>({(target + base - 1) / base, (keys + kTile - 1) / kTile, kMaxSplits});
    splits = std::max<int64_t>(splits, 1);
    const int64_t need = static_cast<int64_t>(a.num_seqs) * a.num_q_heads * splits * kRowFloats;
    IRIS_CHECK(need <= ws.floats) << "cuda decode attention: workspace of " << ws.floats
                                  << " floats is smaller than the " << need << " needed";
  }
  dispatch_head_dim(a.head_dim, "decode attention", [&](auto dp) {
    constexpr int DP = decltype(dp)::value;
    launch_decode_group<DP>(a, g, ws.data, static_cast<int>(splits), chunks, stream);
  });
  if (splits > 1) {
    decode_combine_kernel<<<dim3(a.num_q_heads, a.num_seqs), 128, 0, stream>>>(
        a, ws.data, static_cast<int>(splits));
    IRIS_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace iris::cuda
