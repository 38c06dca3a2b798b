// Runs Prometheus' `promtool check metrics` on an exposition text.
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

}  // namespace iris::test
