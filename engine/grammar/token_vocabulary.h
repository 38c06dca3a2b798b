// A model's vocabulary as byte strings, for matching tokens against byte-level grammars:
// per token id its raw bytes (or "never allowed inside a constrained span": special and
// unknown ids, padding rows of the LM head, tokens without bytes), the EOS ids, and a trie of
// all byte strings laid out in depth-first order so a mask walk can skip a whole subtree with
// one jump.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <string>
#include <vector>

namespace iris {
class Tokenizer;
}

namespace iris::grammar {

class TokenVocabulary {
 public:
  // token_bytes[id] for ids [0, size); ids past token_bytes.size() are never allowed.
  // `size` is the number of logits (the model's vocab_size, which may exceed the tokenizer's).
  TokenVocabulary(std::vector<std::optional<std::string>> token_bytes, int32_t size,
                  std::vector<int32_t> eos_ids);
  static std::shared_ptr<const TokenVocabulary> from_tokenizer(const Tokenizer& tokenizer,
                                                               int32_t size,
                                                               std::vector<int32_t> eos_ids);

  int32_t size() const { return size_; }
  int32_t mask_words() const { return (size_ + 31) / 32; }
  // nullptr when the token may never appear inside a constrained span.
  const std::string* bytes(int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= bytes_.size() || !bytes_[id]) return nullptr;
    return &*bytes_[id];
  }
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  bool is_eos(int32_t id) const;

  // Depth-first trie of the allowed tokens' bytes. Node i (depth >= 1) is reached from its
  // parent by `byte`; nodes [i + 1, subtree_end) are its descendants; the tokens whose bytes
  // end exactly at it are trie_tokens()[tokens_begin, tokens_end).
  struct TrieNode {
    int32_t parent;  // -1 at depth 1
    int32_t subtree_end;
    int32_t tokens_begin;
    int32_t tokens_end;
    uint16_t depth;
    uint8_t byte;
  };
  const std::vector<TrieNode>& trie() const { return trie_; }
  const std::vector<int32_t>& trie_tokens() const { return trie_tokens_; }
  int max_depth() const { return max_depth_; }

  // The part of a mask that holds in any context, with the trie subtrees that need the real
  // one (see automaton.h). Kept here, keyed by a structural signature of the grammar fragment
  // it came from, so every constraint compiled for this vocabulary shares it: the inside of a
  // JSON string is walked once per vocabulary, not once per schema. Thread-safe.
  struct LocalMask {
    std::vector<uint32_t> certain;
    std::vector<int32_t> uncertain;
    size_t count = 0;  // bits set in `certain`
  };
  std::shared_ptr<const LocalMask> find_local_mask(uint64_t signature) const;
  void store_local_mask(uint64_t signature, std::shared_ptr<const LocalMask> mask) const;

 private:
  std::vector<std::optional<std::string>> bytes_;
  int32_t size_;
  std::vector<int32_t> eos_ids_;
  std::vector<TrieNode> trie_;
  std::vector<int32_t> trie_tokens_;
  int max_depth_ = 0;
  mutable std::mutex local_mu_;
  mutable std::unordered_map<uint64_t, std::shared_ptr<const LocalMask>> local_masks_;
};

}  // namespace iris::grammar
