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

namespace {
// Runs `promtool ARGS` with `text` in a temporary file, given as `< file` (stdin) or as the
// last argument.
PromtoolResult run_promtool(const std::string& args, const std::string& text, bool as_stdin,
                            const char* ext) {
  namespace fs = std::filesystem;
  const fs::path file = fs::temp_directory_path() /
                        ("iris_promtool_" + std::to_string(::getpid()) + ext);
  {
    std::ofstream out(file, std::ios::binary);
    out << text;
  }
  PromtoolResult r;
  const std::string cmd = "'" + promtool_path() + "' " + args + (as_stdin ? " < '" : " '") +
                          file.string() + "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p) {
    std::array<char, 4096> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
    const int status = ::pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  fs::remove(file);
  return r;
}
}  // namespace

PromtoolResult promtool_check_metrics(const std::string& exposition) {
  return run_promtool("check metrics", exposition, true, ".prom");
}

PromtoolResult promtool_check_rules(const std::string& rules_yaml) {
  return run_promtool("check rules", rules_yaml, false, ".rules.yml");
}

}  // namespace iris::test
