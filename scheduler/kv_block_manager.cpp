// KV block pool: refcounts, the free list in eviction order and the prefix cache. See the
// header for the rules; this file adds the hash function and the invariant checker.
#include "scheduler/kv_block_manager.h"

#include <algorithm>
#include <bit>
#include <sstream>

namespace iris::sched {
namespace {

// xxh64 constants. Each lane absorbs 64-bit words with an xxh64 round and ends with the
// xxh64 avalanche; the two lanes differ in seed and in a pre-mix of every word, so they
// behave as independent 64-bit hashes of the same input.
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ull;

constexpr uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

class Hash128 {
 public:
  explicit Hash128(uint64_t seed) : lo_(seed + kP5), hi_(fmix64(seed ^ kP3) + kP5) {}

  void add(uint64_t w) {
    lo_ ^= round(w);
    lo_ = std::rotl(lo_, 27) * kP1 + kP4;
    hi_ ^= round(fmix64(w ^ kP4));
    hi_ = std::rotl(hi_, 27) * kP1 + kP4;
    ++words_;
  }

  BlockHash finish() const {
    return BlockHash{avalanche(lo_ + words_ * 8), avalanche(hi_ + words_ * 8 + kP2)};
  }

 private:
  static uint64_t round(uint64_t w) {
    uint64_t acc = w * kP2;
    acc = std::rotl(acc, 31);
    return acc * kP1;
  }
  static uint64_t avalanche(uint64_t h) {
    h ^= h >> 33;
    h *= kP2;
    h ^= h >> 29;
    h *= kP3;
    h ^= h >> 32;
    return h;
  }

  uint64_t lo_;
  uint64_t hi_;
  uint64_t words_ = 0;
};

// Domain tags keep the three kinds of input apart (a token word can never be read as a
// media key and vice versa).
constexpr uint64_t kTagMedia = 0x4d45444941ull;  // "MEDIA"
constexpr uint64_t kTagSalt = 0x53414c54ull;     // "SALT"

}  // namespace

KVBlockManager::KVBlockManager(const SchedulerConfig& config)
    : block_size_(config.block_size),
      num_usable_(config.num_usable_blocks()),
      first_block_(config.reserve_null_block ? 1 : 0),
      caching_(config.enable_prefix_caching),
      seed_(config.hash_seed) {
  if (std::string err = config.validate(); !err.empty()) {
    throw SchedulerError("KVBlockManager: " + err);
  }
  blocks_.resize(config.num_blocks);
  cache_.reserve(static_cast<size_t>(num_usable_));
  for (int32_t b = first_block_; b < config.num_blocks; ++b) push_free_tail(b);
}

// --- free list ----------------------------------------------------------------------------

void KVBlockManager::push_free_tail(int32_t id) {
  Block& blk = blocks_[id];
  blk.prev = free_tail_;
  blk.next = -1;
  if (free_tail_ >= 0) {
    blocks_[free_tail_].next = id;
  } else {
    free_head_ = id;
  }
  free_tail_ = id;
  blk.in_free_list = true;
  ++num_free_;
}

void KVBlockManager::push_free_head(int32_t id) {
  Block& blk = blocks_[id];
  blk.prev = -1;
  blk.next = free_head_;
  if (free_head_ >= 0) {
    blocks_[free_head_].prev = id;
  } else {
    free_tail_ = id;
  }
  free_head_ = id;
  blk.in_free_list = true;
  ++num_free_;
}

void KVBlockManager::unlink_free(int32_t id) {
  Block& blk = blocks_[id];
  if (blk.prev >= 0) {
    blocks_[blk.prev].next = blk.next;
  } else {
    free_head_ = blk.next;
  }
  if (blk.next >= 0) {
    blocks_[blk.next].prev = blk.prev;
  } else {
    free_tail_ = blk.prev;
  }
  blk.prev = blk.next = -1;
  blk.in_free_list = false;
  --num_free_;
}

int32_t KVBlockManager::pop_free_head() {
  const int32_t id = free_head_;
  unlink_free(id);
  if (blocks_[id].cached) uncache(id);  // evicted: its old content is about to be overwritten
  return id;
}

void KVBlockManager::uncache(int32_t id) {
  Block& blk = blocks_[id];
  auto it = cache_.find(blk.hash);
  if (it != cache_.end() && it->second == id) cache_.erase(it);
  blk.cached = false;
  blk.hash = {};
}

// --- hashing ------------------------------------------------------------------------------

BlockHash KVBlockManager::hash_block(const Request& req, int block_index,
                                     const BlockHash& parent) const {
  Hash128 h(seed_);
  h.add(parent.lo);
  h.add(parent.hi);
  const int64_t start = static_cast<int64_t>(block_index) * block_size_;
  const int64_t end = start + block_size_;
  const int32_t* tok = req.tokens.data() + start;
  int i = 0;
  for (; i + 1 < block_size_; i += 2) {
    h.add(static_cast<uint64_t>(static_cast<uint32_t>(tok[i])) |
          (static_cast<uint64_t>(static_cast<uint32_t>(tok[i + 1])) << 32));
  }
  if (i < block_size_) h.add(static_cast<uint64_t>(static_cast<uint32_t>(tok[i])));

  // Media spans overlapping [start, end): spans are sorted and disjoint, so the first one
  // that ends after `start` is found by bisection and the rest follow in order.
  auto first = std::partition_point(req.media.begin(), req.media.end(), [&](const MediaSpan& m) {
    return m.start_token + m.num_tokens <= start;
  });
  for (auto it = first; it != req.media.end() && it->start_token < end; ++it) {
    h.add(kTagMedia);
    h.add(it->content_hash);
    h.add(static_cast<uint64_t>(it->start_token - start));  // placement relative to block
    h.add(static_cast<uint64_t>(it->num_tokens));
  }
  if (block_index == 0) {
    h.add(kTagSalt);
    h.add(req.cache_salt);
  }
  return h.finish();
}

void KVBlockManager::ensure_block_hashes(Request& req, int num_full_blocks) const {
  auto& hashes = req.block_hashes;
  if (static_cast<int>(hashes.size()) >= num_full_blocks) return;
  hashes.reserve(static_cast<size_t>(req.tokens.capacity() / block_size_ + 1));
  while (static_cast<int>(hashes.size()) < num_full_blocks) {
    const int i = static_cast<int>(hashes.size());
    const BlockHash parent = i == 0 ? BlockHash{seed_, ~seed_} : hashes.back();
    hashes.push_back(hash_block(req, i, parent));
  }
}

// --- the block manager API ----------------------------------------------------------------

ComputedBlocks KVBlockManager::get_computed_blocks(Request& req) {
  ComputedBlocks out;
  if (!caching_ || !req.block_table.empty() || req.num_tokens() == 0) return out;
  // Leave at least the last token to compute: the step needs its logits.
  const int max_blocks = (req.num_tokens() - 1) / block_size_;
  ensure_block_hashes(req, max_blocks);
  out.blocks.reserve(static_cast<size_t>(max_blocks));
  for (int i = 0; i < max_blocks; ++i) {
    auto it = cache_.find(req.block_hashes[i]);
    if (it == cache_.end()) break;
    out.blocks.push_back(it->second);
  }
  out.num_tokens = static_cast<int>(out.blocks.size()) * block_size_;
  return out;
}

bool KVBlockManager::can_allocate(const Request& req, int num_new_tokens,
                                  const ComputedBlocks* computed) const {
  const int num_hit = computed ? static_cast<int>(computed->blocks.size()) : 0;
  const int64_t total = static_cast<int64_t>(req.num_computed_tokens) +
                        (computed ? computed->num_tokens : 0) + num_new_tokens;
  const int have = static_cast<int>(req.block_table.size()) + num_hit;
  const int need = std::max(0, blocks_for(total) - have);
  // A hit on an unreferenced cached block takes it off the free list too.
  int hits_from_free = 0;
  for (int i = 0; i < num_hit; ++i) hits_from_free += blocks_[computed->blocks[i]].ref == 0;
  return need + hits_from_free <= num_free_;
}

int64_t KVBlockManager::max_new_tokens_that_fit(const Request& req) const {
  const int64_t slack =
      static_cast<int64_t>(req.block_table.size()) * block_size_ - req.num_computed_tokens;
  return std::max<int64_t>(0, slack) + static_cast<int64_t>(num_free_) * block_size_;
}

bool KVBlockManager::allocate_slots(Request& req, int num_new_tokens,
                                    const ComputedBlocks* computed) {
  if (num_new_tokens < 0) throw SchedulerError("allocate_slots: negative num_new_tokens");
  if (computed && !computed->blocks.empty() && !req.block_table.empty()) {
    throw SchedulerError("allocate_slots: cached blocks given for request '" + req.id +
                         "' that already holds blocks");
  }
  if (!can_allocate(req, num_new_tokens, computed)) return false;

  if (computed) {
    for (int32_t b : computed->blocks) {
      Block& blk = blocks_[b];
      if (blk.ref == 0) unlink_free(b);
      ++blk.ref;
      req.block_table.push_back(b);
    }
    req.num_registered_blocks = static_cast<int>(computed->blocks.size());
    query_tokens_ += req.num_tokens();
    hit_tokens_ += computed->num_tokens;
  }
  const int64_t total = static_cast<int64_t>(req.num_computed_tokens) +
                        (computed ? computed->num_tokens : 0) + num_new_tokens;
  const int need = blocks_for(total) - static_cast<int>(req.block_table.size());
  if (need > 0) {
    req.block_table.reserve(static_cast<size_t>(blocks_for(req.tokens.capacity())));
    for (int i = 0; i < need; ++i) {
      const int32_t b = pop_free_head();
      blocks_[b].ref = 1;
      req.block_table.push_back(b);
    }
  }
  register_full_blocks(req, std::min<int64_t>(total, req.num_tokens()));
  return true;
}

void KVBlockManager::register_full_blocks(Request& req, int64_t num_tokens) {
  if (!caching_) return;
  const int num_full = static_cast<int>(num_tokens / block_size_);
  if (num_full <= req.num_registered_blocks) return;
  ensure_block_hashes(req, num_full);
  for (int i = req.num_registered_blocks; i < num_full; ++i) {
    Block& blk = blocks_[req.block_table[i]];
    if (blk.cached) continue;
    // When another block already holds this content (two requests computed the same
    // block), the first stays the cache entry and this one stays private.
    if (cache_.try_emplace(req.block_hashes[i], req.block_table[i]).second) {
      blk.cached = true;
      blk.hash = req.block_hashes[i];
    }
  }
  req.num_registered_blocks = num_full;
}

void KVBlockManager::free(Request& req) {
  const int num_written_blocks = req.num_computed_tokens / block_size_;
  for (int i = static_cast<int>(req.block_table.size()) - 1; i >= 0; --i) {
    const int32_t b = req.block_table[i];
    Block& blk = blocks_[b];
    // Registered when the step was planned but the step never ran for this request.
    if (i >= num_written_blocks && i < req.num_registered_blocks && blk.cached) uncache(b);
    if (--blk.ref == 0) {
      if (blk.cached) {
        push_free_tail(b);
      } else {
        push_free_head(b);
      }
    }
  }
  req.block_table.clear();
  req.num_registered_blocks = 0;
}

void KVBlockManager::reset_prefix_cache() {
  for (auto& [hash, b] : cache_) {
    blocks_[b].cached = false;
    blocks_[b].hash = {};
  }
  cache_.clear();
}

KvCacheStats KVBlockManager::stats() const {
  KvCacheStats s;
  s.num_total_blocks = num_usable_;
  s.num_free_blocks = num_free_;
  s.num_cached_blocks = static_cast<int>(cache_.size());
  s.query_tokens = query_tokens_;
  s.hit_tokens = hit_tokens_;
  return s;
}

// --- invariants -----------------------------------------------------------------------

std::string KVBlockManager::check_invariants(std::span<const Request* const> live) const {
  std::ostringstream err;
  const int32_t n = static_cast<int32_t>(blocks_.size());
  std::vector<int32_t> count(blocks_.size(), 0);
  std::vector<const Request*> last_owner(blocks_.size(), nullptr);
  for (const Request* r : live) {
    for (int32_t b : r->block_table) {
      if (b < first_block_ || b >= n) {
        err << "request '" << r->id << "' holds block " << b << " outside [" << first_block_ << ", "
            << n << ")";
        return err.str();
      }
      if (last_owner[b] == r) {
        err << "request '" << r->id << "' holds block " << b << " twice";
        return err.str();
      }
      last_owner[b] = r;
      ++count[b];
    }
  }
  int referenced = 0;
  int unreferenced = 0;
  for (int32_t b = 0; b < n; ++b) {
    const Block& blk = blocks_[b];
    if (b < first_block_) {
      if (blk.ref != 0 || blk.in_free_list || blk.cached) {
        err << "null block " << b << " is in use (ref " << blk.ref << ")";
        return err.str();
      }
      continue;
    }
    if (blk.ref != count[b]) {
      err << "block " << b << " has refcount " << blk.ref << " but " << count[b]
          << " live block tables hold it";
      return err.str();
    }
    if ((blk.ref == 0) != blk.in_free_list) {
      err << "block " << b << " with refcount " << blk.ref << (blk.in_free_list ? " is" : " is not")
          << " on the free list";
      return err.str();
    }
    (blk.ref > 0 ? referenced : unreferenced)++;
    if (blk.cached) {
      auto it = cache_.find(blk.hash);
      if (it == cache_.end() || it->second != b) {
        err << "block " << b << " is marked cached but the cache does not map its hash to it";
        return err.str();
      }
    }
  }
  int walked = 0;
  int32_t prev = -1;
  for (int32_t b = free_head_; b >= 0; b = blocks_[b].next) {
    if (b < first_block_ || b >= n || ++walked > n) {
      err << "free list is corrupt at block " << b;
      return err.str();
    }
    if (blocks_[b].prev != prev || blocks_[b].ref != 0) {
      err << "free list entry " << b << " has a bad back link or refcount " << blocks_[b].ref;
      return err.str();
    }
    prev = b;
  }
  if (prev != free_tail_ || walked != num_free_ || walked != unreferenced) {
    err << "free list holds " << walked << " blocks, num_free " << num_free_ << ", " << unreferenced
        << " blocks have refcount 0";
    return err.str();
  }
  for (const auto& [hash, b] : cache_) {
    if (b < first_block_ || b >= n || !blocks_[b].cached || !(blocks_[b].hash == hash)) {
      err << "prefix cache entry points at block " << b << " whose stored hash differs";
      return err.str();
    }
  }
  if (num_free_ + referenced != num_usable_) {
    err << "free " << num_free_ << " + referenced " << referenced << " != total " << num_usable_;
    return err.str();
  }
  return {};
}

}  // namespace iris::sched
