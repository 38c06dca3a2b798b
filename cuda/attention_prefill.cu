// Flash-attention (FA2-style) for prefill chunks over the paged KV cache, and for the
// vision encoder's bidirectional attention, on tensor cores (mma.sync m16n8k16, bf16
// operands, fp32 accumulators).
//
// GQA packing: the q heads of one kv head are packed into the M dimension, so packed row
// p of sequence s is (token p / G, q head kvh * G + p % G) and each K/V tile loaded into
// shared memory serves all G heads. One CTA = (64 packed rows, sequence, kv head); 4 warps
// own 16 rows each. Per K/V tile of BN keys: S = Q K^T in registers, causal / sliding-
// window mask per row (each row has its own position seq_len - q_len + i), online softmax
// with row statistics reduced across the 4 lanes that share a row, P re-packed from the
// accumulator layout into the A-operand layout without leaving registers, O += P V.
// Ragged batches (prefill chunks next to decodes) need no host knowledge of per-sequence
// lengths: the grid covers max_query_len and CTAs past their sequence's rows exit at once.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16), g = lane / 4, t = lane % 4:
//   A (16x16, row-major): reg0 = A[g][2t..2t+1], reg1 = A[g+8][2t..], reg2 = A[g][2t+8..],
//                         reg3 = A[g+8][2t+8..]
//   B (16x8, "col"):      reg0 = B[2t..2t+1][g], reg1 = B[2t+8..2t+9][g]
//   C (16x8, fp32):       c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..2t+1]
// (lower k / column index in the low 16 bits of each register.)
//
// Expected: tensor-core bound for long prompts; shared-memory loads (scalar V fragment
// loads; no ldmatrix, no cp.async pipelining yet) rather than the mma units limit it, so
// well under the FA2/FA3 rate. Causal tiles above the diagonal and tiles left of the
// sliding window are skipped.
#include <algorithm>
#include <atomic>

#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace iris::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kBM = 64;

template <int DP>
struct PrefillTile {
  static constexpr int kBN = DP == 256 ? 32 : 64;  // keys per tile
  static constexpr int kStride = DP + 8;           // smem row stride (bf16), breaks bank conflicts
  static constexpr int kChunks = DP / 8;           // 16-byte chunks per row
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBM + 2 * kBN) * kStride * 2;
};

__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                          uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t ld32(const uint16_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <int DP, bool kPaged>
__global__ void __launch_bounds__(kThreads) prefill_attention_kernel(AttentionArgs a) {
  using T = PrefillTile<DP>;
  constexpr int BN = T::kBN, STRIDE = T::kStride, CH = T::kChunks;
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* Qs = smem;
  uint16_t* Ks = Qs + kBM * STRIDE;
  uint16_t* Vs = Ks + BN * STRIDE;

  const int tile = blockIdx.x, s = blockIdx.y, kvh = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gid = lane >> 2, tig = lane & 3;
  const int D = a.head_dim, Hq = a.num_q_heads, Hkv = a.num_kv_heads;
  const int group = Hq / Hkv;

  int q0, q_len, seq_len;
  if constexpr (kPaged) {
    q0 = a.query_start[s];
    q_len = a.query_start[s + 1] - q0;
    seq_len = a.seq_lens[s];
  } else {
    q_len = seq_len = a.encoder_seq_len;
    q0 = s * q_len;
  }
  const int rows_total = q_len * group;
  const int p0 = tile * kBM;
  if (p0 >= rows_total) return;
  const int causal_off = seq_len - q_len;  // query i sits at position causal_off + i
  const bf16* qkv = a.qkv;

  // Q tile (zero rows past the sequence and dims past head_dim).
  for (int c = tid; c < kBM * CH; c += kThreads) {
    const int r = c / CH, cc = c % CH;
    const int p = p0 + r;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (p < rows_total && cc * 8 < D) {
      const int i = p / group, h = kvh * group + p % group;
      v = *reinterpret_cast<const uint4*>(qkv + static_cast<int64_t>(q0 + i) * a.qkv_row +
                                          static_cast<int64_t>(h) * D + cc * 8);
    }
    *reinterpret_cast<uint4*>(Qs + r * STRIDE + cc * 8) = v;
  }

  // Keys this CTA needs: up to the last row's position (causal), from the first row's
  // window start.
  const int i_first = p0 / group;
  const int i_last = min(q_len - 1, (p0 + kBM - 1) / group);
  int kv_lo = 0, kv_hi = seq_len;
  if constexpr (kPaged) {
    kv_hi = causal_off + i_last + 1;
    if (a.sliding_window > 0) kv_lo = max(0, causal_off + i_first - a.sliding_window + 1);
  }

  // This thread's two rows (g and g + 8 of the warp's 16): position and window start.
  int row_pos[2], row_lo[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int p = p0 + warp * 16 + gid + 8 * r;
    if (p < rows_total) {
      if constexpr (kPaged) {
        row_pos[r] = causal_off + p / group;
        row_lo[r] = a.sliding_window > 0 ? max(0, row_pos[r] - a.sliding_window + 1) : 0;
      } else {
        row_pos[r] = seq_len - 1;
        row_lo[r] = 0;
      }
    } else {
      row_pos[r] = -1;  // masks every key
      row_lo[r] = 0;
    }
  }

  float o[DP / 8][4];
#pragma unroll
  for (int nd = 0; nd < DP / 8; ++nd)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[nd][e] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  // An FP8 cache's tiles hold the unscaled E4M3 values: k_scale joins the score scale and
  // v_scale the output normalisation (exact, where scaling each element would round).
  const bool fp8 = kPaged && a.k_cache_fp8 != nullptr;
  const float sl2 = a.scale * kLog2e * (fp8 ? a.k_scale : 1.0f);
  const int32_t* table =
      kPaged ? a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq : nullptr;
  const int64_t kv_row = static_cast<int64_t>(Hkv) * D;

  for (int n0 = kv_lo / BN * BN; n0 < kv_hi; n0 += BN) {
    __syncthreads();  // the previous tile's K/V are no longer read (and Q is visible)
    for (int c = tid; c < BN * CH; c += kThreads) {
      const int r = c / CH, cc = c % CH;
      const int key = n0 + r;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
      if (key < kv_hi && cc * 8 < D) {
        if constexpr (kPaged) {
          const int blk = table[key / a.block_size];
          const int64_t off =
              (static_cast<int64_t>(blk) * a.block_size + key % a.block_size) * kv_row +
              static_cast<int64_t>(kvh) * D + cc * 8;
          if (a.k_cache_fp8 != nullptr) {  // unscaled codes; the scales follow below
            kv = e4m3x8_to_bf16x8(a.k_cache_fp8 + off);
            vv = e4m3x8_to_bf16x8(a.v_cache_fp8 + off);
          } else {
            kv = *reinterpret_cast<const uint4*>(a.k_cache + off);
            vv = *reinterpret_cast<const uint4*>(a.v_cache + off);
          }
        } else {
          const int64_t off = static_cast<int64_t>(q0 + key) * a.qkv_row +
                              static_cast<int64_t>(Hq + kvh) * D + cc * 8;
          kv = *reinterpret_cast<const uint4*>(qkv + off);
          vv = *reinterpret_cast<const uint4*>(qkv + off + kv_row);
        }
      }
      *reinterpret_cast<uint4*>(Ks + r * STRIDE + cc * 8) = kv;
      *reinterpret_cast<uint4*>(Vs + r * STRIDE + cc * 8) = vv;
    }
    __syncthreads();

    // S = Q K^T for the warp's 16 rows x BN keys.
    float sacc[BN / 8][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) sacc[nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; ++kk) {
      if (kk * 16 >= D) break;  // padded head dims are zero
      const uint16_t* qa = Qs + (warp * 16 + gid) * STRIDE + kk * 16 + tig * 2;
      const uint32_t a0 = ld32(qa), a1 = ld32(qa + 8 * STRIDE), a2 = ld32(qa + 8),
                     a3 = ld32(qa + 8 * STRIDE + 8);
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
        const uint16_t* kb = Ks + (nt * 8 + gid) * STRIDE + kk * 16 + tig * 2;
        mma_16816(sacc[nt], a0, a1, a2, a3, ld32(kb), ld32(kb + 8));
      }
    }

    // Scale into the log2 domain, mask, online softmax per row.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = n0 + nt * 8 + tig * 2 + e;
          float x = sacc[nt][2 * r + e] * sl2;
          if (key > row_pos[r] || key < row_lo[r]) x = -INFINITY;
          sacc[nt][2 * r + e] = x;
          mx = fmaxf(mx, x);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(m[r] - m_use);
      m[r] = m_new;
      l[r] *= alpha;
#pragma unroll
      for (int nd = 0; nd < DP / 8; ++nd) {
        o[nd][2 * r] *= alpha;
        o[nd][2 * r + 1] *= alpha;
      }
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2f(sacc[nt][2 * r + e] - m_use);
          sacc[nt][2 * r + e] = p;
          l[r] += p;
        }
    }

    // O += P V. The accumulators of key columns 16j..16j+15 are exactly the A fragment
    // of k-step j.
#pragma unroll
    for (int j = 0; j < BN / 16; ++j) {
      const uint32_t a0 = pack_bf16x2(sacc[2 * j][0], sacc[2 * j][1]);
      const uint32_t a1 = pack_bf16x2(sacc[2 * j][2], sacc[2 * j][3]);
      const uint32_t a2 = pack_bf16x2(sacc[2 * j + 1][0], sacc[2 * j + 1][1]);
      const uint32_t a3 = pack_bf16x2(sacc[2 * j + 1][2], sacc[2 * j + 1][3]);
#pragma unroll
      for (int nd = 0; nd < DP / 8; ++nd) {
        if (nd * 8 >= D) break;
        const uint16_t* vb = Vs + (j * 16 + tig * 2) * STRIDE + nd * 8 + gid;
        const uint32_t b0 =
            static_cast<uint32_t>(vb[0]) | (static_cast<uint32_t>(vb[STRIDE]) << 16);
        const uint32_t b1 =
            static_cast<uint32_t>(vb[8 * STRIDE]) | (static_cast<uint32_t>(vb[9 * STRIDE]) << 16);
        mma_16816(o[nd], a0, a1, a2, a3, b0, b1);
      }
    }
  }

  // Row sums live spread over the 4 lanes of a quad.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int p = p0 + warp * 16 + gid + 8 * r;
    if (p >= rows_total) continue;
    const int i = p / group, h = kvh * group + p % group;
    bf16* orow = a.out + static_cast<int64_t>(q0 + i) * Hq * D + static_cast<int64_t>(h) * D;
    const float inv = (l[r] > 0.0f ? 1.0f / l[r] : 0.0f) * (fp8 ? a.v_scale : 1.0f);
#pragma unroll
    for (int nd = 0; nd < DP / 8; ++nd) {
      const int d = nd * 8 + tig * 2;
      if (d < D)
        *reinterpret_cast<__nv_bfloat162*>(orow + d) =
            __floats2bfloat162_rn(o[nd][2 * r] * inv, o[nd][2 * r + 1] * inv);
    }
  }
}

template <int DP, bool kPaged>
void launch_prefill(const AttentionArgs& a, int num_seqs, int max_q_len, cudaStream_t stream) {
  using T = PrefillTile<DP>;
  auto kernel = prefill_attention_kernel<DP, kPaged>;
  // Above 48 KiB of dynamic shared memory a kernel must opt in, once per device.
  static std::atomic<uint64_t> opted_in{0};
  int device = 0;
  IRIS_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t bit = uint64_t{1} << (device & 63);
  if (!(opted_in.load(std::memory_order_relaxed) & bit)) {
    IRIS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(T::kSmemBytes)));
    opted_in.fetch_or(bit);
  }
  const int group = a.num_q_heads / a.num_kv_heads;
  const int64_t tiles = (static_cast<int64_t>(max_q_len) * group + kBM - 1) / kBM;
  IRIS_CHECK(tiles <= 0x7fffffff && num_seqs <= 65535 && a.num_kv_heads <= 65535)
      << "cuda attention: grid of " << tiles << " x " << num_seqs << " x " << a.num_kv_heads;
  const dim3 grid(static_cast<unsigned>(tiles), num_seqs, a.num_kv_heads);
  kernel<<<grid, kThreads, T::kSmemBytes, stream>>>(a);
  IRIS_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_prefill_attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.num_tokens == 0) return;
  int num_seqs = a.num_seqs, max_q_len = a.max_query_len;
  if (!a.paged) {
    num_seqs = a.num_tokens / a.encoder_seq_len;
    max_q_len = a.encoder_seq_len;
  }
  if (num_seqs == 0 || max_q_len == 0) return;
  dispatch_head_dim(a.head_dim, "attention", [&](auto dp) {
    constexpr int DP = decltype(dp)::value;
    if (a.paged)
      launch_prefill<DP, true>(a, num_seqs, max_q_len, stream);
    else
      launch_prefill<DP, false>(a, num_seqs, max_q_len, stream);
  });
}

}  // namespace iris::cuda
