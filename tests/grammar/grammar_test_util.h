// Helpers shared by the constraint tests: small vocabularies, acceptance checks, and random
// walks that pick uniformly among the allowed tokens.
#pragma once

#include <catch2/catch.hpp>

#include <cctype>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/grammar/constraint.h"

namespace iris::test {

// One token per byte (id = byte) and EOS = 256.
inline std::shared_ptr<const grammar::TokenVocabulary> byte_vocabulary() {
  std::vector<std::optional<std::string>> bytes(256);
  for (int b = 0; b < 256; ++b) bytes[b] = std::string(1, static_cast<char>(b));
  return std::make_shared<const grammar::TokenVocabulary>(std::move(bytes), 257, std::vector<int32_t>{256});
}

inline bool accepts(const std::shared_ptr<const grammar::CompiledConstraint>& c, const std::string& text) {
  grammar::Matcher m(c);
  return m.accept_bytes(text) && m.is_complete();
}

inline std::vector<int32_t> allowed_ids(const grammar::Matcher& m) {
  std::vector<uint32_t> words(static_cast<size_t>(m.mask_words()));
  m.fill_next_token_bitmask(words.data());
  std::vector<int32_t> ids;
  for (int32_t t = 0; t < m.vocab_size(); ++t)
    if (words[t >> 5] >> (t & 31) & 1u) ids.push_back(t);
  return ids;
}

struct Walk {
  std::string text;
  std::vector<int32_t> tokens;
  bool complete = false;  // ended by EOS (or terminated)
  bool dead_end = false;  // the mask was empty before completion
};

// Picks uniformly among the allowed tokens, half of the time among those without letters or
// digits (so strings and arrays end within a few hundred tokens on a large vocabulary); EOS
// (when allowed) with probability `p_eos` once the output is complete, so outputs are not
// always minimal.
inline Walk random_walk(const std::shared_ptr<const grammar::CompiledConstraint>& c, uint32_t seed,
                        int max_tokens, double p_eos = 0.3) {
  auto punct_only = [](const std::string& s) {
    for (char ch : s)
      if (std::isalnum(static_cast<unsigned char>(ch)) || static_cast<unsigned char>(ch) >= 0x80) return false;
    return true;
  };
  grammar::Matcher m(c);
  std::mt19937 rng(seed);
  Walk w;
  const auto& vocab = c->vocabulary();
  std::vector<uint32_t> words(static_cast<size_t>(m.mask_words()));
  for (int step = 0; step < max_tokens; ++step) {
    if (m.is_terminated()) {
      w.complete = true;
      return w;
    }
    m.fill_next_token_bitmask(words.data());
    std::vector<int32_t> ids, eos, punct;
    for (int32_t t = 0; t < m.vocab_size(); ++t)
      if (words[t >> 5] >> (t & 31) & 1u) {
        if (vocab.is_eos(t)) {
          eos.push_back(t);
          continue;
        }
        ids.push_back(t);
        if (punct_only(*vocab.bytes(t))) punct.push_back(t);
      }
    if (!eos.empty() != m.is_complete()) FAIL("EOS allowed is not the same as complete");
    if (ids.empty() && eos.empty()) {
      w.dead_end = true;
      return w;
    }
    int32_t pick;
    if (!eos.empty() && (ids.empty() || std::uniform_real_distribution<double>(0, 1)(rng) < p_eos))
      pick = eos[0];
    else if (!punct.empty() && rng() % 2 == 0)
      pick = punct[rng() % punct.size()];
    else
      pick = ids[rng() % ids.size()];
    REQUIRE(m.accept_token(pick));
    if (vocab.is_eos(pick)) {
      w.complete = true;
      return w;
    }
    w.tokens.push_back(pick);
    w.text += *vocab.bytes(pick);
  }
  w.complete = m.is_terminated();
  return w;
}

}  // namespace iris::test
