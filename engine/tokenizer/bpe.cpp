// BPE model (GPT-2/Llama-3/Qwen byte-level vocabularies and SentencePiece-style vocabularies
// with byte_fallback). A word starts as one symbol per character; merges are applied in rank
// order with a priority queue over a linked list of symbols, so a long word costs
// O(n log n), not a rescan per merge. Results are kept in a bounded, sharded word cache.
#include <array>
#include <mutex>
#include <queue>

#include "engine/core/check.h"
#include "engine/tokenizer/components.h"
#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/vocab.h"

namespace iris::tok {
namespace {

// Word -> ids cache. Shards keep lock contention low across encode threads; a full shard is
// cleared (cheap, and long-running servers see a stable working set of words).
class WordCache {
 public:
  static constexpr size_t kShards = 16;
  static constexpr size_t kShardCapacity = 4096;
  static constexpr size_t kMaxWordBytes = 256;

  bool get(std::string_view word, std::vector<int32_t>& out) const {
    if (word.size() > kMaxWordBytes) return false;
    auto& shard = shards_[StringHash{}(word) % kShards];
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.map.find(word);
    if (it == shard.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void put(std::string_view word, const int32_t* ids, size_t n) const {
    if (word.size() > kMaxWordBytes) return;
    auto& shard = shards_[StringHash{}(word) % kShards];
    std::lock_guard<std::mutex> lock(shard.mu);
    if (shard.map.size() >= kShardCapacity) shard.map.clear();
    shard.map.emplace(std::string(word), std::vector<int32_t>(ids, ids + n));
  }

 private:
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  mutable std::array<Shard, kShards> shards_;
};

struct MergeInfo {
  int32_t rank;
  int32_t new_id;
};

class BpeModel : public VocabModel<Model> {
 public:
  explicit BpeModel(const json& config);
  void tokenize(std::string_view piece, std::vector<int32_t>& out) const override;

 private:
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const MergeInfo* find_merge(int32_t a, int32_t b) const {
    auto it = merges_.find(key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;
  void merge_word(std::vector<int32_t>& ids) const;

  std::unordered_map<uint64_t, MergeInfo> merges_;
  std::optional<std::string> unk_token_;
  std::string prefix_;  // continuing_subword_prefix
  std::string suffix_;  // end_of_word_suffix
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};  // id of "<0xXX>", -1 when absent
  bool all_bytes_present_ = false;
  WordCache cache_;
};

std::pair<std::string, std::string> parse_merge(const json& m, size_t index) {
  if (m.is_string()) {
    const std::string& s = m.get_ref<const std::string&>();
    size_t sp = s.find(' ');
    IRIS_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos)
        << "tokenizer.json: model.merges[" << index << "] = '" << s
        << "' is not two tokens separated by one space";
    return {s.substr(0, sp), s.substr(sp + 1)};
  }
  IRIS_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
      << "tokenizer.json: model.merges[" << index << "] must be \"a b\" or [\"a\", \"b\"], got "
      << m.dump();
  return {m[0].get<std::string>(), m[1].get<std::string>()};
}

BpeModel::BpeModel(const json& config) {
  const json& vocab = require(config, "vocab", "model BPE");
  IRIS_CHECK(vocab.is_object()) << "tokenizer.json: BPE model.vocab must be an object {token: id}";
  vocab_.token_to_id.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    IRIS_CHECK(it.value().is_number_integer() && it.value().get<int64_t>() >= 0 &&
               it.value().get<int64_t>() < (int64_t{1} << 31))
        << "tokenizer.json: model.vocab['" << it.key() << "'] must be a non-negative integer id";
    vocab_.add(it.key(), it.value().get<int32_t>());
  }
  if (config.contains("unk_token") && !config["unk_token"].is_null()) {
    unk_token_ = get_string(config, "unk_token", "model BPE");
  }
  prefix_ = get_string(config, "continuing_subword_prefix", "model BPE", "");
  suffix_ = get_string(config, "end_of_word_suffix", "model BPE", "");
  fuse_unk_ = get_bool(config, "fuse_unk", false);
  byte_fallback_ = get_bool(config, "byte_fallback", false);
  ignore_merges_ = get_bool(config, "ignore_merges", false);

  const json& merges = require(config, "merges", "model BPE");
  IRIS_CHECK(merges.is_array()) << "tokenizer.json: model.merges must be a list";
  merges_.reserve(merges.size() * 2);
  for (size_t i = 0; i < merges.size(); ++i) {
    auto [a, b] = parse_merge(merges[i], i);
    const int32_t* a_id = vocab_.find(a);
    const int32_t* b_id = vocab_.find(b);
    IRIS_CHECK(a_id && b_id) << "tokenizer.json: merge " << i << " ('" << a << "', '" << b
                             << "') uses a token missing from the vocab";
    std::string merged = a + (prefix_.empty() || b.compare(0, prefix_.size(), prefix_) != 0
                                  ? b
                                  : b.substr(prefix_.size()));
    const int32_t* new_id = vocab_.find(merged);
    IRIS_CHECK(new_id) << "tokenizer.json: merge " << i << " result '" << merged
                       << "' is missing from the vocab";
    merges_.insert_or_assign(key(*a_id, *b_id), MergeInfo{static_cast<int32_t>(i), *new_id});
  }
  all_bytes_present_ = true;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const int32_t* id = vocab_.find(name);
    byte_ids_[b] = id ? *id : -1;
    all_bytes_present_ = all_bytes_present_ && id;
  }
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
  std::optional<int32_t> pending_unk;
  std::string buf;
  size_t i = 0;
  while (i < word.size()) {
    size_t start = i;
    i += utf8_len(static_cast<unsigned char>(word[i]));
    std::string_view ch = word.substr(start, i - start);
    std::string_view s = ch;
    if ((start != 0 && !prefix_.empty()) || (i == word.size() && !suffix_.empty())) {
      buf.clear();
      if (start != 0) buf += prefix_;
      buf += ch;
      if (i == word.size()) buf += suffix_;
      s = buf;
    }
    if (const int32_t* id = vocab_.find(s)) {
      if (pending_unk) ids.push_back(*pending_unk);
      pending_unk.reset();
      ids.push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      bool ok = true;
      for (unsigned char c : s) ok = ok && byte_ids_[c] >= 0;
      if (ok) {
        // HF does not flush a pending unk here; it stays pending until the next known symbol.
        for (unsigned char c : s) ids.push_back(byte_ids_[c]);
        continue;
      }
    }
    if (unk_token_) {
      const int32_t* unk = vocab_.find(*unk_token_);
      IRIS_CHECK(unk) << "tokenizer.json: BPE unk_token '" << *unk_token_ << "' is not in the vocab";
      if (pending_unk && !fuse_unk_) ids.push_back(*pending_unk);
      pending_unk = *unk;
    }
  }
  if (pending_unk) ids.push_back(*pending_unk);
}

void BpeModel::merge_word(std::vector<int32_t>& ids) const {
  const int n = static_cast<int>(ids.size());
  if (n < 2) return;
  struct Symbol {
    int32_t id;
    int prev, next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Symbol> sym(n);
  for (int i = 0; i < n; ++i) sym[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  for (int i = 0; i + 1 < n; ++i) {
    if (auto* m = find_merge(ids[i], ids[i + 1])) queue.push({m->rank, i, m->new_id});
  }
  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[left.next];
    const MergeInfo* m = find_merge(left.id, right.id);
    if (!m || m->new_id != top.new_id) continue;  // stale entry
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (auto* pm = find_merge(sym[left.prev].id, left.id)) {
        queue.push({pm->rank, left.prev, pm->new_id});
      }
    }
    if (left.next >= 0) {
      if (auto* nm = find_merge(left.id, sym[left.next].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  ids.clear();
  for (int i = 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
}

void BpeModel::tokenize(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    if (const int32_t* id = vocab_.find(piece)) {
      out.push_back(*id);
      return;
    }
  }
  if (cache_.get(piece, out)) return;
  size_t start = out.size();
  std::vector<int32_t> ids;
  ids.reserve(piece.size());
  initial_symbols(piece, ids);
  merge_word(ids);
  out.insert(out.end(), ids.begin(), ids.end());
  cache_.put(piece, out.data() + start, out.size() - start);
}

}  // namespace

std::unique_ptr<Model> make_bpe_model(const json& config) { return std::make_unique<BpeModel>(config); }

}  // namespace iris::tok
