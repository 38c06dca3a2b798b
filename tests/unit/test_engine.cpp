// The batching engine on the CPU backend with a real (small, random) model: batch
// invariance with staggered arrivals, shared prefixes, n > 1, aborts and heavy preemption;
// block-leak invariants after every step; prefix reuse; admission errors; an abort that
// frees everything on the next step.
#include <catch2/catch.hpp>
#include <map>
#include <random>

#include "engine/engine.h"
#include "engine/generator.h"
#include "engine/loader/checkpoint.h"
#include "tests/unit/small_model.h"
#include "tests/unit/test_util.h"

using namespace iris;
using namespace iris::test;

namespace {

struct ModelFixture : SmallModel {
  ModelFixture() : SmallModel("engine", 21) {}
};

struct Collected {
  std::map<int, std::vector<int32_t>> tokens;
  std::map<int, FinishReason> finish;
  std::string error;
};

}  // namespace

TEST_CASE("batch invariance: every request gets the tokens it gets alone") {
  ModelFixture f;
  const bool small_cache = GENERATE(false, true);
  EngineConfig ec;
  ec.block_size = 16;
  ec.max_num_seqs = 16;
  ec.max_num_batched_tokens = 96;
  ec.num_kv_blocks = small_cache ? 48 : 400;
  Engine engine(*f.backend, *f.model, ec);

  std::mt19937 rng(small_cache ? 2 : 1);
  std::vector<int32_t> shared(200);
  for (auto& t : shared) t = static_cast<int32_t>(rng() % 64);
  struct Req {
    EngineRequest r;
    int submit_step;
    int abort_step;  // -1 = never
  };
  std::vector<Req> reqs;
  for (int i = 0; i < 104; ++i) {
    Req q;
    q.r.id = "r" + std::to_string(i);
    const int len = 1 + static_cast<int>(rng() % 300);
    if (i % 4 == 0) {  // shares a long prefix
      q.r.prompt.assign(shared.begin(), shared.begin() + std::min(len, 200));
      for (int k = 200; k < len; ++k) q.r.prompt.push_back(static_cast<int32_t>(rng() % 64));
      q.r.prompt.push_back(static_cast<int32_t>(rng() % 64));
    } else {
      for (int k = 0; k < len; ++k) q.r.prompt.push_back(static_cast<int32_t>(rng() % 64));
    }
    q.r.params = greedy(1 + static_cast<int>(rng() % 24));
    q.r.n = i % 7 == 0 ? 2 : 1;
    q.submit_step = static_cast<int>(rng() % 60);
    q.abort_step = i % 9 == 0 ? q.submit_step + 1 + static_cast<int>(rng() % 8) : -1;
    reqs.push_back(q);
  }

  std::map<std::string, Collected> got;
  int step = 0;
  size_t submitted = 0;
  std::vector<size_t> order(reqs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return reqs[a].submit_step < reqs[b].submit_step; });
  while (submitted < reqs.size() || engine.has_work()) {
    while (submitted < reqs.size() && reqs[order[submitted]].submit_step <= step) {
      const Req& q = reqs[order[submitted++]];
      engine.submit(q.r, [&got](const EngineOutput& o) {
        auto& c = got[o.id];
        for (int32_t t : o.token_ids) c.tokens[o.index].push_back(t);
        if (o.finish_reason) c.finish[o.index] = *o.finish_reason;
        if (!o.error.empty()) c.error = o.error;
      });
    }
    for (const Req& q : reqs)
      if (q.abort_step == step) engine.abort(q.r.id);
    engine.step();
    const std::string bad = engine.check_invariants();
    INFO("step " << step << ": " << bad);
    REQUIRE(bad.empty());
    ++step;
    REQUIRE(step < 20000);
  }
  const EngineStats st = engine.stats();
  REQUIRE(st.num_free_blocks == st.num_total_blocks);
  if (small_cache) REQUIRE(st.num_preemptions > 0);
  REQUIRE(st.num_cached_tokens_hit > 0);

  Generator alone(*f.backend, *f.model);
  int aborted = 0;
  for (const Req& q : reqs) {
    INFO(q.r.id << " prompt " << q.r.prompt.size() << " max_tokens " << q.r.params.max_tokens);
    const Collected& c = got.at(q.r.id);
    REQUIRE(c.error.empty());
    const auto ref = alone.generate(q.r.prompt, q.r.params).output_ids;
    for (int i = 0; i < q.r.n; ++i) {
      REQUIRE(c.finish.count(i) == 1);
      const auto& toks = c.tokens.count(i) ? c.tokens.at(i) : std::vector<int32_t>{};
      if (c.finish.at(i) == FinishReason::kAbort) {
        ++aborted;
        REQUIRE(toks.size() <= ref.size());
        REQUIRE(std::equal(toks.begin(), toks.end(), ref.begin()));
      } else {
        REQUIRE(c.finish.at(i) == FinishReason::kLength);
        REQUIRE(toks == ref);
      }
    }
  }
  REQUIRE(aborted > 0);
}

TEST_CASE("a second request sharing a 256-token prefix computes only its new tokens") {
  ModelFixture f;
  EngineConfig ec;
  ec.num_kv_blocks = 200;
  ec.max_num_batched_tokens = 512;
  Engine engine(*f.backend, *f.model, ec);
  std::mt19937 rng(3);
  std::vector<int32_t> prefix(256);
  for (auto& t : prefix) t = static_cast<int32_t>(rng() % 64);
  auto run = [&](const std::string& id, std::vector<int32_t> prompt) {
    std::vector<int32_t> out;
    EngineRequest r{id, prompt, greedy(8)};
    engine.submit(r, [&](const EngineOutput& o) { out.insert(out.end(), o.token_ids.begin(), o.token_ids.end()); });
    while (engine.has_work()) engine.step();
    return out;
  };
  auto a = prefix;
  a.insert(a.end(), {1, 2, 3});
  auto b = prefix;
  b.insert(b.end(), {4, 5, 6, 7});
  run("a", a);
  const int64_t before = engine.stats().num_computed_tokens;
  const auto out_b = run("b", b);
  const int64_t computed_b = engine.stats().num_computed_tokens - before;
  // 256 prefix tokens are 16 full blocks: only the 4 new prompt tokens and 7 decodes run.
  REQUIRE(computed_b == 4 + 7);
  REQUIRE(engine.stats().num_cached_tokens_hit >= 256);
  Generator alone(*f.backend, *f.model);
  REQUIRE(out_b == alone.generate(b, greedy(8)).output_ids);
}

TEST_CASE("bad requests fail alone with a clear error") {
  ModelFixture f;
  EngineConfig ec;
  ec.num_kv_blocks = 64;
  Engine engine(*f.backend, *f.model, ec);
  std::map<std::string, std::string> errors;
  std::vector<int32_t> good_out;
  auto cb = [&](const EngineOutput& o) {
    if (!o.error.empty()) errors[o.id] = o.error;
    if (o.id == "good") good_out.insert(good_out.end(), o.token_ids.begin(), o.token_ids.end());
  };
  engine.submit({"good", {5, 6, 7}, greedy(6)}, cb);
  engine.submit({"empty", {}, greedy(4)}, cb);
  engine.submit({"vocab", {5, 64}, greedy(4)}, cb);
  engine.submit({"long", std::vector<int32_t>(500, 3), greedy(100)}, cb);
  SamplingParams bad_t = greedy(4);
  bad_t.temperature = -1;
  engine.submit({"temp", {5}, bad_t}, cb);
  engine.submit({"dup", {5}, greedy(30)}, cb);
  engine.submit({"dup", {5}, greedy(3)}, cb);
  while (engine.has_work()) {
    engine.step();
    REQUIRE(engine.check_invariants().empty());
  }
  REQUIRE(errors.count("empty"));
  REQUIRE(errors.at("vocab").find("outside the vocabulary") != std::string::npos);
  REQUIRE(errors.count("long"));
  REQUIRE(errors.at("temp").find("temperature") != std::string::npos);
  REQUIRE(errors.at("dup").find("already") != std::string::npos);
  REQUIRE(errors.count("good") == 0);
  Generator alone(*f.backend, *f.model);
  REQUIRE(good_out == alone.generate({5, 6, 7}, greedy(6)).output_ids);
  REQUIRE(engine.stats().num_free_blocks == engine.stats().num_total_blocks);
}

TEST_CASE("tensor parallelism on CPU ranks: the same tokens with 1, 2 and 4 ranks") {
  // 4 heads and 2 KV heads (fewer KV heads than 4 ranks), an odd vocabulary (uneven shards).
  auto c = small_llama_config({{"max_position_embeddings", 256}, {"vocab_size", 67}});
  const auto dir = write_checkpoint("engine_tp", c, random_weights(c, 5));
  auto ck = Checkpoint::open(dir);
  const ModelConfig cfg = ModelConfig::from_dir(dir);
  std::map<int, std::vector<std::vector<int32_t>>> out;
  std::map<int, std::vector<std::vector<float>>> logprobs;
  for (int world : {1, 2, 4}) {
    std::vector<std::unique_ptr<Backend>> backends;
    std::vector<std::unique_ptr<Model>> models;
    std::vector<RankModel> ranks;
    for (int r = 0; r < world; ++r) {
      backends.push_back(make_cpu_backend(1));
      models.push_back(load_model(*ck, cfg, *backends.back(), ParallelConfig{r, world}));
      ranks.push_back({backends.back().get(), models.back().get()});
    }
    auto comms = world > 1 ? make_cpu_communicators(world, std::chrono::seconds(30))
                           : std::vector<std::unique_ptr<Communicator>>{};
    EngineConfig ec;
    ec.num_kv_blocks = 64;
    ec.max_num_seqs = 4;
    ec.max_num_batched_tokens = 64;
    Engine engine(std::make_unique<ModelExecutor>(std::move(ranks), std::move(comms)), ec);
    std::vector<Collected> got(5);
    std::vector<std::vector<float>> lps(5);
    for (int i = 0; i < 5; ++i) {
      EngineRequest r;
      r.id = "tp" + std::to_string(i);
      for (int k = 0; k <= 9 * i; ++k) r.prompt.push_back((7 * k + i) % 67);
      r.params = greedy(12);
      engine.submit(r, [&got, &lps, i](const EngineOutput& o) {
        got[i].tokens[o.index].insert(got[i].tokens[o.index].end(), o.token_ids.begin(), o.token_ids.end());
        lps[i].insert(lps[i].end(), o.logprobs.begin(), o.logprobs.end());
        if (!o.error.empty()) got[i].error = o.error;
      });
    }
    while (engine.has_work()) engine.step();
    for (int i = 0; i < 5; ++i) {
      REQUIRE(got[i].error.empty());
      out[world].push_back(got[i].tokens[0]);
      logprobs[world].push_back(lps[i]);
    }
    CHECK(engine.stats().num_free_blocks == engine.stats().num_total_blocks);
  }
  for (int world : {2, 4}) {
    CHECK(out[world] == out[1]);
    for (size_t i = 0; i < out[1].size(); ++i)
      for (size_t k = 0; k < logprobs[1][i].size(); ++k)
        CHECK(logprobs[world][i][k] == Approx(logprobs[1][i][k]).margin(1e-4));
  }
}

TEST_CASE("abort ends a long request on the next step: nothing running, every KV block free") {
  ModelFixture f;
  EngineConfig ec;
  ec.num_kv_blocks = 96;
  ec.max_num_seqs = 8;
  Engine engine(*f.backend, *f.model, ec);
  // 400 tokens (EOS ignored) with a 512-token context: only the abort can end them this early.
  std::vector<int32_t> prompt;
  for (int k = 0; k < 40; ++k) prompt.push_back((5 * k + 3) % 64);
  std::map<std::string, Collected> got;
  int messages_after_finish = 0;
  auto cb = [&](const EngineOutput& o) {
    Collected& c = got[o.id];
    if (c.finish.count(o.index)) ++messages_after_finish;
    for (int32_t t : o.token_ids) c.tokens[o.index].push_back(t);
    if (o.finish_reason) c.finish[o.index] = *o.finish_reason;
  };
  const bool with_neighbour = GENERATE(false, true);
  std::vector<int32_t> neighbour_out;
  if (with_neighbour) {
    engine.submit({"neighbour", {9, 8, 7, 6}, greedy(60)}, [&](const EngineOutput& o) {
      neighbour_out.insert(neighbour_out.end(), o.token_ids.begin(), o.token_ids.end());
    });
  }
  engine.submit({"long", prompt, greedy(400)}, cb);
  engine.submit({"long2", prompt, greedy(400), 2}, cb);  // n = 2: both choices must end
  for (int s = 0; s < 8; ++s) engine.step();
  REQUIRE(got["long"].tokens[0].size() >= 5);
  REQUIRE(engine.stats().num_running == (with_neighbour ? 4 : 3));
  REQUIRE(engine.stats().num_free_blocks < engine.stats().num_total_blocks);

  engine.abort("long");
  engine.abort("long2");
  int steps = 0;
  while (engine.stats().num_running > (with_neighbour ? 1 : 0)) {
    engine.step();
    REQUIRE(++steps <= 3);
  }
  CHECK(steps == 1);  // effective at the start of the next step
  REQUIRE(got["long"].finish.size() == 1);
  REQUIRE(got["long2"].finish.size() == 2);
  for (const auto& [id, c] : got) {
    INFO(id);
    for (const auto& [index, reason] : c.finish) CHECK(reason == FinishReason::kAbort);
    for (const auto& [index, tokens] : c.tokens) CHECK(tokens.size() < 400);
  }
  CHECK(messages_after_finish == 0);
  REQUIRE(engine.check_invariants().empty());
  if (!with_neighbour) {
    CHECK(engine.stats().num_running == 0);
    CHECK(engine.stats().num_free_blocks == engine.stats().num_total_blocks);
    CHECK_FALSE(engine.has_work());
  } else {
    while (engine.has_work()) engine.step();
    Generator alone(*f.backend, *f.model);
    CHECK(neighbour_out == alone.generate({9, 8, 7, 6}, greedy(60)).output_ids);
    CHECK(engine.stats().num_free_blocks == engine.stats().num_total_blocks);
  }
}
