// Random walks over a ~150k-token byte-level vocabulary (synthetic_vocab.h): for every schema
// of the corpus (tests/grammar/schemas/) and several seeds, for regexes and for choices, pick
// random allowed tokens until the output is complete or a token cap. The mask must never be
// empty before completion and EOS must be allowed exactly when complete. Completed outputs go
// to walk_outputs.jsonl for validate_outputs.py (jsonschema, re.fullmatch).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/grammar/constraint.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/grammar/grammar_test_util.h"
#include "tests/grammar/synthetic_vocab.h"

using namespace iris;
using namespace iris::grammar;
using namespace iris::test;
using nlohmann::json;

namespace {

std::shared_ptr<const TokenVocabulary> big_vocabulary() {
  static std::shared_ptr<const TokenVocabulary> vocab = [] {
    auto tok = Tokenizer::from_json(synthetic_bytelevel_json());
    const int32_t eos = *tok->token_to_id("<|endoftext|>");
    return TokenVocabulary::from_tokenizer(*tok, 151936, {eos});
  }();
  return vocab;
}

std::ofstream& out_file() {
  static std::ofstream out(std::string(IRIS_GRAMMAR_OUT_DIR) + "/walk_outputs.jsonl");
  return out;
}

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("walk: the big vocabulary maps every token to bytes") {
  auto v = big_vocabulary();
  CHECK(v->size() == 151936);
  CHECK(v->trie_tokens().size() == 150000);  // special tokens and padding are not in the trie
  CHECK(v->bytes(150000) == nullptr);         // <|endoftext|>
}

TEST_CASE("walk: JSON schema corpus has no dead ends") {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(IRIS_GRAMMAR_SCHEMA_DIR))
    if (e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 40);
  ConstraintCache cache(big_vocabulary());
  for (const auto& f : files) {
    INFO(f.filename().string());
    const std::string text = read(f);
    auto c = cache.get({ConstraintKind::kJsonSchema, text});
    int completed = 0;
    for (uint32_t seed = 0; seed < 4; ++seed) {
      const Walk w = random_walk(c, seed, 1200);
      INFO("seed " << seed << ": " << w.text);
      REQUIRE_FALSE(w.dead_end);
      if (!w.complete) continue;
      ++completed;
      out_file() << json{{"kind", "json_schema"}, {"schema_file", f.filename().string()},
                         {"schema", json::parse(text)}, {"output", w.text}}.dump(-1, ' ', false, json::error_handler_t::replace)
                 << "\n";
    }
    CHECK(completed > 0);
  }
  out_file().flush();
}

TEST_CASE("walk: json_object, regexes and choices have no dead ends") {
  auto vocab = big_vocabulary();
  for (uint32_t seed = 0; seed < 6; ++seed) {
    const Walk w = random_walk(compile_constraint({ConstraintKind::kJsonObject, ""}, vocab), seed, 1200);
    REQUIRE_FALSE(w.dead_end);
    if (w.complete)
      out_file() << json{{"kind", "json_object"}, {"output", w.text}}.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  }
  const std::vector<std::string> patterns = {
      "[a-z]+@[a-z]+\\.(com|org)", "\\d{3}-\\d{2}-\\d{4}", "(yes|no|maybe)( really)?",
      "[A-Z][a-z]{2,8}( [A-Z][a-z]{2,8}){0,2}", "-?(0|[1-9]\\d*)(\\.\\d+)?", "\\(\\d{3}\\) \\d{3}-\\d{4}",
      "[^\\n\"]{1,20}\"", "(ab|cd)*e?", "[α-ω]{1,5}\\d?", "0x[0-9A-F]{1,8}", "(\\w+ ){1,4}\\w+\\.",
      "\\s*\\[\\d+(, \\d+)*\\]"};
  for (const std::string& p : patterns) {
    INFO(p);
    auto c = compile_constraint({ConstraintKind::kRegex, p}, vocab);
    for (uint32_t seed = 0; seed < 4; ++seed) {
      const Walk w = random_walk(c, seed, 300);
      REQUIRE_FALSE(w.dead_end);
      if (w.complete)
        out_file() << json{{"kind", "regex"}, {"pattern", p}, {"output", w.text}}.dump() << "\n";
    }
  }
  const json choices = {"positive", "negative", "neutral", "neg", "😀 happy", "x"};
  auto c = compile_constraint({ConstraintKind::kChoice, choices.dump()}, vocab);
  for (uint32_t seed = 0; seed < 12; ++seed) {
    const Walk w = random_walk(c, seed, 50);
    REQUIRE(w.complete);
    out_file() << json{{"kind", "choice"}, {"choices", choices}, {"output", w.text}}.dump() << "\n";
  }
  out_file().flush();
}
