// The paged KV block pool: which block ids each sequence owns, how many sequences share
// each block (refcount), which unreferenced blocks may be handed out next (the free list,
// in eviction order) and which full blocks can be reused by a later sequence with the same
// prefix (prefix cache: block hash -> block id).
//
// Prefix caching. Block i of a sequence is identified by
//   hash(i) = H(hash(i-1), token ids of block i, extra keys of block i)
// where the extra keys are, for each media span overlapping the block, its content hash
// and its placement relative to the block, plus the request's cache salt on block 0. H is
// a seeded 128-bit hash (two independent 64-bit lanes of xxh64-style rounds). Two
// different prefixes collide with probability about n^2 / 2^129 for n cached blocks, i.e.
// never in practice; it is not a cryptographic hash, so the seed should be secret per
// process if clients are mutually untrusted (see SchedulerConfig::hash_seed), and
// cache_salt isolates tenants completely.
//
// A block enters the cache when it becomes full at allocation time (in the step that will
// write it), so a request admitted in the same step can already share it: the runner must
// write the KV of every scheduled token of a step before attention reads any of it, which
// a paged-attention forward does per layer. free() takes out of the cache any registered
// block whose tokens were not yet written (a request removed from a step before it ran).
//
// Free list. Unreferenced blocks sit in one intrusive doubly linked list; allocation takes
// from the head. A freed block that is in the prefix cache goes to the tail and keeps its
// hash until it is handed out again, so it can still be hit (and a hit takes it back out of
// the list in O(1)); a freed block that is not cached holds nothing worth keeping and goes
// to the head. A sequence frees its blocks last-to-first so its prefix is evicted last.
//
// Everything is O(blocks touched); nothing scans the pool except check_invariants().
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "scheduler/config.h"
#include "scheduler/request.h"

namespace iris::sched {

// The longest cached prefix of a sequence, as found by get_computed_blocks(). Holds no
// references: pass it to allocate_slots() in the same step, before anything else
// allocates, or drop it.
struct ComputedBlocks {
  std::vector<int32_t> blocks;  // block ids of the cached prefix, in order
  int num_tokens = 0;           // blocks.size() * block_size
};

struct KvCacheStats {
  int num_total_blocks = 0;   // usable blocks (the null block excluded)
  int num_free_blocks = 0;    // refcount 0, cached or not
  int num_cached_blocks = 0;  // blocks with an entry in the prefix cache, referenced or not
  int64_t query_tokens = 0;   // tokens looked up at admissions
  int64_t hit_tokens = 0;     // of those, found in the cache
  double hit_rate() const {
    return query_tokens > 0 ? static_cast<double>(hit_tokens) / query_tokens : 0.0;
  }
};

class KVBlockManager {
 public:
  // Throws SchedulerError when config.validate() fails.
  explicit KVBlockManager(const SchedulerConfig& config);

  int block_size() const { return block_size_; }
  int num_total_blocks() const { return num_usable_; }
  int num_free_blocks() const { return num_free_; }
  bool prefix_caching_enabled() const { return caching_; }
  // Blocks needed to hold num_tokens tokens.
  int blocks_for(int64_t num_tokens) const {
    return static_cast<int>((num_tokens + block_size_ - 1) / block_size_);
  }

  // The longest prefix of req.tokens that is in the cache, in whole blocks and never all
  // of it: at least the last token is left to compute so the step produces logits. Empty
  // when prefix caching is off or req already holds blocks.
  ComputedBlocks get_computed_blocks(Request& req);

  // Makes req's block table cover req.num_computed_tokens + computed.num_tokens +
  // num_new_tokens tokens, first taking a reference on every block of `computed`. All or
  // nothing: returns false and changes nothing when the free blocks do not suffice.
  // Newly full blocks enter the prefix cache. With `computed` given (an admission) the
  // lookup is counted in the hit statistics; the caller then advances
  // num_computed_tokens by computed.num_tokens.
  bool allocate_slots(Request& req, int num_new_tokens, const ComputedBlocks* computed = nullptr);

  // Whether allocate_slots(req, num_new_tokens, computed) would succeed now.
  bool can_allocate(const Request& req, int num_new_tokens,
                    const ComputedBlocks* computed = nullptr) const;

  // How many more tokens req could get slots for from its partly filled last block plus
  // every free block (no cache hits considered).
  int64_t max_new_tokens_that_fit(const Request& req) const;

  // Drops every reference req holds and clears its table. Registered blocks beyond its
  // first req.num_computed_tokens tokens (never written) leave the prefix cache.
  void free(Request& req);

  std::span<const int32_t> block_table(const Request& req) const { return req.block_table; }

  KvCacheStats stats() const;

  // Empties the prefix cache (every unreferenced block forgets its hash; referenced blocks
  // stay but are no longer offered to new requests). For tests and weight reloads.
  void reset_prefix_cache();

  // Proves the pool consistent with `live`, the requests that hold blocks: each block's
  // refcount equals the number of live block tables containing it; the free list holds
  // exactly the refcount-0 blocks, once each; every cache entry points at a block storing
  // that hash and every hashed block is the entry for its hash; free + referenced == total.
  // O(total blocks). Returns "" when consistent, else the first violation found.
  std::string check_invariants(std::span<const Request* const> live) const;

 private:
  struct Block {
    int32_t ref = 0;
    int32_t prev = -1;  // free list links, -1 = none
    int32_t next = -1;
    bool in_free_list = false;
    bool cached = false;  // hash is valid and cache_[hash] == this block
    BlockHash hash;
  };

  void ensure_block_hashes(Request& req, int num_full_blocks) const;
  BlockHash hash_block(const Request& req, int block_index, const BlockHash& parent) const;
  void register_full_blocks(Request& req, int64_t num_tokens);
  void uncache(int32_t id);
  int32_t pop_free_head();
  void push_free_head(int32_t id);
  void push_free_tail(int32_t id);
  void unlink_free(int32_t id);

  int block_size_;
  int num_usable_;
  int first_block_;  // 1 with a null block, else 0
  bool caching_;
  uint64_t seed_;

  std::vector<Block> blocks_;
  int32_t free_head_ = -1;
  int32_t free_tail_ = -1;
  int num_free_ = 0;
  std::unordered_map<BlockHash, int32_t, BlockHashHasher> cache_;
  int64_t query_tokens_ = 0;
  int64_t hit_tokens_ = 0;
};

}  // namespace iris::sched
