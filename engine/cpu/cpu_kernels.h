// Kernels of the CPU reference backend shared between its translation units. fp32 only;
// loops over tokens or heads are split across the backend's thread pool.
#pragma once

#include "engine/backend.h"
#include "engine/cpu/thread_pool.h"

namespace iris::cpu {

void rms_norm_row(const float* x, const float* w, float eps, int64_t n, float* out);

void qk_norm_rope_store_kv(ThreadPool& pool, Tensor& qkv, const Tensor& positions, const Tensor& inv_freq,
                           const Tensor& q_norm, const Tensor& k_norm, float norm_eps,
                           const AttentionShape& shape, const AttentionMetadata& meta,
                           KvLayer& kv);

void paged_attention(ThreadPool& pool, const Tensor& qkv, const KvLayer& kv, const AttentionShape& shape,
                     const AttentionMetadata& meta, float scale, int sliding_window,
                     Tensor& out);

void encoder_attention(ThreadPool& pool, const Tensor& qkv, const AttentionShape& shape,
                       int seq_len, float scale, Tensor& out);

}  // namespace iris::cpu
