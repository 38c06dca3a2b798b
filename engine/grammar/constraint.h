// Structured-output constraints: what a request asks for (Constraint: a kind and its text),
// compiling it against a model's vocabulary (CompiledConstraint, cached by ConstraintCache),
// and following one generation (Matcher: the allowed next tokens as a bitmask, advance by
// the sampled token, completion).
//
// The server layer compiles before submitting, off the engine thread:
//   auto vocab = TokenVocabulary::from_tokenizer(tokenizer, model_vocab_size, eos_ids);
//   ConstraintCache cache(vocab);                       // once per model
//   params.constraint = cache.get({ConstraintKind::kJsonSchema, schema_text});  // per request
// get() throws iris::Error with a message naming what is wrong (an unsupported JSON Schema
// keyword and where it is, a regex feature, a GBNF syntax error with its line).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "engine/grammar/automaton.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/token_vocabulary.h"

namespace iris::grammar {

enum class ConstraintKind {
  kJsonSchema,  // text: a JSON Schema document
  kJsonObject,  // text: ignored; any JSON object
  kRegex,       // text: a regular expression the whole output must match
  kChoice,      // text: a JSON array of strings; the output is exactly one of them
  kGbnf,        // text: a GBNF grammar (llama.cpp's format) with a `root` rule
  // text: {"begin", "schema", "separator", "end", "max_values"}: one to max_values JSON values
  // valid against `schema`, joined by `separator` and wrapped in the literal `begin`/`end`
  // (tool calls in a model family's syntax, e.g. "<tool_call>\n" ... "\n</tool_call>").
  kTaggedJson,
};

const char* constraint_kind_name(ConstraintKind kind);  // "json_schema", "json_object", ...
std::optional<ConstraintKind> constraint_kind_from_name(std::string_view name);

struct Constraint {
  ConstraintKind kind = ConstraintKind::kJsonObject;
  std::string text;
};

// The byte-level grammar of a constraint (no vocabulary involved). Throws iris::Error, also
// when building takes longer than `time_limit_ms` (0: no cap).
Grammar build_grammar(const Constraint& constraint, double time_limit_ms = 0);

// A constraint compiled against one vocabulary. Immutable from the outside; its automaton's
// caches are shared by every Matcher made from it and are thread-safe.
class CompiledConstraint {
 public:
  CompiledConstraint(Constraint spec, Grammar grammar, std::shared_ptr<const TokenVocabulary> vocab);
  const Constraint& spec() const { return spec_; }
  const TokenVocabulary& vocabulary() const { return *vocab_; }
  PushdownAutomaton& automaton() const { return *automaton_; }

 private:
  Constraint spec_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  std::unique_ptr<PushdownAutomaton> automaton_;
};

// Compiles without caching; also computes the first mask so the engine thread finds it cached.
std::shared_ptr<const CompiledConstraint> compile_constraint(
    const Constraint& constraint, std::shared_ptr<const TokenVocabulary> vocab,
    double time_limit_ms = 0);

// An LRU cache of compiled constraints by (kind, text) for one vocabulary. Thread-safe.
// A cached constraint keeps its states and masks, so repeated schemas start warm. Compiles
// that exceed `compile_time_limit_ms` (0: no cap) are refused, and not cached.
class ConstraintCache {
 public:
  explicit ConstraintCache(std::shared_ptr<const TokenVocabulary> vocab, size_t capacity = 64,
                           double compile_time_limit_ms = 0);
  std::shared_ptr<const CompiledConstraint> get(const Constraint& constraint);
  const std::shared_ptr<const TokenVocabulary>& vocabulary() const { return vocab_; }
  size_t size() const;
  uint64_t hits() const;

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const CompiledConstraint>>;
  std::shared_ptr<const TokenVocabulary> vocab_;
  size_t capacity_;
  double compile_time_limit_ms_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recent first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  uint64_t hits_ = 0;
};

// One generation under a constraint. Not thread-safe (one per sequence); cheap to create.
class Matcher {
 public:
  explicit Matcher(std::shared_ptr<const CompiledConstraint> constraint);

  int32_t vocab_size() const { return constraint_->vocabulary().size(); }
  int32_t mask_words() const { return constraint_->vocabulary().mask_words(); }
  // Writes mask_words() words; bit t of words[t / 32] (LSB first) is set when token t may come
  // next. Special tokens are never set; EOS is set exactly when is_complete(). After EOS was
  // accepted, the mask is empty.
  void fill_next_token_bitmask(uint32_t* words) const;
  // Advances by a token. False (and no change) when the token is not allowed here.
  bool accept_token(int32_t token);
  // Advances by raw bytes (tests, prompts that pre-fill part of the output).
  bool accept_bytes(std::string_view bytes);
  // The output so far is a complete match: EOS may end it now.
  bool is_complete() const;
  // Nothing but EOS may follow (a complete match that cannot be extended), or EOS was accepted.
  bool is_terminated() const;

 private:
  std::shared_ptr<const CompiledConstraint> constraint_;
  int32_t state_;
  bool ended_ = false;  // EOS accepted
};

}  // namespace iris::grammar
