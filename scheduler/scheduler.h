// The continuous-batching scheduler. One engine thread owns it and drives a loop of
//   out = schedule();  run the model on out;  update(out, sampled);  finish() on stops
// Every request is a token list (prompt + output so far) of which num_computed_tokens
// have KV in the cache; a step computes a chunk of what is left. There are no prefill and
// decode phases, only an order in which a step hands out its token budget:
//   1. running requests with one token left (decodes), in policy order;
//   2. running requests part-way through their prompt (chunked prefill), in policy order;
//   3. waiting requests (new or preempted), in policy order, while running < max_num_seqs
//      and only in steps that preempted nobody.
// Policy order is arrival (FCFS) or (priority, arrival). A waiting request that does not
// fit blocks the ones behind it, so admission order never inverts.
//
// Preemption is by recomputation: when a running request cannot get a block, the
// lowest-ordered running request (the newest / lowest priority) is preempted: its blocks
// are freed, num_computed_tokens goes back to 0 and it returns to the waiting queue at its
// original place, keeping its output tokens, which are re-prefilled with the prompt (the
// prefix cache usually still holds most of them). A request never preempts one ordered
// before it; the lowest-ordered request shrinks its prefill chunk to the free blocks
// instead, and a decode that is itself the lowest is the one preempted.
//
// Prefix sharing and n > 1. Full blocks enter the prefix cache in the step that computes
// them (see kv_block_manager.h), so requests with a common prompt admitted in the same
// step share it: the first one computes the shared full blocks, the later ones start after
// them. This relies on the runner writing all of a step's KV before reading any (per layer).
//
// Media. With an encoder budget (SchedulerConfig::max_num_encoder_tokens), a prefill chunk
// that reaches a media span whose embeddings are not in the encoder cache lists the span as
// an encoder input of the step, within the step's encoder budget and the cache's capacity;
// a chunk stops before the first span that fits neither and goes on in a later step. The
// request holds the cache entry until its span is computed (encoder_cache_manager.h).
//
// Admission rejects at once (with a message) a request that could never run: empty prompt,
// max_tokens < 1, prompt + max_tokens above max_model_len, a context that would not fit in
// the whole cache, malformed media spans, a media span longer than the encoder budget or
// cache, or a duplicate id. Stop tokens and strings are the
// engine's job (it calls finish()); update() still ends a request at max_tokens or
// max_model_len as a safety net and reports it.
//
// Cost per step is O(scheduled requests + blocks they touch) plus O(log waiting) per
// admission; nothing scans the whole pool or all requests except check_invariants().
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "scheduler/config.h"
#include "scheduler/encoder_cache_manager.h"
#include "scheduler/kv_block_manager.h"
#include "scheduler/request.h"

namespace iris::sched {

// One request's share of a step.
struct ScheduledSeq {
  RequestHandle handle = 0;
  std::string_view id;                 // valid until the next schedule()
  int num_new_tokens = 0;              // tokens fed this step
  int num_computed_tokens = 0;         // position of the first fed token (KV before it is cached)
  std::vector<int32_t> new_token_ids;  // [num_new_tokens]
  std::vector<int32_t> block_table;    // covers num_computed_tokens + num_new_tokens tokens
  // The chunk reaches the end of the known tokens: sample one token from its last logits.
  bool samples = false;
};

// A media span whose embeddings the engine computes before running the step (see
// encoder_cache_manager.h): span `media_index` of the request, stored in the encoder cache
// under content_hash.
struct EncoderInput {
  RequestHandle handle = 0;
  std::string_view id;  // valid until the next schedule()
  int media_index = 0;
  uint64_t content_hash = 0;
};

struct FinishedRequest {
  RequestHandle handle = 0;
  std::string id;
  FinishReason reason = FinishReason::kStop;
  std::string message;  // why, for kError
};

struct SchedulerOutput {
  uint64_t step_id = 0;
  std::vector<ScheduledSeq> scheduled;  // decodes first, then prefill chunks
  int total_num_scheduled_tokens = 0;
  std::vector<std::string> preempted;     // back in the waiting queue, their blocks freed
  std::vector<FinishedRequest> finished;  // ended by schedule() itself (kError)
  // With an encoder budget: drop these encoder-cache entries first, then encode these inputs
  // (at most max_num_encoder_tokens tokens), then run the step.
  std::vector<uint64_t> encoder_evicted;
  std::vector<EncoderInput> encoder_inputs;
};

struct UpdateOutput {
  std::vector<FinishedRequest> finished;  // ended at max_tokens / max_model_len (kLength)
};

enum class AdmitStatus {
  kOk,
  kInvalidArgument,  // empty prompt, max_tokens < 1, bad media spans, empty id
  kAlreadyExists,    // a live request has this id
  kTooLong,          // can never fit max_model_len or the KV cache
};

struct AdmitResult {
  AdmitStatus status = AdmitStatus::kOk;
  std::string message;
  RequestHandle handle = 0;
  bool ok() const { return status == AdmitStatus::kOk; }
};

struct SchedulerStats {
  int num_running = 0;
  int num_waiting = 0;
  int num_total_blocks = 0;
  int num_free_blocks = 0;  // cached-but-unreferenced blocks count as free
  int64_t prefix_cache_query_tokens = 0;
  int64_t num_cached_tokens_hit = 0;
  double prefix_cache_hit_rate = 0.0;  // tokens hit / tokens queried, at admissions
  int64_t num_preemptions = 0;
  uint64_t num_steps = 0;
  EncoderCacheStats encoder_cache;  // zeros unless the encoder is budgeted
};

class Scheduler {
 public:
  // A sampled-token slot with nothing in it (the chunk did not sample).
  static constexpr int32_t kNoToken = -1;

  // Throws SchedulerError when config.validate() fails.
  explicit Scheduler(const SchedulerConfig& config);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;
  ~Scheduler();

  // Queues a request, or says why it can never run. Never throws for a bad request.
  AdmitResult add_request(RequestSpec spec);

  // Plans the next step. Throws SchedulerError if the previous step was not update()d.
  SchedulerOutput schedule();
  // The same, reusing out's storage.
  void schedule(SchedulerOutput& out);

  // Feeds back the step `out` (the latest schedule()): sampled_tokens[i] is the token
  // sampled for out.scheduled[i], kNoToken where it does not sample. Advances
  // num_computed_tokens and appends tokens. Requests finished or aborted since schedule()
  // are skipped. Throws SchedulerError (changing nothing) on a stale output, a size
  // mismatch or a missing token.
  UpdateOutput update(const SchedulerOutput& out, std::span<const int32_t> sampled_tokens);

  // Ends a live request and frees all its blocks at once, whether it is waiting, part-way
  // through its prompt or decoding, and even while its step is in flight (the step still
  // runs; its result is ignored). False when no live request has this id. The reason is
  // the caller's to report; the scheduler only reports the requests it ends itself.
  bool finish(const std::string& id, FinishReason reason);
  bool abort(const std::string& id) { return finish(id, FinishReason::kAbort); }

  SchedulerStats stats() const;
  // The live request with this id, or nullptr. Valid until it finishes.
  const Request* find(const std::string& id) const;
  bool has_unfinished_requests() const { return !requests_.empty(); }
  int num_running() const { return static_cast<int>(running_.size()); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  const SchedulerConfig& config() const { return config_; }
  const KVBlockManager& kv_block_manager() const { return kv_; }

  // KVBlockManager::check_invariants over the running requests, plus: waiting requests
  // hold no blocks; between steps a running request's table covers exactly its computed
  // tokens; the running list is in policy order. "" when consistent.
  std::string check_invariants() const;

 private:
  struct OrderKey {
    int64_t priority;
    uint64_t arrival_seq;
    RequestHandle handle;
    auto operator<=>(const OrderKey&) const = default;
  };
  struct WaitingEntry {
    OrderKey key;
    Request* req;
    bool operator<(const WaitingEntry& o) const { return key < o.key; }
  };

  OrderKey order_key(const Request& r) const;
  void emit(Request& r, int num_new_tokens, SchedulerOutput& out);
  void unschedule(Request& r, SchedulerOutput& out);
  void preempt(Request& r, SchedulerOutput& out);
  void remove_running(Request& r);
  void insert_running(Request& r);
  // Frees blocks, drops the request from every queue and retires it until the next step.
  void retire(Request& r);
  void schedule_decodes(SchedulerOutput& out);
  void schedule_running_prefills(SchedulerOutput& out);
  void schedule_waiting(SchedulerOutput& out);
  // With media_in_one_chunk: the tokens of [start, start + n) a chunk may take without
  // ending inside a media span (0 when the span at `start` does not fit in n).
  int limit_to_whole_media(const Request& r, int start, int n) const;
  // Encoder budget (no-ops unless config_.budgets_encoder()). reserve_media takes references
  // on (allocating where not cached) the encoder-cache entries of r's media spans that overlap
  // tokens [start, start + n) and returns n, cut before the first span that fits neither this
  // step's encoder budget nor the cache. settle_media then keeps the references of spans
  // overlapping [start, start + n_final) and gives back the others taken by that reserve.
  int reserve_media(Request& r, int start, int n, SchedulerOutput& out);
  void settle_media(Request& r, int start, int n_final);
  // Releases r's references: all of them, or those whose span is computed.
  void release_media(Request& r, bool all);

  SchedulerConfig config_;
  int64_t max_model_len_;
  KVBlockManager kv_;
  EncoderCacheManager encoder_cache_;
  int64_t encoder_budget_ = 0;  // encoder tokens left in the step being planned
  // Spans reserve_media acquired for the chunk being planned: (media index, allocated now).
  std::vector<std::pair<int, bool>> media_taken_;
  std::vector<uint64_t> evicted_scratch_;  // reserve_media's, kept to avoid reallocating

  std::unordered_map<std::string, std::unique_ptr<Request>> requests_;
  std::vector<Request*> running_;  // in policy order
  std::set<WaitingEntry> waiting_;
  // Finished requests stay alive until the next schedule() so the ids in the last output
  // stay valid.
  std::vector<std::unique_ptr<Request>> retired_;

  // The current step: step_requests_[i] is out.scheduled[i]'s request (nullptr once it
  // left the step). Only one step may be in flight.
  std::vector<Request*> step_requests_;
  uint64_t step_id_ = 0;
  bool step_in_flight_ = false;
  int budget_ = 0;
  int num_removed_ = 0;

  RequestHandle next_handle_ = 1;
  int64_t num_preemptions_ = 0;
};

}  // namespace iris::sched
