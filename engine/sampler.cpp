// Sampling: transformers' order of logit processors (repetition penalty, then
// presence/frequency penalties, temperature, top-k, top-p, min-p), then an inverse-CDF
// draw from the request's own generator.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/core/check.h"
#include "engine/tokenizer/unicode.h"

namespace iris {

void SamplingParams::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    fail("temperature must be a finite number >= 0, got ", temperature);
  if (top_k < -1) fail("top_k must be -1 (off), 0 (off) or positive, got ", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("top_p must be in (0, 1], got ", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) fail("min_p must be in [0, 1], got ", min_p);
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty))
    fail("repetition_penalty must be > 0, got ", repetition_penalty);
  if (!std::isfinite(presence_penalty) || presence_penalty < -2.0f || presence_penalty > 2.0f)
    fail("presence_penalty must be in [-2, 2], got ", presence_penalty);
  if (!std::isfinite(frequency_penalty) || frequency_penalty < -2.0f || frequency_penalty > 2.0f)
    fail("frequency_penalty must be in [-2, 2], got ", frequency_penalty);
  if (max_tokens <= 0) fail("max_tokens must be positive, got ", max_tokens);
  if (min_tokens < 0 || min_tokens > max_tokens)
    fail("min_tokens must be in [0, max_tokens], got ", min_tokens);
  for (const auto& [t, bias] : logit_bias)
    if (t < 0 || !std::isfinite(bias) || bias < -100.0f || bias > 100.0f)
      fail("logit_bias: token ", t, " has bias ", bias, " (must be in [-100, 100])");
  // Output text is whole UTF-8 characters; a stop string that is not could only ever match
  // inside one.
  for (size_t i = 0; i < stop.size(); ++i)
    if (!tok::is_valid_utf8(stop[i])) fail("stop[", i, "] is not valid UTF-8");
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs)
    fail("logprobs must be in [0, ", kMaxTopLogprobs, "], got ", top_logprobs);
}

float token_logprob(const float* logits, int64_t vocab, int32_t token) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  return static_cast<float>(static_cast<double>(logits[token] - mx) - std::log(sum));
}

std::vector<std::pair<int32_t, float>> top_logprobs(const float* logits, int64_t vocab, int n) {
  std::vector<std::pair<int32_t, float>> top;
  if (n <= 0 || vocab <= 0) return top;
  n = static_cast<int>(std::min<int64_t>(n, vocab));
  float mx = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  const double log_z = static_cast<double>(mx) + std::log(sum);
  // A heap of the n best seen so far with the worst of them on top: one pass, O(V log n).
  auto better = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::vector<int32_t> heap;
  heap.reserve(static_cast<size_t>(n) + 1);
  for (int64_t i = 0; i < vocab; ++i) {
    const int32_t id = static_cast<int32_t>(i);
    if (static_cast<int>(heap.size()) < n) {
      heap.push_back(id);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better(id, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = id;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort(heap.begin(), heap.end(), better);
  for (int32_t id : heap)
    top.emplace_back(id, static_cast<float>(static_cast<double>(logits[id]) - log_z));
  return top;
}

SequenceSampler::SequenceSampler(const SamplingParams& params, const std::vector<int32_t>& prompt)
    : params_(params) {
  seed_ = params.seed ? *params.seed
                      : (static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
  rng_.seed(seed_);
  if (params_.repetition_penalty != 1.0f)
    for (int32_t t : prompt) append_seen_(t);
}

void SequenceSampler::penalty_entries(std::vector<int32_t>& tokens, std::vector<int32_t>& counts) const {
  tokens.clear();
  counts.clear();
  const bool repetition = params_.repetition_penalty != 1.0f;
  if (!repetition && params_.presence_penalty == 0.0f && params_.frequency_penalty == 0.0f) return;
  auto count_of = [&](int32_t t) {
    auto it = output_counts_.find(t);
    return it == output_counts_.end() ? 0 : it->second;
  };
  if (repetition) {  // seen_ holds prompt and output ids, each once
    for (int32_t t : seen_) {
      tokens.push_back(t);
      counts.push_back(count_of(t));
    }
    return;
  }
  for (const auto& [t, n] : output_counts_) {
    tokens.push_back(t);
    counts.push_back(n);
  }
}

void SequenceSampler::append(int32_t token) {
  ++output_counts_[token];
  if (params_.repetition_penalty != 1.0f) append_seen_(token);
}

void SequenceSampler::append_seen_(int32_t t) {
  if (t < 0) return;
  if (static_cast<size_t>(t) >= seen_mask_.size()) seen_mask_.resize(static_cast<size_t>(t) + 1, 0);
  if (!seen_mask_[t]) {
    seen_mask_[t] = 1;
    seen_.push_back(t);
  }
}

SequenceSampler::Result SequenceSampler::sample(const float* logits, int64_t vocab,
                                                const std::vector<int32_t>& banned,
                                                const uint32_t* allowed) {
  Result r;
  float* x = nullptr;
  scratch_.assign(logits, logits + vocab);
  x = scratch_.data();

  // Penalties.
  if (params_.repetition_penalty != 1.0f) {
    const float p = params_.repetition_penalty;
    for (int32_t t : seen_)
      if (t < vocab) x[t] = x[t] > 0 ? x[t] / p : x[t] * p;
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    for (const auto& [t, n] : output_counts_)
      if (t >= 0 && t < vocab)
        x[t] -= params_.presence_penalty + params_.frequency_penalty * static_cast<float>(n);
  }
  // OpenAI's logit_bias: added to the logits before sampling (logprobs stay the model's).
  for (const auto& [t, bias] : params_.logit_bias)
    if (t >= 0 && t < vocab) x[t] += bias;
  for (int32_t t : banned)
    if (t >= 0 && t < vocab) x[t] = -INFINITY;
  if (allowed)
    for (int64_t i = 0; i < vocab; ++i)
      if (!(allowed[i >> 5] >> (i & 31) & 1u)) x[i] = -INFINITY;

  if (params_.greedy()) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (x[i] > x[best]) best = i;
    r.token = static_cast<int32_t>(best);
    r.logprob = token_logprob(logits, vocab, r.token);
    if (params_.top_logprobs > 0) r.top = top_logprobs(logits, vocab, params_.top_logprobs);
    return r;
  }

  for (int64_t i = 0; i < vocab; ++i) x[i] /= params_.temperature;

  // Unnormalised probabilities relative to the best candidate (masked-out ids have -inf).
  float mx = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, x[i]);
  if (mx == -INFINITY) {  // nothing allowed: the caller sees the refusal
    r.token = 0;
    r.logprob = token_logprob(logits, vocab, r.token);
    return r;
  }
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const bool top_k_cuts = params_.top_k > 0 && params_.top_k < vocab;
  if (!top_k_cuts && params_.top_p >= 1.0f && params_.min_p <= 0.0f) {
    // Nothing is cut: an inverse-CDF draw in id order, no sort (a full-vocabulary sort per
    // token dominated sampling on large vocabularies).
    double total = 0.0;
    for (int64_t i = 0; i < vocab; ++i) total += std::exp(static_cast<double>(x[i] - mx));
    const double u = uniform(rng_) * total;
    double cum = 0.0;
    int64_t pick = -1, last = 0;
    for (int64_t i = 0; i < vocab && pick < 0; ++i) {
      if (x[i] == -INFINITY) continue;
      last = i;
      cum += std::exp(static_cast<double>(x[i] - mx));
      if (u < cum) pick = i;
    }
    r.token = static_cast<int32_t>(pick >= 0 ? pick : last);
    r.logprob = token_logprob(logits, vocab, r.token);
    if (params_.top_logprobs > 0) r.top = top_logprobs(logits, vocab, params_.top_logprobs);
    return r;
  }

  // Candidates in descending logit order (ties by id), cut by top-k first; only as long a
  // sorted prefix as the cuts need is sorted.
  order_.clear();
  for (int64_t i = 0; i < vocab; ++i)
    if (x[i] != -INFINITY) order_.push_back(static_cast<int32_t>(i));
  const int64_t candidates = static_cast<int64_t>(order_.size());
  auto desc = [x](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  int64_t keep = candidates;
  if (params_.top_k > 0 && params_.top_k < candidates) {
    keep = params_.top_k;
    std::nth_element(order_.begin(), order_.begin() + keep, order_.end(), desc);
  }
  // The softmax's normaliser over the kept candidates.
  double sum = 0.0;
  for (int64_t i = 0; i < keep; ++i) sum += std::exp(static_cast<double>(x[order_[i]] - mx));
  // How long a sorted prefix the cuts can need: min-p keeps exactly the candidates at or above
  // min_p times the best; top-p needs the prefix reaching its mass (found by growing).
  int64_t need = keep;
  if (params_.min_p > 0.0f) {
    int64_t n = 0;
    for (int64_t i = 0; i < keep; ++i)
      if (std::exp(static_cast<double>(x[order_[i]] - mx)) >= params_.min_p) ++n;
    need = std::min(keep, n + 1);  // one past: the loop below sees where the cut falls
  }
  int64_t sorted = 0;
  auto sort_to = [&](int64_t n) {
    n = std::min(n, keep);
    if (n <= sorted) return;
    if (n < keep) std::nth_element(order_.begin() + sorted, order_.begin() + n, order_.begin() + keep, desc);
    std::sort(order_.begin() + sorted, order_.begin() + n, desc);
    sorted = n;
  };
  if (params_.top_p < 1.0f) {
    int64_t n = std::min<int64_t>(need, 256);
    while (true) {
      sort_to(n);
      double cum = 0.0;
      for (int64_t i = 0; i < sorted; ++i) cum += std::exp(static_cast<double>(x[order_[i]] - mx)) / sum;
      if (cum >= params_.top_p || sorted >= need) break;
      n = std::min(need, sorted * 4);
    }
  } else {
    sort_to(need);
  }
  keep = std::min(keep, sorted);
  std::vector<double> probs(static_cast<size_t>(keep));
  for (int64_t i = 0; i < keep; ++i) probs[i] = std::exp(static_cast<double>(x[order_[i]] - mx)) / sum;
  // Top-p: the smallest prefix whose mass reaches top_p.
  if (params_.top_p < 1.0f) {
    double cum = 0.0;
    int64_t n = 0;
    while (n < keep && cum < params_.top_p) cum += probs[n++];
    keep = std::max<int64_t>(n, 1);
  }
  // Min-p: drop candidates below min_p times the most likely one.
  if (params_.min_p > 0.0f) {
    const double floor = params_.min_p * probs[0];
    int64_t n = 1;
    while (n < keep && probs[n] >= floor) ++n;
    keep = n;
  }
  double mass = 0.0;
  for (int64_t i = 0; i < keep; ++i) mass += probs[i];
  const double u = uniform(rng_) * mass;
  double cum = 0.0;
  int64_t pick = keep - 1;
  for (int64_t i = 0; i < keep; ++i) {
    cum += probs[i];
    if (u < cum) {
      pick = i;
      break;
    }
  }
  r.token = order_[pick];
  r.logprob = token_logprob(logits, vocab, r.token);
  if (params_.top_logprobs > 0) r.top = top_logprobs(logits, vocab, params_.top_logprobs);
  return r;
}

}  // namespace iris
