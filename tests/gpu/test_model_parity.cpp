// Whole-model parity: the same bf16 checkpoint run on the CPU reference backend (fp32
// arithmetic) and the CUDA backend (bf16 activations), through ModelRunner with chunked
// prefill over scattered KV blocks and then teacher-forced decode steps. Per step the
// logits must agree to a few percent and the greedy token must match, except at near-ties
// (the CPU's top-1 and the GPU's pick within the measured noise). Then the Generator's
// greedy output must match the CPU's up to a near-tie. Checkpoints: small random Llama,
// Qwen3 (qk-norm, head_dim 128), Mistral (sliding window), Qwen2 (biases, tied embeddings)
// written here; plus, when IRIS_PARITY_DIR names a directory of checkpoints (the parity
// fixtures of tests/parity/make_checkpoints.py), every bf16 checkpoint in it (f32/f16 ones
// would give the backends different weights: the GPU holds bf16). A 32-layer random model
// measures how far the bf16 residual stream drifts from the fp32 CPU path.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>

#include "engine/core/dtype.h"
#include "engine/engine.h"
#include "engine/generator.h"
#include "engine/loader/checkpoint.h"
#include "engine/model_runner.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/test_util.h"

using namespace iris;
using namespace iris::gpu_test;
using namespace iris::test;

namespace {

struct Loaded {
  std::unique_ptr<Checkpoint> ck;
  ModelConfig cfg;
  std::unique_ptr<Model> model;
  Loaded(const std::string& dir, Backend& b)
      : ck(Checkpoint::open(dir)),
        cfg(ModelConfig::from_dir(dir)),
        model(load_model(*ck, cfg, b)) {}
};

// Random weights at 1/sqrt(fan_in) scale, stored as BF16 so both backends hold the same
// values (the CPU converts them to fp32 exactly).
std::string write_bf16_checkpoint(const std::string& name, const nlohmann::json& cfg) {
  auto w = random_weights(cfg, 17);
  for (auto& [tname, t] : w) {
    const bool proj = tname.find("proj.weight") != std::string::npos || tname == "lm_head.weight";
    const float f = proj ? 1.0f / std::sqrt(static_cast<float>(t.shape[1])) / 0.2f : 1.0f;
    std::vector<uint8_t> out(t.bytes.size() / 2);
    for (size_t i = 0; i < t.bytes.size() / 4; ++i) {
      float x;
      std::memcpy(&x, t.bytes.data() + 4 * i, 4);
      const uint16_t h = f32_to_bf16(x * f);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
    t.bytes = std::move(out);
    t.dtype = "BF16";
  }
  return write_checkpoint(name, cfg, w);
}

// Logits after the prompt (prefilled in chunks) and after each teacher-forced token.
std::vector<std::vector<float>> teacher_forced(Backend& b, Model& m,
                                               const std::vector<int32_t>& tokens, int prompt_len,
                                               int chunk) {
  const int bs = 16;
  const int num_blocks = static_cast<int>(tokens.size()) / bs + 4;
  std::vector<int32_t> table(num_blocks);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(3));
  KvCache kv = allocate_kv_cache(b, m, num_blocks, bs);
  ModelRunner r(b, m, kv, RunnerLimits{std::max(chunk, 8), 2, num_blocks});
  std::vector<std::vector<float>> out;
  for (int pos = 0; pos < prompt_len; pos += chunk) {
    const int n = std::min(chunk, prompt_len - pos);
    const bool last = pos + n == prompt_len;
    const auto& l = r.run({SeqChunk{tokens.data() + pos, n, pos, table.data(), num_blocks, last}});
    if (last) out.push_back(l);
  }
  for (int pos = prompt_len; pos < static_cast<int>(tokens.size()); ++pos)
    out.push_back(r.run({SeqChunk{tokens.data() + pos, 1, pos, table.data(), num_blocks, true}}));
  return out;
}

int argmax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

double rms_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (static_cast<double>(a[i]) - b[i]) * (a[i] - b[i]);
  return std::sqrt(s / static_cast<double>(a.size()));
}

// True when the GPU's pick is the CPU's, or within the noise of the CPU's best.
bool agrees(const std::vector<float>& cpu_l, const std::vector<float>& gpu_l, double* gap) {
  const int c = argmax(cpu_l), g = argmax(gpu_l);
  *gap = cpu_l[c] - cpu_l[g];
  return c == g || *gap <= 3.0 * rms_diff(cpu_l, gpu_l) + 1e-3;
}

void check_model(const std::string& dir, int prompt_len, int new_tokens, uint32_t seed) {
  INFO("checkpoint " << dir);
  Loaded c(dir, cpu()), g(dir, gpu());
  const int vocab = static_cast<int>(c.cfg.vocab_size);
  std::mt19937 rng(seed);
  std::vector<int32_t> prompt(prompt_len);
  for (auto& t : prompt) t = 3 + static_cast<int32_t>(rng() % (vocab - 3));

  // The CPU's greedy continuation, fed to both backends.
  Generator cg(cpu(), *c.model, 64);
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_tokens = new_tokens;
  greedy.ignore_eos = true;
  const auto cpu_out = cg.generate(prompt, greedy);
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), cpu_out.output_ids.begin(), cpu_out.output_ids.end() - 1);

  const auto lc = teacher_forced(cpu(), *c.model, seq, prompt_len, 32);
  const auto lg = teacher_forced(gpu(), *g.model, seq, prompt_len, 32);
  REQUIRE(lc.size() == lg.size());
  int exact = 0;
  for (size_t i = 0; i < lc.size(); ++i) {
    INFO("step " << i);
    require_close(lc[i], lg[i], 5e-2, "logits");
    double gap = 0;
    CHECK(agrees(lc[i], lg[i], &gap));
    exact += argmax(lc[i]) == argmax(lg[i]);
  }
  CHECK(exact >= static_cast<int>(0.8 * lc.size()));

  // End to end: the GPU generator's greedy tokens follow the CPU's until a near-tie.
  Generator gg(gpu(), *g.model, 64);
  const auto gpu_out = gg.generate(prompt, greedy);
  REQUIRE(gpu_out.output_ids.size() == cpu_out.output_ids.size());
  for (size_t i = 0; i < gpu_out.output_ids.size(); ++i) {
    if (gpu_out.output_ids[i] == cpu_out.output_ids[i]) continue;
    double gap = 0;
    INFO("first divergence at token " << i << ": cpu " << cpu_out.output_ids[i] << " gpu "
                                      << gpu_out.output_ids[i]);
    CHECK(agrees(lc[i], lg[i], &gap));
    break;
  }
}

}  // namespace

TEST_CASE("greedy parity of whole models between the CPU and CUDA backends", "[model]") {
  struct Arch {
    const char* name;
    nlohmann::json over;
  };
  auto a = GENERATE(Arch{"llama",
                         {{"hidden_size", 512},
                          {"num_attention_heads", 8},
                          {"num_key_value_heads", 2},
                          {"intermediate_size", 1024},
                          {"num_hidden_layers", 3},
                          {"vocab_size", 2000},
                          {"max_position_embeddings", 1024},
                          {"rope_theta", 500000.0}}},
                    Arch{"qwen3",
                         {{"architectures", {"Qwen3ForCausalLM"}},
                          {"hidden_size", 256},
                          {"num_attention_heads", 4},
                          {"num_key_value_heads", 2},
                          {"head_dim", 128},
                          {"intermediate_size", 512},
                          {"vocab_size", 1500},
                          {"max_position_embeddings", 1024}}},
                    Arch{"mistral",
                         {{"architectures", {"MistralForCausalLM"}},
                          {"hidden_size", 256},
                          {"num_attention_heads", 4},
                          {"num_key_value_heads", 1},
                          {"intermediate_size", 512},
                          {"vocab_size", 1500},
                          {"sliding_window", 24},
                          {"max_position_embeddings", 1024}}},
                    Arch{"qwen2",
                         {{"architectures", {"Qwen2ForCausalLM"}},
                          {"hidden_size", 256},
                          {"num_attention_heads", 4},
                          {"num_key_value_heads", 4},
                          {"intermediate_size", 512},
                          {"vocab_size", 1500},
                          {"tie_word_embeddings", true},
                          {"max_position_embeddings", 1024}}});
  const std::string dir =
      write_bf16_checkpoint(std::string("gpu_parity_") + a.name, small_llama_config(a.over));
  check_model(dir, 100, 24, 7);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a GPU step mixing a prefill chunk and a decode matches the CPU", "[model]") {
  const std::string dir = write_bf16_checkpoint(
      "gpu_parity_mixed", small_llama_config({{"hidden_size", 256},
                                              {"num_attention_heads", 8},
                                              {"num_key_value_heads", 2},
                                              {"intermediate_size", 512},
                                              {"vocab_size", 1000},
                                              {"max_position_embeddings", 512}}));
  Loaded c(dir, cpu()), g(dir, gpu());
  std::mt19937 rng(5);
  std::vector<int32_t> a(60), b(20);
  for (auto& t : a) t = static_cast<int32_t>(rng() % 1000);
  for (auto& t : b) t = static_cast<int32_t>(rng() % 1000);
  auto run = [&](Backend& be, Model& m) {
    KvCache kv = allocate_kv_cache(be, m, 16, 16);
    const std::vector<int32_t> ta = {9, 2, 14, 5}, tb = {11, 0};
    ModelRunner r(be, m, kv, RunnerLimits{128, 4, 4});
    r.run({SeqChunk{a.data(), 40, 0, ta.data(), 4, false},
           SeqChunk{b.data(), 19, 0, tb.data(), 2, false}});
    return r.run({SeqChunk{a.data() + 40, 20, 40, ta.data(), 4, true},
                  SeqChunk{b.data() + 19, 1, 19, tb.data(), 2, true}});
  };
  const auto lc = run(cpu(), *c.model);
  const auto lg = run(gpu(), *g.model);
  require_close(lc, lg, 5e-2, "mixed-step logits");
  std::filesystem::remove_all(dir);
}

TEST_CASE("greedy parity on the parity fixtures (IRIS_PARITY_DIR)", "[model]") {
  const char* root = std::getenv("IRIS_PARITY_DIR");
  if (root == nullptr || !std::filesystem::is_directory(root)) {
    WARN("IRIS_PARITY_DIR not set: parity fixtures not checked");
    return;
  }
  int checked = 0, other_dtype = 0;
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    const auto config = e.path() / "config.json";
    if (!std::filesystem::exists(config)) continue;
    std::ifstream in(config);
    const auto j = nlohmann::json::parse(in);
    if (j.value("torch_dtype", j.value("dtype", std::string())) != "bfloat16") {
      ++other_dtype;
      continue;
    }
    check_model(e.path().string(), 50, 12, 11);
    ++checked;
  }
  INFO(other_dtype << " checkpoints not stored in bf16 left out");
  REQUIRE(checked > 0);
}

TEST_CASE("bf16 residual drift over 32 layers against the fp32 CPU path", "[model]") {
  // Same weights (bf16) on both backends; the CPU keeps activations and the residual in fp32,
  // the GPU in bf16. Drift grows with depth; 32 layers is a Llama-8B's depth.
  const std::string dir = write_bf16_checkpoint(
      "gpu_parity_deep", small_llama_config({{"hidden_size", 256},
                                             {"num_attention_heads", 4},
                                             {"num_key_value_heads", 2},
                                             {"intermediate_size", 512},
                                             {"num_hidden_layers", 32},
                                             {"vocab_size", 1000},
                                             {"max_position_embeddings", 512}}));
  Loaded c(dir, cpu()), g(dir, gpu());
  std::mt19937 rng(32);
  std::vector<int32_t> seq(72);
  for (auto& t : seq) t = 3 + static_cast<int32_t>(rng() % 997);
  const auto lc = teacher_forced(cpu(), *c.model, seq, 64, 32);
  const auto lg = teacher_forced(gpu(), *g.model, seq, 64, 32);
  REQUIRE(lc.size() == lg.size());
  double worst = 0.0, sum = 0.0;
  int exact = 0;
  for (size_t i = 0; i < lc.size(); ++i) {
    const double rel = compare(lc[i], lg[i]).rel_l2;
    worst = std::max(worst, rel);
    sum += rel;
    exact += argmax(lc[i]) == argmax(lg[i]);
  }
  // Printed on every run (the GPU check keeps the log): the measured drift.
  WARN("32-layer bf16 drift: logits rel_l2 mean " << sum / lc.size() << ", worst " << worst
                                                  << "; greedy agrees on " << exact << "/"
                                                  << lc.size() << " steps");
  for (size_t i = 0; i < lc.size(); ++i) {
    INFO("step " << i);
    require_close(lc[i], lg[i], 1e-1, "32-layer logits");
  }
  CHECK(exact >= static_cast<int>(0.75 * lc.size()));
  std::filesystem::remove_all(dir);
}

namespace {

struct EngineRun {
  std::map<std::string, std::vector<int32_t>> tokens;
  std::map<std::string, std::vector<float>> logprobs;
  EngineStats stats;
};

EngineRun run_engine(Model& model, const std::vector<EngineRequest>& reqs, bool eager, bool host) {
  EngineConfig ec;
  ec.block_size = 16;
  ec.num_kv_blocks = 256;
  ec.max_num_seqs = 16;
  ec.max_num_batched_tokens = 512;
  ec.enforce_eager = eager;
  ec.host_sampling = host;
  Engine engine(gpu(), model, ec);
  EngineRun out;
  for (const EngineRequest& r : reqs)
    engine.submit(r, [&out](const EngineOutput& o) {
      REQUIRE(o.error.empty());
      auto& t = out.tokens[o.id];
      t.insert(t.end(), o.token_ids.begin(), o.token_ids.end());
      auto& l = out.logprobs[o.id];
      l.insert(l.end(), o.logprobs.begin(), o.logprobs.end());
    });
  for (int steps = 0; engine.has_work(); ++steps) {
    engine.step();
    REQUIRE(steps < 10000);
  }
  out.stats = engine.stats();
  return out;
}

}  // namespace

TEST_CASE("the engine on the GPU: decode graphs and device sampling against eager host sampling",
          "[model]") {
  const std::string dir = write_bf16_checkpoint(
      "gpu_engine_graphs", small_llama_config({{"hidden_size", 256},
                                               {"num_attention_heads", 4},
                                               {"num_key_value_heads", 2},
                                               {"intermediate_size", 512},
                                               {"num_hidden_layers", 2},
                                               {"vocab_size", 1500},
                                               {"max_position_embeddings", 1024}}));
  Loaded g(dir, gpu());
  std::mt19937 rng(3);
  std::vector<EngineRequest> reqs;
  for (int i = 0; i < 11; ++i) {  // staggered lengths: decode batches of 11 down to 1
    EngineRequest r;
    r.id = "g" + std::to_string(i);
    for (int k = 0, n = 5 + static_cast<int>(rng() % 60); k < n; ++k)
      r.prompt.push_back(3 + static_cast<int32_t>(rng() % 1400));
    r.params.temperature = 0;
    r.params.max_tokens = 24 - i;
    r.params.ignore_eos = true;
    reqs.push_back(r);
  }
  EngineRequest seeded = reqs[0];
  seeded.id = "seeded";
  seeded.params.temperature = 0.9f;
  seeded.params.seed = 42;
  seeded.params.repetition_penalty = 1.2f;
  reqs.push_back(seeded);

  const EngineRun fast = run_engine(*g.model, reqs, /*eager=*/false, /*host=*/false);
  const EngineRun slow = run_engine(*g.model, reqs, /*eager=*/true, /*host=*/true);
  CHECK(fast.stats.num_graph_replays > 0);
  CHECK(fast.stats.num_device_sampled > 0);
  CHECK(slow.stats.num_graph_replays == 0);
  CHECK(slow.stats.num_device_sampled == 0);
  CHECK(fast.stats.num_free_blocks == fast.stats.num_total_blocks);
  // Greedy: the same tokens, but a padded batch may pick another GEMM algorithm, so a near-tie
  // may flip; nearly all requests must agree, every log-probability finite and close.
  int same = 0;
  for (int i = 0; i < 11; ++i) {
    const std::string id = "g" + std::to_string(i);
    REQUIRE(fast.tokens.at(id).size() == static_cast<size_t>(24 - i));
    same += fast.tokens.at(id) == slow.tokens.at(id);
    for (float lp : fast.logprobs.at(id)) REQUIRE(std::isfinite(lp));
    if (fast.tokens.at(id) == slow.tokens.at(id))
      for (size_t k = 0; k < fast.logprobs.at(id).size(); ++k)
        CHECK(std::abs(fast.logprobs.at(id)[k] - slow.logprobs.at(id)[k]) < 5e-2);
  }
  CHECK(same >= 9);
  // Sampled on the device from (seed, offset): the same batch gives the same draws again.
  const EngineRun again = run_engine(*g.model, reqs, false, false);
  CHECK(again.tokens.at("seeded") == fast.tokens.at("seeded"));
  CHECK(fast.tokens.at("seeded").size() == 24);
  std::filesystem::remove_all(dir);
}
