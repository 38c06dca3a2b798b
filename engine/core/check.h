// Error handling shared by every layer: one exception type carrying a message, and check
// macros that record file, line and the failing condition. Per-request failures are caught
// at the request boundary and turned into a status; nothing here aborts the process.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace iris {

// The one exception type the engine throws for bad input (checkpoint, request, config).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
// Collects `<<` pieces and throws iris::Error when destroyed at the end of the statement.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* cond) {
    stream_ << cond << " (" << file << ":" << line << ")";
    prefix_len_ = stream_.tellp();
  }
  template <typename T>
  CheckFailure& operator<<(const T& v) {
    if (stream_.tellp() == prefix_len_) stream_ << ": ";
    stream_ << v;
    return *this;
  }
  [[noreturn]] ~CheckFailure() noexcept(false) { throw Error(stream_.str()); }

 private:
  std::ostringstream stream_;
  std::streampos prefix_len_;
};
}  // namespace detail

// Builds an error message with `<<` and throws it as iris::Error.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str());
}

}  // namespace iris

// IRIS_CHECK(n > 0) << "n was " << n;  — throws iris::Error with file, line and message.
#define IRIS_CHECK(cond) \
  if (cond) {            \
  } else                 \
    ::iris::detail::CheckFailure(__FILE__, __LINE__, "check failed: " #cond)
