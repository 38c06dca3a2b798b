// Request state as the scheduler sees it: the token list (prompt, then every sampled
// token), how much of it has KV in the cache (num_computed_tokens), the media spans whose
// content goes into the prefix-cache hashes, and the block table the KV block manager keeps
// for it. There is no prefill/decode phase: a request always has tokens
// [num_computed_tokens, tokens.size()) left to compute, and a step computes some of them.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace iris::sched {

// Thrown for misuse of the scheduler API (an output fed back twice, a wrong number of
// sampled tokens) and by nothing on a request's normal path: per-request failures are
// returned as an AdmitResult or a FinishedRequest instead.
class SchedulerError : public std::runtime_error {
 public:
  explicit SchedulerError(const std::string& what) : std::runtime_error(what) {}
};

// Tokens [start_token, start_token + num_tokens) of the prompt are placeholders for one
// media item (an image) whose decoded content hashes to content_hash. The hash is mixed
// into every KV block that overlaps the span, so the same placeholder tokens with a
// different image never share KV.
struct MediaSpan {
  int64_t start_token = 0;
  int64_t num_tokens = 0;
  uint64_t content_hash = 0;
};

// 128-bit hash of one full KV block and (through the parent) of every token before it.
struct BlockHash {
  uint64_t lo = 0;
  uint64_t hi = 0;
  friend bool operator==(const BlockHash&, const BlockHash&) = default;
};

struct BlockHashHasher {
  size_t operator()(const BlockHash& h) const noexcept { return static_cast<size_t>(h.lo); }
};

// Dense id the scheduler gives each request; never reused within one Scheduler.
using RequestHandle = uint64_t;

// What the engine passes to Scheduler::add_request.
struct RequestSpec {
  std::string id;                // the client-visible id; unique among live requests
  std::vector<int32_t> prompt;   // token ids, at least one
  int max_tokens = 0;            // tokens to generate at most, at least one
  int priority = 0;              // kPriority policy: lower runs first
  uint64_t arrival_seq = 0;      // ordering key; ties keep the order of add_request calls
  std::vector<MediaSpan> media;  // non-overlapping, inside the prompt
  // Mixed into the first block's hash: requests with different salts never share KV
  // (per-tenant isolation of the prefix cache). 0 = the shared cache.
  uint64_t cache_salt = 0;
};

enum class RequestStatus {
  kWaiting,  // in the waiting queue, holds no blocks (new, or preempted)
  kRunning,  // holds blocks; scheduled when budget allows
  kFinished,
};

enum class FinishReason {
  kStop,    // the engine saw a stop token / stop string
  kLength,  // max_tokens or max_model_len reached (the scheduler enforces both)
  kAbort,   // the client went away or cancelled
  kError,   // the request could not be served (see FinishedRequest::message)
};

const char* to_string(FinishReason r);

struct Request {
  std::string id;
  RequestHandle handle = 0;
  std::vector<int32_t> tokens;  // prompt, then every sampled token
  int num_prompt_tokens = 0;
  int max_tokens = 0;
  int priority = 0;
  uint64_t arrival_seq = 0;
  std::vector<MediaSpan> media;  // sorted by start_token
  uint64_t cache_salt = 0;

  RequestStatus status = RequestStatus::kWaiting;
  // Tokens whose KV is in the cache after the last update(). Advances in update(), not in
  // schedule(), so a request taken back out of a step has nothing to undo here.
  int num_computed_tokens = 0;
  // Prefix-cache hit when the request was last admitted (tokens); -1 before admission.
  int num_cached_tokens = -1;
  int num_preemptions = 0;

  // --- owned by KVBlockManager ---------------------------------------------------------
  std::vector<int32_t> block_table;     // block ids; block i holds tokens [i*B, (i+1)*B)
  std::vector<BlockHash> block_hashes;  // hash chain over full blocks of `tokens`, lazily
  int num_registered_blocks = 0;        // leading blocks already offered to the cache

  // --- owned by Scheduler ---------------------------------------------------------------
  int step_index = -1;
  // Per media span: this request holds a reference on its encoder-cache entry (only when
  // the scheduler budgets the encoder).
  std::vector<uint8_t> media_held;  // index in the current step's output, -1 when not scheduled

  int num_tokens() const { return static_cast<int>(tokens.size()); }
  int num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  int num_uncomputed_tokens() const { return num_tokens() - num_computed_tokens; }
};

}  // namespace iris::sched
