// The model description read from config.json (and generation_config.json): architecture,
// shapes, norms, rotary embedding and its scaling, special token ids, and for multimodal
// checkpoints (LLaVA) the vision tower and projector. Validated once so model code can
// trust every field.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace iris {

enum class Architecture {
  kLlama, kMistral, kQwen2, kQwen3, kMixtral, kQwen2Moe, kQwen3Moe,
  kGemma3,  // Gemma3ForCausalLM (and the language model of Gemma3ForConditionalGeneration)
};

// Mixture-of-experts MLPs (Mixtral, Qwen2-MoE, Qwen3-MoE). A sparse layer routes each token
// to top_k of num_experts SwiGLU experts: softmax in fp32 over the router logits, top-k,
// optionally renormalised to sum to one; Qwen2-MoE adds a shared expert scaled by
// sigmoid(shared_expert_gate(x)). Layers that are not sparse keep the dense MLP of
// intermediate_size.
struct MoeConfig {
  int num_experts = 0;                      // num_local_experts (Mixtral) / num_experts (Qwen)
  int top_k = 0;                            // num_experts_per_tok
  int64_t expert_intermediate_size = 0;     // intermediate_size (Mixtral) / moe_intermediate_size
  bool renormalize = false;                 // Mixtral: always; Qwen: norm_topk_prob
  int64_t shared_expert_intermediate_size = 0;  // Qwen2-MoE; 0 = no shared expert
  std::vector<uint8_t> sparse_layer;        // per layer: 1 = MoE, 0 = dense MLP
};

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 } type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position_embeddings = 8192;
};

// Gemma 3's differences from the Llama family (engine/models/llama.cpp applies them): the
// embedding scaled by sqrt(hidden_size) rounded to the checkpoint's dtype, RMSNorms that
// multiply by (1 + weight), norms before and after attention and MLP, per-head q/k norms,
// GELU-tanh gated MLP, sliding-window layers (ModelConfig::sliding_window, from layer_types
// or sliding_window_pattern) whose RoPE base is rope_local_base_freq without scaling while
// the full-attention layers use rope_theta with rope_scaling.
struct GemmaConfig {
  float query_pre_attn_scalar = 256.0f;  // attention scale = query_pre_attn_scalar^(-1/2)
  float final_logit_softcapping = 0.0f;  // 0 = none; else logits = cap * tanh(logits / cap)
  float rope_local_base_freq = 10000.0f;
  // attn_logit_softcapping is accepted and, as in transformers' Gemma3Attention (which never
  // passes it to the attention function), not applied.
};

// Defaults a checkpoint suggests for sampling (generation_config.json); unset = not given.
struct GenerationDefaults {
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<int> top_k;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::optional<int> max_new_tokens;
};

// A ViT image encoder as LLaVA uses it (transformers' CLIPVisionModel / SiglipVisionModel).
// CLIP prepends a class token (position embeddings over num_patches + 1) and applies
// pre_layrnorm to the embeddings; SigLIP has neither but a bias on its patch embedding.
struct VisionConfig {
  enum class Type { kClip, kSiglip } type = Type::kClip;
  std::string model_type;  // "clip_vision_model" or "siglip_vision_model"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int num_heads = 0;
  int num_layers = 0;
  int image_size = 0;  // square input, pixels
  int patch_size = 0;
  int num_channels = 3;
  float layer_norm_eps = 1e-5f;
  std::string hidden_act;  // "quick_gelu", "gelu", "gelu_pytorch_tanh", "gelu_new"

  int head_dim() const { return static_cast<int>(hidden_size / num_heads); }
  // Patches per side; pixels past grid() * patch_size are not seen (as Conv2d's stride).
  int grid() const { return image_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
  // Elements of one flattened patch: num_channels * patch_size^2, ordered (c, ky, kx).
  int patch_dim() const { return num_channels * patch_size * patch_size; }
  bool has_class_token() const { return type == Type::kClip; }
  // Rows of one image's sequence inside the tower.
  int seq_len() const { return num_patches() + (has_class_token() ? 1 : 0); }
};

// LLaVA: vision tower -> hidden_states[feature layer(s)] -> select -> projector
// (linear_1 -> act -> linear_2) -> embeddings that replace the image placeholder tokens.
struct MultimodalConfig {
  VisionConfig vision;
  int32_t image_token_id = 0;  // "image_token_index" (or "image_token_id")
  // vision_feature_layer as written (negative counts from the end); hidden_states[0] is the
  // embeddings output, hidden_states[i] the output of encoder layer i. Several layers are
  // concatenated along the hidden dimension in this order.
  std::vector<int> feature_layers;
  // "default" drops each image's first row (CLIP's class token), "full" keeps every row.
  enum class Select { kDefault, kFull } select = Select::kDefault;
  std::string projector_hidden_act = "gelu";
  bool projector_bias = true;

  // feature_layers[k] as an index into hidden_states, in [0, vision.num_layers].
  int hidden_state_index(size_t k) const {
    const int l = feature_layers[k];
    return l >= 0 ? l : vision.num_layers + 1 + l;
  }
  // Encoder layers that must run (the deepest requested hidden state).
  int layers_used() const {
    int m = 0;
    for (size_t k = 0; k < feature_layers.size(); ++k) m = std::max(m, hidden_state_index(k));
    return m;
  }
  // Gemma 3 (Gemma3ForConditionalGeneration): the tower's last hidden state after
  // post_layernorm, average-pooled over square windows to mm_tokens_per_image rows, then
  // RMSNorm × (1 + mm_soft_emb_norm) and mm_input_projection_weight ([vision, text]). A
  // prompt marks each image with boi_token_id (`<start_of_image>`), which expands to
  // "\n\n", boi, mm_tokens_per_image × image_token_id, eoi, "\n\n" (ImageEncoder); the
  // image tokens attend to each other bidirectionally.
  struct Gemma {
    int mm_tokens_per_image = 256;
    int32_t boi_token_id = 255999;
    int32_t eoi_token_id = 256000;
  };
  std::optional<Gemma> gemma;

  // Placeholder tokens (and embedding rows) per image.
  int tokens_per_image() const {
    if (gemma) return gemma->mm_tokens_per_image;
    return vision.seq_len() - (select == Select::kDefault ? 1 : 0);
  }
};

// Qwen2.5-VL's vision tower (transformers' Qwen2_5_VLVisionConfig): a ViT over
// patch_size x patch_size x temporal_patch_size patches with 2-D rotary embeddings, window
// attention (full attention in fullatt_block_indexes), RMSNorm and SwiGLU MLPs, and a patch
// merger that folds each spatial_merge_size^2 patches into one language-model token.
struct QwenVisionConfig {
  int depth = 32;
  int64_t hidden_size = 3584;
  int64_t intermediate_size = 3420;
  int num_heads = 16;
  int in_channels = 3;
  int patch_size = 14;
  int spatial_merge_size = 2;
  int temporal_patch_size = 2;
  int window_size = 112;  // pixels per attention window side
  int64_t out_hidden_size = 3584;
  std::vector<int> fullatt_block_indexes{7, 15, 23, 31};
  double tokens_per_second = 4;  // temporal M-RoPE positions per second of video
  std::string hidden_act = "silu";

  int head_dim() const { return static_cast<int>(hidden_size / num_heads); }
  // Elements of one flattened patch, ordered (c, t, ky, kx) as Conv3d's weight.view(D, -1).
  int patch_dim() const { return in_channels * temporal_patch_size * patch_size * patch_size; }
  int merge_unit() const { return spatial_merge_size * spatial_merge_size; }
};

// Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration): the special tokens around media and the
// vision tower. The language model is Qwen2 with M-RoPE (ModelConfig::mrope_section).
struct QwenVlConfig {
  QwenVisionConfig vision;
  int32_t image_token_id = 151655;
  int32_t video_token_id = 151656;
  int32_t vision_start_token_id = 151652;
  int32_t vision_end_token_id = 151653;
};

struct ModelConfig {
  // As spelled in config.json. For LLaVA "LlavaForConditionalGeneration", while `arch` and
  // every text field below describe the language model (text_config).
  std::string architecture_name;
  Architecture arch = Architecture::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v (and for Llama o_proj) biases
  bool o_proj_bias = false;
  bool mlp_bias = false;
  bool qk_norm = false;             // Qwen3: per-head RMSNorm on q and k
  std::vector<int> sliding_window;  // per layer; 0 = full attention
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // config.json ∪ generation_config.json
  GenerationDefaults generation;
  // Set for mixture-of-experts architectures.
  std::optional<MoeConfig> moe;
  // Set for Gemma 3.
  std::optional<GemmaConfig> gemma;
  // Set for LlavaForConditionalGeneration; empty for text-only models.
  std::optional<MultimodalConfig> multimodal;
  // M-RoPE (Qwen2.5-VL, rope_scaling.mrope_section): the rotary frequencies split into
  // temporal, height and width sections (counts of frequencies, summing to head_dim / 2),
  // each rotated by its own position; empty = plain RoPE.
  std::vector<int> mrope_section;
  // Set for Qwen2_5_VLForConditionalGeneration.
  std::optional<QwenVlConfig> qwen_vl;

  // Parses config.json (and generation_config.json when given, may be null). `source`
  // names the file in error messages.
  static ModelConfig from_json(const nlohmann::json& config, const nlohmann::json& generation,
                               const std::string& source);
  // from_json after a family's defaults are filled in (Gemma 3 configs omit fields).
  static ModelConfig from_json_checked(const nlohmann::json& config,
                                       const nlohmann::json& generation, const std::string& source);
  // Reads DIR/config.json and DIR/generation_config.json (if present).
  static ModelConfig from_dir(const std::string& dir);
};

// Qwen2_5_VLForConditionalGeneration's config.json (engine/loader/qwen2_5_vl_config.cpp);
// from_json dispatches to it.
ModelConfig parse_qwen2_5_vl(const nlohmann::json& config, const nlohmann::json& generation,
                             const std::string& source);

}  // namespace iris
