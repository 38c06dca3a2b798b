// PCRE2 wrapper. Match data and a JIT stack are per thread, so one compiled Regex is shared
// by concurrent encode() calls. If JIT matching runs out of stack (very long whitespace runs
// against `\s+(?!\S)`), the interpreter is used for that call instead.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/tokenizer/regex.h"

#include <pcre2.h>

#include "engine/core/check.h"
#include "engine/tokenizer/unicode.h"

namespace iris::tok {

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() {
    if (code) pcre2_code_free(code);
  }
};

namespace {
struct ThreadMatchState {
  pcre2_match_data* data = nullptr;
  pcre2_jit_stack* stack = nullptr;
  pcre2_match_context* context = nullptr;
  ThreadMatchState() {
    data = pcre2_match_data_create(32, nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    context = pcre2_match_context_create(nullptr);
    if (stack && context) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatchState() {
    if (data) pcre2_match_data_free(data);
    if (context) pcre2_match_context_free(context);
    if (stack) pcre2_jit_stack_free(stack);
  }
};
ThreadMatchState& thread_state() {
  thread_local ThreadMatchState state;
  return state;
}

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}
}  // namespace

Regex::Regex(const std::string& pattern) : pattern_(pattern), code_(std::make_unique<Code>()) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &err_offset,
                              nullptr);
  if (!code_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    fail("tokenizer.json: cannot compile regex '", pattern, "' at offset ", err_offset, ": ",
         reinterpret_cast<const char*>(msg));
  }
  code_->jit = pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex Regex::literal(const std::string& text) { return Regex(escape(text)); }
Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view s) const {
  std::vector<std::pair<size_t, size_t>> out;
  auto& st = thread_state();
  auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t pos = 0;
  while (pos <= s.size()) {
    int rc = -1;
    if (code_->jit) {
      rc = pcre2_jit_match(code_->code, subject, s.size(), pos, 0, st.data, st.context);
    }
    if (!code_->jit || rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code_->code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       st.data, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    IRIS_CHECK(rc >= 0) << "regex match failed (pcre2 error " << rc << ") for /" << pattern_ << "/";
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    size_t b = ov[0], e = ov[1];
    out.emplace_back(b, e);
    if (e == b) {
      if (e >= s.size()) break;
      pos = e + utf8_len(static_cast<unsigned char>(s[e]));
    } else {
      pos = e;
    }
  }
  return out;
}

std::string Regex::replace_all(std::string_view s, std::string_view with) const {
  std::string out;
  size_t prev = 0;
  for (auto [b, e] : find_all(s)) {
    out.append(s.substr(prev, b - prev));
    out.append(with);
    prev = e;
  }
  out.append(s.substr(prev));
  return out;
}

}  // namespace iris::tok
