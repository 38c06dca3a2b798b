// Qwen2.5-VL's vision tower and patch merger, written against Ops (transformers'
// Qwen2_5_VisionTransformerPretrainedModel). One image (or video) per call, of any grid:
//
//   patches [N, C * T * P * P] (processor order: 2 x 2 merge blocks row-major, their four
//   patches row-major inside) → patch embedding (Conv3d as one GEMM) → rows regrouped by
//   attention window (whole merge blocks, windows of window_size pixels laid from the top-left
//   of each frame) → depth blocks of [RMSNorm → qkv → 2-D rotary (first half of the
//   frequencies by patch row, second half by patch column) → bidirectional attention inside
//   each window, or inside each frame for fullatt_block_indexes → proj → residual; RMSNorm →
//   SwiGLU MLP with biases → residual] → merger (RMSNorm, 2 x 2 blocks concatenated, Linear →
//   GELU → Linear) → rows back in processor order: [N / 4, out_hidden_size].
//
// No new op: the rotary embedding is qk_norm_rope_store_kv with two position rows (row,
// column) and a two-row frequency table, storing nothing (every slot -1); windows are runs of
// encoder_attention over consecutive rows (equal-sized windows in one call).
// Activations grow to the largest image seen (reserve() up front to avoid that).
#pragma once

#include <array>
#include <vector>

#include "engine/backend.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/models/weight_names.h"

namespace iris {

class QwenVisionEncoder {
 public:
  QwenVisionEncoder(const Checkpoint& ckpt, const ModelConfig& config, Backend& backend,
                    const WeightNames& names);

  const QwenVisionConfig& config() const { return vc_; }
  int patch_dim() const { return vc_.patch_dim(); }
  int64_t output_dim() const { return vc_.out_hidden_size; }
  size_t weight_bytes() const { return weight_bytes_; }

  // Allocates activations for images of up to max_patches patches.
  void reserve(int64_t max_patches);

  // patches: [grid_t * grid_h * grid_w, patch_dim()] in the backend's compute dtype, grid in
  // patches (grid_h, grid_w multiples of spatial_merge_size); out: F32 or compute dtype
  // [grid_t * grid_h * grid_w / merge_unit, output_dim()], processor order.
  void encode(const Tensor& patches, int grid_t, int grid_h, int grid_w, Tensor& out);

  // Host-side plan of one image: the window order of its merge blocks and the window
  // boundaries in patch rows (exposed for tests).
  struct WindowPlan {
    std::vector<int32_t> block_order;  // merge block (processor index) at each regrouped slot
    std::vector<int32_t> bounds;       // patch rows: window w is [bounds[w], bounds[w + 1])
  };
  WindowPlan window_plan(int grid_t, int grid_h, int grid_w) const;

 private:
  struct Block {
    Buffer norm1, norm2;      // [D]
    Buffer qkv, qkv_b;        // [3 D, D], [3 D]   q | k | v
    Buffer proj, proj_b;      // [D, D], [D]
    Buffer gate_up, gate_up_b;  // [2 I, D], [2 I]
    Buffer down, down_b;      // [D, I], [D]
  };

  Buffer alloc(Shape shape);
  Buffer load(const Checkpoint& ckpt, const std::string& name, std::vector<int64_t> shape);
  void load_into(const Checkpoint& ckpt, const std::string& name, std::vector<int64_t> full,
                 Buffer& dst, int64_t row);
  void attend(const Tensor& qkv, const std::vector<int32_t>& bounds, Tensor& out);

  Backend& backend_;
  QwenVisionConfig vc_;
  AttentionShape shape_;
  size_t weight_bytes_ = 0;
  Buffer patch_w_;        // [D, patch_dim]
  Buffer inv_freq_;       // F32 [2, head_dim / 2]: row 0 rotates by patch row, row 1 by column
  std::vector<Block> blocks_;
  Buffer merger_norm_;    // [D]
  Buffer mlp0_, mlp0_b_;  // [4 D, 4 D], [4 D]
  Buffer mlp2_, mlp2_b_;  // [O, 4 D], [O]
  KvLayer no_cache_;      // one-slot K/V the rotary op is given; every slot is -1
  Buffer no_cache_k_, no_cache_v_;

  int64_t max_patches_ = 0;
  Buffer x_, tmp_, qkv_, attn_, gate_up_, act_, merged_, merged_hidden_;
  Buffer positions_, order_, unorder_, slots_;
  std::vector<int32_t> h_positions_, h_order_, h_unorder_;
};

}  // namespace iris
