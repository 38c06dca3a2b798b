// Template: owns the parsed tree and sets up the global scope (builtins, then the caller's
// variables) for each render.
#include "engine/chat_template/jinja.h"

#include "engine/chat_template/evaluator.h"
#include "engine/core/check.h"

namespace iris::jinja {

Template Template::parse(std::string_view source, const ParseOptions& opts) {
  Template t;
  t.body_ = std::make_shared<const Body>(parse_template(source, opts));
  return t;
}

std::string Template::render(const Variables& vars, const RenderLimits& limits) const {
  auto globals = std::make_shared<Frame>();
  add_builtin_globals(*globals);
  for (const auto& [name, value] : vars) globals->set(name, value);
  Evaluator ev(limits, globals);
  return ev.render(*body_);
}

namespace {
template <typename Json>
Variables variables_of(const Json& context) {
  Variables vars;
  if (context.is_object())
    for (auto it = context.begin(); it != context.end(); ++it) vars.emplace_back(it.key(), from_json(it.value()));
  else
    IRIS_CHECK(context.is_null()) << "jinja context must be a JSON object";
  return vars;
}
}  // namespace

std::string Template::render(const nlohmann::json& context, const RenderLimits& limits) const {
  return render(variables_of(context), limits);
}

std::string Template::render(const nlohmann::ordered_json& context, const RenderLimits& limits) const {
  return render(variables_of(context), limits);
}

}  // namespace iris::jinja
