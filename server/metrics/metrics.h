// Counters, gauges and histograms with labels, rendered in the Prometheus text exposition
// format 0.0.4. Standard library only.
//
// Cost model. A family's series are looked up (or created) by label values under the
// family's mutex; callers do that once and keep the returned reference, which stays valid
// for the registry's life. Recording through that reference is lock-free: a counter or gauge
// is one atomic double, a histogram one atomic count per bucket plus an atomic sum. Readers
// (render) fold the atomics at scrape time; a scrape concurrent with recording sees each
// atomic either before or after a given observation, and a histogram's _count is derived
// from its buckets, so `_count == bucket{le="+Inf"}` holds in every scrape.
//
// Names. Counter families are registered without the `_total` suffix and exposed with it
// (`iris_prompt_tokens` → `iris_prompt_tokens_total`); a counter name that already ends in
// `_total` is refused. Metric and label names are checked against Prometheus' grammar at
// registration (std::invalid_argument): a bad name is a programming error, found by any test
// that builds the registry.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iris::metrics {

// Monotonic. inc() adds a non-negative amount (a negative or NaN one is ignored);
// set_total() mirrors a monotonic total kept elsewhere (e.g. the engine's preemption count),
// for values read at scrape time.
class Counter {
 public:
  void inc(double amount = 1.0) {
    if (amount >= 0) value_.fetch_add(amount, std::memory_order_relaxed);
  }
  void set_total(double total) { value_.store(total, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Buckets are upper bounds, strictly increasing and finite; +Inf is implicit. An observation
// v lands in the first bucket whose bound is >= v (Prometheus' `le`). NaN is ignored.
class Histogram {
 public:
  explicit Histogram(std::shared_ptr<const std::vector<double>> bounds);
  void observe(double v) { observe(v, 1); }
  // `count` observations of the same value (e.g. the per-token gap of a multi-token output).
  void observe(double v, uint64_t count);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return *bounds_; }

 private:
  std::shared_ptr<const std::vector<double>> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds + 1, not cumulative
  std::atomic<double> sum_{0.0};
};

enum class MetricType { kCounter, kGauge, kHistogram };

// The series of one metric name, one per combination of label values.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, MetricType type,
             std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  // The name in the exposition: counters gain `_total`.
  std::string exposed_name() const;
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  void render(std::string& out) const;

 protected:
  // Appends "{a="x",b="y"" (no closing brace) for one series' label values.
  void render_labels(std::string& out, const std::vector<std::string>& values) const;
  virtual void render_series(std::string& out) const = 0;
  void check_arity(const std::vector<std::string>& values) const;

  std::string name_, help_;
  MetricType type_;
  std::vector<std::string> label_names_;
  mutable std::mutex mu_;  // guards the series list, never a series' value
};

template <class T>
class Family final : public FamilyBase {
 public:
  using FamilyBase::FamilyBase;
  // Histogram families share one set of bounds.
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::shared_ptr<const std::vector<double>> bounds)
      : FamilyBase(std::move(name), std::move(help), MetricType::kHistogram,
                   std::move(label_names)),
        bounds_(std::move(bounds)) {}

  // The series with these label values (in label_names() order), created on first use.
  // Takes the family's mutex: call it at setup and keep the reference.
  T& with(const std::vector<std::string>& values = {});

 private:
  void render_series(std::string& out) const override;

  std::shared_ptr<const std::vector<double>> bounds_;
  // A deque keeps references stable; insertion order is the exposition order.
  std::deque<std::pair<std::vector<std::string>, T>> series_;
};

// A set of families, rendered in registration order.
class Registry {
 public:
  Family<Counter>& counter(std::string name, std::string help,
                           std::vector<std::string> label_names = {});
  Family<Gauge>& gauge(std::string name, std::string help,
                       std::vector<std::string> label_names = {});
  Family<Histogram>& histogram(std::string name, std::string help,
                               std::vector<std::string> label_names, std::vector<double> bounds);

  // The whole registry in the text exposition format 0.0.4.
  std::string render() const;
  void render(std::string& out) const;

  // The Content-Type to serve render() with.
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  void add(std::unique_ptr<FamilyBase> family);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_;
};

// Text format helpers (exposed for tests).
// A label value with backslash, double quote and line feed escaped.
std::string escape_label_value(std::string_view v);
// HELP text with backslash and line feed escaped.
std::string escape_help(std::string_view v);
// A sample value as Prometheus parses it: shortest round-trip decimal, +Inf, -Inf, NaN.
std::string format_value(double v);
bool valid_metric_name(std::string_view name);
bool valid_label_name(std::string_view name);

// Bucket bounds for LLM serving, in seconds or tokens (see docs/observability.md).
namespace buckets {
// Request-level latencies (TTFT, queue, prefill, decode, e2e): 5 ms .. 10 min.
const std::vector<double>& request_latency_seconds();
// Inter-token latency: 1 ms .. 5 s.
const std::vector<double>& inter_token_latency_seconds();
// Phases of one engine step: 10 µs .. 5 s.
const std::vector<double>& step_phase_seconds();
// Image decode, preprocess and encode: 1 ms .. 10 s.
const std::vector<double>& image_seconds();
// Tokens per request (prompt or generated): 1-2-5 steps, 1 .. 200k.
const std::vector<double>& request_tokens();
// Tokens per engine step: powers of two, 1 .. 16k.
const std::vector<double>& iteration_tokens();
}  // namespace buckets

}  // namespace iris::metrics
