// Unit tests of the constraint kinds on a one-token-per-byte vocabulary, each against an
// independent check (std::regex, nlohmann::json, arithmetic), plus the token-level rules:
// tokens spanning several grammar elements, partial UTF-8 tokens, special tokens and EOS.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <regex>

#include "engine/grammar/utf8.h"

#include "engine/core/check.h"
#include "engine/grammar/constraint.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/grammar/grammar_test_util.h"
#include "tests/tokenizer/tiny_tokenizers.h"

using namespace iris;
using namespace iris::grammar;
using namespace iris::test;
using json = nlohmann::ordered_json;  // schema properties keep their order

namespace {

std::wstring wide(const std::string& s) {
  std::wstring w;
  size_t i = 0;
  uint32_t cp = 0;
  while (i < s.size()) {
    REQUIRE(next_utf8(s, i, cp));
    w.push_back(static_cast<wchar_t>(cp));
  }
  return w;
}

std::shared_ptr<const CompiledConstraint> compile(ConstraintKind kind, const std::string& text) {
  return compile_constraint({kind, text}, byte_vocabulary());
}
std::shared_ptr<const CompiledConstraint> schema(const json& s) {
  return compile(ConstraintKind::kJsonSchema, s.dump());
}
std::string error_of(ConstraintKind kind, const std::string& text) {
  try {
    compile(kind, text);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("regex: accepts exactly what std::regex fully matches") {
  struct Case {
    const char* pattern;
    std::vector<std::string> yes, no;
  };
  const std::vector<Case> cases = {
      {"abc", {"abc"}, {"", "ab", "abcd"}},
      {"a|bc|", {"a", "bc", ""}, {"b", "abc"}},
      {"[a-c]+x?", {"a", "cabx", "bbb"}, {"", "x", "abxx"}},
      {"[^0-9]{2,3}", {"ab", "a b"}, {"a", "a1", "abcd"}},
      {"\\d{3}-\\d{4}", {"555-1234"}, {"5551234", "55-1234"}},
      {"(ab|cd)*e", {"e", "abe", "abcdabe"}, {"ab", "ace"}},
      {"\\w+@\\w+\\.com", {"a_1@b.com"}, {"@b.com", "a@b.org"}},
      {"x{0}y{2,}", {"yy", "yyyy"}, {"y", "xyy"}},
      {"\\.\\*\\(\\)", {".*()"}, {"a*()"}},
      {"(?:a(b)?)+", {"a", "abab", "aab"}, {"b", ""}},
      {"^[A-Z][a-z]*$", {"Hello", "A"}, {"hello", ""}},
      {"(a*)*b", {"b", "aab"}, {"a"}},
      {"a.c", {"abc", "a c", "a\xC3\xA9" "c"}, {"a\nc", "ac"}},
  };
  for (const Case& c : cases) {
    INFO(c.pattern);
    auto cc = compile(ConstraintKind::kRegex, c.pattern);
    const std::wregex re(wide(c.pattern));
    for (const auto& s : c.yes) {
      INFO(s);
      CHECK(accepts(cc, s));
    }
    for (const auto& s : c.no) {
      INFO(s);
      CHECK_FALSE(accepts(cc, s));
      CHECK_FALSE(std::regex_match(wide(s), re));
    }
    // Random outputs are full matches for std::wregex (code points, not bytes).
    for (uint32_t seed = 0; seed < 20; ++seed) {
        const Walk w = random_walk(cc, seed, 64);
        REQUIRE_FALSE(w.dead_end);
        if (w.complete) {
          INFO(w.text);
          CHECK(std::regex_match(wide(w.text), re));
        }
      }
  }
}

TEST_CASE("regex: unsupported features are refused by name") {
  CHECK_THAT(error_of(ConstraintKind::kRegex, "(a)\\1"), Catch::Contains("backreferences"));
  CHECK_THAT(error_of(ConstraintKind::kRegex, "a(?=b)"), Catch::Contains("lookahead"));
  CHECK_THAT(error_of(ConstraintKind::kRegex, "(?<!a)b"), Catch::Contains("lookbehind"));
  CHECK_THAT(error_of(ConstraintKind::kRegex, "\\bword"), Catch::Contains("word boundaries"));
  CHECK_THAT(error_of(ConstraintKind::kRegex, "(?i)abc"), Catch::Contains("inline flags"));
  CHECK_THAT(error_of(ConstraintKind::kRegex, "a++"), Catch::Contains("possessive"));
  CHECK_THAT(error_of(ConstraintKind::kRegex, "(ab"), Catch::Contains("missing ')'"));
  CHECK_THAT(error_of(ConstraintKind::kRegex, "[a-"), Catch::Contains("missing ']'"));
  CHECK_THAT(error_of(ConstraintKind::kRegex, "\\p{L}"), Catch::Contains("Unicode property"));
  CHECK_THAT(error_of(ConstraintKind::kRegex, "[^\\x00-\\U0010FFFF]"), Catch::Contains("no output"));
}

TEST_CASE("regex: Unicode classes match UTF-8 byte by byte") {
  auto c = compile(ConstraintKind::kRegex, "[α-ω]+[^a-z]");
  CHECK(accepts(c, "αβγ1"));
  CHECK(accepts(c, "ω\xE4\xB8\xAD"));  // 中
  CHECK_FALSE(accepts(c, "αx"));
  CHECK_FALSE(accepts(c, "α\xE4\xB8"));    // truncated character
  CHECK_FALSE(accepts(c, "α\xED\xA0\x80"));  // a surrogate is not UTF-8
  Matcher m(c);
  REQUIRE(m.accept_bytes("\xCE"));  // first byte of α: a partial character is a live prefix
  CHECK_FALSE(m.is_complete());
}

TEST_CASE("choice: outputs are exactly one of the choices") {
  const json choices = {"yes", "no", "maybe", "no way", "ünï"};
  auto c = compile(ConstraintKind::kChoice, choices.dump());
  for (uint32_t seed = 0; seed < 40; ++seed) {
    const Walk w = random_walk(c, seed, 32);
    REQUIRE(w.complete);
    CHECK(std::find(choices.begin(), choices.end(), w.text) != choices.end());
  }
  Matcher m(c);
  REQUIRE(m.accept_bytes("no"));
  CHECK(m.is_complete());      // "no" is a choice ...
  CHECK_FALSE(m.is_terminated());  // ... and " way" may follow
  REQUIRE(m.accept_bytes(" way"));
  CHECK(m.is_terminated());
  CHECK_THAT(error_of(ConstraintKind::kChoice, "[]"), Catch::Contains("non-empty"));
  CHECK_THAT(error_of(ConstraintKind::kChoice, "[1]"), Catch::Contains("strings only"));
}

TEST_CASE("json_object: outputs parse as JSON objects; non-objects are refused") {
  auto c = compile(ConstraintKind::kJsonObject, "");
  for (const char* ok : {"{}", "{ }", "{\"a\": 1}", "{\"a\":[1,2.5e3,true,null,{\"b\":\"x\\n\\u00e9\"}]}",
                         "{\n  \"k\": -0.5\n}"})
    CHECK(accepts(c, ok));
  for (const char* bad : {"[]", "\"x\"", "{a: 1}", "{\"a\":01}", "{\"a\":1,}", " {}", "{\"a\":\"\x01\"}",
                          "{\"a\":\"\\ud800\"}"})
    CHECK_FALSE(accepts(c, bad));
  for (uint32_t seed = 0; seed < 30; ++seed) {
    const Walk w = random_walk(c, seed, 400);
    REQUIRE_FALSE(w.dead_end);
    if (!w.complete) continue;
    INFO(w.text);
    json v;
    REQUIRE_NOTHROW(v = json::parse(w.text));
    CHECK(v.is_object());
  }
}

TEST_CASE("json_schema: objects, required and optional properties, enums, arrays") {
  auto c = schema({{"type", "object"},
                   {"properties",
                    {{"name", {{"type", "string"}, {"minLength", 1}, {"maxLength", 3}}},
                     {"age", {{"type", "integer"}}},
                     {"tags", {{"type", "array"}, {"items", {{"enum", {"a", "b"}}}}, {"minItems", 1}, {"maxItems", 2}}}}},
                   {"required", {"name"}}});
  CHECK(accepts(c, R"({"name": "ab"})"));
  CHECK(accepts(c, R"({"name":"abc","age":-3,"tags":["a","b"]})"));
  CHECK(accepts(c, R"({"name": "é", "tags": ["b"]})"));
  CHECK_FALSE(accepts(c, R"({"age": 3})"));                 // name is required
  CHECK_FALSE(accepts(c, R"({"name": ""})"));               // minLength
  CHECK_FALSE(accepts(c, R"({"name": "abcd"})"));           // maxLength
  CHECK_FALSE(accepts(c, R"({"name": "a", "tags": []})"));  // minItems
  CHECK_FALSE(accepts(c, R"({"name": "a", "tags": ["a","b","a"]})"));
  CHECK_FALSE(accepts(c, R"({"name": "a", "tags": ["c"]})"));
  CHECK_FALSE(accepts(c, R"({"name": "a", "extra": 1})"));
}

TEST_CASE("json_schema: integer bounds against arithmetic") {
  const std::vector<std::pair<json, std::function<bool(long)>>> cases = {
      {{{"type", "integer"}, {"minimum", -17}, {"maximum", 123}}, [](long v) { return v >= -17 && v <= 123; }},
      {{{"type", "integer"}, {"exclusiveMinimum", 9}}, [](long v) { return v > 9; }},
      {{{"type", "integer"}, {"maximum", -10}}, [](long v) { return v <= -10; }},
      {{{"type", "integer"}, {"minimum", 0}, {"exclusiveMaximum", 100}}, [](long v) { return v >= 0 && v < 100; }},
      {{{"type", "integer"}, {"minimum", 95}, {"maximum", 1205}}, [](long v) { return v >= 95 && v <= 1205; }},
  };
  for (const auto& [s, in_range] : cases) {
    INFO(s.dump());
    auto c = schema(s);
    for (long v = -1500; v <= 1500; ++v) {
      INFO(v);
      CHECK(accepts(c, std::to_string(v)) == in_range(v));
    }
    CHECK_FALSE(accepts(c, "007"));
  }
}

TEST_CASE("json_schema: number bounds against arithmetic") {
  const std::vector<std::pair<json, std::function<bool(double)>>> cases = {
      {{{"type", "number"}, {"minimum", 0}, {"maximum", 1}}, [](double v) { return v >= 0 && v <= 1; }},
      {{{"type", "number"}, {"exclusiveMinimum", -2}, {"exclusiveMaximum", 3}}, [](double v) { return v > -2 && v < 3; }},
      {{{"type", "number"}, {"maximum", -1}}, [](double v) { return v <= -1; }},
      {{{"type", "number"}, {"exclusiveMinimum", 0}}, [](double v) { return v > 0; }},
  };
  const std::vector<std::string> values = {"0", "0.0", "0.5", "1", "1.0", "1.01", "-0.5", "-1", "-1.0", "-1.5",
                                           "-2", "-2.0", "-1.99", "2.999", "3", "3.0", "3.001", "12", "-12.25", "0.000"};
  for (const auto& [s, ok] : cases) {
    INFO(s.dump());
    auto c = schema(s);
    for (const std::string& v : values) {
      INFO(v);
      CHECK(accepts(c, v) == ok(std::stod(v)));
    }
  }
  CHECK_THAT(error_of(ConstraintKind::kJsonSchema, R"({"type":"number","minimum":0.5})"),
             Catch::Contains("whole number"));
}

TEST_CASE("json_schema: $ref recursion, anyOf, const, formats, patterns") {
  auto tree = schema(json::parse(R"({
    "$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["v"]}},
    "$ref": "#/$defs/node"})"));
  CHECK(accepts(tree, R"({"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": [{"v": 4, "kids": []}]}]})"));
  CHECK_FALSE(accepts(tree, R"({"v": 1, "kids": [{"w": 2}]})"));
  auto any = schema(json::parse(R"({"anyOf": [{"type": "null"}, {"const": {"a": [1]}}, {"type": "boolean"}]})"));
  CHECK(accepts(any, "null"));
  CHECK(accepts(any, R"({"a":[1]})"));
  CHECK(accepts(any, "false"));
  CHECK_FALSE(accepts(any, "1"));
  auto date = schema({{"type", "string"}, {"format", "date"}});
  CHECK(accepts(date, "\"2024-02-28\""));
  CHECK_FALSE(accepts(date, "\"2024-02-30\""));
  CHECK_FALSE(accepts(date, "\"2024-13-01\""));
  auto dt = schema({{"type", "string"}, {"format", "date-time"}});
  CHECK(accepts(dt, "\"2024-01-31T23:59:59.123+05:30\""));
  CHECK(accepts(dt, "\"1999-12-31T00:00:00Z\""));
  CHECK_FALSE(accepts(dt, "\"1999-12-31 00:00:00Z\""));
  auto uuid = schema({{"type", "string"}, {"format", "uuid"}});
  CHECK(accepts(uuid, "\"123e4567-e89b-12d3-a456-426614174000\""));
  CHECK_FALSE(accepts(uuid, "\"123e4567e89b12d3a456426614174000\""));
  auto email = schema({{"type", "string"}, {"format", "email"}});
  CHECK(accepts(email, "\"a.b+c@example.co.uk\""));
  CHECK_FALSE(accepts(email, "\"nobody\""));
  auto pat = schema({{"type", "string"}, {"pattern", "^[A-Z]{2}-\\d+$"}});
  CHECK(accepts(pat, "\"AB-12\""));
  CHECK_FALSE(accepts(pat, "\"AB-\""));
  auto search = schema({{"type", "string"}, {"pattern", "x\"y"}});  // unanchored: contains x"y
  CHECK(accepts(search, R"("abc x\"y def")"));
  CHECK_FALSE(accepts(search, R"("abc")"));
}

TEST_CASE("json_schema: errors name the unsupported keyword and where it is") {
  CHECK_THAT(error_of(ConstraintKind::kJsonSchema, R"({"type":"array","uniqueItems":true})"),
             Catch::Contains("'uniqueItems'") && Catch::Contains("not supported"));
  CHECK_THAT(error_of(ConstraintKind::kJsonSchema,
                      R"({"properties":{"a":{"type":"object","patternProperties":{}}}})"),
             Catch::Contains("'patternProperties'") && Catch::Contains("/properties/a"));
  CHECK_THAT(error_of(ConstraintKind::kJsonSchema, R"({"type":"string","format":"hostname"})"),
             Catch::Contains("format 'hostname'"));
  CHECK_THAT(error_of(ConstraintKind::kJsonSchema, R"({"$ref":"#/$defs/missing"})"),
             Catch::Contains("does not resolve"));
  CHECK_THAT(error_of(ConstraintKind::kJsonSchema, R"({"type":"strin"})"), Catch::Contains("unknown JSON Schema type"));
  CHECK_THAT(error_of(ConstraintKind::kJsonSchema, "{"), Catch::Contains("not valid JSON"));
  CHECK_THAT(error_of(ConstraintKind::kJsonSchema, R"({"type":"string","pattern":"(a)\\1"})"),
             Catch::Contains("backreferences"));
  CHECK_THAT(error_of(ConstraintKind::kJsonSchema, R"({"$defs":{"a":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"})"),
             Catch::Contains("no output"));
}

TEST_CASE("gbnf: arithmetic grammar, errors") {
  const char* g = R"G(
    # integer arithmetic
    root ::= expr
    expr ::= term (("+" | "-") term)*
    term ::= factor ("*" factor)*
    factor ::= [0-9]{1,3} | "(" expr ")"
  )G";
  auto c = compile(ConstraintKind::kGbnf, g);
  CHECK(accepts(c, "1+2*(3-4)"));
  CHECK(accepts(c, "((7))"));
  CHECK_FALSE(accepts(c, "1+"));
  CHECK_FALSE(accepts(c, "1234"));
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const Walk w = random_walk(c, seed, 200);
    REQUIRE_FALSE(w.dead_end);
    if (!w.complete) continue;
    int depth = 0;  // independent check: balanced parentheses, no operator at either end
    for (char ch : w.text) depth += ch == '(' ? 1 : ch == ')' ? -1 : 0;
    CHECK(depth == 0);
    CHECK(std::isdigit(static_cast<unsigned char>(w.text.back())) | (w.text.back() == ')'));
  }
  CHECK_THAT(error_of(ConstraintKind::kGbnf, "root ::= root \"a\" | \"b\""), Catch::Contains("left-recursive"));
  CHECK_THAT(error_of(ConstraintKind::kGbnf, "root ::= x"), Catch::Contains("'x' is used but never defined"));
  CHECK_THAT(error_of(ConstraintKind::kGbnf, "start ::= \"a\""), Catch::Contains("no 'root' rule"));
  CHECK_THAT(error_of(ConstraintKind::kGbnf, "root ::= \"a\nb ::= ["), Catch::Contains("line"));
  auto u = compile(ConstraintKind::kGbnf, "root ::= [^\\x00-\\x7F]+ \"\\u00e9\"");
  CHECK(accepts(u, "中é"));
}

TEST_CASE("tokens: multi-element tokens, partial UTF-8, special tokens and EOS") {
  // id: 0 '{"', 1 '":', 2 '"', 3 'a', 4 '}', 5 '\xE4' (first byte of 中), 6 '\xB8\xAD', 7 special,
  // 8 EOS, 9 '{"a":"', 10 ' '
  std::vector<std::optional<std::string>> bytes = {"{\"", "\":", "\"", "a", "}", "\xE4", "\xB8\xAD",
                                                   std::nullopt, std::nullopt, "{\"a\":\"", " "};
  auto vocab = std::make_shared<const TokenVocabulary>(bytes, 11, std::vector<int32_t>{8});
  auto c = compile_constraint({ConstraintKind::kJsonSchema,
                               R"({"type":"object","properties":{"a":{"type":"string"}},"required":["a"]})"},
                              vocab);
  Matcher m(c);
  CHECK(allowed_ids(m) == std::vector<int32_t>{0, 9});
  REQUIRE(m.accept_token(0));
  CHECK(allowed_ids(m) == std::vector<int32_t>{3});
  REQUIRE(m.accept_token(3));
  CHECK(allowed_ids(m) == std::vector<int32_t>{1, 2});
  REQUIRE(m.accept_token(1));
  // '":' may also open the string and put a ':' in it.
  CHECK(allowed_ids(m) == std::vector<int32_t>{1, 2, 10});
  REQUIRE(m.accept_token(2));
  // Inside the string: '{"' (then closes it), '"' closes, 'a', '}', the first byte of 中, ' '.
  CHECK(allowed_ids(m) == std::vector<int32_t>{0, 2, 3, 4, 5, 10});
  REQUIRE(m.accept_token(5));
  CHECK(allowed_ids(m) == std::vector<int32_t>{6});  // only the rest of the character
  CHECK_FALSE(m.accept_token(3));
  REQUIRE(m.accept_token(6));
  REQUIRE(m.accept_token(2));
  CHECK_FALSE(m.is_complete());
  CHECK(allowed_ids(m) == std::vector<int32_t>{4, 10});
  REQUIRE(m.accept_token(4));
  CHECK(m.is_complete());
  CHECK(m.is_terminated());
  CHECK(allowed_ids(m) == std::vector<int32_t>{8});  // EOS only
  CHECK_FALSE(m.accept_token(7));
  REQUIRE(m.accept_token(8));
  CHECK(allowed_ids(m).empty());
}

TEST_CASE("tokens: real tokenizers map to raw bytes") {
  auto sp = Tokenizer::from_json(tiny_sentencepiece_json());
  CHECK_FALSE(sp->token_bytes(1));  // <s>
  CHECK(*sp->token_bytes(3 + 0x41) == "A");         // <0x41>
  CHECK(*sp->token_bytes(3 + 0xE4) == "\xE4");      // a partial character
  CHECK(*sp->token_bytes(*sp->token_to_id("\u2581ab")) == " ab");
  auto bl = Tokenizer::from_json(tiny_bytelevel_json());
  CHECK(*bl->token_bytes(*bl->token_to_id("\u0120the")) == " the");
  CHECK_FALSE(bl->token_bytes(300));                // <|begin_of_text|>
  CHECK(*bl->token_bytes(302) == "<tool>");         // a non-special added token is text
  auto vocab = TokenVocabulary::from_tokenizer(*bl, 320, {301});
  CHECK(vocab->size() == 320);
  CHECK(vocab->bytes(0xE4 - 0xA1 + 0xA1) != nullptr);
  auto c = compile_constraint({ConstraintKind::kRegex, " the( the)*"}, vocab);
  Matcher m(c);
  const auto ids = allowed_ids(m);
  CHECK(std::find(ids.begin(), ids.end(), *bl->token_to_id("\u0120the")) != ids.end());
  CHECK(std::find(ids.begin(), ids.end(), 300) == ids.end());
  CHECK(std::find(ids.begin(), ids.end(), 310) == ids.end());  // padding id
}

TEST_CASE("cache: compiled constraints are shared by (kind, text)") {
  ConstraintCache cache(byte_vocabulary(), 2);
  auto a = cache.get({ConstraintKind::kRegex, "a+"});
  CHECK(cache.get({ConstraintKind::kRegex, "a+"}) == a);
  CHECK(cache.get({ConstraintKind::kChoice, "[\"a+\"]"}) != a);
  cache.get({ConstraintKind::kRegex, "b"});
  CHECK(cache.size() == 2);
  CHECK(cache.get({ConstraintKind::kRegex, "a+"}) != a);  // evicted, compiled again
  CHECK(constraint_kind_from_name("json_schema") == ConstraintKind::kJsonSchema);
  CHECK_FALSE(constraint_kind_from_name("xml"));
}

TEST_CASE("cache: a compile over the time cap is refused, names the cap and is not cached") {
  // Up to 20,000 repetitions unroll to 20,000 rules: far more than the 256 grammar additions
  // between clock reads, so a cap of a microsecond is always exceeded; a minute never is.
  const Constraint big{ConstraintKind::kRegex, "([a-z][0-9]){0,20000}"};
  ConstraintCache capped(byte_vocabulary(), 4, /*compile_time_limit_ms=*/0.001);
  try {
    capped.get(big);
    FAIL("a compile over the time cap was accepted");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Matchers::Contains("took longer than 0.001 ms to compile"));
  }
  CHECK(capped.size() == 0);
  CHECK(capped.get({ConstraintKind::kRegex, "ab"}));  // small ones still compile
  ConstraintCache generous(byte_vocabulary(), 4, 60000);
  auto c = generous.get(big);
  Matcher m(c);
  CHECK(m.accept_bytes("a1b2"));
  CHECK(m.is_complete());
  CHECK_FALSE(m.accept_bytes("3"));
}

TEST_CASE("automaton: the inside of a string shares its local mask across schemas") {
  auto vocab = byte_vocabulary();
  auto a = compile_constraint({ConstraintKind::kJsonSchema, R"({"type":"object","properties":{"a":{"type":"string"}}})"}, vocab);
  auto b = compile_constraint({ConstraintKind::kJsonObject, ""}, vocab);
  auto c = compile_constraint({ConstraintKind::kJsonSchema, R"({"type":"object","properties":{"a":{"type":"string","maxLength":5}}})"}, vocab);
  auto sig = [](const std::shared_ptr<const CompiledConstraint>& k, const std::string& prefix) {
    auto& A = k->automaton();
    const int32_t s = A.walk(A.initial(), prefix);
    REQUIRE(s >= 0);
    return A.shared_signature(s);
  };
  const uint64_t in_a = sig(a, "{\"a\":\"x");
  CHECK(in_a != 0);
  CHECK(sig(b, "{\"key\": \"") == in_a);     // a value string of any JSON
  CHECK(sig(b, "{\"") == in_a);              // a key string
  CHECK(sig(c, "{\"a\":\"x") != in_a);       // at most 4 more characters: another fragment
  CHECK(sig(c, "{\"a\":\"xy") != sig(c, "{\"a\":\"x"));
  // Masks computed through the shared entry are the same as from scratch.
  Matcher m1(a), m2(b);
  REQUIRE(m1.accept_bytes("{\"a\":\"x"));
  REQUIRE(m2.accept_bytes("{\"zz\":\"x"));
  auto ids1 = allowed_ids(m1), ids2 = allowed_ids(m2);
  CHECK(ids1 == ids2);
}

TEST_CASE("fuzz: malformed constraints fail with iris::Error, never crash") {
  std::mt19937 rng(1234);
  const std::string alphabet = "ab()[]{}|*+?.^$\\-,:\"0123456789dwsxu#=< >\n";
  const std::vector<ConstraintKind> kinds = {ConstraintKind::kRegex, ConstraintKind::kGbnf,
                                             ConstraintKind::kJsonSchema, ConstraintKind::kChoice};
  const std::vector<std::string> gbnf_prefix = {"", "root ::= ", "root ::= a\na ::= "};
  auto vocab = byte_vocabulary();
  int compiled = 0;
  for (int i = 0; i < 3000; ++i) {
    const ConstraintKind kind = kinds[i % kinds.size()];
    std::string text;
    if (kind == ConstraintKind::kGbnf) text = gbnf_prefix[rng() % gbnf_prefix.size()];
    const int len = static_cast<int>(rng() % 24);
    for (int k = 0; k < len; ++k) text.push_back(alphabet[rng() % alphabet.size()]);
    if (kind == ConstraintKind::kJsonSchema && rng() % 2) text = "{\"type\":\"string\",\"pattern\":" + json(text).dump() + "}";
    INFO(constraint_kind_name(kind) << ": " << text);
    try {
      auto c = compile_constraint({kind, text}, vocab);
      ++compiled;
      const Walk w = random_walk(c, static_cast<uint32_t>(i), 40);
      CHECK_FALSE(w.dead_end);
    } catch (const Error&) {
    }
  }
  CHECK(compiled > 100);
}

TEST_CASE("automaton: masks stay right when the mask cache fills up and compacts") {
  auto c = compile(ConstraintKind::kRegex, "c{0,5000}");  // 5,001 states, more than the cache holds
  for (int pass = 0; pass < 2; ++pass) {  // the second pass reads compacted (id list) entries
    Matcher m(c);
    for (int i = 0; i <= 5000; ++i) {
      INFO("pass " << pass << " at " << i);
      const auto ids = allowed_ids(m);
      if (i < 5000) {
        REQUIRE(ids == std::vector<int32_t>{'c', 256});
        REQUIRE(m.accept_token('c'));
      } else {
        REQUIRE(ids == std::vector<int32_t>{256});
      }
    }
  }
}
