// The memory plan made from config.json before loading equals what the loaded model holds,
// for each architecture switch (biases, q/k norm, tied embeddings, GQA/MQA) and TP degree.
#include <catch2/catch.hpp>

#include "engine/backend.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/memory_plan.h"
#include "engine/models/model.h"
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
