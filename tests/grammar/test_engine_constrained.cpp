// The batching engine under structured-output constraints: a random-weight tiny Llama with the
// tiny byte-level tokenizer samples at temperature 1.0 under a JSON schema (n > 1, several
// requests, a KV cache small enough to force preemption); every output must complete with
// "stop" and parse, and is written to engine_outputs.jsonl for validate_outputs.py
// (jsonschema). An output cut by max_tokens reports "length".
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>

#include "engine/engine.h"
#include "engine/generator.h"
#include "engine/grammar/constraint.h"
#include "engine/loader/checkpoint.h"
#include "tests/tokenizer/tiny_tokenizers.h"
#include "tests/unit/test_util.h"

using namespace iris;
using namespace iris::test;
using nlohmann::json;

namespace {

constexpr int32_t kEos = 301;  // <|end_of_text|> of tiny_bytelevel_json

struct Fixture {
  std::unique_ptr<Backend> backend = make_cpu_backend(2);
  std::unique_ptr<Checkpoint> ck;
  ModelConfig cfg;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::from_json(tiny_bytelevel_json());
  std::unique_ptr<grammar::ConstraintCache> cache;
  Fixture() {
    auto c = small_llama_config({{"vocab_size", 320}, {"eos_token_id", kEos}, {"max_position_embeddings", 512}});
    const auto dir = write_checkpoint("grammar_engine", c, random_weights(c, 5));
    ck = Checkpoint::open(dir);
    cfg = ModelConfig::from_dir(dir);
    model = load_model(*ck, cfg, *backend);
    cache = std::make_unique<grammar::ConstraintCache>(
        grammar::TokenVocabulary::from_tokenizer(*tokenizer, cfg.vocab_size, cfg.eos_token_ids));
  }
};

const char* kSchema = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 6},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "role": {"enum": ["admin", "user", "guest"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 3},
    "active": {"type": "boolean"}
  },
  "required": ["name", "age", "role"],
  "additionalProperties": false
})";

struct Choice {
  std::vector<int32_t> tokens;
  std::string text;
  std::optional<FinishReason> finish;
  std::string error;
};

}  // namespace

TEST_CASE("engine: JSON-schema constrained sampling at temperature 1 completes and validates") {
  Fixture f;
  const bool small_cache = GENERATE(false, true);
  EngineConfig ec;
  ec.max_num_seqs = 8;
  ec.max_num_batched_tokens = 64;
  ec.num_kv_blocks = small_cache ? 23 : 400;  // 22 usable blocks of 16: preemption
  Engine engine(*f.backend, *f.model, ec, f.tokenizer.get());
  auto constraint = f.cache->get({grammar::ConstraintKind::kJsonSchema, kSchema});

  std::map<std::string, std::map<int, Choice>> got;
  for (int r = 0; r < 4; ++r) {
    EngineRequest req;
    req.id = "r" + std::to_string(r);
    req.prompt = f.tokenizer->encode("Describe a user as JSON:", false);
    req.params.temperature = 1.0f;
    req.params.seed = 100 + 10 * r + (small_cache ? 50 : 0);
    req.params.max_tokens = 300;
    req.params.constraint = constraint;
    req.n = r == 0 ? 3 : 1;  // each choice follows its own matcher
    // A stop string the output's last "}" could start: held back by the detokenizer, it must
    // still come out when the constraint ends the output.
    if (r == 1) req.params.stop = {"}\n\n"};
    engine.submit(req, [&got](const EngineOutput& o) {
      Choice& c = got[o.id][o.index];
      c.tokens.insert(c.tokens.end(), o.token_ids.begin(), o.token_ids.end());
      c.text += o.text;
      if (o.finish_reason) c.finish = o.finish_reason, c.error = o.error;
    });
  }
  while (engine.has_work()) {
    engine.step();
    REQUIRE(engine.check_invariants().empty());
  }
  if (small_cache) CHECK(engine.stats().num_preemptions > 0);

  std::ofstream out(std::string(IRIS_GRAMMAR_OUT_DIR) + "/engine_outputs" + (small_cache ? "_preempt" : "") + ".jsonl");
  int choices = 0;
  for (const auto& [id, by_index] : got)
    for (const auto& [index, c] : by_index) {
      INFO(id << "#" << index << ": " << c.text << " " << c.error);
      ++choices;
      REQUIRE(c.finish);
      CHECK(*c.finish == FinishReason::kStop);
      // The text is the tokens' bytes (EOS, if sampled, adds none).
      std::string bytes;
      for (int32_t t : c.tokens)
        if (t != kEos) bytes += *f.tokenizer->token_bytes(t);
      CHECK(bytes == c.text);
      json v;
      REQUIRE_NOTHROW(v = json::parse(c.text));
      CHECK(v.is_object());
      out << json{{"kind", "json_schema"}, {"schema_file", "engine " + id}, {"schema", json::parse(kSchema)},
                  {"output", c.text}}.dump() << "\n";
    }
  CHECK(choices == 6);
}

TEST_CASE("engine: a constrained output cut by max_tokens finishes with length") {
  Fixture f;
  Engine engine(*f.backend, *f.model, EngineConfig{}, f.tokenizer.get());
  EngineRequest req;
  req.id = "cut";
  req.prompt = f.tokenizer->encode("JSON:", false);
  req.params.temperature = 1.0f;
  req.params.seed = 3;
  req.params.max_tokens = 4;
  req.params.constraint = f.cache->get({grammar::ConstraintKind::kJsonSchema, kSchema});
  Choice c;
  engine.submit(req, [&c](const EngineOutput& o) {
    c.tokens.insert(c.tokens.end(), o.token_ids.begin(), o.token_ids.end());
    c.text += o.text;
    if (o.finish_reason) c.finish = o.finish_reason;
  });
  while (engine.has_work()) engine.step();
  REQUIRE(c.finish);
  CHECK(*c.finish == FinishReason::kLength);
  CHECK(c.tokens.size() == 4);
  CHECK(c.text.rfind("{", 0) == 0);  // a prefix of a valid document
  grammar::Matcher m(req.params.constraint);
  CHECK(m.accept_bytes(c.text));
  CHECK_FALSE(m.is_complete());
}

TEST_CASE("engine: choice and regex constraints; a constraint for another vocabulary is refused") {
  Fixture f;
  Engine engine(*f.backend, *f.model, EngineConfig{}, f.tokenizer.get());
  const json choices = {"alpha", "beta", "gamma delta"};
  std::map<std::string, Choice> got;
  auto cb = [&got](const EngineOutput& o) {
    Choice& c = got[o.id];
    c.text += o.text;
    if (o.finish_reason) c.finish = o.finish_reason, c.error = o.error;
  };
  for (int i = 0; i < 4; ++i) {
    EngineRequest r;
    r.id = "choice" + std::to_string(i);
    r.prompt = {1, 2, 3};
    r.params.seed = i;
    r.params.max_tokens = 40;
    r.params.constraint = f.cache->get({grammar::ConstraintKind::kChoice, choices.dump()});
    engine.submit(r, cb);
    r.id = "regex" + std::to_string(i);
    r.params.constraint = f.cache->get({grammar::ConstraintKind::kRegex, "[0-9]{3}-[a-z]{2,4}"});
    engine.submit(r, cb);
  }
  EngineRequest big;
  big.id = "big";
  big.prompt = {1};
  big.params.constraint = grammar::compile_constraint(
      {grammar::ConstraintKind::kRegex, "a"},
      std::make_shared<const grammar::TokenVocabulary>(std::vector<std::optional<std::string>>{"a"}, 1000,
                                                       std::vector<int32_t>{999}));
  engine.submit(big, cb);
  while (engine.has_work()) engine.step();
  CHECK(got["big"].finish == FinishReason::kError);
  CHECK_THAT(got["big"].error, Catch::Contains("vocabulary of 1000 tokens"));
  std::ofstream out(std::string(IRIS_GRAMMAR_OUT_DIR) + "/engine_outputs_other.jsonl");
  for (int i = 0; i < 4; ++i) {
    const Choice& c = got["choice" + std::to_string(i)];
    CHECK(c.finish == FinishReason::kStop);
    CHECK(std::find(choices.begin(), choices.end(), c.text) != choices.end());
    out << json{{"kind", "choice"}, {"choices", choices}, {"output", c.text}}.dump() << "\n";
    const Choice& g = got["regex" + std::to_string(i)];
    CHECK(g.finish == FinishReason::kStop);
    out << json{{"kind", "regex"}, {"pattern", "[0-9]{3}-[a-z]{2,4}"}, {"output", g.text}}.dump() << "\n";
  }
}

TEST_CASE("generator: the single-request path follows the constraint too") {
  Fixture f;
  Generator gen(*f.backend, *f.model);
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 11;
  p.max_tokens = 400;
  p.constraint = f.cache->get({grammar::ConstraintKind::kJsonSchema, kSchema});
  const GenerationResult res = gen.generate(f.tokenizer->encode("JSON:", false), p);
  CHECK(res.finish_reason == FinishReason::kStop);
  std::string text;
  for (int32_t t : res.output_ids)
    if (t != kEos) text += *f.tokenizer->token_bytes(t);
  INFO(text);
  json v;
  REQUIRE_NOTHROW(v = json::parse(text));
  CHECK(v.contains("name"));
  CHECK(v.contains("role"));
}
