// The model runner's decode-step graphs and the engine's device sampling, on the CPU: a
// backend that wraps the CPU backend and offers (1) "graphs" whose replay reruns the captured
// callable — so the runner's padding to a bucket, the fixed launch sizes, warm-up, capture and
// replay produce real logits — and (2) a "device" sampler that reads the logits rows it is
// given, so the engine's split of rows between host and device and its seeds and offsets are
// checked. The CUDA implementations behind the same interfaces are checked on a GPU by
// tests/gpu (gpu_model).
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <random>

#include "engine/engine.h"
#include "engine/generator.h"
#include "tests/unit/small_model.h"

using namespace iris;
using namespace iris::test;

namespace {

struct Counters {
  int captures = 0, replays = 0, device_rows = 0;
};

class FakeGraphs final : public StepGraphRunner {
 public:
  FakeGraphs(std::vector<int> buckets, Counters& c) : buckets_(std::move(buckets)), c_(c) {}
  int bucket_for(int n) const override {
    for (int b : buckets_)
      if (b >= n) return b;
    return 0;
  }
  bool captured(int bucket) const override { return graphs_.count(bucket) != 0; }
  void capture(int bucket, const std::function<void()>& enqueue) override {
    graphs_[bucket] = enqueue;  // captured, not run
    ++c_.captures;
  }
  void replay(int bucket) override {
    graphs_.at(bucket)();
    ++c_.replays;
  }

 private:
  std::vector<int> buckets_;
  Counters& c_;
  std::map<int, std::function<void()>> graphs_;
};

// logit_bias, banned ids and the constraint's mask applied; greedy rows: argmax (ties to the
// lower id); sampled rows: an inverse-CDF draw over softmax(logits / temperature) with a
// generator keyed by (seed, offset), as the CUDA sampler keys Philox, so a row's draw depends
// on nothing else in the batch. Top log-probabilities from the unmodified row. (Penalties are
// left out: the CUDA sampler's are checked against the host's by tests/gpu.)
class FakeDeviceSampler final : public DeviceSampler {
 public:
  FakeDeviceSampler(Backend& inner, Counters& c) : inner_(inner), c_(c) {}
  void sample(const Tensor& logits, const std::vector<DeviceSampleRow>& rows, int32_t* tokens,
              float* logprobs, std::vector<std::pair<int32_t, float>>* top) override {
    const int64_t vocab = logits.dim(1);
    std::vector<float> row(static_cast<size_t>(vocab));
    for (size_t k = 0; k < rows.size(); ++k) {
      const DeviceSampleRow& r = rows[k];
      inner_.download_f32(logits.rows(r.logits_row, 1), row.data());
      std::vector<double> x(row.begin(), row.end());
      for (const auto& [t, bias] : r.params->logit_bias) x[t] += bias;
      for (int32_t b : r.banned) x[b] = -INFINITY;
      if (r.allowed)
        for (int64_t i = 0; i < vocab; ++i)
          if (!(r.allowed[i >> 5] >> (i & 31) & 1u)) x[i] = -INFINITY;
      int32_t pick = 0;
      if (r.params->temperature == 0.0f) {
        for (int64_t i = 1; i < vocab; ++i)
          if (x[i] > x[pick]) pick = static_cast<int32_t>(i);
      } else {
        double mx = -INFINITY, total = 0;
        for (double v : x) mx = std::max(mx, v);
        for (double& v : x) total += (v = std::exp((v - mx) / r.params->temperature));
        std::mt19937_64 gen(r.seed * 1000003ULL + r.offset);
        double u = std::uniform_real_distribution<double>(0, total)(gen);
        pick = static_cast<int32_t>(vocab - 1);
        for (int64_t i = 0; i < vocab; ++i)
          if ((u -= x[i]) < 0) {
            pick = static_cast<int32_t>(i);
            break;
          }
      }
      tokens[k] = pick;
      logprobs[k] = token_logprob(row.data(), vocab, pick);
      top[k] = r.params->top_logprobs > 0 ? top_logprobs(row.data(), vocab, r.params->top_logprobs)
                                          : std::vector<std::pair<int32_t, float>>{};
      ++c_.device_rows;
    }
  }

 private:
  Backend& inner_;
  Counters& c_;
};

class FakeDeviceBackend final : public Backend {
 public:
  FakeDeviceBackend(Backend& inner, Counters& c, bool graphs, bool sampler)
      : inner_(inner), c_(c), graphs_(graphs), sampler_(sampler) {}
  DeviceKind kind() const override { return inner_.kind(); }
  std::string name() const override { return "fake-device(" + inner_.name() + ")"; }
  DType compute_dtype() const override { return inner_.compute_dtype(); }
  Buffer allocate(DType dtype, Shape shape) override { return inner_.allocate(dtype, shape); }
  void upload(const void* src, DType src_dtype, Tensor& dst) override { inner_.upload(src, src_dtype, dst); }
  void download_f32(const Tensor& src, float* dst) override { inner_.download_f32(src, dst); }
  void upload_i32(const int32_t* src, Tensor& dst) override { inner_.upload_i32(src, dst); }
  void synchronize() override { inner_.synchronize(); }
  size_t free_memory_bytes() const override { return inner_.free_memory_bytes(); }
  Ops& ops() override { return inner_.ops(); }
  std::unique_ptr<StepGraphRunner> make_step_graphs(std::vector<int> buckets) override {
    if (!graphs_) return nullptr;
    buckets_ = buckets;
    return std::make_unique<FakeGraphs>(std::move(buckets), c_);
  }
  std::unique_ptr<DeviceSampler> make_device_sampler(int, int64_t) override {
    if (!sampler_) return nullptr;
    return std::make_unique<FakeDeviceSampler>(inner_, c_);
  }
  std::vector<int> buckets_;

 private:
  Backend& inner_;
  Counters& c_;
  bool graphs_, sampler_;
};

struct Result {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<std::vector<std::pair<int32_t, float>>> top;
  std::string error;
};

// Runs `reqs` together to completion; returns each request's choice 0.
std::map<std::string, Result> run_all(Engine& engine, const std::vector<EngineRequest>& reqs) {
  std::map<std::string, Result> got;
  for (const EngineRequest& r : reqs)
    engine.submit(r, [&got](const EngineOutput& o) {
      Result& g = got[o.id];
      g.tokens.insert(g.tokens.end(), o.token_ids.begin(), o.token_ids.end());
      g.logprobs.insert(g.logprobs.end(), o.logprobs.begin(), o.logprobs.end());
      g.top.insert(g.top.end(), o.top_logprobs.begin(), o.top_logprobs.end());
      if (!o.error.empty()) g.error = o.error;
    });
  for (int steps = 0; engine.has_work(); ++steps) {
    engine.step();
    REQUIRE(steps < 10000);
  }
  return got;
}

std::vector<EngineRequest> greedy_requests(int count, int max_tokens) {
  std::mt19937 rng(7);
  std::vector<EngineRequest> reqs;
  for (int i = 0; i < count; ++i) {
    EngineRequest r;
    r.id = "g" + std::to_string(i);
    const int len = 3 + static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) r.prompt.push_back(static_cast<int32_t>(rng() % 64));
    // Staggered lengths: the decode batch shrinks through several buckets.
    r.params = greedy(max_tokens - i);
    reqs.push_back(r);
  }
  return reqs;
}

EngineConfig small_engine(bool enforce_eager = false, bool host_sampling = false) {
  EngineConfig ec;
  ec.block_size = 16;
  ec.num_kv_blocks = 128;
  ec.max_num_seqs = 16;
  ec.max_num_batched_tokens = 256;
  ec.enforce_eager = enforce_eager;
  ec.host_sampling = host_sampling;
  return ec;
}

}  // namespace

TEST_CASE("graph buckets: 1, 2, 4, then multiples of 8, ending at the step's sequence limit") {
  CHECK(ModelRunner::graph_buckets(1) == std::vector<int>{1});
  CHECK(ModelRunner::graph_buckets(6) == std::vector<int>{1, 2, 4, 6});
  CHECK(ModelRunner::graph_buckets(16) == std::vector<int>{1, 2, 4, 8, 16});
  CHECK(ModelRunner::graph_buckets(30) == std::vector<int>{1, 2, 4, 8, 16, 24, 30});
}

TEST_CASE("decode steps replayed from graphs give every request the tokens it gets alone") {
  SmallModel m("step_graphs", 11);
  Counters c;
  FakeDeviceBackend dev(*m.backend, c, /*graphs=*/true, /*sampler=*/false);
  const auto reqs = greedy_requests(11, 16);
  Engine engine(dev, *m.model, small_engine());
  REQUIRE(dev.buckets_ == std::vector<int>{1, 2, 4, 8, 16});
  const auto got = run_all(engine, reqs);
  // Batches of 11 → 16, then 8, 4, 2, 1 as requests finish: several buckets warmed up,
  // captured and replayed.
  CHECK(c.captures >= 3);
  CHECK(c.replays > c.captures);
  CHECK(engine.stats().num_graph_replays == static_cast<uint64_t>(c.replays));
  Generator alone(*m.backend, *m.model);
  for (const EngineRequest& r : reqs) {
    INFO(r.id);
    const Result& g = got.at(r.id);
    REQUIRE(g.error.empty());
    const auto ref = alone.generate(r.prompt, r.params);
    REQUIRE(g.tokens == ref.output_ids);
    REQUIRE(g.logprobs.size() == ref.output_ids.size());
    for (float lp : g.logprobs) REQUIRE(std::isfinite(lp));
  }
  const EngineStats st = engine.stats();
  CHECK(st.num_free_blocks == st.num_total_blocks);
}

TEST_CASE("enforce_eager (--enforce-eager): no decode step is captured") {
  SmallModel m("step_graphs_eager", 11);
  Counters c;
  FakeDeviceBackend dev(*m.backend, c, /*graphs=*/true, /*sampler=*/false);
  Engine engine(dev, *m.model, small_engine(/*enforce_eager=*/true));
  const auto got = run_all(engine, greedy_requests(5, 8));
  CHECK(got.size() == 5);
  CHECK(c.captures == 0);
  CHECK(c.replays == 0);
  CHECK(engine.stats().num_graph_replays == 0);
}

TEST_CASE("device sampling: every request samples on the device, the same alone as in a batch") {
  SmallModel m("device_sampling", 5);
  std::vector<EngineRequest> reqs;
  auto add = [&](const std::string& id, SamplingParams p) {
    EngineRequest r;
    r.id = id;
    r.prompt = {3, 9, 27, 17, static_cast<int32_t>(id.size())};
    r.params = p;
    reqs.push_back(r);
  };
  add("greedy", greedy(10));
  SamplingParams top = greedy(10);
  top.top_logprobs = 2;
  add("greedy_top_logprobs", top);
  SamplingParams seeded;
  seeded.temperature = 0.8f;
  seeded.seed = 1234;
  seeded.max_tokens = 10;
  seeded.ignore_eos = true;
  add("seeded", seeded);
  SamplingParams biased = seeded;
  biased.seed = 99;
  biased.logit_bias = {{5, 3.0f}};
  add("seeded_logit_bias", biased);
  SamplingParams penalised = seeded;
  penalised.seed = 7;
  penalised.repetition_penalty = 1.3f;
  penalised.min_tokens = 4;
  add("seeded_penalised", penalised);

  Counters c;
  FakeDeviceBackend dev(*m.backend, c, /*graphs=*/true, /*sampler=*/true);
  Engine together(dev, *m.model, small_engine());
  const auto all = run_all(together, reqs);
  // Five requests × 10 tokens, all on the device.
  CHECK(together.stats().num_device_sampled == 50);
  CHECK(c.device_rows == 50);
  for (const EngineRequest& r : reqs) {
    INFO(r.id);
    Counters c1;
    FakeDeviceBackend dev1(*m.backend, c1, true, true);
    Engine alone(dev1, *m.model, small_engine());
    const auto one = run_all(alone, {r});
    REQUIRE(all.at(r.id).error.empty());
    REQUIRE(all.at(r.id).tokens.size() == 10);
    REQUIRE(all.at(r.id).tokens == one.at(r.id).tokens);
    CHECK(c1.device_rows == 10);
  }
  // Greedy on the device equals greedy on the host, top log-probabilities included.
  Counters c2;
  FakeDeviceBackend host_dev(*m.backend, c2, true, true);
  Engine host(host_dev, *m.model, small_engine(false, /*host_sampling=*/true));
  const auto h = run_all(host, {reqs[0], reqs[1]});
  CHECK(c2.device_rows == 0);
  CHECK(h.at("greedy").tokens == all.at("greedy").tokens);
  const Result& dt = all.at("greedy_top_logprobs");
  const Result& ht = h.at("greedy_top_logprobs");
  REQUIRE(dt.top.size() == 10);
  REQUIRE(ht.top.size() == 10);
  for (size_t i = 0; i < 10; ++i) {
    // Other batches around the request: the logits may differ in their last bits.
    REQUIRE(dt.top[i].size() == 2);
    REQUIRE(ht.top[i].size() == 2);
    for (int j = 0; j < 2; ++j) {
      REQUIRE(dt.top[i][j].first == ht.top[i][j].first);
      REQUIRE(std::abs(dt.top[i][j].second - ht.top[i][j].second) < 1e-4);
    }
  }
}
