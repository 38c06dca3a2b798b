// Sets of Unicode code points and their compilation to UTF-8 byte-class sequences, shared by
// the regular-expression, JSON and GBNF front ends. Surrogates (U+D800–U+DFFF) are never
// produced: they have no UTF-8 encoding.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/grammar/grammar.h"

namespace iris::grammar {

constexpr uint32_t kMaxCodepoint = 0x10FFFF;

class CodepointSet {
 public:
  void add(uint32_t lo, uint32_t hi);
  void add(const CodepointSet& other);
  void remove(uint32_t lo, uint32_t hi);
  CodepointSet complement() const;
  bool contains(uint32_t c) const;
  bool empty() const { return ranges_.empty(); }
  // Sorted, disjoint, non-adjacent.
  const std::vector<std::pair<uint32_t, uint32_t>>& ranges() const { return ranges_; }

 private:
  std::vector<std::pair<uint32_t, uint32_t>> ranges_;
};

void append_utf8(std::string& out, uint32_t cp);
// Decodes one code point at s[i] and advances i; false (i unchanged) on invalid UTF-8.
bool next_utf8(std::string_view s, size_t& i, uint32_t& cp);

// A symbol matching the UTF-8 encoding of exactly one code point of `set`.
Symbol utf8_symbol(GrammarBuilder& b, const CodepointSet& set);

}  // namespace iris::grammar
