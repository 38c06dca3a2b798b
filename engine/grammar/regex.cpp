// Recursive-descent regular-expression parser that emits grammar rules directly:
//   alternation := concat ('|' concat)*
//   concat      := repeat*
//   repeat      := atom quantifier?
//   atom        := literal | escape | class | '.' | group
#include "engine/grammar/regex.h"

#include <string>

#include "engine/core/check.h"

namespace iris::grammar {

namespace {

CodepointSet digits() {
  CodepointSet s;
  s.add('0', '9');
  return s;
}
CodepointSet word() {
  CodepointSet s;
  s.add('0', '9');
  s.add('A', 'Z');
  s.add('a', 'z');
  s.add('_', '_');
  return s;
}
CodepointSet spaces() {
  CodepointSet s;
  s.add('\t', '\r');  // \t \n \v \f \r
  s.add(' ', ' ');
  return s;
}
// Complement within ASCII (see regex.h for why not within Unicode).
CodepointSet ascii_complement(const CodepointSet& s) {
  CodepointSet c = s.complement();
  c.remove(0x80, kMaxCodepoint);
  return c;
}

class RegexParser {
 public:
  RegexParser(GrammarBuilder& b, std::string_view p, bool json) : b_(b), p_(p), json_(json) {}

  Symbol parse_all() {
    if (peek('^')) ++i_;
    std::vector<Sequence> alts = alternation();
    if (i_ < p_.size()) error(p_[i_] == ')' ? "unbalanced ')'" : "unexpected character");
    return b_.rule_of(std::move(alts));
  }

  // For search semantics: whether the pattern starts with '^' / ends with an unescaped '$'.
  static bool anchored_start(std::string_view p) { return !p.empty() && p[0] == '^'; }
  static bool anchored_end(std::string_view p) {
    if (p.empty() || p.back() != '$') return false;
    size_t backslashes = 0;
    for (size_t k = p.size() - 1; k > 0 && p[k - 1] == '\\'; --k) ++backslashes;
    return backslashes % 2 == 0;
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail("regular expression '", std::string(p_), "': ", what, " at offset ", i_);
  }
  bool peek(char c) const { return i_ < p_.size() && p_[i_] == c; }

  std::vector<Sequence> alternation() {
    std::vector<Sequence> alts{concat()};
    while (peek('|')) {
      ++i_;
      alts.push_back(concat());
    }
    return alts;
  }

  Sequence concat() {
    Sequence seq;
    while (i_ < p_.size() && p_[i_] != '|' && p_[i_] != ')') {
      if (p_[i_] == '$') {
        if (i_ + 1 == p_.size()) {
          ++i_;
          break;
        }
        error("'$' is only supported at the end of the pattern");
      }
      if (p_[i_] == '^') error("'^' is only supported at the start of the pattern");
      Sequence atom_seq = atom();
      quantified(atom_seq, seq);
    }
    return seq;
  }

  // Reads a {m}, {m,}, {m,n} quantifier at i_ into min/max; false (i_ unchanged) if the brace
  // does not start one (then it is a literal '{', as in Python).
  bool braces(int& min, int& max) {
    size_t k = i_ + 1;
    auto number = [&](int& v) {
      const size_t start = k;
      long long x = 0;
      while (k < p_.size() && std::isdigit(static_cast<unsigned char>(p_[k]))) {
        x = x * 10 + (p_[k] - '0');
        if (x > 100000) error("repetition bound is too large");
        ++k;
      }
      v = static_cast<int>(x);
      return k > start;
    };
    if (!number(min)) return false;
    if (k < p_.size() && p_[k] == '}') {
      max = min;
    } else if (k < p_.size() && p_[k] == ',') {
      ++k;
      if (!number(max)) max = -1;
      if (k >= p_.size() || p_[k] != '}') return false;
    } else {
      return false;
    }
    i_ = k + 1;
    return true;
  }

  void quantified(const Sequence& atom_seq, Sequence& out) {
    int min = 1, max = 1;
    if (i_ < p_.size()) {
      const char c = p_[i_];
      if (c == '*') min = 0, max = -1, ++i_;
      else if (c == '+') min = 1, max = -1, ++i_;
      else if (c == '?') min = 0, max = 1, ++i_;
      else if (c == '{' && braces(min, max)) {
        if (max >= 0 && max < min) error("repetition {m,n} with n < m");
      } else {
        out.insert(out.end(), atom_seq.begin(), atom_seq.end());
        return;
      }
      if (peek('?')) ++i_;  // lazy: the same language
      else if (peek('+')) error("possessive quantifiers are not supported");
      if (i_ < p_.size() && (p_[i_] == '*' || p_[i_] == '+' || p_[i_] == '?'))
        error("nothing to repeat");
    }
    if (min == 1 && max == 1) {
      out.insert(out.end(), atom_seq.begin(), atom_seq.end());
      return;
    }
    if (min == 0 && max == -1) out.push_back(b_.star(atom_seq));
    else if (min == 1 && max == -1) out.push_back(b_.plus(atom_seq));
    else if (min == 0 && max == 1) out.push_back(b_.optional(atom_seq));
    else out.push_back(b_.repeat(atom_seq, min, max));
  }

  Sequence set_seq(const CodepointSet& s) {
    return {json_ ? json_string_char(b_, s) : utf8_symbol(b_, s)};
  }
  Sequence char_seq(uint32_t cp) {
    CodepointSet s;
    s.add(cp, cp);
    if (!json_ && cp < 0x80) return {b_.byte(static_cast<uint8_t>(cp))};
    return set_seq(s);
  }

  Sequence atom() {
    const char c = p_[i_];
    if (c == '(') return group();
    if (c == '[') return set_seq(char_class());
    if (c == '.') {
      ++i_;
      CodepointSet s;
      s.add(0, kMaxCodepoint);
      s.remove('\n', '\n');
      return set_seq(s);
    }
    if (c == '*' || c == '+' || c == '?') error("nothing to repeat");
    if (c == '\\') {
      CodepointSet s;
      uint32_t cp = 0;
      if (escape(s, cp, /*in_class=*/false)) return set_seq(s);
      return char_seq(cp);
    }
    uint32_t cp = 0;
    if (!next_utf8(p_, i_, cp)) error("invalid UTF-8");
    return char_seq(cp);
  }

  Sequence group() {
    ++i_;  // (
    if (peek('?')) {
      ++i_;
      if (peek(':')) {
        ++i_;
      } else if (peek('P') && i_ + 1 < p_.size() && p_[i_ + 1] == '<') {
        skip_group_name(i_ + 2);
      } else if (peek('<') && i_ + 1 < p_.size() && (p_[i_ + 1] == '=' || p_[i_ + 1] == '!')) {
        error("lookbehind assertions are not supported");
      } else if (peek('<')) {
        skip_group_name(i_ + 1);
      } else if (peek('=') || peek('!')) {
        error("lookahead assertions are not supported");
      } else if (peek('P') && i_ + 1 < p_.size() && p_[i_ + 1] == '=') {
        error("backreferences are not supported");
      } else {
        error("inline flags and other (?...) groups are not supported");
      }
    }
    std::vector<Sequence> alts = alternation();
    if (!peek(')')) error("missing ')'");
    ++i_;
    if (alts.size() == 1) return std::move(alts[0]);
    return {b_.rule_of(std::move(alts))};
  }

  void skip_group_name(size_t k) {
    while (k < p_.size() && p_[k] != '>') ++k;
    if (k >= p_.size()) error("unterminated group name");
    i_ = k + 1;
  }

  uint32_t hex(size_t digits) {
    if (i_ + digits > p_.size()) error("truncated hex escape");
    uint32_t v = 0;
    for (size_t k = 0; k < digits; ++k) {
      const char h = p_[i_ + k];
      int d = std::isdigit(static_cast<unsigned char>(h)) ? h - '0'
              : (h >= 'a' && h <= 'f')                    ? h - 'a' + 10
              : (h >= 'A' && h <= 'F')                    ? h - 'A' + 10
                                                          : -1;
      if (d < 0) error("invalid hex escape");
      v = v * 16 + static_cast<uint32_t>(d);
    }
    i_ += digits;
    return v;
  }

  // At a backslash: a class escape fills `set` (returns true), a character escape sets `cp`.
  bool escape(CodepointSet& set, uint32_t& cp, bool in_class) {
    ++i_;
    if (i_ >= p_.size()) error("trailing backslash");
    const char c = p_[i_++];
    switch (c) {
      case 'd': set = digits(); return true;
      case 'D': set = ascii_complement(digits()); return true;
      case 'w': set = word(); return true;
      case 'W': set = ascii_complement(word()); return true;
      case 's': set = spaces(); return true;
      case 'S': set = ascii_complement(spaces()); return true;
      case 'n': cp = '\n'; return false;
      case 'r': cp = '\r'; return false;
      case 't': cp = '\t'; return false;
      case 'f': cp = '\f'; return false;
      case 'v': cp = '\v'; return false;
      case '0': cp = 0; return false;
      case 'x': cp = hex(2); return false;
      case 'u': cp = hex(4); return false;
      case 'U': cp = hex(8); return false;
      case 'b':
        if (in_class) {
          cp = '\b';
          return false;
        }
        --i_;
        error("word boundaries (\\b) are not supported");
      case 'B': --i_; error("word boundaries (\\B) are not supported");
      case 'A': case 'Z': case 'z': case 'G':
        --i_;
        error(std::string("the anchor \\") + c + " is not supported");
      case 'p': case 'P': --i_; error("Unicode property classes (\\p{...}) are not supported");
      case 'k': --i_; error("backreferences are not supported");
      default: break;
    }
    if (c >= '1' && c <= '9') {
      --i_;
      error("backreferences are not supported");
    }
    if (std::isalnum(static_cast<unsigned char>(c))) {
      --i_;
      error(std::string("unknown escape \\") + c);
    }
    --i_;
    if (!next_utf8(p_, i_, cp)) error("invalid UTF-8");
    return false;
  }

  CodepointSet char_class() {
    ++i_;  // [
    bool negate = false;
    if (peek('^')) negate = true, ++i_;
    CodepointSet set;
    bool first = true;
    while (true) {
      if (i_ >= p_.size()) error("missing ']'");
      if (p_[i_] == ']' && !first) {
        ++i_;
        break;
      }
      if (p_[i_] == '[' && i_ + 1 < p_.size() && p_[i_ + 1] == ':')
        error("POSIX character classes ([:name:]) are not supported");
      first = false;
      uint32_t lo = 0;
      if (p_[i_] == '\\') {
        CodepointSet s;
        if (escape(s, lo, /*in_class=*/true)) {
          set.add(s);
          continue;
        }
      } else if (!next_utf8(p_, i_, lo)) {
        error("invalid UTF-8");
      }
      uint32_t hi = lo;
      if (peek('-') && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
        ++i_;
        if (p_[i_] == '\\') {
          CodepointSet s;
          if (escape(s, hi, /*in_class=*/true)) error("a class shorthand cannot end a range");
        } else if (!next_utf8(p_, i_, hi)) {
          error("invalid UTF-8");
        }
        if (hi < lo) error("character range out of order");
      }
      set.add(lo, hi);
    }
    if (negate) set = set.complement();
    return set;
  }

  GrammarBuilder& b_;
  std::string_view p_;
  bool json_;
  size_t i_ = 0;
};

}  // namespace

Symbol json_string_char(GrammarBuilder& b, const CodepointSet& set) {
  CodepointSet plain = set;
  plain.remove(0, 0x1F);
  plain.remove('"', '"');
  plain.remove('\\', '\\');
  std::vector<Sequence> alts;
  if (!plain.empty()) alts.push_back({utf8_symbol(b, plain)});
  static constexpr std::pair<uint32_t, const char*> kEscapes[] = {
      {'"', "\\\""}, {'\\', "\\\\"}, {'\n', "\\n"}, {'\r', "\\r"},
      {'\t', "\\t"}, {'\b', "\\b"},  {'\f', "\\f"}};
  for (const auto& [cp, esc] : kEscapes)
    if (set.contains(cp)) alts.push_back(b.literal(esc));
  if (alts.size() == 1 && alts[0].size() == 1) return alts[0][0];
  return b.rule_of(std::move(alts));  // no alternatives: an unusable rule
}

Symbol compile_regex(GrammarBuilder& b, std::string_view pattern, bool json_string) {
  std::string_view p = pattern;
  if (RegexParser::anchored_end(p)) p.remove_suffix(1);
  return RegexParser(b, p, json_string).parse_all();
}

Symbol compile_schema_pattern(GrammarBuilder& b, std::string_view pattern) {
  const bool start = RegexParser::anchored_start(pattern);
  const bool end = RegexParser::anchored_end(pattern);
  std::string_view p = pattern;
  if (end) p.remove_suffix(1);
  const Symbol core = RegexParser(b, p, /*json=*/true).parse_all();
  CodepointSet any;
  any.add(0, kMaxCodepoint);
  Sequence seq;
  if (!start) seq.push_back(b.star({json_string_char(b, any)}));
  seq.push_back(core);
  if (!end) seq.push_back(b.star({json_string_char(b, any)}));
  return b.rule_of({std::move(seq)});
}

}  // namespace iris::grammar
