// The GPU sampler (cuda/sampling.h) against the host sampler (engine/sampler.cpp):
// greedy must pick exactly the host's token (penalties, banned ids and ties included) with
// the same logprob; for random sampling the kept set must be exactly the host's and the
// empirical frequencies over many seeds must match the host's probabilities.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "cuda/sampling.h"
#include "engine/sampler.h"
#include "tests/gpu/gpu_test_util.h"

using namespace iris;
using namespace iris::gpu_test;

namespace {

template <typename T>
struct DeviceArray {
  T* p = nullptr;
  explicit DeviceArray(const std::vector<T>& host) {
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p),
                       std::max<size_t>(1, host.size()) * sizeof(T)) == cudaSuccess);
    if (!host.empty())
      REQUIRE(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice) ==
              cudaSuccess);
  }
  ~DeviceArray() { cudaFree(p); }
  std::vector<T> get(size_t n) const {
    std::vector<T> h(n);
    REQUIRE(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
};

// What a row has seen: prompt tokens and generated tokens (with repeats).
struct History {
  std::vector<int32_t> prompt, output, banned;
};

struct Samples {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
};

Samples gpu_sample(const std::vector<float>& logits, int vocab,
                   const std::vector<cuda::SamplingRowParams>& params,
                   const std::vector<History>& hist) {
  gpu();  // device checks
  const int rows = static_cast<int>(params.size());
  REQUIRE(logits.size() == static_cast<size_t>(rows) * vocab);
  std::vector<int32_t> poff{0}, ptok, pcnt, boff{0}, btok;
  for (int r = 0; r < rows; ++r) {
    std::map<int32_t, int32_t> counts;
    if (r < static_cast<int>(hist.size())) {
      for (int32_t t : hist[r].prompt) counts.emplace(t, 0);
      for (int32_t t : hist[r].output) ++counts[t];
      for (int32_t t : hist[r].banned) btok.push_back(t);
    }
    for (auto [t, n] : counts) {
      ptok.push_back(t);
      pcnt.push_back(n);
    }
    poff.push_back(static_cast<int32_t>(ptok.size()));
    boff.push_back(static_cast<int32_t>(btok.size()));
  }
  DeviceArray<float> d_logits(logits), d_scratch(logits);
  DeviceArray<cuda::SamplingRowParams> d_params(params);
  DeviceArray<int32_t> d_poff(poff), d_ptok(ptok), d_pcnt(pcnt), d_boff(boff), d_btok(btok);
  DeviceArray<int32_t> d_tok(std::vector<int32_t>(rows, -7));
  DeviceArray<float> d_lp(std::vector<float>(rows, NAN));
  cuda::SamplingBatch b;
  b.logits = d_logits.p;
  b.scratch = d_scratch.p;
  b.params = d_params.p;
  b.penalty_offsets = d_poff.p;
  b.penalty_tokens = d_ptok.p;
  b.penalty_counts = d_pcnt.p;
  b.banned_offsets = d_boff.p;
  b.banned_tokens = d_btok.p;
  b.out_tokens = d_tok.p;
  b.out_logprobs = d_lp.p;
  b.num_rows = rows;
  b.vocab = vocab;
  cuda::launch_sample(b, nullptr);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  return {d_tok.get(rows), d_lp.get(rows)};
}

SequenceSampler host_sampler(const SamplingParams& p, const History& h) {
  SequenceSampler s(p, h.prompt);
  for (int32_t t : h.output) s.append(t);
  return s;
}

// The host sampler's probability of every token (engine/sampler.cpp, step by step).
std::vector<double> host_probs(const std::vector<float>& logits, const SamplingParams& p,
                               const History& h) {
  const int64_t v = static_cast<int64_t>(logits.size());
  std::vector<float> x = logits;
  if (p.repetition_penalty != 1.0f) {
    std::vector<int32_t> seen = h.prompt;
    seen.insert(seen.end(), h.output.begin(), h.output.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t t : seen)
      x[t] = x[t] > 0 ? x[t] / p.repetition_penalty : x[t] * p.repetition_penalty;
  }
  std::map<int32_t, int> counts;
  for (int32_t t : h.output) ++counts[t];
  for (auto [t, n] : counts)
    x[t] -= p.presence_penalty + p.frequency_penalty * static_cast<float>(n);
  for (int32_t t : h.banned) x[t] = -INFINITY;
  for (float& f : x) f /= p.temperature;
  std::vector<int32_t> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  int64_t keep = (p.top_k > 0 && p.top_k < v) ? p.top_k : v;
  std::vector<double> probs(keep);
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i)
    sum += probs[i] = std::exp(static_cast<double>(x[order[i]] - x[order[0]]));
  for (double& q : probs) q /= sum;
  if (p.top_p < 1.0f) {
    double cum = 0;
    int64_t n = 0;
    while (n < keep && cum < p.top_p) cum += probs[n++];
    keep = std::max<int64_t>(n, 1);
  }
  if (p.min_p > 0.0f) {
    const double floor = p.min_p * probs[0];
    int64_t n = 1;
    while (n < keep && probs[n] >= floor) ++n;
    keep = n;
  }
  std::vector<double> out(v, 0.0);
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += probs[i];
  for (int64_t i = 0; i < keep; ++i) out[order[i]] = probs[i] / mass;
  return out;
}

std::vector<float> random_logits(int64_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// |f - p| within 5 standard deviations of a binomial frequency, and no mass outside support.
void require_distribution(const std::vector<int64_t>& hits, int64_t n, const std::vector<double>& p,
                          const char* who) {
  for (size_t t = 0; t < p.size(); ++t) {
    const double f = static_cast<double>(hits[t]) / n;
    const double sd = std::sqrt(p[t] * (1 - p[t]) / n);
    INFO(who << ": token " << t << " frequency " << f << " expected " << p[t]);
    if (p[t] == 0.0) {
      REQUIRE(hits[t] == 0);
    } else {
      REQUIRE(std::abs(f - p[t]) <= 5 * sd + 2.0 / n);
    }
  }
}

}  // namespace

TEST_CASE("GPU greedy sampling equals the host sampler, penalties and banned ids included",
          "[sampling]") {
  const int vocab = 50000, rows = 12;
  std::vector<float> logits = random_logits(static_cast<int64_t>(rows) * vocab, 1, 3.0f);
  // Row 10: ties at the maximum resolve to the lowest id. Row 11: all equal.
  for (int i = 0; i < vocab; ++i) logits[10 * vocab + i] = std::min(logits[10 * vocab + i], 5.0f);
  logits[10 * vocab + 4000] = logits[10 * vocab + 77] = 9.0f;
  std::fill(logits.begin() + 11 * vocab, logits.end(), 0.25f);
  std::vector<cuda::SamplingRowParams> params;
  std::vector<History> hist(rows);
  std::mt19937 rng(2);
  for (int r = 0; r < rows; ++r) {
    SamplingParams p;
    p.temperature = 0;
    p.repetition_penalty = r % 3 == 0 ? 1.0f : 1.3f;
    p.presence_penalty = r % 2 ? 0.5f : 0.0f;
    p.frequency_penalty = r % 4 == 1 ? 0.7f : 0.0f;
    // Make the penalties matter: the prompt and output include the row's top tokens.
    std::vector<int32_t> top(vocab);
    std::iota(top.begin(), top.end(), 0);
    std::partial_sort(top.begin(), top.begin() + 5, top.end(),
                      [&](int a, int b) { return logits[r * vocab + a] > logits[r * vocab + b]; });
    hist[r].prompt = {top[0], static_cast<int32_t>(rng() % vocab), top[2]};
    hist[r].output = {top[1], top[1], top[3], static_cast<int32_t>(rng() % vocab)};
    if (r % 5 == 2) hist[r].banned = {top[0], top[1], top[2]};
    if (r >= 10) {  // the tie rows: nothing may move the tied values
      hist[r] = {};
      p.repetition_penalty = 1.0f;
      p.presence_penalty = p.frequency_penalty = 0.0f;
    }
    params.push_back(cuda::row_params(p, 1234 + r, 0));
  }
  const Samples got = gpu_sample(logits, vocab, params, hist);
  for (int r = 0; r < rows; ++r) {
    SamplingParams p;
    p.temperature = 0;
    p.repetition_penalty = params[r].repetition_penalty;
    p.presence_penalty = params[r].presence_penalty;
    p.frequency_penalty = params[r].frequency_penalty;
    auto s = host_sampler(p, hist[r]);
    const auto want =
        s.sample(logits.data() + static_cast<size_t>(r) * vocab, vocab, hist[r].banned);
    INFO("row " << r);
    REQUIRE(got.tokens[r] == want.token);
    REQUIRE(got.logprobs[r] == Approx(want.logprob).margin(1e-3));
  }
  REQUIRE(got.tokens[10] == 77);
  REQUIRE(got.tokens[11] == 0);
}

TEST_CASE("GPU sampling draws from the host sampler's distribution", "[sampling]") {
  struct Case {
    const char* name;
    float temperature;
    int top_k;
    float top_p, min_p, rep, presence, frequency;
  };
  auto c = GENERATE(Case{"temperature", 0.7f, -1, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f},
                    Case{"top_k", 1.0f, 10, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f},
                    Case{"top_p", 1.0f, -1, 0.8f, 0.0f, 1.0f, 0.0f, 0.0f},
                    Case{"min_p", 1.3f, -1, 1.0f, 0.1f, 1.0f, 0.0f, 0.0f},
                    Case{"all filters", 0.9f, 20, 0.9f, 0.05f, 1.0f, 0.0f, 0.0f},
                    Case{"penalties", 1.0f, 30, 0.95f, 0.0f, 1.5f, 0.4f, 0.3f});
  INFO(c.name);
  const int vocab = 64, n = 20000;
  const std::vector<float> row = random_logits(vocab, 3, 1.5f);
  SamplingParams p;
  p.temperature = c.temperature;
  p.top_k = c.top_k;
  p.top_p = c.top_p;
  p.min_p = c.min_p;
  p.repetition_penalty = c.rep;
  p.presence_penalty = c.presence;
  p.frequency_penalty = c.frequency;
  History h;
  if (c.rep != 1.0f || c.presence != 0.0f) {
    h.prompt = {1, 2, 3, 40};
    h.output = {5, 5, 40, 9};
    h.banned = {11};
  }
  const std::vector<double> want = host_probs(row, p, h);

  // The expectation is the host sampler's: check it against the host sampler itself.
  std::vector<int64_t> host_hits(vocab, 0);
  for (int i = 0; i < n; ++i) {
    p.seed = 1000 + i;
    auto s = host_sampler(p, h);
    ++host_hits[s.sample(row.data(), vocab, h.banned).token];
  }
  require_distribution(host_hits, n, want, "host sampler");

  std::vector<float> logits;
  std::vector<cuda::SamplingRowParams> params;
  for (int i = 0; i < n; ++i) {
    logits.insert(logits.end(), row.begin(), row.end());
    params.push_back(cuda::row_params(p, 77 + i, 5));
  }
  const Samples got = gpu_sample(logits, vocab, params, std::vector<History>(n, h));
  std::vector<int64_t> gpu_hits(vocab, 0);
  for (int i = 0; i < n; ++i) {
    REQUIRE(got.tokens[i] >= 0);
    REQUIRE(got.tokens[i] < vocab);
    ++gpu_hits[got.tokens[i]];
    REQUIRE(got.logprobs[i] ==
            Approx(token_logprob(row.data(), vocab, got.tokens[i])).margin(1e-4));
  }
  require_distribution(gpu_hits, n, want, "gpu sampler");
}

TEST_CASE("GPU sampling over a 128k vocabulary keeps exactly the host's candidates", "[sampling]") {
  const int vocab = 128256, n = 1024;
  std::vector<float> row = random_logits(vocab, 4, 2.0f);
  row[100] = row[101] = row[102] = 9.0f;  // ties at the top
  for (auto [k, top_p] : {std::pair{40, 0.9f}, std::pair{-1, 0.5f}, std::pair{3, 1.0f}}) {
    SamplingParams p;
    p.temperature = 0.8f;
    p.top_k = k;
    p.top_p = top_p;
    INFO("top_k " << k << " top_p " << top_p);
    const std::vector<double> want = host_probs(row, p, {});
    std::vector<float> logits;
    std::vector<cuda::SamplingRowParams> params;
    for (int i = 0; i < n; ++i) {
      logits.insert(logits.end(), row.begin(), row.end());
      params.push_back(cuda::row_params(p, 5, i));  // one request, successive steps
    }
    const Samples got = gpu_sample(logits, vocab, params, {});
    std::vector<int64_t> hits(vocab, 0);
    for (int i = 0; i < n; ++i) {
      INFO("sample " << i << " token " << got.tokens[i]);
      REQUIRE(got.tokens[i] >= 0);
      REQUIRE(got.tokens[i] < vocab);
      REQUIRE(want[got.tokens[i]] > 0.0);
      ++hits[got.tokens[i]];
    }
    for (int t : {100, 101, 102}) {
      const double f = static_cast<double>(hits[t]) / n;
      REQUIRE(std::abs(f - want[t]) <= 5 * std::sqrt(want[t] * (1 - want[t]) / n) + 2.0 / n);
    }
  }
}

TEST_CASE("GPU sampling is a function of (seed, offset)", "[sampling]") {
  const int vocab = 1000;
  const std::vector<float> row = random_logits(vocab, 6, 1.0f);
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<float> logits;
  std::vector<cuda::SamplingRowParams> params;
  for (int i = 0; i < 64; ++i) {
    logits.insert(logits.end(), row.begin(), row.end());
    params.push_back(cuda::row_params(p, 42, static_cast<uint64_t>(i % 2 == 0 ? 7 : i)));
  }
  const Samples got = gpu_sample(logits, vocab, params, {});
  for (int i = 2; i < 64; i += 2) REQUIRE(got.tokens[i] == got.tokens[0]);
  std::set<int32_t> distinct;
  for (int i = 1; i < 64; i += 2) distinct.insert(got.tokens[i]);
  REQUIRE(distinct.size() > 10);
}

TEST_CASE("GPU sampling: -0.0 and +0.0 are one value, ordered by id as on the host", "[sampling]") {
  // Ids 3 (-0.0) and 7 (+0.0) tie for the best logit; the host orders them by id, so top-k 1
  // keeps id 3 only and greedy picks id 3.
  const int vocab = 16;
  std::vector<float> row(vocab, -5.0f);
  row[3] = -0.0f;
  row[7] = 0.0f;
  SamplingParams topk;
  topk.temperature = 1.0f;
  topk.top_k = 1;
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<float> logits;
  std::vector<cuda::SamplingRowParams> params;
  for (int i = 0; i < 32; ++i) {
    logits.insert(logits.end(), row.begin(), row.end());
    params.push_back(cuda::row_params(i % 2 ? topk : greedy, 100 + i, 0));
  }
  const Samples got = gpu_sample(logits, vocab, params, {});
  for (int i = 0; i < 32; ++i) REQUIRE(got.tokens[i] == 3);
  SequenceSampler host(topk, {});
  REQUIRE(host.sample(row.data(), vocab).token == 3);
}

TEST_CASE("GPU top-p: the same (seed, offset) gives the same token on every run", "[sampling]") {
  // A flat 50k-token row puts the top-p boundary among thousands of near-equal masses, where a
  // floating-point sum in arrival order would move it from run to run.
  const int vocab = 50000;
  const std::vector<float> row = random_logits(vocab, 11, 0.05f);
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.5f;
  std::vector<float> logits;
  std::vector<cuda::SamplingRowParams> params;
  for (int i = 0; i < 16; ++i) {
    logits.insert(logits.end(), row.begin(), row.end());
    params.push_back(cuda::row_params(p, 9, static_cast<uint64_t>(i)));
  }
  const Samples first = gpu_sample(logits, vocab, params, {});
  for (int run = 0; run < 10; ++run) REQUIRE(gpu_sample(logits, vocab, params, {}).tokens == first.tokens);
}

TEST_CASE("GPU sampling applies logit_bias, a constraint mask and reports top log-probabilities as the host does",
          "[sampling]") {
  const int vocab = 3000, rows = 8;
  const std::vector<float> logits = random_logits(static_cast<int64_t>(rows) * vocab, 21, 2.0f);
  const int words = (vocab + 31) / 32;
  std::vector<uint32_t> mask(static_cast<size_t>(rows) * words, 0u);
  std::mt19937 rng(5);
  for (int r = 0; r < rows; ++r)  // about a tenth of the ids allowed, different per row
    for (int t = 0; t < vocab; ++t)
      if (rng() % 10 == 0) mask[static_cast<size_t>(r) * words + t / 32] |= 1u << (t % 32);
  std::vector<cuda::SamplingRowParams> params;
  std::vector<SamplingParams> host_params;
  for (int r = 0; r < rows; ++r) {
    SamplingParams p;
    p.temperature = 0.0f;  // greedy: the pick must equal the host's exactly
    p.top_logprobs = 1 + r % 5;
    p.logit_bias = {{static_cast<int32_t>(r * 7), 50.0f}, {static_cast<int32_t>(r * 7 + 1), -50.0f}};
    host_params.push_back(p);
    params.push_back(cuda::row_params(p, 1, 0));
  }
  // Device buffers for bias and mask, then the batch.
  std::vector<int32_t> boff{0}, btok;
  std::vector<float> bval;
  for (const SamplingParams& p : host_params) {
    for (const auto& [t, v] : p.logit_bias) {
      btok.push_back(t);
      bval.push_back(v);
    }
    boff.push_back(static_cast<int32_t>(btok.size()));
  }
  gpu();
  DeviceArray<float> d_logits(logits), d_scratch(std::vector<float>(logits.size()));
  DeviceArray<cuda::SamplingRowParams> d_params(params);
  DeviceArray<int32_t> d_boff(boff), d_btok(btok);
  DeviceArray<float> d_bval(bval);
  DeviceArray<uint32_t> d_mask(mask);
  DeviceArray<uint8_t> d_has(std::vector<uint8_t>(rows, 1));
  DeviceArray<int32_t> d_tok(std::vector<int32_t>(rows, -1));
  DeviceArray<float> d_lp(std::vector<float>(rows, NAN));
  constexpr int kTop = SamplingParams::kMaxTopLogprobs;
  DeviceArray<int32_t> d_top(std::vector<int32_t>(rows * kTop, -1));
  DeviceArray<float> d_toplp(std::vector<float>(rows * kTop, NAN));
  cuda::SamplingBatch b;
  b.logits = d_logits.p;
  b.scratch = d_scratch.p;
  b.params = d_params.p;
  b.bias_offsets = d_boff.p;
  b.bias_tokens = d_btok.p;
  b.bias_values = d_bval.p;
  b.allowed = d_mask.p;
  b.has_mask = d_has.p;
  b.mask_words = words;
  b.out_tokens = d_tok.p;
  b.out_logprobs = d_lp.p;
  b.out_top_ids = d_top.p;
  b.out_top_logprobs = d_toplp.p;
  b.num_rows = rows;
  b.vocab = vocab;
  cuda::launch_sample(b, nullptr);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto tok = d_tok.get(rows);
  const auto lp = d_lp.get(rows);
  const auto top = d_top.get(rows * kTop);
  const auto toplp = d_toplp.get(rows * kTop);
  for (int r = 0; r < rows; ++r) {
    INFO("row " << r);
    const float* row = logits.data() + static_cast<size_t>(r) * vocab;
    SequenceSampler host(host_params[r], {});
    const auto want = host.sample(row, vocab, {}, mask.data() + static_cast<size_t>(r) * words);
    REQUIRE(tok[r] == want.token);
    REQUIRE(std::abs(lp[r] - want.logprob) < 1e-4);
    REQUIRE(want.top.size() == static_cast<size_t>(host_params[r].top_logprobs));
    for (size_t j = 0; j < want.top.size(); ++j) {
      REQUIRE(top[r * kTop + j] == want.top[j].first);
      REQUIRE(std::abs(toplp[r * kTop + j] - want.top[j].second) < 1e-4);
    }
  }
}
