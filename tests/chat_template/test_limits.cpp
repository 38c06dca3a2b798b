// Hostile templates: each cap (output size, evaluation steps, recursion depth) stops the
// render with an iris::Error that names the cap, instead of hanging, exhausting memory or
// overflowing the stack.
#include <catch2/catch.hpp>

#include "engine/chat_template/chat_template.h"
#include "engine/chat_template/jinja.h"
#include "engine/core/check.h"

using iris::jinja::RenderLimits;
using iris::jinja::Template;

namespace {
std::string render(const std::string& tmpl, const RenderLimits& limits = {}) {
  return Template::parse(tmpl).render(nlohmann::json::object(), limits);
}
}  // namespace

TEST_CASE("output size cap", "[chat_template][limits]") {
  // Doubling a string: 2^40 bytes if unchecked.
  CHECK_THROWS_WITH(render("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
                    Catch::Contains("max_output_bytes"));
  CHECK_THROWS_WITH(render("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"),
                    Catch::Contains("max_output_bytes"));
  CHECK_THROWS_WITH(render("{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxxxxxxxx{% endfor %}{% endfor %}"),
                    Catch::Contains("max_output_bytes"));
  CHECK_THROWS_WITH(render("{{ 'x' * 10000000000 }}"), Catch::Contains("max_output_bytes"));
  CHECK_THROWS_WITH(render("{{ [1, 2] * 100000000 }}"), Catch::Contains("max_output_bytes"));
  RenderLimits small;
  small.max_output_bytes = 10;
  CHECK(render("0123456789", small) == "0123456789");
  CHECK_THROWS_WITH(render("0123456789x", small), Catch::Contains("max_output_bytes=10"));
}

TEST_CASE("evaluation step cap", "[chat_template][limits]") {
  // 10^10 iterations with no output.
  CHECK_THROWS_WITH(render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
                    Catch::Contains("max_steps"));
  RenderLimits small;
  small.max_steps = 1000;
  CHECK_THROWS_WITH(render("{% for i in range(100000) %}{% endfor %}", small), Catch::Contains("max_steps=1000"));
}

TEST_CASE("recursion depth cap", "[chat_template][limits]") {
  CHECK_THROWS_WITH(render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), Catch::Contains("max_depth"));
  CHECK_THROWS_WITH(render("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}"),
                    Catch::Contains("max_depth"));
  CHECK_THROWS_WITH(render("{{ " + std::string(100000, '[') + std::string(100000, ']') + " }}"),
                    Catch::Contains("max_depth"));
  CHECK_THROWS_AS(render("{{ x" + std::string(100000, '|') + " }}"), iris::Error);  // syntax error, no crash
  std::string nested_ifs;
  for (int k = 0; k < 5000; ++k) nested_ifs += "{% if true %}";
  CHECK_THROWS_WITH(render(nested_ifs), Catch::Contains("max_depth"));
  std::string chain = "{{ 1";
  for (int k = 0; k < 100000; ++k) chain += " + 1";
  CHECK_THROWS_WITH(render(chain + " }}"), Catch::Contains("max_depth"));
  std::string nots = "{{ " + std::string(0, ' ');
  for (int k = 0; k < 100000; ++k) nots += "not ";
  CHECK_THROWS_WITH(render(nots + "1 }}"), Catch::Contains("max_depth"));
  // Realistic depth still works.
  std::string ok = "{{ " + std::string(50, '(') + "1" + std::string(50, ')') + " }}";
  CHECK(render(ok) == "1");
}

TEST_CASE("caps apply through ChatTemplate", "[chat_template][limits]") {
  auto t = iris::ChatTemplate::from_string("{% for m in messages %}{% for i in range(100000) %}{{ m.content }}{% endfor %}{% endfor %}",
                                           nlohmann::json::object());
  RenderLimits limits;
  limits.max_output_bytes = 1 << 16;
  t->set_limits(limits);
  auto msgs = nlohmann::json::parse(R"([{"role": "user", "content": "hello"}])");
  CHECK_THROWS_WITH(t->render(msgs, true), Catch::Contains("max_output_bytes"));
}
