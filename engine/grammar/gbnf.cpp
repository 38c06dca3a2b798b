// GBNF parser emitting grammar rules.
#include "engine/grammar/gbnf.h"

#include <cctype>
#include <map>
#include <string>

#include "engine/core/check.h"
#include "engine/grammar/utf8.h"

namespace iris::grammar {

namespace {

class GbnfParser {
 public:
  GbnfParser(GrammarBuilder& b, std::string_view t) : b_(b), t_(t) {}

  int32_t parse() {
    skip_space();
    while (i_ < t_.size()) {
      const std::string name = identifier();
      if (name.empty()) error("expected a rule name");
      skip_space();
      if (t_.substr(i_, 3) != "::=") error("expected '::=' after '" + name + "'");
      i_ += 3;
      const int32_t r = rule(name);
      if (defined_.count(name)) error("rule '" + name + "' is defined twice");
      defined_[name] = true;
      for (Sequence& s : alternatives(false)) b_.add_alternative(r, std::move(s));
      skip_space();
    }
    for (const auto& [name, id] : rules_)
      if (!defined_.count(name)) fail("GBNF: rule '", name, "' is used but never defined");
    auto it = rules_.find("root");
    if (it == rules_.end()) fail("GBNF: the grammar has no 'root' rule");
    return it->second;
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    size_t line = 1;
    for (size_t k = 0; k < i_ && k < t_.size(); ++k) line += t_[k] == '\n';
    fail("GBNF: ", what, " (line ", line, ")");
  }

  void skip_space() {
    while (i_ < t_.size()) {
      if (t_[i_] == '#') {
        while (i_ < t_.size() && t_[i_] != '\n') ++i_;
      } else if (std::isspace(static_cast<unsigned char>(t_[i_]))) {
        ++i_;
      } else {
        break;
      }
    }
  }

  static bool name_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  }

  std::string identifier() {
    const size_t start = i_;
    while (i_ < t_.size() && name_char(t_[i_])) ++i_;
    return std::string(t_.substr(start, i_ - start));
  }

  int32_t rule(const std::string& name) {
    auto it = rules_.find(name);
    if (it != rules_.end()) return it->second;
    const int32_t r = b_.add_rule(name);
    rules_[name] = r;
    return r;
  }

  // True when the text at i_ is `name ::=` (the next rule starts).
  bool at_rule_start() {
    size_t k = i_;
    while (k < t_.size() && name_char(t_[k])) ++k;
    if (k == i_) return false;
    while (k < t_.size() && std::isspace(static_cast<unsigned char>(t_[k]))) ++k;
    return t_.substr(k, 3) == "::=";
  }

  std::vector<Sequence> alternatives(bool nested) {
    std::vector<Sequence> alts{sequence(nested)};
    while (i_ < t_.size() && t_[i_] == '|') {
      ++i_;
      alts.push_back(sequence(nested));
    }
    return alts;
  }

  Sequence sequence(bool nested) {
    Sequence seq;
    while (true) {
      skip_space();
      if (i_ >= t_.size() || t_[i_] == '|' || t_[i_] == ')') break;
      if (!nested && at_rule_start()) break;
      Sequence item = primary();
      quantifier(item, seq);
    }
    return seq;
  }

  void quantifier(const Sequence& item, Sequence& out) {
    if (i_ >= t_.size()) {
      out.insert(out.end(), item.begin(), item.end());
      return;
    }
    const char c = t_[i_];
    if (c == '*') ++i_, out.push_back(b_.star(item));
    else if (c == '+') ++i_, out.push_back(b_.plus(item));
    else if (c == '?') ++i_, out.push_back(b_.optional(item));
    else if (c == '{') {
      ++i_;
      skip_space();
      const int min = number();
      int max = min;
      skip_space();
      if (i_ < t_.size() && t_[i_] == ',') {
        ++i_;
        skip_space();
        max = i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_])) ? number() : -1;
        skip_space();
      }
      if (i_ >= t_.size() || t_[i_] != '}') error("expected '}' after a repetition count");
      ++i_;
      if (max >= 0 && max < min) error("repetition {m,n} with n < m");
      out.push_back(b_.repeat(item, min, max));
    } else {
      out.insert(out.end(), item.begin(), item.end());
    }
  }

  int number() {
    if (i_ >= t_.size() || !std::isdigit(static_cast<unsigned char>(t_[i_]))) error("expected a number");
    long long v = 0;
    while (i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_]))) {
      v = v * 10 + (t_[i_++] - '0');
      if (v > 100000) error("repetition count is too large");
    }
    return static_cast<int>(v);
  }

  uint32_t hex(size_t n) {
    uint32_t v = 0;
    for (size_t k = 0; k < n; ++k, ++i_) {
      if (i_ >= t_.size() || !std::isxdigit(static_cast<unsigned char>(t_[i_])))
        error("expected a hex digit");
      const char h = static_cast<char>(std::tolower(static_cast<unsigned char>(t_[i_])));
      v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : h - 'a' + 10);
    }
    return v;
  }

  // One (possibly escaped) code point of a literal or class.
  uint32_t code_point() {
    if (i_ >= t_.size()) error("unexpected end of the grammar");
    if (t_[i_] == '\\') {
      ++i_;
      if (i_ >= t_.size()) error("trailing backslash");
      const char c = t_[i_++];
      switch (c) {
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case '0': return 0;
        case 'x': return hex(2);
        case 'u': return hex(4);
        case 'U': return hex(8);
        case '\\': case '"': case '\'': case '[': case ']': case '-': case '^': case '/':
          return static_cast<uint32_t>(c);
        default: --i_; error(std::string("unknown escape \\") + c);
      }
    }
    uint32_t cp = 0;
    if (!next_utf8(t_, i_, cp)) error("invalid UTF-8");
    return cp;
  }

  Sequence primary() {
    const char c = t_[i_];
    if (c == '"') {
      ++i_;
      std::string bytes;
      while (i_ < t_.size() && t_[i_] != '"') append_utf8(bytes, code_point());
      if (i_ >= t_.size()) error("unterminated string literal");
      ++i_;
      return b_.literal(bytes);
    }
    if (c == '[') {
      ++i_;
      bool negate = false;
      if (i_ < t_.size() && t_[i_] == '^') negate = true, ++i_;
      CodepointSet set;
      while (i_ < t_.size() && t_[i_] != ']') {
        const uint32_t lo = code_point();
        uint32_t hi = lo;
        if (i_ + 1 < t_.size() && t_[i_] == '-' && t_[i_ + 1] != ']') {
          ++i_;
          hi = code_point();
          if (hi < lo) error("character range out of order");
        }
        set.add(lo, hi);
      }
      if (i_ >= t_.size()) error("unterminated character class");
      ++i_;
      return {utf8_symbol(b_, negate ? set.complement() : set)};
    }
    if (c == '(') {
      ++i_;
      std::vector<Sequence> alts = alternatives(true);
      skip_space();
      if (i_ >= t_.size() || t_[i_] != ')') error("expected ')'");
      ++i_;
      if (alts.size() == 1) return std::move(alts[0]);
      return {b_.rule_of(std::move(alts))};
    }
    if (c == '.') {
      ++i_;
      CodepointSet any;
      any.add(0, kMaxCodepoint);
      return {utf8_symbol(b_, any)};
    }
    if (c == '<') error("token references (<...>) are not supported");
    if (name_char(c)) return {Symbol{true, rule(identifier())}};
    error(std::string("unexpected character '") + c + "'");
  }

  GrammarBuilder& b_;
  std::string_view t_;
  size_t i_ = 0;
  std::map<std::string, int32_t> rules_;
  std::map<std::string, bool> defined_;
};

}  // namespace

int32_t compile_gbnf(GrammarBuilder& b, std::string_view text) { return GbnfParser(b, text).parse(); }

}  // namespace iris::grammar
