// See encoder_cache_manager.h.
#include "scheduler/encoder_cache_manager.h"

#include <sstream>

#include "scheduler/request.h"

namespace iris::sched {

int EncoderCacheManager::refs(uint64_t hash) const {
  auto it = entries_.find(hash);
  return it == entries_.end() ? 0 : it->second.refs;
}

void EncoderCacheManager::allocate(uint64_t hash, int64_t num_tokens,
                                   std::vector<uint64_t>& evicted) {
  if (entries_.count(hash)) throw SchedulerError("encoder cache: entry already present");
  if (num_tokens > available_tokens()) {
    throw SchedulerError("encoder cache: " + std::to_string(num_tokens) + " tokens requested, " +
                         std::to_string(available_tokens()) + " available");
  }
  while (capacity_ - used_ < num_tokens) {
    const uint64_t victim = lru_.front();
    lru_.pop_front();
    auto it = entries_.find(victim);
    used_ -= it->second.num_tokens;
    evictable_ -= it->second.num_tokens;
    entries_.erase(it);
    evicted.push_back(victim);
    ++counters_.evictions;
  }
  Entry e;
  e.num_tokens = num_tokens;
  e.refs = 1;
  entries_.emplace(hash, e);
  used_ += num_tokens;
  ++counters_.encoded_items;
  counters_.encoded_tokens += num_tokens;
}

void EncoderCacheManager::acquire(uint64_t hash) {
  auto it = entries_.find(hash);
  if (it == entries_.end()) throw SchedulerError("encoder cache: acquire of a missing entry");
  Entry& e = it->second;
  if (e.refs++ == 0) {
    lru_.erase(e.lru);
    evictable_ -= e.num_tokens;
  }
}

void EncoderCacheManager::release(uint64_t hash) {
  auto it = entries_.find(hash);
  if (it == entries_.end() || it->second.refs <= 0)
    throw SchedulerError("encoder cache: release of an unreferenced entry");
  Entry& e = it->second;
  if (--e.refs == 0) {
    e.lru = lru_.insert(lru_.end(), hash);
    evictable_ += e.num_tokens;
  }
}

void EncoderCacheManager::count_query(bool hit) {
  ++counters_.queries;
  if (hit) ++counters_.hits;
}

EncoderCacheStats EncoderCacheManager::stats() const {
  EncoderCacheStats s = counters_;
  s.capacity_tokens = capacity_;
  s.used_tokens = used_;
  s.num_entries = static_cast<int64_t>(entries_.size());
  return s;
}

std::string EncoderCacheManager::check_invariants(
    const std::unordered_map<uint64_t, int>& expected_refs) const {
  std::ostringstream err;
  int64_t used = 0, evictable = 0;
  size_t unreferenced = 0;
  for (const auto& [hash, e] : entries_) {
    used += e.num_tokens;
    auto want = expected_refs.find(hash);
    const int w = want == expected_refs.end() ? 0 : want->second;
    if (e.refs != w) {
      err << "encoder cache entry " << hash << " has " << e.refs << " references, the requests hold "
          << w;
      return err.str();
    }
    if (e.refs == 0) {
      evictable += e.num_tokens;
      ++unreferenced;
    }
  }
  for (const auto& [hash, n] : expected_refs) {
    if (n > 0 && !entries_.count(hash)) {
      err << "requests hold " << n << " references on encoder cache entry " << hash
          << ", which is not cached";
      return err.str();
    }
  }
  if (used != used_ || evictable != evictable_ || unreferenced != lru_.size()) {
    err << "encoder cache accounting: used " << used_ << " (counted " << used << "), evictable "
        << evictable_ << " (counted " << evictable << "), eviction list " << lru_.size()
        << " (counted " << unreferenced << ")";
    return err.str();
  }
  if (used_ > capacity_) {
    err << "encoder cache holds " << used_ << " tokens, capacity " << capacity_;
    return err.str();
  }
  return {};
}

}  // namespace iris::sched
