// Model runner invariants on the CPU backend: a batched step with mixed prefill chunks and
// decodes, scattered block tables and chunked prefill all give the logits that one
// sequence run alone, contiguous, in one prefill gives.
#include <catch2/catch.hpp>
#include <numeric>
#include <random>

#include "engine/generator.h"
#include "engine/loader/checkpoint.h"
#include "engine/model_runner.h"
#include "tests/unit/test_util.h"

using namespace iris;
using namespace iris::test;

namespace {

struct Fixture {
  std::string dir;
  std::unique_ptr<Backend> backend = make_cpu_backend(2);
  std::unique_ptr<Checkpoint> ck;
  ModelConfig cfg;
  std::unique_ptr<Model> model;
  explicit Fixture(const nlohmann::json& c) {
    dir = write_checkpoint(c["architectures"][0].get<std::string>(), c, random_weights(c, 11));
    ck = Checkpoint::open(dir);
    cfg = ModelConfig::from_dir(dir);
    model = load_model(*ck, cfg, *backend);
  }
};

// Logits of the last token after feeding `tokens` in chunks of `chunk` through blocks
// `table` (block size 4).
std::vector<float> last_logits(Fixture& f, KvCache& kv, const std::vector<int32_t>& tokens,
                               int chunk, const std::vector<int32_t>& table) {
  ModelRunner r(*f.backend, *f.model, kv, RunnerLimits{64, 4, static_cast<int>(table.size())});
  std::vector<float> out;
  for (int pos = 0; pos < static_cast<int>(tokens.size()); pos += chunk) {
    const int n = std::min<int>(chunk, static_cast<int>(tokens.size()) - pos);
    const bool last = pos + n == static_cast<int>(tokens.size());
    out = r.run({SeqChunk{tokens.data() + pos, n, pos, table.data(),
                          static_cast<int>(table.size()), last}});
  }
  return out;
}

}  // namespace

TEST_CASE("chunked prefill, scattered blocks and batching do not change logits") {
  auto arch = GENERATE(as<std::string>{}, "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                       "MistralForCausalLM");
  nlohmann::json over = {{"architectures", {arch}}};
  if (arch == "Qwen3ForCausalLM") over["head_dim"] = 16;
  if (arch == "MistralForCausalLM") over["sliding_window"] = 5;
  Fixture f(small_llama_config(over));
  std::mt19937 rng(5);
  std::vector<int32_t> a(23), b(9);
  for (auto& t : a) t = static_cast<int32_t>(rng() % 64);
  for (auto& t : b) t = static_cast<int32_t>(rng() % 64);

  KvCache kv = allocate_kv_cache(*f.backend, *f.model, 32, 4);
  std::vector<int32_t> contiguous(8);
  std::iota(contiguous.begin(), contiguous.end(), 0);
  const auto ref_a = last_logits(f, kv, a, 64, contiguous);
  const auto ref_b = last_logits(f, kv, b, 64, contiguous);

  SECTION("chunked prefill over scattered blocks") {
    const std::vector<int32_t> scattered = {31, 4, 17, 9, 22, 3};
    const auto got = last_logits(f, kv, a, 5, scattered);
    REQUIRE(got.size() == ref_a.size());
    for (size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == Approx(ref_a[i]).margin(1e-4));
  }
  SECTION("two sequences in one step, one mid-prefill and one decoding") {
    const std::vector<int32_t> ta = {1, 2, 3, 4, 5, 6}, tb = {10, 11, 12};
    ModelRunner r(*f.backend, *f.model, kv, RunnerLimits{64, 4, 6});
    // a: first 20 tokens; b: first 8 tokens.
    r.run({SeqChunk{a.data(), 20, 0, ta.data(), 6, false}, SeqChunk{b.data(), 8, 0, tb.data(), 3, false}});
    // a finishes its prefill (3 tokens), b decodes its 9th token: both sample.
    const auto got = r.run({SeqChunk{a.data() + 20, 3, 20, ta.data(), 6, true},
                            SeqChunk{b.data() + 8, 1, 8, tb.data(), 3, true}});
    const size_t v = ref_a.size();
    REQUIRE(got.size() == 2 * v);
    for (size_t i = 0; i < v; ++i) {
      REQUIRE(got[i] == Approx(ref_a[i]).margin(1e-4));
      REQUIRE(got[v + i] == Approx(ref_b[i]).margin(1e-4));
    }
  }
}

TEST_CASE("generator: seeded sampling is reproducible and greedy stops at EOS") {
  Fixture f(small_llama_config());
  Generator g(*f.backend, *f.model);
  SamplingParams p;
  p.seed = 9;
  p.max_tokens = 20;
  p.ignore_eos = true;
  const auto r1 = g.generate({3, 4, 5}, p);
  const auto r2 = g.generate({3, 4, 5}, p);
  REQUIRE(r1.output_ids == r2.output_ids);
  REQUIRE(r1.output_ids.size() == 20);
  REQUIRE(r1.finish_reason == FinishReason::kLength);
  // Make EOS the greedy choice by naming the first greedy token as a stop id.
  SamplingParams g0;
  g0.temperature = 0;
  g0.max_tokens = 5;
  const auto greedy = g.generate({3, 4, 5}, g0);
  g0.stop_token_ids = {greedy.output_ids[0]};
  const auto stopped = g.generate({3, 4, 5}, g0);
  REQUIRE(stopped.output_ids.size() == 1);
  REQUIRE(stopped.finish_reason == FinishReason::kStop);
  // Bad prompts fail alone with a clear message.
  REQUIRE_THROWS_WITH(g.generate({64}, g0), Catch::Matchers::Contains("outside the vocabulary"));
  REQUIRE_THROWS_WITH(g.generate({}, g0), Catch::Matchers::Contains("empty"));
}
