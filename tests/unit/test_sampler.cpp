// Sampling: greedy, seeds, top-k/top-p/min-p cut-offs (the exact set of tokens that can come
// out and their renormalised frequencies), penalties (both branches of the repetition
// penalty), min_tokens, and that sampled frequencies follow the softmax.
#include <catch2/catch.hpp>
#include <cmath>
#include <algorithm>
#include <map>
#include <set>
#include <numeric>
#include <random>

#include "engine/core/check.h"
#include "engine/sampler.h"
#include "engine/stop_conditions.h"

using namespace iris;

namespace {
// Softmax at temperature 1, best first (cumulative mass; ratio to the best):
//   id 1: 0.3640 (0.3640; 1.000)   id 5: 0.3294 (0.6934; 0.905)   id 2: 0.2208 (0.9142; 0.607)
//   id 0: 0.0493 (0.9635; 0.135)   id 4: 0.0299 (0.9933; 0.082)   id 3: 0.0067 (1.0000; 0.018)
const std::vector<float> kLogits = {1.0f, 3.0f, 2.5f, -1.0f, 0.5f, 2.9f};

// Draws n tokens and checks that exactly `allowed` come out, each with the frequency of the
// softmax of kLogits renormalised over `allowed`, within `tolerance` (absolute). With
// n = 50000 one standard deviation of a frequency is at most 0.0023, so 0.01 is > 4 sigma.
void check_distribution(const SamplingParams& p, const std::set<int32_t>& allowed, int n = 50000,
                        double tolerance = 0.01) {
  SequenceSampler s(p, {});
  std::map<int32_t, int> counts;
  for (int i = 0; i < n; ++i) ++counts[s.sample(kLogits.data(), kLogits.size()).token];
  std::set<int32_t> seen;
  for (const auto& [t, c] : counts) seen.insert(t);
  REQUIRE(seen == allowed);
  double mass = 0;
  for (int32_t t : allowed) mass += std::exp(static_cast<double>(kLogits[t]));
  for (int32_t t : allowed) {
    const double expect = std::exp(static_cast<double>(kLogits[t])) / mass;
    INFO("token " << t << ": expected " << expect << ", got " << counts[t] / double(n));
    CHECK(std::abs(counts[t] / double(n) - expect) < tolerance);
  }
}
}  // namespace

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

TEST_CASE("top_p cuts the distribution mid-way: the smallest best-first set reaching top_p, renormalised") {
  SamplingParams p;
  p.seed = 5;
  SECTION("top_p 0.8: ids 1, 5 hold 0.69, adding 2 reaches 0.91") {
    p.top_p = 0.8f;
    check_distribution(p, {1, 5, 2});
  }
  SECTION("top_p 0.95: ids 1, 5, 2 hold 0.91, adding 0 reaches 0.96") {
    p.top_p = 0.95f;
    check_distribution(p, {1, 5, 2, 0});
  }
  SECTION("top_k 4 first, then top_p 0.93 over the renormalised four") {
    // Alone, top_p 0.93 would keep id 0 too (0.914 < 0.93); over the four best (mass 0.9635)
    // ids 1, 5, 2 already hold 0.949.
    p.top_p = 0.93f;
    p.top_k = 4;
    check_distribution(p, {1, 5, 2});
    p.top_k = -1;
    check_distribution(p, {1, 5, 2, 0});
  }
}

TEST_CASE("min_p cuts the distribution mid-way: tokens below min_p times the best are dropped") {
  SamplingParams p;
  p.seed = 9;
  SECTION("min_p 0.1: id 0 (0.135 of the best) stays, id 4 (0.082) goes") {
    p.min_p = 0.1f;
    check_distribution(p, {1, 5, 2, 0});
  }
  SECTION("min_p 0.5: id 2 (0.607) stays, id 0 goes") {
    p.min_p = 0.5f;
    check_distribution(p, {1, 5, 2});
  }
  SECTION("min_p 0.95: only id 1 (id 5 is 0.905 of it)") {
    p.min_p = 0.95f;
    check_distribution(p, {1});
  }
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

TEST_CASE("repetition penalty on a negative logit multiplies it (transformers' rule)") {
  // Both candidates negative; token 0 is the better one and has been seen.
  const std::vector<float> logits = {-1.0f, -1.5f};
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;  // -1.0 * 2 = -2.0 < -1.5 (dividing would give -0.5 and keep 0)
  SequenceSampler a(p, {0});
  CHECK(a.sample(logits.data(), 2).token == 1);
  p.repetition_penalty = 1.4f;  // -1.4 > -1.5: still the best
  SequenceSampler b(p, {0});
  CHECK(b.sample(logits.data(), 2).token == 0);
  // Output tokens count as seen too.
  p.repetition_penalty = 2.0f;
  SequenceSampler c(p, {});
  CHECK(c.sample(logits.data(), 2).token == 0);
  c.append(0);
  CHECK(c.sample(logits.data(), 2).token == 1);
  // A penalty below 1 rewards: the seen negative logit shrinks towards 0.
  p.repetition_penalty = 0.5f;
  SequenceSampler d(p, {1});  // -1.5 * 0.5 = -0.75 > -1.0
  CHECK(d.sample(logits.data(), 2).token == 1);
}

TEST_CASE("presence penalty counts a token once, frequency penalty once per occurrence") {
  // Token 0 leads by 1.0. After it appeared 3 times it loses presence + 3 * frequency.
  const std::vector<float> logits = {2.0f, 1.0f};
  auto pick_after_three = [&](float presence, float frequency) {
    SamplingParams p;
    p.temperature = 0.0f;
    p.presence_penalty = presence;
    p.frequency_penalty = frequency;
    SequenceSampler s(p, {0, 0, 0});  // the prompt does not count
    REQUIRE(s.sample(logits.data(), 2).token == 0);
    for (int i = 0; i < 3; ++i) s.append(0);
    return s.sample(logits.data(), 2).token;
  };
  CHECK(pick_after_three(0.5f, 0.2f) == 1);   // 2.0 - 0.5 - 0.6 = 0.9 < 1.0
  CHECK(pick_after_three(0.3f, 0.2f) == 0);   // 2.0 - 0.3 - 0.6 = 1.1 > 1.0
  CHECK(pick_after_three(1.1f, 0.0f) == 1);   // presence alone: 0.9
  CHECK(pick_after_three(0.9f, 0.0f) == 0);   // 1.1: presence does not grow with the count
  CHECK(pick_after_three(0.0f, 0.34f) == 1);  // 2.0 - 1.02 = 0.98
  CHECK(pick_after_three(0.0f, 0.32f) == 0);  // 2.0 - 0.96 = 1.04
  // Negative penalties encourage repeats.
  SamplingParams p;
  p.temperature = 0.0f;
  p.presence_penalty = -0.5f;
  p.frequency_penalty = -0.2f;
  SequenceSampler s(p, {});
  s.append(1);
  s.append(1);
  CHECK(s.sample(logits.data(), 2).token == 0);  // 1.0 + 0.5 + 0.4 = 1.9 < 2.0
  s.append(1);
  CHECK(s.sample(logits.data(), 2).token == 1);  // 1.0 + 0.5 + 0.6 = 2.1 > 2.0
}

TEST_CASE("a seeded sampler repeats its draws whatever other samplers do in between") {
  SamplingParams p;
  p.seed = 2024;
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  p.presence_penalty = 0.3f;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<std::vector<float>> rows(200, std::vector<float>(50));
  for (auto& r : rows)
    for (float& x : r) x = u(rng);
  auto run = [&](bool interleave) {
    SequenceSampler s(p, {3, 4});
    SamplingParams other_p;
    other_p.seed = 99;
    SequenceSampler other(other_p, {});
    SamplingParams unseeded_p;
    SequenceSampler unseeded(unseeded_p, {});
    std::vector<int32_t> out;
    for (const auto& r : rows) {
      if (interleave) {
        other.sample(r.data(), 50);
        unseeded.sample(r.data(), 50);
      }
      const int32_t t = s.sample(r.data(), 50).token;
      s.append(t);
      out.push_back(t);
    }
    return out;
  };
  const auto alone = run(false);
  CHECK(run(true) == alone);
  CHECK(run(false) == alone);
  std::set<int32_t> distinct(alone.begin(), alone.end());
  CHECK(distinct.size() > 10);  // really sampling, not stuck on one token
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
  p = {};
  p.stop = {"ok", "\xE4\xBD"};  // the first two bytes of a three-byte character
  REQUIRE_THROWS_WITH(p.validate(), Contains("stop[1]"));
  p.stop = {"ok", "你好"};
  REQUIRE_NOTHROW(p.validate());
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

TEST_CASE("large vocabularies: the cuts keep exactly the set a full sort gives", "[sampler]") {
  // 20,000 ids with logits spread over [-4, 4] in a shuffled order: top-p 0.9 keeps thousands
  // of ids, so the sampler's growing partial sort must extend well past its first prefix.
  // (Draw counts are kept small: the sanitizer builds run this too.)
  constexpr int64_t kVocab = 20000;
  std::vector<float> logits(kVocab);
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> spread(-4.0f, 4.0f);
  for (float& l : logits) l = spread(gen);
  std::vector<int32_t> order(kVocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l));
  auto draw = [&](const SamplingParams& p, int n) {
    SequenceSampler s(p, {});
    std::set<int32_t> out;
    for (int i = 0; i < n; ++i) out.insert(s.sample(logits.data(), kVocab).token);
    return out;
  };
  SECTION("top_p 0.9") {
    SamplingParams p;
    p.seed = 1;
    p.top_p = 0.9f;
    size_t kept = 0;
    double cum = 0;
    while (cum < 0.9) cum += std::exp(static_cast<double>(logits[order[kept++]])) / z;
    REQUIRE(kept > 1000);  // far past the first sorted prefix
    const std::set<int32_t> allowed(order.begin(), order.begin() + kept);
    const std::set<int32_t> seen = draw(p, 3000);
    for (int32_t t : seen) REQUIRE(allowed.count(t) == 1);
    // The least likely kept ids do come out (the cut is not too early).
    int tail = 0;
    for (size_t i = kept * 3 / 4; i < kept; ++i) tail += seen.count(order[i]);
    CHECK(tail > 0);
  }
  SECTION("min_p 0.05") {
    SamplingParams p;
    p.seed = 2;
    p.min_p = 0.05f;
    const double floor = std::log(0.05) + logits[order[0]];
    size_t kept = 0;
    while (kept < order.size() && logits[order[kept]] >= floor) ++kept;
    REQUIRE(kept > 1000);
    const std::set<int32_t> allowed(order.begin(), order.begin() + kept);
    for (int32_t t : draw(p, 3000)) REQUIRE(allowed.count(t) == 1);
  }
  SECTION("nothing cut: every id can come out, in proportion") {
    SamplingParams p;
    p.seed = 4;
    SequenceSampler s(p, {});
    // The best 1% of ids hold this much mass; their share of draws must match it.
    double best_mass = 0;
    for (int64_t i = 0; i < kVocab / 100; ++i) best_mass += std::exp(static_cast<double>(logits[order[i]])) / z;
    const std::set<int32_t> best(order.begin(), order.begin() + kVocab / 100);
    constexpr int kDraws = 10000;  // one standard deviation of the share: about 0.0027
    int hits = 0;
    for (int i = 0; i < kDraws; ++i) hits += best.count(s.sample(logits.data(), kVocab).token);
    INFO("best 1% hold " << best_mass << ", drawn " << hits / double(kDraws));
    CHECK(std::abs(hits / double(kDraws) - best_mass) < 0.015);
  }
}
