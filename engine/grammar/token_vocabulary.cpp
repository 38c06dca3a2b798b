// TokenVocabulary: byte strings per token and the depth-first trie over them.
#include "engine/grammar/token_vocabulary.h"

#include <algorithm>
#include <numeric>
#include <string_view>

#include "engine/core/check.h"
#include "engine/tokenizer/tokenizer.h"

namespace iris::grammar {

namespace {
constexpr size_t kMaxTokenBytes = 65535;  // depth is 16 bits
}

TokenVocabulary::TokenVocabulary(std::vector<std::optional<std::string>> token_bytes,
                                 int32_t size, std::vector<int32_t> eos_ids)
    : bytes_(std::move(token_bytes)), size_(size), eos_ids_(std::move(eos_ids)) {
  IRIS_CHECK(size_ > 0) << "the vocabulary is empty";
  if (bytes_.size() > static_cast<size_t>(size_)) bytes_.resize(static_cast<size_t>(size_));
  for (int32_t e : eos_ids_) {
    IRIS_CHECK(e >= 0 && e < size_) << "EOS id " << e << " is outside the vocabulary [0, " << size_ << ")";
    if (static_cast<size_t>(e) < bytes_.size()) bytes_[e].reset();  // EOS never inside a span
  }
  std::vector<int32_t> ids;
  for (size_t i = 0; i < bytes_.size(); ++i) {
    auto& b = bytes_[i];
    if (b && (b->empty() || b->size() > kMaxTokenBytes)) b.reset();
    if (b) ids.push_back(static_cast<int32_t>(i));
  }
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t c) {
    const int cmp = bytes_[a]->compare(*bytes_[c]);
    return cmp < 0 || (cmp == 0 && a < c);
  });
  // Sorted byte strings: each token shares a prefix with the previous one; nodes below that
  // prefix close, new nodes open for the rest.
  std::vector<int32_t> path;  // node indices along the current byte string
  std::string_view prev;
  auto close_to = [&](size_t depth) {
    while (path.size() > depth) {
      trie_[path.back()].subtree_end = static_cast<int32_t>(trie_.size());
      path.pop_back();
    }
  };
  for (int32_t id : ids) {
    const std::string_view s = *bytes_[id];
    size_t lcp = 0;
    while (lcp < s.size() && lcp < prev.size() && s[lcp] == prev[lcp]) ++lcp;
    close_to(lcp);
    for (size_t d = lcp; d < s.size(); ++d) {
      const int32_t parent = path.empty() ? -1 : path.back();
      path.push_back(static_cast<int32_t>(trie_.size()));
      trie_.push_back(TrieNode{parent, 0, 0, 0, static_cast<uint16_t>(d + 1), static_cast<uint8_t>(s[d])});
    }
    TrieNode& end = trie_[path.back()];
    if (end.tokens_end == end.tokens_begin) end.tokens_begin = static_cast<int32_t>(trie_tokens_.size());
    trie_tokens_.push_back(id);
    end.tokens_end = static_cast<int32_t>(trie_tokens_.size());
    max_depth_ = std::max(max_depth_, static_cast<int>(s.size()));
    prev = s;
  }
  close_to(0);
}

std::shared_ptr<const TokenVocabulary::LocalMask> TokenVocabulary::find_local_mask(uint64_t signature) const {
  std::lock_guard<std::mutex> lock(local_mu_);
  auto it = local_masks_.find(signature);
  return it == local_masks_.end() ? nullptr : it->second;
}

void TokenVocabulary::store_local_mask(uint64_t signature, std::shared_ptr<const LocalMask> mask) const {
  constexpr size_t kMaxShared = 512;  // about 10 MB with 150k tokens
  std::lock_guard<std::mutex> lock(local_mu_);
  if (local_masks_.size() >= kMaxShared) local_masks_.clear();
  local_masks_.emplace(signature, std::move(mask));
}

bool TokenVocabulary::is_eos(int32_t id) const {
  return std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end();
}

std::shared_ptr<const TokenVocabulary> TokenVocabulary::from_tokenizer(
    const Tokenizer& tokenizer, int32_t size, std::vector<int32_t> eos_ids) {
  const int32_t n = std::min(size, tokenizer.vocab_size());
  std::vector<std::optional<std::string>> bytes(static_cast<size_t>(std::max(n, 0)));
  for (int32_t id = 0; id < n; ++id) bytes[id] = tokenizer.token_bytes(id);
  return std::make_shared<const TokenVocabulary>(std::move(bytes), size, std::move(eos_ids));
}

}  // namespace iris::grammar
