// Runs Prometheus' promtool: `check metrics` on an exposition text, `check rules` on a
// rules file (which parses PromQL).
#pragma once

#include <string>

namespace iris::test {

struct PromtoolResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

// Empty path when promtool was not found at configure time.
std::string promtool_path();
PromtoolResult promtool_check_metrics(const std::string& exposition);
// `promtool check rules FILE` on a rules file's text (parses every PromQL expression).
PromtoolResult promtool_check_rules(const std::string& rules_yaml);

}  // namespace iris::test
