// Metric primitives and the text exposition format 0.0.4 (see metrics.h).
#include "server/metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <stdexcept>
#include <tuple>

namespace iris::metrics {

// ---- text format helpers -----------------------------------------------------------------

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

namespace {
bool name_char(char c, bool first, bool colon) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
  return alpha || (!first && c >= '0' && c <= '9');
}

const char* type_name(MetricType t) {
  switch (t) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
}  // namespace

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, true)) return false;
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || name.substr(0, 2) == "__") return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, false)) return false;
  return true;
}

// ---- Histogram ---------------------------------------------------------------------------

Histogram::Histogram(std::shared_ptr<const std::vector<double>> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v, uint64_t count) {
  if (std::isnan(v) || count == 0) return;
  const auto& b = *bounds_;
  const size_t i = static_cast<size_t>(std::lower_bound(b.begin(), b.end(), v) - b.begin());
  buckets_[i].fetch_add(count, std::memory_order_relaxed);
  sum_.fetch_add(v * static_cast<double>(count), std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.cumulative.resize(bounds_->size() + 1);
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    acc += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = acc;
  }
  s.count = acc;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

// ---- families ----------------------------------------------------------------------------

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type,
                       std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), type_(type),
      label_names_(std::move(label_names)) {
  if (!valid_metric_name(name_)) throw std::invalid_argument("invalid metric name '" + name_ + "'");
  if (type_ == MetricType::kCounter && ends_with(name_, "_total"))
    throw std::invalid_argument("counter '" + name_ + "': register it without the _total suffix");
  if (type_ != MetricType::kCounter && ends_with(name_, "_total"))
    throw std::invalid_argument("metric '" + name_ + "' is not a counter and ends in _total");
  if (type_ != MetricType::kHistogram &&
      (ends_with(name_, "_bucket") || ends_with(name_, "_count") || ends_with(name_, "_sum")))
    throw std::invalid_argument("metric '" + name_ + "' ends in a histogram suffix");
  std::set<std::string> seen;
  for (const std::string& l : label_names_) {
    if (!valid_label_name(l)) throw std::invalid_argument("metric '" + name_ + "': invalid label name '" + l + "'");
    if (type_ == MetricType::kHistogram && l == "le")
      throw std::invalid_argument("histogram '" + name_ + "' may not have a label named le");
    if (!seen.insert(l).second)
      throw std::invalid_argument("metric '" + name_ + "': label '" + l + "' given twice");
  }
}

std::string FamilyBase::exposed_name() const {
  return type_ == MetricType::kCounter ? name_ + "_total" : name_;
}

void FamilyBase::check_arity(const std::vector<std::string>& values) const {
  if (values.size() != label_names_.size())
    throw std::invalid_argument("metric '" + name_ + "' has " + std::to_string(label_names_.size()) +
                                " labels, got " + std::to_string(values.size()) + " values");
}

void FamilyBase::render_labels(std::string& out, const std::vector<std::string>& values) const {
  out += '{';
  for (size_t i = 0; i < label_names_.size(); ++i) {
    if (i) out += ',';
    out += label_names_[i];
    out += "=\"";
    out += escape_label_value(values[i]);
    out += '"';
  }
}

void FamilyBase::render(std::string& out) const {
  const std::string name = exposed_name();
  out += "# HELP ";
  out += name;
  out += ' ';
  out += escape_help(help_);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type_name(type_);
  out += '\n';
  std::lock_guard<std::mutex> lock(mu_);
  render_series(out);
}

template <class T>
T& Family<T>::with(const std::vector<std::string>& values) {
  check_arity(values);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [v, series] : series_)
    if (v == values) return series;
  if constexpr (std::is_same_v<T, Histogram>) {
    series_.emplace_back(std::piecewise_construct, std::forward_as_tuple(values),
                         std::forward_as_tuple(bounds_));
  } else {
    series_.emplace_back(std::piecewise_construct, std::forward_as_tuple(values),
                         std::forward_as_tuple());
  }
  return series_.back().second;
}

template <class T>
void Family<T>::render_series(std::string& out) const {
  const std::string name = exposed_name();
  const bool labelled = !label_names_.empty();
  for (const auto& [values, series] : series_) {
    if constexpr (std::is_same_v<T, Histogram>) {
      const Histogram::Snapshot s = series.snapshot();
      const std::vector<double>& bounds = series.bounds();
      for (size_t i = 0; i <= bounds.size(); ++i) {
        out += name;
        out += "_bucket";
        if (labelled) {
          render_labels(out, values);
          out += ",le=\"";
        } else {
          out += "{le=\"";
        }
        out += i < bounds.size() ? format_value(bounds[i]) : "+Inf";
        out += "\"} ";
        out += std::to_string(s.cumulative[i]);
        out += '\n';
      }
      for (const char* suffix : {"_sum", "_count"}) {
        out += name;
        out += suffix;
        if (labelled) {
          render_labels(out, values);
          out += '}';
        }
        out += ' ';
        out += suffix[1] == 's' ? format_value(s.sum) : std::to_string(s.count);
        out += '\n';
      }
    } else {
      out += name;
      if (labelled) {
        render_labels(out, values);
        out += '}';
      }
      out += ' ';
      out += format_value(series.value());
      out += '\n';
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- Registry ----------------------------------------------------------------------------

void Registry::add(std::unique_ptr<FamilyBase> family) {
  std::lock_guard<std::mutex> lock(mu_);
  // Every name a family exposes (and its registered name) must be its own.
  auto samples = [](const FamilyBase& f) {
    const std::string n = f.exposed_name();
    if (f.type() == MetricType::kHistogram) return std::vector<std::string>{n, n + "_bucket", n + "_sum", n + "_count"};
    if (f.type() == MetricType::kCounter) return std::vector<std::string>{f.name(), n};
    return std::vector<std::string>{n};
  };
  const std::vector<std::string> mine = samples(*family);
  for (const auto& other : families_)
    for (const std::string& a : samples(*other))
      if (std::find(mine.begin(), mine.end(), a) != mine.end())
        throw std::invalid_argument("metric name '" + a + "' registered twice");
  families_.push_back(std::move(family));
}

Family<Counter>& Registry::counter(std::string name, std::string help,
                                   std::vector<std::string> label_names) {
  auto f = std::make_unique<Family<Counter>>(std::move(name), std::move(help), MetricType::kCounter,
                                             std::move(label_names));
  Family<Counter>& ref = *f;
  add(std::move(f));
  return ref;
}

Family<Gauge>& Registry::gauge(std::string name, std::string help,
                               std::vector<std::string> label_names) {
  auto f = std::make_unique<Family<Gauge>>(std::move(name), std::move(help), MetricType::kGauge,
                                           std::move(label_names));
  Family<Gauge>& ref = *f;
  add(std::move(f));
  return ref;
}

Family<Histogram>& Registry::histogram(std::string name, std::string help,
                                       std::vector<std::string> label_names,
                                       std::vector<double> bounds) {
  if (bounds.empty()) throw std::invalid_argument("histogram '" + name + "' needs at least one bucket");
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
      throw std::invalid_argument("histogram '" + name +
                                  "': bucket bounds must be finite and strictly increasing");
  }
  auto f = std::make_unique<Family<Histogram>>(
      std::move(name), std::move(help), std::move(label_names),
      std::make_shared<const std::vector<double>>(std::move(bounds)));
  Family<Histogram>& ref = *f;
  add(std::move(f));
  return ref;
}

void Registry::render(std::string& out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& f : families_) f->render(out);
}

std::string Registry::render() const {
  std::string out;
  render(out);
  return out;
}

// ---- bucket bounds -----------------------------------------------------------------------

namespace buckets {
const std::vector<double>& request_latency_seconds() {
  static const std::vector<double> b{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
                                     0.75,  1,    1.5,   2,    3,     5,   7.5,  10,  15,  20,
                                     30,    45,   60,    120,  300,   600};
  return b;
}
const std::vector<double>& inter_token_latency_seconds() {
  static const std::vector<double> b{0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02,
                                     0.025, 0.03,   0.04,  0.05,   0.06, 0.075, 0.1,
                                     0.15,  0.2,    0.3,   0.4,    0.5,  0.75,  1,
                                     2.5,   5};
  return b;
}
const std::vector<double>& step_phase_seconds() {
  static const std::vector<double> b{1e-5,  2.5e-5, 5e-5,  1e-4,  2.5e-4, 5e-4, 0.001,
                                     0.0025, 0.005, 0.01,  0.025, 0.05,   0.1,  0.25,
                                     0.5,   1,      2.5,   5};
  return b;
}
const std::vector<double>& image_seconds() {
  static const std::vector<double> b{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25,  0.5,    1,     2.5,  5,     10};
  return b;
}
const std::vector<double>& request_tokens() {
  static const std::vector<double> b{1,    2,    5,     10,    20,    50,     100,   200,   500,
                                     1000, 2000, 5000,  10000, 20000, 50000,  100000, 200000};
  return b;
}
const std::vector<double>& iteration_tokens() {
  static const std::vector<double> b{1,   2,   4,    8,    16,   32,   64,    128,
                                     256, 512, 1024, 2048, 4096, 8192, 16384};
  return b;
}
}  // namespace buckets

}  // namespace iris::metrics
