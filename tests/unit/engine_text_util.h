// Helpers for engine tests that look at what a client receives: each choice's streamed
// messages collected in order, a strict UTF-8 check, the embedded iris-tiny model with its
// tokenizer, and the reference for where a choice must end. The reference is the
// tokenizer's decode of the whole token list (itself checked against Hugging Face's
// tokenizers), never the incremental detokenizer under test.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/loader/checkpoint.h"
#include "engine/tokenizer/tokenizer.h"

namespace iris::test {

// What one choice of a request streamed.
struct Choice {
  std::vector<int32_t> tokens;
  std::vector<std::string> pieces;  // EngineOutput::text of every message, in order
  std::optional<FinishReason> finish;
  int completion_tokens = -1;        // of the last message
  int messages_after_finish = 0;
  std::string error;
  std::string text() const {
    std::string t;
    for (const auto& p : pieces) t += p;
    return t;
  }
};

using Choices = std::map<int, Choice>;  // by choice index

inline OutputCallback collect_into(Choices& out) {
  return [&out](const EngineOutput& o) {
    Choice& c = out[o.index];
    if (c.finish) ++c.messages_after_finish;
    c.tokens.insert(c.tokens.end(), o.token_ids.begin(), o.token_ids.end());
    c.pieces.push_back(o.text);
    c.completion_tokens = o.completion_tokens;
    if (o.finish_reason) c.finish = o.finish_reason;
    if (!o.error.empty()) c.error = o.error;
  };
}

// Submits and steps the engine on this thread until nothing is left to do.
inline Choices run_alone(Engine& engine, EngineRequest r) {
  Choices out;
  engine.submit(std::move(r), collect_into(out));
  int steps = 0;
  while (engine.has_work()) {
    engine.step();
    REQUIRE(++steps < 10000);
  }
  return out;
}

// Strict UTF-8 (RFC 3629): no stray continuation bytes, no truncated, overlong or surrogate
// sequences, nothing above U+10FFFF.
inline bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated at the end
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

// The embedded model (models/iris-tiny) and its byte-level BPE tokenizer on the CPU backend.
struct IrisTiny {
  std::unique_ptr<Backend> backend = make_cpu_backend(2);
  std::unique_ptr<Checkpoint> ck;
  ModelConfig cfg;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  IrisTiny() {
    const std::string dir = std::string(IRIS_SOURCE_DIR) + "/models/iris-tiny";
    ck = Checkpoint::open(dir);
    cfg = ModelConfig::from_dir(dir);
    model = load_model(*ck, cfg, *backend);
    tok = Tokenizer::from_dir(dir);
  }
  std::unique_ptr<Engine> engine(int max_num_seqs = 8) const {
    EngineConfig ec;
    ec.num_kv_blocks = 256;
    ec.max_num_seqs = max_num_seqs;
    ec.max_num_batched_tokens = 256;
    return std::make_unique<Engine>(*backend, *model, ec, tok.get());
  }
};

// The text a client must see for `tokens` generated after `prompt`, before any stop-string
// cut: the decode of prompt + tokens minus the decode of the prompt (a SentencePiece
// output keeps the leading space of its first word because it continues the prompt).
inline std::string reference_text(const Tokenizer& tok, const std::vector<int32_t>& prompt,
                                  const std::vector<int32_t>& tokens, bool skip_special) {
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), tokens.begin(), tokens.end());
  const std::string head = tok.decode(prompt, skip_special);
  const std::string full = tok.decode(all, skip_special);
  REQUIRE(full.compare(0, head.size(), head) == 0);
  return full.substr(head.size());
}

// Where the text of `tokens` must be cut under the stop-string rule: the earliest match of
// any stop string whose end lies beyond the text of the first min_tokens tokens. That text
// is the part of the full text that the decode of those tokens alone already agrees with,
// so a character they leave unfinished (decoded as U+FFFD) belongs to the token that
// completes it. nullopt when no match qualifies.
inline std::optional<size_t> reference_cut(const Tokenizer& tok, const std::vector<int32_t>& prompt,
                                           const std::vector<int32_t>& tokens,
                                           const SamplingParams& p) {
  const std::string full = reference_text(tok, prompt, tokens, p.skip_special_tokens);
  const size_t first = std::min<size_t>(tokens.size(), static_cast<size_t>(p.min_tokens));
  const std::string head = reference_text(
      tok, prompt, std::vector<int32_t>(tokens.begin(), tokens.begin() + first), p.skip_special_tokens);
  size_t floor = 0;
  while (floor < head.size() && floor < full.size() && head[floor] == full[floor]) ++floor;
  while (floor > 0 && floor < full.size() && (static_cast<unsigned char>(full[floor]) & 0xC0) == 0x80)
    --floor;
  std::optional<size_t> cut;
  for (const std::string& s : p.stop) {
    if (s.empty()) continue;
    const size_t from = floor >= s.size() ? floor - s.size() + 1 : 0;
    const size_t at = full.find(s, from);
    if (at != std::string::npos && (!cut || at < *cut)) cut = at;
  }
  return cut;
}

// Checks a finished choice against the rules a client relies on:
//  * every streamed piece is valid UTF-8, and nothing arrives after the finishing message;
//  * completion_tokens counts the streamed tokens;
//  * the streamed text is the decode of all streamed tokens, cut before the first stop-string
//    match that counts (reference_cut), and such a match completed on the last token (the
//    choice stopped as soon as it could);
//  * the finish reason is `stop` for a stop string, EOS or a stop id, `length` at max_tokens.
// Aborted choices are checked by the caller.
inline void check_choice(const Tokenizer& tok, const std::vector<int32_t>& prompt, const Choice& c,
                         const SamplingParams& p, const std::vector<int32_t>& eos) {
  REQUIRE(c.error.empty());
  REQUIRE(c.finish.has_value());
  CHECK(c.messages_after_finish == 0);
  for (const std::string& piece : c.pieces) {
    INFO("piece '" << piece << "'");
    CHECK(valid_utf8(piece));
  }
  CHECK(c.completion_tokens == static_cast<int>(c.tokens.size()));
  const std::string full = reference_text(tok, prompt, c.tokens, p.skip_special_tokens);
  const std::optional<size_t> cut = reference_cut(tok, prompt, c.tokens, p);
  INFO("tokens " << c.tokens.size() << ", reference text '" << full << "', streamed '" << c.text()
                 << "'");
  if (cut) {
    CHECK(c.text() == full.substr(0, *cut));
    CHECK(*c.finish == FinishReason::kStop);
    std::vector<int32_t> before(c.tokens.begin(), c.tokens.end() - 1);
    CHECK_FALSE(reference_cut(tok, prompt, before, p).has_value());
    return;
  }
  CHECK(c.text() == full);
  REQUIRE_FALSE(c.tokens.empty());
  const int32_t last = c.tokens.back();
  bool stop_id = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), last) != p.stop_token_ids.end();
  if (!p.ignore_eos) stop_id = stop_id || std::find(eos.begin(), eos.end(), last) != eos.end();
  if (stop_id && static_cast<int>(c.tokens.size()) >= p.min_tokens) {
    CHECK(*c.finish == FinishReason::kStop);
  } else {
    CHECK(*c.finish == FinishReason::kLength);
    CHECK(static_cast<int>(c.tokens.size()) == p.max_tokens);
  }
}

}  // namespace iris::test
