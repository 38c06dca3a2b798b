// Tool-call syntaxes: whole-output parsing, streaming with split markers, malformed fallbacks,
// reasoning, and the tool_choice constraint.
#include <catch2/catch.hpp>

#include <random>

#include "engine/tool_calls/tool_calls.h"
#include "tests/grammar/grammar_test_util.h"

using namespace iris::tools;
using nlohmann::json;

namespace {

struct Streamed {
  std::string content;
  std::vector<ToolCall> calls;
  int deltas_with_args = 0;
};

// Feeds `text` in pieces of `step` bytes and rebuilds the calls from the deltas, checking the
// delta rules on the way: a call starts with id + name, later pieces carry neither.
Streamed stream(ToolSyntax syntax, const std::string& text, size_t step, std::vector<std::string> drop = {}) {
  ToolCallStreamParser p(syntax, std::move(drop));
  Streamed s;
  auto take = [&](const StreamDelta& d) {
    s.content += d.content;
    for (const ToolCallDelta& c : d.calls) {
      if (c.index == static_cast<int>(s.calls.size())) {
        REQUIRE_FALSE(c.id.empty());
        REQUIRE_FALSE(c.name.empty());
        s.calls.push_back(ToolCall{c.id, c.name, ""});
      } else {
        REQUIRE(c.index < static_cast<int>(s.calls.size()));
        REQUIRE(c.id.empty());
        REQUIRE(c.name.empty());
      }
      if (!c.arguments.empty()) ++s.deltas_with_args;
      s.calls[c.index].arguments += c.arguments;
    }
  };
  for (size_t i = 0; i < text.size(); i += step) take(p.feed(std::string_view(text).substr(i, step)));
  take(p.finish());
  return s;
}

void check_same_streamed(ToolSyntax syntax, const std::string& text, std::vector<std::string> drop = {}) {
  const ParsedOutput whole = parse_tool_calls(syntax, text, drop);
  for (size_t step : {1, 2, 3, 7, 1000}) {
    INFO("step " << step << " text " << text);
    const Streamed s = stream(syntax, text, step, drop);
    CHECK(s.content == whole.content);
    REQUIRE(s.calls.size() == whole.calls.size());
    for (size_t i = 0; i < s.calls.size(); ++i) {
      CHECK(s.calls[i].name == whole.calls[i].name);
      CHECK(s.calls[i].arguments == whole.calls[i].arguments);
    }
  }
}

}  // namespace

TEST_CASE("hermes: calls between text, several blocks, streamed the same") {
  const std::string text =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", "
      "\"days\": [1, 2]}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n"
      "</tool_call>";
  const ParsedOutput p = parse_tool_calls(ToolSyntax::kHermes, text);
  REQUIRE(p.calls.size() == 2);
  CHECK(p.content == "Let me check.\n\n");
  CHECK(p.calls[0].name == "get_weather");
  CHECK(json::parse(p.calls[0].arguments) == json{{"city", "Paris"}, {"days", {1, 2}}});
  CHECK(p.calls[1].name == "get_time");
  CHECK(p.calls[1].arguments == "{}");
  CHECK(p.calls[0].id.rfind("call_", 0) == 0);
  CHECK(p.calls[0].id.size() == 29);
  CHECK(p.calls[0].id != p.calls[1].id);
  check_same_streamed(ToolSyntax::kHermes, text);
  // Arguments arrive in several pieces when streamed byte by byte.
  CHECK(stream(ToolSyntax::kHermes, text, 1).deltas_with_args > 10);
}

TEST_CASE("hermes: a split marker is held back, a lone '<' is content") {
  ToolCallStreamParser p(ToolSyntax::kHermes);
  StreamDelta d = p.feed("a <tool_");
  CHECK(d.content == "a ");
  d = p.feed("call>\n{\"name\": \"f\", \"argu");
  CHECK(d.content.empty());
  REQUIRE(d.calls.size() == 1);
  CHECK(d.calls[0].name == "f");
  d = p.feed("ments\": {\"x\": 1");
  REQUIRE(d.calls.size() == 1);
  CHECK(d.calls[0].arguments == "{\"x\": 1");
  d = p.feed("}}\n</tool");
  REQUIRE(d.calls.size() == 1);
  CHECK(d.calls[0].arguments == "}");
  d = p.feed("_call> x < y");
  CHECK(d.content == " x < y");
  CHECK(p.finish().empty());
  CHECK(p.num_calls() == 1);
  const ParsedOutput q = parse_tool_calls(ToolSyntax::kHermes, "1 < 2 and <tool_ca");
  CHECK(q.calls.empty());
  CHECK(q.content == "1 < 2 and <tool_ca");
}

TEST_CASE("hermes: malformed blocks are content") {
  for (const std::string& text : std::vector<std::string>{
        "<tool_call>\n{\"arguments\": {}}\n</tool_call>",            // no name
        "<tool_call>\nnot json\n</tool_call> after",                   // not an object
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": }}\n</tool_call>",  // bad JSON
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1",   // cut
        "<tool_call>\n{\"name\": \"f\", \"arguments\": [1]}\n</tool_call>"}) {  // not an object
    INFO(text);
    const ParsedOutput p = parse_tool_calls(ToolSyntax::kHermes, text);
    CHECK(p.calls.empty());
    CHECK(p.content == text);
  }
  // Nothing of a nameless block was streamed as a call, so it streams as content.
  const Streamed s = stream(ToolSyntax::kHermes, "x<tool_call>\n{\"arguments\": {}}\n</tool_call>y", 1);
  CHECK(s.calls.empty());
  CHECK(s.content == "x<tool_call>\n{\"arguments\": {}}\n</tool_call>y");
}

TEST_CASE("llama3_json: a call opens the output, optional python tag, ';' between calls") {
  const std::string one = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}";
  ParsedOutput p = parse_tool_calls(ToolSyntax::kLlama3Json, one);
  REQUIRE(p.calls.size() == 1);
  CHECK(p.content.empty());
  CHECK(p.calls[0].arguments == "{\"city\": \"Oslo\"}");
  check_same_streamed(ToolSyntax::kLlama3Json, one);
  const std::string two = "<|python_tag|>" + one + "; {\"name\": \"g\", \"parameters\": {}}";
  p = parse_tool_calls(ToolSyntax::kLlama3Json, two);
  REQUIRE(p.calls.size() == 2);
  CHECK(p.calls[1].name == "g");
  check_same_streamed(ToolSyntax::kLlama3Json, two);
  // JSON that is not a call, text first, or a call followed by text: content.
  for (const std::string& text : {std::string("{\"answer\": 42}"), "Sure: " + one, one + " and more",
                                 std::string("plain words"), std::string("<|python")}) {
    INFO(text);
    p = parse_tool_calls(ToolSyntax::kLlama3Json, text);
    CHECK(p.calls.empty());
    CHECK(p.content == text);
  }
  CHECK(stream(ToolSyntax::kLlama3Json, "plain words", 1).content == "plain words");
  CHECK(stream(ToolSyntax::kLlama3Json, "{\"answer\": 42}", 1).content == "{\"answer\": 42}");
}

TEST_CASE("mistral: text before the marker is content, an array of calls, EOS text dropped") {
  const std::string text =
      "Sure.[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"q\": \"x]\"}}, {\"name\": \"b\", "
      "\"arguments\": {\"n\": -1.5e3}}]</s>";
  const ParsedOutput p = parse_tool_calls(ToolSyntax::kMistral, text, {"</s>"});
  REQUIRE(p.calls.size() == 2);
  CHECK(p.content == "Sure.");
  CHECK(p.calls[0].arguments == "{\"q\": \"x]\"}");
  CHECK(p.calls[1].name == "b");
  CHECK(p.calls[0].id.size() == 9);
  for (char c : p.calls[0].id) CHECK(std::isalnum(static_cast<unsigned char>(c)));
  check_same_streamed(ToolSyntax::kMistral, text, {"</s>"});
  // v0.3 writes a space after the marker; an unclosed array or a bare word is content.
  CHECK(parse_tool_calls(ToolSyntax::kMistral, "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {}}]").calls.size() == 1);
  const std::string cut = "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}";
  CHECK(parse_tool_calls(ToolSyntax::kMistral, cut).calls.empty());
  CHECK(parse_tool_calls(ToolSyntax::kMistral, cut).content == cut);
  CHECK(parse_tool_calls(ToolSyntax::kMistral, "[TOOL_CALLS] nope").content == "[TOOL_CALLS] nope");
  // The EOS text split across deltas is held back and removed.
  ToolCallStreamParser s(ToolSyntax::kMistral, {"</s>"});
  std::string content = s.feed("hi </").content;
  content += s.feed("s>").content;
  content += s.finish().content;
  CHECK(content == "hi ");
}

TEST_CASE("no syntax: everything is content") {
  const ParsedOutput p = parse_tool_calls(ToolSyntax::kNone, "<tool_call>{\"name\": \"f\"}</tool_call>");
  CHECK(p.calls.empty());
  CHECK(p.content == "<tool_call>{\"name\": \"f\"}</tool_call>");
}

TEST_CASE("detection from template, tokens, model_type, and syntax names") {
  auto none = [](const std::string&) { return false; };
  CHECK(detect_tool_syntax("{{ '<tool_call>' }}", "", none) == ToolSyntax::kHermes);
  CHECK(detect_tool_syntax("[TOOL_CALLS] [", "", none) == ToolSyntax::kMistral);
  CHECK(detect_tool_syntax("<|start_header_id|> {{ tools }} {\"name\": function name, \"parameters\": ...}", "", none) ==
        ToolSyntax::kLlama3Json);
  CHECK(detect_tool_syntax("{{ x }}", "", [](const std::string& t) { return t == "[TOOL_CALLS]"; }) ==
        ToolSyntax::kMistral);
  CHECK(detect_tool_syntax("{{ x }}", "qwen2", none) == ToolSyntax::kHermes);
  CHECK(detect_tool_syntax("{{ x }}", "llama", none) == ToolSyntax::kNone);
  for (auto s : {ToolSyntax::kNone, ToolSyntax::kLlama3Json, ToolSyntax::kHermes, ToolSyntax::kMistral})
    CHECK(tool_syntax_from_name(tool_syntax_name(s)) == s);
  CHECK_FALSE(tool_syntax_from_name("pythonic"));
}

TEST_CASE("reasoning: qwen3 and deepseek_r1, whole and streamed") {
  ReasoningSplit r = split_reasoning(ReasoningSyntax::kQwen3, "<think>\nstep 1\n</think>\n\nThe answer");
  CHECK(r.has_reasoning);
  CHECK(r.reasoning == "\nstep 1\n");
  CHECK(r.content == "The answer");
  r = split_reasoning(ReasoningSyntax::kQwen3, "No thinking here </think>");
  CHECK_FALSE(r.has_reasoning);
  CHECK(r.content == "No thinking here </think>");
  r = split_reasoning(ReasoningSyntax::kQwen3, "<think>cut off");
  CHECK(r.reasoning == "cut off");
  CHECK(r.content.empty());
  r = split_reasoning(ReasoningSyntax::kDeepSeekR1, "thought</think>answer");
  CHECK(r.reasoning == "thought");
  CHECK(r.content == "answer");
  r = split_reasoning(ReasoningSyntax::kDeepSeekR1, "all thought");
  CHECK(r.reasoning == "all thought");
  const std::string text = "<think>a < b </thi and more</think>\n\nfinal <think> text";
  for (auto syntax : {ReasoningSyntax::kQwen3, ReasoningSyntax::kDeepSeekR1}) {
    const ReasoningSplit whole = split_reasoning(syntax, text);
    CHECK(whole.reasoning == "a < b </thi and more");
    CHECK(whole.content == "final <think> text");
    ReasoningStreamParser p(syntax);
    std::string reasoning, content;
    for (char c : text) {
      auto d = p.feed(std::string(1, c));
      reasoning += d.reasoning;
      content += d.content;
    }
    auto d = p.finish();
    CHECK(reasoning + d.reasoning == whole.reasoning);
    CHECK(content + d.content == whole.content);
  }
}

TEST_CASE("tool_choice constraint: random walks parse back into valid calls") {
  const std::vector<ToolSpec> tools = {
      {"get_weather", nlohmann::ordered_json::parse(
                          R"({"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                              "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]})")},
      {"add", nlohmann::ordered_json::parse(
                  R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                      "required": ["a", "b"], "additionalProperties": false})")},
  };
  auto vocab = iris::test::byte_vocabulary();
  for (auto syntax : {ToolSyntax::kLlama3Json, ToolSyntax::kHermes, ToolSyntax::kMistral}) {
    for (bool special : {false, true}) {
      if (special && syntax == ToolSyntax::kLlama3Json) continue;
      for (const std::string only : {"", "add"}) {
        const ToolConstraint tc = tool_call_constraint(syntax, tools, only, 3, special);
        CHECK(tc.marker_in_prompt == special);
        auto compiled = iris::grammar::compile_constraint(tc.constraint, vocab);
        int complete = 0;
        for (uint32_t seed = 0; seed < 20; ++seed) {
          const iris::test::Walk w = iris::test::random_walk(compiled, seed, 400);
          REQUIRE_FALSE(w.dead_end);
          if (!w.complete) continue;
          ++complete;
          const std::string text = (tc.marker_in_prompt ? std::string(call_marker(syntax)) : "") + w.text;
          INFO(tool_syntax_name(syntax) << " " << text);
          const ParsedOutput p = parse_tool_calls(syntax, text);
          REQUIRE_FALSE(p.calls.empty());
          CHECK(p.content.find_first_not_of(" \n") == std::string::npos);  // newlines between blocks
          if (!only.empty()) CHECK(p.calls.size() == 1);
          for (const ToolCall& c : p.calls) {
            const json args = json::parse(c.arguments);
            if (c.name == "add") {
              CHECK(args.size() == 2);
              CHECK(args["a"].is_number_integer());
            } else {
              REQUIRE(c.name == "get_weather");
              CHECK(only.empty());
              const std::string city = args["city"].get<std::string>();
              size_t chars = 0;  // code points, as JSON Schema counts maxLength
              for (char ch : city) chars += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
              CHECK(chars <= 8);
            }
          }
        }
        CHECK(complete >= 10);
      }
    }
  }
  // The grammar refuses text that is not a call of a listed function.
  auto hermes = iris::grammar::compile_constraint(tool_call_constraint(ToolSyntax::kHermes, tools, "", 2, false).constraint, vocab);
  CHECK(iris::test::accepts(hermes, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>"));
  CHECK_FALSE(iris::test::accepts(hermes, "<tool_call>\n{\"name\": \"sub\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>"));
  CHECK_FALSE(iris::test::accepts(hermes, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n</tool_call>"));
}
