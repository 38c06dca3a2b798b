// A fake model runner for scheduler tests. The "KV cache" is one uint64 per slot
// (slot = block * block_size + offset). A step first writes, for every fed token, a value
// that depends on the token, its position, the media content covering it and the previous
// slot's value (so on the whole prefix), then for every sequence that samples reads its
// whole context back through its block table and returns a deterministic hash of it as
// the next token. A wrong block table, a stale block
// or a block shared between different contents therefore yields a different token than the
// request produces when run alone (reference_generate), which the tests compare against.
// All writes come before any read, in plan order, mirroring a real forward pass where every
// layer stores the step's K/V before attention reads it.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "scheduler/scheduler.h"

namespace iris::sched::testing {

constexpr int32_t kVocab = 32000;

inline uint64_t mix64(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 31);
}

// What the model "sees" at position pos: the token, or the image content for placeholders.
inline uint64_t embed(int32_t token, int64_t pos, const std::vector<MediaSpan>& media) {
  for (const MediaSpan& m : media) {
    if (pos >= m.start_token && pos < m.start_token + m.num_tokens) {
      return mix64(mix64(m.content_hash, static_cast<uint64_t>(token)),
                   static_cast<uint64_t>(pos - m.start_token));
    }
  }
  return static_cast<uint64_t>(token);
}

// The fake "KV" of position pos depends on the token, its position and (through the
// previous slot) on every token before it, as a real model's deeper layers do.
constexpr uint64_t kKvSeed = 0x1234;
inline uint64_t kv_value(uint64_t prev, int32_t token, int64_t pos,
                         const std::vector<MediaSpan>& media) {
  return mix64(mix64(prev, embed(token, pos, media)), static_cast<uint64_t>(pos));
}

// "Attention" reads every slot of the context; the next token is a hash of all of them.
constexpr uint64_t kReadSeed = 0x5678;
inline uint64_t fold_read(uint64_t acc, uint64_t kv) {
  return mix64(acc, kv);
}

inline int32_t next_token_from(uint64_t context_hash) {
  return static_cast<int32_t>(context_hash % kVocab);
}

// The engine's stop rule in these tests: a token divisible by kStopModulus ends the request.
constexpr int32_t kStopModulus = 53;
inline bool is_stop(int32_t token) {
  return token % kStopModulus == 0;
}

// The tokens a request produces when it runs alone on a correct cache: generate until a
// stop token (included, when use_stop) or max_tokens.
inline std::vector<int32_t> reference_generate(const std::vector<int32_t>& prompt,
                                               const std::vector<MediaSpan>& media, int max_tokens,
                                               bool use_stop = true) {
  std::vector<int32_t> out;
  uint64_t kv = kKvSeed;
  uint64_t read = kReadSeed;
  int64_t pos = 0;
  auto feed = [&](int32_t t) {
    kv = kv_value(kv, t, pos++, media);
    read = fold_read(read, kv);
  };
  for (int32_t t : prompt) feed(t);
  while (static_cast<int>(out.size()) < max_tokens) {
    const int32_t t = next_token_from(read);
    out.push_back(t);
    if (use_stop && is_stop(t)) break;
    feed(t);
  }
  return out;
}

class FakeRunner {
 public:
  FakeRunner(int block_size, int num_blocks, bool null_block_reserved = true)
      : block_size_(block_size),
        min_block_(null_block_reserved ? 1 : 0),
        kv_(static_cast<size_t>(num_blocks) * block_size, 0xdeadbeefull) {}

  // Media of each request, by handle (what the engine's encoder would see).
  void set_media(RequestHandle h, std::vector<MediaSpan> media) { media_[h] = std::move(media); }

  // Runs one step; returns the sampled token per scheduled sequence (kNoToken where the
  // chunk does not sample). Throws std::logic_error on a malformed plan.
  std::vector<int32_t> run(const SchedulerOutput& out) {
    static const std::vector<MediaSpan> kNoMedia;
    for (const ScheduledSeq& s : out.scheduled) {
      const int64_t end = static_cast<int64_t>(s.num_computed_tokens) + s.num_new_tokens;
      const int64_t need = (end + block_size_ - 1) / block_size_;
      if (static_cast<int64_t>(s.block_table.size()) != need) {
        throw std::logic_error("request " + std::string(s.id) + ": block table has " +
                               std::to_string(s.block_table.size()) + " blocks for " +
                               std::to_string(end) + " tokens");
      }
      if (static_cast<int>(s.new_token_ids.size()) != s.num_new_tokens) {
        throw std::logic_error("new_token_ids size mismatch");
      }
      auto mit = media_.find(s.handle);
      const auto& media = mit == media_.end() ? kNoMedia : mit->second;
      // Sequences are written in plan order: a request that shares a block another one
      // fills in this step comes after it, as each layer of a real forward writes all K/V
      // before the next layer reads them.
      uint64_t prev =
          s.num_computed_tokens > 0 ? kv_.at(slot(s, s.num_computed_tokens - 1)) : kKvSeed;
      for (int j = 0; j < s.num_new_tokens; ++j) {
        const int64_t pos = s.num_computed_tokens + j;
        prev = kv_value(prev, s.new_token_ids[j], pos, media);
        kv_.at(slot(s, pos)) = prev;
      }
    }
    std::vector<int32_t> sampled(out.scheduled.size(), Scheduler::kNoToken);
    for (size_t i = 0; i < out.scheduled.size(); ++i) {
      const ScheduledSeq& s = out.scheduled[i];
      if (!s.samples) continue;
      const int64_t end = static_cast<int64_t>(s.num_computed_tokens) + s.num_new_tokens;
      uint64_t read = kReadSeed;
      for (int64_t p = 0; p < end; ++p) read = fold_read(read, kv_.at(slot(s, p)));
      sampled[i] = next_token_from(read);
    }
    return sampled;
  }

 private:
  size_t slot(const ScheduledSeq& s, int64_t pos) const {
    const int32_t block = s.block_table.at(static_cast<size_t>(pos / block_size_));
    if (block < min_block_) throw std::logic_error("null or invalid block in a block table");
    return static_cast<size_t>(block) * block_size_ + static_cast<size_t>(pos % block_size_);
  }

  int block_size_;
  int min_block_;
  std::vector<uint64_t> kv_;
  std::unordered_map<RequestHandle, std::vector<MediaSpan>> media_;
};

}  // namespace iris::sched::testing
