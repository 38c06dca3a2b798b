// Recursive-descent parser from tokens to the syntax tree, following jinja2's grammar and
// operator precedence (filters bind tighter than arithmetic, `is` tests chain after filters,
// `a if c else b` is the loosest). Nesting deeper than `max_depth` is refused with an
// iris::Error naming the cap, so hostile input cannot overflow the stack.
#pragma once

#include <string_view>

#include "engine/chat_template/ast.h"
#include "engine/chat_template/lexer.h"

namespace iris::jinja {

struct ParseOptions {
  LexOptions lex;
  int max_depth = 256;  // syntax-tree depth and parser recursion depth
};

Body parse_template(std::string_view source, const ParseOptions& opts = {});

}  // namespace iris::jinja
