// Deterministic fuzzing of the chat-template engine: random bytes, token soup, real templates
// with random edits and splices, generated deep nesting and huge loops. Every input must end
// in rendered text or an iris::Error; any other exception, a crash, a sanitizer report or a
// hang (ctest timeout) is a failure. Fixed seed and iteration count, so a failure reproduces.
// Usage: chat_template_fuzz [ITERATIONS] [SEED]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/chat_template/chat_template.h"
#include "engine/core/check.h"

namespace {

const char* kTokens[] = {
    "{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "{{-", "-}}", "{%+", "+%}", " ", "\n", "(", ")",
    "[", "]", "{", "}", ",", ":", ".", "|", "~", "+", "-", "*", "**", "/", "//", "%", "==", "!=", "<",
    ">=", "=", "'", "\"", "\\", "for ", " in ", "endfor", "if ", "elif ", "else", "endif", "set ",
    "endset", "macro ", "endmacro", "call ", "endcall", "filter ", "endfilter", "raw", "endraw",
    "generation", "endgeneration", "break", "continue", "with ", "endwith", "not ", " and ", " or ",
    " is ", "defined", "none", "true", "loop", "loop.index", "messages", "message", "m", "ns",
    "namespace(a=1)", "range(99999)", "range(-5, 5)", "tojson", "trim", "length", "join", "map",
    "selectattr", "items()", "[::-1]", "[1:]", "caller()", "raise_exception('x')", "strftime_now('%d')",
    "1e308", "9223372036854775807", "-9223372036854775808", "0.0", "'\\u00e9'", "'\\x'", "é", "\xff",
    "\xc3", "\xf0\x9f\x9a\x80", "\0"};

const char* kSnippets[] = {
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}",
    "{% set ns = namespace(x=0) %}{% for i in range(10) %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}",
    "{% macro f(a, b=1) %}{{ a ~ b }}{% endmacro %}{{ f(1) }}{% call f(2) %}{{ caller() }}{% endcall %}",
    "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(', ') }}",
    "{{ {'a': [1, 2.5, none, true, 'x']}|tojson(indent=2) }}",
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content']|trim }}{% endif %}",
    "{% filter upper %}{{ messages|length }}{% endfilter %}{% raw %}{{ x }}{% endraw %}",
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 400)) {
    if (c >= 0x20 && c < 0x7f) out += static_cast<char>(c);
    else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

class Fuzzer {
 public:
  explicit Fuzzer(uint64_t seed) : rng_(seed) {
    for (const char* s : kSnippets) corpus_.push_back(s);
    std::string data = slurp(std::string(IRIS_CHAT_TEMPLATE_DATA_DIR) + "/extra_templates.json");
    if (!data.empty()) {
      const nlohmann::json all = nlohmann::json::parse(data);
      for (auto it = all.begin(); it != all.end(); ++it) corpus_.push_back(it.value().at("template").get<std::string>());
    }
  }

  size_t pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

  std::string random_bytes() {
    std::string s(pick(200), '\0');
    for (auto& c : s) c = static_cast<char>(pick(256));
    return s;
  }

  std::string token_soup() {
    std::string s;
    size_t n = pick(60);
    for (size_t k = 0; k < n; ++k) s += kTokens[pick(std::size(kTokens))];
    return s;
  }

  std::string mutate(std::string s) {
    size_t edits = 1 + pick(8);
    for (size_t k = 0; k < edits; ++k) {
      size_t pos = s.empty() ? 0 : pick(s.size() + 1);
      switch (pick(4)) {
        case 0: s.insert(pos, kTokens[pick(std::size(kTokens))]); break;
        case 1:
          if (!s.empty() && pos < s.size()) s.erase(pos, 1 + pick(std::min<size_t>(20, s.size() - pos)));
          break;
        case 2:
          if (pos < s.size()) s[pos] = static_cast<char>(pick(256));
          break;
        default: {  // duplicate a slice (unbalances or deepens blocks)
          if (s.empty()) break;
          size_t a = pick(s.size()), len = 1 + pick(std::min<size_t>(80, s.size() - a));
          s.insert(pos, s.substr(a, len));
        }
      }
    }
    return s;
  }

  std::string splice() {
    const std::string& a = corpus_[pick(corpus_.size())];
    const std::string& b = corpus_[pick(corpus_.size())];
    return a.substr(0, pick(a.size() + 1)) + b.substr(pick(b.size() + 1));
  }

  std::string deep_nesting() {
    size_t depth = 10 + pick(3000);
    struct Pair {
      const char* open;
      const char* close;
      bool in_expression;
    };
    static const Pair kPairs[] = {
        {"{% if true %}", "{% endif %}", false}, {"{% for x in [1] %}", "{% endfor %}", false},
        {"{% filter trim %}", "{% endfilter %}", false}, {"(", ")", true}, {"[", "]", true},
        {"-", "", true}, {"not ", "", true}, {"{'k': ", "}", true}};
    const Pair& p = kPairs[pick(std::size(kPairs))];
    std::string s = p.in_expression ? "{{ " : "";
    for (size_t k = 0; k < depth; ++k) s += p.open;
    s += "1";
    for (size_t k = 0; k < depth; ++k) s += p.close;
    if (p.in_expression) s += " }}";
    return s;
  }

  std::string huge_loop() {
    static const char* kLoops[] = {
        "{% for i in range(99999) %}{% for j in range(99999) %}{{ i }}{% endfor %}{% endfor %}",
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{{ 'x' * 99999999999 }}",
        "{% for i in range(99999) %}{{ messages|tojson }}{% endfor %}",
        "{{ range(99999)|map('string')|join(',')|length }}",
    };
    return kLoops[pick(std::size(kLoops))];
  }

  std::string next(size_t iteration) {
    switch (iteration % 6) {
      case 0: return random_bytes();
      case 1: return token_soup();
      case 2: return mutate(corpus_[pick(corpus_.size())]);
      case 3: return splice();
      case 4: return pick(4) == 0 ? deep_nesting() : mutate(splice());
      default: return pick(8) == 0 ? huge_loop() : mutate(mutate(corpus_[pick(corpus_.size())]));
    }
  }

 private:
  std::mt19937_64 rng_;
  std::vector<std::string> corpus_;
};

}  // namespace

int main(int argc, char** argv) {
  const uint64_t iterations = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20000;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 20240726;
  Fuzzer fuzzer(seed);
  const nlohmann::json messages = nlohmann::json::parse(R"([
    {"role": "system", "content": "sys"}, {"role": "user", "content": "héllo <|im_end|> {{ x }}"},
    {"role": "assistant", "content": "ok", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
    {"role": "user", "content": [{"type": "text", "text": "part"}]}])");
  iris::jinja::RenderLimits limits;
  limits.max_steps = 200000;  // keeps the run short; the default caps get their own tests
  limits.max_output_bytes = 1 << 16;
  uint64_t rendered = 0, errors = 0, failures = 0;
  for (uint64_t k = 0; k < iterations; ++k) {
    std::string tmpl = fuzzer.next(k);
    try {
      auto t = iris::ChatTemplate::from_string(tmpl, {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
      t->set_limits(limits);
      t->set_clock([] { return std::time_t{0}; });
      t->render(messages, k % 2 == 0);
      ++rendered;
    } catch (const iris::Error&) {
      ++errors;
    } catch (const std::exception& e) {
      ++failures;
      std::cout << "FAIL iteration " << k << ": non-iris exception: " << e.what() << "\n  template: " << printable(tmpl) << "\n";
    }
  }
  std::cout << "chat_template fuzz: seed " << seed << ", " << iterations << " inputs: " << rendered << " rendered, "
            << errors << " iris::Error, " << failures << " other exceptions\n";
  std::cout << (iterations - failures) << " passed, " << failures << " failed\n";
  return failures == 0 ? 0 : 1;
}
