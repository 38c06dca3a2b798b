// CPU attention over the paged KV cache: per-head q/k RMSNorm + rotary embedding + K/V
// store, and causal (optionally sliding-window) attention reading K/V through each
// sequence's block table, widened to a token's whole image where metadata.media_span says so
// (Gemma 3). Mixed prefill chunks and decodes run in one call. The cache holds fp32 or, under
// --kv-cache-dtype fp8, E4M3 bytes (quantized on write with the layer's scale, dequantized on
// read) — the same bytes the CUDA kernels write, so both backends attend over equal values.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <cblas.h>

#include "engine/core/check.h"
#include "engine/core/fp8.h"
#include "engine/cpu/cpu_kernels.h"

namespace iris::cpu {

void qk_norm_rope_store_kv(ThreadPool& pool, Tensor& qkv, const Tensor& positions, const Tensor& inv_freq,
                           const Tensor& q_norm, const Tensor& k_norm, float norm_eps,
                           const AttentionShape& shape, const AttentionMetadata& meta,
                           KvLayer& kv) {
  const int64_t num_tokens = qkv.dim(0);
  const int hd = shape.head_dim;
  const int nq = shape.num_q_heads, nk = shape.num_kv_heads;
  // M-RoPE passes P position rows per token and P frequency rows (engine/backend.h).
  const int rows = inv_freq.shape.ndim == 2 ? static_cast<int>(inv_freq.dim(0)) : 1;
  const int half = static_cast<int>(inv_freq.numel()) / rows;
  const int64_t row = shape.qkv_dim();
  IRIS_CHECK(qkv.dim(1) == row) << "qkv " << qkv.shape.str() << " vs qkv_dim " << row;
  IRIS_CHECK(2 * half <= hd) << "rotary dim " << 2 * half << " > head_dim " << hd;
  IRIS_CHECK(positions.numel() >= num_tokens * rows)
      << "positions " << positions.shape.str() << " for " << num_tokens << " tokens x " << rows
      << " position rows";
  const int64_t block_size = kv.k.dim(1);
  const int64_t num_slots = kv.k.dim(0) * block_size;
  const bool fp8 = kv.k.dtype == DType::F8_E4M3;
  IRIS_CHECK((fp8 || kv.k.dtype == DType::F32) && kv.v.dtype == kv.k.dtype)
      << "CPU KV cache must be F32 or F8_E4M3, got " << dtype_name(kv.k.dtype) << " / "
      << dtype_name(kv.v.dtype);
  IRIS_CHECK(!fp8 || (std::isfinite(kv.k_scale) && kv.k_scale > 0 && std::isfinite(kv.v_scale) &&
                      kv.v_scale > 0))
      << "FP8 KV scales must be finite and positive, got k " << kv.k_scale << " v " << kv.v_scale;
  const int32_t* pos = positions.ptr<int32_t>();
  const int32_t* slots = meta.slot_mapping.ptr<int32_t>();
  const float* freq = inv_freq.ptr<float>();
  for (int64_t t = 0; t < num_tokens; ++t)
    IRIS_CHECK(slots[t] < num_slots) << "slot " << slots[t] << " outside the KV cache";

  pool.parallel_for(num_tokens, [&](int64_t t_begin, int64_t t_end) {
  std::vector<float> cs(2 * half);
  for (int64_t t = t_begin; t < t_end; ++t) {
    float* r = qkv.ptr<float>() + t * row;
    for (int i = 0; i < half; ++i) {
      // Summed in order over the position rows; with M-RoPE's zero-padded frequency rows only
      // one term is non-zero, so the angle is exactly position * inv_freq as transformers has it.
      float angle = 0.0f;
      for (int j = 0; j < rows; ++j)
        angle += static_cast<float>(pos[t * rows + j]) * freq[j * half + i];
      cs[i] = std::cos(angle);
      cs[half + i] = std::sin(angle);
    }
    for (int h = 0; h < nq + nk; ++h) {
      float* x = r + static_cast<int64_t>(h) * hd;
      const Tensor& norm = h < nq ? q_norm : k_norm;
      if (norm.defined()) rms_norm_row(x, norm.ptr<float>(), norm_eps, hd, x);
      for (int i = 0; i < half; ++i) {
        const float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * cs[i] - x2 * cs[half + i];
        x[i + half] = x2 * cs[i] + x1 * cs[half + i];
      }
    }
    const int32_t slot = slots[t];
    if (slot < 0) continue;
    const int64_t kv_row = static_cast<int64_t>(nk) * hd;
    const float* k_src = r + static_cast<int64_t>(nq) * hd;
    const float* v_src = r + static_cast<int64_t>(nq + nk) * hd;
    if (fp8) {
      // x / scale in fp32, then e4m3 (nearest even, saturating), as the CUDA cache write does.
      uint8_t* k_dst = kv.k.ptr<uint8_t>() + slot * kv_row;
      uint8_t* v_dst = kv.v.ptr<uint8_t>() + slot * kv_row;
      for (int64_t i = 0; i < kv_row; ++i) {
        k_dst[i] = f32_to_e4m3(k_src[i] / kv.k_scale);
        v_dst[i] = f32_to_e4m3(v_src[i] / kv.v_scale);
      }
    } else {
      std::memcpy(kv.k.ptr<float>() + slot * kv_row, k_src, kv_row * sizeof(float));
      std::memcpy(kv.v.ptr<float>() + slot * kv_row, v_src, kv_row * sizeof(float));
    }
  }
  });
}

void paged_attention(ThreadPool& pool, const Tensor& qkv, const KvLayer& kv, const AttentionShape& shape,
                     const AttentionMetadata& meta, float scale, int sliding_window,
                     Tensor& out) {
  const int hd = shape.head_dim;
  const int nq = shape.num_q_heads, nk = shape.num_kv_heads;
  const int group = nq / nk;
  const int64_t row = shape.qkv_dim();
  const int64_t block_size = kv.k.dim(1);
  const int64_t kv_row = static_cast<int64_t>(nk) * hd;
  const int32_t* qstart = meta.query_start.ptr<int32_t>();
  const int32_t* seq_lens = meta.seq_lens.ptr<int32_t>();
  const int32_t* tables = meta.block_tables.ptr<int32_t>();
  const int max_blocks = meta.max_blocks_per_seq;
  const bool fp8 = kv.k.dtype == DType::F8_E4M3;
  IRIS_CHECK((fp8 || kv.k.dtype == DType::F32) && kv.v.dtype == kv.k.dtype)
      << "CPU KV cache must be F32 or F8_E4M3, got " << dtype_name(kv.k.dtype);
  const float* e4m3 = e4m3_table();
  // Row `slot` of K or V for KV head kvh as fp32: the cache itself, or its E4M3 bytes
  // dequantized (code value * scale) into `buf`.
  auto kv_row_f32 = [&](const Tensor& cache, float cache_scale, int64_t slot, int kvh,
                        float* buf) -> const float* {
    const int64_t off = slot * kv_row + static_cast<int64_t>(kvh) * hd;
    if (!fp8) return cache.ptr<float>() + off;
    const uint8_t* c = cache.ptr<uint8_t>() + off;
    for (int d = 0; d < hd; ++d) buf[d] = e4m3[c[d]] * cache_scale;
    return buf;
  };

  // Work items are (token, head) pairs; find each token's sequence by a flat map built
  // once here (O(T)).
  const int num_tokens = meta.num_tokens;
  std::vector<int32_t> seq_of(num_tokens);
  const int64_t num_blocks = kv.k.dim(0);
  const int32_t* spans = meta.media_span.defined() ? meta.media_span.ptr<int32_t>() : nullptr;
  for (int s = 0; s < meta.num_seqs; ++s) {
    IRIS_CHECK(qstart[s] <= qstart[s + 1] && qstart[s + 1] <= num_tokens &&
               qstart[s + 1] - qstart[s] <= seq_lens[s] &&
               seq_lens[s] <= static_cast<int64_t>(max_blocks) * block_size)
        << "attention metadata of sequence " << s << " is inconsistent";
    for (int t = qstart[s]; t < qstart[s + 1]; ++t) {
      seq_of[t] = s;
      if (!spans || spans[2 * t + 1] <= 0) continue;
      const int pos = seq_lens[s] - (qstart[s + 1] - qstart[s]) + (t - qstart[s]);
      IRIS_CHECK(spans[2 * t] >= 0 && spans[2 * t] <= pos && pos < spans[2 * t + 1] &&
                 spans[2 * t + 1] <= seq_lens[s])
          << "media span [" << spans[2 * t] << ", " << spans[2 * t + 1] << ") of the token at "
          << pos << " is not within its sequence's " << seq_lens[s] << " positions";
    }
    for (int b = 0; b < (seq_lens[s] + block_size - 1) / block_size; ++b) {
      const int32_t blk = tables[static_cast<int64_t>(s) * max_blocks + b];
      IRIS_CHECK(blk >= 0 && blk < num_blocks) << "block " << blk << " outside the KV cache";
    }
  }

  // Causal prefill: token t costs ~t. Items are visited front and back alternately (tokens
  // 0, T-1, 1, T-2, …) so every contiguous range the pool hands a thread carries about the
  // same work; each (token, head) is computed exactly as before, only the split changes.
  pool.parallel_for(static_cast<int64_t>(num_tokens) * nq, [&](int64_t i_begin, int64_t i_end) {
    std::vector<float> scores;
    std::vector<float> acc(hd);
    std::vector<float> row_buf(hd);
    for (int64_t item = i_begin; item < i_end; ++item) {
      const int u = static_cast<int>(item / nq);
      const int t = (u % 2 == 0) ? u / 2 : num_tokens - 1 - u / 2;
      const int h = static_cast<int>(item % nq);
      const int s = seq_of[t];
      const int q_len = qstart[s + 1] - qstart[s];
      const int pos = seq_lens[s] - q_len + (t - qstart[s]);
      int lo = sliding_window > 0 ? std::max(0, pos - sliding_window + 1) : 0;
      int hi = pos;  // last key position (inclusive)
      if (spans && spans[2 * t + 1] > 0) {  // the token's own image, both directions
        lo = std::min(lo, spans[2 * t]);
        hi = spans[2 * t + 1] - 1;
      }
      const float* q = qkv.ptr<float>() + t * row + static_cast<int64_t>(h) * hd;
      const int32_t* table = tables + static_cast<int64_t>(s) * max_blocks;
      const int kvh = h / group;
      scores.resize(hi - lo + 1);
      float mx = -INFINITY;
      for (int j = lo; j <= hi; ++j) {
        const int64_t slot = static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
        const float* k = kv_row_f32(kv.k, kv.k_scale, slot, kvh, row_buf.data());
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot += q[d] * k[d];
        scores[j - lo] = dot * scale;
        mx = std::max(mx, scores[j - lo]);
      }
      float sum = 0.0f;
      for (float& v : scores) {
        v = std::exp(v - mx);
        sum += v;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int j = lo; j <= hi; ++j) {
        const int64_t slot = static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
        const float* v = kv_row_f32(kv.v, kv.v_scale, slot, kvh, row_buf.data());
        const float p = scores[j - lo];
        for (int d = 0; d < hd; ++d) acc[d] += p * v[d];
      }
      float* o = out.ptr<float>() + static_cast<int64_t>(t) * nq * hd + static_cast<int64_t>(h) * hd;
      const float inv = 1.0f / sum;
      for (int d = 0; d < hd; ++d) o[d] = acc[d] * inv;
    }
  });
}

// Per (image, head): S = scale * Q K^T and O = softmax(S) V as two OpenBLAS GEMMs over the
// strided q/k/v columns of the fused rows (OpenBLAS threads each GEMM), the row softmax on
// the pool. Every row attends to its whole image, so there is no mask.
void encoder_attention(ThreadPool& pool, const Tensor& qkv, const AttentionShape& shape,
                       int seq_len, float scale, Tensor& out) {
  const int hd = shape.head_dim;
  const int nq = shape.num_q_heads, nk = shape.num_kv_heads;
  const int group = nq / nk;
  const int64_t row = shape.qkv_dim();
  const int64_t num_tokens = qkv.dim(0);
  IRIS_CHECK(seq_len > 0 && num_tokens % seq_len == 0)
      << "encoder_attention: " << num_tokens << " rows are not sequences of " << seq_len;
  IRIS_CHECK(qkv.dim(1) == row && out.dim(0) == num_tokens && out.dim(1) == shape.q_dim())
      << "encoder_attention qkv " << qkv.shape.str() << " out " << out.shape.str();
  const float* base = qkv.ptr<float>();
  const int64_t ldo = static_cast<int64_t>(nq) * hd;
  std::vector<float> scores(static_cast<size_t>(seq_len) * seq_len);
  for (int64_t first = 0; first < num_tokens; first += seq_len) {
    for (int h = 0; h < nq; ++h) {
      const int kvh = h / group;
      const float* q = base + first * row + static_cast<int64_t>(h) * hd;
      const float* k = base + first * row + static_cast<int64_t>(nq + kvh) * hd;
      const float* v = base + first * row + static_cast<int64_t>(nq + nk + kvh) * hd;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, seq_len, seq_len, hd, scale, q, row, k,
                  row, 0.0f, scores.data(), seq_len);
      pool.parallel_for(seq_len, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          float* srow = scores.data() + r * seq_len;
          const float mx = *std::max_element(srow, srow + seq_len);
          float sum = 0.0f;
          for (int j = 0; j < seq_len; ++j) {
            srow[j] = std::exp(srow[j] - mx);
            sum += srow[j];
          }
          const float inv = 1.0f / sum;
          for (int j = 0; j < seq_len; ++j) srow[j] *= inv;
        }
      });
      float* o = out.ptr<float>() + first * ldo + static_cast<int64_t>(h) * hd;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, seq_len, hd, seq_len, 1.0f,
                  scores.data(), seq_len, v, row, 0.0f, o, ldo);
    }
  }
}

}  // namespace iris::cpu
