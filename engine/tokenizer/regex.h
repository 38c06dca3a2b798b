// A compiled Unicode regex (PCRE2 with UTF + UCP, JIT when available) used by the Split and
// ByteLevel pre-tokenizers and the Replace normalizer/decoder. Patterns in tokenizer.json are
// written for Oniguruma; the constructs they use (\p{..}, (?i:..), lookahead) mean the same in
// PCRE2.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iris::tok {

class Regex {
 public:
  explicit Regex(const std::string& pattern);
  static Regex literal(const std::string& text);  // matches `text` verbatim
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Non-overlapping matches, left to right, as [begin, end) byte offsets. An empty match
  // advances by one character, as Oniguruma's find_iter does. `s` must be valid UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;
  std::string replace_all(std::string_view s, std::string_view with) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::string pattern_;
  std::unique_ptr<Code> code_;
};

}  // namespace iris::tok
