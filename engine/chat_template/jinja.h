// Generic Jinja template API: parse once, render many times with a set of variables. The
// dialect is jinja2's as configured by transformers (trim_blocks, lstrip_blocks, loop
// controls, immutable sandbox). Every render is bounded by RenderLimits; exceeding one
// throws iris::Error naming the cap.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/chat_template/ast.h"
#include "engine/chat_template/parser.h"
#include "engine/chat_template/value.h"

namespace iris::jinja {

struct RenderLimits {
  size_t max_output_bytes = size_t{1} << 20;  // rendered text, and any one string or list built
  uint64_t max_steps = 10'000'000;            // node evaluations + loop iterations
  int max_depth = 256;                        // nested macro calls; evaluator recursion is 4x
};

using Variables = std::vector<std::pair<std::string, Value>>;

class Template {
 public:
  // Throws iris::Error on a syntax error or when nesting exceeds opts.max_depth.
  static Template parse(std::string_view source, const ParseOptions& opts = {});

  // Variables shadow the builtin globals (range, dict, namespace, joiner, cycler).
  std::string render(const Variables& vars, const RenderLimits& limits = {}) const;
  // Convenience: every key of a JSON object becomes a variable.
  std::string render(const nlohmann::json& context, const RenderLimits& limits = {}) const;
  std::string render(const nlohmann::ordered_json& context, const RenderLimits& limits = {}) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace iris::jinja
