// Jinja lexer. Text between tags is emitted as kText after whitespace control; tag contents
// become name/number/string/operator tokens. Newlines are normalised to "\n" first, as
// jinja2 does, and string literals are unescaped with Python's escape rules.
#include "engine/chat_template/lexer.h"

#include <cstring>

#include "engine/chat_template/value.h"
#include "engine/core/check.h"

namespace iris::jinja {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

std::string normalize_newlines(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (size_t k = 0; k < src.size(); ++k) {
    if (src[k] == '\r') {
      out += '\n';
      if (k + 1 < src.size() && src[k + 1] == '\n') ++k;
    } else {
      out += src[k];
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Python "unicode-escape" decoding of a string literal body.
std::string unescape(std::string_view body, int line) {
  std::string out;
  for (size_t k = 0; k < body.size(); ++k) {
    char c = body[k];
    if (c != '\\' || k + 1 >= body.size()) {
      out += c;
      continue;
    }
    char e = body[++k];
    switch (e) {
      case '\n': break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x':
      case 'u':
      case 'U': {
        int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (int d = 0; d < n; ++d) {
          int h = k + 1 + d < body.size() ? hex_value(body[k + 1 + d]) : -1;
          IRIS_CHECK(h >= 0) << "line " << line << ": truncated \\" << e << " escape in string";
          cp = cp * 16 + static_cast<uint32_t>(h);
        }
        IRIS_CHECK(cp <= 0x10ffff) << "line " << line << ": escape out of range";
        k += n;
        utf8_append(out, cp);
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          uint32_t cp = static_cast<uint32_t>(e - '0');
          for (int d = 0; d < 2 && k + 1 < body.size() && body[k + 1] >= '0' && body[k + 1] <= '7'; ++d)
            cp = cp * 8 + static_cast<uint32_t>(body[++k] - '0');
          utf8_append(out, cp);
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  Lexer(std::string src, const LexOptions& opts) : src_(std::move(src)), opts_(opts) {}

  std::vector<Token> run() {
    size_t pos = 0;
    while (true) {
      size_t idx = find_tag(pos);
      std::string text = src_.substr(pos, idx == std::string::npos ? std::string::npos : idx - pos);
      take_pending(text);
      if (idx == std::string::npos) {
        emit_text(std::move(text), pos);
        break;
      }
      char kind = src_[idx + 1];
      char mod = idx + 2 < src_.size() ? src_[idx + 2] : '\0';
      if (mod == '-') {
        rstrip_all(text);
      } else if (opts_.lstrip_blocks && kind != '{' && mod != '+') {
        lstrip_line(text, idx);
      }
      emit_text(std::move(text), pos);
      size_t inner = idx + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
      if (kind == '#') {
        pos = lex_comment(idx, inner);
      } else if (kind == '%' && is_raw(inner)) {
        pos = lex_raw(idx, inner);
      } else {
        pos = lex_tag(kind, inner);
      }
    }
    tokens_.push_back({TokenType::kEof, "", line_at(src_.size())});
    return std::move(tokens_);
  }

 private:
  int line_at(size_t pos) {
    // Lines are counted incrementally; positions only move forward.
    while (line_pos_ < pos && line_pos_ < src_.size()) {
      if (src_[line_pos_] == '\n') ++line_;
      ++line_pos_;
    }
    return line_;
  }

  size_t find_tag(size_t pos) const {
    while (true) {
      size_t idx = src_.find('{', pos);
      if (idx == std::string::npos || idx + 1 >= src_.size()) return std::string::npos;
      char c = src_[idx + 1];
      if (c == '{' || c == '%' || c == '#') return idx;
      pos = idx + 1;
    }
  }

  // Applies the "-" (strip all) or trim_blocks (one newline) effect of the previous tag.
  void take_pending(std::string& text) {
    if (strip_next_) {
      size_t k = 0;
      while (k < text.size() && is_space(text[k])) ++k;
      text.erase(0, k);
    } else if (trim_newline_next_ && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);
    }
    strip_next_ = trim_newline_next_ = false;
  }

  static void rstrip_all(std::string& text) {
    size_t n = text.size();
    while (n > 0 && is_space(text[n - 1])) --n;
    text.resize(n);
  }

  // lstrip_blocks: drop spaces/tabs before a block tag when they start the line.
  void lstrip_line(std::string& text, size_t tag_pos) const {
    size_t k = tag_pos;
    while (k > 0 && (src_[k - 1] == ' ' || src_[k - 1] == '\t')) --k;
    if (k != 0 && src_[k - 1] != '\n') return;
    size_t n = text.size();
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t')) --n;
    text.resize(n);
  }

  void emit_text(std::string text, size_t pos) {
    if (text.empty()) return;
    tokens_.push_back({TokenType::kText, std::move(text), line_at(pos)});
  }

  size_t lex_comment(size_t idx, size_t inner) {
    size_t end = src_.find("#}", inner);
    IRIS_CHECK(end != std::string::npos) << "line " << line_at(idx) << ": missing end of comment tag";
    if (end > inner && src_[end - 1] == '-') strip_next_ = true;
    else if (!(end > inner && src_[end - 1] == '+')) trim_newline_next_ = opts_.trim_blocks;
    return end + 2;
  }

  // Matches `\s*word\s*[-+]?%}` at pos; returns the position after it or npos.
  size_t match_keyword_tag(size_t pos, const char* word, char* end_mod) const {
    while (pos < src_.size() && is_space(src_[pos])) ++pos;
    size_t wl = std::strlen(word);
    if (src_.compare(pos, wl, word) != 0) return std::string::npos;
    pos += wl;
    if (pos < src_.size() && is_name_char(src_[pos])) return std::string::npos;
    while (pos < src_.size() && is_space(src_[pos])) ++pos;
    *end_mod = '\0';
    if (pos < src_.size() && (src_[pos] == '-' || src_[pos] == '+')) *end_mod = src_[pos++];
    if (src_.compare(pos, 2, "%}") != 0) return std::string::npos;
    return pos + 2;
  }

  bool is_raw(size_t inner) const {
    char mod;
    return match_keyword_tag(inner, "raw", &mod) != std::string::npos;
  }

  size_t lex_raw(size_t idx, size_t inner) {
    char mod;
    size_t body = match_keyword_tag(inner, "raw", &mod);
    size_t search = body;
    while (true) {
      size_t tag = src_.find("{%", search);
      IRIS_CHECK(tag != std::string::npos) << "line " << line_at(idx) << ": missing endraw";
      size_t after = tag + 2;
      char open_mod = after < src_.size() ? src_[after] : '\0';
      if (open_mod == '-' || open_mod == '+') ++after;
      char close_mod;
      size_t end = match_keyword_tag(after, "endraw", &close_mod);
      if (end == std::string::npos) {
        search = tag + 2;
        continue;
      }
      std::string text = src_.substr(body, tag - body);
      if (mod == '-') {
        size_t k = 0;
        while (k < text.size() && is_space(text[k])) ++k;
        text.erase(0, k);
      }
      if (open_mod == '-') rstrip_all(text);
      else if (opts_.lstrip_blocks && open_mod != '+') lstrip_line(text, tag);
      emit_text(std::move(text), body);
      if (close_mod == '-') strip_next_ = true;
      else if (close_mod != '+') trim_newline_next_ = opts_.trim_blocks;
      return end;
    }
  }

  size_t lex_tag(char kind, size_t pos) {
    bool block = kind == '%';
    int line = line_at(pos);
    tokens_.push_back({block ? TokenType::kBlockBegin : TokenType::kVarBegin, "", line});
    int depth = 0;
    while (true) {
      while (pos < src_.size() && is_space(src_[pos])) ++pos;
      IRIS_CHECK(pos < src_.size()) << "line " << line << ": unexpected end of template, tag not closed";
      line = line_at(pos);
      if (depth == 0) {
        const char* close = block ? "%}" : "}}";
        char c = src_[pos];
        if ((c == '-' || (block && c == '+')) && src_.compare(pos + 1, 2, close) == 0) {
          if (c == '-') strip_next_ = true;
          tokens_.push_back({block ? TokenType::kBlockEnd : TokenType::kVarEnd, "", line});
          return pos + 3;
        }
        if (src_.compare(pos, 2, close) == 0) {
          if (block) trim_newline_next_ = opts_.trim_blocks;
          tokens_.push_back({block ? TokenType::kBlockEnd : TokenType::kVarEnd, "", line});
          return pos + 2;
        }
      }
      char c = src_[pos];
      if (is_name_start(c)) {
        size_t start = pos;
        while (pos < src_.size() && is_name_char(src_[pos])) ++pos;
        tokens_.push_back({TokenType::kName, src_.substr(start, pos - start), line});
      } else if (is_digit(c)) {
        pos = lex_number(pos, line);
      } else if (c == '\'' || c == '"') {
        size_t k = pos + 1;
        while (k < src_.size() && src_[k] != c) k += src_[k] == '\\' ? 2 : 1;
        IRIS_CHECK(k < src_.size()) << "line " << line << ": unterminated string literal";
        tokens_.push_back({TokenType::kString, unescape(std::string_view(src_).substr(pos + 1, k - pos - 1), line), line});
        pos = k + 1;
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%",
                                     "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".",
                                     ":", "|", ";"};
        const char* op = nullptr;
        for (const char* cand : kOps)
          if (src_.compare(pos, std::strlen(cand), cand) == 0) {
            op = cand;
            break;
          }
        IRIS_CHECK(op) << "line " << line << ": unexpected character '" << c << "' in tag";
        if (*op == '(' || *op == '[' || *op == '{') ++depth;
        if (*op == ')' || *op == ']' || *op == '}') {
          IRIS_CHECK(depth > 0) << "line " << line << ": unexpected '" << op << "'";
          --depth;
        }
        tokens_.push_back({TokenType::kOp, op, line});
        pos += std::strlen(op);
      }
    }
  }

  size_t lex_number(size_t pos, int line) {
    std::string digits;
    auto read_digits = [&] {
      while (pos < src_.size() && (is_digit(src_[pos]) || (src_[pos] == '_' && pos + 1 < src_.size() && is_digit(src_[pos + 1])))) {
        if (src_[pos] != '_') digits += src_[pos];
        ++pos;
      }
    };
    read_digits();
    bool is_float = false;
    if (pos + 1 < src_.size() && src_[pos] == '.' && is_digit(src_[pos + 1])) {
      is_float = true;
      digits += src_[pos++];
      read_digits();
    }
    if (pos < src_.size() && (src_[pos] == 'e' || src_[pos] == 'E')) {
      size_t save = pos;
      std::string save_digits = digits;
      digits += 'e';
      ++pos;
      if (pos < src_.size() && (src_[pos] == '+' || src_[pos] == '-')) digits += src_[pos++];
      if (pos < src_.size() && is_digit(src_[pos])) {
        is_float = true;
        read_digits();
      } else {
        pos = save;
        digits = save_digits;
      }
    }
    tokens_.push_back({is_float ? TokenType::kFloat : TokenType::kInt, digits, line});
    return pos;
  }

  std::string src_;
  LexOptions opts_;
  std::vector<Token> tokens_;
  bool strip_next_ = false;
  bool trim_newline_next_ = false;
  int line_ = 1;
  size_t line_pos_ = 0;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source, const LexOptions& opts) {
  std::string src = normalize_newlines(source);
  if (!opts.keep_trailing_newline && !src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(std::move(src), opts).run();
}

}  // namespace iris::jinja
