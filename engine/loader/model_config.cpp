// config.json parsing for the Llama family (Llama, Mistral, Qwen2, Qwen3) and for LLaVA
// (LlavaForConditionalGeneration: a Llama-family text_config, a CLIP or SigLIP
// vision_config, and the projector / feature-selection fields).
#include "engine/loader/model_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/core/check.h"

namespace iris {
namespace {

using json = nlohmann::json;

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
}

class Reader {
 public:
  Reader(const json& j, const std::string& source) : j_(j), source_(source) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  int64_t get_int(const char* key, std::optional<int64_t> def = std::nullopt) const {
    if (!has(key)) {
      if (def) return *def;
      fail(source_, ": missing \"", key, "\"");
    }
    const json& v = j_[key];
    if (!v.is_number_integer()) fail(source_, ": \"", key, "\" must be an integer");
    return v.get<int64_t>();
  }
  int64_t get_positive(const char* key, std::optional<int64_t> def = std::nullopt) const {
    const int64_t v = get_int(key, def);
    if (v <= 0 || v > (1ll << 31)) fail(source_, ": \"", key, "\" = ", v, " is out of range");
    return v;
  }
  double get_float(const char* key, double def) const {
    if (!has(key)) return def;
    const json& v = j_[key];
    if (!v.is_number()) fail(source_, ": \"", key, "\" must be a number");
    return v.get<double>();
  }
  bool get_bool(const char* key, bool def) const {
    if (!has(key)) return def;
    if (!j_[key].is_boolean()) fail(source_, ": \"", key, "\" must be true or false");
    return j_[key].get<bool>();
  }

 private:
  const json& j_;
  const std::string& source_;
};

void add_token_ids(const json& v, std::vector<int32_t>& out, const std::string& source,
                   const char* key) {
  auto add = [&](const json& x) {
    if (!x.is_number_integer()) fail(source, ": \"", key, "\" must be an integer or a list");
    const auto id = static_cast<int32_t>(x.get<int64_t>());
    for (int32_t e : out)
      if (e == id) return;
    out.push_back(id);
  };
  if (v.is_null()) return;
  if (v.is_array()) {
    for (const auto& x : v) add(x);
  } else {
    add(v);
  }
}

ModelConfig parse_llava(const json& j, const json& gen, const std::string& source);
ModelConfig parse_gemma3_multimodal(const json& j, const json& gen, const std::string& source);
json merged(json defaults, const json& given);

// ---- Gemma 3 ----

// Gemma3TextConfig's defaults: transformers writes a multimodal checkpoint's text_config as
// differences from them, and a text-only config.json may omit fields too.
json gemma3_text_defaults() {
  return {{"architectures", {"Gemma3ForCausalLM"}}, {"vocab_size", 262208},
          {"hidden_size", 2304}, {"intermediate_size", 9216}, {"num_hidden_layers", 26},
          {"num_attention_heads", 8}, {"num_key_value_heads", 4}, {"head_dim", 256},
          {"hidden_activation", "gelu_pytorch_tanh"}, {"max_position_embeddings", 131072},
          {"rms_norm_eps", 1e-6}, {"rope_theta", 1000000.0}, {"attention_bias", false},
          {"query_pre_attn_scalar", 256}, {"sliding_window", 4096},
          {"rope_local_base_freq", 10000.0}, {"sliding_window_pattern", 6},
          {"tie_word_embeddings", true}, {"bos_token_id", 2}, {"eos_token_id", 1}};
}

// The Gemma-only fields and the per-layer sliding windows.
void parse_gemma3_text(const json& j, ModelConfig& c, const std::string& source) {
  Reader r(j, source);
  GemmaConfig g;
  const json& act = j["hidden_activation"];
  if (!act.is_string() ||
      (act.get<std::string>() != "gelu_pytorch_tanh" && act.get<std::string>() != "gelu_new"))
    fail(source, ": hidden_activation ", act.dump(),
         " is not supported (gelu_pytorch_tanh, gelu_new)");
  g.query_pre_attn_scalar = static_cast<float>(r.get_float("query_pre_attn_scalar", 256.0));
  if (!(g.query_pre_attn_scalar > 0))
    fail(source, ": query_pre_attn_scalar must be positive");
  g.final_logit_softcapping = static_cast<float>(r.get_float("final_logit_softcapping", 0.0));
  if (!(g.final_logit_softcapping >= 0))
    fail(source, ": final_logit_softcapping must be positive or null");
  if (!(r.get_float("attn_logit_softcapping", 0.0) >= 0))
    fail(source, ": attn_logit_softcapping must be positive or null");
  g.rope_local_base_freq = static_cast<float>(r.get_float("rope_local_base_freq", 10000.0));
  // transformers >= 5 writes both RoPE settings per layer type instead.
  if (r.has("rope_parameters")) {
    const json& rp = j["rope_parameters"];
    for (const char* kind : {"full_attention", "sliding_attention"}) {
      if (!rp.is_object() || !rp.contains(kind) || !rp[kind].is_object())
        fail(source, ": rope_parameters.", kind, " must be an object");
      const json& p = rp[kind];
      const std::string type = p.value("rope_type", std::string("default"));
      Reader pr(p, source);
      const float theta = static_cast<float>(pr.get_float("rope_theta", kind[0] == 'f' ? 1e6 : 1e4));
      if (!(theta > 0)) fail(source, ": rope_parameters.", kind, ".rope_theta must be positive");
      if (kind[0] == 's') {
        if (type != "default")
          fail(source, ": rope_parameters.sliding_attention.rope_type '", type,
               "' is not supported (default)");
        g.rope_local_base_freq = theta;
        continue;
      }
      c.rope_theta = theta;
      if (type == "default") {
        c.rope_scaling = RopeScaling{};
      } else if (type == "linear") {
        c.rope_scaling.type = RopeScaling::Type::kLinear;
        c.rope_scaling.factor = static_cast<float>(pr.get_float("factor", 1.0));
        if (!(c.rope_scaling.factor > 0))
          fail(source, ": rope_parameters.full_attention.factor must be positive");
      } else {
        fail(source, ": rope_parameters.full_attention.rope_type '", type,
             "' is not supported (default, linear)");
      }
    }
  }
  if (!(g.rope_local_base_freq > 0)) fail(source, ": rope_local_base_freq must be positive");
  // Which layers slide: layer_types when given, else every layer but each pattern-th.
  const int window = static_cast<int>(r.get_positive("sliding_window"));
  c.sliding_window.assign(c.num_layers, 0);
  if (r.has("layer_types")) {
    const json& lt = j["layer_types"];
    if (!lt.is_array() || static_cast<int>(lt.size()) != c.num_layers)
      fail(source, ": \"layer_types\" must list one type per layer (", c.num_layers, ")");
    for (int l = 0; l < c.num_layers; ++l) {
      if (lt[l] == "sliding_attention") {
        c.sliding_window[l] = window;
      } else if (lt[l] != "full_attention") {
        fail(source, ": layer_types[", l, "] ", lt[l].dump(),
             " is not \"sliding_attention\" or \"full_attention\"");
      }
    }
  } else {
    const int64_t pattern = r.get_positive("sliding_window_pattern", 6);
    for (int l = 0; l < c.num_layers; ++l)
      if ((l + 1) % pattern != 0) c.sliding_window[l] = window;
  }
  c.gemma = g;
}

// The MoE fields, with transformers' config-class defaults where a field is missing.
MoeConfig parse_moe(const json& j, const ModelConfig& c, const std::string& source) {
  Reader r(j, source);
  MoeConfig m;
  std::vector<int64_t> mlp_only;
  int64_t sparse_step = 1;
  if (c.arch == Architecture::kMixtral) {
    m.num_experts = static_cast<int>(r.get_positive("num_local_experts", 8));
    m.top_k = static_cast<int>(r.get_positive("num_experts_per_tok", 2));
    m.expert_intermediate_size = c.intermediate_size;
    m.renormalize = true;
  } else {
    const bool qwen2 = c.arch == Architecture::kQwen2Moe;
    m.num_experts = static_cast<int>(r.get_positive("num_experts", qwen2 ? 60 : 128));
    m.top_k = static_cast<int>(r.get_positive("num_experts_per_tok", qwen2 ? 4 : 8));
    m.expert_intermediate_size = r.get_positive("moe_intermediate_size", qwen2 ? 1408 : 768);
    m.renormalize = r.get_bool("norm_topk_prob", false);
    if (qwen2)
      m.shared_expert_intermediate_size = r.get_positive("shared_expert_intermediate_size", 5632);
    sparse_step = r.get_positive("decoder_sparse_step", 1);
    if (r.has("mlp_only_layers")) {
      const json& v = j["mlp_only_layers"];
      if (!v.is_array()) fail(source, ": \"mlp_only_layers\" must be a list of layer indices");
      for (const json& x : v) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= c.num_layers)
          fail(source, ": mlp_only_layers entry ", x.dump(), " is not a layer index in [0, ",
               c.num_layers, ")");
        mlp_only.push_back(x.get<int64_t>());
      }
    }
  }
  if (m.top_k > m.num_experts)
    fail(source, ": num_experts_per_tok ", m.top_k, " exceeds the ", m.num_experts, " experts");
  // As transformers' decoder layers: sparse unless listed in mlp_only_layers, and only every
  // decoder_sparse_step-th layer (counting from 1).
  m.sparse_layer.assign(c.num_layers, 0);
  for (int l = 0; l < c.num_layers; ++l) {
    const bool dense_only = std::find(mlp_only.begin(), mlp_only.end(), l) != mlp_only.end();
    m.sparse_layer[l] = !dense_only && (l + 1) % sparse_step == 0;
  }
  return m;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& given, const json& gen, const std::string& source) {
  if (!given.is_object()) fail(source, ": not a JSON object");
  const bool gemma3 = given.contains("architectures") && given["architectures"].is_array() &&
                      !given["architectures"].empty() &&
                      given["architectures"][0] == "Gemma3ForCausalLM";
  const json j = gemma3 ? merged(gemma3_text_defaults(), given) : json();
  return from_json_checked(gemma3 ? j : given, gen, source);
}

ModelConfig ModelConfig::from_json_checked(const json& j, const json& gen, const std::string& source) {
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0] == "LlavaForConditionalGeneration")
    return parse_llava(j, gen, source);
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0] == "Gemma3ForConditionalGeneration")
    return parse_gemma3_multimodal(j, gen, source);
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0] == "Qwen2_5_VLForConditionalGeneration")
    return parse_qwen2_5_vl(j, gen, source);  // engine/loader/qwen2_5_vl_config.cpp
  ModelConfig c;
  Reader r(j, source);
  if (!j.contains("architectures") || !j["architectures"].is_array() ||
      j["architectures"].empty() || !j["architectures"][0].is_string())
    fail(source, ": missing \"architectures\"");
  c.architecture_name = j["architectures"][0].get<std::string>();
  if (c.architecture_name == "LlamaForCausalLM") {
    c.arch = Architecture::kLlama;
  } else if (c.architecture_name == "MistralForCausalLM") {
    c.arch = Architecture::kMistral;
  } else if (c.architecture_name == "Qwen2ForCausalLM") {
    c.arch = Architecture::kQwen2;
  } else if (c.architecture_name == "Qwen3ForCausalLM") {
    c.arch = Architecture::kQwen3;
  } else if (c.architecture_name == "MixtralForCausalLM") {
    c.arch = Architecture::kMixtral;
  } else if (c.architecture_name == "Qwen2MoeForCausalLM") {
    c.arch = Architecture::kQwen2Moe;
  } else if (c.architecture_name == "Qwen3MoeForCausalLM") {
    c.arch = Architecture::kQwen3Moe;
  } else if (c.architecture_name == "Gemma3ForCausalLM") {
    c.arch = Architecture::kGemma3;
  } else {
    fail(source, ": unknown architecture '", c.architecture_name,
         "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
         "Qwen3ForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, "
         "Gemma3ForCausalLM, Gemma3ForConditionalGeneration, LlavaForConditionalGeneration, "
         "Qwen2_5_VLForConditionalGeneration)");
  }

  c.vocab_size = r.get_positive("vocab_size");
  c.hidden_size = r.get_positive("hidden_size");
  c.intermediate_size = r.get_positive("intermediate_size");
  c.num_layers = static_cast<int>(r.get_positive("num_hidden_layers"));
  c.num_heads = static_cast<int>(r.get_positive("num_attention_heads"));
  c.num_kv_heads = static_cast<int>(r.get_positive("num_key_value_heads", c.num_heads));
  if (c.num_heads % c.num_kv_heads != 0)
    fail(source, ": num_attention_heads (", c.num_heads, ") is not a multiple of "
         "num_key_value_heads (", c.num_kv_heads, ")");
  if (r.has("head_dim")) {
    c.head_dim = static_cast<int>(r.get_positive("head_dim"));
  } else {
    if (c.hidden_size % c.num_heads != 0)
      fail(source, ": hidden_size is not a multiple of num_attention_heads and no head_dim");
    c.head_dim = static_cast<int>(c.hidden_size / c.num_heads);
  }
  if (c.head_dim % 2 != 0) fail(source, ": head_dim ", c.head_dim, " must be even");
  c.rms_norm_eps = static_cast<float>(r.get_float("rms_norm_eps", 1e-6));
  c.rope_theta = static_cast<float>(r.get_float("rope_theta", 10000.0));
  c.max_position_embeddings = r.get_positive("max_position_embeddings", 2048);
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", c.arch == Architecture::kGemma3);
  if (r.has("hidden_act") && c.arch != Architecture::kGemma3) {
    const auto act = j["hidden_act"];
    if (!act.is_string() || act.get<std::string>() != "silu")
      fail(source, ": hidden_act ", act.dump(), " is not supported (only \"silu\")");
  }

  switch (c.arch) {
    case Architecture::kLlama:
    case Architecture::kMistral:
      c.attention_bias = r.get_bool("attention_bias", false);
      c.o_proj_bias = c.attention_bias;
      c.mlp_bias = r.get_bool("mlp_bias", false);
      break;
    case Architecture::kQwen2:
      c.attention_bias = true;  // Qwen2 always has q/k/v biases and none on o_proj
      break;
    case Architecture::kQwen3:
    case Architecture::kQwen3Moe:
      c.attention_bias = r.get_bool("attention_bias", false);
      c.o_proj_bias = c.attention_bias;
      c.qk_norm = true;
      break;
    case Architecture::kMixtral:
      break;  // no biases
    case Architecture::kQwen2Moe:
      c.attention_bias = r.get_bool("qkv_bias", true);  // q/k/v biases, none on o_proj
      break;
    case Architecture::kGemma3:
      c.attention_bias = r.get_bool("attention_bias", false);
      c.o_proj_bias = c.attention_bias;
      c.qk_norm = true;
      break;
  }
  if (c.arch == Architecture::kMixtral || c.arch == Architecture::kQwen2Moe ||
      c.arch == Architecture::kQwen3Moe)
    c.moe = parse_moe(j, c, source);

  // Sliding-window attention: Mistral applies it to every layer when set; Qwen2/Qwen3 only
  // with use_sliding_window, from layer max_window_layers on (or as layer_types says).
  c.sliding_window.assign(c.num_layers, 0);
  const int window = r.has("sliding_window") ? static_cast<int>(r.get_positive("sliding_window")) : 0;
  if (c.arch == Architecture::kGemma3) {
    parse_gemma3_text(j, c, source);
  } else if (window > 0) {
    if (c.arch == Architecture::kMistral || c.arch == Architecture::kLlama ||
        c.arch == Architecture::kMixtral) {
      if (c.arch != Architecture::kLlama) c.sliding_window.assign(c.num_layers, window);
    } else if (r.get_bool("use_sliding_window", false)) {
      if (j.contains("layer_types") && j["layer_types"].is_array() &&
          static_cast<int>(j["layer_types"].size()) == c.num_layers) {
        for (int l = 0; l < c.num_layers; ++l)
          if (j["layer_types"][l] == "sliding_attention") c.sliding_window[l] = window;
      } else {
        const int first = static_cast<int>(r.get_int("max_window_layers", c.num_layers));
        for (int l = std::max(first, 0); l < c.num_layers; ++l) c.sliding_window[l] = window;
      }
    }
  }

  if (r.has("rope_scaling")) {
    const json& s = j["rope_scaling"];
    if (!s.is_object()) fail(source, ": \"rope_scaling\" must be an object");
    std::string type = s.value("rope_type", s.value("type", std::string("default")));
    Reader sr(s, source);
    if (type == "default") {
      c.rope_scaling.type = RopeScaling::Type::kNone;
    } else if (type == "linear") {
      c.rope_scaling.type = RopeScaling::Type::kLinear;
      c.rope_scaling.factor = static_cast<float>(sr.get_float("factor", 1.0));
    } else if (type == "llama3") {
      c.rope_scaling.type = RopeScaling::Type::kLlama3;
      c.rope_scaling.factor = static_cast<float>(sr.get_float("factor", 8.0));
      c.rope_scaling.low_freq_factor = static_cast<float>(sr.get_float("low_freq_factor", 1.0));
      c.rope_scaling.high_freq_factor = static_cast<float>(sr.get_float("high_freq_factor", 4.0));
      c.rope_scaling.original_max_position_embeddings =
          sr.get_positive("original_max_position_embeddings", 8192);
      if (c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor)
        fail(source, ": rope_scaling high_freq_factor must exceed low_freq_factor");
    } else {
      fail(source, ": rope_scaling type '", type, "' is not supported (default, linear, llama3)");
    }
    if (!(c.rope_scaling.factor > 0)) fail(source, ": rope_scaling factor must be positive");
  }

  if (r.has("bos_token_id") && j["bos_token_id"].is_number_integer())
    c.bos_token_id = static_cast<int32_t>(j["bos_token_id"].get<int64_t>());
  if (j.contains("eos_token_id")) add_token_ids(j["eos_token_id"], c.eos_token_ids, source, "eos_token_id");
  if (gen.is_object()) {
    if (gen.contains("eos_token_id"))
      add_token_ids(gen["eos_token_id"], c.eos_token_ids, source, "eos_token_id");
    Reader g(gen, source);
    if (g.has("temperature")) c.generation.temperature = static_cast<float>(g.get_float("temperature", 1.0));
    if (g.has("top_p")) c.generation.top_p = static_cast<float>(g.get_float("top_p", 1.0));
    if (g.has("top_k")) c.generation.top_k = static_cast<int>(g.get_int("top_k"));
    if (g.has("min_p")) c.generation.min_p = static_cast<float>(g.get_float("min_p", 0.0));
    if (g.has("repetition_penalty"))
      c.generation.repetition_penalty = static_cast<float>(g.get_float("repetition_penalty", 1.0));
    if (g.has("max_new_tokens")) c.generation.max_new_tokens = static_cast<int>(g.get_int("max_new_tokens"));
  }
  for (int32_t id : c.eos_token_ids)
    if (id < 0 || id >= c.vocab_size) fail(source, ": eos_token_id ", id, " outside the vocabulary");
  return c;
}

namespace {

// Sub-configs inside a LLaVA config.json are written by transformers as differences from
// their class defaults, so a missing field means the default of that config class.
json text_defaults(const std::string& model_type, const std::string& source) {
  if (model_type == "llama")
    return {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 32000}, {"hidden_size", 4096},
            {"intermediate_size", 11008}, {"num_hidden_layers", 32}, {"num_attention_heads", 32},
            {"hidden_act", "silu"}, {"max_position_embeddings", 2048}, {"rms_norm_eps", 1e-6},
            {"rope_theta", 10000.0}, {"tie_word_embeddings", false}, {"attention_bias", false},
            {"mlp_bias", false}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  if (model_type == "mistral")
    return {{"architectures", {"MistralForCausalLM"}}, {"vocab_size", 32000}, {"hidden_size", 4096},
            {"intermediate_size", 14336}, {"num_hidden_layers", 32}, {"num_attention_heads", 32},
            {"num_key_value_heads", 8}, {"hidden_act", "silu"},
            {"max_position_embeddings", 4096 * 32}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0},
            {"tie_word_embeddings", false}, {"sliding_window", 4096}, {"bos_token_id", 1},
            {"eos_token_id", 2}};
  if (model_type == "qwen2")
    return {{"architectures", {"Qwen2ForCausalLM"}}, {"vocab_size", 151936}, {"hidden_size", 4096},
            {"intermediate_size", 22016}, {"num_hidden_layers", 32}, {"num_attention_heads", 32},
            {"num_key_value_heads", 32}, {"hidden_act", "silu"}, {"max_position_embeddings", 32768},
            {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0}, {"tie_word_embeddings", false},
            {"use_sliding_window", false}, {"sliding_window", 4096}, {"max_window_layers", 28}};
  if (model_type == "qwen3")
    return {{"architectures", {"Qwen3ForCausalLM"}}, {"vocab_size", 151936}, {"hidden_size", 4096},
            {"intermediate_size", 22016}, {"num_hidden_layers", 32}, {"num_attention_heads", 32},
            {"num_key_value_heads", 32}, {"head_dim", 128}, {"hidden_act", "silu"},
            {"max_position_embeddings", 32768}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0},
            {"tie_word_embeddings", false}, {"attention_bias", false},
            {"use_sliding_window", false}, {"sliding_window", 4096}, {"max_window_layers", 28}};
  fail(source, ": text_config model_type '", model_type,
       "' is not supported (llama, mistral, qwen2, qwen3)");
}

json vision_defaults(const std::string& model_type, const std::string& source) {
  if (model_type == "clip_vision_model")
    return {{"hidden_size", 768}, {"intermediate_size", 3072}, {"num_hidden_layers", 12},
            {"num_attention_heads", 12}, {"num_channels", 3}, {"image_size", 224},
            {"patch_size", 32}, {"hidden_act", "quick_gelu"}, {"layer_norm_eps", 1e-5}};
  if (model_type == "siglip_vision_model")
    return {{"hidden_size", 768}, {"intermediate_size", 3072}, {"num_hidden_layers", 12},
            {"num_attention_heads", 12}, {"num_channels", 3}, {"image_size", 224},
            {"patch_size", 16}, {"hidden_act", "gelu_pytorch_tanh"}, {"layer_norm_eps", 1e-6}};
  fail(source, ": vision_config model_type '", model_type,
       "' is not supported (clip_vision_model, siglip_vision_model)");
}

// The activations the encoder ops implement (Activation in engine/backend.h).
void check_encoder_activation(const json& act, const std::string& source, const char* key) {
  static const char* const kSupported[] = {"gelu", "gelu_pytorch_tanh", "gelu_new", "quick_gelu"};
  if (act.is_string())
    for (const char* s : kSupported)
      if (act.get<std::string>() == s) return;
  fail(source, ": ", key, " ", act.dump(),
       " is not supported (gelu, gelu_pytorch_tanh, gelu_new, quick_gelu)");
}

json merged(json defaults, const json& given) {
  for (auto it = given.begin(); it != given.end(); ++it)
    if (!it.value().is_null()) defaults[it.key()] = it.value();
  return defaults;
}

VisionConfig parse_vision(const json& given, const std::string& source) {
  std::string model_type = "clip_vision_model";
  if (given.contains("model_type") && given["model_type"].is_string())
    model_type = given["model_type"].get<std::string>();
  const json v = merged(vision_defaults(model_type, source), given);
  const std::string src = source + " vision_config";
  Reader r(v, src);
  VisionConfig vc;
  vc.model_type = model_type;
  vc.type = model_type == "siglip_vision_model" ? VisionConfig::Type::kSiglip
                                                : VisionConfig::Type::kClip;
  vc.hidden_size = r.get_positive("hidden_size");
  vc.intermediate_size = r.get_positive("intermediate_size");
  vc.num_layers = static_cast<int>(r.get_positive("num_hidden_layers"));
  vc.num_heads = static_cast<int>(r.get_positive("num_attention_heads"));
  vc.num_channels = static_cast<int>(r.get_positive("num_channels"));
  vc.image_size = static_cast<int>(r.get_positive("image_size"));
  vc.patch_size = static_cast<int>(r.get_positive("patch_size"));
  vc.layer_norm_eps = static_cast<float>(r.get_float("layer_norm_eps", 1e-5));
  check_encoder_activation(v["hidden_act"], src, "hidden_act");
  vc.hidden_act = v["hidden_act"].get<std::string>();
  if (vc.hidden_size % vc.num_heads != 0)
    fail(src, ": hidden_size ", vc.hidden_size, " is not a multiple of num_attention_heads ",
         vc.num_heads);
  // A stride-P convolution without padding: a remainder of image_size / patch_size pixels
  // on the right and bottom is never seen (SigLIP so400m: 384 px, patch 14, 27 x 27 grid).
  if (vc.patch_size > vc.image_size)
    fail(src, ": patch_size ", vc.patch_size, " exceeds image_size ", vc.image_size);
  return vc;
}

// Gemma3ForConditionalGeneration: a Gemma 3 text_config (Gemma3TextConfig defaults), a
// SigLIP vision_config (SiglipVisionConfig defaults), the pooled projector and the image
// markup tokens.
ModelConfig parse_gemma3_multimodal(const json& j, const json& gen, const std::string& source) {
  const json text_given = j.contains("text_config") && j["text_config"].is_object()
                              ? j["text_config"] : json::object();
  json text = merged(gemma3_text_defaults(), text_given);
  text["architectures"] = {"Gemma3ForCausalLM"};
  for (const char* key : {"bos_token_id", "eos_token_id"})
    if (j.contains(key) && !j[key].is_null() && !text_given.contains(key)) text[key] = j[key];
  ModelConfig c = ModelConfig::from_json(text, gen, source + " text_config");
  c.architecture_name = j["architectures"][0].get<std::string>();

  MultimodalConfig m;
  json vision_given = j.contains("vision_config") && j["vision_config"].is_object()
                          ? j["vision_config"] : json::object();
  if (!vision_given.contains("model_type")) vision_given["model_type"] = "siglip_vision_model";
  if (vision_given["model_type"] != "siglip_vision_model")
    fail(source, ": vision_config model_type ", vision_given["model_type"].dump(),
         " is not supported for Gemma 3 (siglip_vision_model)");
  m.vision = parse_vision(vision_given, source);
  m.feature_layers = {-1};
  m.select = MultimodalConfig::Select::kFull;
  m.projector_bias = false;
  Reader r(j, source);
  MultimodalConfig::Gemma g;
  g.mm_tokens_per_image = static_cast<int>(r.get_positive("mm_tokens_per_image", 256));
  g.boi_token_id = static_cast<int32_t>(r.get_int("boi_token_index", 255999));
  g.eoi_token_id = static_cast<int32_t>(r.get_int("eoi_token_index", 256000));
  m.image_token_id = static_cast<int32_t>(r.get_int("image_token_index", 262144));
  for (auto [key, id] : {std::pair<const char*, int32_t>{"image_token_index", m.image_token_id},
                         {"boi_token_index", g.boi_token_id}, {"eoi_token_index", g.eoi_token_id}})
    if (id < 0 || id >= c.vocab_size)
      fail(source, ": ", key, " ", id, " outside the vocabulary [0, ", c.vocab_size, ")");
  // The pooling window must tile the patch grid exactly (transformers' AvgPool2d would drop
  // the remainder; a Gemma 3 checkpoint never has one).
  const int grid = m.vision.grid();
  const int side = static_cast<int>(std::lround(std::sqrt(static_cast<double>(g.mm_tokens_per_image))));
  if (side * side != g.mm_tokens_per_image || side > grid || grid % side != 0)
    fail(source, ": mm_tokens_per_image ", g.mm_tokens_per_image, " is not a square that tiles the ",
         grid, " x ", grid, " patch grid (image_size ", m.vision.image_size, ", patch_size ",
         m.vision.patch_size, ")");
  m.gemma = g;
  c.multimodal = std::move(m);
  return c;
}

ModelConfig parse_llava(const json& j, const json& gen, const std::string& source) {
  // The language model: text_config with its class defaults, parsed as a text-only config.
  const json text_given = j.contains("text_config") && j["text_config"].is_object()
                              ? j["text_config"] : json::object();
  std::string text_type = "llama";
  if (text_given.contains("model_type") && text_given["model_type"].is_string())
    text_type = text_given["model_type"].get<std::string>();
  json text = merged(text_defaults(text_type, source), text_given);
  if (!text_given.contains("architectures") || !text_given["architectures"].is_array() ||
      text_given["architectures"].empty())
    text["architectures"] = text_defaults(text_type, source)["architectures"];
  // Token ids and tying may sit at the top level (tie: either level, as LlavaConfig does).
  for (const char* key : {"bos_token_id", "eos_token_id"})
    if (j.contains(key) && !j[key].is_null() && !text_given.contains(key)) text[key] = j[key];
  if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"] == true)
    text["tie_word_embeddings"] = true;
  if (text["architectures"][0] == "LlavaForConditionalGeneration")
    fail(source, ": text_config cannot itself be LLaVA");
  ModelConfig c = ModelConfig::from_json(text, gen, source + " text_config");
  c.architecture_name = j["architectures"][0].get<std::string>();

  MultimodalConfig m;
  const json vision_given = j.contains("vision_config") && j["vision_config"].is_object()
                                ? j["vision_config"]
                                : json{{"model_type", "clip_vision_model"},
                                       {"intermediate_size", 4096}, {"hidden_size", 1024},
                                       {"patch_size", 14}, {"image_size", 336},
                                       {"num_hidden_layers", 24}, {"num_attention_heads", 16}};
  m.vision = parse_vision(vision_given, source);

  Reader r(j, source);
  m.image_token_id = static_cast<int32_t>(
      r.has("image_token_index") ? r.get_int("image_token_index") : r.get_int("image_token_id", 32000));
  if (m.image_token_id < 0 || m.image_token_id >= c.vocab_size)
    fail(source, ": image_token_index ", m.image_token_id, " outside the vocabulary [0, ",
         c.vocab_size, ")");

  if (!r.has("vision_feature_layer")) {
    m.feature_layers = {-2};
  } else {
    const json& fl = j["vision_feature_layer"];
    auto add = [&](const json& x) {
      if (!x.is_number_integer())
        fail(source, ": \"vision_feature_layer\" must be an integer or a list of integers");
      m.feature_layers.push_back(static_cast<int>(x.get<int64_t>()));
    };
    if (fl.is_array()) {
      for (const auto& x : fl) add(x);
    } else {
      add(fl);
    }
    if (m.feature_layers.empty()) fail(source, ": \"vision_feature_layer\" is an empty list");
  }
  const int layers = m.vision.num_layers;
  for (int l : m.feature_layers)
    if (l < -(layers + 1) || l > layers)
      fail(source, ": vision_feature_layer ", l, " outside the ", layers + 1,
           " hidden states of the vision tower");

  std::string select = "default";
  if (r.has("vision_feature_select_strategy")) {
    if (!j["vision_feature_select_strategy"].is_string())
      fail(source, ": \"vision_feature_select_strategy\" must be a string");
    select = j["vision_feature_select_strategy"].get<std::string>();
  }
  if (select == "default") {
    m.select = MultimodalConfig::Select::kDefault;
  } else if (select == "full") {
    m.select = MultimodalConfig::Select::kFull;
  } else {
    fail(source, ": vision_feature_select_strategy '", select, "' (expected default or full)");
  }
  if (r.has("projector_hidden_act")) {
    check_encoder_activation(j["projector_hidden_act"], source, "projector_hidden_act");
    m.projector_hidden_act = j["projector_hidden_act"].get<std::string>();
  }
  m.projector_bias = r.get_bool("multimodal_projector_bias", true);
  if (m.tokens_per_image() <= 0) fail(source, ": an image would have no tokens");
  c.multimodal = std::move(m);
  return c;
}

}  // namespace

ModelConfig ModelConfig::from_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path cfg = fs::path(dir) / "config.json";
  if (!fs::exists(cfg)) fail(dir, ": no config.json");
  const json j = read_json_file(cfg.string());
  json gen;
  const fs::path gen_path = fs::path(dir) / "generation_config.json";
  if (fs::exists(gen_path)) gen = read_json_file(gen_path.string());
  return from_json(j, gen, cfg.string());
}

}  // namespace iris
