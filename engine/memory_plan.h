// Memory a model will take on each tensor-parallel rank, computed from config.json alone,
// before any weight is read: weights (as the backend stores them: every checkpoint dtype,
// quantized ones included, is converted to the backend's compute dtype at load) and KV cache
// per block. The server reports it and refuses a configuration that cannot fit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/core/dtype.h"
#include "engine/loader/model_config.h"

namespace iris {

struct RankMemory {
  size_t weight_bytes = 0;        // language model shard (+ vision tower and projector on rank 0)
  size_t kv_bytes_per_block = 0;  // K and V of every layer for one block
};

struct MemoryPlan {
  DType dtype = DType::F32;
  int block_size = 16;
  std::vector<RankMemory> ranks;

  size_t total_weight_bytes() const;
};

// Mirrors the allocations of LlamaModel (engine/models/llama.cpp) and VisionEncoder
// (engine/models/vision.cpp) for `world` ranks; tests hold it equal to Model::weight_bytes().
// The dense matrices of the language model (embedding, LM head, projections) are counted
// in `weight_dtype` (the backend's Backend::weight_dtype()), everything else in compute_dtype.
// Mixture-of-experts layers (engine/models/moe.h) count the router, every expert this rank
// holds (all of them sharded, or whole experts with `expert_parallel`) and the shared expert.
// The KV cache is counted in kv_dtype (F8_E4M3: one byte per element), by default the compute
// dtype.
MemoryPlan plan_memory(const ModelConfig& config, DType compute_dtype, int world, int block_size,
                       DType weight_dtype, std::optional<DType> kv_dtype = std::nullopt,
                       bool expert_parallel = false);
inline MemoryPlan plan_memory(const ModelConfig& config, DType compute_dtype, int world,
                              int block_size) {
  return plan_memory(config, compute_dtype, world, block_size, compute_dtype);
}

// "rank 0: weights 12.3 MiB + KV 4.0 MiB (256 blocks of 16 tokens, 16.0 KiB each)"
std::string format_bytes(double bytes);

}  // namespace iris
