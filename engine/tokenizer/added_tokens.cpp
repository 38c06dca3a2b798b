// AddedVocabulary: see added_tokens.h. Matching walks a byte trie from each position and takes
// the longest token there, which gives the same non-overlapping leftmost-longest matches as
// the aho-corasick automaton HF uses.
#include "engine/tokenizer/added_tokens.h"

#include "engine/tokenizer/components.h"
#include "engine/tokenizer/unicode.h"

namespace iris::tok {
namespace {
// HF's single_word test uses the regex \w at the boundary.
bool is_word_char(char32_t c) { return c == '_' || is_alphanumeric(c) || is_combining_mark(c); }

char32_t last_char(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return next_code_point(s, i);
}
}  // namespace

void AddedVocabulary::Trie::insert(std::string_view key, int32_t token_index) {
  if (terminal.empty()) terminal.push_back(-1);
  int32_t node = 0;
  for (unsigned char c : key) {
    uint64_t k = (static_cast<uint64_t>(node) << 8) | c;
    auto it = children.find(k);
    if (it == children.end()) {
      int32_t next = static_cast<int32_t>(terminal.size());
      terminal.push_back(-1);
      children.emplace(k, next);
      node = next;
    } else {
      node = it->second;
    }
  }
  terminal[node] = token_index;
}

std::pair<size_t, int32_t> AddedVocabulary::Trie::longest(std::string_view text, size_t pos) const {
  std::pair<size_t, int32_t> best{pos, -1};
  if (terminal.empty()) return best;
  int32_t node = 0;
  for (size_t k = pos; k < text.size(); ++k) {
    auto it = children.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[k]));
    if (it == children.end()) break;
    node = it->second;
    if (terminal[node] >= 0) best = {k + 1, terminal[node]};
  }
  return best;
}

void AddedVocabulary::add(AddedToken token) {
  if (auto it = by_content_.find(token.content); it != by_content_.end()) {
    size_t index = static_cast<size_t>(it->second);
    by_id_.erase(tokens_[index].id);
    by_id_[token.id] = index;
    tokens_[index] = std::move(token);
    return;
  }
  by_content_.emplace(token.content, static_cast<int32_t>(tokens_.size()));
  by_id_[token.id] = tokens_.size();
  tokens_.push_back(std::move(token));
}

void AddedVocabulary::build(const Normalizer* normalizer) {
  raw_trie_ = {};
  normalized_trie_ = {};
  any_normalized_ = false;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    if (t.content.empty()) continue;
    if (t.normalized) {
      std::string key = t.content;
      if (normalizer) normalizer->normalize(key);
      if (key.empty()) continue;
      normalized_trie_.insert(key, static_cast<int32_t>(i));
      any_normalized_ = true;
    } else {
      raw_trie_.insert(t.content, static_cast<int32_t>(i));
    }
  }
}

std::vector<AddedSplit> AddedVocabulary::split(
    std::string_view text, bool normalized_pass, bool parse_special,
    const std::vector<std::pair<size_t, size_t>>* literal) const {
  auto in_literal = [literal](size_t b, size_t e) {
    if (!literal) return false;
    for (const auto& [lb, le] : *literal)
      if (b < le && lb < e) return true;
    return false;
  };
  std::vector<AddedSplit> out;
  const Trie& trie = normalized_pass ? normalized_trie_ : raw_trie_;
  if (trie.terminal.empty() || (normalized_pass && !any_normalized_)) {
    if (!text.empty()) out.push_back({-1, 0, text.size()});
    return out;
  }
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    auto [end, index] = trie.longest(text, pos);
    if (index < 0) {
      pos += utf8_len(static_cast<unsigned char>(text[pos]));
      continue;
    }
    const AddedToken& t = tokens_[static_cast<size_t>(index)];
    size_t start = pos, stop = end;
    pos = end;
    if (t.special && (!parse_special || in_literal(start, stop))) continue;
    if (start < start_offset) continue;  // inside the whitespace an rstrip token consumed
    if (t.single_word) {
      bool start_ok = start == 0 || !is_word_char(last_char(text.substr(0, start)));
      size_t j = stop;
      bool stop_ok = stop == text.size() || !is_word_char(next_code_point(text, j));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) {
      size_t s = start;
      while (s > start_offset) {
        size_t prev = s - 1;
        while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
        size_t j = prev;
        if (!is_whitespace(next_code_point(text, j))) break;
        s = prev;
      }
      start = s;
    }
    if (t.rstrip) {
      while (stop < text.size()) {
        size_t j = stop;
        if (!is_whitespace(next_code_point(text, j))) break;
        stop = j;
      }
      pos = stop;
    }
    if (start_offset < start) out.push_back({-1, start_offset, start});
    out.push_back({t.id, start, stop});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({-1, start_offset, text.size()});
  return out;
}

const AddedToken* AddedVocabulary::by_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::id_of(std::string_view content) const {
  auto it = by_content_.find(content);
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[static_cast<size_t>(it->second)].id;
}

bool AddedVocabulary::is_special_id(int32_t id) const {
  const AddedToken* t = by_id(id);
  return t && t->special;
}

void AddedVocabulary::mark_special(std::string_view content) {
  auto it = by_content_.find(content);
  if (it != by_content_.end()) tokens_[static_cast<size_t>(it->second)].special = true;
}

int32_t AddedVocabulary::max_id() const {
  int32_t m = -1;
  for (const auto& t : tokens_) m = std::max(m, t.id);
  return m;
}

}  // namespace iris::tok
