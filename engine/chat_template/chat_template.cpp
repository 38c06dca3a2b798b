// ChatTemplate: selects the template from tokenizer_config.json, collects the special tokens
// and supplies transformers' render context and globals.
#include "engine/chat_template/chat_template.h"

#include <regex>

#include "engine/chat_template/evaluator.h"
#include "engine/core/check.h"

namespace iris {

nlohmann::ordered_json ChatMessage::to_json() const {
  // role and content first, then the other fields in the client's order.
  nlohmann::ordered_json m = nlohmann::ordered_json::object();
  m["role"] = role;
  auto rest = [&] {
    if (extra.is_object())
      for (auto it = extra.begin(); it != extra.end(); ++it)
        if (it.key() != "role" && it.key() != "content") m[it.key()] = it.value();
  };
  if (null_content) {
    m["content"] = nullptr;
    rest();
    return m;
  }
  if (!as_parts) {
    m["content"] = content;
    rest();
    return m;
  }
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const ChatContentPart& p : parts) {
    if (p.kind == ChatContentPart::Kind::kText) {
      list.push_back({{"type", "text"}, {"text", p.text}});
    } else if (p.kind == ChatContentPart::Kind::kVideo) {
      list.push_back({{"type", "video"}});
    } else {
      list.push_back({{"type", "image"}});
    }
  }
  m["content"] = std::move(list);
  rest();
  return m;
}

bool ChatTemplate::iterates_content() const {
  // `for x in message['content']`, `for x in m.content | selectattr(...)`, ... : a for loop
  // whose iterable is some variable's content field.
  static const std::regex loop(
      R"(for\s+\w+\s+in\s+\w+\s*(\[\s*['"]content['"]\s*\]|\.content\b))");
  return std::regex_search(source_, loop);
}

ChatTemplate::ChatTemplate(std::string source, nlohmann::json special_tokens)
    : source_(std::move(source)),
      template_(jinja::Template::parse(source_)),
      special_tokens_(std::move(special_tokens)) {}

std::unique_ptr<ChatTemplate> ChatTemplate::from_string(const std::string& tmpl, nlohmann::json special_tokens) {
  IRIS_CHECK(special_tokens.is_object() || special_tokens.is_null()) << "special_tokens must be a JSON object";
  if (special_tokens.is_null()) special_tokens = nlohmann::json::object();
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(tmpl, std::move(special_tokens)));
}

std::unique_ptr<ChatTemplate> ChatTemplate::from_tokenizer_config(const nlohmann::json& config,
                                                                  const std::string& name) {
  IRIS_CHECK(config.is_object()) << "tokenizer_config must be a JSON object";
  auto it = config.find("chat_template");
  IRIS_CHECK(it != config.end() && !it->is_null()) << "tokenizer_config has no chat_template";
  std::string source;
  const std::string wanted = name.empty() ? "default" : name;
  if (it->is_string()) {
    IRIS_CHECK(name.empty() || name == "default") << "chat template '" << name << "' not found (only a default one exists)";
    source = it->get<std::string>();
  } else {
    IRIS_CHECK(it->is_array()) << "chat_template must be a string or a list of {name, template}";
    std::string names;
    for (const auto& entry : *it) {
      IRIS_CHECK(entry.is_object() && entry.contains("name") && entry.contains("template"))
          << "chat_template list entries need 'name' and 'template'";
      std::string n = entry["name"].get<std::string>();
      names += (names.empty() ? "" : ", ") + n;
      if (n == wanted) source = entry["template"].get<std::string>();
    }
    IRIS_CHECK(!source.empty()) << "chat template '" << wanted << "' not found; available: " << names;
  }
  // Special tokens: "<x>_token" keys holding a string or an AddedToken {"content": ...}, and
  // additional_special_tokens, as transformers' special_tokens_map exposes them.
  nlohmann::json tokens = nlohmann::json::object();
  for (auto t = config.begin(); t != config.end(); ++t) {
    const std::string& key = t.key();
    bool is_token = key.size() > 6 && key.compare(key.size() - 6, 6, "_token") == 0;
    if (is_token && t->is_string()) tokens[key] = *t;
    else if (is_token && t->is_object() && t->contains("content") && (*t)["content"].is_string())
      tokens[key] = (*t)["content"];
    else if (key == "additional_special_tokens" && t->is_array()) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& x : *t) {
        if (x.is_string()) list.push_back(x);
        else if (x.is_object() && x.contains("content")) list.push_back(x["content"]);
      }
      tokens[key] = list;
    }
  }
  return from_string(source, std::move(tokens));
}

namespace {
template <typename Json>
jinja::Variables context_variables(const Json& extra_context) {
  jinja::Variables vars;
  if (extra_context.is_object())
    for (auto it = extra_context.begin(); it != extra_context.end(); ++it)
      vars.emplace_back(it.key(), jinja::from_json(it.value()));
  else
    IRIS_CHECK(extra_context.is_null()) << "extra_context must be a JSON object";
  return vars;
}
}  // namespace

std::string ChatTemplate::render(const nlohmann::json& messages, bool add_generation_prompt,
                                 const nlohmann::json& extra_context) const {
  IRIS_CHECK(messages.is_array()) << "messages must be a JSON array";
  return render_values(jinja::from_json(messages), add_generation_prompt, context_variables(extra_context));
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                 const nlohmann::ordered_json& extra_context) const {
  IRIS_CHECK(messages.is_array()) << "messages must be a JSON array";
  return render_values(jinja::from_json(messages), add_generation_prompt, context_variables(extra_context));
}

std::string ChatTemplate::render_values(jinja::Value messages, bool add_generation_prompt,
                                        jinja::Variables extra) const {
  using jinja::Value;
  jinja::Variables vars;
  for (auto it = special_tokens_.begin(); it != special_tokens_.end(); ++it)
    vars.emplace_back(it.key(), jinja::from_json(it.value()));
  vars.emplace_back("raise_exception", Value::function("raise_exception", [](jinja::Evaluator&, jinja::CallArgs& a) -> Value {
    std::string msg = a.pos.empty() ? std::string() : a.pos[0].str();
    fail("chat template raised an exception: ", msg);
  }));
  auto clock = clock_;
  vars.emplace_back("strftime_now", Value::function("strftime_now", [clock](jinja::Evaluator&, jinja::CallArgs& a) {
    jinja::ArgBinder b(a, "strftime_now", {"format"});
    IRIS_CHECK(b.has(0) && b.get(0)->is_string()) << "strftime_now needs a format string";
    std::time_t now = clock ? clock() : std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[512];
    size_t n = std::strftime(buf, sizeof(buf), b.get(0)->s.c_str(), &tm);
    return Value::string(std::string(buf, n));
  }));
  vars.emplace_back("messages", std::move(messages));
  vars.emplace_back("add_generation_prompt", Value::boolean(add_generation_prompt));
  vars.emplace_back("tools", Value::none());
  vars.emplace_back("documents", Value::none());
  for (auto& v : extra) vars.push_back(std::move(v));
  return template_.render(vars, limits_);
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 const nlohmann::ordered_json& extra_context) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& m : messages) list.push_back(m.to_json());
  return render(list, add_generation_prompt, extra_context);
}

}  // namespace iris
