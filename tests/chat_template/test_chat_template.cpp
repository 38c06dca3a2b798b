// ChatTemplate API: template selection from tokenizer_config.json, special tokens, the
// transformers render context (tools/documents default to None), raise_exception and
// strftime_now, and the ChatMessage convenience overload.
#include <catch2/catch.hpp>

#include "engine/chat_template/chat_template.h"
#include "engine/core/check.h"

using iris::ChatTemplate;
using nlohmann::json;

TEST_CASE("chat template is picked from tokenizer_config", "[chat_template]") {
  json cfg = {{"chat_template", "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"},
              {"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}, {"lstrip", false}}},
              {"eos_token", "</s>"},
              {"unk_token", nullptr}};
  auto t = ChatTemplate::from_tokenizer_config(cfg);
  json msgs = json::array({{{"role", "user"}, {"content", "hi"}}});
  CHECK(t->render(msgs, false) == "<s>[user]hi");
  CHECK_THROWS_AS(ChatTemplate::from_tokenizer_config(cfg, "tool_use"), iris::Error);
}

TEST_CASE("named chat templates: default and by name", "[chat_template]") {
  json cfg = {{"chat_template", json::array({{{"name", "default"}, {"template", "D{{ messages|length }}"}},
                                             {{"name", "tool_use"}, {"template", "T{{ tools|length }}"}}})}};
  json msgs = json::array({{{"role", "user"}, {"content", "x"}}});
  CHECK(ChatTemplate::from_tokenizer_config(cfg)->render(msgs, false) == "D1");
  CHECK(ChatTemplate::from_tokenizer_config(cfg, "tool_use")->render(msgs, false, {{"tools", json::array({1, 2})}}) == "T2");
  CHECK_THROWS_WITH(ChatTemplate::from_tokenizer_config(cfg, "rag"), Catch::Contains("default, tool_use"));
  CHECK_THROWS_AS(ChatTemplate::from_tokenizer_config(json{{"bos_token", "<s>"}}), iris::Error);
}

TEST_CASE("render context matches transformers", "[chat_template]") {
  auto t = ChatTemplate::from_string(
      "{{ tools is none }}{{ documents is none }}{{ add_generation_prompt }}{{ eos_token }}{{ custom }}",
      {{"eos_token", "</s>"}});
  CHECK(t->render(json::array(), true, {{"custom", 7}}) == "TrueTrueTrue</s>7");
  CHECK(t->render(json::array(), false) == "TrueTrueFalse</s>");
}

TEST_CASE("raise_exception surfaces the template's message", "[chat_template]") {
  auto t = ChatTemplate::from_string("{{ raise_exception('Conversation roles must alternate') }}", json::object());
  CHECK_THROWS_WITH(t->render(json::array(), false), Catch::Contains("Conversation roles must alternate"));
}

TEST_CASE("strftime_now uses the clock", "[chat_template]") {
  auto t = ChatTemplate::from_string("{{ strftime_now('%Y-%m-%d') }}", json::object());
  t->set_clock([] { return std::time_t{1721995200}; });  // 2024-07-26 12:00 UTC
  std::string day = t->render(json::array(), false);
  CHECK((day == "2024-07-26" || day == "2024-07-27" || day == "2024-07-25"));
}

TEST_CASE("ChatMessage overload passes extra fields through", "[chat_template]") {
  auto t = ChatTemplate::from_string(
      "{% for m in messages %}{{ m.role }}:{{ m.content }}{% if m.name is defined %}({{ m.name }}){% endif %};{% endfor %}",
      json::object());
  std::vector<iris::ChatMessage> msgs = {{"system", "be brief", json::object()},
                                         {"user", "héllo", json{{"name", "bob"}}}};
  CHECK(t->render(msgs, false) == "system:be brief;user:héllo(bob);");
}

TEST_CASE("content given as a list of parts is passed through", "[chat_template]") {
  auto t = ChatTemplate::from_string(
      "{% for m in messages %}{% for p in m.content %}{{ p.type }}{% if p.text %}={{ p.text }}{% endif %} {% endfor %}{% endfor %}",
      json::object());
  json msgs = json::parse(R"([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}])");
  CHECK(t->render(msgs, false) == "image text=hi ");
}
