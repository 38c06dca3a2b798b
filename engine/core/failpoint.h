// Test-only fault injection. IRIS_FAILPOINT holds "name:arg:arg..." (one failpoint per
// process); failpoint_args("name") returns its integer arguments when that failpoint is set.
// Tests use it to make rare conditions (a stalled rank, a slow image decode) happen on cue.
#pragma once

#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace iris {

inline std::optional<std::vector<long long>> failpoint_args(std::string_view name) {
  const char* env = std::getenv("IRIS_FAILPOINT");
  if (env == nullptr) return std::nullopt;
  const std::string_view spec(env);
  if (spec.substr(0, name.size()) != name) return std::nullopt;
  if (spec.size() > name.size() && spec[name.size()] != ':') return std::nullopt;
  std::vector<long long> args;
  std::istringstream rest(std::string(spec.substr(name.size())));
  std::string part;
  std::getline(rest, part, ':');  // the empty piece before the first ':'
  while (std::getline(rest, part, ':')) {
    try {
      size_t used = 0;
      args.push_back(std::stoll(part, &used));
      if (used != part.size()) return std::nullopt;
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return args;
}

}  // namespace iris
