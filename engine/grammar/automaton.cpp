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
constexpr int32_t kComplete = -1;        // the empty stack
constexpr int32_t kUnknownContext = -2;  // the bottom of a local stack
constexpr int kLocalFrames = 3;
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
  std::vector<int32_t> local;
  std::vector<int32_t> frames;
  const std::vector<int32_t> stacks = stacks_[state];
  for (int32_t node : stacks) {
    if (node < 0) {
      local.push_back(node);
      continue;
    }
    frames.clear();
    int32_t n = node;
    while (n >= 0 && static_cast<int>(frames.size()) < kLocalFrames) {
      frames.push_back(nodes_[n].pos);
      n = nodes_[n].parent;
    }
    int32_t cut = n < 0 ? n : kUnknownContext;  // a short stack keeps its real bottom
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) cut = intern_node(*it, cut);
    local.push_back(cut);
  }
  std::sort(local.begin(), local.end());
  local.erase(std::unique(local.begin(), local.end()), local.end());
  const int32_t id = intern_state(std::move(local));
  local_of_[state] = id;
  return id;
}

void PushdownAutomaton::walk_trie(const TokenVocabulary& vocab, int32_t state, int32_t begin,
                                  int32_t end, int depth, uint32_t* words,
                                  std::vector<int32_t>* uncertain) {
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
    if (uncertain && reaches_context_[nx]) {
      if (t.subtree_end > i + 1) uncertain->push_back(i);
      i = t.subtree_end;
      continue;
    }
    st[t.depth] = nx;
    ++i;
  }
}

void PushdownAutomaton::token_mask(int32_t state, const TokenVocabulary& vocab, uint32_t* words) {
  const int32_t nwords = vocab.mask_words();
  const size_t bytes = sizeof(uint32_t) * static_cast<size_t>(nwords);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = masks_.find(state);
  if (it != masks_.end()) {
    ++mask_hits_;
    std::memcpy(words, it->second.data(), bytes);
    return;
  }
  ++mask_misses_;
  walk_states_.resize(static_cast<size_t>(vocab.max_depth()) + 1);
  const int32_t n = static_cast<int32_t>(vocab.trie().size());
  const int32_t local = local_state(state);
  if (reaches_context_[local]) {
    // The context is reachable before any byte: nothing to share, walk the real state.
    std::memset(words, 0, bytes);
    walk_trie(vocab, state, 0, n, 0, words, nullptr);
  } else {
    auto lit = local_masks_.find(local);
    if (lit == local_masks_.end()) {
      LocalMask lm;
      lm.certain.assign(static_cast<size_t>(nwords), 0u);
      walk_trie(vocab, local, 0, n, 0, lm.certain.data(), &lm.uncertain);
      if (local_masks_.size() >= kMaxCachedMasks) local_masks_.clear();
      lit = local_masks_.emplace(local, std::move(lm)).first;
    }
    std::memcpy(words, lit->second.certain.data(), bytes);
    // Each uncertain subtree from the real state at its root (the root's bytes walked first).
    const auto& trie = vocab.trie();
    for (int32_t root : lit->second.uncertain) {
      path_.clear();
      for (int32_t k = root; k >= 0; k = trie[k].parent) path_.push_back(trie[k].byte);
      int32_t s = state;
      for (auto b = path_.rbegin(); b != path_.rend() && s >= 0; ++b) s = next_locked(s, *b);
      if (s < 0) continue;
      walk_trie(vocab, s, root + 1, trie[root].subtree_end, trie[root].depth, words, nullptr);
    }
  }
  if (accepting_[state])
    for (int32_t e : vocab.eos_ids()) words[e >> 5] |= 1u << (e & 31);
  if (masks_.size() >= kMaxCachedMasks) masks_.clear();
  masks_.emplace(state, std::vector<uint32_t>(words, words + nwords));
}

PushdownAutomaton::Stats PushdownAutomaton::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s;
  s.states = stacks_.size();
  s.stack_nodes = nodes_.size();
  for (const auto& t : tables_) s.tables += t ? 1 : 0;
  s.cached_masks = masks_.size();
  s.local_masks = local_masks_.size();
  s.mask_hits = mask_hits_;
  s.mask_misses = mask_misses_;
  return s;
}

}  // namespace iris::grammar
