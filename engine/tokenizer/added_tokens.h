// Added tokens (special and non-special) and the first step of encoding: splitting the input
// on them before anything else, exactly as HF's AddedVocabulary does (leftmost-longest match,
// single_word / lstrip / rstrip, a second pass on normalized text for normalized=true tokens).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/tokenizer/vocab.h"

namespace iris::tok {

class Normalizer;

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A piece of the input: an added token (id >= 0) or a text span to tokenize (id == -1).
struct AddedSplit {
  int32_t id;
  size_t begin, end;
};

class AddedVocabulary {
 public:
  // Registers a token; a later token with the same content replaces the earlier one.
  void add(AddedToken token);
  // Builds the match tries; call after all add() calls, with the tokenizer's normalizer.
  void build(const Normalizer* normalizer);

  // Splits `text` on the tokens of one trie (normalized=false tokens for the raw input,
  // normalized=true tokens for normalized text). Special tokens are skipped when
  // !parse_special, and where they overlap one of the `literal` byte ranges of `text`.
  // Empty text spans are not returned.
  std::vector<AddedSplit> split(std::string_view text, bool normalized_pass, bool parse_special,
                                const std::vector<std::pair<size_t, size_t>>* literal = nullptr) const;

  const AddedToken* by_id(int32_t id) const;
  std::optional<int32_t> id_of(std::string_view content) const;
  bool is_special_id(int32_t id) const;
  void mark_special(std::string_view content);
  int32_t max_id() const;  // -1 when empty
  bool empty() const { return tokens_.empty(); }

 private:
  struct Trie {
    std::unordered_map<uint64_t, int32_t> children;  // (node << 8 | byte) -> node
    std::vector<int32_t> terminal;                   // node -> token index, -1 if none
    void insert(std::string_view key, int32_t token_index);
    // Longest key starting at text[pos]: (end, token index), or token index -1.
    std::pair<size_t, int32_t> longest(std::string_view text, size_t pos) const;
  };

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  TokenMap by_content_;
  Trie raw_trie_, normalized_trie_;
  bool any_normalized_ = false;
};

}  // namespace iris::tok
