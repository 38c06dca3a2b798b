// Turns Jinja template source into tokens, applying jinja2's whitespace rules on the way:
// `-` and `+` modifiers, trim_blocks, lstrip_blocks, raw blocks, comments, and the removal
// of one trailing newline (keep_trailing_newline=False).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace iris::jinja {

enum class TokenType {
  kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof
};

struct Token {
  TokenType type;
  std::string value;  // text, name, operator, unescaped string or number literal
  int line = 1;
};

struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

// Throws iris::Error with the line number on malformed input.
std::vector<Token> tokenize(std::string_view source, const LexOptions& opts = {});

}  // namespace iris::jinja
