// deploy/grafana/iris.json: every PromQL expression names only metrics a ServerMetrics
// exposition has, filters by the dashboard's model_name and instance variables, and parses
// as PromQL (promtool check rules, Grafana's variables substituted); the dashboard parses as
// JSON with those variables. (A live Prometheus evaluates the queries
// once /metrics is served; this catches renamed or misspelt metrics without one.)
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/metrics/server_metrics.h"
#include "tests/metrics/promtool.h"

using namespace iris::metrics;

namespace {

// Every string under a key named "expr" (panel targets) or "query" (templating).
void collect_queries(const nlohmann::json& j, std::vector<std::string>& exprs,
                     std::vector<std::string>& queries) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "expr" && it.value().is_string()) exprs.push_back(it.value());
      else if (it.key() == "query" && it.value().is_string()) queries.push_back(it.value());
      else collect_queries(it.value(), exprs, queries);
    }
  } else if (j.is_array()) {
    for (const auto& e : j) collect_queries(e, exprs, queries);
  }
}

std::set<std::string> exposed_sample_names() {
  ServerMetrics metrics(ServerMetricsConfig{"m", "0", "cpu", 1, {}});
  const std::string text = metrics.render();
  std::set<std::string> names;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    names.insert(line.substr(0, line.find_first_of("{ ")));
  }
  return names;
}

}  // namespace

TEST_CASE("every metric the Grafana dashboard queries exists in the exposition") {
  std::ifstream f(std::string(IRIS_SOURCE_DIR) + "/deploy/grafana/iris.json");
  REQUIRE(f.good());
  const nlohmann::json dash = nlohmann::json::parse(f);

  std::set<std::string> variables;
  for (const auto& v : dash.at("templating").at("list")) variables.insert(v.at("name"));
  CHECK(variables.count("model_name") == 1);
  CHECK(variables.count("instance") == 1);

  std::vector<std::string> exprs, queries;
  collect_queries(dash.at("panels"), exprs, queries);
  collect_queries(dash.at("templating"), queries, queries);
  REQUIRE(exprs.size() >= 20);

  const std::set<std::string> exposed = exposed_sample_names();
  const std::regex metric_name(R"(\biris_[a-zA-Z0-9_:]*)");
  std::set<std::string> used;
  for (const std::string& e : exprs) {
    INFO(e);
    auto begin = std::sregex_iterator(e.begin(), e.end(), metric_name);
    int n = 0;
    for (auto it = begin; it != std::sregex_iterator(); ++it, ++n) {
      const std::string name = it->str();
      used.insert(name);
      INFO(name);
      CHECK(exposed.count(name) == 1);
    }
    CHECK(n > 0);  // every panel query reads Iris metrics
    // Each selector of an Iris metric is narrowed to the chosen model and instances.
    size_t selectors = 0, filtered = 0;
    for (auto it = begin; it != std::sregex_iterator(); ++it) {
      ++selectors;
      const size_t after = static_cast<size_t>(it->position() + it->length());
      const size_t close = e.find('}', after);
      if (after < e.size() && e[after] == '{' && close != std::string::npos) {
        const std::string sel = e.substr(after, close - after);
        if (sel.find("model_name=~\"$model_name\"") != std::string::npos &&
            sel.find("instance=~\"$instance\"") != std::string::npos)
          ++filtered;
      }
    }
    CHECK(filtered == selectors);
  }
  for (const std::string& q : queries) {
    auto begin = std::sregex_iterator(q.begin(), q.end(), metric_name);
    for (auto it = begin; it != std::sregex_iterator(); ++it) {
      INFO(q);
      CHECK(exposed.count(it->str()) == 1);
    }
  }
  // The headline quantities all have a panel.
  for (const char* must : {"iris_time_to_first_token_seconds_bucket", "iris_inter_token_latency_seconds_bucket",
                           "iris_e2e_request_latency_seconds_bucket", "iris_generation_tokens_total",
                           "iris_prompt_tokens_total", "iris_num_requests_waiting", "iris_num_requests_running",
                           "iris_kv_cache_usage_perc", "iris_num_preemptions_total", "iris_request_rejected_total",
                           "iris_step_phase_seconds_sum", "iris_request_queue_time_seconds_bucket"}) {
    INFO(must);
    CHECK(used.count(must) == 1);
  }
}

TEST_CASE("every PromQL expression of the Grafana dashboard parses") {
  if (iris::test::promtool_path().empty())
    FAIL("promtool not found at configure time: install Debian's prometheus package "
         "(scripts/install-deps.sh) and reconfigure");
  std::ifstream f(std::string(IRIS_SOURCE_DIR) + "/deploy/grafana/iris.json");
  REQUIRE(f.good());
  const nlohmann::json dash = nlohmann::json::parse(f);
  std::vector<std::string> exprs, queries;
  collect_queries(dash.at("panels"), exprs, queries);
  REQUIRE(!exprs.empty());
  // Grafana's variables as Prometheus would see them after substitution.
  auto substitute = [](std::string e) {
    for (const auto& [var, value] : {std::pair<std::string, std::string>{"$__rate_interval", "5m"},
                                     {"$model_name", ".*"},
                                     {"$instance", ".*"}}) {
      for (size_t at; (at = e.find(var)) != std::string::npos;) e.replace(at, var.size(), value);
    }
    return e;
  };
  // One recording rule per expression; JSON strings are valid YAML double-quoted scalars.
  std::string rules = "groups:\n  - name: grafana_dashboard\n    rules:\n";
  for (size_t i = 0; i < exprs.size(); ++i) {
    rules += "      - record: dashboard_expr_" + std::to_string(i) + "\n";
    rules += "        expr: " + nlohmann::json(substitute(exprs[i])).dump() + "\n";
  }
  const iris::test::PromtoolResult r = iris::test::promtool_check_rules(rules);
  INFO(rules << "\npromtool output:\n" << r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("SUCCESS: " + std::to_string(exprs.size()) + " rules found") != std::string::npos);
}
