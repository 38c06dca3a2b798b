// See promtool.h.
#include "tests/metrics/promtool.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace iris::test {

std::string promtool_path() { return IRIS_PROMTOOL; }

PromtoolResult promtool_check_metrics(const std::string& exposition) {
  namespace fs = std::filesystem;
  const fs::path file = fs::temp_directory_path() /
                        ("iris_metrics_" + std::to_string(::getpid()) + ".prom");
  {
    std::ofstream out(file, std::ios::binary);
    out << exposition;
  }
  PromtoolResult r;
  const std::string cmd = "'" + promtool_path() + "' check metrics < '" + file.string() + "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  fs::remove(file);
  return r;
}

}  // namespace iris::test
