// Test helpers: checkpoint writers (see test_util.h).
#include "tests/unit/test_util.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

namespace iris::test {

namespace fs = std::filesystem;

std::string temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("iris_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
}

std::string safetensors_bytes(const std::map<std::string, RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape},
                    {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::string out(8, '\0');
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + h + data;
}

RawTensor random_f32(std::vector<int64_t> shape, uint32_t seed, float scale) {
  RawTensor t;
  t.shape = shape;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  t.bytes.resize(static_cast<size_t>(n) * 4);
  for (int64_t i = 0; i < n; ++i) {
    float v = dist(rng);
    std::memcpy(t.bytes.data() + i * 4, &v, 4);
  }
  return t;
}

nlohmann::json small_llama_config(const nlohmann::json& overrides) {
  nlohmann::json c = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 64},
                      {"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 2},
                      {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 128},
                      {"eos_token_id", 2}, {"hidden_act", "silu"}};
  if (overrides.is_object()) c.merge_patch(overrides);
  return c;
}

std::map<std::string, RawTensor> random_weights(const nlohmann::json& c, uint32_t seed) {
  const int64_t h = c["hidden_size"], inter = c["intermediate_size"], v = c["vocab_size"];
  const int64_t nh = c["num_attention_heads"];
  const int64_t nkv = c.value("num_key_value_heads", nh);
  const int64_t hd = c.contains("head_dim") ? c["head_dim"].get<int64_t>() : h / nh;
  const std::string arch = c["architectures"][0];
  std::map<std::string, RawTensor> w;
  w["model.embed_tokens.weight"] = random_f32({v, h}, seed++, 1.0f);
  w["model.norm.weight"] = random_f32({h}, seed++, 0.1f);
  if (!c.value("tie_word_embeddings", false)) w["lm_head.weight"] = random_f32({v, h}, seed++);
  for (int l = 0; l < c["num_hidden_layers"].get<int>(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w[p + "input_layernorm.weight"] = random_f32({h}, seed++, 0.1f);
    w[p + "post_attention_layernorm.weight"] = random_f32({h}, seed++, 0.1f);
    w[p + "self_attn.q_proj.weight"] = random_f32({nh * hd, h}, seed++);
    w[p + "self_attn.k_proj.weight"] = random_f32({nkv * hd, h}, seed++);
    w[p + "self_attn.v_proj.weight"] = random_f32({nkv * hd, h}, seed++);
    w[p + "self_attn.o_proj.weight"] = random_f32({h, nh * hd}, seed++);
    if (arch == "Qwen2ForCausalLM" || arch == "Qwen2MoeForCausalLM") {
      w[p + "self_attn.q_proj.bias"] = random_f32({nh * hd}, seed++);
      w[p + "self_attn.k_proj.bias"] = random_f32({nkv * hd}, seed++);
      w[p + "self_attn.v_proj.bias"] = random_f32({nkv * hd}, seed++);
    }
    if (arch == "Qwen3ForCausalLM" || arch == "Qwen3MoeForCausalLM") {
      w[p + "self_attn.q_norm.weight"] = random_f32({hd}, seed++, 0.1f);
      w[p + "self_attn.k_norm.weight"] = random_f32({hd}, seed++, 0.1f);
    }
    w[p + "mlp.gate_proj.weight"] = random_f32({inter, h}, seed++);
    w[p + "mlp.up_proj.weight"] = random_f32({inter, h}, seed++);
    w[p + "mlp.down_proj.weight"] = random_f32({h, inter}, seed++);
  }
  // Norm weights around 1 rather than 0.
  for (auto& [name, t] : w) {
    if (name.find("norm") == std::string::npos) continue;
    for (size_t i = 0; i < t.bytes.size(); i += 4) {
      float x;
      std::memcpy(&x, t.bytes.data() + i, 4);
      x += 1.0f;
      std::memcpy(t.bytes.data() + i, &x, 4);
    }
  }
  return w;
}

std::string write_checkpoint(const std::string& name, const nlohmann::json& config,
                             const std::map<std::string, RawTensor>& weights) {
  const std::string dir = temp_dir(name);
  write_file(dir + "/config.json", config.dump());
  write_file(dir + "/model.safetensors", safetensors_bytes(weights));
  return dir;
}

}  // namespace iris::test
