// The engine's timings on a real (small, random) model: every admitted choice gets exactly
// one RequestTiming, on its final output, whose phases are ordered and add up to its e2e
// time; the step observer sees every step that ran the model with its token count; and a
// ServerMetrics fed from a real run passes promtool.
#include <catch2/catch.hpp>

#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "engine/loader/checkpoint.h"
#include "server/metrics/server_metrics.h"
#include "tests/metrics/promtool.h"
#include "tests/unit/small_model.h"
#include "tests/unit/test_util.h"

using namespace iris;
using namespace iris::test;

namespace {

struct ModelFixture : SmallModel {
  ModelFixture() : SmallModel("metrics_engine", 5) {}
};

// Records what a StepObserver sees (engine thread only).
struct StepLog final : StepObserver {
  std::vector<StepTiming> steps;
  void on_step(const StepTiming& s) noexcept override { steps.push_back(s); }
};

struct Choice {
  int outputs = 0;
  int tokens = 0;
  int timings = 0;
  bool timing_on_final = false;
  std::optional<FinishReason> finish;
  std::optional<RequestTiming> timing;
  int prompt_tokens = 0, completion_tokens = 0;
};

}  // namespace

TEST_CASE("every choice's final output carries consistent timings") {
  ModelFixture f;
  EngineConfig ec;
  ec.max_num_seqs = 4;  // a queue forms: later requests wait
  ec.max_num_batched_tokens = 64;
  ec.num_kv_blocks = 64;
  Engine engine(*f.backend, *f.model, ec);
  StepLog log;
  engine.set_step_observer(&log);

  std::mt19937 rng(3);
  std::map<std::pair<std::string, int>, Choice> got;
  constexpr int kRequests = 12;
  int expected_choices = 0;
  for (int i = 0; i < kRequests; ++i) {
    EngineRequest r;
    r.id = "r";
    r.id += std::to_string(i);
    const int len = 1 + static_cast<int>(rng() % 150);
    for (int k = 0; k < len; ++k) r.prompt.push_back(static_cast<int32_t>(rng() % 64));
    r.params = greedy(1 + static_cast<int>(rng() % 12));
    r.n = i % 5 == 0 ? 2 : 1;
    expected_choices += r.n;
    engine.submit(r, [&got](const EngineOutput& o) {
      Choice& c = got[{o.id, o.index}];
      ++c.outputs;
      c.tokens += static_cast<int>(o.token_ids.size());
      if (o.timing) {
        ++c.timings;
        c.timing = o.timing;
        c.timing_on_final = o.finish_reason.has_value();
      }
      if (o.finish_reason) {
        c.finish = o.finish_reason;
        c.prompt_tokens = o.prompt_tokens;
        c.completion_tokens = o.completion_tokens;
      }
    });
  }
  // A request refused at admission has no timing (it never entered the engine's queue).
  EngineRequest bad;
  bad.id = "bad";
  bad.prompt = {1, 999999};
  bad.params = greedy(4);
  engine.submit(bad, [&got](const EngineOutput& o) { got[{o.id, o.index}].timing = o.timing; });
  // Time passes before the first step: every queue time includes it.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));

  int steps_with_model = 0;
  engine.step();  // admits everything, runs the first 4 choices
  engine.abort("r11");  // aborted while waiting (the batch holds 4)
  while (engine.has_work()) {
    engine.step();
    REQUIRE(engine.check_invariants().empty());
  }
  const EngineStats st = engine.stats();
  CHECK_FALSE(got.at({"bad", 0}).timing.has_value());

  int choices = 0;
  for (const auto& [key, c] : got) {
    if (key.first == "bad") continue;
    ++choices;
    INFO(key.first << "#" << key.second);
    REQUIRE(c.finish.has_value());
    CHECK(c.timings == 1);
    CHECK(c.timing_on_final);
    const RequestTiming& t = *c.timing;
    CHECK(c.completion_tokens == c.tokens);
    CHECK(t.queue_seconds >= 0.02);  // the sleep before the first step
    CHECK(t.queue_seconds <= t.e2e_seconds);
    CHECK(t.prefill_seconds >= 0);
    CHECK(t.decode_seconds >= 0);
    CHECK(t.queue_seconds + t.prefill_seconds + t.decode_seconds ==
          Approx(t.e2e_seconds).margin(1e-9));
    if (key.first == "r11") {
      CHECK(*c.finish == FinishReason::kAbort);
      CHECK_FALSE(t.scheduled);
      CHECK_FALSE(t.first_token);
      continue;
    }
    CHECK(*c.finish == FinishReason::kLength);
    CHECK(t.scheduled);
    CHECK(t.first_token);
    CHECK(t.ttft_seconds >= t.queue_seconds);
    CHECK(t.ttft_seconds <= t.e2e_seconds);
    CHECK(t.ttft_seconds == Approx(t.queue_seconds + t.prefill_seconds).margin(1e-9));
    if (c.tokens == 1) CHECK(t.decode_seconds < 0.5);  // finished in its first-token step
  }
  CHECK(choices == expected_choices);

  // The observer saw every step that ran the model, with its tokens and phases.
  REQUIRE(!log.steps.empty());
  int64_t tokens = 0;
  double forward = 0, sample = 0, detok = 0, sched = 0;
  for (const StepTiming& s : log.steps) {
    CHECK(s.num_seqs > 0);
    CHECK(s.num_seqs <= ec.max_num_seqs);
    CHECK(s.num_tokens > 0);
    CHECK(s.num_tokens <= ec.max_num_batched_tokens);
    CHECK(s.forward_seconds > 0);
    CHECK(s.sample_seconds >= 0);
    CHECK(s.detokenize_seconds >= 0);
    tokens += s.num_tokens;
    forward += s.forward_seconds;
    sample += s.sample_seconds;
    detok += s.detokenize_seconds;
    sched += s.schedule_seconds;
    ++steps_with_model;
  }
  CHECK(tokens == st.num_computed_tokens);
  CHECK(forward == Approx(st.prepare_forward_seconds));
  CHECK(sample == Approx(st.sample_seconds));
  CHECK(detok == Approx(st.detokenize_seconds));
  CHECK(sched <= st.schedule_seconds + 1e-12);
  CHECK(static_cast<uint64_t>(steps_with_model) <= st.num_steps);
  CHECK(st.kv_cache_bytes > 0);
  CHECK(st.weight_bytes > 0);
  CHECK(st.tensor_parallel_size == 1);
}

TEST_CASE("a ServerMetrics recorded from a real engine run passes promtool") {
  ModelFixture f;
  EngineConfig ec;
  ec.max_num_seqs = 8;
  ec.num_kv_blocks = 64;
  Engine engine(*f.backend, *f.model, ec);
  metrics::ServerMetrics m(
      metrics::ServerMetricsConfig{"tiny-llama", "0.1.0", "cpu", 1, [&engine] { return engine.stats(); }});
  engine.set_step_observer(&m);

  // What the request layer does: a TokenClock per choice, on_tokens per output, one record
  // per finished choice.
  std::map<std::pair<std::string, int>, metrics::TokenClock> clocks;
  int finished = 0, generated = 0;
  for (int i = 0; i < 6; ++i) {
    EngineRequest r;
    r.id = "q";
    r.id += std::to_string(i);
    r.prompt.assign(static_cast<size_t>(10 + 7 * i), static_cast<int32_t>(3 + i));
    r.params = greedy(5 + i);
    r.n = i == 0 ? 2 : 1;
    engine.submit(r, [&](const EngineOutput& o) {
      if (!o.token_ids.empty()) {
        m.on_tokens(static_cast<int>(o.token_ids.size()), clocks[{o.id, o.index}].tick());
        generated += static_cast<int>(o.token_ids.size());
      }
      if (o.finish_reason) {
        metrics::RequestRecord rec;
        rec.api = o.index == 0 ? metrics::Api::kHttp : metrics::Api::kGrpc;
        rec.finish_reason = *o.finish_reason;
        rec.prompt_tokens = o.prompt_tokens;
        rec.completion_tokens = o.completion_tokens;
        rec.timing = o.timing;
        m.on_request_finished(rec);
        ++finished;
      }
    });
  }
  m.on_rejected(metrics::RejectReason::kTooLarge, metrics::Api::kHttp);
  while (engine.has_work()) engine.step();
  REQUIRE(finished == 7);

  const std::string text = m.render();
  INFO(text);
  CHECK(text.find("\niris_generation_tokens_total{model_name=\"tiny-llama\"} " + std::to_string(generated) +
                  "\n") != std::string::npos);
  CHECK(text.find("\niris_e2e_request_latency_seconds_count{model_name=\"tiny-llama\"} 7\n") !=
        std::string::npos);
  CHECK(text.find("\niris_request_success_total{model_name=\"tiny-llama\",finished_reason=\"length\","
                  "api=\"http\"} 6\n") != std::string::npos);
  CHECK(text.find("\niris_num_requests_running{model_name=\"tiny-llama\"} 0\n") != std::string::npos);
  CHECK(text.find("\niris_kv_cache_bytes{model_name=\"tiny-llama\"} 0\n") == std::string::npos);

  const std::string promtool = promtool_path();
  if (promtool.empty())
    FAIL("promtool not found at configure time: install Debian's prometheus package "
         "(scripts/install-deps.sh) and reconfigure");
  const PromtoolResult r = promtool_check_metrics(text);
  INFO("promtool output:\n" << r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.empty());
}

TEST_CASE("recording on the engine thread while another thread scrapes") {
  ModelFixture f;
  EngineConfig ec;
  ec.max_num_seqs = 8;
  ec.num_kv_blocks = 64;
  Engine engine(*f.backend, *f.model, ec);
  metrics::ServerMetrics m(
      metrics::ServerMetricsConfig{"tiny-llama", "0.1.0", "cpu", 1, [&engine] { return engine.stats(); }});
  engine.set_step_observer(&m);
  engine.start();

  std::atomic<bool> done{false};
  std::atomic<int> scrapes{0};
  std::thread scraper([&] {
    while (!done) {
      if (m.render().find("iris_build_info") != std::string::npos) ++scrapes;
    }
  });
  constexpr int kRequests = 16;
  std::mutex mu;
  std::condition_variable cv;
  int finished = 0;
  std::map<std::string, metrics::TokenClock> clocks;  // engine thread only
  for (int i = 0; i < kRequests; ++i) {
    EngineRequest r;
    r.id = "s";
    r.id += std::to_string(i);
    r.prompt.assign(static_cast<size_t>(5 + i), 7);
    r.params = greedy(8);
    engine.submit(r, [&](const EngineOutput& o) {
      if (!o.token_ids.empty()) m.on_tokens(static_cast<int>(o.token_ids.size()), clocks[o.id].tick());
      if (!o.finish_reason) return;
      metrics::RequestRecord rec;
      rec.finish_reason = *o.finish_reason;
      rec.prompt_tokens = o.prompt_tokens;
      rec.completion_tokens = o.completion_tokens;
      rec.timing = o.timing;
      m.on_request_finished(rec);
      std::lock_guard<std::mutex> lock(mu);
      ++finished;
      cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return finished == kRequests; }));
  }
  done = true;
  scraper.join();
  engine.stop();
  CHECK(scrapes > 0);
  const std::string text = m.render();
  CHECK(text.find("\niris_generation_tokens_total{model_name=\"tiny-llama\"} 128\n") != std::string::npos);
  CHECK(text.find("\niris_request_success_total{model_name=\"tiny-llama\",finished_reason=\"length\","
                  "api=\"http\"} 16\n") != std::string::npos);
}
