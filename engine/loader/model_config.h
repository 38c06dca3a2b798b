// The model description read from config.json (and generation_config.json): architecture,
// shapes, norms, rotary embedding and its scaling, special token ids. Validated once so
// model code can trust every field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace iris {

enum class Architecture { kLlama, kMistral, kQwen2, kQwen3 };

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 } type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position_embeddings = 8192;
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

struct ModelConfig {
  std::string architecture_name;  // as spelled in config.json
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

  // Parses config.json (and generation_config.json when given, may be null). `source`
  // names the file in error messages.
  static ModelConfig from_json(const nlohmann::json& config, const nlohmann::json& generation,
                               const std::string& source);
  // Reads DIR/config.json and DIR/generation_config.json (if present).
  static ModelConfig from_dir(const std::string& dir);
};

}  // namespace iris
