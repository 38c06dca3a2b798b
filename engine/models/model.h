// The model interface the model runner drives, and the per-step inputs it builds once
// before the first layer. Model definitions live one per file in engine/models/.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "engine/kv_cache_dtype.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"

namespace iris {

// This process's place in the tensor-parallel group.
struct ParallelConfig {
  int rank = 0;
  int world_size = 1;
  // Mixture-of-experts layers: place whole experts on ranks instead of sharding each
  // expert's intermediate dimension (--enable-expert-parallel; no effect on dense models).
  bool expert_parallel = false;
};

// Device tensors describing one step (see AttentionMetadata for the layout).
struct StepInputs {
  Tensor token_ids;       // I32 [T]
  Tensor positions;       // I32 [T]
  Tensor logits_indices;  // I32 [S_out]   rows of the step whose logits are wanted
  AttentionMetadata attn;
  // Image (or other media) embeddings that replace the token embeddings of some rows of
  // the step, e.g. LLaVA's image placeholders; both undefined (or N = 0) when none.
  Tensor embed_rows;  // I32 [N]   distinct rows of the step whose input embedding is replaced
  Tensor embeds;      // [N, hidden_size]   in the backend's compute dtype
};

// Paged KV cache for all layers of one rank.
struct KvCache {
  int num_blocks = 0;
  int block_size = 0;
  std::vector<Buffer> storage;  // K and V of each layer
  std::vector<KvLayer> layers;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // Shape of one layer's K (and V) cache entry on this rank.
  virtual AttentionShape attention_shape() const = 0;
  // Allocates activation buffers for steps of up to max_tokens tokens and max_logits
  // sampled rows. Called once; forward never allocates.
  virtual void reserve(int max_tokens, int max_logits) = 0;
  // Runs one step; writes F32 logits [S_out, vocab] into `logits`.
  virtual void forward(const StepInputs& in, KvCache& kv, Tensor& logits) = 0;
  // Bytes of weights held on this rank's device.
  virtual size_t weight_bytes() const = 0;
  // Whether a decode step's forward only enqueues device work on fixed buffers, so that it
  // can be captured as a graph (false when it reads results back mid-forward, as the
  // mixture-of-experts router does to group tokens by expert).
  virtual bool supports_step_graphs() const { return true; }
  // The vocabulary rows [first, first + count) whose logits this rank computes: the whole
  // vocabulary on a single rank, a contiguous shard under tensor parallelism.
  virtual std::pair<int64_t, int64_t> vocab_shard() const { return {0, config().vocab_size}; }
  // Per layer, the (k_scale, v_scale) an FP8 KV cache stores K and V with: the checkpoint's
  // self_attn.k_scale / v_scale tensors where it has them, else 1. Empty = 1 everywhere.
  virtual std::vector<std::pair<float, float>> kv_scales() const { return {}; }
};

// Builds the model named by config.arch, reading this rank's shard of every weight.
std::unique_ptr<Model> load_model(const Checkpoint& ckpt, const ModelConfig& config,
                                  Backend& backend, ParallelConfig parallel = {});

class VisionEncoder;  // engine/models/vision.h

// The vision tower + projector of a multimodal checkpoint (config.multimodal set), or null
// for a text-only model. load_model() gives the language model of the same checkpoint.
std::unique_ptr<VisionEncoder> load_vision_encoder(const Checkpoint& ckpt,
                                                   const ModelConfig& config, Backend& backend);

// Allocates a KV cache of num_blocks blocks for `model` on `backend`, stored as `dtype`
// says (auto: the backend's compute dtype; fp8: E4M3 with the model's kv_scales()).
KvCache allocate_kv_cache(Backend& backend, const Model& model, int num_blocks, int block_size,
                          KvCacheDtype dtype = KvCacheDtype::kAuto);
// Bytes one KV block (K and V of every layer) takes for `model` on `backend`.
size_t kv_bytes_per_block(const Backend& backend, const Model& model, int block_size,
                          KvCacheDtype dtype = KvCacheDtype::kAuto);

}  // namespace iris
