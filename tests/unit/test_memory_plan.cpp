// The memory plan made from config.json before loading equals what the loaded model holds,
// for each architecture switch (biases, q/k norm, tied embeddings, GQA/MQA) and TP degree.
#include <catch2/catch.hpp>

#include "engine/backend.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/memory_plan.h"
#include "engine/models/model.h"
#include "engine/models/weight_names.h"
#include "tests/unit/test_util.h"

using namespace iris;
using namespace iris::test;

TEST_CASE("memory plan equals the loaded model's weight and KV bytes") {
  const std::vector<nlohmann::json> variants = {
      small_llama_config(),
      small_llama_config({{"architectures", {"Qwen2ForCausalLM"}}, {"tie_word_embeddings", true}}),
      small_llama_config({{"architectures", {"Qwen3ForCausalLM"}}, {"head_dim", 16}}),
      small_llama_config({{"attention_bias", true}, {"mlp_bias", true}, {"num_key_value_heads", 1}}),
  };
  int checked = 0;
  for (size_t v = 0; v < variants.size(); ++v) {
    auto weights = random_weights(variants[v], 3);
    if (variants[v].value("mlp_bias", false)) {  // Llama biases (random_weights writes Qwen2's only)
      const int64_t h = 32, inter = 48, kv = 8;
      for (int l = 0; l < 2; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        weights[p + "self_attn.q_proj.bias"] = random_f32({h}, 10);
        weights[p + "self_attn.k_proj.bias"] = random_f32({kv}, 11);
        weights[p + "self_attn.v_proj.bias"] = random_f32({kv}, 12);
        weights[p + "self_attn.o_proj.bias"] = random_f32({h}, 13);
        weights[p + "mlp.gate_proj.bias"] = random_f32({inter}, 14);
        weights[p + "mlp.up_proj.bias"] = random_f32({inter}, 15);
        weights[p + "mlp.down_proj.bias"] = random_f32({h}, 16);
      }
    }
    const auto dir = write_checkpoint("plan" + std::to_string(v), variants[v], weights);
    const ModelConfig cfg = ModelConfig::from_dir(dir);
    auto ck = Checkpoint::open(dir);
    for (int world : {1, 2})
    for (DType wd : {DType::F32, DType::BF16}) {  // fp32 or 16-bit weight matrices
      const MemoryPlan plan = plan_memory(cfg, DType::F32, world, 16, wd);
      REQUIRE(plan.ranks.size() == static_cast<size_t>(world));
      for (int r = 0; r < world; ++r) {
        auto backend = make_cpu_backend(1, wd);
        auto model = load_model(*ck, cfg, *backend, ParallelConfig{r, world});
        INFO("variant " << v << " rank " << r << " of " << world << " weights " << dtype_name(wd));
        CHECK(plan.ranks[r].weight_bytes == model->weight_bytes());
        CHECK(plan.ranks[r].kv_bytes_per_block == kv_bytes_per_block(*backend, *model, 16));
        ++checked;
      }
    }
  }
  CHECK(checked == 24);
}

TEST_CASE("memory plan counts mixture-of-experts layers as MoeBlock holds them") {
  // Mixtral (experts only) and Qwen2-MoE (a shared expert, and every other layer dense), each
  // sharded and with whole experts per rank.
  const std::vector<nlohmann::json> variants = {
      small_llama_config({{"architectures", {"MixtralForCausalLM"}}, {"num_local_experts", 6},
                          {"num_experts_per_tok", 2}}),
      small_llama_config({{"architectures", {"Qwen2MoeForCausalLM"}}, {"num_experts", 5},
                          {"num_experts_per_tok", 2}, {"moe_intermediate_size", 24},
                          {"shared_expert_intermediate_size", 40}, {"decoder_sparse_step", 2}}),
  };
  int checked = 0;
  for (size_t v = 0; v < variants.size(); ++v) {
    const auto dir0 = temp_dir("planmoe-cfg" + std::to_string(v));
    write_file(dir0 + "/config.json", variants[v].dump());
    const ModelConfig cfg = ModelConfig::from_dir(dir0);
    REQUIRE(cfg.moe);
    auto weights = random_weights(variants[v], 5);
    const int64_t h = cfg.hidden_size, inter = cfg.moe->expert_intermediate_size;
    const int64_t sh = cfg.moe->shared_expert_intermediate_size;
    uint32_t seed = 100;
    for (int l = 0; l < cfg.num_layers; ++l) {
      if (!cfg.moe->sparse_layer[l]) continue;
      const MoeWeightNames names = moe_weight_names(cfg, "model.layers." + std::to_string(l) + ".");
      weights[names.router] = random_f32({cfg.moe->num_experts, h}, seed++);
      for (int e = 0; e < cfg.moe->num_experts; ++e) {
        weights[names.expert_gate(e)] = random_f32({inter, h}, seed++);
        weights[names.expert_up(e)] = random_f32({inter, h}, seed++);
        weights[names.expert_down(e)] = random_f32({h, inter}, seed++);
      }
      if (sh > 0) {
        weights[names.shared_expert + "gate_proj.weight"] = random_f32({sh, h}, seed++);
        weights[names.shared_expert + "up_proj.weight"] = random_f32({sh, h}, seed++);
        weights[names.shared_expert + "down_proj.weight"] = random_f32({h, sh}, seed++);
        weights[names.shared_expert_gate] = random_f32({1, h}, seed++);
      }
    }
    const auto dir = write_checkpoint("planmoe" + std::to_string(v), variants[v], weights);
    auto ck = Checkpoint::open(dir);
    for (int world : {1, 2, 4})
    for (bool ep : {false, true}) {
      if (!ep && inter % world != 0) continue;
      const MemoryPlan plan = plan_memory(cfg, DType::F32, world, 16, DType::BF16, std::nullopt, ep);
      REQUIRE(plan.ranks.size() == static_cast<size_t>(world));
      for (int r = 0; r < world; ++r) {
        auto backend = make_cpu_backend(1, DType::BF16);
        auto model = load_model(*ck, cfg, *backend, ParallelConfig{r, world, ep});
        INFO("variant " << v << " rank " << r << " of " << world << (ep ? " expert-parallel" : ""));
        CHECK(plan.ranks[r].weight_bytes == model->weight_bytes());
        ++checked;
      }
    }
  }
  CHECK(checked == 28);
}
