// Gemma 3 config.json parsing: Gemma3TextConfig's defaults for omitted fields, the choice of
// sliding-window layers (layer_types or sliding_window_pattern), the per-kind RoPE bases,
// and errors that name the field.
#include <catch2/catch.hpp>

#include "engine/core/check.h"
#include "engine/loader/model_config.h"

using namespace iris;
using Catch::Matchers::Contains;
using json = nlohmann::json;

namespace {

json gemma3_1b() {
  // google/gemma-3-1b-it's config.json (the fields that matter here).
  return {{"architectures", {"Gemma3ForCausalLM"}}, {"model_type", "gemma3_text"},
          {"vocab_size", 262144}, {"hidden_size", 1152}, {"intermediate_size", 6912},
          {"num_hidden_layers", 26}, {"num_attention_heads", 4}, {"num_key_value_heads", 1},
          {"head_dim", 256}, {"hidden_activation", "gelu_pytorch_tanh"},
          {"query_pre_attn_scalar", 256}, {"rope_theta", 1000000}, {"rope_local_base_freq", 10000},
          {"rope_scaling", nullptr}, {"sliding_window", 512}, {"sliding_window_pattern", 6},
          {"final_logit_softcapping", nullptr}, {"attn_logit_softcapping", nullptr},
          {"rms_norm_eps", 1e-6}, {"bos_token_id", 2}, {"eos_token_id", {1, 106}},
          {"max_position_embeddings", 32768}};
}

}  // namespace

TEST_CASE("Gemma 3 text config") {
  SECTION("the 1B config: every sixth layer global, tied embeddings, q/k norms") {
    const ModelConfig c = ModelConfig::from_json(gemma3_1b(), nullptr, "config.json");
    REQUIRE(c.arch == Architecture::kGemma3);
    REQUIRE(c.gemma);
    REQUIRE(c.tie_word_embeddings);
    REQUIRE(c.qk_norm);
    REQUIRE(c.head_dim == 256);
    REQUIRE(c.gemma->query_pre_attn_scalar == 256.0f);
    REQUIRE(c.gemma->final_logit_softcapping == 0.0f);
    REQUIRE(c.gemma->rope_local_base_freq == 10000.0f);
    REQUIRE(c.rope_theta == 1000000.0f);
    for (int l = 0; l < 26; ++l) REQUIRE(c.sliding_window[l] == ((l + 1) % 6 ? 512 : 0));
  }
  SECTION("omitted fields take Gemma3TextConfig's defaults") {
    json j = {{"architectures", {"Gemma3ForCausalLM"}}, {"num_hidden_layers", 3},
              {"vocab_size", 1000}};
    const ModelConfig c = ModelConfig::from_json(j, nullptr, "config.json");
    REQUIRE(c.hidden_size == 2304);
    REQUIRE(c.head_dim == 256);
    REQUIRE(c.num_kv_heads == 4);
    REQUIRE(c.sliding_window == std::vector<int>{4096, 4096, 4096});
    REQUIRE(c.tie_word_embeddings);
  }
  SECTION("layer_types picks the sliding layers; linear scaling; soft-cap") {
    json j = gemma3_1b();
    j["num_hidden_layers"] = 3;
    j["layer_types"] = {"full_attention", "sliding_attention", "full_attention"};
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
    j["final_logit_softcapping"] = 30.0;
    const ModelConfig c = ModelConfig::from_json(j, nullptr, "config.json");
    REQUIRE(c.sliding_window == std::vector<int>{0, 512, 0});
    REQUIRE(c.rope_scaling.type == RopeScaling::Type::kLinear);
    REQUIRE(c.rope_scaling.factor == 8.0f);
    REQUIRE(c.gemma->final_logit_softcapping == 30.0f);
  }
  SECTION("transformers 5's rope_parameters per layer type") {
    json j = gemma3_1b();
    j.erase("rope_theta");
    j.erase("rope_local_base_freq");
    j["rope_parameters"] = {
        {"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1000000.0}}},
        {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}};
    const ModelConfig c = ModelConfig::from_json(j, nullptr, "config.json");
    REQUIRE(c.rope_theta == 1000000.0f);
    REQUIRE(c.rope_scaling.type == RopeScaling::Type::kLinear);
    REQUIRE(c.rope_scaling.factor == 8.0f);
    REQUIRE(c.gemma->rope_local_base_freq == 10000.0f);
    j["rope_parameters"]["full_attention"]["rope_type"] = "yarn";
    REQUIRE_THROWS_WITH(ModelConfig::from_json(j, nullptr, "config.json"),
                        Contains("rope_parameters.full_attention.rope_type 'yarn'"));
  }
  SECTION("errors name the field") {
    json j = gemma3_1b();
    j["hidden_activation"] = "silu";
    REQUIRE_THROWS_WITH(ModelConfig::from_json(j, nullptr, "config.json"),
                        Contains("hidden_activation \"silu\""));
    j = gemma3_1b();
    j["layer_types"] = {"full_attention"};
    REQUIRE_THROWS_WITH(ModelConfig::from_json(j, nullptr, "config.json"),
                        Contains("layer_types"));
    j = gemma3_1b();
    j["num_hidden_layers"] = 2;
    j["layer_types"] = {"full_attention", "chunked_attention"};
    REQUIRE_THROWS_WITH(ModelConfig::from_json(j, nullptr, "config.json"),
                        Contains("layer_types[1] \"chunked_attention\""));
    j = gemma3_1b();
    j["query_pre_attn_scalar"] = -1;
    REQUIRE_THROWS_WITH(ModelConfig::from_json(j, nullptr, "config.json"),
                        Contains("query_pre_attn_scalar"));
    j = gemma3_1b();
    j["sliding_window"] = 0;
    REQUIRE_THROWS_WITH(ModelConfig::from_json(j, nullptr, "config.json"),
                        Contains("sliding_window"));
  }
}
