// The metric primitives and the text exposition format 0.0.4: exact text for a small
// registry, escaping, value formatting, cumulative buckets, name checks, and exact sums when
// several threads record at once.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "server/metrics/metrics.h"

using namespace iris::metrics;

TEST_CASE("a small registry renders exactly") {
  Registry r;
  auto& requests = r.counter("demo_requests", "Requests served.", {"method", "code"});
  requests.with({"get", "200"}).inc(3);
  requests.with({"post", "500"}).inc();
  r.gauge("demo_temperature_celsius", "A gauge with a \\ and a\nline feed in its help.")
      .with()
      .set(-1.5);
  auto& latency = r.histogram("demo_latency_seconds", "Latency.", {}, {0.25, 1});
  for (double v : {0.125, 0.25, 0.5, 4.0}) latency.with().observe(v);
  auto& sized = r.histogram("demo_size_bytes", "Sizes.", {"model_name"}, {1024});
  sized.with({"m"}).observe(2048);

  const std::string expected =
      "# HELP demo_requests_total Requests served.\n"
      "# TYPE demo_requests_total counter\n"
      "demo_requests_total{method=\"get\",code=\"200\"} 3\n"
      "demo_requests_total{method=\"post\",code=\"500\"} 1\n"
      "# HELP demo_temperature_celsius A gauge with a \\\\ and a\\nline feed in its help.\n"
      "# TYPE demo_temperature_celsius gauge\n"
      "demo_temperature_celsius -1.5\n"
      "# HELP demo_latency_seconds Latency.\n"
      "# TYPE demo_latency_seconds histogram\n"
      "demo_latency_seconds_bucket{le=\"0.25\"} 2\n"
      "demo_latency_seconds_bucket{le=\"1\"} 3\n"
      "demo_latency_seconds_bucket{le=\"+Inf\"} 4\n"
      "demo_latency_seconds_sum 4.875\n"
      "demo_latency_seconds_count 4\n"
      "# HELP demo_size_bytes Sizes.\n"
      "# TYPE demo_size_bytes histogram\n"
      "demo_size_bytes_bucket{model_name=\"m\",le=\"1024\"} 0\n"
      "demo_size_bytes_bucket{model_name=\"m\",le=\"+Inf\"} 1\n"
      "demo_size_bytes_sum{model_name=\"m\"} 2048\n"
      "demo_size_bytes_count{model_name=\"m\"} 1\n";
  CHECK(r.render() == expected);
}

TEST_CASE("label values escape backslash, double quote and line feed") {
  CHECK(escape_label_value("plain/model-1.5") == "plain/model-1.5");
  CHECK(escape_label_value("a\"b\\c\nd") == "a\\\"b\\\\c\\nd");
  CHECK(escape_help("x\\y\nz \"q\"") == "x\\\\y\\nz \"q\"");

  Registry r;
  r.gauge("demo_info", "Info.", {"name"}).with({"say \"hi\"\\\n"}).set(1);
  CHECK(r.render().find("demo_info{name=\"say \\\"hi\\\"\\\\\\n\"} 1\n") != std::string::npos);
}

TEST_CASE("values format as Prometheus parses them") {
  CHECK(format_value(0) == "0");
  CHECK(format_value(42) == "42");
  CHECK(format_value(-1.5) == "-1.5");
  CHECK(format_value(0.005) == "0.005");
  CHECK(format_value(1.0 / 0.0) == "+Inf");
  CHECK(format_value(-1.0 / 0.0) == "-Inf");
  CHECK(format_value(std::nan("")) == "NaN");
  for (double v : {1e-5, 2.5e-5, 123456789.125, 1e300, 0.1 + 0.2})
    CHECK(std::stod(format_value(v)) == v);  // round trip
}

TEST_CASE("histogram buckets are cumulative and match a direct count") {
  Registry r;
  const std::vector<double> bounds{0.001, 0.01, 0.1, 1, 10};
  Histogram& h = r.histogram("demo_seconds", "x", {}, bounds).with();
  std::mt19937 rng(7);
  std::lognormal_distribution<double> dist(-3, 2);
  std::vector<double> values;
  for (int i = 0; i < 5000; ++i) values.push_back(dist(rng));
  values.push_back(0.01);  // exactly on a bound: counts in that bucket
  values.push_back(1e9);   // above every bound: only +Inf
  for (double v : values) h.observe(v);
  h.observe(std::nan(""));  // ignored

  const Histogram::Snapshot s = h.snapshot();
  REQUIRE(s.cumulative.size() == bounds.size() + 1);
  for (size_t i = 0; i < bounds.size(); ++i) {
    const auto direct = std::count_if(values.begin(), values.end(), [&](double v) { return v <= bounds[i]; });
    CHECK(s.cumulative[i] == static_cast<uint64_t>(direct));
    if (i) CHECK(s.cumulative[i] >= s.cumulative[i - 1]);
  }
  CHECK(s.cumulative.back() == values.size());
  CHECK(s.count == values.size());
  double sum = 0;
  for (double v : values) sum += v;
  CHECK(s.sum == Approx(sum).epsilon(1e-12));

  // Observing one value n times is n observations.
  Histogram& g = r.histogram("demo_gap_seconds", "x", {}, bounds).with();
  g.observe(0.05, 4);
  CHECK(g.snapshot().cumulative == std::vector<uint64_t>{0, 0, 4, 4, 4, 4});
  CHECK(g.snapshot().sum == Approx(0.2));
}

TEST_CASE("counters ignore negative amounts; gauges go both ways") {
  Counter c;
  c.inc(2);
  c.inc(-5);
  c.inc(std::nan(""));
  CHECK(c.value() == 2);
  Gauge g;
  g.set(3);
  g.add(-4.5);
  CHECK(g.value() == -1.5);
}

TEST_CASE("bad names and label sets are refused at registration") {
  Registry r;
  CHECK_THROWS_AS(r.counter("bad name", "x"), std::invalid_argument);
  CHECK_THROWS_AS(r.counter("1abc", "x"), std::invalid_argument);
  CHECK_THROWS_AS(r.counter("demo_total", "x"), std::invalid_argument);   // suffix is added
  CHECK_THROWS_AS(r.gauge("demo_total", "x"), std::invalid_argument);     // not a counter
  CHECK_THROWS_AS(r.gauge("demo_count", "x"), std::invalid_argument);     // histogram suffix
  CHECK_THROWS_AS(r.gauge("demo", "x", {"__reserved"}), std::invalid_argument);
  CHECK_THROWS_AS(r.gauge("demo", "x", {"a-b"}), std::invalid_argument);
  CHECK_THROWS_AS(r.gauge("demo", "x", {"a", "a"}), std::invalid_argument);
  CHECK_THROWS_AS(r.histogram("demo_h", "x", {"le"}, {1}), std::invalid_argument);
  CHECK_THROWS_AS(r.histogram("demo_h", "x", {}, {}), std::invalid_argument);
  CHECK_THROWS_AS(r.histogram("demo_h", "x", {}, {1, 1}), std::invalid_argument);
  CHECK_THROWS_AS(r.histogram("demo_h", "x", {}, {1, 1.0 / 0.0}), std::invalid_argument);

  r.counter("demo", "x");
  CHECK_THROWS_AS(r.counter("demo", "x"), std::invalid_argument);
  CHECK_THROWS_AS(r.gauge("demo", "x"), std::invalid_argument);  // distinct from demo_total
  r.histogram("demo_lat", "x", {}, {1});
  CHECK_THROWS_AS(r.gauge("demo_lat_bucket", "x"), std::invalid_argument);

  auto& f = r.gauge("demo_labelled", "x", {"a", "b"});
  CHECK_THROWS_AS(f.with({"only one"}), std::invalid_argument);
  CHECK(&f.with({"1", "2"}) == &f.with({"1", "2"}));  // the same series every time
  CHECK(valid_metric_name("iris:job_rule"));
  CHECK_FALSE(valid_label_name("iris:x"));
}

TEST_CASE("concurrent recording from several threads sums exactly") {
  Registry r;
  Counter& c = r.counter("demo_events", "x", {"kind"}).with({"a"});
  Gauge& g = r.gauge("demo_level", "x").with();
  Histogram& h = r.histogram("demo_seconds", "x", {}, {0.5, 1.5, 2.5}).with();
  auto& lazy = r.counter("demo_lazy", "x", {"thread"});
  constexpr int kThreads = 8, kIterations = 100000;
  std::atomic<bool> done{false};
  // A scraper rendering all the while: every histogram in every scrape is self-consistent
  // (Catch2 assertions are for the main thread: the scraper only counts what it saw).
  int scrapes = 0, inconsistent = 0;
  std::thread scraper([&] {
    auto value_of = [](const std::string& text, const std::string& prefix) {
      const size_t at = text.find(prefix);
      if (at == std::string::npos) return std::string("missing");
      const size_t end = text.find('\n', at);
      return text.substr(at + prefix.size(), end - at - prefix.size());
    };
    while (!done) {
      const std::string text = r.render();
      ++scrapes;
      if (value_of(text, "demo_seconds_bucket{le=\"+Inf\"} ") != value_of(text, "demo_seconds_count "))
        ++inconsistent;
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter& mine = lazy.with({std::to_string(t % 3)});  // created concurrently
      for (int i = 0; i < kIterations; ++i) {
        c.inc();
        g.add(1);
        h.observe(static_cast<double>(i % 3));  // 0, 1, 2 in turn
        mine.inc(2);
      }
    });
  }
  for (auto& th : threads) th.join();
  done = true;
  scraper.join();
  CHECK(scrapes > 0);
  CHECK(inconsistent == 0);

  const double total = static_cast<double>(kThreads) * kIterations;
  CHECK(c.value() == total);
  CHECK(g.value() == total);
  const Histogram::Snapshot s = h.snapshot();
  CHECK(s.count == static_cast<uint64_t>(total));
  double per_thread = 0;
  for (int i = 0; i < kIterations; ++i) per_thread += i % 3;
  CHECK(s.sum == kThreads * per_thread);  // integers: exact in any order
  double lazy_sum = 0;
  for (int k = 0; k < 3; ++k) lazy_sum += lazy.with({std::to_string(k)}).value();
  CHECK(lazy_sum == 2 * total);
}

TEST_CASE("bucket presets are strictly increasing and span their ranges") {
  auto check = [](const std::vector<double>& b, double lo, double hi) {
    REQUIRE(!b.empty());
    CHECK(std::is_sorted(b.begin(), b.end()));
    CHECK(std::adjacent_find(b.begin(), b.end()) == b.end());
    CHECK(b.front() == lo);
    CHECK(b.back() == hi);
  };
  check(buckets::request_latency_seconds(), 0.005, 600);
  check(buckets::inter_token_latency_seconds(), 0.001, 5);
  check(buckets::step_phase_seconds(), 1e-5, 5);
  check(buckets::image_seconds(), 0.001, 10);
  check(buckets::request_tokens(), 1, 200000);
  check(buckets::iteration_tokens(), 1, 16384);
}
