// The runtime of a Grammar: a pushdown automaton over bytes, determinised lazily.
//
// A parse position is a stack of grammar positions (top: the byte class to match next; below:
// where to return when a rule finishes). Stacks are interned as linked nodes (position,
// parent), so they share their tails. A state is the sorted set of stacks the input so far
// can be in (an empty stack means "complete"). States are interned too, and each state keeps a
// 256-entry table of the state every byte leads to, filled on first use: after warm-up, a byte
// step is one table lookup. A token mask is a walk of the vocabulary's trie through these
// tables, skipping every subtree whose prefix is already rejected; masks are cached per state.
//
// Most of a mask does not depend on the context deep in the stacks: inside a JSON string every
// token without a quote is allowed whichever property the string belongs to. So a state's mask
// is computed from its "local" state (every stack cut to its top kLocalFrames frames over an
// "unknown context" bottom): a walk of the local state yields the tokens accepted within those
// frames (cached per local state, shared by all contexts and requests) and the trie subtrees
// where a token reaches the unknown context with bytes left; only those subtrees are walked
// again from the real state.
//
// States, tables and masks are shared by every matcher of the grammar and grow with use (a
// deeply nested document makes new stacks); one mutex guards them.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/grammar/grammar.h"
#include "engine/grammar/token_vocabulary.h"

namespace iris::grammar {

class PushdownAutomaton {
 public:
  static constexpr int32_t kDead = -1;

  explicit PushdownAutomaton(Grammar grammar);

  int32_t initial() const { return initial_; }
  // The state after `byte`, or kDead.
  int32_t next(int32_t state, uint8_t byte);
  // The state after all of `bytes`, or kDead.
  int32_t walk(int32_t state, std::string_view bytes);
  bool accepting(int32_t state);
  // False when the state is complete and no byte may follow.
  bool can_continue(int32_t state);
  // Writes vocab.mask_words() words: bit t set when token t's bytes lead from `state` to a live
  // state, plus the EOS ids when `state` is accepting.
  void token_mask(int32_t state, const TokenVocabulary& vocab, uint32_t* words);

  struct Stats {
    size_t states = 0, stack_nodes = 0, tables = 0, cached_masks = 0, local_masks = 0;
    uint64_t mask_hits = 0, mask_misses = 0;
    uint64_t local_walks = 0, shared_local_hits = 0, full_walks = 0;
  };
  Stats stats();
  // The structural signature of a state's local state (0: not shared). Equal for the same
  // grammar fragment in different grammars: what lets constraints share local masks.
  uint64_t shared_signature(int32_t state);
  const Grammar& grammar() const { return g_; }

 private:
  struct Node {
    int32_t pos;
    int32_t parent;  // -1: bottom
  };
  struct VecHash {
    size_t operator()(const std::vector<int32_t>& v) const;
  };

  int32_t intern_node(int32_t pos, int32_t parent);
  int32_t intern_state(std::vector<int32_t> stacks);
  void closure(int32_t node, std::vector<int32_t>& out);
  int32_t next_locked(int32_t state, uint8_t byte);
  int32_t compute_next(int32_t state, uint8_t byte);
  int32_t local_state(int32_t state);
  // Walks trie nodes [begin, end) whose parent (at depth `depth`) is in `state`, setting the
  // bits of accepted tokens. With `uncertain`, a node whose state reaches the unknown context
  // has its tokens set and its subtree appended to `uncertain` instead of walked.
  // Returns the number of token bits set (each token is set at most once per mask).
  size_t walk_trie(const TokenVocabulary& vocab, int32_t state, int32_t begin, int32_t end,
                   int depth, uint32_t* words, std::vector<int32_t>* uncertain);

  using LocalMask = TokenVocabulary::LocalMask;
  // A structural hash of the grammar fragment a local state can reach before the unknown
  // context (equal for the same fragment in any grammar); 0 when the fragment is too large.
  uint64_t local_signature(int32_t local);

  Grammar g_;
  std::mutex mu_;
  std::vector<Node> nodes_;
  std::unordered_map<uint64_t, int32_t> node_ids_;
  std::vector<std::vector<int32_t>> stacks_;  // per state: sorted node ids (-1: complete)
  std::vector<ByteSet> first_;                // per state: bytes that may come next
  std::vector<uint8_t> accepting_;
  std::vector<uint8_t> reaches_context_;  // a stack popped into the unknown context
  std::vector<int32_t> local_of_;         // per state: its local state (or unknown)
  std::vector<std::unique_ptr<int32_t[]>> tables_;  // per state: 256 next states, lazily
  std::unordered_map<std::vector<int32_t>, int32_t, VecHash> state_ids_;
  int32_t initial_ = kDead;
  // Closure scratch.
  std::vector<uint32_t> visited_;
  uint32_t stamp_ = 0;
  bool complete_seen_ = false;
  bool context_seen_ = false;
  // Mask cache.
  // A cached mask: the words, or the allowed ids once compacted (when the cache fills up,
  // sparse masks, most states, are turned into id lists before anything is dropped).
  struct CachedMask {
    std::vector<int32_t> ids;
    std::vector<uint32_t> words;
    size_t count = 0;  // allowed ids
  };
  std::unordered_map<int32_t, CachedMask> masks_;
  size_t mask_bytes_ = 0;
  std::unordered_map<int32_t, std::shared_ptr<const LocalMask>> local_masks_;
  // Per element: its rule, alternative index and offset in the alternative.
  std::vector<int32_t> elem_rule_, elem_alt_, elem_off_;
  std::vector<uint64_t> class_hash_;
  std::vector<int32_t> walk_states_;
  std::vector<uint8_t> path_;
  uint64_t mask_hits_ = 0, mask_misses_ = 0;
  uint64_t local_walks_ = 0, shared_local_hits_ = 0, full_walks_ = 0;
};

}  // namespace iris::grammar
