// Byte-for-byte comparison of ChatTemplate against a reference renderer's output. The input
// is written by reference/render_reference.js (@huggingface/jinja) or
// reference/render_reference_jinja2.py (Python jinja2, as transformers runs it): the
// tokenizer_config of each template and, per case, the messages, add_generation_prompt,
// extra context and the expected text or the fact that rendering raised.
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "engine/chat_template/chat_template.h"
#include "engine/core/check.h"

namespace {

std::string escape_for_log(const std::string& s, size_t from, size_t len) {
  std::string out;
  for (size_t k = from; k < s.size() && k < from + len; ++k) {
    char c = s[k];
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else out += c;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: chat_template_compare_reference EXPECTED.json\n";
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::cerr << "cannot read " << argv[1]
              << " (it is written by the fixture test; if that failed, run "
                 "`npm ci --prefix tests/chat_template/reference`)\n";
    return 1;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::ordered_json data = nlohmann::ordered_json::parse(ss.str());

  std::map<std::string, std::unique_ptr<iris::ChatTemplate>> templates;
  int passed = 0, failed = 0;
  for (const auto& c : data["cases"]) {
    const std::string tname = c["template"].get<std::string>();
    const std::string label = tname + " x " + c["conversation"].get<std::string>() +
                              (c["add_generation_prompt"].get<bool>() ? " +gen" : "");
    std::string got, error;
    bool threw = false;
    try {
      auto& t = templates[tname];
      if (!t) {
        // nlohmann::json for the config: only the template string and tokens are read.
        t = iris::ChatTemplate::from_tokenizer_config(nlohmann::json::parse(data["templates"][tname].dump()));
        t->set_clock([] { return std::time_t{1721952000}; });  // 2024-07-26
      }
      got = t->render(c["messages"], c["add_generation_prompt"].get<bool>(), c["extra_context"]);
    } catch (const iris::Error& e) {
      threw = true;
      error = e.what();
    }
    if (c.contains("error")) {
      if (threw) {
        ++passed;
      } else {
        ++failed;
        std::cout << "FAIL " << label << ": reference raised (" << c["error"].get<std::string>()
                  << ") but iris rendered " << got.size() << " bytes\n";
      }
      continue;
    }
    const std::string expected = c["expected"].get<std::string>();
    if (threw) {
      ++failed;
      std::cout << "FAIL " << label << ": iris raised: " << error << "\n";
    } else if (got != expected) {
      ++failed;
      size_t k = 0;
      while (k < got.size() && k < expected.size() && got[k] == expected[k]) ++k;
      size_t from = k > 40 ? k - 40 : 0;
      std::cout << "FAIL " << label << ": first difference at byte " << k << "\n  expected: ..."
                << escape_for_log(expected, from, 120) << "\n  got:      ..." << escape_for_log(got, from, 120) << "\n";
    } else {
      ++passed;
    }
  }
  std::cout << "chat_template reference (" << argv[1] << "): " << templates.size() << " templates\n";
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 && passed > 0 ? 0 : 1;
}
