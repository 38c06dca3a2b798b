// The image side of a LLaVA checkpoint, written against Ops: a ViT vision tower (CLIP or
// SigLIP) run up to the configured feature layer(s), feature selection, and the two-layer
// projector into the language model's embedding space. For Gemma 3 (MultimodalConfig::gemma)
// the tower's last hidden state goes through post_layernorm, an average pool over k x k
// patch windows (k² row gathers and adds, then a scale), the soft-embedding RMSNorm and
// the projection instead. The caller turns pixel_values into
// flattened patches (engine/image) and places the output rows at the image's placeholder
// tokens through StepInputs::embed_rows / embeds.
//
// Every image of a call has the same size (config image_size), so the tower runs as one
// batch of num_images independent sequences of seq_len rows: encoder_attention needs no
// per-image metadata. Buffers are sized once by reserve(); encode() never allocates.
#pragma once

#include <vector>

#include "engine/backend.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/models/weight_names.h"

namespace iris {

class VisionEncoder {
 public:
  // Reads the tower (only the layers the feature layers need) and the projector.
  // config.multimodal must be set.
  VisionEncoder(const Checkpoint& ckpt, const ModelConfig& config, Backend& backend,
                const WeightNames& names);

  const MultimodalConfig& config() const { return mm_; }
  // Rows of `patches` per image: grid^2 with grid = image_size / patch_size rounded down
  // (pixels past grid * patch_size are dropped, as by the stride-P Conv2d), row-major.
  int patches_per_image() const { return mm_.vision.num_patches(); }
  // Elements of one patch row: num_channels * patch_size^2, flattened (c, ky, kx).
  int patch_dim() const { return mm_.vision.patch_dim(); }
  // Embedding rows (= placeholder tokens) per image.
  int tokens_per_image() const { return mm_.tokens_per_image(); }
  // Width of each output row: the language model's hidden size.
  int64_t output_dim() const { return text_hidden_; }
  size_t weight_bytes() const { return weight_bytes_; }

  // Allocates activation buffers for calls of up to max_images images. Call before encode.
  void reserve(int max_images);
  int max_images() const { return max_images_; }

  // patches: [num_images * patches_per_image(), patch_dim()] in the backend's compute dtype,
  //          patch p of image i at row i * patches_per_image() + p (p = gy * grid + gx);
  // out:     [num_images * tokens_per_image(), output_dim()], image i's embeddings at rows
  //          [i * tokens_per_image(), (i + 1) * tokens_per_image()).
  void encode(const Tensor& patches, int num_images, Tensor& out);

  // After encode(): the selected vision features of feature layer k (before the projector),
  // [num_images * tokens_per_image(), vision hidden_size]; for Gemma 3 the tower's
  // last_hidden_state (after post_layernorm, before pooling), [num_images * num_patches, D].
  // For tests and debugging.
  Tensor selected_features(size_t k, int num_images) const;

 private:
  struct Layer {
    Buffer ln1_w, ln1_b;   // [D]
    Buffer qkv, qkv_b;     // [3 D, D], [3 D]   q | k | v
    Buffer o, o_b;         // [D, D], [D]
    Buffer ln2_w, ln2_b;   // [D]
    Buffer fc1, fc1_b;     // [I, D], [I]
    Buffer fc2, fc2_b;     // [D, I], [D]
  };

  Buffer alloc(Shape shape);
  Buffer load(const Checkpoint& ckpt, const std::string& name, std::vector<int64_t> shape,
              Slice slice = {});
  void load_into(const Checkpoint& ckpt, const std::string& name, std::vector<int64_t> full,
                 Slice slice, Buffer& dst, int64_t row);

  Backend& backend_;
  MultimodalConfig mm_;
  int64_t text_hidden_ = 0;
  AttentionShape shape_;
  Activation act_ = Activation::kQuickGelu;
  Activation projector_act_ = Activation::kGeluErf;
  int layers_used_ = 0;
  size_t weight_bytes_ = 0;

  Buffer patch_w_;                   // [D, patch_dim]   Conv2d weight [D, C, P, P] flattened
  Buffer patch_b_;                   // [D] (SigLIP) or empty
  std::vector<float> class_emb_;     // [D] host copy (CLIP), placed into embed_src_ by reserve
  Buffer pos_;                       // [seq_len, D]
  Buffer pre_ln_w_, pre_ln_b_;       // [D] (CLIP) or empty
  std::vector<Layer> layers_;
  std::vector<Buffer> proj1_w_;      // per feature layer: [text_hidden, D] column block of linear_1
  Buffer proj1_b_, proj2_w_, proj2_b_;

  int max_images_ = 0;
  Buffer embed_src_;   // [max_images * num_patches + 1, D] (CLIP): row 0 class embedding, then patches
  Buffer gather_idx_;  // I32 [max_images * seq_len] (CLIP): embed_src_ row of each sequence row
  Buffer select_idx_;  // I32 [max_images * tokens_per_image]: sequence rows kept by the strategy
  Buffer hidden_, normed_, qkv_, attn_, mlp_, out_;  // tower activations, max_images * seq_len rows
  std::vector<Buffer> features_;  // per feature layer: [max_images * tokens_per_image, D]
  Buffer proj_, proj_tmp_;        // [max_images * tokens_per_image, text_hidden]

  // Gemma 3.
  void encode_gemma_head(Tensor& x, int num_images, Tensor& out);
  Buffer post_ln_w_, post_ln_b_;  // [D]
  Buffer soft_norm_;              // [D]   1 + mm_soft_emb_norm.weight
  Buffer mm_proj_;                // [text_hidden, D]   mm_input_projection_weight transposed
  int pool_k_ = 0;                // patches per pooling window side
  Buffer pool_idx_;               // I32 [k², max_images * tokens]: source row per window offset
  Buffer pooled_, pool_tmp_;      // [max_images * tokens, D]
};

}  // namespace iris
