// Scheduler and KV-cache configuration: the sizes the engine picks once at start-up (how
// many KV blocks fit in device memory, how many tokens one step may carry) and the policy
// switches. Pure data; validate() says what is wrong in words before anything is built.
#pragma once

#include <cstdint>
#include <string>

namespace iris::sched {

enum class SchedulingPolicy {
  kFcfs,      // first come, first served by arrival_seq
  kPriority,  // lower RequestSpec::priority first, then arrival_seq
};

struct SchedulerConfig {
  // Tokens per KV block. The engine's paged-attention kernels use the same value.
  int block_size = 16;
  // Blocks in the KV cache, as the engine allocated them ([num_blocks, block_size, ...]).
  // Block 0 is the reserved null block when reserve_null_block is set, so the usable count
  // is num_blocks - 1.
  int num_blocks = 0;
  // Block 0 is never handed out: the runner may pad block tables with it (a CUDA graph
  // replays a fixed shape) without aliasing any live sequence's KV.
  bool reserve_null_block = true;
  // At most this many sequences run (hold KV and are scheduled) at once.
  int max_num_seqs = 256;
  // Token budget of one step: decodes count 1 each, prefill chunks their length.
  int max_num_batched_tokens = 2048;
  // Longest context (prompt + output) a request may reach; 0 = what the cache can hold.
  int max_model_len = 0;
  // Reuse KV blocks of identical prefixes (hash chain over full blocks).
  bool enable_prefix_caching = true;
  SchedulingPolicy policy = SchedulingPolicy::kFcfs;
  // Media (images). Both 0: media spans arrive with their embeddings and are not budgeted.
  // Both > 0: embeddings are computed by the engine's encoder as prefill chunks reach the
  // spans, at most max_num_encoder_tokens media tokens per step, into an encoder cache of
  // encoder_cache_tokens tokens (see encoder_cache_manager.h). A span longer than either
  // can never run, and its request is refused at admission.
  int max_num_encoder_tokens = 0;
  int encoder_cache_tokens = 0;
  // A media span's tokens attend to each other in both directions (Gemma 3's images), so a
  // prefill chunk never splits one: it stops before a span that does not fit whole (what is
  // left of it after a prefix-cache hit counts as the span). A span longer than
  // max_num_batched_tokens is refused at admission.
  bool media_in_one_chunk = false;
  // Seed of the block-hash chain. A server may draw it at random per process so that no
  // client can construct colliding prompts offline; tests keep the default to be
  // reproducible.
  uint64_t hash_seed = 0x6a09e667f3bcc908ull;

  bool budgets_encoder() const { return max_num_encoder_tokens > 0; }
  // Usable blocks (excluding the null block).
  int num_usable_blocks() const { return num_blocks - (reserve_null_block ? 1 : 0); }
  // max_model_len with 0 resolved to the cache capacity in tokens.
  int64_t effective_max_model_len() const {
    return max_model_len > 0 ? max_model_len
                             : static_cast<int64_t>(num_usable_blocks()) * block_size;
  }

  // Empty when the configuration is usable, otherwise what is wrong and the values.
  std::string validate() const {
    if (block_size <= 0) return "block_size must be > 0, got " + std::to_string(block_size);
    if (num_usable_blocks() <= 0) {
      return "num_blocks must leave at least one usable block, got num_blocks=" +
             std::to_string(num_blocks) +
             (reserve_null_block ? " (block 0 is the reserved null block)" : "");
    }
    if (max_num_seqs <= 0) return "max_num_seqs must be > 0, got " + std::to_string(max_num_seqs);
    if (max_num_batched_tokens <= 0) {
      return "max_num_batched_tokens must be > 0, got " + std::to_string(max_num_batched_tokens);
    }
    if (max_model_len < 0) {
      return "max_model_len must be >= 0 (0 = cache capacity), got " +
             std::to_string(max_model_len);
    }
    if (max_num_encoder_tokens < 0 || encoder_cache_tokens < 0 ||
        (max_num_encoder_tokens > 0) != (encoder_cache_tokens > 0)) {
      return "max_num_encoder_tokens and encoder_cache_tokens must both be 0 or both > 0, got " +
             std::to_string(max_num_encoder_tokens) + " and " + std::to_string(encoder_cache_tokens);
    }
    return {};
  }
};

}  // namespace iris::sched
