// Text subcommands: `iris tokenize`, `iris detokenize` (JSON lines on stdin/stdout) and
// `iris render-chat`. The model directory may hold only tokenizer.json and
// tokenizer_config.json.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/chat_template/chat_template.h"
#include "engine/core/check.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/cli.h"
#include "server/engine_options.h"

namespace iris::cli {
namespace {

struct TextOptions {
  std::string model;
  bool jsonl = false;
  std::string messages;
  bool add_generation_prompt = false;
  std::string template_name;
  bool no_clean_up = false;
};

// Calls fn(json, line_number) for every non-empty JSON line of stdin.
template <typename Fn>
void for_each_json_line(Fn fn) {
  std::string line;
  int64_t n = 0;
  while (std::getline(std::cin, line)) {
    ++n;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("stdin line ", n, ": not JSON: ", e.what());
    }
    fn(j, n);
  }
}

int run_tokenize(const TextOptions& o) {
  if (!o.jsonl) fail("tokenize: only --jsonl input is supported");
  auto tok = Tokenizer::from_dir(o.model);
  for_each_json_line([&](const nlohmann::json& j, int64_t n) {
    if (!j.is_string()) fail("stdin line ", n, ": expected a JSON string");
    std::cout << nlohmann::json{{"ids", tok->encode(j.get<std::string>(), true)}}.dump() << "\n";
  });
  return 0;
}

int run_detokenize(const TextOptions& o) {
  if (!o.jsonl) fail("detokenize: only --jsonl input is supported");
  auto tok = Tokenizer::from_dir(o.model);
  for_each_json_line([&](const nlohmann::json& j, int64_t n) {
    if (!j.is_array()) fail("stdin line ", n, ": expected a JSON array of ids");
    std::vector<int32_t> ids;
    for (const auto& v : j) {
      if (!v.is_number_integer()) fail("stdin line ", n, ": ids must be integers");
      ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    // As transformers' tokenizer.decode: clean_up_tokenization_spaces from the config.
    std::cout << nlohmann::json(o.no_clean_up ? tok->decode(ids, false) : tok->decode_like_transformers(ids, false))
                     .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
  });
  return 0;
}

int run_render_chat(const TextOptions& o) {
  std::ifstream in(o.messages);
  if (!in) fail(o.messages, ": cannot open");
  nlohmann::ordered_json messages;
  try {
    messages = nlohmann::ordered_json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(o.messages, ": not valid JSON: ", e.what());
  }
  if (!messages.is_array()) fail(o.messages, ": expected a JSON array of messages");
  auto tmpl = ChatTemplate::from_tokenizer_config(read_tokenizer_config(o.model), o.template_name);
  // The ordered overload: key order reaches `tojson` as the file has it (transformers keeps it).
  std::cout << tmpl->render(messages, o.add_generation_prompt, nlohmann::ordered_json::object());
  return 0;
}

}  // namespace

std::vector<Command> add_text_commands(CLI::App& app) {
  auto opts = std::make_shared<TextOptions>();
  std::vector<Command> out;
  CLI::App* tk = app.add_subcommand("tokenize", "Token ids of text, as Hugging Face's encode()");
  tk->add_option("--model", opts->model, "directory with tokenizer.json")->required();
  tk->add_flag("--jsonl", opts->jsonl, "stdin: one JSON string per line; stdout: {\"ids\": [...]}");
  out.push_back({tk, [opts] { return run_tokenize(*opts); }});
  CLI::App* dt = app.add_subcommand("detokenize", "Text of token ids (special tokens kept)");
  dt->add_option("--model", opts->model, "directory with tokenizer.json")->required();
  dt->add_flag("--jsonl", opts->jsonl, "stdin: one JSON array of ids per line; stdout: a JSON string");
  dt->add_flag("--no-clean-up-tokenization-spaces", opts->no_clean_up,
               "keep the decoder's text as is (default: apply tokenizer_config.json's "
               "clean_up_tokenization_spaces, as transformers' decode does)");
  out.push_back({dt, [opts] { return run_detokenize(*opts); }});
  CLI::App* rc = app.add_subcommand("render-chat", "Render the model's chat template");
  rc->add_option("--model", opts->model, "directory with tokenizer_config.json")->required();
  rc->add_option("--messages", opts->messages, "JSON file: an array of {role, content}")->required();
  rc->add_flag("--add-generation-prompt", opts->add_generation_prompt);
  rc->add_option("--template", opts->template_name, "named template (default: \"default\")");
  out.push_back({rc, [opts] { return run_render_chat(*opts); }});
  return out;
}

}  // namespace iris::cli
