// JSON Schema (the subset structured-output requests use) and "any JSON" compiled to grammar
// rules. See docs/structured-output.md for the supported keywords, what is refused and the
// whitespace the generated JSON may contain.
#pragma once

#include <nlohmann/json.hpp>

#include "engine/grammar/grammar.h"

namespace iris::grammar {

// The root rule of a grammar for JSON text valid against `schema`. Throws iris::Error naming
// the unsupported keyword (and where it is) or the invalid value.
int32_t compile_json_schema(GrammarBuilder& b, const nlohmann::ordered_json& schema);

// The root rule of a grammar for any JSON object (OpenAI's `json_object` response format).
int32_t compile_any_json_object(GrammarBuilder& b);

}  // namespace iris::grammar
