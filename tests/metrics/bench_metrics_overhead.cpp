// Engine steps per second with metrics recording off and on, on the CPU backend with a small
// random Llama: "on" is what a server does (ServerMetrics as the engine's step observer, a
// TokenClock and on_tokens per output, on_request_finished per choice), "off" records
// nothing. Runs alternate off/on to spread noise and report the median of each. The model is
// tiny on purpose: a short step makes the fixed per-step and per-token cost of recording as
// visible as it can be. Also times one render(). Prints figures; never fails on a timing.
//
// usage: bench_metrics_overhead [rounds=5] [requests=64] [max_tokens=64] [hidden=64]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>

#include "engine/engine.h"
#include "engine/loader/checkpoint.h"
#include "server/metrics/server_metrics.h"
#include "tests/unit/test_util.h"

using namespace iris;
using clock_type = std::chrono::steady_clock;

namespace {

struct Result {
  double steps_per_s = 0;
  double tokens_per_s = 0;
  uint64_t steps = 0;
};

Result run(Backend& backend, Model& model, int requests, int max_tokens, metrics::ServerMetrics* m) {
  EngineConfig ec;
  ec.max_num_seqs = 32;
  ec.max_num_batched_tokens = 256;
  ec.num_kv_blocks = 1024;
  Engine engine(backend, model, ec);
  if (m) engine.set_step_observer(m);
  std::map<std::pair<std::string, int>, metrics::TokenClock> clocks;
  int64_t generated = 0;
  for (int i = 0; i < requests; ++i) {
    EngineRequest r;
    r.id = "b";
    r.id += std::to_string(i);
    for (int k = 0; k < 32 + (i * 13) % 96; ++k) r.prompt.push_back(static_cast<int32_t>((i * 31 + k * 7) % 60 + 3));
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = true;
    engine.submit(r, [&](const EngineOutput& o) {
      generated += static_cast<int64_t>(o.token_ids.size());
      if (!m) return;
      if (!o.token_ids.empty())
        m->on_tokens(static_cast<int>(o.token_ids.size()), clocks[{o.id, o.index}].tick());
      if (o.finish_reason) {
        metrics::RequestRecord rec;
        rec.api = metrics::Api::kHttp;
        rec.finish_reason = *o.finish_reason;
        rec.prompt_tokens = o.prompt_tokens;
        rec.completion_tokens = o.completion_tokens;
        rec.timing = o.timing;
        m->on_request_finished(rec);
      }
    });
  }
  const auto t0 = clock_type::now();
  while (engine.has_work()) engine.step();
  const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
  Result r;
  r.steps = engine.stats().num_steps;
  r.steps_per_s = static_cast<double>(r.steps) / s;
  r.tokens_per_s = static_cast<double>(generated) / s;
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 5;
  const int requests = argc > 2 ? std::atoi(argv[2]) : 64;
  const int max_tokens = argc > 3 ? std::atoi(argv[3]) : 64;
  const int hidden = argc > 4 ? std::atoi(argv[4]) : 64;
  auto c = test::small_llama_config({{"hidden_size", hidden},
                                     {"intermediate_size", hidden * 3 / 2},
                                     {"vocab_size", 256},
                                     {"max_position_embeddings", 512}});
  const auto dir = test::write_checkpoint("bench_metrics", c, test::random_weights(c, 9));
  auto backend = make_cpu_backend(1);
  auto ck = Checkpoint::open(dir);
  const ModelConfig cfg = ModelConfig::from_dir(dir);
  auto model = load_model(*ck, cfg, *backend);

  metrics::ServerMetrics m(metrics::ServerMetricsConfig{"bench", "0", "cpu", 1, {}});
  run(*backend, *model, requests / 4 + 1, max_tokens, &m);  // warm-up
  std::vector<double> off, on, tok_off, tok_on;
  uint64_t steps = 0;
  for (int i = 0; i < rounds; ++i) {
    const Result a = run(*backend, *model, requests, max_tokens, nullptr);
    const Result b = run(*backend, *model, requests, max_tokens, &m);
    off.push_back(a.steps_per_s);
    on.push_back(b.steps_per_s);
    tok_off.push_back(a.tokens_per_s);
    tok_on.push_back(b.tokens_per_s);
    steps = a.steps;
    std::printf("round %d: off %.0f steps/s, on %.0f steps/s\n", i, a.steps_per_s, b.steps_per_s);
  }
  const double mo = median(off), mn = median(on);

  // The recording calls alone, single-threaded, in nanoseconds per call.
  metrics::ServerMetrics lone(metrics::ServerMetricsConfig{"bench", "0", "cpu", 1, {}});
  constexpr int kCalls = 1000000;
  auto ns_per_call = [&](auto&& fn) {
    const auto t = clock_type::now();
    for (int i = 0; i < kCalls; ++i) fn(i);
    return std::chrono::duration<double, std::nano>(clock_type::now() - t).count() / kCalls;
  };
  StepTiming st{.schedule_seconds = 3e-5, .forward_seconds = 0.01, .sample_seconds = 2e-4,
                .detokenize_seconds = 5e-5, .num_tokens = 40, .num_seqs = 32};
  const double ns_step = ns_per_call([&](int i) {
    st.num_tokens = 1 + i % 512;
    lone.on_step(st);
  });
  const double ns_tokens = ns_per_call([&](int i) { lone.on_tokens(1, 0.001 * (i % 100)); });
  metrics::RequestRecord rec;
  rec.timing = RequestTiming{.queue_seconds = 0.1, .prefill_seconds = 0.2, .decode_seconds = 1,
                             .ttft_seconds = 0.3, .e2e_seconds = 1.3, .scheduled = true, .first_token = true};
  const double ns_finish = ns_per_call([&](int i) {
    rec.completion_tokens = i % 1000;
    lone.on_request_finished(rec);
  });
  std::printf("per call: on_step %.0f ns, on_tokens %.0f ns, on_request_finished %.0f ns\n", ns_step,
              ns_tokens, ns_finish);

  const auto r0 = clock_type::now();
  constexpr int kRenders = 200;
  size_t bytes = 0;
  for (int i = 0; i < kRenders; ++i) bytes = m.render().size();
  const double render_us = std::chrono::duration<double, std::micro>(clock_type::now() - r0).count() / kRenders;
  std::printf("steps per run %llu (%d requests x %d tokens, hidden %d)\n",
              static_cast<unsigned long long>(steps), requests, max_tokens, hidden);
  std::printf("median steps/s: off %.0f (%.2f ms/step), on %.0f (%.2f ms/step); overhead %.2f%%\n", mo,
              1e3 / mo, mn, 1e3 / mn, 100.0 * (mo - mn) / mo);
  std::printf("median tokens/s: off %.0f, on %.0f\n", median(tok_off), median(tok_on));
  std::printf("render(): %.1f us for %zu bytes\n", render_us, bytes);
  std::printf("RESULT {\"steps_per_s_off\": %.1f, \"steps_per_s_on\": %.1f, \"overhead_pct\": %.3f, "
              "\"render_us\": %.1f, \"on_step_ns\": %.0f, \"on_tokens_ns\": %.0f, \"on_request_finished_ns\": %.0f}\n",
              mo, mn, 100.0 * (mo - mn) / mo, render_us, ns_step, ns_tokens, ns_finish);
  return 0;
}
