// Constraint kinds → grammars, the compiled-constraint cache and the per-sequence Matcher.
#include "engine/grammar/constraint.h"

#include <nlohmann/json.hpp>

#include "engine/core/check.h"
#include "engine/grammar/gbnf.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/regex.h"

namespace iris::grammar {

namespace {
constexpr size_t kMaxConstraintText = 1 << 20;

// begin value (separator value){0, max_values - 1} end, each value valid against the schema.
int32_t compile_tagged_json(GrammarBuilder& b, const std::string& text) {
  nlohmann::ordered_json spec;
  try {
    spec = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("the tagged_json spec is not valid JSON: ", e.what());
  }
  if (!spec.is_object() || !spec.contains("schema"))
    fail("the tagged_json spec must be an object with a schema");
  auto literal = [&](const char* key) {
    auto it = spec.find(key);
    if (it == spec.end() || it->is_null()) return std::string();
    if (!it->is_string()) fail("tagged_json: '", key, "' must be a string");
    return it->get<std::string>();
  };
  int64_t max_values = 1;
  if (auto it = spec.find("max_values"); it != spec.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > 64)
      fail("tagged_json: max_values must be an integer in [1, 64]");
    max_values = it->get<int64_t>();
  }
  const Symbol value = b.rule_ref(compile_json_schema(b, spec["schema"]));
  Sequence seq = b.literal(literal("begin"));
  seq.push_back(value);
  if (max_values > 1) {
    Sequence more = b.literal(literal("separator"));
    more.push_back(value);
    seq.push_back(b.repeat(more, 0, static_cast<int>(max_values - 1)));
  }
  for (const Symbol& s : b.literal(literal("end"))) seq.push_back(s);
  return b.rule_of({std::move(seq)}, "tagged_json").id;
}
}  // namespace

const char* constraint_kind_name(ConstraintKind kind) {
  switch (kind) {
    case ConstraintKind::kJsonSchema: return "json_schema";
    case ConstraintKind::kJsonObject: return "json_object";
    case ConstraintKind::kRegex: return "regex";
    case ConstraintKind::kChoice: return "choice";
    case ConstraintKind::kGbnf: return "gbnf";
    case ConstraintKind::kTaggedJson: return "tagged_json";
  }
  return "?";
}

std::optional<ConstraintKind> constraint_kind_from_name(std::string_view name) {
  for (ConstraintKind k : {ConstraintKind::kJsonSchema, ConstraintKind::kJsonObject,
                           ConstraintKind::kRegex, ConstraintKind::kChoice, ConstraintKind::kGbnf,
                           ConstraintKind::kTaggedJson})
    if (name == constraint_kind_name(k)) return k;
  return std::nullopt;
}

Grammar build_grammar(const Constraint& c, double time_limit_ms) {
  if (c.text.size() > kMaxConstraintText)
    fail("the ", constraint_kind_name(c.kind), " constraint is larger than ", kMaxConstraintText, " bytes");
  GrammarBuilder b;
  if (time_limit_ms > 0) b.set_time_limit(time_limit_ms);
  int32_t root = 0;
  switch (c.kind) {
    case ConstraintKind::kJsonSchema: {
      nlohmann::ordered_json schema;  // properties keep their order in the output
      try {
        schema = nlohmann::ordered_json::parse(c.text);
      } catch (const nlohmann::json::exception& e) {
        fail("the JSON schema is not valid JSON: ", e.what());
      }
      root = compile_json_schema(b, schema);
      break;
    }
    case ConstraintKind::kJsonObject:
      root = compile_any_json_object(b);
      break;
    case ConstraintKind::kRegex:
      root = b.rule_of({{compile_regex(b, c.text)}}, "root").id;
      break;
    case ConstraintKind::kChoice: {
      nlohmann::json list;
      try {
        list = nlohmann::json::parse(c.text);
      } catch (const nlohmann::json::exception& e) {
        fail("the choice list is not valid JSON: ", e.what());
      }
      if (!list.is_array() || list.empty())
        fail("the choice list must be a non-empty JSON array of strings");
      std::vector<Sequence> alts;
      for (const auto& s : list) {
        if (!s.is_string()) fail("the choice list must contain strings only, got ", s.dump());
        alts.push_back(b.literal(s.get<std::string>()));
      }
      root = b.rule_of(std::move(alts), "root").id;
      break;
    }
    case ConstraintKind::kGbnf:
      root = compile_gbnf(b, c.text);
      break;
    case ConstraintKind::kTaggedJson:
      root = compile_tagged_json(b, c.text);
      break;
  }
  return b.build(root);
}

CompiledConstraint::CompiledConstraint(Constraint spec, Grammar grammar,
                                       std::shared_ptr<const TokenVocabulary> vocab)
    : spec_(std::move(spec)), vocab_(std::move(vocab)),
      automaton_(std::make_unique<PushdownAutomaton>(std::move(grammar))) {
  IRIS_CHECK(vocab_) << "a constraint needs a vocabulary";
}

std::shared_ptr<const CompiledConstraint> compile_constraint(
    const Constraint& constraint, std::shared_ptr<const TokenVocabulary> vocab,
    double time_limit_ms) {
  auto c = std::make_shared<const CompiledConstraint>(
      constraint, build_grammar(constraint, time_limit_ms), std::move(vocab));
  std::vector<uint32_t> mask(static_cast<size_t>(c->vocabulary().mask_words()));
  c->automaton().token_mask(c->automaton().initial(), c->vocabulary(), mask.data());
  return c;
}

ConstraintCache::ConstraintCache(std::shared_ptr<const TokenVocabulary> vocab, size_t capacity,
                                 double compile_time_limit_ms)
    : vocab_(std::move(vocab)), capacity_(std::max<size_t>(capacity, 1)),
      compile_time_limit_ms_(compile_time_limit_ms) {}

std::shared_ptr<const CompiledConstraint> ConstraintCache::get(const Constraint& constraint) {
  std::string key = constraint_kind_name(constraint.kind);
  key.push_back('\0');
  key += constraint.text;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      ++hits_;
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
  }
  // Compiled outside the lock: two threads may compile the same text at once; one wins.
  auto compiled = compile_constraint(constraint, vocab_, compile_time_limit_ms_);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it != index_.end()) return it->second->second;
  lru_.emplace_front(key, compiled);
  index_[key] = lru_.begin();
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return compiled;
}

size_t ConstraintCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

uint64_t ConstraintCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

Matcher::Matcher(std::shared_ptr<const CompiledConstraint> constraint)
    : constraint_(std::move(constraint)), state_(constraint_->automaton().initial()) {}

void Matcher::fill_next_token_bitmask(uint32_t* words) const {
  if (ended_) {
    std::fill(words, words + mask_words(), 0u);
    return;
  }
  constraint_->automaton().token_mask(state_, constraint_->vocabulary(), words);
}

bool Matcher::accept_token(int32_t token) {
  if (ended_) return false;
  const TokenVocabulary& v = constraint_->vocabulary();
  if (v.is_eos(token)) {
    if (!is_complete()) return false;
    ended_ = true;
    return true;
  }
  const std::string* bytes = v.bytes(token);
  if (!bytes) return false;
  return accept_bytes(*bytes);
}

bool Matcher::accept_bytes(std::string_view bytes) {
  if (ended_) return false;
  const int32_t next = constraint_->automaton().walk(state_, bytes);
  if (next == PushdownAutomaton::kDead) return false;
  state_ = next;
  return true;
}

bool Matcher::is_complete() const { return ended_ || constraint_->automaton().accepting(state_); }

bool Matcher::is_terminated() const {
  return ended_ || (constraint_->automaton().accepting(state_) &&
                    !constraint_->automaton().can_continue(state_));
}

}  // namespace iris::grammar
