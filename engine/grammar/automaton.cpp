// PushdownAutomaton: stack interning, closure (expanding rule references down to byte
// classes), lazy transition tables and the trie walk that computes token masks.
#include "engine/grammar/automaton.h"

#include <algorithm>
#include <cstring>

#include "engine/core/check.h"

namespace iris::grammar {

namespace {
constexpr int32_t kUnknown = -2;
constexpr size_t kMaxCachedMasks = 4096;
constexpr size_t kMaxMaskBytes = size_t(32) << 20;  // per compiled constraint
constexpr int32_t kComplete = -1;        // the empty stack
constexpr int32_t kUnknownContext = -2;  // the bottom of a local stack
constexpr int kLocalFrames = 3;
constexpr size_t kSharedMinBytes = 64;
}  // namespace

size_t PushdownAutomaton::VecHash::operator()(const std::vector<int32_t>& v) const {
  uint64_t h = 1469598103934665603ull;
  for (int32_t x : v) h = (h ^ static_cast<uint32_t>(x)) * 1099511628211ull;
  return static_cast<size_t>(h ^ (h >> 29));
}

PushdownAutomaton::PushdownAutomaton(Grammar grammar) : g_(std::move(grammar)) {
  std::vector<int32_t> out;
  ++stamp_;
  complete_seen_ = false;
  context_seen_ = false;
  for (int32_t alt : g_.alternatives.at(g_.root)) closure(intern_node(alt, -1), out);
  IRIS_CHECK(!out.empty()) << "the constraint admits no output at all";
  initial_ = intern_state(std::move(out));
}

int32_t PushdownAutomaton::intern_node(int32_t pos, int32_t parent) {
  const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(pos)) << 32) |
                       static_cast<uint32_t>(parent);
  auto [it, inserted] = node_ids_.emplace(key, static_cast<int32_t>(nodes_.size()));
  if (inserted) nodes_.push_back(Node{pos, parent});
  return it->second;
}

void PushdownAutomaton::closure(int32_t node, std::vector<int32_t>& out) {
  if (node == kComplete) {
    if (!complete_seen_) out.push_back(kComplete);
    complete_seen_ = true;
    return;
  }
  if (node == kUnknownContext) {
    if (!context_seen_) out.push_back(kUnknownContext);
    context_seen_ = true;
    return;
  }
  if (visited_.size() < nodes_.size()) visited_.resize(nodes_.size() * 2, 0);
  if (visited_[node] == stamp_) return;
  visited_[node] = stamp_;
  const Node n = nodes_[node];
  const Grammar::Element e = g_.elements[n.pos];
  switch (e.op) {
    case Grammar::Op::kEnd:
      closure(n.parent, out);
      return;
    case Grammar::Op::kClass:
      out.push_back(node);
      return;
    case Grammar::Op::kRule: {
      // A reference in tail position returns straight to the caller's caller: repetition
      // written as right recursion keeps a flat stack.
      const int32_t ret = g_.elements[n.pos + 1].op == Grammar::Op::kEnd
                              ? n.parent
                              : intern_node(n.pos + 1, n.parent);
      for (int32_t alt : g_.alternatives[e.arg]) closure(intern_node(alt, ret), out);
      return;
    }
  }
}

int32_t PushdownAutomaton::intern_state(std::vector<int32_t> stacks) {
  std::sort(stacks.begin(), stacks.end());
  auto it = state_ids_.find(stacks);
  if (it != state_ids_.end()) return it->second;
  const int32_t id = static_cast<int32_t>(stacks_.size());
  ByteSet first;
  bool accepting = false, context = false;
  for (int32_t node : stacks) {
    if (node == kComplete) accepting = true;
    else if (node == kUnknownContext) context = true;
    else first |= g_.classes[g_.elements[nodes_[node].pos].arg];
  }
  state_ids_.emplace(stacks, id);
  stacks_.push_back(std::move(stacks));
  first_.push_back(first);
  accepting_.push_back(accepting ? 1 : 0);
  reaches_context_.push_back(context ? 1 : 0);
  local_of_.push_back(kUnknown);
  tables_.emplace_back();
  return id;
}

int32_t PushdownAutomaton::compute_next(int32_t state, uint8_t byte) {
  std::vector<int32_t> out;
  ++stamp_;
  complete_seen_ = false;
  context_seen_ = false;
  const std::vector<int32_t> stacks = stacks_[state];  // intern_state may reallocate stacks_
  for (int32_t node : stacks) {
    if (node < 0) continue;
    const Node n = nodes_[node];
    if (!g_.classes[g_.elements[n.pos].arg].test(byte)) continue;
    closure(intern_node(n.pos + 1, n.parent), out);
  }
  if (out.empty()) return kDead;
  return intern_state(std::move(out));
}

int32_t PushdownAutomaton::next_locked(int32_t state, uint8_t byte) {
  if (!first_[state].test(byte)) return kDead;
  int32_t* table = tables_[state].get();
  if (table && table[byte] != kUnknown) return table[byte];
  const int32_t nx = compute_next(state, byte);
  if (!table) {
    tables_[state].reset(new int32_t[256]);
    table = tables_[state].get();
    std::fill(table, table + 256, kUnknown);
  }
  table[byte] = nx;
  return nx;
}

int32_t PushdownAutomaton::next(int32_t state, uint8_t byte) {
  std::lock_guard<std::mutex> lock(mu_);
  return next_locked(state, byte);
}

int32_t PushdownAutomaton::walk(int32_t state, std::string_view bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  for (char c : bytes) {
    state = next_locked(state, static_cast<uint8_t>(c));
    if (state < 0) return kDead;
  }
  return state;
}

bool PushdownAutomaton::accepting(int32_t state) {
  std::lock_guard<std::mutex> lock(mu_);
  return accepting_[state] != 0;
}

bool PushdownAutomaton::can_continue(int32_t state) {
  std::lock_guard<std::mutex> lock(mu_);
  return first_[state].any();
}

int32_t PushdownAutomaton::local_state(int32_t state) {
  if (local_of_[state] != kUnknown) return local_of_[state];
  const std::vector<int32_t> stacks = stacks_[state];
  // The frames of each stack, top first.
  std::vector<std::vector<int32_t>> chains;
  for (int32_t node : stacks) {
    if (node < 0) continue;
    chains.emplace_back();
    for (int32_t n = node; n >= 0; n = nodes_[n].parent) chains.back().push_back(n);
  }
  // The lowest frame every stack passes through (their common tail's top): cutting below it
  // keeps everything the stacks differ in and drops only the shared context, e.g. inside a
  // JSON string the closing quote's frame is kept and what follows the string is not.
  int32_t common = -1;
  if (!chains.empty()) {
    size_t k = 0;
    while (true) {
      bool same = true;
      int32_t at = -1;
      for (const auto& c : chains) {
        if (k >= c.size()) {
          same = false;
          break;
        }
        const int32_t n = c[c.size() - 1 - k];
        if (at < 0) at = n;
        else if (n != at) same = false;
      }
      if (!same) break;
      common = at;
      ++k;
    }
  }
  bool use_common = common >= 0;
  if (use_common)
    for (const auto& c : chains) {
      const auto pos = std::find(c.begin(), c.end(), common);
      if (pos - c.begin() >= kLocalFrames * 2) use_common = false;  // deep: cut by depth instead
    }
  std::vector<int32_t> local;
  for (int32_t node : stacks)
    if (node < 0) local.push_back(node);
  for (const auto& c : chains) {
    size_t keep = 0;  // frames kept from the top
    int32_t bottom = kUnknownContext;
    if (use_common) {
      keep = static_cast<size_t>(std::find(c.begin(), c.end(), common) - c.begin()) + 1;
    } else {
      keep = std::min(c.size(), static_cast<size_t>(kLocalFrames));
    }
    if (keep == c.size()) bottom = nodes_[c.back()].parent;  // a short stack keeps its real bottom
    int32_t cut = bottom;
    for (size_t i = keep; i-- > 0;) cut = intern_node(nodes_[c[i]].pos, cut);
    local.push_back(cut);
  }
  std::sort(local.begin(), local.end());
  local.erase(std::unique(local.begin(), local.end()), local.end());
  const int32_t id = intern_state(std::move(local));
  local_of_[state] = id;
  return id;
}

size_t PushdownAutomaton::walk_trie(const TokenVocabulary& vocab, int32_t state, int32_t begin,
                                    int32_t end, int depth, uint32_t* words,
                                    std::vector<int32_t>* uncertain) {
  size_t set = 0;
  const auto& trie = vocab.trie();
  const auto& tokens = vocab.trie_tokens();
  int32_t* st = walk_states_.data();
  st[depth] = state;
  for (int32_t i = begin; i < end;) {
    const TokenVocabulary::TrieNode& t = trie[i];
    const int32_t from = st[t.depth - 1];
    // Inline fast path of next_locked.
    int32_t nx;
    if (!first_[from].test(t.byte)) {
      nx = kDead;
    } else {
      const int32_t* table = tables_[from].get();
      nx = table && table[t.byte] != kUnknown ? table[t.byte] : next_locked(from, t.byte);
    }
    if (nx < 0) {
      i = t.subtree_end;
      continue;
    }
    for (int32_t k = t.tokens_begin; k < t.tokens_end; ++k)
      words[tokens[k] >> 5] |= 1u << (tokens[k] & 31);
    set += static_cast<size_t>(t.tokens_end - t.tokens_begin);
    if (uncertain && reaches_context_[nx]) {
      if (t.subtree_end > i + 1) uncertain->push_back(i);
      i = t.subtree_end;
      continue;
    }
    st[t.depth] = nx;
    ++i;
  }
  return set;
}

void PushdownAutomaton::token_mask(int32_t state, const TokenVocabulary& vocab, uint32_t* words) {
  const int32_t nwords = vocab.mask_words();
  const size_t bytes = sizeof(uint32_t) * static_cast<size_t>(nwords);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = masks_.find(state);
  if (it != masks_.end()) {
    ++mask_hits_;
    const CachedMask& m = it->second;
    if (!m.words.empty()) {
      std::memcpy(words, m.words.data(), bytes);
    } else {
      std::memset(words, 0, bytes);
      for (int32_t t : m.ids) words[t >> 5] |= 1u << (t & 31);
    }
    return;
  }
  ++mask_misses_;
  walk_states_.resize(static_cast<size_t>(vocab.max_depth()) + 1);
  const int32_t n = static_cast<int32_t>(vocab.trie().size());
  const int32_t local = local_state(state);
  size_t count = 0;  // bits set
  if (reaches_context_[local]) {
    // The context is reachable before any byte: nothing to share, walk the real state.
    std::memset(words, 0, bytes);
    ++full_walks_;
    count = walk_trie(vocab, state, 0, n, 0, words, nullptr);
  } else {
    auto lit = local_masks_.find(local);
    if (lit == local_masks_.end()) {
      // Only broad states (many bytes may come next) have walks worth sharing; the signature
      // costs more than the walk of a narrow one.
      const uint64_t sig = first_[local].count() >= kSharedMinBytes ? local_signature(local) : 0;
      std::shared_ptr<const LocalMask> shared = sig ? vocab.find_local_mask(sig) : nullptr;
      if (shared) ++shared_local_hits_;
      if (!shared) {
        ++local_walks_;
        auto lm = std::make_shared<LocalMask>();
        lm->certain.assign(static_cast<size_t>(nwords), 0u);
        lm->count = walk_trie(vocab, local, 0, n, 0, lm->certain.data(), &lm->uncertain);
        shared = lm;
        if (sig) vocab.store_local_mask(sig, shared);
      }
      // Local masks are full words: bounded by count (32 MB at 150k tokens).
      if (local_masks_.size() >= kMaxMaskBytes / bytes) local_masks_.clear();
      lit = local_masks_.emplace(local, std::move(shared)).first;
    }
    const LocalMask& lm = *lit->second;
    std::memcpy(words, lm.certain.data(), bytes);
    count = lm.count;
    // Each uncertain subtree from the real state at its root (the root's bytes walked first).
    const auto& trie = vocab.trie();
    for (int32_t root : lm.uncertain) {
      path_.clear();
      for (int32_t k = root; k >= 0; k = trie[k].parent) path_.push_back(trie[k].byte);
      int32_t s = state;
      for (auto b = path_.rbegin(); b != path_.rend() && s >= 0; ++b) s = next_locked(s, *b);
      if (s < 0) continue;
      count += walk_trie(vocab, s, root + 1, trie[root].subtree_end, trie[root].depth, words, nullptr);
    }
  }
  if (accepting_[state])
    for (int32_t e : vocab.eos_ids()) words[e >> 5] |= 1u << (e & 31);
  CachedMask cm;
  cm.words.assign(words, words + nwords);
  cm.count = count + (accepting_[state] ? vocab.eos_ids().size() : 0);
  mask_bytes_ += bytes + 64;
  masks_.emplace(state, std::move(cm));
  if (masks_.size() > kMaxCachedMasks || mask_bytes_ > kMaxMaskBytes) {
    // Compact the sparse masks; drop everything only if that is not enough.
    mask_bytes_ = 0;
    for (auto& [id, m] : masks_) {
      if (!m.words.empty() && m.count <= static_cast<size_t>(nwords) / 2) {
        m.ids.reserve(m.count);
        for (int32_t w = 0; w < nwords; ++w)
          for (uint32_t x = m.words[w]; x; x &= x - 1) m.ids.push_back(w * 32 + __builtin_ctz(x));
        std::vector<uint32_t>().swap(m.words);
      }
      mask_bytes_ += m.ids.size() * sizeof(int32_t) + m.words.size() * sizeof(uint32_t) + 64;
    }
    if (masks_.size() > kMaxCachedMasks || mask_bytes_ > kMaxMaskBytes / 2) {
      masks_.clear();
      mask_bytes_ = 0;
    }
  }
}

namespace {
uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 31);
}
uint64_t hash_bytes(const ByteSet& s) {
  uint64_t h = 0x1234567ull;
  for (size_t w = 0; w < 4; ++w) {
    uint64_t word = 0;
    for (size_t b = 0; b < 64; ++b) word |= static_cast<uint64_t>(s.test(w * 64 + b)) << b;
    h = mix(h, word);
  }
  return h;
}
}  // namespace

uint64_t PushdownAutomaton::local_signature(int32_t local) {
  constexpr size_t kMaxFragment = 512;  // elements; larger fragments are not shared
  if (elem_rule_.empty()) {
    for (const ByteSet& c : g_.classes) class_hash_.push_back(hash_bytes(c));
    elem_rule_.resize(g_.elements.size());
    elem_alt_.resize(g_.elements.size());
    elem_off_.resize(g_.elements.size());
    for (size_t r = 0; r < g_.alternatives.size(); ++r)
      for (size_t a = 0; a < g_.alternatives[r].size(); ++a)
        for (int32_t p = g_.alternatives[r][a], off = 0;; ++p, ++off) {
          elem_rule_[p] = static_cast<int32_t>(r);
          elem_alt_[p] = static_cast<int32_t>(a);
          elem_off_[p] = off;
          if (g_.elements[p].op == Grammar::Op::kEnd) break;
        }
  }
  // Rules reachable from the frames' continuations.
  std::vector<int32_t> frames_pos;
  for (int32_t node : stacks_[local])
    for (int32_t n = node; n >= 0; n = nodes_[n].parent) frames_pos.push_back(nodes_[n].pos);
  std::unordered_map<int32_t, size_t> index;  // rule → slot
  std::vector<int32_t> rules;
  size_t elements = 0;
  auto visit = [&](int32_t r) {
    if (index.emplace(r, rules.size()).second) rules.push_back(r);
  };
  for (int32_t p : frames_pos) visit(elem_rule_[p]);
  for (size_t i = 0; i < rules.size(); ++i)
    for (int32_t a : g_.alternatives[rules[i]])
      for (int32_t p = a; g_.elements[p].op != Grammar::Op::kEnd; ++p) {
        if (++elements > kMaxFragment) return 0;
        if (g_.elements[p].op == Grammar::Op::kRule) visit(g_.elements[p].arg);
      }
  // Colour refinement until the partition of rules is stable: equal colours then mean equal
  // unfoldings (same alternatives, same classes, equally coloured references).
  std::vector<uint64_t> colour(rules.size()), next(rules.size());
  for (size_t i = 0; i < rules.size(); ++i) colour[i] = mix(7, g_.alternatives[rules[i]].size());
  size_t distinct = 0;
  for (size_t round = 0; round <= rules.size() + 1; ++round) {
    for (size_t i = 0; i < rules.size(); ++i) {
      uint64_t h = mix(colour[i], 11);
      for (int32_t a : g_.alternatives[rules[i]]) {
        h = mix(h, 13);
        for (int32_t p = a; g_.elements[p].op != Grammar::Op::kEnd; ++p) {
          const Grammar::Element& e = g_.elements[p];
          h = e.op == Grammar::Op::kClass ? mix(h, class_hash_[e.arg])
                                          : mix(mix(h, 17), colour[index.at(e.arg)]);
        }
      }
      next[i] = h;
    }
    colour.swap(next);
    std::vector<uint64_t> sorted = colour;
    std::sort(sorted.begin(), sorted.end());
    const size_t d = static_cast<size_t>(std::unique(sorted.begin(), sorted.end()) - sorted.begin());
    if (d == distinct) break;
    distinct = d;
  }
  // Each stack: its frames (rule colour, alternative, offset) and its bottom.
  std::vector<uint64_t> stacks;
  for (int32_t node : stacks_[local]) {
    uint64_t h = mix(19, static_cast<uint64_t>(static_cast<int64_t>(node < 0 ? node : 0)));
    int32_t n = node;
    for (; n >= 0; n = nodes_[n].parent) {
      const int32_t p = nodes_[n].pos;
      h = mix(mix(mix(h, colour[index.at(elem_rule_[p])]), static_cast<uint64_t>(elem_alt_[p])),
              static_cast<uint64_t>(elem_off_[p]));
    }
    stacks.push_back(mix(h, static_cast<uint64_t>(static_cast<int64_t>(n))));
  }
  std::sort(stacks.begin(), stacks.end());
  uint64_t sig = 23;
  for (uint64_t h : stacks) sig = mix(sig, h);
  return sig == 0 ? 1 : sig;
}

uint64_t PushdownAutomaton::shared_signature(int32_t state) {
  std::lock_guard<std::mutex> lock(mu_);
  return local_signature(local_state(state));
}

PushdownAutomaton::Stats PushdownAutomaton::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s;
  s.states = stacks_.size();
  s.stack_nodes = nodes_.size();
  for (const auto& t : tables_) s.tables += t ? 1 : 0;
  s.cached_masks = masks_.size();
  s.local_masks = local_masks_.size();
  s.local_walks = local_walks_;
  s.shared_local_hits = shared_local_hits_;
  s.full_walks = full_walks_;
  s.mask_hits = mask_hits_;
  s.mask_misses = mask_misses_;
  return s;
}

}  // namespace iris::grammar
