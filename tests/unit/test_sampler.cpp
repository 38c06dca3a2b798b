// Sampling: greedy, seeds, top-k/top-p/min-p cut-offs, penalties, min_tokens, and that
// sampled frequencies follow the softmax.
#include <catch2/catch.hpp>
#include <cmath>
#include <algorithm>
#include <map>
#include <numeric>
#include <random>

#include "engine/core/check.h"
#include "engine/sampler.h"
#include "engine/stop_conditions.h"

using namespace iris;

namespace {
const std::vector<float> kLogits = {1.0f, 3.0f, 2.5f, -1.0f, 0.5f, 2.9f};
}

TEST_CASE("greedy picks the argmax and reports the unmodified logprob") {
  SamplingParams p;
  p.temperature = 0.0f;
  SequenceSampler s(p, {});
  auto r = s.sample(kLogits.data(), kLogits.size());
  REQUIRE(r.token == 1);
  double z = 0;
  for (float x : kLogits) z += std::exp(x);
  REQUIRE(r.logprob == Approx(3.0 - std::log(z)).epsilon(1e-6));
}

TEST_CASE("the same seed gives the same tokens; different seeds differ") {
  SamplingParams p;
  p.seed = 42;
  auto draw = [&](uint64_t seed) {
    p.seed = seed;
    SequenceSampler s(p, {});
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(kLogits.data(), kLogits.size()).token);
    return out;
  };
  REQUIRE(draw(42) == draw(42));
  REQUIRE(draw(42) != draw(43));
}

TEST_CASE("cut-offs that leave one candidate behave like greedy") {
  SamplingParams p;
  p.seed = 7;
  SECTION("top_k = 1") { p.top_k = 1; }
  SECTION("tiny top_p") { p.top_p = 1e-6f; }
  SECTION("min_p = 1") { p.min_p = 1.0f; }
  SequenceSampler s(p, {});
  for (int i = 0; i < 50; ++i) REQUIRE(s.sample(kLogits.data(), kLogits.size()).token == 1);
}

TEST_CASE("top_k = 2 only ever yields the two best tokens") {
  SamplingParams p;
  p.seed = 1;
  p.top_k = 2;
  SequenceSampler s(p, {});
  std::map<int, int> seen;
  for (int i = 0; i < 400; ++i) ++seen[s.sample(kLogits.data(), kLogits.size()).token];
  REQUIRE(seen.size() == 2);
  REQUIRE(seen.count(1) == 1);
  REQUIRE(seen.count(5) == 1);
}

TEST_CASE("sampled frequencies follow the tempered softmax") {
  SamplingParams p;
  p.seed = 123;
  p.temperature = 2.0f;
  SequenceSampler s(p, {});
  const int n = 20000;
  std::vector<int> counts(kLogits.size());
  for (int i = 0; i < n; ++i) ++counts[s.sample(kLogits.data(), kLogits.size()).token];
  double z = 0;
  for (float x : kLogits) z += std::exp(x / 2.0);
  for (size_t i = 0; i < kLogits.size(); ++i) {
    const double expect = std::exp(kLogits[i] / 2.0) / z;
    REQUIRE(std::abs(counts[i] / double(n) - expect) < 0.015);
  }
}

TEST_CASE("repetition penalty divides positive and multiplies negative logits of seen tokens") {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  SequenceSampler s(p, {1});  // token 1 (logit 3.0 -> 1.5) is in the prompt
  REQUIRE(s.sample(kLogits.data(), kLogits.size()).token == 5);
}

TEST_CASE("presence and frequency penalties apply to output tokens only") {
  SamplingParams p;
  p.temperature = 0.0f;
  p.frequency_penalty = 0.2f;
  SequenceSampler s(p, {5});
  REQUIRE(s.sample(kLogits.data(), kLogits.size()).token == 1);
  s.append(1);
  REQUIRE(s.sample(kLogits.data(), kLogits.size()).token == 5);  // 3.0 - 0.2 < 2.9
}

TEST_CASE("min_tokens bans EOS and stop ids until reached") {
  SamplingParams p;
  p.min_tokens = 2;
  p.stop_token_ids = {5};
  const std::vector<int32_t> eos = {1};
  REQUIRE(banned_tokens(p, eos, 0) == std::vector<int32_t>{1, 5});
  REQUIRE(banned_tokens(p, eos, 2).empty());
  p.ignore_eos = true;
  REQUIRE(banned_tokens(p, eos, 0) == std::vector<int32_t>{5});
  p.temperature = 0.0f;
  p.ignore_eos = false;
  SequenceSampler s(p, {});
  auto r = s.sample(kLogits.data(), kLogits.size(), banned_tokens(p, eos, 0));
  REQUIRE(r.token == 2);  // 1 and 5 banned -> 2.5 wins
}

TEST_CASE("stop rules") {
  SamplingParams p;
  p.max_tokens = 3;
  const std::vector<int32_t> eos = {2};
  REQUIRE(check_token_stop(p, eos, 2, 1, 10, 100) == FinishReason::kStop);
  REQUIRE_FALSE(check_token_stop(p, eos, 7, 1, 10, 100).has_value());
  REQUIRE(check_token_stop(p, eos, 7, 3, 10, 100) == FinishReason::kLength);
  REQUIRE(check_token_stop(p, eos, 7, 1, 100, 100) == FinishReason::kLength);
  p.ignore_eos = true;
  REQUIRE_FALSE(check_token_stop(p, eos, 2, 1, 10, 100).has_value());
}

TEST_CASE("invalid sampling parameters are refused by name") {
  using Catch::Matchers::Contains;
  SamplingParams p;
  p.temperature = -1.0f;
  REQUIRE_THROWS_WITH(p.validate(), Contains("temperature"));
  p = {};
  p.temperature = NAN;
  REQUIRE_THROWS_WITH(p.validate(), Contains("temperature"));
  p = {};
  p.top_p = 0.0f;
  REQUIRE_THROWS_WITH(p.validate(), Contains("top_p"));
  p = {};
  p.top_k = -2;
  REQUIRE_THROWS_WITH(p.validate(), Contains("top_k"));
  p = {};
  p.min_p = 1.5f;
  REQUIRE_THROWS_WITH(p.validate(), Contains("min_p"));
  p = {};
  p.max_tokens = 0;
  REQUIRE_THROWS_WITH(p.validate(), Contains("max_tokens"));
}

TEST_CASE("top_logprobs are the n best of log-softmax, best first, ties by id", "[sampler]") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  std::vector<float> logits(1000);
  for (float& x : logits) x = u(rng);
  logits[10] = logits[20] = 9.0f;  // a tie at the top
  const auto top = iris::top_logprobs(logits.data(), static_cast<int64_t>(logits.size()), 5);
  REQUIRE(top.size() == 5);
  CHECK(top[0].first == 10);
  CHECK(top[1].first == 20);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  for (int i = 0; i < 5; ++i) {
    CHECK(top[i].first == order[i]);
    CHECK(top[i].second == Approx(iris::token_logprob(logits.data(), 1000, order[i])).margin(1e-5));
  }
  CHECK(iris::top_logprobs(logits.data(), 3, 10).size() == 3);
  CHECK(iris::top_logprobs(logits.data(), 1000, 0).empty());
}
