// Weight and KV-cache bytes per rank from config.json (see memory_plan.h).
#include "engine/memory_plan.h"

#include <algorithm>
#include <cstdio>

#include "engine/core/check.h"

namespace iris {

size_t MemoryPlan::total_weight_bytes() const {
  size_t t = 0;
  for (const RankMemory& r : ranks) t += r.weight_bytes;
  return t;
}

MemoryPlan plan_memory(const ModelConfig& c, DType dtype, int world, int block_size,
                       DType weight_dtype, std::optional<DType> kv_dtype, bool expert_parallel) {
  MemoryPlan plan;
  plan.dtype = dtype;
  plan.block_size = block_size;
  // The same divisibility the model loader requires, so a plan is never made for a split
  // that cannot load.
  IRIS_CHECK(world >= 1 && c.num_heads % world == 0)
      << "num_attention_heads " << c.num_heads << " not divisible by " << world << " ranks";
  const int num_dense = c.moe ? static_cast<int>(std::count(c.moe->sparse_layer.begin(),
                                                              c.moe->sparse_layer.end(), 0))
                             : c.num_layers;
  IRIS_CHECK(num_dense == 0 || c.intermediate_size % world == 0)
      << "intermediate_size not divisible by " << world << " ranks";
  const bool ep = c.moe && expert_parallel && world > 1;
  if (c.moe && !ep) {
    IRIS_CHECK(c.moe->expert_intermediate_size % world == 0)
        << "expert intermediate size " << c.moe->expert_intermediate_size << " not divisible by "
        << world << " ranks (--enable-expert-parallel keeps experts whole)";
  }
  if (c.moe && c.moe->shared_expert_intermediate_size > 0) {
    IRIS_CHECK(c.moe->shared_expert_intermediate_size % world == 0)
        << "shared_expert_intermediate_size not divisible by " << world << " ranks";
  }
  IRIS_CHECK(c.num_kv_heads < world || c.num_kv_heads % world == 0)
      << "num_key_value_heads " << c.num_kv_heads << " not divisible by " << world;
  const size_t es = dtype_size(dtype);
  const int64_t h = c.hidden_size, d = c.head_dim;
  const int64_t q = static_cast<int64_t>(c.num_heads / world) * d;
  const int64_t kv = static_cast<int64_t>(c.num_kv_heads >= world ? c.num_kv_heads / world : 1) * d;
  const int64_t inter = c.intermediate_size / world;
  const int64_t per_rank_vocab = (c.vocab_size + world - 1) / world;
  for (int r = 0; r < world; ++r) {
    const int64_t first = std::min<int64_t>(c.vocab_size, r * per_rank_vocab);
    const int64_t vocab = std::min<int64_t>(c.vocab_size, first + per_rank_vocab) - first;
    int64_t n = h;                                                          // final norm
    int64_t matrices = vocab * h * (c.tie_word_embeddings ? 1 : 2);          // embed (+ lm_head)
    int64_t layer = 2 * h;                                    // input / post-attention norms
    matrices += ((q + 2 * kv) * h + h * q) * c.num_layers + (2 * inter * h + h * inter) * num_dense;
    if (c.attention_bias) layer += q + 2 * kv;
    if (c.qk_norm) layer += 2 * d;
    if (c.gemma) layer += 2 * h;                                 // pre/post-feedforward norms
    if (c.o_proj_bias && r == 0) layer += h;
    n += layer * c.num_layers;
    if (c.mlp_bias) n += (2 * inter + (r == 0 ? h : 0)) * num_dense;
    if (c.moe) {  // router in the compute dtype, experts in the weight dtype (MoeBlock)
      const MoeConfig& m = *c.moe;
      const int64_t e = m.num_experts, ifull = m.expert_intermediate_size;
      const int64_t sh = m.shared_expert_intermediate_size;
      const int64_t sparse_layers = c.num_layers - num_dense;
      n += (e + (sh > 0 ? 1 : 0)) * h * sparse_layers;  // router (+ shared expert gate)
      const int64_t local = ep ? (r + 1) * e / world - r * e / world : e;
      const int64_t expert_inter = ep ? ifull : ifull / world;
      matrices += (local * 3 * expert_inter * h + 3 * (sh / world) * h) * sparse_layers;
    }
    size_t bytes = static_cast<size_t>(n) * es + static_cast<size_t>(matrices) * dtype_size(weight_dtype);
    if (c.multimodal && r == 0) {
      const VisionConfig& v = c.multimodal->vision;
      const int64_t vd = v.hidden_size, vi = v.intermediate_size;
      int64_t m = vd * v.patch_dim() + static_cast<int64_t>(v.seq_len()) * vd;
      m += v.type == VisionConfig::Type::kClip ? 2 * vd : vd;  // pre_layrnorm, or patch bias
      m += static_cast<int64_t>(c.multimodal->layers_used()) *
           (4 * vd + 3 * vd * vd + 3 * vd + vd * vd + vd + vi * vd + vi + vd * vi + vd);
      const int64_t nf = static_cast<int64_t>(c.multimodal->feature_layers.size());
      m += h * nf * vd + h * h + (c.multimodal->projector_bias ? 2 * h : 0);
      bytes += static_cast<size_t>(m) * es;
    }
    if (c.qwen_vl && r == 0) {  // Qwen2.5-VL's tower + merger, on rank 0 (qwen_vision.h)
      const QwenVisionConfig& v = c.qwen_vl->vision;
      const int64_t vd = v.hidden_size, vi = v.intermediate_size, u = v.merge_unit();
      int64_t m = vd * v.patch_dim();
      m += static_cast<int64_t>(v.depth) *
           (2 * vd + 3 * vd * vd + 3 * vd + vd * vd + vd + 3 * vi * vd + 2 * vi + vd);
      m += vd + u * vd * u * vd + u * vd + v.out_hidden_size * u * vd + v.out_hidden_size;
      bytes += static_cast<size_t>(m) * es;
    }
    RankMemory rm;
    rm.weight_bytes = bytes;
    rm.kv_bytes_per_block = 2ull * c.num_layers * block_size * kv * dtype_size(kv_dtype.value_or(dtype));
    plan.ranks.push_back(rm);
  }
  return plan;
}

std::string format_bytes(double b) {
  char s[64];
  if (b >= 1024.0 * 1024 * 1024) {
    std::snprintf(s, sizeof s, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  } else if (b >= 1024.0 * 1024) {
    std::snprintf(s, sizeof s, "%.1f MiB", b / (1024.0 * 1024));
  } else {
    std::snprintf(s, sizeof s, "%.1f KiB", b / 1024.0);
  }
  return s;
}

}  // namespace iris
