// Regular expressions compiled to grammar rules. The supported subset: literals, escapes
// (\n \r \t \f \v \0 \xHH \uHHHH, escaped punctuation), classes [...] with ranges and negation,
// the shorthands \d \w \s (ASCII, as ECMAScript; \D \W \S are their complements within ASCII,
// so a match is a match under both ASCII and Unicode rules), '.', alternation, groups ((...),
// (?:...), (?P<name>...), (?<name>...)), and the quantifiers * + ? {m} {m,} {m,n} with an
// optional lazy '?'. Backreferences, lookaround, word boundaries, inline flags, possessive
// quantifiers and \p{...} are refused with an error naming them. '^' and '$' are accepted at
// the very start and end only.
#pragma once

#include <string_view>

#include "engine/grammar/grammar.h"
#include "engine/grammar/utf8.h"

namespace iris::grammar {

// Full-match semantics (Python's re.fullmatch): the symbol derives exactly the strings the
// pattern matches, as UTF-8. With `json_string`, it derives their JSON string encoding
// instead (the text between the quotes: '"' and '\' escaped, control characters as \n, \r,
// \t, \b, \f; other control characters are never produced).
Symbol compile_regex(GrammarBuilder& b, std::string_view pattern, bool json_string = false);

// JSON Schema `pattern` (search semantics, ECMA-262): an unanchored start or end matches any
// text there. Emits JSON string contents.
Symbol compile_schema_pattern(GrammarBuilder& b, std::string_view pattern);

// The JSON encoding of one code point of `set` inside a string (see compile_regex).
Symbol json_string_char(GrammarBuilder& b, const CodepointSet& set);

}  // namespace iris::grammar
