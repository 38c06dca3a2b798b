// GBNF, llama.cpp's grammar format: `name ::= alternatives` rules with "literals", [classes]
// (ranges, ^ negation, escapes), rule references, (groups), `.`, the quantifiers * + ? {m}
// {m,} {m,n}, and # comments. Literals and classes are Unicode code points, matched as UTF-8.
// The start rule is `root`. Newlines are plain whitespace here: a rule ends where the next
// `name ::=` begins. Left-recursive rules are refused (as llama.cpp does).
#pragma once

#include <string_view>

#include "engine/grammar/grammar.h"

namespace iris::grammar {

// The root rule; throws iris::Error naming the line of a syntax error or the undefined rule.
int32_t compile_gbnf(GrammarBuilder& b, std::string_view text);

}  // namespace iris::grammar
