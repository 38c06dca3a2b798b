// The grammar every constraint compiles to: a context-free grammar over bytes. Rules have
// alternatives; an alternative is a sequence of byte classes (a set of bytes matching one input
// byte) and rule references. Constraint front ends (JSON Schema, regular expressions, choices,
// GBNF) build one with GrammarBuilder; the matcher (matcher.h) runs it as a pushdown automaton.
//
// Restrictions enforced by GrammarBuilder::build: the root must produce at least one string,
// alternatives that can never finish are dropped, and left recursion that would grow the stack
// (A ::= A "x") is refused. Right recursion is how repetition is expressed and costs no stack.
#pragma once

#include <bitset>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace iris::grammar {

using ByteSet = std::bitset<256>;

struct Grammar {
  enum class Op : uint8_t { kClass, kRule, kEnd };
  struct Element {
    Op op;
    int32_t arg;  // kClass: index into classes; kRule: rule index; kEnd: rule index
  };
  // Every alternative of every rule, flattened: its elements followed by one kEnd.
  std::vector<Element> elements;
  // Per rule, the index in `elements` of each alternative's first element.
  std::vector<std::vector<int32_t>> alternatives;
  std::vector<ByteSet> classes;
  std::vector<std::string> rule_names;
  int32_t root = 0;
};

// One item of an alternative: a byte class or a rule.
struct Symbol {
  bool is_rule = false;
  int32_t id = 0;
};
using Sequence = std::vector<Symbol>;

class GrammarBuilder {
 public:
  // Expansions (bounded repetition unrolls) beyond this many elements are refused.
  static constexpr size_t kMaxElements = 1u << 21;

  int32_t add_rule(std::string name);
  void add_alternative(int32_t rule, Sequence seq);
  // A rule whose alternatives are `alts`; named `name` (or "_N").
  Symbol rule_of(std::vector<Sequence> alts, std::string name = "");
  Symbol rule_ref(int32_t rule) const { return Symbol{true, rule}; }
  Symbol byte_class(const ByteSet& set);
  Symbol byte(uint8_t b);
  Sequence literal(std::string_view bytes);
  // x*, x+, x?, and x{min,max} (max < 0: unbounded).
  Symbol star(const Sequence& x);
  Symbol plus(const Sequence& x);
  Symbol optional(const Sequence& x);
  Symbol repeat(const Sequence& x, int min, int max);
  // A rule shared by name: created once by `make` the first time it is asked for.
  template <typename Make>
  Symbol shared(const std::string& name, Make make) {
    auto it = shared_.find(name);
    if (it != shared_.end()) return Symbol{true, it->second};
    const int32_t r = add_rule(name);
    shared_[name] = r;
    for (Sequence& s : make()) add_alternative(r, std::move(s));
    return Symbol{true, r};
  }
  const std::string& rule_name(int32_t rule) const { return names_.at(rule); }
  size_t num_rules() const { return names_.size(); }

  // Checks and flattens the grammar rooted at `root`; throws iris::Error on an empty language
  // or stack-growing left recursion.
  Grammar build(int32_t root) const;

  // The compile time cap: building (and build()) past `limit_ms` from now throws iris::Error.
  void set_time_limit(double limit_ms);

 private:
  void count(size_t n);
  void check_time() const;  // every call is cheap: the clock is read once in 256

  std::vector<std::string> names_;
  std::vector<std::vector<Sequence>> rules_;
  std::vector<ByteSet> classes_;
  std::map<std::string, int32_t> class_index_;  // ByteSet bits as a string → class
  std::map<std::string, int32_t> shared_;
  size_t elements_ = 0;
  double limit_ms_ = 0;  // 0: no time cap
  std::chrono::steady_clock::time_point deadline_{};
  mutable uint32_t ticks_ = 0;
};

}  // namespace iris::grammar
