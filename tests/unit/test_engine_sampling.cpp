// Seeded sampling through the batching engine on the embedded iris-tiny model: a seeded
// request gets the same tokens alone and inside a busy batch (chunked prefills, other
// seeded and unseeded requests, preemption), and n > 1 with one seed gives distinct choices
// that are reproducible, choice i drawing from seed + i (engine.h). The streamed text of
// every choice is checked against the tokenizer's decode of its tokens.
#include <catch2/catch.hpp>

#include <set>

#include "engine/engine.h"
#include "tests/unit/engine_text_util.h"

using namespace iris;
using namespace iris::test;

namespace {

SamplingParams seeded(uint64_t seed, int max_tokens) {
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  p.seed = seed;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;  // every choice runs to max_tokens: more draws to compare
  return p;
}

EngineRequest make_request(const std::string& id, std::vector<int32_t> prompt, SamplingParams p,
                           int n = 1) {
  EngineRequest r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.params = std::move(p);
  r.n = n;
  return r;
}

}  // namespace

TEST_CASE("a seeded request gets the same tokens alone and inside a busy batch") {
  IrisTiny m;
  const std::vector<int32_t> prompt = m.tok->encode("The meaning of life is");
  const SamplingParams p = seeded(1234, 40);
  std::vector<int32_t> alone;
  {
    auto engine = m.engine();
    const Choices c = run_alone(*engine, make_request("target", prompt, p));
    alone = c.at(0).tokens;
    check_choice(*m.tok, prompt, c.at(0), p, m.cfg.eos_token_ids);
  }
  REQUIRE(alone.size() == 40);

  // A small cache and step budget: prefills are chunked, decodes share steps with them, and
  // sequences get preempted and recomputed.
  EngineConfig ec;
  ec.num_kv_blocks = 12;
  ec.max_num_seqs = 8;
  ec.max_num_batched_tokens = 24;
  Engine engine(*m.backend, *m.model, ec, m.tok.get());
  std::map<std::string, Choices> got;
  auto submit = [&](EngineRequest r) {
    const std::string id = r.id;
    engine.submit(std::move(r), collect_into(got[id]));
  };
  const char* texts[] = {"A computer", "Hello", "Tell me something wise about the sea and the sky.",
                         "Who are you?", "Why", "The cat"};
  int k = 0;
  for (const char* t : texts) {
    SamplingParams q = seeded(static_cast<uint64_t>(k) + 1, 30 + 5 * k);
    if (k % 3 == 1) q.seed.reset();     // unseeded: draws from its own random generator
    if (k % 3 == 2) q.temperature = 0;  // greedy
    submit(make_request("busy" + std::to_string(k), m.tok->encode(t), q, k == 0 ? 2 : 1));
    ++k;
  }
  int steps = 0;
  while (engine.has_work()) {
    if (steps == 3) submit(make_request("target", prompt, p));  // arrives mid-batch
    if (steps == 5) submit(make_request("late", m.tok->encode("Hello there"), seeded(5, 20)));
    engine.step();
    REQUIRE(engine.check_invariants().empty());
    REQUIRE(++steps < 5000);
  }
  INFO("preemptions " << engine.stats().num_preemptions);
  const Choice& c = got.at("target").at(0);
  CHECK(c.tokens == alone);
  check_choice(*m.tok, prompt, c, p, m.cfg.eos_token_ids);
  CHECK(engine.stats().num_preemptions > 0);
  CHECK(engine.stats().num_free_blocks == engine.stats().num_total_blocks);
}

TEST_CASE("n > 1 with one seed: distinct choices, reproducible, choice i drawn from seed + i") {
  IrisTiny m;
  const std::vector<int32_t> prompt = m.tok->encode("Hello");
  SamplingParams p = seeded(77, 24);
  p.temperature = 1.0f;
  p.top_p = 1.0f;
  auto engine = m.engine();
  const Choices first = run_alone(*engine, make_request("n4", prompt, p, 4));
  const Choices again = run_alone(*engine, make_request("n4", prompt, p, 4));
  REQUIRE(first.size() == 4);
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < 4; ++i) {
    INFO("choice " << i);
    check_choice(*m.tok, prompt, first.at(i), p, m.cfg.eos_token_ids);
    CHECK(again.at(i).tokens == first.at(i).tokens);
    CHECK(again.at(i).text() == first.at(i).text());
    distinct.insert(first.at(i).tokens);
    SamplingParams single = p;
    single.seed = *p.seed + static_cast<uint64_t>(i);
    const Choices one = run_alone(*engine, make_request("one", prompt, single));
    CHECK(one.at(0).tokens == first.at(i).tokens);
  }
  CHECK(distinct.size() == 4);
}
