// The encoder-cache budget. A vision-language prompt holds media spans (an image's run of
// placeholder tokens) whose embeddings come from an encoder (vision tower + projector). The
// engine keeps those embeddings in a cache keyed by the media's content hash; this class is
// the scheduler's account of that cache: which hashes are in it, how many tokens each takes
// against a fixed capacity, and how many running requests still need each one.
//
// The scheduler decides, the engine follows: when a prefill chunk reaches a span whose
// embeddings are not cached, the scheduler allocates an entry here (evicting unreferenced
// entries, least recently released first) and lists the span as an encoder input of the
// step; the engine drops the evicted entries, encodes the inputs and stores the results
// before it runs the step. A request holds one reference on an entry from the step whose
// chunk first overlaps the span until its computed tokens pass the span's end (or it is
// preempted or finishes), so an entry in use is never evicted. A released entry stays
// cached, so a later request with the same image does not encode it again (a hit).
//
// Everything is O(1) per call except check_invariants().
#pragma once

#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

namespace iris::sched {

struct EncoderCacheStats {
  int64_t capacity_tokens = 0;
  int64_t used_tokens = 0;      // cached entries, referenced or not
  int64_t num_entries = 0;
  int64_t queries = 0;          // media spans that needed embeddings for a chunk
  int64_t hits = 0;             // of those, found cached (no encode)
  int64_t encoded_items = 0;    // entries allocated for encoding
  int64_t encoded_tokens = 0;
  int64_t evictions = 0;
};

class EncoderCacheManager {
 public:
  explicit EncoderCacheManager(int64_t capacity_tokens) : capacity_(capacity_tokens) {}

  bool contains(uint64_t hash) const { return entries_.count(hash) != 0; }
  int refs(uint64_t hash) const;
  // Tokens an allocation could get now: never-used capacity plus unreferenced entries.
  int64_t available_tokens() const { return capacity_ - used_ + evictable_; }
  int64_t capacity_tokens() const { return capacity_; }

  // Adds an entry holding one reference. Evicts unreferenced entries, least recently
  // released first, until it fits, appending their hashes to `evicted`. Requires
  // !contains(hash) and num_tokens <= available_tokens().
  void allocate(uint64_t hash, int64_t num_tokens, std::vector<uint64_t>& evicted);
  // One more reference on a cached entry (taking it off the eviction list).
  void acquire(uint64_t hash);
  // One reference fewer; at zero the entry becomes evictable but stays cached.
  void release(uint64_t hash);

  // Counters the scheduler updates when a chunk's media are settled.
  void count_query(bool hit);

  EncoderCacheStats stats() const;
  // `expected_refs`: hash -> references the live requests hold. "" when consistent.
  std::string check_invariants(const std::unordered_map<uint64_t, int>& expected_refs) const;

 private:
  struct Entry {
    int64_t num_tokens = 0;
    int refs = 0;
    std::list<uint64_t>::iterator lru;  // valid while refs == 0
  };

  int64_t capacity_;
  int64_t used_ = 0;       // tokens of all entries
  int64_t evictable_ = 0;  // tokens of entries with refs == 0
  std::unordered_map<uint64_t, Entry> entries_;
  std::list<uint64_t> lru_;  // unreferenced entries, least recently released first
  EncoderCacheStats counters_;
};

}  // namespace iris::sched
