// Host launchers of the CUDA backend's kernels, one section per .cu file. Each takes raw
// device pointers with their shapes, enqueues on `stream` and never synchronises or
// allocates, so a step built from them can be captured as a CUDA graph. Tensor-level
// checks (dtypes, shapes) happen in cuda_backend.cpp before these are called.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/backend.h"
#include "engine/core/dtype.h"

namespace iris::cuda {

using bf16 = __nv_bfloat16;

// ---- convert.cu ----
// dst[i] = convert(src[i]) for i < n. src/dst dtypes: F32, F16, BF16 (any pair).
void launch_convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n,
                    cudaStream_t stream);
// cudaSuccess when this binary holds device code the current device can run (the build
// targets one architecture; another GPU gets cudaErrorNoKernelImageForDevice here).
cudaError_t probe_kernel_image();

// ---- norm.cu ----
// out = x / rms(x) * w. x, out: [rows, h]; w: [h].
void launch_rms_norm(const bf16* x, const bf16* w, float eps, int64_t rows, int64_t h, bf16* out,
                     cudaStream_t stream);
// residual += x (stored in bf16); out = rms_norm(residual) * w. residual, x, out: [rows, h].
void launch_add_rms_norm(bf16* residual, const bf16* x, const bf16* w, float eps, int64_t rows,
                         int64_t h, bf16* out, cudaStream_t stream);
// out = (x - mean) / sqrt(var + eps) * w + b. x, out: [rows, h]; w, b: [h]; b may be null.
void launch_layer_norm(const bf16* x, const bf16* w, const bf16* b, float eps, int64_t rows,
                       int64_t h, bf16* out, cudaStream_t stream);

// ---- embedding.cu ----
// Row copies of `row_bytes` bytes, any dtype, with r = idx[i] - index_offset.
// kGather: dst[i] = src[r]; kScatter: dst[r] = src[i]; i < n. Rows r outside [0, limit)
// (limit = src rows for a gather, dst rows for a scatter) are skipped, and a gather writes
// zeros there (what a vocabulary-parallel embedding needs for ids other ranks hold).
enum class RowCopy { kGather, kScatter };
void launch_copy_rows(const void* src, void* dst, const int32_t* idx, int64_t index_offset,
                      int64_t n, int64_t limit, int64_t row_bytes, RowCopy mode,
                      cudaStream_t stream);

// ---- activation.cu ----
// out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i]. gate_up: [rows, 2 inter].
void launch_silu_mul(const bf16* gate_up, int64_t rows, int64_t inter, bf16* out,
                     cudaStream_t stream);
// out[r, i] = gelu_tanh(gate_up[r, i]) * gate_up[r, inter + i]. gate_up: [rows, 2 inter].
void launch_gelu_tanh_mul(const bf16* gate_up, int64_t rows, int64_t inter, bf16* out,
                          cudaStream_t stream);
// In place over n elements of x (F32 when f32, else bf16): x *= s, or with softcap
// x = s * tanh(x / s).
void launch_scale_or_softcap(void* x, bool f32, int64_t n, float s, bool softcap,
                             cudaStream_t stream);
// x = act(x) in place, n elements.
void launch_activation(bf16* x, int64_t n, Activation act, cudaStream_t stream);
// a += b, n elements.
void launch_add(bf16* a, const bf16* b, int64_t n, cudaStream_t stream);
// out[r, c] += bias[c] for an F32 out [rows, cols] and a bf16 bias [cols] (GEMM epilogue
// for F32 outputs, which cuBLASLt's bias epilogue does not cover with a bf16 bias).
void launch_add_bias_f32(float* out, const bf16* bias, int64_t rows, int64_t cols,
                         cudaStream_t stream);

// ---- moe.cu ----
// out[t] = sum over j < k of weights[t, j] * y[slots[t, j]] (slots < 0 skipped), fp32
// accumulation in slot order, one bf16 rounding per output. y: [n, h]; slots, weights:
// [tokens, k]; out: [tokens, h].
void launch_moe_combine(const bf16* y, const int32_t* slots, const float* weights, int64_t tokens,
                        int64_t k, int64_t h, bf16* out, cudaStream_t stream);

// ---- rope_kv.cu ----
struct RopeKvArgs {
  bf16* qkv = nullptr;                    // [T, (Hq + 2 Hkv) * D], rows q | k | v, in place
  const int32_t* positions = nullptr;     // [T, position_rows]
  const float* inv_freq = nullptr;        // [position_rows, rotary_dim / 2]
  const bf16* q_norm = nullptr;           // [D] or null
  const bf16* k_norm = nullptr;           // [D] or null
  const int32_t* slot_mapping = nullptr;  // [T]; -1 = do not store
  bf16* k_cache = nullptr;                // [num_blocks, block_size, Hkv, D]
  bf16* v_cache = nullptr;                // [num_blocks, block_size, Hkv, D]
  // FP8 E4M3 cache (--kv-cache-dtype fp8), set instead of k_cache / v_cache: stores
  // e4m3(x / scale) (common.cuh). [num_blocks, block_size, Hkv, D] bytes each.
  uint8_t* k_cache_fp8 = nullptr;
  uint8_t* v_cache_fp8 = nullptr;
  float k_scale = 1.0f, v_scale = 1.0f;
  int64_t num_slots = 0;                  // num_blocks * block_size (slots past it are skipped)
  int num_tokens = 0;
  int num_q_heads = 0, num_kv_heads = 0, head_dim = 0;
  int rotary_half = 0;  // rotary_dim / 2
  int position_rows = 1;  // 3 for M-RoPE (temporal, height, width), else 1
  float norm_eps = 1e-6f;
};
void launch_qk_norm_rope_store_kv(const RopeKvArgs& a, cudaStream_t stream);

// ---- attention (attention_decode.cu, attention_prefill.cu, attention_rowwise.cu) ----
// One description for every attention kernel. Paged mode reads K/V through block tables;
// encoder mode (paged = false) reads them from the k and v parts of the qkv rows of each
// fixed-length sequence and is not causal.
struct AttentionArgs {
  const bf16* qkv = nullptr;  // [T, (Hq + 2 Hkv) * D]
  int64_t qkv_row = 0;        // elements per qkv row
  bf16* out = nullptr;        // [T, Hq * D]
  bool paged = true;
  // paged mode
  const bf16* k_cache = nullptr;          // [num_blocks, block_size, Hkv, D]
  const bf16* v_cache = nullptr;          // [num_blocks, block_size, Hkv, D]
  // FP8 E4M3 cache instead (both set, k_cache / v_cache null): element = code * scale.
  const uint8_t* k_cache_fp8 = nullptr;   // [num_blocks, block_size, Hkv, D]
  const uint8_t* v_cache_fp8 = nullptr;   // [num_blocks, block_size, Hkv, D]
  float k_scale = 1.0f, v_scale = 1.0f;
  const int32_t* query_start = nullptr;   // [S + 1]
  const int32_t* seq_lens = nullptr;      // [S]
  const int32_t* block_tables = nullptr;  // [S, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  int block_size = 0;
  int sliding_window = 0;  // 0 = off
  // [T, 2] or null: row t also sees positions [media_span[2t], media_span[2t+1]) when
  // media_span[2t+1] > 0 (Gemma 3's bidirectional images; the row-wise kernel only).
  const int32_t* media_span = nullptr;
  // encoder mode: S = T / seq_len sequences of exactly seq_len rows
  int encoder_seq_len = 0;
  // sizes
  int num_seqs = 0, num_tokens = 0, max_query_len = 0, max_seq_len = 0;
  int num_q_heads = 0, num_kv_heads = 0, head_dim = 0;
  float scale = 1.0f;
};

// Partial results of split-KV decoding, owned by the backend and sized once (see
// decode_workspace_floats) so that captured graphs keep valid pointers.
struct DecodeWorkspace {
  float* data = nullptr;
  int64_t floats = 0;
  int num_sms = 132;
};
int64_t decode_workspace_floats(int num_sms);

// Decode: every sequence has exactly one query row (max_query_len == 1).
void launch_paged_decode(const AttentionArgs& a, const DecodeWorkspace& ws, cudaStream_t stream);
// Tensor-core (mma.sync bf16) flash attention for prefill chunks mixed with decodes, and
// for encoder mode.
void launch_prefill_attention(const AttentionArgs& a, cudaStream_t stream);
// One warp per (query row, head): plain fp32, the simplest correct kernel. Used when the
// backend is asked for it (CudaBackendOptions::rowwise_attention) and by the tests as a
// second opinion on the tiled kernels.
void launch_rowwise_attention(const AttentionArgs& a, cudaStream_t stream);

}  // namespace iris::cuda
